"""The echo gate on real speech: the agent's Piper answer coming back on the caller's line is its
echo; a caller's voice, alone or over that echo, is not (workers/stt/echo_gate.py)."""

from __future__ import annotations

import numpy as np
import pytest

from ipc.audio import ulaw_decode, ulaw_encode
from voicecall.sim.speech import utterance
from workers.stt.echo_gate import EchoReference

T0 = 10**12  # monotonic ns when the agent's answer starts playing
NS = 125_000  # one 8 kHz sample


@pytest.fixture(scope="module")
def voices() -> tuple[np.ndarray, np.ndarray]:
    agent = ulaw_decode(utterance("Our clinic is open from eight in the morning until six in the evening, "
                                  "Monday to Friday.").mulaw).astype(np.float64)
    caller = ulaw_decode(utterance("Actually, can I talk to a person about my bill?").mulaw).astype(np.float64)
    return agent, caller


def _line(agent: np.ndarray, echo_db: float | None, delay_ms: int, caller: np.ndarray | None = None,
          noise_dbfs: float | None = None) -> np.ndarray:
    """What the caller's line sends while the agent's answer plays: its echo, their voice, noise; mu-law."""
    inbound = np.zeros(len(agent))
    if echo_db is not None:
        d = delay_ms * 8
        inbound[d:] += agent[: len(agent) - d] * 10 ** (echo_db / 20)
    if caller is not None:
        n = min(len(caller), len(inbound))
        inbound[:n] += caller[:n]
    if noise_dbfs is not None:
        inbound += np.random.default_rng(1).standard_normal(len(inbound)) * 32768 * 10 ** (noise_dbfs / 20)
    return ulaw_decode(ulaw_encode(np.clip(inbound, -32768, 32767).astype(np.int16)))


def _verdicts(agent: np.ndarray, inbound: np.ndarray, floor_dbfs: float | None = None, above_dbfs: float = -70.0) -> list:
    """The gate's verdict every 0.5 s of the answer where the line carries sound `above_dbfs`,
    the agent's frames handed over as telephony sends them (each 200 ms before it plays)."""
    ref = EchoReference(max_delay_ms=600, window_ms=320)
    floor = 0.0 if floor_dbfs is None else (32768 * 10 ** (floor_dbfs / 20)) ** 2
    sent, out = 0, []
    for stop in range(4000, len(agent) - 4000, 4000):
        while sent < min(len(agent), stop + 1600):
            ref.add(agent[sent : sent + 160].astype(np.int16), T0 + sent * NS)
            sent += 160
        x = inbound[stop - 2560 : stop]
        if np.sqrt(np.mean(np.square(x))) >= 32768 * 10 ** (above_dbfs / 20):
            out.append(ref.echo_of(x, T0 + stop * NS, floor, explained_db=6.0))
    return out


@pytest.mark.parametrize(("echo_db", "delay_ms"), [(-20.0, 0), (-30.0, 40), (-45.0, 250)])
def test_the_agents_answer_coming_back_is_its_echo(voices, echo_db: float, delay_ms: int) -> None:
    agent, _ = voices
    got = _verdicts(agent, _line(agent, echo_db, delay_ms))
    assert len(got) >= 6 and all(v.echo for v in got), got
    assert all(abs(v.delay_ms - delay_ms) <= 1 and abs(v.echo_db - echo_db) <= 2 for v in got), got


def test_a_caller_talking_is_never_echo_alone_or_over_the_echo_or_on_a_noisy_line(voices) -> None:
    agent, caller = voices
    talking = len(caller) - 8000  # stop before their trailing silence, where only the echo is left
    for inbound, floor in ((_line(agent, None, 0, caller), None), (_line(agent, -30.0, 40, caller), None),
                           (_line(agent, -30.0, 40, caller, noise_dbfs=-45.0), -45.0)):
        got = _verdicts(agent[:talking], inbound[:talking], floor)
        assert got and not any(v.echo for v in got), got
        assert all(v.explained_db < 3.0 for v in got), got


