"""Generated callers for turn-taking: paused sentences, complete questions, backchannels, interruptions.

Three sets that share no sentence: TUNING (what the end-of-turn thresholds were calibrated on),
REPORT (what the benchmark reports) and DEV (paused and complete lines only, for checking a change
to the transcript rules offline, `turn-bench --signals --set dev`, before it meets the report set);
and TWICE, callers who pause twice in one sentence (offline, `--signals --set twice`): at the
second pause the transcript is longer and the model has heard a pause already.
They use different voices where possible: TUNING is the Piper voice of voicecall/sim/speech.py;
REPORT is espeak-ng (formant synthesis, a very different voice, installed by
tools/install_system_deps.py) plus Piper at a slower speaking rate; DEV takes all three in turn.

A paused sentence is written with "|" where the caller stops to think. It is synthesized whole,
with a comma at the "|" (so the voice keeps the rising, unfinished intonation of a caller who
goes on), then the silent gap nearest that point is stretched to the pause length: 0.6-1.0 s.
A line may have several "|", each its own pause.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ipc.audio import FRAME_BYTES, SAMPLE_RATE, ulaw_encode
from voicecall.sim.speech import _dir, _lock, _speech_span, _synthesize

#: Energy (dBFS of a 10 ms block) below which synthesized audio counts as a gap between words.
_GAP_DBFS = -45.0

TUNING: dict[str, list[str]] = {
    "paused": [
        "I need to cancel my appointment and | book a new one for Friday.",
        "My phone number is five five five, | two one two, three four.",
        "I was wondering if, um, | you are open on Saturday.",
        "Could you tell me if the doctor | is available next week?",
        "I'd like to book a checkup for | my daughter.",
        "My date of birth is March | the fourth, nineteen eighty.",
        "I called yesterday because | my prescription ran out.",
        "Is it possible to, uh, | move my visit to the afternoon?",
        "I have a question about my bill. | It seems too high.",
        "The appointment is for my husband. | He has a bad cough.",
        "My insurance number is four four, | seven one nine.",
        "So I was thinking that | maybe Monday works better.",
    ],
    "complete": [
        "What time do you open on Saturday?", "Do you take walk-in patients?", "Where is the clinic?",
        "Can I book a cleaning for next week?", "How much does a checkup cost?", "Is there parking nearby?",
        "Do you accept my insurance?", "Can I speak to a nurse, please?", "When does the clinic close today?",
        "I would like to cancel my appointment.", "Do I need to bring anything?", "Is the doctor in on Monday?",
    ],
    "backchannel": ["Uh-huh.", "Okay.", "Yeah.", "Mm-hmm.", "Right.", "Sure."],
    "interruption": [
        "Wait, can I ask about parking instead?", "Sorry, what are your hours on Sunday?",
        "Actually, I need to cancel my appointment.", "Hold on, do you take walk-ins?",
        "No, I meant the other clinic.", "Excuse me, how much does that cost?",
    ],
}

REPORT: dict[str, list[str]] = {
    "paused": [
        "I want to reschedule my cleaning and | maybe see the hygienist.",
        "You can reach me at eight one eight, | four four two, six six.",
        "I was hoping that, um, | someone could call me back.",
        "Do you know whether the clinic | has a pharmacy inside?",
        "I need a sick note for | my employer.",
        "My last visit was in, uh, | early October I think.",
        "Could I come in today because | my tooth really hurts?",
        "My account number is nine two, | three three eight.",
        "I got a letter from you. | It says my appointment moved.",
        "My son needs a vaccine. | Do you have any slots this week?",
        "The pain started on Tuesday and | it has not gone away.",
        "I think I left my, um, | glasses in the waiting room.",
    ],
    "complete": [
        "Are you open on public holidays?", "Can I get a flu shot today?", "Which bus stops near the clinic?",
        "How long is the usual wait?", "Do you have a female doctor?", "Can I pay by card?",
        "Is the clinic open at lunchtime?", "Can I get my test results by phone?", "Do children need an appointment?",
        "I want to book a blood test.", "Who do I call after hours?", "Can my wife come with me?",
    ],
    "backchannel": ["Mm-hmm.", "Okay.", "Yeah.", "Right.", "I see.", "Uh-huh.", "Sure.", "Okay."],
    "interruption": [
        "Wait, is that on Tuesday or Thursday?", "Sorry, I did not catch the address.",
        "Actually, can I talk to a person?", "Hang on, I have another question.",
        "No, no, I need the earlier slot.", "Excuse me, can you repeat that?",
    ],
}

DEV: dict[str, list[str]] = {
    "paused": [
        "I want to change my address and | my phone number.", "My card number ends in seven three, | four one.",
        "I was going to ask if, uh, | you have any openings.", "Can you check whether the dentist | works on Fridays?",
        "I'm calling about a refill for | my blood pressure pills.", "My birthday is June | the twelfth.",
        "I missed my appointment because | my car broke down.", "Would it be okay to, um, | bring my son along?",
        "I moved last month. | Can you update my file?", "The bill came yesterday. | It looks wrong.",
        "My member ID is six one, | zero zero five.", "I think that | the address is wrong.",
        "Can I reschedule to | the end of the month?", "We would like to see | the same doctor as last time.",
        "Please call me back at two one three, | five five nine.", "I need a copy of my | vaccination record.",
        "My appointment is on the | twenty second of May.", "Is there a way to | pay online?",
    ],
    "complete": [
        "Who should I talk to?", "What is the fee for?", "Can you help me?", "Is that right?", "What time is it now?",
        "Do you do x-rays?", "How do I get there?", "Can I bring my dog?", "Are you closed tomorrow?",
        "I need to see a doctor today.", "Can someone call me back?", "Is the pharmacy open?",
        "How early should I arrive?", "Do you have weekend hours?", "What should I bring with me?",
        "I lost my insurance card.", "Can I change my appointment?", "Where do I park?", "Is there a fee for that?",
        "How long does a cleaning take?", "Do you treat children?", "What is your address?", "Thank you very much.",
        "Can I get a refill?", "Who is my doctor?", "What do I need to fill in?",
        "Is there someone I can talk to?", "Do you know who I should speak with?",
    ],
}

TWICE: dict[str, list[str]] = {
    "paused": [
        "My phone number is five five five, | two one two, | three four five six.",
        "I was wondering if, um, | you are open | on Saturday morning.",
        "I need to cancel my appointment | and, uh, | book a new one for Friday.",
        "My son was born in April | the ninth, | two thousand ten.",
        "I'd like to book | a checkup for | my daughter next week.",
        "Could you tell me if | the doctor is available | next Tuesday afternoon?",
        "So I was hoping | that maybe | Thursday could work.",
        "My insurance number is | four four seven, | one nine two.",
        "I have a question about | my bill from | last month.",
        "The appointment is for | my husband, | he has a bad cough.",
        "Can I come in | today because | my tooth really hurts?",
        "I called yesterday | about my prescription | but nobody called back.",
    ],
}

SETS = {"tuning": TUNING, "report": REPORT, "dev": DEV, "twice": TWICE}
#: (voice name, length scale) for each set: REPORT alternates espeak-ng and a slower Piper.
VOICES = {"tuning": [("piper", 1.0)], "report": [("espeak", 1.0), ("piper", 1.15)],
          "dev": [("piper", 1.0), ("espeak", 1.0), ("piper", 1.15)], "twice": [("piper", 1.15), ("espeak", 1.0)]}


@dataclass(frozen=True)
class CallerLine:
    """One generated caller line as the phone line delivers it."""

    kind: str
    text: str  # without the "|" marker
    voice: str
    mulaw: bytes  # lead and trail silence included, whole 20 ms frames
    speech_start_ms: int
    speech_end_ms: int
    first_half: str = ""  # what was said before the (first) pause
    pauses: tuple[tuple[int, int], ...] = ()  # every stretched mid-sentence pause, (start, end) ms, in order

    @property
    def pause_start_ms(self) -> int:
        """Where the first pause begins (paused lines), -1 otherwise."""
        return self.pauses[0][0] if self.pauses else -1

    @property
    def pause_end_ms(self) -> int:
        return self.pauses[0][1] if self.pauses else -1

    @property
    def duration_ms(self) -> int:
        return len(self.mulaw) // 8

    def frames(self) -> list[bytes]:
        return [self.mulaw[i : i + FRAME_BYTES] for i in range(0, len(self.mulaw), FRAME_BYTES)]


def _espeak(text: str, speed: int = 160, voice: str = "en-us") -> np.ndarray:
    """espeak-ng (`voice`: one of `espeak-ng --voices`, with an optional "+variant") -> int16 8 kHz."""
    import soxr

    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed (tools/install_system_deps.py installs it)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "line.wav"
        done = subprocess.run([exe, "-v", voice, "-s", str(speed), "-w", str(path), text], capture_output=True)
        if done.returncode != 0 or not path.exists() or path.stat().st_size <= 44:
            raise ValueError(f"espeak-ng cannot speak with voice {voice!r}: "
                             f"{done.stderr.decode(errors='replace').strip() or 'no audio'} (see espeak-ng --voices)")
        with wave.open(str(path)) as w:
            rate = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    audio = soxr.resample(pcm.astype(np.float32) / 32768.0, rate, SAMPLE_RATE, quality="HQ")
    return np.clip(np.round(audio * 32767.0 * 0.8), -32768, 32767).astype(np.int16)


def _voice_pcm(text: str, voice: str, scale: float) -> np.ndarray:
    if voice == "espeak" or voice.startswith("espeak:"):
        return _espeak(text, speed=int(160 / scale), voice=voice.partition(":")[2] or "en-us")
    return (_synthesize(text, scale).astype(np.float32) * 0.7).astype(np.int16)


def _gaps(pcm: np.ndarray) -> list[tuple[int, int]]:
    """Silent stretches (sample ranges, >= 40 ms) inside the speech."""
    block = SAMPLE_RATE // 100
    n = len(pcm) // block
    blocks = pcm[: n * block].astype(np.float64).reshape(n, block) / 32768.0
    quiet = 10 * np.log10(np.mean(blocks**2, axis=1) + 1e-12) < _GAP_DBFS
    voiced = np.flatnonzero(~quiet)
    out, i = [], int(voiced[0]) if voiced.size else 0
    last = int(voiced[-1]) if voiced.size else 0
    while i <= last:
        if quiet[i]:
            j = i
            while j <= last and quiet[j]:
                j += 1
            if j - i >= 4:
                out.append((i * block, j * block))
            i = j
        else:
            i += 1
    return out


def line(kind: str, text: str, voice: str = "piper", scale: float = 1.0, pause_ms: int | tuple[int, ...] = 800,
         lead_ms: int = 400, trail_ms: int = 1200) -> CallerLine:
    """Synthesize one caller line (cached like voicecall.sim.speech.utterance); `pause_ms` for each
    "|" in turn (one number: every pause that long)."""
    key = hashlib.sha1(f"turn|{kind}|{text}|{voice}|{scale}|{pause_ms}|{lead_ms}|{trail_ms}".encode()).hexdigest()[:16]
    plain = text.replace(" | ", " ").replace("|", "")
    first_half = text.split("|")[0].strip() if "|" in text else ""
    with _lock:
        path = _dir() / f"{key}.npz"
        if path.exists():
            d = np.load(path)
            return _caller_line(kind, plain, voice, d["mulaw"].tobytes(), [int(v) for v in d["spans"]], first_half)
    spoken = text.replace(" | ", ", ").replace(",,", ",") if "|" in text else text
    spoken = spoken.replace(".,", ".")
    pcm = _voice_pcm(spoken, voice, scale)
    pauses: list[tuple[int, int]] = []
    if "|" in text:
        pcm, pauses = _stretch(pcm, text, voice, pause_ms)
    body = np.zeros(-(-len(pcm) // 160) * 160, dtype=np.int16)
    body[: len(pcm)] = pcm
    start, end = _speech_span(body)
    silence = lambda ms: np.zeros(ms * SAMPLE_RATE // 1000, dtype=np.int16)  # noqa: E731
    mulaw = ulaw_encode(np.concatenate([silence(lead_ms), body, silence(trail_ms)]))
    spans = [lead_ms + start, lead_ms + end]
    for a, b in pauses or [(-1, -1)]:
        spans += [lead_ms + a * 1000 // SAMPLE_RATE, lead_ms + b * 1000 // SAMPLE_RATE] if a >= 0 else [-1, -1]
    with _lock:
        np.savez(path, mulaw=np.frombuffer(mulaw, dtype=np.uint8), spans=np.array(spans))
    return _caller_line(kind, plain, voice, mulaw, spans, first_half)


def _stretch(pcm: np.ndarray, text: str, voice: str, pause_ms: int | tuple[int, ...]) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The silent gap nearest each "|" stretched to its pause; the pauses' sample spans in the result."""
    parts = text.split("|")
    lengths = pause_ms if isinstance(pause_ms, tuple) else (pause_ms,) * (len(parts) - 1)
    if len(lengths) != len(parts) - 1:
        raise ValueError(f"{len(parts) - 1} pauses in {text!r}, {len(lengths)} pause lengths given")
    gaps = _gaps(pcm)
    chosen: list[tuple[int, int]] = []
    for i in range(1, len(parts)):
        want = len(pcm) * len("|".join(parts[:i])) / len(text)
        free = [g for g in gaps if g not in chosen]
        if not free:
            raise ValueError(f"no gap to stretch in {text!r} ({voice})")
        chosen.append(min(free, key=lambda g: abs((g[0] + g[1]) / 2 - want)))
    pieces, pauses, at, length = [], [], 0, 0
    for (a, b), ms in sorted(zip(chosen, lengths, strict=True)):
        pieces.append(pcm[at:a])
        length += a - at
        gap = ms * SAMPLE_RATE // 1000
        pieces.append(np.zeros(gap, dtype=np.int16))
        pauses.append((length, length + gap))
        length += gap
        at = b
    pieces.append(pcm[at:])
    return np.concatenate(pieces), pauses


