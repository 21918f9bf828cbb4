"""Pure pieces of the conversation: sentence aggregation, heard-text history, call records."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from ipc.messages import TurnEnded
from voicecall.config import BACKCHANNELS, CallConfig
from voicecall.conversation.backchannel import holds_no_words, is_backchannel
from voicecall.conversation.history import AgentReply, Conversation
from voicecall.conversation.sentences import SentenceAggregator
from voicecall.records import CallRecords, call_turns, connect, find_call


def _stream(text: str, step: int, **kw) -> list[str]:
    agg = SentenceAggregator(**kw)
    out: list[str] = []
    for i in range(0, len(text), step):
        out += agg.push(text[i : i + step])
    return out + agg.flush()


def test_first_clause_released_early_then_whole_sentences() -> None:
    text = "We are open from eight to five, Monday to Friday, and on Saturday mornings. Anything else?"
    assert _stream(text, 3) == ["We are open from eight to five,", "Monday to Friday, and on Saturday mornings.", "Anything else?"]


def test_abbreviations_decimals_and_times_do_not_end_sentences() -> None:
    text = "Dr. Smith sees patients at 8.30 a.m. on Mondays. The fee is $12.50 per visit. Call us at 3 p.m. today."
    assert _stream(text, 4)[1:] == ["at 8.30 a.m. on Mondays.", "The fee is $12.50 per visit.", "Call us at 3 p.m. today."]


def test_long_first_clause_cut_at_a_phrase_boundary() -> None:
    text = "We're open Monday to Friday from eight in the morning to six in the evening. Bye."
    assert _stream(text, 3) == ["We're open Monday to Friday", "from eight in the morning to six in the evening.", "Bye."]


def test_short_first_sentence_goes_alone() -> None:
    assert _stream("Sure. Our address is 12 Maple Street.", 2) == ["Sure.", "Our address is 12 Maple Street."]


@given(st.text(alphabet=st.sampled_from("abc ,.!?'\n"), max_size=300), st.integers(1, 9))
def test_nothing_lost_or_reordered(text: str, step: int) -> None:
    pieces = _stream(text, step)
    words = lambda s: "".join(c for c in s if c.isalnum())  # noqa: E731 - punctuation-only tails are dropped
    assert words("".join(pieces)) == words(text)


def test_interrupted_reply_keeps_only_played_sentences() -> None:
    conv = Conversation()
    conv.add_caller("What are your hours?")
    reply = AgentReply(turn_id=1)
    for seq, text in enumerate(["We open at eight.", "We close at five.", "Weekends we are closed."]):
        reply.add(seq, text).mark = f"m{seq}"
    reply.by_mark("m0").played = True  # type: ignore[union-attr]
    reply.interrupted = True
    msg = conv.add_agent(reply)
    assert msg is not None and msg.content == "We open at eight." and msg.interrupted
    conv.add_caller("Sorry, on Saturday?")
    assert [m.role for m in conv.messages()] == ["user", "assistant", "user"]


def test_records_written_in_order_and_survive_reopen(tmp_path: Path) -> None:
    db = tmp_path / "calls.db"
    rec = CallRecords(db)
    ids: list[int] = []
    rec.call_started(ids.append, call_sid="CA1", stream_sid="MZ1", from_number="+15550100")
    row = lambda: ids[0] if ids else None  # noqa: E731
    rec.turn(row, 1, "caller", "What are your hours?", stamps={"speech_end_ns": 1, "turn_end_ns": 2})
    rec.turn(row, 1, "agent", "We open at eight. We close at five.", heard_text="We open at eight.", interrupted=True)
    rec.call_ended(row, "caller hung up", barge_ins=1)
    rec.flush()
    rec.close()
    conn = connect(db, readonly=True)
    call = find_call(conn, "CA1")
    assert call is not None and call["end_reason"] == "caller hung up" and call["barge_ins"] == 1
    turns = call_turns(conn, call["id"])
    assert [t["role"] for t in turns] == ["caller", "agent"]
    assert turns[1]["interrupted"] == 1 and turns[1]["heard_text"] == "We open at eight."
    assert turns[0]["turn_end_ns"] == 2


def test_backchannels_are_a_few_listed_words_only() -> None:
    assert is_backchannel("Mm-hmm.", list(BACKCHANNELS), 3) and is_backchannel("Okay, I see.", list(BACKCHANNELS), 3)
    assert is_backchannel("Aha, okay.", list(BACKCHANNELS), 3)  # tiny.en's "Uh-huh, okay." in a soak
    assert not is_backchannel("Okay, where is it?", list(BACKCHANNELS), 3)
    assert not is_backchannel("Okay, yes, sure, right.", list(BACKCHANNELS), 3)  # four words
    # a phrase said again in a row counts once: callers double an "uh-huh", and tiny.en writes a hum
    # or a murmur 1.5-3 s long as "Okay, okay, okay, okay, ..." (offline, 11 of 144 wordless sounds)
    assert is_backchannel("Uh-huh, uh-huh.", list(BACKCHANNELS), 3)
    assert is_backchannel("Okay, okay, okay, okay, okay, okay.", list(BACKCHANNELS), 3)
    assert not is_backchannel("Okay, okay, wait.", list(BACKCHANNELS), 3)
    assert is_backchannel("Makes sense.", list(BACKCHANNELS), 3) and is_backchannel("Yup, got it.", list(BACKCHANNELS), 3)
    assert is_backchannel("Okay, sounds good.", list(BACKCHANNELS), 3)
    for heard in ("ID.", "I.E.", "i-d", "I T."):  # tiny.en's spellings of an espeak "I see."
        assert is_backchannel(heard, list(BACKCHANNELS), 3), heard
    for interruption in ("No.", "Wait.", "Stop.", "Actually, no.", "Sorry?", "Great, but when?"):
        assert not is_backchannel(interruption, list(BACKCHANNELS), 3), interruption


def test_no_words_is_fillers_or_whispers_own_silence_rule() -> None:
    cfg = CallConfig()

    def said(text: str, no_speech: float, logprob: float) -> bool:
        msg = TurnEnded(call_id=1, turn_id=1, text=text, speech_start_media_ms=0, speech_end_media_ms=0,
                        speech_end_ns=0, turn_end_ns=0, stt_final_ns=0, no_speech_prob=no_speech,
                        avg_logprob=logprob)
        return holds_no_words(msg, text, cfg)

    assert said("", 0.1, 0.0) and said("Ah ah ah ah ah ah ah.", 0.2, -0.6) and said("Oh, oh, oh, oh,", 0.8, -0.6)
    assert said("I'm going to go to the next", 0.71, -1.4)  # made up for a cough: sure it heard nothing
    assert not said("Actually, can I talk to a person?", 0.72, -0.4)  # sure of the words it heard
    assert not said("Wait, is that on Tuesday?", 0.2, -1.6)  # unsure of the words, but it heard speech
    assert said("And mm", 0.35, -1.82)  # an "mm-hmm" it could only guess at
    assert not said("Hold on.", 0.3, -0.7)  # a short interruption it is sure of
    # ... or unsure of, when it holds a word that stops the agent or asks (call.interruption_words):
    # "Pardon?" in Piper's voice under line noise came back "pardon" at -1.72
    for short in ("pardon", "again", "Wait?", "How it was"):
        assert not said(short, 0.3, -1.7), short
    assert said("Uh-oh.", 0.3, -1.7) and said("Pardon", 0.8, -1.7)  # ... Whisper's own silence rule still holds
    # a start broken off that Whisper is unsure of: nothing to answer; one it is sure of is a caller
    assert said("I'd be...", 0.34, -1.17) and said("And then...", 0.26, -1.17)
    for words in ("My number is...", "Wait...", "I was going to ask..."):
        assert not said(words, 0.3, -0.4 if words.startswith("My") else -1.2), words
    for hum in ("M.H.M.", "M-H-N", "MMMM.", "M.M.", "Mhm, mm."):  # an "mm-hmm" spelled out, sure of it or not
        assert said(hum, 0.1, -0.5), hum
    for words in ("Mm, no.", "M.H.M. Wait.", "NHS?", "Hm, what?"):
        assert not said(words, 0.1, -0.5), words
