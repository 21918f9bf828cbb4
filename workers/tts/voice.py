"""What the tts worker needs from a voice backend, and how the configured one is chosen.

A voice turns one sentence into float audio at its native rate, handing each piece to `emit` as
soon as it exists (a Piper sentence, a CSM frame group). It checks `job.cancelled` between
synthesis steps and may register an interrupt with `job.on_cancel` to abort a running step.
Backend modules import their model libraries only when loaded, inside the worker process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from workers.config import TtsConfig
from workers.tts.speech_queue import SpeechJob

Emit = Callable[[np.ndarray], None]
Progress = Callable[..., None]


class Voice(Protocol):
    """A loaded voice, shared by every call (never loaded per call)."""

    #: Native sample rate of the audio passed to `emit` (Hz).
    sample_rate: int
    #: The same text always may be spoken with the same audio (no conversational context), so
    #: the worker may replay a sentence it already synthesized (workers/tts/speech_cache.py).
    context_free: bool

    def speak(self, job: SpeechJob, text: str, emit: Emit) -> None:
        """Synthesize `text` (already normalised) for `job`, emitting float32 mono chunks."""

    def add_context(self, call_id: int, turn_id: int, speaker: str, text: str) -> None:
        """A turn of the conversation (caller or agent) that context-aware voices condition on."""

    def close_call(self, call_id: int) -> None:
        """Forget everything held for the call."""


def load_voice(config: TtsConfig, threads: int, progress: Progress) -> Voice:
    """Build the configured backend (`tts.backend`)."""
    if config.backend == "piper":
        from workers.tts.piper_voice import PiperVoiceBackend  # noqa: PLC0415 - import only the chosen backend

        return PiperVoiceBackend(config, threads, progress)
    from workers.tts.csm import CsmVoiceBackend  # noqa: PLC0415

    return CsmVoiceBackend(config, threads, progress)