def _caller_line(kind: str, plain: str, voice: str, mulaw: bytes, spans: list[int], first_half: str) -> CallerLine:
    """spans: speech start, end, then (start, end) of each pause ((-1, -1): none), ms."""
    pauses = tuple((spans[i], spans[i + 1]) for i in range(2, len(spans) - 1, 2) if spans[i] >= 0)
    return CallerLine(kind, plain, voice, mulaw, spans[0], spans[1], first_half, pauses)


def parse_voices(spec: str) -> list[tuple[str, float]]:
    """"piper@0.9,espeak:en-gb" -> [("piper", 0.9), ("espeak:en-gb", 1.0)]: each voice ("piper",
    "espeak" or "espeak:VOICE", an espeak-ng voice such as en-gb or en-us+f3) with a length scale
    (above 1 speaks slower)."""
    out = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        voice, _, scale = part.partition("@")
        if voice != "piper" and voice != "espeak" and not (voice.startswith("espeak:") and voice[7:]):
            raise ValueError(f"voice {voice!r}: expected piper, espeak or espeak:VOICE (e.g. espeak:en-gb)")
        try:
            value = float(scale) if scale else 1.0
        except ValueError:
            raise ValueError(f"voice {part!r}: the length scale after '@' must be a number, e.g. piper@1.15") from None
        if not 0.5 <= value <= 2.0:
            raise ValueError(f"voice {part!r}: length scale {value} is outside 0.5-2.0")
        out.append((voice, value))
    if not out:
        raise ValueError("no voice given")
    return out


