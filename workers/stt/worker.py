"""The STT worker: Silero VAD, adaptive endpointing and Whisper for every call, in one process.

    serve loop thread (base.worker_main)          decoder threads (TranscriptionQueue)
    ------------------------------------          ------------------------------------
    AUDIO records -> mu-law decode -> CallAudio
    PLAYED records (what the caller heard) -> EchoReference; the agent's echo, once fitted, taken
                   out of later AUDIO (workers/stt/echo_canceller.py)
    every complete 32 ms window of every call
      -> one batched Silero run -> Endpointer
         ONSET  -> SpeechStarted (barge-in), unless the agent's own audio explains the sound:
                   its echo on the caller's line (workers/stt/echo_gate.py) -> EchoIgnored
         PAUSE  -> queue a pause transcript  ---->  resample 8->16 kHz, Whisper (short window)
                   and a Smart Turn check    ---->  (its own thread) P(complete) of the last 8 s
         END    -> TurnEnded now if the pause  <----  result: Partial; it may end the turn (the
                   transcript covers all speech,        endpointer needed the text), or complete a
                   else queue a FINAL                   turn that was waiting for it (TurnEnded)
                                                        Both signals in and the turn not over yet:
                                                        SpeculativeFinal (telephony may prepare a reply)
         RESUME -> SpeechResumed (that speculative final is stale)

Why this split: Silero takes ~0.1 ms a window and runs on the serve loop, which never waits for a
decode (CTranslate2 releases the GIL), so a barge-in is seen within a window or two even while
Whisper is busy. Why pause transcripts: by the time a turn ends (300+ ms of silence) the speech
before the silence has usually been transcribed already, so the final costs no decode at all;
the same text tells the endpointer whether the caller sounded finished.

Call state is touched by both sides under one lock; it is dropped on CallClosed.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ipc.audio import ulaw_decode
from ipc.messages import (
    CallClosed,
    CallOpened,
    EchoIgnored,
    Partial,
    PlaybackState,
    SpeculativeFinal,
    SpeechResumed,
    SpeechStarted,
    SttRequest,
    TurnEnded,
)
from ipc.ring import Record
from workers.base import Progress, Worker
from workers.config import SttConfig, VadConfig
from workers.stt.call_audio import CallAudio
from workers.stt.echo_canceller import NS_PER_SAMPLE, EchoCanceller, EchoPath
from workers.stt.echo_gate import EchoReference, EchoVerdict
from workers.stt.endpointing import Endpointer, Event, OnsetCounter, wants_second_look
from workers.stt.transcription_queue import Job, JobKind, TranscriptionQueue
from workers.stt.turn_checks import TurnCheck, TurnChecks
from workers.stt.vad import SAMPLE_RATE, WINDOW, WINDOW_MS, HalfWindowStream, SileroVad, VadStream

log = logging.getLogger("voicecall.stt")

_MS = SAMPLE_RATE // 1000  # samples per ms at 8 kHz
#: VAD windows between fits of the echo while nobody speaks (10: every 320 ms, 2-10 ms a fit).
REFIT_WINDOWS = 10


@dataclass
class _PendingEnd:
    """A turn whose endpoint is decided, waiting for the transcript that covers `mark`."""

    utterance: int
    mark: int
    committed: str
    utt_start: int
    turn: int
    start_media_ms: int
    end_media_ms: int
    speech_end_ns: int
    turn_end_ns: int
    turn_end_media_ms: int
    silence_ms: int
    turn_prob: float = -1.0
    turn_check_ms: float = 0.0
    turn_model_failed: bool = False
    forced: bool = False
    second_look: bool = False


@dataclass
class _Look:
    """The second look at one pause (`stt.vad.second_look_ms` into it): its transcript and the
    model's answer, applied together once both are in (either alone would judge half new signals)."""

    mark: int  # the pause's last voiced VAD window
    text: str | None = None
    scores: tuple[int, float, float] = (0, 0.0, 0.0)  # the transcript's covers, no_speech_prob, avg_logprob
    prob: float | None = None  # None: the check failed (or the model is off)
    prob_in: bool = False
    check_ms: float = 0.0
    applied: bool = False
    failed: bool = False  # the decode failed: the first look's answers stood (not reported as a look)


