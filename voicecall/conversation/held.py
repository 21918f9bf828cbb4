"""A reply held silent, then released from the first sentence the caller has not heard.

Two things hold a reply: a speculative reply (prepared at the caller's pause, before their turn
has ended) and a backchannel pause (the caller said "uh-huh" over the agent: its audio stopped
at once). While held, the reply keeps being generated and synthesized; its audio is kept per
sentence (`AgentReply.audio`, filled from the TTS records) but nothing is sent and no mark is
placed. Releasing it replays, in order, every sentence from the first one whose mark was not
echoed as played: the audio kept so far, then its mark if the sentence is complete. A sentence
still being synthesized ends the replay; the rest of it arrives live and plays the normal way.
"""

from __future__ import annotations

import time
from typing import Any

from voicecall.conversation.history import AgentReply


def keep_audio(reply: AgentReply, seq: int, mulaw: bytes) -> None:
    """Keep a TTS record's audio under its sentence (every reply keeps it, held or not)."""
    reply.audio.setdefault(seq, bytearray()).extend(mulaw)


def release(session: Any, reply: AgentReply) -> int:
    """Stop holding `reply` and send it again from its first unheard sentence; returns how many
    sentences were (re)sent. `session` is the CallSession (its `_play` and `_place_mark`)."""
    reply.on_hold = False
    sent = 0
    start = next((i for i, s in enumerate(reply.sentences) if not s.played), len(reply.sentences))
    for sentence in reply.sentences[start:]:
        audio = reply.audio.get(sentence.seq)
        if not audio and not sentence.frames:
            break  # nothing of it yet: it arrives live
        sentence.played, sentence.mark = False, ""
        if audio:
            session._play(bytes(audio), first_audio_ns=time.monotonic_ns())
            sent += 1
        if not sentence.frames:
            break  # still being synthesized: its remaining audio and mark arrive live
        session._place_mark(sentence)
    return sent
