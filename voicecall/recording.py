"""Call recordings: one two-channel 8 kHz 16-bit WAV per call, written off the event loop.

    left  = the caller, placed by Twilio's media timestamps (lost frames become silence)
    right = the agent as the caller heard it: each frame at the time Twilio plays it; audio
            that `clear` dropped (sent ahead of real time, not yet played) is taken out again

    event loop: CallRecording.caller()/agent()/cleared()  -> mu-law in two buffers (cheap)
                every second: the settled part (both channels final) -> RecordingWriter queue
    writer thread: mu-law -> PCM16, interleave, append; finalize patches the RIFF sizes

Agent audio is final only once its play time has passed (until then a `clear` may drop it),
so a flush never goes past "now". A write that fails (a full disk) stops that call's recording
with one log line and `voicecall_recording_errors_total`; the call itself goes on.
Recording a call needs the caller's consent in many places: it is off unless configured.
"""

from __future__ import annotations

import functools
import logging
import queue
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from prometheus_client import CollectorRegistry, Counter

from ipc.audio import SAMPLE_RATE, ULAW_DECODE, ULAW_SILENCE

log = logging.getLogger("voicecall.recording")

CHANNELS = 2
SAMPLE_BYTES = 2
_HEADER_BYTES = 44
_FLUSH_SAMPLES = SAMPLE_RATE  # hand the writer a second at a time
_PRUNE_INTERVAL_S = 3600.0
_NS_PER_SAMPLE = 1_000_000_000 // SAMPLE_RATE
#: Longest run of missing caller frames filled with silence (Twilio's media clock does not jump).
_MAX_GAP_SAMPLES = 5 * SAMPLE_RATE


def wav_header(data_bytes: int) -> bytes:
    """A canonical 44-byte PCM WAV header for `data_bytes` of 8 kHz 16-bit stereo."""
    rate = SAMPLE_RATE
    block = CHANNELS * SAMPLE_BYTES
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, CHANNELS, rate, rate * block, block, 8 * SAMPLE_BYTES)
            + b"data" + struct.pack("<I", data_bytes))


def interleave(caller: bytes, agent: bytes) -> bytes:
    """Two equally long mu-law channels -> interleaved little-endian PCM16 frames."""
    out = np.empty((len(caller), 2), dtype="<i2")
    out[:, 0] = ULAW_DECODE[np.frombuffer(caller, dtype=np.uint8)]
    out[:, 1] = ULAW_DECODE[np.frombuffer(agent, dtype=np.uint8)]
    return out.tobytes()


