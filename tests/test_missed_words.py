"""The "say it again" rule after an stt restart, on its own (the real thing: tests/test_faults.py)."""

from __future__ import annotations

import asyncio

from voicecall.conversation.missed_words import MissedWords

LOST = "the stt worker lost the caller's words (restarted or fell behind)"


def _run(steps) -> list[str]:
    asked: list[str] = []

    async def main() -> None:
        mw = MissedWords(asked.append, grace_s=0.05)
        await steps(mw)
        mw.close()

    asyncio.run(main())
    return asked


def test_restart_while_talking_and_talking_on_swallows_the_fragment() -> None:
    swallowed: list[bool] = []

    async def steps(mw: MissedWords) -> None:
        mw.speech_started()
        mw.stt_restarting()
        mw.stt_ready()
        mw.speech_started()  # the new worker hears the rest of the utterance
        swallowed.append(mw.turn_ended())
        swallowed.append(mw.turn_ended())  # the repeat is answered normally

    assert _run(steps) == []  # the session asks, with the fragment's turn
    assert swallowed == [True, False]


def test_restart_while_talking_then_silence_asks_after_the_grace() -> None:
    async def steps(mw: MissedWords) -> None:
        mw.speech_started()
        mw.stt_restarting()
        mw.stt_ready()
        await asyncio.sleep(0.15)

    assert _run(steps) == [LOST]


def test_restart_between_utterances_asks_nothing() -> None:
    async def steps(mw: MissedWords) -> None:
        mw.speech_started()
        assert not mw.turn_ended()
        mw.stt_restarting()
        mw.stt_ready()
        await asyncio.sleep(0.15)
        mw.speech_started()
        assert not mw.turn_ended()

    assert _run(steps) == []


def test_an_utterance_begun_before_the_loss_is_a_fragment_even_without_speech_started() -> None:
    verdicts: list[bool] = []

    async def steps(mw: MissedWords) -> None:
        mw.stt_restarting(media_ms=10_000)  # the caller had only just begun: no SpeechStarted yet
        mw.stt_ready()
        verdicts.append(mw.turn_ended(speech_start_media_ms=10_040))
        verdicts.append(mw.turn_ended(speech_start_media_ms=10_040))  # only the first one after the loss
        mw.stt_restarting(media_ms=20_000)
        verdicts.append(mw.turn_ended(speech_start_media_ms=21_000))  # begun after: a new utterance

    assert _run(steps) == []
    assert verdicts == [True, False, False]


def test_a_question_spoken_while_no_worker_listened_is_asked_again() -> None:
    async def steps(mw: MissedWords) -> None:
        mw.stt_restarting(media_ms=5_000)  # the caller was quiet when the worker died
        for _ in range(40):  # then asked a whole question (0.8 s) before the new one was ready
            mw.on_frame(True)
        for _ in range(16):  # then quiet
            mw.on_frame(False)
        mw.stt_ready()
        await asyncio.sleep(0.15)  # the new worker heard nothing of it

    assert _run(steps) == [LOST]


def test_talking_on_after_words_nobody_heard_swallows_the_rest() -> None:
    verdicts: list[bool] = []

    async def steps(mw: MissedWords) -> None:
        mw.stt_restarting(media_ms=5_000)
        for _ in range(20):
            mw.on_frame(True)
        mw.stt_ready()
        mw.speech_started()  # the new worker hears only the end of the question
        verdicts.append(mw.turn_ended(speech_start_media_ms=5_600))

    assert _run(steps) == []
    assert verdicts == [True]


def test_a_click_while_no_worker_listened_is_not_words() -> None:
    async def steps(mw: MissedWords) -> None:
        mw.stt_restarting(media_ms=5_000)
        for _ in range(5):  # 100 ms: a click or a cough
            mw.on_frame(True)
        mw.stt_ready()
        for _ in range(50):
            mw.on_frame(True)  # loud frames after the worker is back are its to judge
        await asyncio.sleep(0.15)

    assert _run(steps) == []


def test_a_question_dropped_on_a_full_ring_is_asked_again_once_the_caller_is_quiet() -> None:
    async def steps(mw: MissedWords) -> None:
        for i in range(40):  # the worker is stopped, its ring full: a whole question dropped
            mw.on_frame(True)
            mw.on_dropped(True, media_ms=8_000 + 20 * i)
        for _ in range(16):  # then quiet
            mw.on_frame(False)
        mw.on_sent()  # the worker reads again
        await asyncio.sleep(0.15)

    assert _run(steps) == [LOST]


def test_speech_through_the_drops_is_a_fragment_and_asked_once() -> None:
    verdicts: list[bool] = []

    async def steps(mw: MissedWords) -> None:
        mw.speech_started()  # the worker heard the question begin, then stalled
        for i in range(30):
            mw.on_frame(True)
            mw.on_dropped(True, media_ms=8_000 + 20 * i)
        mw.on_frame(True)
        mw.on_sent()
        verdicts.append(mw.turn_ended(speech_start_media_ms=7_400))  # its turn, with a hole in it
        await asyncio.sleep(0.15)  # no second ask from the grace

    assert _run(steps) == []
    assert verdicts == [True]


def test_a_few_quiet_frames_dropped_are_nothing() -> None:
    async def steps(mw: MissedWords) -> None:
        for i in range(50):
            mw.on_frame(False)
            mw.on_dropped(False, media_ms=20 * i)
        for _ in range(5):
            mw.on_frame(True)
            mw.on_dropped(True, media_ms=1_000)
        mw.on_sent()
        await asyncio.sleep(0.15)

    assert _run(steps) == []


def test_say_it_again_waits_while_the_caller_talks() -> None:
    asked: list[str] = []

    async def main() -> None:
        mw = MissedWords(asked.append, grace_s=0.05)
        mw.stt_restarting(media_ms=5_000)
        for _ in range(20):
            mw.on_frame(True)
        mw.stt_ready()
        for _ in range(4):  # still talking when the grace is over: the new worker will hear the rest
            await asyncio.sleep(0.05)
            mw.on_frame(True)
        assert asked == []
        for _ in range(16):  # quiet for 320 ms
            mw.on_frame(False)
        await asyncio.sleep(0.15)
        mw.close()

    asyncio.run(main())
    assert asked == [LOST]
