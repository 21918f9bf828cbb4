"""Smart Turn v3.2: P(the caller has finished their turn) from the sound of the last <= 8 s of speech.

The model (BSD-2-Clause, 8.7 MB ONNX, the one Pipecat uses by default) ships inside the
`pipecat-ai` wheel, which the install step puts in with `--no-deps`: we want the file, not the
framework, so it is located with `importlib` and pipecat is never imported.

Input: Whisper's 80-bin log-mel spectrogram of exactly 8 s of **16 kHz** audio (the speech is
left-padded with zeros, or only its last 8 s kept), the waveform first normalised to zero mean
and unit variance. On 8 kHz input the model silently answers wrong (pipecat-ai/pipecat#3844),
so phone audio is upsampled here (soxr HQ, as for Whisper) and nothing else is accepted.
Output: one sigmoid probability that the turn is complete.

The features are computed in numpy (no torch, no transformers at run time); the test suite
checks them against transformers' WhisperFeatureExtractor.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from workers.package_files import package_dir

MODEL_RATE = 16000
WINDOW_S = 8
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
N_MELS = 80
DEFAULT_MODEL = "package:pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"


def model_path(spec: str = DEFAULT_MODEL) -> Path:
    """The ONNX file: "package:PKG/rel/path" (found without importing PKG) or a file path."""
    if spec.startswith("package:"):
        pkg, _, rel = spec.removeprefix("package:").partition("/")
        path = package_dir(pkg, f"Smart Turn model {spec!r} (pip install --no-deps pipecat-ai)") / rel
        if not path.is_file():
            raise FileNotFoundError(f"Smart Turn model {spec!r}: package {pkg!r} is installed but has no "
                                    f"{rel} (expected {path}; the pipecat-ai 1.14 wheel ships it)")
        return path
    path = Path(spec).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"Smart Turn model {spec!r}: no file at {path}")
    return path


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz * 3.0 / 200.0
    log_part = 15.0 + np.log(np.maximum(hz, 1e-9) / 1000.0) * (27.0 / np.log(6.4))
    return np.where(hz >= 1000.0, log_part, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * 200.0 / 3.0
    log_part = 1000.0 * np.exp((mel - 15.0) * (np.log(6.4) / 27.0))
    return np.where(mel >= 15.0, log_part, linear)


@lru_cache(maxsize=1)
def mel_filters() -> np.ndarray:
    """[N_MELS, N_FFT // 2 + 1] triangular filters, area-normalised (Slaney), 0-8 kHz."""
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(MODEL_RATE / 2), N_MELS + 2))
    bins = np.linspace(0.0, MODEL_RATE / 2, N_FFT // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lower) / (centre - lower)
    falling = (upper - bins[None, :]) / (upper - centre)
    tri = np.clip(np.minimum(rising, falling), 0.0, None)
    return tri * (2.0 / (upper - lower))


@lru_cache(maxsize=1)
def _hann() -> np.ndarray:
    n = np.arange(N_FFT)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * n / N_FFT)  # periodic, as torch.hann_window


def log_mel(audio16k: np.ndarray) -> np.ndarray:
    """Whisper log-mel features [80, 800] of the last 8 s of `audio16k` (float, -1..1)."""
    n = MODEL_RATE * WINDOW_S
    x = np.asarray(audio16k, dtype=np.float32)[-n:]
    x = np.concatenate([np.zeros(n - len(x), dtype=np.float32), x])  # silence before short speech
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    padded = np.pad(x.astype(np.float64), N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]  # 801 centred frames
    power = np.abs(np.fft.rfft(frames * _hann(), axis=1)) ** 2
    mel = np.log10(np.maximum(mel_filters() @ power.T, 1e-10))[:, :-1]  # Whisper drops the last frame
    mel = np.maximum(mel, mel.max() - 8.0)
    return ((mel + 4.0) / 4.0).astype(np.float32)


def upsample_8k(pcm8k: np.ndarray) -> np.ndarray:
    """int16 (or float -1..1) 8 kHz phone audio -> float32 16 kHz, what the model must see."""
    import soxr

    audio = pcm8k.astype(np.float32) / 32768.0 if pcm8k.dtype == np.int16 else pcm8k.astype(np.float32)
    return soxr.resample(audio, 8000, MODEL_RATE, quality="HQ").astype(np.float32)


class SmartTurn:
    """One onnxruntime session (one thread); `probability()` is safe to call from one thread at a time."""

    def __init__(self, session: Any) -> None:
        self._session = session

    @classmethod
    def load(cls, spec: str = DEFAULT_MODEL, threads: int = 1) -> SmartTurn:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return cls(ort.InferenceSession(str(model_path(spec)), sess_options=opts, providers=["CPUExecutionProvider"]))

    def probability(self, audio16k: np.ndarray) -> float:
        """P(turn complete) for speech ending at the end of `audio16k` (16 kHz float)."""
        features = log_mel(audio16k)[None]
        (out,) = self._session.run(None, {"input_features": features})
        return float(np.asarray(out).reshape(-1)[0])

    def probability_8k(self, pcm8k: np.ndarray) -> float:
        """P(turn complete) for 8 kHz phone audio (upsampled first: the model needs 16 kHz)."""
        return self.probability(upsample_8k(pcm8k[-8000 * WINDOW_S:]))