class _File:
    """One recording on the writer thread; dead after its first failed write."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fh: BinaryIO | None = None
        self.data_bytes = 0
        self.failed = False


class RecordingWriter:
    """The process's one recording thread: opens, appends, finalizes, prunes old files."""

    def __init__(self, directory: str | Path, keep_days: float = 0.0, registry: CollectorRegistry | None = None) -> None:
        self.directory = Path(directory)
        self.keep_days = keep_days
        self.errors = Counter("voicecall_recording_errors", "Call recordings stopped by a failed write (e.g. a full disk)",
                              registry=registry)
        self.written = Counter("voicecall_recordings", "Call recordings finished", registry=registry)
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="recording-writer", daemon=False)
        self._thread.start()
        self._jobs.put(self.prune)

    # ------------------------------------------------------------------ event-loop side

    def open(self, name: str, now_ns: int | None = None) -> CallRecording:
        """A recording for one call; `name` becomes part of the file name (a call SID)."""
        safe = "".join(c for c in name if c.isalnum() or c in "-_")[:64] or "call"
        path = self.directory / f"{time.strftime('%Y%m%d-%H%M%S')}-{safe}.wav"
        return CallRecording(self, _File(path), time.monotonic_ns() if now_ns is None else now_ns)

    def submit(self, job: Callable[[], None]) -> None:
        self._jobs.put(job)

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until everything queued so far is on disk (tests, shutdown)."""
        done = threading.Event()
        self._jobs.put(done.set)
        return done.wait(timeout_s)

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(10)

    # ------------------------------------------------------------------ writer thread

    def _run(self) -> None:
        next_prune = time.monotonic() + _PRUNE_INTERVAL_S
        while True:
            try:
                job = self._jobs.get(timeout=max(1.0, next_prune - time.monotonic()))
            except queue.Empty:
                job = self.prune
            if job is None:
                return
            if job is self.prune:
                next_prune = time.monotonic() + _PRUNE_INTERVAL_S
            try:
                job()
            except Exception:  # a bug here must not kill the thread every later call needs
                log.exception("recording job failed")

    def _append(self, f: _File, caller: bytes, agent: bytes) -> None:
        if f.failed or not caller:
            return
        try:
            if f.fh is None:
                f.path.parent.mkdir(parents=True, exist_ok=True)
                f.fh = open(f.path, "wb")  # noqa: SIM115 - kept open across jobs, closed in _finalize
                f.fh.write(wav_header(0))
            pcm = interleave(caller, agent)
            f.fh.write(pcm)
            f.data_bytes += len(pcm)
        except OSError as exc:
            self._fail(f, exc)

    def _finalize(self, f: _File) -> None:
        if f.fh is None:
            return
        try:
            if not f.failed:
                f.fh.seek(0)
                f.fh.write(wav_header(f.data_bytes))
            f.fh.close()
            if not f.failed:
                self.written.inc()
        except OSError as exc:
            self._fail(f, exc)
            try:
                f.fh.close()
            except OSError:
                pass
        f.fh = None

    def _fail(self, f: _File, exc: OSError) -> None:
        if f.failed:
            return
        f.failed = True
        self.errors.inc()
        log.error("recording %s stopped: %s (the call goes on; records.recordings_dir)", f.path, exc.strerror or exc)
        if f.fh is not None:
            try:
                f.fh.close()
            except OSError:
                pass
            f.fh = None

    def prune(self) -> int:
        """Delete recordings older than `keep_days` (on the writer thread); returns how many."""
        if self.keep_days <= 0 or not self.directory.is_dir():
            return 0
        cutoff = time.time() - self.keep_days * 86400
        removed = 0
        for path in self.directory.glob("*.wav"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except OSError:
                continue
        if removed:
            log.info("deleted %d recording(s) older than %g days (records.keep_recordings_days)", removed, self.keep_days)
        return removed


def _never_raises(method: Callable[..., Any]) -> Callable[..., Any]:
    """The media stream calls these on its hot path: a bug here stops the recording, not the call."""

    @functools.wraps(method)
    def guarded(self: CallRecording, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except Exception:
            if not self.closed:
                self.closed = True
                self._writer.errors.inc()
                log.exception("recording %s stopped by an error (the call goes on)", self._file.path)
            return None

    return guarded


class CallRecording:
    """One call's two channels, kept on the event loop until they are final."""

    def __init__(self, writer: RecordingWriter, file: _File, origin_ns: int) -> None:
        self._writer = writer
        self._file = file
        self.origin_ns = origin_ns  # sample 0 = when the stream started (Twilio's media clock ~0)
        self._base = 0  # samples already handed to the writer
        self._caller = bytearray()  # from _base
        self._agent = bytearray()  # from _base; ULAW_SILENCE where the agent said nothing
        self._first_ms: int | None = None
        self.closed = False

    @property
    def path(self) -> Path:
        return self._file.path

    @property
    def failed(self) -> bool:
        return self._file.failed

    def _sample_at(self, ns: int) -> int:
        return max(0, (ns - self.origin_ns) // _NS_PER_SAMPLE)

    @_never_raises
    def caller(self, frame: bytes, media_ms: int) -> None:
        """An inbound frame at Twilio's media timestamp (ms since the stream started)."""
        if self.closed:
            return
        at = media_ms * SAMPLE_RATE // 1000 - self._base
        end = len(self._caller)
        if end < at <= end + _MAX_GAP_SAMPLES:  # frames Twilio never delivered: silence
            self._caller.extend(bytes([ULAW_SILENCE]) * (at - end))
        # (a timestamp further ahead is not a lost frame but a bad one: no silence for it)
        self._caller += frame  # a late or repeated timestamp is appended, never overwrites
        if len(self._caller) >= _FLUSH_SAMPLES:
            self._flush(min(len(self._caller), self._sample_at(time.monotonic_ns()) - self._base))

    @_never_raises
    def agent(self, frame: bytes, play_ns: int) -> None:
        """An outbound frame that Twilio will start playing at `play_ns` (monotonic)."""
        if self.closed:
            return
        at = self._sample_at(play_ns) - self._base
        if at < 0:  # its start is already flushed (a late estimate): keep what is left
            frame, at = frame[-at:], 0
        end = at + len(frame)
        if end > len(self._agent):
            self._agent.extend(bytes([ULAW_SILENCE]) * (end - len(self._agent)))
        self._agent[at:end] = frame

    @_never_raises
    def cleared(self, now_ns: int) -> None:
        """`clear`: agent audio not yet played was never heard; take it out."""
        cut = max(0, self._sample_at(now_ns) - self._base)
        if cut < len(self._agent):
            del self._agent[cut:]

    def _flush(self, upto: int) -> None:
        if upto <= 0 or self._file.failed:
            if self._file.failed:  # nothing more will be written: stop buffering
                self._caller.clear()
                self._agent.clear()
            return
        caller = bytes(self._caller[:upto])
        if len(caller) < upto:
            caller += bytes([ULAW_SILENCE]) * (upto - len(caller))
        agent = bytes(self._agent[:upto])
        if len(agent) < upto:
            agent += bytes([ULAW_SILENCE]) * (upto - len(agent))
        del self._caller[:upto]
        del self._agent[:upto]
        self._base += upto
        f = self._file
        self._writer.submit(lambda: self._writer._append(f, caller, agent))

    @_never_raises
    def close(self, now_ns: int | None = None) -> Path | None:
        """The call ended: write the rest (agent audio after now was never played) and finish."""
        if self.closed:
            return None
        self.closed = True
        now = self._sample_at(time.monotonic_ns() if now_ns is None else now_ns) - self._base
        self._flush(max(len(self._caller), min(len(self._agent), now)))
        f = self._file
        self._writer.submit(lambda: self._writer._finalize(f))
        return f.path
