"""The tts worker: sentences of every call in, mu-law 8 kHz frames out, first audio as early as possible.

    serve loop (on_message)                 synthesis threads (tts.synth_threads)
    -----------------------                 ---------------------------------------------
    Synthesize -> SpeechQueue.submit  ----> take() the best job: new turns' first sentences first
    Cancel / newer turn -> cancel jobs      SpeechCache hit (same text spoken before): its audio, or
                                            voice.speak(job) -> float chunks at the native rate
    ContextTurn -> voice.add_context          -> MulawStream (soxr stream, 160-byte frames)
    CallClosed -> drop call                   -> AUDIO records of <= record_ms, aux = first frame
                                            SentenceDone(frames, duration_ms = frames * 20)

Every write of a job's output happens under the job's lock after checking `cancelled`, and a
cancel takes that lock, so once the serve loop has handled a `Cancel` nothing more of that turn
reaches the ring. The telephony side still drops stale records by `turn_id`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, ClassVar

from ipc.audio import FRAME_BYTES, FRAME_MS
from ipc.messages import (
    CallClosed,
    CallOpened,
    Cancel,
    ContextTurn,
    SentenceDone,
    SynthesisFailed,
    Synthesize,
    TtsRequest,
)
from ipc.ring import Record
from workers.base import Progress, Worker
from workers.config import TtsConfig
from workers.tts.mulaw_stream import MulawStream
from workers.tts.speech_cache import SpeechCache
from workers.tts.speech_queue import SpeechJob, SpeechQueue
from workers.tts.speech_text import speakable
from workers.tts.voice import Voice, load_voice

log = logging.getLogger("voicecall.tts")


class _Sentence:
    """Output state of one sentence being spoken: frames sent so far and the first-audio stamp."""

    __slots__ = ("first_audio_ns", "frames")

    def __init__(self) -> None:
        self.frames = 0
        self.first_audio_ns = 0


class TtsWorker(Worker):
    """Serves every call with one loaded voice and `synth_threads` synthesis threads."""

    config_type: ClassVar[type] = TtsConfig
    request_union: ClassVar[Any] = TtsRequest

    def __init__(self, name: str, config: TtsConfig, outbox: Any) -> None:
        super().__init__(name, config, outbox)
        self.config: TtsConfig = config
        self._voice: Voice | None = None
        self._queue = SpeechQueue()
        self._threads: list[threading.Thread] = []
        self._record_bytes = max(1, config.record_ms // FRAME_MS) * FRAME_BYTES
        self._crashed: str | None = None
        self._cache: SpeechCache | None = None

    # -- lifecycle

    def load(self, progress: Progress) -> None:
        self._voice = load_voice(self.config, self.config.process.threads, progress)
        if self.config.cache_mb > 0 and getattr(self._voice, "context_free", False):
            self._cache = SpeechCache(int(self.config.cache_mb * 1024 * 1024))

    def warm_up(self) -> None:
        """One real sentence through voice, resampler and encoder; then start the threads."""
        voice = self._require_voice()
        job = SpeechJob(call_id=-1, turn_id=0, seq=0, text="Hello.", arrival=0, received_ns=time.monotonic_ns())
        stream = MulawStream(voice.sample_rate, self.config.resample_quality, self.config.gain)
        voice.speak(job, "Hello.", stream.push)
        stream.finish()
        voice.close_call(-1)
        for i in range(max(1, self.config.synth_threads)):
            thread = threading.Thread(target=self._serve, name=f"tts-synth-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def shutdown(self, deadline_s: float) -> None:
        self._queue.stop()  # cancels running sentences: each stops at its next synthesis step
        end = time.monotonic() + deadline_s
        for thread in self._threads:
            thread.join(max(0.0, end - time.monotonic()))
        if self._cache is not None:
            log.info("%s: speech cache: %d sentences replayed, %d synthesized; %d kept (%.1f MB)", self.name,
                     self._cache.hits, self._cache.misses, len(self._cache), self._cache.bytes / 2**20)
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            log.warning("%s: synthesis threads still running at the stop deadline: %s", self.name, alive)

    def busy_calls(self) -> int:
        return self._queue.busy_calls()

    def health(self) -> str | None:
        if self._crashed is not None:
            return self._crashed
        dead = [t.name for t in self._threads if not t.is_alive()]
        return f"synthesis threads died: {dead}" if dead else None

    # -- requests (serve loop: never blocks)

    def on_message(self, msg: TtsRequest, record: Record) -> None:
        if isinstance(msg, Synthesize):
            if self._queue.submit(msg.call_id, msg.turn_id, msg.seq, msg.text) is None:
                log.debug("%s: call %d turn %d seq %d dropped (cancelled or superseded)",
                          self.name, msg.call_id, msg.turn_id, msg.seq)
        elif isinstance(msg, Cancel):
            self._queue.cancel(msg.call_id, msg.turn_id)
        elif isinstance(msg, ContextTurn):
            self._queue.note_turn(msg.call_id, msg.turn_id)
            self._require_voice().add_context(msg.call_id, msg.turn_id, msg.speaker, speakable(msg.text))
        elif isinstance(msg, CallClosed):
            self._queue.close_call(msg.call_id)
            self._require_voice().close_call(msg.call_id)
        elif isinstance(msg, CallOpened):
            pass  # per-call state is created on first use; nothing is loaded per call

    # -- synthesis threads

    def _serve(self) -> None:
        try:
            while True:
                job = self._queue.take(timeout_s=0.5)
                if job is None:
                    if self._queue.stopped:
                        return
                    continue
                try:
                    self._speak(job)
                finally:
                    self._queue.done(job)
        except BaseException as exc:  # noqa: BLE001 - a dead thread must show up in health, not vanish
            self._crashed = f"{threading.current_thread().name} crashed: {type(exc).__name__}: {exc}"
            log.exception("%s: synthesis thread crashed", self.name)

    def _speak(self, job: SpeechJob) -> None:
        voice = self._require_voice()
        text = speakable(job.text)
        sentence = _Sentence()
        cache = self._cache
        kept = cache.get(text) if cache is not None and text else None
        try:
            if kept is not None:
                self._send(job, sentence, kept)
            else:
                self._synthesize(job, voice, text, sentence)
            if job.cancelled:
                return
        except Exception as exc:  # noqa: BLE001 - one bad sentence must not take the worker down
            log.exception("%s: call %d turn %d seq %d: synthesis failed", self.name, job.call_id, job.turn_id, job.seq)
            with job.lock:
                if not job.cancelled:
                    self.outbox.message(
                        SynthesisFailed(call_id=job.call_id, turn_id=job.turn_id, seq=job.seq,
                                        reason=f"{type(exc).__name__}: {exc}"),
                        job.call_id, job.turn_id, job.seq,
                    )
            return
        with job.lock:
            if job.cancelled:
                return
            self.outbox.message(
                SentenceDone(call_id=job.call_id, turn_id=job.turn_id, seq=job.seq, frames=sentence.frames,
                             duration_ms=sentence.frames * FRAME_MS, first_audio_ns=sentence.first_audio_ns,
                             text=job.text),
                job.call_id, job.turn_id, job.seq,
            )
        log.debug("%s: call %d turn %d seq %d: %d frames, first audio %.1f ms after arrival", self.name,
                  job.call_id, job.turn_id, job.seq, sentence.frames,
                  (sentence.first_audio_ns - job.received_ns) / 1e6 if sentence.first_audio_ns else -1.0)

    def _synthesize(self, job: SpeechJob, voice: Voice, text: str, sentence: _Sentence) -> None:
        """Run the voice for `text`, sending audio as it comes; keep the whole of it when cacheable."""
        stream = MulawStream(voice.sample_rate, self.config.resample_quality, self.config.gain)
        whole = bytearray() if self._cache is not None else None

        def out(mulaw: bytes) -> None:
            if whole is not None:
                whole.extend(mulaw)
            self._send(job, sentence, mulaw)

        if text and any(ch.isalnum() for ch in text):
            voice.speak(job, text, lambda audio: out(stream.push(audio)))
        if job.cancelled:
            return
        out(stream.finish())
        if whole is not None and not job.cancelled and text:
            self._cache.put(text, bytes(whole))  # type: ignore[union-attr]

    def _send(self, job: SpeechJob, sentence: _Sentence, mulaw: bytes) -> None:
        """Write whole frames as records of at most `record_ms`; nothing once the job is cancelled."""
        view = memoryview(mulaw)
        for start in range(0, len(mulaw), self._record_bytes):
            piece = bytes(view[start:start + self._record_bytes])
            with job.lock:
                if job.cancelled:
                    return
                ts_ns: int | None = None
                if sentence.frames == 0:
                    sentence.first_audio_ns = ts_ns = time.monotonic_ns()  # tts_first_audio
                self.outbox.audio(piece, job.call_id, job.turn_id, job.seq, sentence.frames, ts_ns)
                sentence.frames += len(piece) // FRAME_BYTES

    def _require_voice(self) -> Voice:
        if self._voice is None:
            raise RuntimeError("tts worker used before load()")
        return self._voice

