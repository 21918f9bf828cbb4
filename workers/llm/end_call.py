"""The end-call control token, removed from streamed text even when split across pieces.

A model that cannot call tools asks to hang up by writing the token (`llm.end_call_token`,
"[END_CALL]" by default, documented in the system prompt). The filter holds back any tail that
could be the start of the token, so the caller never hears half of it.
"""

from __future__ import annotations


class EndCallFilter:
    """Feed it deltas; it returns the speakable text and remembers whether the token appeared."""

    def __init__(self, token: str) -> None:
        self._token = token
        self._held = ""
        self.seen = False

    def push(self, delta: str) -> str:
        """Speakable text released by this delta (may be "" while a possible token is held)."""
        if not self._token:
            return delta
        text = self._held + delta
        self._held = ""
        if self._token in text:
            self.seen = True
            text = text.replace(self._token, "")
        keep = self._partial_suffix(text)
        if keep:
            self._held = text[-keep:]
            text = text[:-keep]
        return text

    def flush(self) -> str:
        """Whatever was held back at the end of the reply (it was not the token after all)."""
        held, self._held = self._held, ""
        return held

    def _partial_suffix(self, text: str) -> int:
        """Length of the longest tail of `text` that is a proper prefix of the token."""
        for n in range(min(len(text), len(self._token) - 1), 0, -1):
            if self._token.startswith(text[-n:]):
                return n
        return 0
