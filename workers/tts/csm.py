"""Sesame CSM 1B through transformers (`CsmForConditionalGeneration` + Mimi), streamed.

Upstream CSM generates a whole utterance, then decodes it: first audio = full synthesis time.
Here the generation loop hands every finished frame (all codebooks, 80 ms of audio) to a
streamer; frames are decoded in small groups by `MimiStreamDecoder` (exact, no seams) and
emitted at once, so the first audio leaves after `first_chunk_frames` frames.

Context: CSM conditions on earlier segments of the conversation. Caller turns arrive as text
only (the caller's audio lives in the stt worker), agent turns carry the audio this worker
generated for them, which keeps the agent's voice consistent from turn to turn.
A cancel stops generation at the next frame: the streamer raises out of `generate()` (CSM's
generate ignores custom stopping criteria).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workers.config import TtsConfig
from workers.tts.speech_queue import SpeechJob
from workers.tts.voice import Emit, Progress

log = logging.getLogger("voicecall.tts")

MIMI_FRAME_S = 0.08  # Mimi runs at 12.5 frames per second


@dataclass
class _Segment:
    speaker: int
    text: str
    audio: np.ndarray | None  # 24 kHz float32 when we generated it


@dataclass
class _CallContext:
    segments: deque[_Segment]
    # audio generated per agent turn, so an agent ContextTurn can carry its voice
    agent_audio: dict[int, list[np.ndarray]] = field(default_factory=dict)


class CsmVoiceBackend:
    """One CSM model shared by all calls; sentences are generated one at a time per thread."""

    def __init__(self, config: TtsConfig, threads: int, progress: Progress) -> None:
        import torch  # noqa: PLC0415 - heavy imports stay inside the worker process
        from transformers import AutoProcessor, CsmForConditionalGeneration  # noqa: PLC0415

        if not config.model:
            raise ValueError("tts.model is empty: set it to a CSM model directory or hub id (e.g. 'sesame/csm-1b')")
        local = Path(config.model).expanduser()
        if ("/" not in config.model or config.model.startswith((".", "/", "~"))) and not local.is_dir():
            raise FileNotFoundError(f"tts.model = {config.model!r}: no CSM model directory at {local}")
        torch.set_num_threads(max(1, threads))
        self._torch = torch
        self._config = config
        self._device = "cuda" if config.process.device == "cuda" else "cpu"
        dtype = getattr(torch, config.dtype) if self._device == "cuda" else torch.float32
        source = str(local) if local.is_dir() else config.model
        progress("loading csm processor", 0, 2, source)
        self._processor = AutoProcessor.from_pretrained(source)
        progress("loading csm model", 1, 2, source)
        model = CsmForConditionalGeneration.from_pretrained(source, dtype=dtype).to(self._device).eval()
        if config.compile:
            model.backbone_model = torch.compile(model.backbone_model)
            model.depth_decoder = torch.compile(model.depth_decoder)
        self._model = model
        self._num_codebooks = int(model.config.num_codebooks)
        self._eos = int(model.config.codebook_eos_token_id)
        self.sample_rate = int(model.codec_model.config.sampling_rate)
        self.context_free = False  # a sentence's audio depends on the conversation before it
        self._bos = self._processor.tokenizer.bos_token or ""
        self._eos_text = self._processor.tokenizer.eos_token or ""
        self._audio_tokens = f"{self._processor.audio_token}{self._processor.audio_eos_token}"
        self._calls: dict[int, _CallContext] = {}
        self._lock = threading.Lock()  # context is written by the serve loop, read by synthesis threads
        self._watermark = _Watermark(self._device) if config.watermark else None
        progress("loading csm model", 2, 2, f"{self._device} {dtype}, {self.sample_rate} Hz")

    # -- context

    def add_context(self, call_id: int, turn_id: int, speaker: str, text: str) -> None:
        with self._lock:
            self._add_context(call_id, turn_id, speaker, text)

    def _add_context(self, call_id: int, turn_id: int, speaker: str, text: str) -> None:
        ctx = self._context(call_id)
        if speaker == "agent":
            pieces = ctx.agent_audio.pop(turn_id, [])
            audio = np.concatenate(pieces) if pieces else None
            if audio is not None and audio.size > self._config.context_audio_s * self.sample_rate:
                audio = None  # a long turn would cost more prefill than its prosody is worth
            ctx.segments.append(_Segment(self._config.speaker, text, audio))
        else:
            ctx.segments.append(_Segment(self._config.caller_speaker, text, None))
        for old in [t for t in ctx.agent_audio if t < turn_id - 1]:
            del ctx.agent_audio[old]

    def close_call(self, call_id: int) -> None:
        with self._lock:
            self._calls.pop(call_id, None)

    def _context(self, call_id: int) -> _CallContext:
        ctx = self._calls.get(call_id)
        if ctx is None:
            ctx = self._calls[call_id] = _CallContext(deque(maxlen=max(0, self._config.context_turns)))
        return ctx

    def context_segments(self, call_id: int) -> list[tuple[int, str, bool]]:
        """(speaker, text, has audio) of the call's context, oldest first (for tests and logs)."""
        with self._lock:
            return [(s.speaker, s.text, s.audio is not None) for s in self._context(call_id).segments]

    # -- synthesis

    def speak(self, job: SpeechJob, text: str, emit: Emit) -> None:
        torch = self._torch
        with self._lock:
            ctx = self._context(job.call_id)
            segments = list(ctx.segments)
        inputs = self._prompt(segments, text).to(self._device)
        produced: list[np.ndarray] = []

        def emit_chunk(audio: Any) -> None:
            chunk = audio.float().cpu().numpy()
            if self._watermark is not None:
                chunk = self._watermark.apply(chunk, self.sample_rate)
            produced.append(chunk)
            emit(chunk)

        streamer = _FrameStreamer(self._model.codec_model, self._num_codebooks, self._eos,
                                  self._config.first_chunk_frames, self._config.frames_per_chunk, emit_chunk, job)
        max_frames = max(1, int(self._config.max_sentence_s / MIMI_FRAME_S))
        try:
            with torch.inference_mode():
                self._model.generate(
                    **inputs, max_new_tokens=max_frames, streamer=streamer, do_sample=True,
                    temperature=self._config.temperature, top_k=self._config.top_k,
                    depth_decoder_do_sample=True, depth_decoder_temperature=self._config.temperature,
                    depth_decoder_top_k=self._config.top_k,
                )
        except _Cancelled:
            return
        if produced and not job.cancelled:
            with self._lock:
                ctx.agent_audio.setdefault(job.turn_id, []).extend(produced)

    def _prompt(self, segments: list[_Segment], text: str) -> Any:
        # CSM's format: every segment is "<bos>[speaker]text<eos>", followed by its audio frames and
        # an audio-EOS frame when it has audio; the sentence to speak comes last, text only.
        parts: list[str] = []
        audios: list[np.ndarray] = []
        for seg in segments:
            parts.append(f"{self._bos}[{seg.speaker}]{seg.text}{self._eos_text}")
            if seg.audio is not None:
                parts.append(self._audio_tokens)
                audios.append(seg.audio)
        parts.append(f"{self._bos}[{self._config.speaker}]{text}{self._eos_text}")
        return self._processor(text="".join(parts), audio=audios or None, return_tensors="pt")


