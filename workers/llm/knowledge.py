"""The faq backend's knowledge file: TOML decoded straight into Structs, checked at load.

    fallback = "answer when nothing matches"
    [[entries]]
    id = "hours"
    questions = ["When are you open?", "What are your opening hours?"]   # several phrasings
    answer = "We're open ..."
    end_call = false                                                    # true: goodbye, hang up after
    action = ""                  # "transfer": put through to call.transfer_number; "end_call"
    unavailable_answer = ""      # said instead of `answer` when the action is not offered
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import msgspec


class KnowledgeEntry(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One answer and the ways a caller may ask for it."""

    id: str
    questions: list[str]
    answer: str
    #: Saying this answer ends the call (the goodbye entry).
    end_call: bool = False
    #: What happens once the answer is heard: "transfer" (to `call.transfer_number`), "end_call".
    action: Literal["", "transfer", "end_call"] = ""
    #: Said instead of `answer` when the action cannot be done this call (no transfer number).
    unavailable_answer: str = ""

    @property
    def ends_call(self) -> bool:
        return self.end_call or self.action == "end_call"


class Knowledge(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: What the agent says when no entry matches well enough (llm.match_threshold).
    fallback: str
    entries: list[KnowledgeEntry]


def load_knowledge(path: str | Path) -> Knowledge:
    """Read and validate a knowledge file; errors name the file, the entry and what to fix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"llm.knowledge: knowledge file {path} not found (see configs/knowledge/front_desk.toml)")
    try:
        knowledge = msgspec.toml.decode(path.read_bytes(), type=Knowledge)
    except msgspec.ValidationError as exc:
        raise ValueError(f"{path}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    problems = []
    if not knowledge.fallback.strip():
        problems.append("`fallback` is empty")
    if not knowledge.entries:
        problems.append("no [[entries]]")
    seen: set[str] = set()
    for i, entry in enumerate(knowledge.entries):
        where = f"entries[{i}] ({entry.id!r})"
        if entry.id in seen:
            problems.append(f"{where}: duplicate id")
        seen.add(entry.id)
        if not [q for q in entry.questions if q.strip()]:
            problems.append(f"{where}: no questions")
        if not entry.answer.strip():
            problems.append(f"{where}: empty answer")
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))
    return knowledge