class _Call:
    """Everything the worker keeps for one live call."""

    def __init__(self, policy: VadConfig, max_run_ms: int) -> None:
        self.audio = CallAudio()
        self.vad = VadStream()
        self.ep = Endpointer(policy, WINDOW_MS, max_run_ms)
        self.half: HalfWindowStream | None = None  # while the agent is audible: a second VAD phase
        self.turn_seen = 0  # newest turn id on the call's inbound frames
        self.last_ended = -1  # turn id of the last TurnEnded
        self.turn = 0  # turn id of the current utterance
        self.utterance = 0  # increments at every onset
        self.utt_start = 0  # first sample of the utterance audio (onset - prefix padding)
        self.commit_from = 0  # later decodes start here; text before it is `committed`
        self.committed = ""
        self.requested_mark = -1  # last_voiced window covered by the newest pause/final job
        self.result_mark = -1  # ... by the newest applied result
        self.result_text = ""
        self.result_covers = 0
        self.result_no_speech = 0.0
        self.result_logprob = 0.0
        self.last_partial_at = 0  # sample where the last interval partial was requested
        self.last_partial_text = ""  # not repeated when a later decode agrees
        #: Ended turns waiting for their transcript, by utterance number.
        self.pending: dict[int, _PendingEnd] = {}
        #: Smart Turn at the last pause: (P(complete) or -1, ms, failed).
        self.check: tuple[float, float, bool] = (-1.0, 0.0, False)
        self.spec_mark = -1  # last_voiced window of the last SpeculativeFinal sent (-1: none since resume)
        self.spec_waited_ms = 0  # silence already past when it was sent
        self.late_spec_mark = -1  # last_voiced window the late offer (speculative_lead_ms) was judged for
        self.look: _Look | None = None  # the current pause's second look, once taken
        self.checked_mark = -1  # last_voiced window of the pause the first Smart Turn check answered for
        #: What the caller heard lately, for the echo gate (None: the gate is off).
        self.echo = EchoReference(policy.echo_max_delay_ms, policy.echo_window_ms) if policy.echo_explained_db > 0 else None
        self.echo_until = -1  # VAD windows up to this one, in a pause, are the agent's echo (judged once)
        #: The agent's echo taken out of what the models hear (None: off, or the gate is).
        self.canceller = EchoCanceller(self.echo) if self.echo is not None and policy.echo_cancel else None
        self.refit_at = 0  # the next VAD window at which the echo may be fitted again while nobody speaks