def test_an_echo_under_a_noisy_lines_floor_still_counts_and_silence_never_checks(voices) -> None:
    agent, _ = voices
    got = _verdicts(agent, _line(agent, -30.0, 40, noise_dbfs=-45.0), floor_dbfs=-45.0)
    strong = [v for v in got if v.correlation >= 0.45]
    assert strong and all(v.echo for v in strong), got
    ref = EchoReference(max_delay_ms=600, window_ms=320)
    assert not ref.recent(T0)  # nothing played yet: no check at all
    ref.add(agent[:160].astype(np.int16), T0)
    assert ref.recent(T0 + 900_000_000) and not ref.recent(T0 + 1_000_000_000)  # 600 + 320 ms after it ends
    quiet = ref.echo_of(np.zeros(2560), T0 + 320_000_000, 0.0, 6.0)
    assert not quiet.echo


def _drifting_line(agent: np.ndarray, echo_db: float, delay_ms: int, step_ms: float,
                   caller: np.ndarray | None = None) -> np.ndarray:
    """An echo whose delay grows by `step_ms` every 0.3 s (playback restarting a little late each
    time the buffer nearly ran dry), with the caller's voice over it if given; mu-law."""
    delay = np.full(len(agent), delay_ms * 8.0)
    for at in range(2400, len(agent), 2400):
        delay[at:] += step_ms * 8
    src = np.arange(len(agent)) - delay.astype(int)
    inbound = np.where(src >= 0, agent[np.maximum(src, 0)], 0.0) * 10 ** (echo_db / 20)
    if caller is not None:
        n = min(len(caller), len(inbound))
        inbound[:n] += caller[:n]
    return ulaw_decode(ulaw_encode(np.clip(inbound, -32768, 32767).astype(np.int16))).astype(np.float64)


def test_an_echo_whose_path_moves_inside_the_window_is_still_echo(voices) -> None:
    """A 1 ms step inside a window left one fitted path explaining as little as 3 dB of a clean
    echo (live, under load, the agent stopped for its own greeting); each 60 ms stretch fitted on
    its own explains it, and a caller over such an echo is still not explained."""
    agent, caller = voices
    got = _verdicts(agent, _drifting_line(agent, -25.0, 60, 1.0))
    assert len(got) >= 6 and all(v.echo for v in got), got
    talking = len(caller) - 8000
    got = _verdicts(agent[:talking], _drifting_line(agent, -25.0, 60, 1.0, caller)[:talking])
    assert got and not any(v.echo for v in got), got


def test_the_echo_of_a_quiet_tail_is_echo_too(voices) -> None:
    """An answer's fading end 30 dB down is a few mu-law steps (-75..-80 dBFS) no fit follows well,
    and Silero may still call it speech: it counts as echo, while a caller that quiet never talks."""
    agent, _ = voices
    quiet = agent * 10 ** (-25 / 20)  # an answer's last syllable, fading
    got = _verdicts(quiet, _line(quiet, -30.0, 40), above_dbfs=-90.0)
    assert got and all(v.echo for v in got), got


def test_the_reference_keeps_the_last_of_what_played_in_place() -> None:
    ref = EchoReference(max_delay_ms=600, window_ms=320)
    frame_ns = 20_000_000
    frames = [np.full(160, i + 1, dtype=np.int16) for i in range(500)]  # 10 s back to back, each its own value
    for i, f in enumerate(frames):
        ref.add(f, T0 + i * frame_ns)
    assert (ref.played(T0 + 499 * frame_ns, 160) == 500).all()
    assert (ref.played(T0 + 400 * frame_ns, 320)[:160] == 401).all()  # 2 s back: kept
    assert not ref.played(T0 + 100 * frame_ns, 160).any()  # 8 s back: let go
    assert not ref.played(T0 + 500 * frame_ns, 160).any()  # not played yet
    ref.add(np.zeros(160, dtype=np.int16), T0 + 499 * frame_ns)  # after a `clear`, playback restarts there
    assert not ref.played(T0 + 499 * frame_ns, 160).any()
    ref.add(frames[0], T0 + 60 * 10**9)  # a minute later: a fresh start
    assert (ref.played(T0 + 60 * 10**9, 160) == 1).all() and ref.recent(T0 + 60 * 10**9)
