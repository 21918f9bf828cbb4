"""The faq backend: answers from a knowledge file by semantic match (all-MiniLM-L6-v2, offline).

Every phrasing of every entry is embedded once at load (of `llm.knowledge` and of the agent
profiles' own files in `llm.more_knowledge`, one model for all); a caller's last utterance is embedded
per turn (a few ms on one core, on the backend's own thread so the asyncio loop keeps
streaming other calls) and gets the entry of its nearest phrasing, or the file's fallback
answer below `llm.match_threshold`. The answer streams in word-aligned pieces, like an LLM's.
An entry with `action = "transfer"` ends with a `transfer_call` tool call when telephony offers
it (a transfer number is set), else says its `unavailable_answer`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ipc.messages import ToolCallInfo
from workers.config import LlmConfig
from workers.llm.backend import Piece, Prompt
from workers.llm.knowledge import Knowledge, KnowledgeEntry, load_knowledge
from workers.llm.prompt import last_caller_text
from workers.llm.tools import TRANSFER_CALL
from workers.package_files import package_dir

log = logging.getLogger("voicecall.llm")


@dataclass(frozen=True)
class Match:
    """The entry a question maps to (None: the fallback answer) and how close it was."""

    entry: KnowledgeEntry | None
    score: float
    question_tokens: int

    @property
    def entry_id(self) -> str:
        return self.entry.id if self.entry is not None else "fallback"


def embedding_model_dir(spec: str) -> Path:
    """A sentence-transformers directory from `llm.embedding_model` ("package:NAME" or a path)."""
    if spec.startswith("package:"):
        root = package_dir(spec.removeprefix("package:"), "llm.embedding_model")
        path = root / "model" if (root / "model" / "modules.json").is_file() else root
    else:
        path = Path(spec)
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise FileNotFoundError(f"llm.embedding_model: no sentence-transformers model in {path} "
                                "(expected modules.json or config.json)")
    return path


class FaqMatcher:
    """Knowledge entries and their embedded phrasings; `match` is blocking (call it off the loop)."""

    def __init__(self, knowledge: Knowledge, model: Any, threshold: float, end_call_threshold: float | None = None) -> None:
        self.knowledge = knowledge
        self.threshold = threshold
        #: an entry that ends the call needs this score (None: the same as any other)
        self.end_call_threshold = threshold if end_call_threshold is None else end_call_threshold
        self._model = model  # a SentenceTransformer, shared by every knowledge file
        self._owners: list[KnowledgeEntry] = []
        phrasings: list[str] = []
        for entry in knowledge.entries:
            for q in entry.questions:
                if q.strip():
                    self._owners.append(entry)
                    phrasings.append(q.strip())
        self._phrasings = self._embed(phrasings)

    def _embed(self, texts: list[str]) -> Any:
        return self._model.encode(texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)

    def match(self, question: str) -> Match:
        tokens = len(self._model.tokenizer(question)["input_ids"]) if question else 0
        if not question:
            return Match(None, 0.0, 0)
        scores = self._phrasings @ self._embed([question])[0]
        best = int(scores.argmax())
        score = float(scores[best])
        entry = self._owners[best] if score >= self.threshold else None
        if entry is not None and entry.ends_call and score < self.end_call_threshold:
            entry = None  # a fragment that only resembles a goodbye: ask again, do not hang up
        return Match(entry, score, tokens)


class FaqBackend:
    """The embedded default backend and every other backend's fallback."""

    name = "faq"

    def __init__(self, config: LlmConfig) -> None:
        from sentence_transformers import SentenceTransformer

        self.config = config
        model = SentenceTransformer(str(embedding_model_dir(config.embedding_model)), device="cpu",
                                    local_files_only=True)  # never the hub
        self.matcher = FaqMatcher(load_knowledge(config.knowledge), model, config.match_threshold,
                                  config.end_call_match_threshold)
        #: every knowledge file by the path a Generate names it with (agent profiles' own files)
        self.matchers = {config.knowledge: self.matcher}
        for path in config.more_knowledge:
            if path not in self.matchers:
                self.matchers[path] = FaqMatcher(load_knowledge(path), model, config.match_threshold,
                                                 config.end_call_match_threshold)
        self._pool: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="llm-faq")

    async def close(self, deadline_s: float) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def problem(self) -> str | None:
        return None

    async def stream(self, prompt: Prompt) -> AsyncIterator[Piece]:
        question = last_caller_text(prompt.history)
        matcher = self.matchers.get(prompt.knowledge, self.matcher) if prompt.knowledge else self.matcher
        if prompt.knowledge and prompt.knowledge not in self.matchers:
            log.warning("call %d: knowledge file %s was not loaded at start; using %s", prompt.call_id,
                        prompt.knowledge, self.config.knowledge)
        match = await asyncio.get_running_loop().run_in_executor(self._pool, matcher.match, question)
        log.info("call %d turn %d: faq %r -> %s (%.2f)", prompt.call_id, prompt.turn_id, question[:60],
                 match.entry_id, match.score)
        entry = match.entry
        answer = entry.answer if entry is not None else matcher.knowledge.fallback
        calls: list[ToolCallInfo] = []
        if entry is not None and entry.action == "transfer":
            if any(t.name == TRANSFER_CALL for t in prompt.tools):
                calls = [ToolCallInfo(id=f"faq-{prompt.call_id}-{prompt.turn_id}", name=TRANSFER_CALL)]
            elif entry.unavailable_answer:
                answer = entry.unavailable_answer
            else:  # telephony refuses in words
                calls, answer = [ToolCallInfo(id=f"faq-{prompt.call_id}-{prompt.turn_id}", name=TRANSFER_CALL)], ""
        pieces = split_pieces(answer.strip(), self.config.faq_piece_chars) if answer.strip() else []
        for i, text in enumerate(pieces):
            last = i == len(pieces) - 1
            yield Piece(text=text, tokens=1, prompt_tokens=match.question_tokens if i == 0 else None,
                        finish_reason="stop" if last and not calls else None,
                        end_call=last and entry is not None and entry.ends_call)
            await asyncio.sleep(0)  # let other calls' turns (and cancels) run between pieces
        if calls:  # after the handoff line: telephony transfers once it has been heard
            yield Piece(tool_calls=calls, finish_reason="tool_calls")


def split_pieces(text: str, piece_chars: int) -> list[str]:
    """Word-aligned pieces of about `piece_chars`; joined they give back `text` exactly."""
    pieces: list[str] = []
    words = text.split(" ")
    current = words[0]
    for word in words[1:]:
        if current.strip() and len(current) + 1 + len(word) > piece_chars:
            pieces.append(current + " ")
            current = word
        else:
            current = f"{current} {word}"
    if current:
        pieces.append(current)
    return pieces
