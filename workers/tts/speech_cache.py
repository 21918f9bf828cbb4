"""Sentences already spoken, kept as the mu-law audio the caller heard, by their text.

A phone agent says the same sentences over and over: the knowledge file's answers, its fallback,
"One moment while I check that." Synthesizing one again costs a Piper run (~100-200 ms before the
first frame on 2 cores, and CPU the stt worker needs); sending the kept audio costs nothing. Only
voices whose audio depends on the text alone use it (`Voice.context_free`: Piper yes, CSM no: it
conditions on the conversation). Only whole sentences that finished uncancelled are kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict


class SpeechCache:
    """Text -> mu-law bytes, least recently used dropped once the total passes `max_bytes`."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()  # several synthesis threads share it
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, text: str) -> bytes | None:
        with self._lock:
            audio = self._items.get(text)
            if audio is None:
                self.misses += 1
                return None
            self._items.move_to_end(text)
            self.hits += 1
            return audio

    def put(self, text: str, audio: bytes) -> None:
        if not audio or len(audio) > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(text, None)
            if old is not None:
                self.bytes -= len(old)
            self._items[text] = audio
            self.bytes += len(audio)
            while self.bytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self.bytes -= len(dropped)

    def __len__(self) -> int:
        return len(self._items)
