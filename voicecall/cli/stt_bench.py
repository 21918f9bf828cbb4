"""Benchmark the STT worker as deployed: turn_end -> stt_final (and the stages around it), VAD CPU.

Spawns the real worker (voicecall.sim.worker_harness: real process, real rings) with the embedded
default config (`configs/cpu.toml` [stt]), plays Piper caller utterances of 1-8 s through 8 kHz
mu-law at real-time pace on `--calls` simultaneous calls, and reads the worker's TurnEnded stamps.
VAD CPU is measured in this process on the same audio (Silero, 1 thread), per call, for one call
alone and for `--calls` batched together as the worker runs them.

    .venv/bin/voicecall stt-bench --calls 2 --per-call 12 --json /tmp/stt_bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import psutil

from ipc.audio import ulaw_decode
from ipc.messages import CallClosed, CallOpened, SttEvent, TurnEnded
from voicecall.config import load_config
from voicecall.percentiles import percentile
from voicecall.sim.speech import play_in_real_time, utterance, word_error_rate
from voicecall.sim.worker_harness import WorkerHarness

TEXTS = [
    "Hello?", "Yes.", "Hi, I'd like to book an appointment.", "Can you tell me your opening hours on Saturday?",
    "My name is Sarah Miller and I'm a new patient.",
    "I need to cancel my appointment for tomorrow morning because I have to work.",
    "Hi, I'm calling about the email you sent me last week regarding my insurance renewal and the new monthly price.",
    "Do you accept walk-ins?", "Is the doctor available next week?", "Thank you so much, that's all I needed. Goodbye.",
    "Could I get a refill on my prescription?", "What time do you close today?", "I'd like to speak to a nurse, please.",
    "My daughter has a fever and a sore throat.", "Where is the clinic located?", "Do I need to bring my insurance card?",
    "Can I move my appointment to Friday afternoon?", "How much does a regular checkup cost?", "Okay, that sounds good.",
    "I was wondering whether the doctor could see me on Thursday afternoon, or maybe on Friday morning if that is easier.",
    "Is there parking near the building?", "Sorry, could you repeat that?", "I have a question about my bill.",
    "My number is five five five, one two three, four five six seven.",
]


def vad_cpu(calls: int, seconds: float = 20.0) -> dict[str, float]:
    """Silero CPU per call (% of one core), one call alone and `calls` batched, on real speech."""
    from workers.stt.vad import WINDOW_MS, SileroVad, VadStream

    vad = SileroVad.load("package:silero_vad/data/silero_vad.onnx")
    pcm = ulaw_decode(b"".join(utterance(t).mulaw for t in TEXTS[:6]))
    out = {}
    for n in sorted({1, calls}):
        streams = [VadStream() for _ in range(n)]
        for s in streams:
            s.push(pcm[: int(seconds * 8000)])
        t0 = time.thread_time()
        windows = 0
        while streams[0].ready():
            vad.step(streams)
            windows += 1
        cpu = time.thread_time() - t0
        out[f"vad_us_per_window_per_call_batch{n}"] = cpu / windows / n * 1e6
        out[f"vad_core_pct_per_call_batch{n}"] = cpu / windows / n / (WINDOW_MS / 1000) * 100
    return out


def proc_cpu_s(pid: int) -> float:
    """User + system CPU time of a process, seconds."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/cpu.toml")
    ap.add_argument("--calls", type=int, default=2, help="simultaneous calls")
    ap.add_argument("--per-call", type=int, default=12, help="utterances per call")
    ap.add_argument("--window", type=int, default=None, help="override stt.window_min_frames (0 = stock 30 s)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", default="", help="write the results here")
    args = ap.parse_args(argv)

    cfg = load_config(args.config).stt
    if args.window is not None:
        import msgspec

        cfg = msgspec.structs.replace(cfg, window_min_frames=args.window)
    rng = random.Random(args.seed)
    plans: dict[int, list] = {}
    for cid in range(1, args.calls + 1):
        texts = rng.sample(TEXTS, min(args.per_call, len(TEXTS)))
        plans[cid] = [utterance(t, lead_ms=rng.choice([400, 600, 800]), trail_ms=1200) for t in texts]
    audio = {cid: b"".join(u.mulaw for u in us) for cid, us in plans.items()}
    audio_s = sum(len(a) for a in audio.values()) / 8000

    with WorkerHarness("stt", "workers.stt.worker:SttWorker", cfg, SttEvent, process=cfg.process) as h:
        h.start(180)
        for cid in plans:
            h.send(CallOpened(call_id=cid), call_id=cid)
        cpu0 = proc_cpu_s(h.handle.pid)
        _, got = play_in_real_time(h, audio, tail_s=2.0)
        worker_cpu = proc_cpu_s(h.handle.pid) - cpu0
        for cid in plans:
            h.send(CallClosed(call_id=cid), call_id=cid)

    rows = []
    splits = 0
    for cid, us in plans.items():
        ends = [m for _, _, m in got if isinstance(m, TurnEnded) and m.call_id == cid]
        offsets = [sum(x.duration_ms for x in us[:i]) for i in range(len(us))]
        for i, u in enumerate(us):
            lo, hi = offsets[i] + u.speech_start_ms - 200, offsets[i] + u.speech_end_ms + 200
            mine = [e for e in ends if lo <= e.speech_end_media_ms <= hi]
            if not mine:
                rows.append({"call": cid, "text": u.text, "heard": "", "missed": True, "wer": 1.0})
                continue
            splits += len(mine) - 1  # the endpointer cut this utterance at an inner pause
            end = mine[-1]
            heard = " ".join(e.text for e in mine)
            rows.append({
                "call": cid, "text": u.text, "heard": heard, "missed": False, "turns": len(mine),
                "audio_s": (u.speech_end_ms - u.speech_start_ms) / 1000, "wer": word_error_rate(u.text, heard),
                "turn_end_to_final_ms": (end.stt_final_ns - end.turn_end_ns) / 1e6,
                "speech_end_to_turn_end_ms": (end.turn_end_ns - end.speech_end_ns) / 1e6,
                "speech_end_to_final_ms": (end.stt_final_ns - end.speech_end_ns) / 1e6,
                "endpoint_silence_ms": end.endpoint_silence_ms, "speculative": end.speculative,
                "start_err_ms": mine[0].speech_start_media_ms - (offsets[i] + u.speech_start_ms),
                "end_err_ms": end.speech_end_media_ms - (offsets[i] + u.speech_end_ms),
            })
    expected = sum(len(us) for us in plans.values())
    vad = vad_cpu(args.calls)
    words = sum(len(r["text"].split()) for r in rows)
    summary = {
        "config": args.config, "calls": args.calls, "utterances": expected,
        "missed": sum(r["missed"] for r in rows), "split_extra_turns": splits,
        "window_min_frames": cfg.window_min_frames, "decode_threads": cfg.decode_threads,
        "threads_per_decode": cfg.process.threads, "cpu_count": os.cpu_count(),
        "load_avg": os.getloadavg()[0],
        "wer": sum(r["wer"] * len(r["text"].split()) for r in rows) / max(words, 1),
        "speculative_share": sum(r.get("speculative", False) for r in rows) / max(len(rows), 1),
        "worker_cpu_core_pct_per_call": worker_cpu / (audio_s / args.calls) / args.calls * 100,
        **vad,
    }
    for key in ("turn_end_to_final_ms", "speech_end_to_turn_end_ms", "speech_end_to_final_ms",
                "start_err_ms", "end_err_ms"):
        vals = [r[key] for r in rows if key in r]
        if vals:
            summary[key] = {"p50": percentile(vals, 50), "p95": percentile(vals, 95), "max": max(vals)}

    print(f"STT bench: {args.calls} call(s), {expected} utterances ({summary['missed']} missed, "
          f"{splits} extra turns from inner pauses), window {cfg.window_min_frames} frames, "
          f"{cfg.decode_threads} decoder(s) x {cfg.process.threads} thread(s), load {summary['load_avg']:.2f}")
    print(f"{'metric':<34}{'p50':>9}{'p95':>9}{'max':>9}")
    for key in ("turn_end_to_final_ms", "speech_end_to_turn_end_ms", "speech_end_to_final_ms",
                "start_err_ms", "end_err_ms"):
        if key in summary:
            s = summary[key]
            print(f"{key:<34}{s['p50']:>9.1f}{s['p95']:>9.1f}{s['max']:>9.1f}")
    print(f"WER {summary['wer'] * 100:.1f}%   finals from pause transcripts {summary['speculative_share'] * 100:.0f}%")
    for n in sorted({1, args.calls}):
        print(f"VAD CPU per call (batch {n}): {vad[f'vad_us_per_window_per_call_batch{n}']:.0f} us/window = "
              f"{vad[f'vad_core_pct_per_call_batch{n}']:.2f}% of a core")
    print(f"worker process CPU per call (VAD + Whisper + IPC): {summary['worker_cpu_core_pct_per_call']:.1f}% of a core")
    for r in rows:
        if r["wer"] > 0:
            print(f"  wer {r['wer']:.2f}: {r['text']!r} -> {r['heard']!r}")
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "turns": rows}, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