def caller_set(name: str, kinds: tuple[str, ...] = ("paused", "complete", "backchannel", "interruption"),
               seed: int = 0, voices: list[tuple[str, float]] | None = None) -> list[CallerLine]:
    """Every line of set `name` ("tuning", "report" or "dev"), voices alternated (the set's own
    unless `voices` is given: checking the rules on voices they were not tuned on), pauses 0.6-1.0 s."""
    texts = SETS[name]
    voices = voices or VOICES[name]
    rng = np.random.default_rng(seed)
    out = []
    for kind in kinds:
        for i, text in enumerate(texts.get(kind, [])):
            voice, scale = voices[i % len(voices)]
            bars = text.count("|")
            pauses = tuple(int(rng.integers(30, 51)) * 20 for _ in range(bars)) if kind == "paused" else ()  # 600..1000 ms
            out.append(line(kind, text, voice, scale, pause_ms=(pauses[0] if bars == 1 else pauses) or 800))
    return out


def _resonate(x: np.ndarray, freq: float, bandwidth: float) -> np.ndarray:
    """A two-pole resonator (one formant) at `freq` Hz."""
    r = np.exp(-np.pi * bandwidth / SAMPLE_RATE)
    a1, a2, g = -2 * r * np.cos(2 * np.pi * freq / SAMPLE_RATE), r * r, 1 - r
    y = np.zeros(len(x))
    y1 = y2 = 0.0
    for i, v in enumerate(x):
        y1, y2 = g * v - a1 * y1 - a2 * y2, y1
        y[i] = y1
    return y


