"""Benchmark the tts worker as deployed: Synthesize -> first mu-law frame, and real-time factor.

Spawns the real worker (voicecall.sim.worker_harness: real process, real rings) with the embedded default
(`configs/cpu.toml` [tts], Piper joe-medium) and sends first sentences of 1, 4, 8 and 16 words,
each as the first sentence of a new turn, one at a time (an idle worker, like a reply's start).
  first frame = Synthesize written -> first AUDIO record written (its ts_ns is tts_first_audio)
  read        = Synthesize written -> first AUDIO record read here (adds the ring hop)
  RTF         = (SentenceDone written - Synthesize written) / audio duration

    .venv/bin/voicecall tts-bench --reps 7 --json /tmp/tts_bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from ipc.messages import KIND_AUDIO, SentenceDone, Synthesize, TtsEvent
from voicecall.config import load_config
from voicecall.percentiles import percentile
from voicecall.sim.worker_harness import WorkerHarness

SENTENCES = {
    1: ["Sure.", "Okay.", "Hello."],
    4: ["I can help you.", "Let me check that.", "Your order has shipped."],
    8: ["Your appointment is booked for Tuesday at three.", "I can move that to Friday morning for you.",
        "The clinic opens at eight on weekdays, I think."],
    16: ["I can move your appointment to Thursday at ten in the morning if that works better for you.",
         "You will get a text message confirming the change along with the address of the clinic today.",
         "Please bring your insurance card and a photo identification when you come in for the next visit."],
}


def measure(h: WorkerHarness, call_id: int, text: str) -> dict[str, float]:
    sent = time.monotonic_ns()
    h.send(Synthesize(call_id=call_id, turn_id=0, seq=0, text=text, sent_ns=sent), call_id, 0, 0)
    first_write = first_read = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for rec in h.records(0.05):
            if rec.kind == KIND_AUDIO and not first_write:
                first_write, first_read = rec.ts_ns, time.monotonic_ns()
            elif rec.kind != KIND_AUDIO:
                msg = h.codec.decode(rec.payload)
                if isinstance(msg, SentenceDone) and msg.call_id == call_id:
                    return {"first_frame_ms": (first_write - sent) / 1e6, "first_read_ms": (first_read - sent) / 1e6,
                            "audio_ms": float(msg.duration_ms), "rtf": (rec.ts_ns - sent) / 1e6 / msg.duration_ms}
    raise TimeoutError(f"no SentenceDone for {text!r} within 30 s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/cpu.toml")
    parser.add_argument("--reps", type=int, default=7, help="sentences per length (cycling through 3 texts)")
    parser.add_argument("--threads", type=int, default=0, help="override tts.process.threads (0 = config)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    config = load_config(args.config).tts
    if args.threads:
        config.process.threads = args.threads
    results: dict[str, Any] = {"config": args.config, "backend": config.backend, "threads": config.process.threads,
                               "cpus": os.cpu_count(), "load_avg_start": os.getloadavg()[0], "rows": {}}
    call_id = 1000
    with WorkerHarness("tts", "workers.tts.worker:TtsWorker", config, TtsEvent, process=config.process) as h:
        ready = h.start(120)
        results["load_s"] = ready.load_s
        for _ in range(2):  # let onnxruntime settle its buffers for several lengths
            for texts in SENTENCES.values():
                measure(h, call_id := call_id + 1, texts[0])
        for words, texts in SENTENCES.items():
            samples = [measure(h, call_id := call_id + 1, texts[i % len(texts)]) for i in range(args.reps)]
            results["rows"][str(words)] = {
                key: {"p50": percentile([s[key] for s in samples], 50),
                      "p90": percentile([s[key] for s in samples], 90),
                      "min": min(s[key] for s in samples)}
                for key in samples[0]
            } | {"n": len(samples)}
    results["load_avg_end"] = os.getloadavg()[0]
    print(f"tts bench: backend {config.backend}, {config.process.threads} ORT thread(s), {args.reps} reps per length, "
          f"load avg {results['load_avg_start']:.1f} -> {results['load_avg_end']:.1f}")
    print(f"{'words':>5} | {'audio ms':>8} | {'first frame p50 (p90, min) ms':>30} | {'read p50 ms':>11} | {'RTF p50 (p90)':>14}")
    for words, row in results["rows"].items():
        ff, rd, rtf, au = row["first_frame_ms"], row["first_read_ms"], row["rtf"], row["audio_ms"]
        print(f"{words:>5} | {au['p50']:>8.0f} | {ff['p50']:>12.1f} ({ff['p90']:6.1f}, {ff['min']:6.1f})      "
              f"| {rd['p50']:>11.1f} | {rtf['p50']:>6.3f} ({rtf['p90']:.3f})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
