"""Text normalisation for speech, the fair sentence queue and the mu-law framing (no model, fast)."""

from __future__ import annotations

import numpy as np
import pytest

from ipc.audio import FRAME_BYTES
from workers.tts.mulaw_stream import MulawStream
from workers.tts.speech_queue import SpeechQueue
from workers.tts.speech_text import number_words, ordinal_words, speakable


@pytest.mark.parametrize(("text", "spoken"), [
    ("It's $12.50 a month.", "It's twelve dollars and fifty cents a month."),
    ("Pay $1,200 or $0.99 or $1.", "Pay one thousand two hundred dollars or ninety-nine cents or one dollar."),
    ("Come in at 3:30 pm.", "Come in at three thirty P M."),
    ("Doors open at 9:05 AM and close at 17:00.", "Doors open at nine oh five A M and close at five P M."),
    ("Call 555-0142 today.", "Call five five five, zero one four two today."),
    ("Or (555) 123-4567.", "Or five five five, one two three, four five six seven."),
    ("Dr. Smith will see you.", "Doctor Smith will see you."),
    ("We're at 12 Elm Dr.", "We're at twelve Elm Drive."),
    ("St. Louis is on 5th St.", "Saint Louis is on fifth Street."),
    ("**Great!** 😀 See [the docs](https://x.example/a).", "Great! See the docs."),
    ("It is 42% off on May 22nd, 2024.", "It is forty-two percent off on May twenty-second, twenty twenty-four."),
    ("Version 3.5 is #1.", "Version three point five is number one."),
    ("The answer is no.", "The answer is no."),
])
def test_speakable(text: str, spoken: str) -> None:
    assert speakable(text) == spoken


def test_number_words() -> None:
    assert number_words(0) == "zero"
    assert number_words(1_234_005) == "one million two hundred thirty-four thousand five"
    assert ordinal_words(1) == "first" and ordinal_words(40) == "fortieth" and ordinal_words(112) == "one hundred twelfth"


def test_queue_puts_new_turns_first_and_keeps_each_call_in_order() -> None:
    q = SpeechQueue()
    a0 = q.submit(1, 0, 0, "a0")
    a1, a2 = q.submit(1, 0, 1, "a1"), q.submit(1, 0, 2, "a2")
    assert q.take(0) is a0
    b0 = q.submit(2, 0, 0, "b0")
    assert q.take(0) is b0  # call 1 is busy; b0 would go first anyway
    q.done(a0)
    assert q.take(0) is a1
    q.done(b0)
    q.done(a1)
    assert q.take(0) is a2 and q.take(0) is None


def test_queue_cancel_and_newer_turn_supersede() -> None:
    q = SpeechQueue()
    running = q.submit(1, 3, 0, "x")
    q.submit(1, 3, 1, "y")
    assert q.take(0) is running
    assert q.submit(1, 4, 0, "new") is not None  # a newer turn cancels the older one
    assert running is not None and running.cancelled and q.pending() == 1
    q.cancel(1, 4)
    assert q.pending() == 0 and q.submit(1, 4, 1, "late") is None and q.submit(1, 2, 0, "old") is None
    assert q.submit(1, 5, 0, "next") is not None
    q.close_call(1)
    assert q.pending() == 0


def test_mulaw_stream_gives_whole_frames_seamlessly() -> None:
    rate = 22050
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)).astype(np.float32)
    stream = MulawStream(rate)
    pieces = [stream.push(tone[i:i + 1234]) for i in range(0, rate, 1234)] + [stream.finish()]
    assert all(len(p) % FRAME_BYTES == 0 for p in pieces)
    whole = MulawStream(rate)
    assert b"".join(pieces) == whole.push(tone) + whole.finish()  # chunking changes nothing
    assert len(b"".join(pieces)) == 8000