class SttWorker(Worker):
    """Serves every call: VAD + endpointing on the serve loop, Whisper on decoder threads."""

    config_type = SttConfig
    request_union = SttRequest

    def __init__(self, name: str, config: SttConfig, outbox: Any) -> None:
        super().__init__(name, config, outbox)
        self.policy = config.vad
        self._calls: dict[int, _Call] = {}
        self._lock = threading.RLock()  # re-entered: on_records -> on_message
        self._engine: Any = None
        self._vad: SileroVad | None = None
        self._queue: TranscriptionQueue | None = None
        self._turn_model: Any = None
        self._checks: TurnChecks | None = None
        self.vad_s = 0.0  # CPU-side time spent in Silero (for health/benchmarks)
        self.vad_windows = 0

    # ------------------------------------------------------------------ lifecycle

    def load(self, progress: Progress) -> None:
        from workers.stt.whisper import WhisperEngine

        cfg = self.config
        logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # no per-decode INFO lines
        progress("loading whisper", 0, 2, cfg.model)
        self._engine = WhisperEngine.for_config(cfg)
        progress("loading silero vad", 1, 3, cfg.vad.model)
        self._vad = SileroVad.load(cfg.vad.model, threads=1)
        if cfg.vad.turn_model:  # a missing file fails start-up, naming the package and the file
            from workers.stt.smart_turn import SmartTurn

            progress("loading smart turn", 2, 3, cfg.vad.turn_model)
            self._turn_model = SmartTurn.load(cfg.vad.turn_model, threads=1)
        progress("models loaded", 3, 3)

    def warm_up(self) -> None:
        rng = np.random.default_rng(0)
        noise = (rng.standard_normal(16000) * 0.01).astype(np.float32)
        self._engine.transcribe(noise)  # first call pays CTranslate2's lazy initialisation
        stream = VadStream()
        stream.push(np.zeros(WINDOW, dtype=np.int16))
        assert self._vad is not None
        self._vad.step([stream])
        self._queue = TranscriptionQueue(self.config.decode_threads, self._decode)
        if self._turn_model is not None:
            self._turn_model.probability_8k(np.zeros(8000, dtype=np.int16))
            self._checks = TurnChecks(self._turn_model, self.config.turn_threads, self._on_check, self._check_current)

    def shutdown(self, deadline_s: float) -> None:
        if self._queue is not None and not self._queue.close(deadline_s):
            log.warning("stt: a decode was still running at the %.1f s stop deadline", deadline_s)
        if self._checks is not None:
            self._checks.close(1.0)
        with self._lock:
            self._calls.clear()

    def busy_calls(self) -> int:
        with self._lock:
            return sum(1 for c in self._calls.values() if c.ep.speaking or c.pending)

    # ------------------------------------------------------------------ serve loop

    def on_message(self, msg: SttRequest, record: Record) -> None:
        with self._lock:
            if isinstance(msg, CallOpened):
                self._calls.setdefault(msg.call_id, self._new_call())
            elif isinstance(msg, CallClosed):
                closed = self._calls.pop(msg.call_id, None)
                if closed is not None and closed.canceller is not None and closed.canceller.frames:
                    c = closed.canceller
                    log.info("call %d: the agent's echo taken out of %d frames (%.1f dB quieter on average), "
                             "%d left as they came", msg.call_id, c.frames, c.removed_db_mean, c.skipped)
                if self._queue is not None:
                    self._queue.discard(msg.call_id)
                if self._checks is not None:
                    self._checks.discard(msg.call_id)
            elif isinstance(msg, PlaybackState):
                call = self._calls.get(msg.call_id)
                if call is not None:
                    vad = self.config.vad
                    call.ep.strict = (vad.echo_threshold, vad.echo_min_speech_ms) if msg.playing else None
                    if not msg.playing:
                        call.half = None
                    elif call.half is None:
                        call.half = HalfWindowStream(call.audio.end, OnsetCounter(vad.onset_gap_ms, WINDOW_MS))

    def on_audio(self, record: Record) -> None:
        call = self._calls.get(record.call_id)
        if call is None:  # audio before CallOpened (or after a worker restart): serve it anyway
            call = self._calls[record.call_id] = self._new_call()
        raw = ulaw_decode(record.payload)
        pcm = raw
        if call.canceller is not None and call.canceller.reference.recent(record.ts_ns):
            pcm = call.canceller.cancel(raw, call.audio.end)
        call.audio.append(pcm, record.aux, record.ts_ns, raw=raw)
        call.vad.push(pcm)
        if call.half is not None:
            call.half.push(pcm, call.audio.end - len(pcm))
        call.turn_seen = max(call.turn_seen, record.turn_id)

    def on_played(self, record: Record) -> None:
        call = self._calls.get(record.call_id)
        if call is not None and call.echo is not None:
            call.echo.add(ulaw_decode(record.payload), record.ts_ns)

    def _new_call(self) -> _Call:
        return _Call(self.policy, self.config.commit_after_ms)

    def on_records(self, records: list[Record]) -> None:
        with self._lock:
            super().on_records(records)
            self._run_vad()

    def _run_vad(self) -> None:
        """Every complete window of every call, one batched Silero run per window position."""
        assert self._vad is not None
        while True:
            ready: list[tuple[int, _Call, VadStream]] = []
            for cid, c in self._calls.items():
                if c.vad.ready():
                    ready.append((cid, c, c.vad))
                if c.half is not None and c.half.vad.ready():
                    ready.append((cid, c, c.half.vad))
            if not ready:
                return
            t0 = time.perf_counter()
            probs = self._vad.step([stream for _, _, stream in ready])
            self.vad_s += time.perf_counter() - t0
            self.vad_windows += len(ready)
            for (cid, call, stream), prob in zip(ready, probs, strict=True):
                if stream is call.vad:
                    self._advance(cid, call, call.vad.windows_done - 1, float(prob))
                else:
                    self._advance_half(cid, call, stream.windows_done - 1, float(prob))

    def _advance_half(self, cid: int, call: _Call, window: int, prob: float) -> None:
        """The second VAD phase (while the agent is audible) only ever starts speech."""
        half = call.half
        if half is None:
            return
        ep = call.ep
        if ep.speaking:
            half.onset.reset()
            return
        if half.onset.step(window, prob, *ep.onset_rule()):
            onset_window = half.window_start(half.onset.run_start) // WINDOW
            stop = half.window_start(window + 1)
            if self._is_echo(cid, call, half.window_start(half.onset.run_start - 2), stop, onset_window * WINDOW):
                half.onset.reset()
                return
            ep.start_at(onset_window, call.vad.windows_done - 1)
            self._on_onset(cid, call)

    def _advance(self, cid: int, call: _Call, window: int, prob: float) -> None:
        """Feed one window's probability to the call's endpointer and act on what it says."""
        window_end = (window + 1) * WINDOW
        ep = call.ep
        if ep.speaking and ep.paused and prob >= ep.onset_rule()[0] and self._echo_in_pause(cid, call, window):
            prob = 0.0  # the agent's audio echoing into the caller's pause: they have not gone on
        event = ep.step(window, prob)
        if event is Event.ONSET and self._is_echo(cid, call, (ep.onset_window - 2) * WINDOW, window_end,
                                                  ep.onset_window * WINDOW):
            ep.withdraw_onset()
        elif event is Event.ONSET:
            self._on_onset(cid, call)
        elif event is Event.PAUSE:
            self._on_pause(cid, call, window_end)
        elif event is Event.RESUME:
            self._on_resume(cid, call)
        elif event is Event.END:
            self._on_end(cid, call, window)
        elif call.ep.speaking and not call.ep.paused:
            self._maybe_partial(cid, call, window_end)
        elif call.ep.speaking:
            self._maybe_second_look(cid, call, window)
            self._maybe_late_speculative(cid, call, window)
        else:
            self._maybe_refit_echo(call, window)
        if not call.ep.speaking:  # keep only the prefix padding's worth of history
            keep = (self.config.vad.prefix_padding_ms + self.config.vad.min_speech_ms + 200) * _MS
            if call.audio.end - call.audio.base > keep + SAMPLE_RATE:
                call.audio.trim(call.audio.end - keep)

    def _echo_in_pause(self, cid: int, call: _Call, window: int) -> bool:
        """Is the sound in the caller's pause (a voiced `window`) the agent's audio echoing? (The
        answer resumed after their "uh-huh", or began while they paused.) Judged on the audio since
        the pause began; once echo, the next `echo_min_speech_ms` of windows are too."""
        if call.echo is None:
            return False
        if window <= call.echo_until:
            return True
        stop = (window + 1) * WINDOW
        start = max(call.ep.speech_end_ms * _MS, stop - self.config.vad.echo_window_ms * _MS)
        if stop - start < 3 * WINDOW:
            return False  # too little of the pause to tell the echo from the caller by
        if self._is_echo(cid, call, start, stop, stop - WINDOW):
            call.echo_until = window + self.config.vad.echo_min_speech_ms // WINDOW_MS
            return True
        return False

    def _maybe_refit_echo(self, call: _Call, window: int) -> None:
        """While nobody speaks and the agent's audio may be echoing louder than the line's quiet:
        fit the echo again every `REFIT_WINDOWS` (the path's delay moves from one answer to the
        next, and the two ends' clocks drift apart), so the canceller follows it."""
        canceller = call.canceller
        if canceller is None or window < call.refit_at:
            return
        stop = (window + 1) * WINDOW
        end_ns = call.audio.arrival_ns(stop - 1)
        if not canceller.reference.recent(end_ns):
            return
        call.refit_at = window + REFIT_WINDOWS
        raw = call.audio.raw(stop - self.config.vad.echo_window_ms * _MS, stop)
        floor = call.audio.floor_power()
        if len(raw) < 3 * WINDOW or float(np.mean(np.square(raw, dtype=np.float64))) < 2.0 * floor:
            return  # nothing above the line's quiet: no echo to fit (a clean line costs no check)
        self._learn_echo(call, canceller.reference.echo_of(raw, end_ns, floor, self.config.vad.echo_explained_db),
                         stop, end_ns)

    @staticmethod
    def _learn_echo(call: _Call, verdict: EchoVerdict, stop: int, end_ns: int) -> None:
        """A stretch of the line up to sample `stop` (arrived by `end_ns`) judged the agent's echo
        alone: the canceller takes out that fit from now on."""
        if call.canceller is not None and verdict.echo and verdict.taps is not None:
            call.canceller.learn(EchoPath(verdict.taps, verdict.max_delay, end_ns - stop * NS_PER_SAMPLE))

    def _is_echo(self, cid: int, call: _Call, start: int, stop: int, onset: int) -> bool:
        """Is the sound in samples [start, stop) of the call (at most `echo_window_ms` of it), speech
        that began at sample `onset`, the agent's own voice coming back on the caller's line? Then
        it is reported (`EchoIgnored`). An onset is judged on its voiced run and two windows before
        it, not more: the line's quiet before it would hide an echo just begun under a noisy floor."""
        if call.echo is None:
            return False
        start = max(start, stop - self.config.vad.echo_window_ms * _MS)
        end_ns = call.audio.arrival_ns(stop - 1)
        if not call.echo.recent(end_ns):
            return False
        vad = self.config.vad
        t0 = time.perf_counter()
        floor = call.audio.floor_power()
        verdict = call.echo.echo_of(call.audio.raw(start, stop), end_ns, floor, vad.echo_explained_db)
        self._learn_echo(call, verdict, stop, end_ns)
        ms = (time.perf_counter() - t0) * 1e3
        if not verdict.echo:
            log.debug("call %d: sound over the agent's recent audio is not its echo (%d ms judged: best match %.2f "
                      "at %.0f ms, explained %.1f dB, floor %.0f dBFS)", cid, (stop - start) // _MS,
                      verdict.correlation, verdict.delay_ms, verdict.explained_db,
                      10 * np.log10(floor / 32768.0**2 + 1e-12))
        if verdict.echo:
            self.outbox.message(EchoIgnored(call_id=cid, turn_id=call.turn_seen,
                                            media_ms=call.audio.media_ms(onset),
                                            delay_ms=verdict.delay_ms, echo_db=verdict.echo_db,
                                            explained_db=verdict.explained_db, check_ms=round(ms, 2)),
                                cid, call.turn_seen)
        return verdict.echo

    def _on_onset(self, cid: int, call: _Call) -> None:
        ep = call.ep
        call.utterance += 1
        call.turn = max(call.turn_seen, call.last_ended + 1)
        onset = ep.onset_window * WINDOW
        call.utt_start = max(call.audio.base, onset - self.config.vad.prefix_padding_ms * _MS)
        call.commit_from, call.committed = call.utt_start, ""
        call.requested_mark = call.result_mark = -1
        call.last_partial_at, call.last_partial_text = onset, ""
        call.check, call.spec_mark, call.look = (-1.0, 0.0, False), -1, None
        self.outbox.message(SpeechStarted(call_id=cid, turn_id=call.turn, media_ms=call.audio.media_ms(onset),
                                          detected_ns=time.monotonic_ns()), cid, call.turn)

    def _on_pause(self, cid: int, call: _Call, window_end: int) -> None:
        ep = call.ep
        voiced_end = (ep.last_voiced + 1) * WINDOW
        floor = self.config.vad.end_floor_dbfs
        refined = call.audio.last_loud_end(voiced_end, floor, max_back=160 * _MS)
        ep.refine_end(refined // _MS)
        call.turn = max(call.turn, call.turn_seen)  # telephony may have moved on (a discarded speculative reply)
        self._submit(cid, call, JobKind.PAUSE, window_end)
        if self._checks is not None:
            ep.expect_turn_prob()
            start = max(call.utt_start, window_end - 8 * SAMPLE_RATE)
            self._checks.submit(TurnCheck(cid, call.utterance, ep.last_voiced, call.audio.pcm(start, window_end)))

    def _on_resume(self, cid: int, call: _Call) -> None:
        if call.spec_mark >= 0:
            call.spec_mark = -1
            self.outbox.message(SpeechResumed(call_id=cid, turn_id=call.turn, ts_ns=time.monotonic_ns(),
                                              media_ms=call.audio.media_ms(call.ep.last_voiced * WINDOW)),
                                cid, call.turn)
        # Speech after a pause: if the pause transcript covers a long stretch, commit it so later
        # decodes only cover the new speech (keeps long monologues inside the short window).
        if call.result_mark == call.requested_mark >= 0 and \
                call.result_covers - call.commit_from >= self.config.commit_after_ms * _MS:
            call.committed, call.commit_from = call.result_text, call.result_covers
        call.last_partial_at = call.ep.last_voiced * WINDOW

    def _maybe_partial(self, cid: int, call: _Call, window_end: int) -> None:
        interval = self.config.partial_interval_ms * _MS
        if interval > 0 and window_end - call.last_partial_at >= interval:
            call.last_partial_at = window_end
            assert self._queue is not None
            self._queue.submit(Job(cid, JobKind.PARTIAL, call.utterance, window_end,
                                   call.audio.pcm(call.commit_from, window_end)))

    def _submit(self, cid: int, call: _Call, kind: JobKind, upto: int, second_look: bool = False) -> None:
        assert self._queue is not None
        call.requested_mark = call.ep.last_voiced
        self._queue.discard(cid, (JobKind.PARTIAL,))
        self._queue.submit(Job(cid, kind, call.utterance, upto, call.audio.pcm(call.commit_from, upto),
                               mark=call.ep.last_voiced, second_look=second_look))

    def _maybe_second_look(self, cid: int, call: _Call, window: int) -> None:
        """A pause still waiting `second_look_ms` into it: transcribe and check it again on the
        audio up to now (once per pause); `_apply_look` weighs the answers."""
        ep, look_ms = call.ep, self.config.vad.second_look_ms
        if not look_ms or (call.look is not None and call.look.mark == ep.last_voiced) or ep.silence_ms(window) < look_ms:
            return
        if ep.text is None or (self._checks is not None and call.checked_mark != ep.last_voiced):
            return  # the first look's answers are not all in (a busy machine): they may end the turn as they are
        if not wants_second_look(self.config.vad, ep.text, ep.required_ms):
            return
        call.look = _Look(ep.last_voiced)
        ep.hold_ms = look_ms + self.config.vad.second_look_wait_ms
        window_end = (window + 1) * WINDOW
        self._submit(cid, call, JobKind.PAUSE, window_end, second_look=True)
        if self._checks is None:
            call.look.prob_in = True
            return
        start = max(call.utt_start, window_end - 8 * SAMPLE_RATE)
        self._checks.submit(TurnCheck(cid, call.utterance, ep.last_voiced, call.audio.pcm(start, window_end),
                                      second_look=True))

    def _apply_look(self, cid: int, call: _Call) -> None:
        """Both answers of the second look are in: they replace the first look's, the wait is
        chosen again (ending the turn now if enough silence has passed), and a changed transcript
        or wait is offered again as a speculative final."""
        ep, look = call.ep, call.look
        if look is None or look.applied or look.text is None or not look.prob_in \
                or not (ep.speaking and ep.paused and ep.last_voiced == look.mark):
            return
        look.applied = True
        call.result_mark, call.result_text = look.mark, look.text
        call.result_covers, call.result_no_speech, call.result_logprob = look.scores
        if look.text:
            self._partial(cid, call, look.text)
        before = (ep.text, ep.required_ms)
        ep.hold_ms = 0
        ep.take_second_look(look.text, look.prob)
        if look.prob is not None and ep.turn_prob == look.prob:
            call.check = (look.prob, look.check_ms, False)
        if (ep.text, ep.required_ms) != before:
            call.spec_mark = -1
        self._signals_in(cid, call)

    def _on_end(self, cid: int, call: _Call, window: int) -> None:
        ep, audio = call.ep, call.audio
        end_sample = ep.speech_end_ms * _MS
        end = _PendingEnd(
            utterance=call.utterance, mark=ep.last_voiced, committed=call.committed, utt_start=call.utt_start,
            turn=call.turn, start_media_ms=audio.media_ms(ep.onset_window * WINDOW),
            end_media_ms=audio.media_ms(end_sample), speech_end_ns=audio.arrival_ns(max(end_sample - 1, 0)),
            turn_end_ns=time.monotonic_ns(), turn_end_media_ms=audio.media_ms((window + 1) * WINDOW),
            silence_ms=ep.required_ms, turn_prob=call.check[0], turn_check_ms=call.check[1],
            turn_model_failed=call.check[2], forced=ep.forced,
            second_look=call.look is not None and call.look.applied and not call.look.failed
            and call.look.mark == ep.last_voiced,
        )
        call.turn = end.turn = max(call.turn, call.turn_seen)
        call.last_ended = call.turn
        if call.result_mark == ep.last_voiced:
            self._emit_final(cid, end, call.result_text, call.result_covers - call.utt_start,
                             call.result_no_speech, call.result_logprob, speculative=True)
            return
        call.pending[call.utterance] = end
        if call.requested_mark == ep.last_voiced:
            assert self._queue is not None
            self._queue.promote(cid)  # the pause transcript is still queued or running: wait for it
        else:
            self._submit(cid, call, JobKind.FINAL, (window + 1) * WINDOW)

    def _emit_final(self, cid: int, end: _PendingEnd, text: str, audio_samples: int, no_speech: float,
                    logprob: float, speculative: bool) -> None:
        msg = TurnEnded(
            call_id=cid, turn_id=end.turn, text=text, speech_start_media_ms=end.start_media_ms,
            speech_end_media_ms=end.end_media_ms, speech_end_ns=end.speech_end_ns, turn_end_ns=end.turn_end_ns,
            stt_final_ns=time.monotonic_ns(), audio_ms=audio_samples // _MS, no_speech_prob=no_speech, avg_logprob=logprob,
            turn_end_media_ms=end.turn_end_media_ms, endpoint_silence_ms=end.silence_ms, speculative=speculative,
            turn_prob=end.turn_prob, turn_check_ms=end.turn_check_ms, turn_model_failed=end.turn_model_failed,
            forced=end.forced, second_look=end.second_look,
        )
        self.outbox.message(msg, cid, end.turn)

    # ------------------------------------------------------------------ decoder threads

    def _decode(self, job: Job) -> None:
        """Run on a decoder thread: transcribe, then apply the result under the lock."""
        import soxr

        try:
            audio16k = soxr.resample(job.audio.astype(np.float32) / 32768.0, SAMPLE_RATE, 16000, quality="HQ")
            result = self._engine.transcribe(audio16k.astype(np.float32), check_end=job.kind is not JobKind.PARTIAL)
        except Exception:
            log.exception("stt: transcription failed for call %d (%s); the turn gets an empty transcript",
                          job.call_id, job.kind.name)
            result = None
        with self._lock:
            call = self._calls.get(job.call_id)
            if call is None:
                return  # the call ended: nobody needs this text
            text = result.text if result is not None else ""
            no_speech = result.no_speech_prob if result is not None else 1.0
            logprob = result.avg_logprob if result is not None else 0.0
            end = call.pending.get(job.utterance)
            if end is not None and end.mark == job.mark and job.kind is not JobKind.PARTIAL:
                del call.pending[job.utterance]
                full = f"{end.committed} {text}".strip()
                self._emit_final(job.call_id, end, full, job.covers - end.utt_start, no_speech, logprob,
                                 speculative=job.kind is JobKind.PAUSE)
                return
            if call.utterance != job.utterance:
                return  # a newer utterance started: this text is stale
            full = f"{call.committed} {text}".strip()
            if job.kind is JobKind.PARTIAL:
                if call.ep.speaking and full:
                    self._partial(job.call_id, call, full)
                return
            if job.mark < call.result_mark:
                return
            look, ep = call.look, call.ep
            pausing_at_mark = ep.speaking and ep.paused and ep.last_voiced == job.mark
            if job.second_look:
                if not (pausing_at_mark and look is not None and look.mark == job.mark):
                    return  # the pause is over: the turn ended on the first look's text, or the caller went on
                if result is None:  # the decode failed (logged): the first look's signals stand
                    look.applied, look.failed, ep.hold_ms = True, True, 0
                    self._signals_in(job.call_id, call)
                    return
                # kept until the look's model answer is in too (the turn is held meanwhile: hold_ms)
                look.text, look.scores = full, (job.covers, no_speech, logprob)
                self._apply_look(job.call_id, call)
                return
            call.result_mark, call.result_text, call.result_covers = job.mark, full, job.covers
            call.result_no_speech, call.result_logprob = no_speech, logprob
            if full:
                self._partial(job.call_id, call, full)
            if pausing_at_mark:
                ep.set_text(full)
                self._signals_in(job.call_id, call)

    def _check_current(self, check: TurnCheck) -> bool:
        """Is the pause this check is about still going on? (Read without the lock: a stale
        answer only costs a skipped or a wasted check, never a wrong decision.)"""
        call = self._calls.get(check.call_id)
        return call is not None and call.utterance == check.utterance and call.ep.paused \
            and call.ep.last_voiced == check.mark

    def _on_check(self, check: TurnCheck, prob: float | None, ms: float) -> None:
        """Run on the check thread: a Smart Turn answer for a pause."""
        with self._lock:
            call = self._calls.get(check.call_id)
            if call is None or call.utterance != check.utterance:
                return
            ep = call.ep
            if not (ep.speaking and ep.paused and ep.last_voiced == check.mark):
                return  # the caller spoke again: this answer is about old speech
            if check.second_look:
                if call.look is not None and call.look.mark == check.mark:
                    call.look.prob, call.look.prob_in, call.look.check_ms = prob, True, ms
                    self._apply_look(check.call_id, call)
                return
            call.check = (-1.0 if prob is None else prob, ms, prob is None)
            call.checked_mark = check.mark
            ep.set_turn_prob(prob)
            self._signals_in(check.call_id, call)

    def _signals_in(self, cid: int, call: _Call) -> None:
        """A signal for the current pause arrived: end the turn if the silence is enough already;
        otherwise, once the transcript is in, offer it as a speculative final (once per pause)."""
        ep = call.ep
        last_window = call.vad.windows_done - 1
        if ep.check(last_window) is Event.END:
            self._on_end(cid, call, last_window)
            return
        if not ep.text or call.spec_mark == ep.last_voiced:
            return
        call.spec_mark = ep.last_voiced
        call.spec_waited_ms = ep.silence_ms(last_window)
        self._send_speculative(cid, call, call.spec_waited_ms)

    def _maybe_late_speculative(self, cid: int, call: _Call, window: int) -> None:
        """A long wait is `speculative_lead_ms` from its end: offer the pause transcript again, so a
        reply prepared now is ready when the turn ends (the first offer came too early to be taken)."""
        ep, lead = call.ep, self.config.vad.speculative_lead_ms
        if not lead or call.spec_mark != ep.last_voiced or call.late_spec_mark == ep.last_voiced:
            return
        silence = ep.silence_ms(window)
        if silence < ep.required_ms - lead:
            return
        call.late_spec_mark = ep.last_voiced
        if call.spec_waited_ms < ep.required_ms - lead:
            self._send_speculative(cid, call, silence)

    def _send_speculative(self, cid: int, call: _Call, waited_ms: int) -> None:
        ep = call.ep
        self.outbox.message(SpeculativeFinal(call_id=cid, turn_id=call.turn, text=ep.text or "", silence_ms=ep.required_ms,
                                             turn_prob=call.check[0], ts_ns=time.monotonic_ns(),
                                             no_speech_prob=call.result_no_speech, avg_logprob=call.result_logprob,
                                             waited_ms=max(0, waited_ms)),
                            cid, call.turn)

    def _partial(self, cid: int, call: _Call, text: str) -> None:
        if text == call.last_partial_text:
            return
        call.last_partial_text = text
        self.outbox.message(Partial(call_id=cid, turn_id=call.turn, text=text, ts_ns=time.monotonic_ns()),
                            cid, call.turn)