class _FrameStreamer:
    """transformers streamer: gets each generated frame, decodes groups, emits audio."""

    def __init__(self, codec: Any, num_codebooks: int, eos: int, first: int, group: int, emit: Any,
                 job: SpeechJob) -> None:
        import torch  # noqa: PLC0415

        from workers.tts.mimi_stream import MimiStreamDecoder  # noqa: PLC0415

        self._torch = torch
        self._decoder = MimiStreamDecoder(codec)
        self._codebook_size = int(codec.config.codebook_size)
        self._num_codebooks = num_codebooks
        self._eos = eos
        self._sizes = (max(1, first), max(1, group))
        self._emit = emit
        self._job = job
        self._frames: list[Any] = []
        self._prompt_seen = False
        self._ended = False
        self.frames_total = 0

    def put(self, value: Any) -> None:
        if self._job.cancelled:
            raise _Cancelled
        if not self._prompt_seen:  # generate() first hands over the prompt
            self._prompt_seen = True
            return
        frame = value.reshape(-1, self._num_codebooks)[0]
        if self._ended or bool((frame == self._eos).all()):
            self._ended = True  # the all-EOS frame ends the utterance and is not audio
            return
        self._frames.append(frame)
        self.frames_total += 1
        size = self._sizes[0] if self.frames_total <= self._sizes[0] else self._sizes[1]
        if len(self._frames) >= size:
            self._flush()

    def end(self) -> None:
        self._flush()

    def _flush(self) -> None:
        if not self._frames or self._job.cancelled:
            self._frames.clear()
            return
        codes = self._torch.stack(self._frames, dim=1)  # (codebooks, frames)
        codes = codes.clamp(0, self._codebook_size - 1)  # pad/eos ids lie past the codec's codebook
        self._frames = []
        self._emit(self._decoder.decode(codes))


class _Cancelled(Exception):
    """Raised from the streamer to leave `generate()` at the next frame after a cancel."""


class _Watermark:
    """Sesame's silentcipher watermark, per streamed chunk (it works at 44.1 kHz)."""

    # The public key of Sesame's reference code; operators should use their own private key.
    KEY = (212, 211, 146, 56, 201)

    def __init__(self, device: str) -> None:
        try:
            import silentcipher  # noqa: PLC0415
        except ImportError as exc:
            raise RuntimeError(
                "tts.watermark = true needs the `silentcipher` package in the tts worker's environment "
                "(Sesame's watermarker); install it or set tts.watermark = false"
            ) from exc
        self._model = silentcipher.get_model(model_type="44.1k", device=device)

    def apply(self, chunk: np.ndarray, rate: int) -> np.ndarray:
        import soxr  # noqa: PLC0415

        wide = soxr.resample(chunk, rate, 44100)
        marked, _ = self._model.encode_wav(wide, 44100, list(self.KEY), calc_sdr=False, message_sdr=36)
        out = soxr.resample(np.asarray(marked, dtype=np.float32), 44100, rate)
        return out[: chunk.size] if out.size >= chunk.size else np.pad(out, (0, chunk.size - out.size))
