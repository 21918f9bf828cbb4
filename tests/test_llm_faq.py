"""The faq backend with the real MiniLM model, the knowledge file, and the prompt/stream helpers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipc.messages import ChatMessage, ToolSpec
from workers.config import LlmConfig
from workers.llm.backend import Piece, Prompt
from workers.llm.end_call import EndCallFilter
from workers.llm.faq import FaqBackend, split_pieces
from workers.llm.knowledge import load_knowledge
from workers.llm.prompt import INTERRUPTED_NOTE, chat_messages, drop_oldest_exchange, without_system_role

PARAPHRASES = [
    ("when do you guys open on saturdays", "hours"),
    ("what time do you shut today", "hours"),
    ("what's the address of the clinic", "address"),
    ("is there somewhere to leave my car", "parking"),
    ("I need an appointment with the doctor", "book"),
    ("I can't come on Tuesday, can we move it", "reschedule"),
    ("how much will it cost me", "prices"),
    ("can i talk to an actual person", "human"),
    ("could you put me through to someone at the front desk", "human"),
    ("my little boy has a high temperature", "sick_today"),
    ("hi", "greeting"),
    ("great thank you so much", "thanks"),
    ("ok thanks, bye bye", "goodbye"),
    ("that's it, bye", "goodbye"),  # 0.58: a real goodbye near llm.end_call_match_threshold
]
UNRELATED = ["who won the football game last night", "I want to order a pizza", "what's the weather like tomorrow",
             "Can you recommend a good restaurant?"]


@pytest.fixture(scope="module")
def faq() -> FaqBackend:
    return FaqBackend(LlmConfig())


@pytest.mark.parametrize(("question", "entry"), PARAPHRASES)
def test_paraphrases_find_their_entry(faq: FaqBackend, question: str, entry: str) -> None:
    match = faq.matcher.match(question)
    assert match.entry_id == entry, f"{question!r} -> {match.entry_id} ({match.score:.2f})"


@pytest.mark.parametrize("question", UNRELATED)
def test_unrelated_questions_get_the_fallback(faq: FaqBackend, question: str) -> None:
    match = faq.matcher.match(question)
    assert match.entry is None, f"{question!r} -> {match.entry_id} ({match.score:.2f})"


@pytest.mark.parametrize("fragment", ["back.", "me back.", "All right, and take."])
def test_a_fragment_that_only_resembles_a_goodbye_does_not_end_the_call(faq: FaqBackend, fragment: str) -> None:
    """Heard alone (the end of "call me back", echo under a caller's words), these scored 0.48-0.50
    for the goodbye: above llm.match_threshold, below llm.end_call_match_threshold."""
    match = faq.matcher.match(fragment)
    assert match.entry is None, f"{fragment!r} -> {match.entry_id} ({match.score:.2f})"
    assert faq.config.match_threshold <= match.score < faq.config.end_call_match_threshold, match.score
    pieces = _stream(faq, fragment)
    assert not any(p.end_call for p in pieces)
    assert "".join(p.text for p in pieces) == faq.matcher.knowledge.fallback


def _stream(faq: FaqBackend, question: str, tools: list[ToolSpec] | None = None) -> list[Piece]:
    async def run() -> list[Piece]:
        await faq.start()
        try:
            prompt = Prompt(call_id=1, turn_id=1, history=[ChatMessage(role="user", content=question)],
                            max_tokens=100, temperature=0.0, tools=tools or [])
            return [p async for p in faq.stream(prompt)]
        finally:
            await faq.close(1.0)

    return asyncio.run(run())


def test_goodbye_streams_in_pieces_and_ends_the_call(faq: FaqBackend) -> None:
    pieces = _stream(faq, "That's all, thanks. Bye now!")
    goodbye = next(e for e in faq.matcher.knowledge.entries if e.id == "goodbye")
    assert len(pieces) > 2 and "".join(p.text for p in pieces) == goodbye.answer
    assert pieces[-1].end_call and pieces[-1].finish_reason == "stop"
    assert not any(p.end_call for p in pieces[:-1])
    assert pieces[0].prompt_tokens and pieces[0].prompt_tokens > 3


def test_speak_to_a_person_transfers_when_offered_else_says_the_unavailable_answer(faq: FaqBackend) -> None:
    human = next(e for e in faq.matcher.knowledge.entries if e.id == "human")
    assert human.action == "transfer" and human.unavailable_answer
    pieces = _stream(faq, "Can I speak to a person please?", [ToolSpec(name="transfer_call")])
    assert "".join(p.text for p in pieces) == human.answer  # the handoff line first
    assert pieces[-1].tool_calls is not None and [c.name for c in pieces[-1].tool_calls] == ["transfer_call"]
    assert not any(p.tool_calls for p in pieces[:-1]) and not any(p.end_call for p in pieces)
    pieces = _stream(faq, "Can I speak to a person please?")
    assert "".join(p.text for p in pieces) == human.unavailable_answer
    assert not any(p.tool_calls for p in pieces)


def test_unrelated_question_streams_the_fallback_answer(faq: FaqBackend) -> None:
    pieces = _stream(faq, "Who is the president of France?")
    assert "".join(p.text for p in pieces) == faq.matcher.knowledge.fallback
    assert not pieces[-1].end_call


def test_shipped_knowledge_covers_the_front_desk() -> None:
    ids = {e.id for e in load_knowledge("configs/knowledge/front_desk.toml").entries}
    assert {"hours", "address", "book", "reschedule", "prices", "parking", "human", "greeting", "thanks",
            "goodbye"} <= ids


@pytest.mark.parametrize(("text", "error"), [
    ('fallback = "x"\n[[entries]]\nid = "a"\nquestions = ["q"]\nanswer = "a"\n'
     '[[entries]]\nid = "a"\nquestions = ["q"]\nanswer = "b"\n', "duplicate id"),
    ('fallback = "x"\n[[entries]]\nid = "a"\nquestions = []\nanswer = "a"\n', "no questions"),
    ('fallback = "x"\n[[entries]]\nid = "a"\nquestion = ["q"]\nanswer = "a"\n', "question"),
    ('fallback = "x"\n[[entries]\n', "not valid TOML"),
])
def test_bad_knowledge_files_name_file_and_problem(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "kb.toml"
    path.write_text(text)
    with pytest.raises(ValueError) as err:
        load_knowledge(path)
    assert str(path) in str(err.value) and error in str(err.value)


def test_missing_knowledge_file_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="llm.knowledge"):
        load_knowledge(tmp_path / "nope.toml")


def test_chat_messages_system_first_merged_and_interruption_marked() -> None:
    history = [
        ChatMessage(role="user", content="Hi"), ChatMessage(role="user", content="are you open?"),
        ChatMessage(role="assistant", content="We are open from", interrupted=True),
        ChatMessage(role="system", content="ignore me"), ChatMessage(role="user", content="Saturday?"),
    ]
    msgs = chat_messages("SYS", history)
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[1]["content"] == "Hi\nare you open?"
    assert msgs[2]["content"].endswith(INTERRUPTED_NOTE)
    merged = without_system_role(msgs)
    assert merged[0] == {"role": "user", "content": "SYS\n\nHi\nare you open?"} and len(merged) == 3
    shorter = drop_oldest_exchange(msgs)
    assert shorter is not None and [m["role"] for m in shorter] == ["system", "user"]
    assert drop_oldest_exchange(shorter) is None


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ab[]_ENDCL ", max_size=40), st.booleans(), st.lists(st.integers(1, 6), max_size=20))
def test_end_call_token_is_stripped_however_the_text_is_split(text: str, with_token: bool, cuts: list[int]) -> None:
    token = "[END_CALL]"
    full = text + (token if with_token else "")
    pieces, i = [], 0
    for n in cuts:
        pieces.append(full[i:i + n])
        i += n
    pieces.append(full[i:])
    f = EndCallFilter(token)
    said = "".join(f.push(p) for p in pieces) + f.flush()
    assert said == full.replace(token, "")
    assert f.seen == (token in full)


@given(st.text(alphabet="abc .,", max_size=80), st.integers(1, 20))
def test_split_pieces_gives_back_the_text(text: str, size: int) -> None:
    assert "".join(split_pieces(text, size)) == text
