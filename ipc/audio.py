"""G.711 mu-law by numpy lookup tables, and 20 ms frame slicing.

Bit-exact with CPython's `audioop.lin2ulaw`/`ulaw2lin` (14-bit magnitude, bias 0x21, clip
8159). Imports only numpy and the standard library at module level: the stt and tts workers import it too (the one
module under `voicecall/` that workers may use), so it must stay light.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

SAMPLE_RATE = 8000
FRAME_MS = 20
FRAME_BYTES = SAMPLE_RATE * FRAME_MS // 1000  # 160 mulaw bytes = 20 ms
ULAW_SILENCE = 0xFF  # mu-law code of 0


def _build_decode_table() -> np.ndarray:
    codes = np.arange(256, dtype=np.int32) ^ 0xFF
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(sign != 0, -magnitude, magnitude).astype(np.int16)


def _build_encode_table() -> np.ndarray:
    # Index: the int16 sample reinterpreted as uint16 (so negative samples map to 32768..65535).
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 2  # audioop works on 14-bit values
    sign = np.where(pcm < 0, 0x7F, 0xFF)
    mag = np.minimum(np.where(pcm < 0, -pcm, pcm), 8159) + 0x21
    exponent = np.zeros_like(mag)
    for seg in range(8):
        exponent = np.where(mag >= (0x40 << seg), seg + 1, exponent)
    mantissa = (mag >> (exponent + 1)) & 0x0F
    # Past the last segment (only -32768..-32765 after the clip and bias) audioop emits 0x7F ^ sign.
    code = np.where(exponent >= 8, 0x7F, (exponent << 4) | mantissa) ^ sign
    table = np.empty(65536, dtype=np.uint8)
    table[np.arange(-32768, 32768, dtype=np.int32).astype(np.uint16)] = code.astype(np.uint8)
    return table


ULAW_DECODE = _build_decode_table()
ULAW_ENCODE = _build_encode_table()
#: Each mu-law byte's power relative to full scale: a frame's mean power is one lookup per byte.
ULAW_POWER = (ULAW_DECODE.astype(np.float64) / 32768.0) ** 2


def ulaw_decode(data: bytes | bytearray | memoryview) -> np.ndarray:
    """mu-law bytes -> int16 PCM samples."""
    return ULAW_DECODE[np.frombuffer(data, dtype=np.uint8)]


def ulaw_encode(pcm: np.ndarray) -> bytes:
    """int16 PCM samples (or float in [-1, 1]) -> mu-law bytes."""
    if pcm.dtype != np.int16:
        pcm = np.clip(np.round(np.asarray(pcm, dtype=np.float64) * 32768.0), -32768, 32767).astype(np.int16)
    return ULAW_ENCODE[pcm.view(np.uint16)].tobytes()


def frames(mulaw: bytes, pad: bool = True) -> list[bytes]:
    """Split mu-law audio into exact 160-byte frames; the last is padded with silence if `pad`."""
    out = [mulaw[i : i + FRAME_BYTES] for i in range(0, len(mulaw), FRAME_BYTES)]
    if out and len(out[-1]) < FRAME_BYTES:
        if pad:
            out[-1] = out[-1] + bytes([ULAW_SILENCE]) * (FRAME_BYTES - len(out[-1]))
        else:
            out.pop()
    return out


def pad_frame(mulaw: bytes) -> bytes:
    """Pad a short tail to one whole 20 ms frame with mu-law silence (Twilio plays what it gets)."""
    short = -len(mulaw) % FRAME_BYTES
    return mulaw + bytes([ULAW_SILENCE]) * short if short else mulaw


def pcm_to_mulaw_8k(pcm: np.ndarray, rate: int) -> bytes:
    """Mono PCM (int16, or float in [-1, 1]) at any rate -> mu-law 8 kHz (soxr when resampling)."""
    samples = np.asarray(pcm)
    if samples.dtype == np.int16:
        samples = samples.astype(np.float32) / 32768.0
    samples = samples.astype(np.float32, copy=False)
    if rate != SAMPLE_RATE:
        import soxr  # noqa: PLC0415 - workers import this module; only WAV tools need soxr

        samples = soxr.resample(samples, rate, SAMPLE_RATE)
    return ulaw_encode(np.clip(samples, -1.0, 1.0))


def read_wav_mulaw(path: str | Path) -> bytes:
    """A PCM WAV file (8/16/32-bit, any rate, mono or mixed down) -> mu-law 8 kHz bytes."""
    with wave.open(str(path), "rb") as wav:
        width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
        raw = wav.readframes(wav.getnframes())
    if width == 1:  # 8-bit WAV is unsigned
        samples = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        samples = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 4:
        samples = np.frombuffer(raw, dtype="<i4").astype(np.float32) / 2147483648.0
    else:
        raise ValueError(f"{path}: {8 * width}-bit WAV not supported (use 8, 16 or 32-bit PCM)")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    return pcm_to_mulaw_8k(samples, rate)


def write_mulaw_wav(path: str | Path, mulaw: bytes) -> None:
    """Write mu-law 8 kHz as a 16-bit PCM WAV (what every player opens)."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(ulaw_decode(mulaw).astype("<i2").tobytes())
