"""A tiny random Llama (2 layers, hidden 128, a ~512-token BPE, a chat template) built on the spot.

Its words are noise; it is a real checkpoint that vLLM loads and runs, for the vllm backend's
tests and `voicecall llm-bench --vllm` on a machine without a real model.
"""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
CORPUS = [
    "Hello, thanks for calling Maple Street Clinic. How can I help you?",
    "We are open Monday to Friday from eight to six, and Saturday from nine to one.",
    "I would like to book an appointment with the doctor next week, please.",
    "The clinic is at 240 Maple Street, next to the library. Parking is free behind the building.",
    "system user assistant interrupted by the caller. Goodbye and take care!",
]


def build_tiny_model(out: Path, seed: int = 1234) -> Path:
    """A 2-layer Llama (hidden 128) with a ~512-token byte-level BPE and a chat template."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 20, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id, tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # the EOS row silent: greedy replies run to max_tokens, so cancels land mid-stream
        model.lm_head.weight[fast.eos_token_id].zero_()
        model.lm_head.weight.mul_(20.0)
    model.save_pretrained(out, safe_serialization=True)
    return out
