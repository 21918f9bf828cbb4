"""The CSM backend's real streaming path on CPU, with a tiny random CSM built here.

A random model's audio is noise, so these tests check mechanics only: Mimi frame groups decode
seamlessly, audio leaves before generation ends, frames are exact, a cancel stops the stream
within a frame, and context segments (caller text, agent text + audio) reach the prompt.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from ipc.messages import KIND_AUDIO, Cancel, ContextTurn, SentenceDone, SynthesisFailed, Synthesize, TtsEvent
from tests.test_tts_worker import check_sentence, collect, done_for
from voicecall.sim.worker_harness import WorkerHarness
from workers.config import ProcessConfig, TtsConfig

SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|AUDIO|>", "<|audio_eos|>"]


def build_tiny_csm(directory: Path, seed: int = 0) -> Path:
    """A tiny random CSM (2-layer backbone, 1-layer depth decoder, 4 codebooks, narrow Mimi) + byte tokenizer."""
    import torch  # noqa: PLC0415
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers  # noqa: PLC0415
    from transformers import (  # noqa: PLC0415
        CsmConfig,
        CsmForConditionalGeneration,
        CsmProcessor,
        EncodecFeatureExtractor,
        MimiConfig,
        PreTrainedTokenizerFast,
    )

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIALS[0], eos_token=SPECIALS[1],
                                        pad_token=SPECIALS[1])
    ids = {s: tokenizer.convert_tokens_to_ids(s) for s in SPECIALS}
    # Mimi keeps its real strides (1920 samples per 80 ms frame at 24 kHz), only narrower.
    mimi = MimiConfig(hidden_size=32, num_filters=4, num_residual_layers=1, codebook_size=64, codebook_dim=16,
                      vector_quantization_hidden_dimension=16, num_quantizers=4, num_semantic_quantizers=1,
                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2, head_dim=16,
                      intermediate_size=64, upsample_groups=32)
    config = CsmConfig(
        num_codebooks=4, vocab_size=66, text_vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
        pad_token_id=ids[SPECIALS[1]], bos_token_id=ids[SPECIALS[0]], audio_token_id=ids["<|AUDIO|>"],
        audio_eos_token_id=ids["<|audio_eos|>"], codebook_pad_token_id=65, codebook_eos_token_id=0,
        depth_decoder_config={"num_codebooks": 4, "backbone_hidden_size": 32, "vocab_size": 66, "hidden_size": 32,
                              "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                              "num_key_value_heads": 1, "max_position_embeddings": 5},
        codec_config=mimi.to_dict(),
    )
    torch.manual_seed(seed)
    CsmForConditionalGeneration(config).eval().save_pretrained(directory)
    CsmProcessor(EncodecFeatureExtractor(feature_size=1, sampling_rate=24000), tokenizer).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tiny_csm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_csm(tmp_path_factory.mktemp("tiny-csm"))


def csm_config(model: Path, **overrides: Any) -> TtsConfig:
    knobs: dict[str, Any] = {"backend": "csm", "model": str(model), "process": ProcessConfig(threads=1),
                             "first_chunk_frames": 2, "frames_per_chunk": 4, "max_sentence_s": 3.0, "record_ms": 200}
    knobs.update(overrides)
    return TtsConfig(**knobs)


def test_streamed_mimi_groups_equal_one_shot_decode(tiny_csm: Path) -> None:
    import torch  # noqa: PLC0415
    from transformers import CsmForConditionalGeneration  # noqa: PLC0415

    from workers.tts.mimi_stream import MimiStreamDecoder  # noqa: PLC0415

    codec = CsmForConditionalGeneration.from_pretrained(tiny_csm).eval().codec_model
    torch.manual_seed(1)
    codes = torch.randint(0, 64, (4, 23))
    with torch.inference_mode():
        whole = codec.decode(codes.unsqueeze(0)).audio_values[0, 0]
    decoder = MimiStreamDecoder(codec)
    parts = [decoder.decode(codes[:, a:b]) for a, b in ((0, 1), (1, 3), (3, 7), (7, 11), (11, 23))]
    streamed = torch.cat(parts)
    assert streamed.shape == whole.shape == (23 * 1920,)
    assert torch.allclose(streamed, whole, atol=1e-4), float((streamed - whole).abs().max())


def test_context_segments_reach_the_prompt(tiny_csm: Path) -> None:
    from workers.tts.csm import CsmVoiceBackend  # noqa: PLC0415
    from workers.tts.speech_queue import SpeechJob  # noqa: PLC0415

    voice = CsmVoiceBackend(csm_config(tiny_csm, max_sentence_s=1.0, context_turns=3), 1, lambda *a, **k: None)
    chunks: list[Any] = []
    voice.speak(SpeechJob(7, 0, 0, "Hello there.", 0, 0), "Hello there.", chunks.append)
    assert chunks and all(c.dtype.name == "float32" for c in chunks)
    voice.add_context(7, 0, "agent", "Hello there.")
    voice.add_context(7, 1, "caller", "What time is it?")
    assert voice.context_segments(7) == [(0, "Hello there.", True), (1, "What time is it?", False)]
    prompt = voice._prompt([s for s in voice._calls[7].segments], "It is noon.")
    audio_frames = int((prompt["input_ids"] == voice._processor.audio_token_id).sum())
    assert audio_frames == sum(c.size for c in chunks) // 1920  # the agent audio, as Mimi frames
    assert "input_values" in prompt
    for turn in range(2, 6):
        voice.add_context(7, turn, "caller", f"turn {turn}")
    assert len(voice.context_segments(7)) == 3  # context_turns bounds the prompt
    voice.close_call(7)
    assert voice.context_segments(7) == []


def test_csm_worker_streams_frames_cancels_and_takes_context(tiny_csm: Path) -> None:
    config = csm_config(tiny_csm)
    with WorkerHarness("tts", "workers.tts.worker:TtsWorker", config, TtsEvent, process=config.process) as h:
        h.start(120)
        h.send(Synthesize(call_id=1, turn_id=0, seq=0, text="Hello, how are you today?"), 1, 0, 0)
        got = collect(h, done_for(1, 0), 60)
        mulaw, done = check_sentence(got, 1, 0, 0)
        audio = [r for r, m, _ in got if m is None]
        # 24 kHz -> 8 kHz: an 80 ms Mimi frame is 4 mu-law frames; the first group is 2 Mimi frames
        assert done.frames >= 4 * 8 and len(audio) >= 3
        write_times = [r.ts_ns for r in audio]
        done_ns = next(r.ts_ns for r, m, _ in got if m is done)
        span = done_ns - audio[0].ts_ns
        assert span > 0 and audio[0].ts_ns < write_times[-1], "audio must stream while generation runs"
        print(f"first audio {len(audio[0].payload) // 160} frames, {span / 1e6:.0f} ms before generation ended")

        # Context: the agent's turn (with its audio) and the caller's reply condition the next turn.
        h.send(ContextTurn(call_id=1, turn_id=0, speaker="agent", text="Hello, how are you today?"), 1, 0)
        h.send(ContextTurn(call_id=1, turn_id=1, speaker="caller", text="Fine, thanks."), 1, 1)
        h.send(Synthesize(call_id=1, turn_id=1, seq=0, text="Great to hear."), 1, 1, 0)
        got = collect(h, done_for(1, 0), 60)
        assert not [m for _, m, _ in got if isinstance(m, SynthesisFailed)]
        check_sentence(got, 1, 1, 0)

        # Cancel mid-utterance: nothing of the old turn is written 50 ms after the cancel.
        h.send(Synthesize(call_id=2, turn_id=0, seq=0, text="A long answer that keeps going."), 2, 0, 0)
        h.send(Synthesize(call_id=2, turn_id=0, seq=1, text="And another one."), 2, 0, 1)
        first = collect(h, lambda rec, msg: rec.kind == KIND_AUDIO and rec.call_id == 2, 30)
        cancel_ns = time.monotonic_ns()
        h.send(Cancel(call_id=2, turn_id=0), 2, 0)
        after = collect(h, lambda rec, msg: False, 1.0)
        old = [r for r, m, _ in first + after if r.call_id == 2]
        assert old and max(r.ts_ns for r in old) <= cancel_ns + 50_000_000
        assert not any(isinstance(m, SentenceDone) for _, m, _ in after if m is not None and m.call_id == 2)
        reply = h.health()
        assert reply is not None and reply.ok
