"""mu-law tables against the stdlib reference, framing, and WAV conversion."""

from __future__ import annotations

import audioop  # the stdlib's G.711 reference (deprecated: setup.cfg names the warning)
import wave
from pathlib import Path

import numpy as np

from ipc.audio import (
    FRAME_BYTES,
    ULAW_SILENCE,
    frames,
    pad_frame,
    pcm_to_mulaw_8k,
    read_wav_mulaw,
    ulaw_decode,
    ulaw_encode,
    write_mulaw_wav,
)


def test_encode_is_bit_exact_for_every_int16() -> None:
    pcm = np.arange(-32768, 32768, dtype=np.int16)
    assert ulaw_encode(pcm) == audioop.lin2ulaw(pcm.tobytes(), 2)


def test_decode_is_bit_exact_for_every_code() -> None:
    codes = bytes(range(256))
    assert ulaw_decode(codes).tobytes() == audioop.ulaw2lin(codes, 2)


def test_round_trip_is_stable() -> None:
    codes = bytes(range(256))
    assert ulaw_encode(ulaw_decode(codes)) == audioop.lin2ulaw(audioop.ulaw2lin(codes, 2), 2)


def test_frames_and_padding() -> None:
    data = bytes(range(200)) * 2  # 400 bytes = 2.5 frames
    out = frames(data)
    assert [len(f) for f in out] == [FRAME_BYTES] * 3
    assert out[2][80:] == bytes([ULAW_SILENCE]) * 80
    assert len(frames(data, pad=False)) == 2
    assert pad_frame(b"") == b""
    assert pad_frame(b"\x00" * 161) == b"\x00" * 161 + bytes([ULAW_SILENCE]) * 159


def _write_wav(path: Path, pcm: np.ndarray, rate: int, channels: int = 1) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.astype("<i2").tobytes())


def test_wav_resampled_to_8k(tmp_path: Path) -> None:
    t = np.arange(16000) / 16000  # 1 s at 16 kHz
    pcm = (8000 * np.sin(2 * np.pi * 300 * t)).astype(np.int16)
    _write_wav(tmp_path / "a.wav", np.repeat(pcm, 2), 16000, channels=2)
    mulaw = read_wav_mulaw(tmp_path / "a.wav")
    assert abs(len(mulaw) - 8000) <= 2
    back = ulaw_decode(mulaw).astype(np.float64)
    assert 4500 < np.sqrt(np.mean(back[100:-100] ** 2)) < 6800  # the tone's RMS (~5657) survives


def test_write_then_read_8k(tmp_path: Path) -> None:
    mulaw = pcm_to_mulaw_8k(np.linspace(-0.5, 0.5, 1600), 8000)
    write_mulaw_wav(tmp_path / "b.wav", mulaw)
    assert read_wav_mulaw(tmp_path / "b.wav") == mulaw