_VOWELS = [[(700, 80), (1200, 90), (2500, 120)], [(300, 60), (870, 90), (2240, 120)],
           [(530, 70), (1840, 100), (2480, 120)], [(570, 70), (840, 80), (2410, 120)]]


def wordless_burst(seed: int = 0, parts: int = 5, lead_ms: int = 0, trail_ms: int = 1200) -> bytes:
    """~0.9 s of voice-like sound with no words (glottal pulses through vowel formants, changing
    every 180 ms): Silero takes it for speech, Whisper finds no words in it. A stand-in for a
    cough, a sigh or someone talking in the background."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(parts):
        n = int(0.18 * SAMPLE_RATE)
        t = np.arange(n) / SAMPLE_RATE
        f0 = 100 + 40 * rng.random()
        phase = np.cumsum(2 * np.pi * f0 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t)) / SAMPLE_RATE)
        y = (np.mod(phase, 2 * np.pi) < 0.6).astype(float) + 0.1 * rng.standard_normal(n)
        for freq, bw in _VOWELS[rng.integers(len(_VOWELS))]:
            y = _resonate(y, freq, bw)
        y *= np.minimum(1, np.minimum(t / 0.05, (t[-1] - t) / 0.08 + 1e-3))
        out.append(y / np.max(np.abs(y)) * 0.4)
    body = (np.concatenate(out) * 32767).astype(np.int16)
    body = np.concatenate([body, np.zeros(-len(body) % 160, dtype=np.int16)])
    silence = lambda ms: np.zeros(ms * SAMPLE_RATE // 1000, dtype=np.int16)  # noqa: E731
    return ulaw_encode(np.concatenate([silence(lead_ms), body, silence(trail_ms)]))
