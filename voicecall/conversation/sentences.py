"""Sentence aggregation: turns a token stream into speakable pieces for TTS.

The first piece of a reply is released at the first speakable boundary (a clause of at least
`first_min_chars`, ending in , ; : or a sentence end), because the caller hears nothing until
it is synthesized; later pieces are whole sentences, which sound better and cost TTS less.
Decimal points, times, abbreviations ("Dr.", "e.g.") and initials never end a sentence.
"""

from __future__ import annotations

import re

_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "etc", "e.g", "i.e", "inc", "ltd", "no",
    "approx", "dept", "apt", "ave", "blvd", "rd", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep",
    "sept", "oct", "nov", "dec", "mon", "tue", "wed", "thu", "fri", "sat", "sun", "a.m", "p.m",
}
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*(?=\s)")
_CLAUSE_END = re.compile(r"[,;:\u2014]+(?=\s)")
_WORD_BEFORE = re.compile(r"([A-Za-z][A-Za-z.]*)$")
#: Words a spoken phrase naturally starts with: a long first clause may be cut just before one.
_PHRASE_STARTS = {
    "and", "but", "or", "so", "because", "from", "to", "on", "at", "in", "with", "for", "until", "between",
    "which", "who", "where", "when", "if", "after", "before", "during", "by", "near", "next",
}


def _is_false_stop(text: str, dot_index: int) -> bool:
    """A '.' that is part of an abbreviation or an initial, not the end of a sentence."""
    if text[dot_index] != ".":
        return False
    m = _WORD_BEFORE.search(text[:dot_index])
    if not m:
        return False
    word = m.group(1).lower().rstrip(".")
    return word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha() and word != "i")


class SentenceAggregator:
    """Accumulates token deltas; `push` returns the pieces that became speakable."""

    def __init__(self, first_min_chars: int = 12, max_chars: int = 240, first_max_words: int = 8) -> None:
        self.first_min_chars = first_min_chars
        self.first_max_words = first_max_words
        self.max_chars = max_chars
        self._buf = ""
        self.released = 0

    def push(self, delta: str) -> list[str]:
        self._buf += delta
        out: list[str] = []
        while True:
            piece = self._next_piece()
            if piece is None:
                return out
            out.append(piece)

    def flush(self) -> list[str]:
        """The remainder at the end of the reply (if it has any letters or digits)."""
        rest, self._buf = self._buf.strip(), ""
        if rest and any(ch.isalnum() for ch in rest):
            self.released += 1
            return [rest]
        return []

    def _phrase_cut(self, buf: str, cut: int | None) -> int | None:
        """A long first clause: cut before the first phrase-starting word 4..first_max_words words in.

        The caller hears nothing until the first piece is synthesized, and Piper's time grows with
        its length; a phrase boundary keeps the prosody natural. Needs the word after the cut to
        have arrived, so a half-streamed word is never mistaken for the boundary.
        """
        words = [(m.start(), m.group()) for m in re.finditer(r"\S+", buf[:cut] if cut else buf)]
        if cut is None and not buf[-1:].isspace():
            words = words[:-1]  # the last word may still be streaming
        if len(words) <= self.first_max_words:
            return cut
        for start, word in words[4 : self.first_max_words + 1]:
            if word.lower().strip(",.") in _PHRASE_STARTS:
                return start
        return cut

    def _next_piece(self) -> str | None:
        buf = self._buf
        cut = None
        for m in _SENTENCE_END.finditer(buf):
            if not _is_false_stop(buf, m.start()):
                cut = m.end()
                break
        if self.released == 0:
            for m in _CLAUSE_END.finditer(buf):
                if m.end() >= self.first_min_chars and (cut is None or m.end() < cut):
                    cut = m.end()
                    break
        if self.released == 0 and (cut is None or len(buf[:cut].split()) > self.first_max_words):
            cut = self._phrase_cut(buf, cut)
        if cut is None and len(buf) > self.max_chars:
            space = buf.rfind(" ", 0, self.max_chars)  # a run-on with no punctuation: cut at a word
            cut = space if space > 0 else self.max_chars
        if cut is None:
            return None
        piece, self._buf = buf[:cut].strip(), buf[cut:].lstrip()
        if not piece:
            return None
        self.released += 1
        return piece
