"""The conversation the latency benchmark plays (`voicecall sim --questions N`).

Each call asks N front-desk questions in Piper speech, waiting for each answer to finish like a
person would; every `barge_in_every`-th question interrupts the answer instead.
"""

from __future__ import annotations

import numpy as np

from voicecall.sim.script import CallScript, Utterance

QUESTIONS = (
    "What time do you open on Saturday?",
    "Where are you located?",
    "Do you have parking?",
    "How much does a checkup cost?",
    "Can I book an appointment for next week?",
    "Are you taking new patients?",
    "I need to reschedule my appointment.",
    "Can I talk to a real person?",
    "Do you take walk-ins?",
    "I need a refill of my prescription.",
    "What are your opening hours?",
    "Is there a bus that stops near you?",
)
BARGE_IN = "Sorry, actually, where is the clinic?"


def build_question_script(n: int, barge_in_every: int, seed: int) -> CallScript:
    from voicecall.sim.speech import utterance  # Piper speech; imported late: it loads the voice

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(QUESTIONS))
    utterances = []
    for i in range(n):
        text = QUESTIONS[order[i % len(QUESTIONS)]]
        if barge_in_every and i and i % barge_in_every == 0:
            utterances.append(Utterance(mulaw=utterance(BARGE_IN).mulaw, barge_in_after_ms=1500))
        else:
            utterances.append(Utterance(mulaw=utterance(text).mulaw, pause_before_ms=int(rng.integers(300, 900)),
                                        after_reply=True))
    utterances[0].pause_before_ms = 0
    return CallScript(utterances=utterances, tail_ms=8000, max_s=40.0 * n + 60)
