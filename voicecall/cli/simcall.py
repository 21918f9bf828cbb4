"""Place simulated Twilio calls against a running voicecall server and report what happened.

    voicecall sim --server http://127.0.0.1:8080 --wav hello.wav --out heard.wav
    voicecall sim --wav q.wav --barge-in-wav interrupt.wav --barge-in-after-ms 400
    voicecall sim --calls 200 --duration-s 25 --cpu-pid $(pgrep -f 'voicecall.telephony.server')

Each call: webhook POST (signed with --auth-token), TwiML, Media Stream WebSocket, paced 20 ms
media, marks echoed after simulated playout, `clear` honoured (see voicecall/sim/client.py).
Prints one JSON report: per call for one call, percentiles for many, CPU per live call with --cpu-pid.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import psutil

from ipc.audio import SAMPLE_RATE, pcm_to_mulaw_8k, write_mulaw_wav
from voicecall.cli.line_options import add_line_arguments, check_line_arguments, line_for
from voicecall.percentiles import summary
from voicecall.sim.client import SimulatedCall
from voicecall.sim.script import CallReport, CallScript, Utterance


def tone_mulaw(ms: int, freq: float = 440.0, level: float = 0.3) -> bytes:
    """A speech-loud tone with a wobble (no WAV needed for smoke tests and the benchmark)."""
    t = np.arange(SAMPLE_RATE * ms // 1000) / SAMPLE_RATE
    return pcm_to_mulaw_8k(level * np.sin(2 * np.pi * freq * t) * (0.75 + 0.25 * np.sin(2 * np.pi * 3 * t)), SAMPLE_RATE)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, seconds."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def build_script(args: argparse.Namespace) -> CallScript:
    speech = Utterance(wav=args.wav) if args.wav else Utterance(mulaw=tone_mulaw(args.tone_ms))
    speech.pause_before_ms = args.pause_ms
    utterances = [speech]
    if args.barge_in_wav or args.barge_in_after_ms is not None:
        barge = Utterance(wav=args.barge_in_wav) if args.barge_in_wav else Utterance(mulaw=tone_mulaw(600, 660.0))
        barge.barge_in_after_ms = args.barge_in_after_ms if args.barge_in_after_ms is not None else 300
        utterances.append(barge)
    if args.duration_s:  # keep talking (speech, pause, echo) until the duration is filled
        speech_ms = len(speech.audio()) // 8  # 8 mu-law bytes per ms
        one = (speech_ms + args.pause_ms) / 1000  # the server's answer plays during the next pause
        utterances = [Utterance(mulaw=speech.audio(), pause_before_ms=args.pause_ms)] * max(1, int(args.duration_s / one))
    dtmf = [(int(at), d) for at, d in (item.split(":") for item in args.dtmf.split(",") if item)] if args.dtmf else []
    return CallScript(utterances=utterances, dtmf=dtmf, tail_ms=args.tail_ms, max_s=args.duration_s + 60 if args.duration_s else 120)


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, MB (the whole voicecall system)."""
    root = psutil.Process(pid)
    total = 0
    for proc in (root, *root.children(recursive=True)):
        try:
            total += proc.memory_info().rss
        except psutil.Error:  # exited meanwhile
            continue
    return total / 2**20


async def run_calls(args: argparse.Namespace) -> dict[str, Any]:
    if args.questions:
        from voicecall.sim.questions import build_question_script

        script = build_question_script(args.questions, args.barge_in_every, args.seed)
    else:
        script = build_script(args)
    rss: dict[str, float] | None = None
    rss_idle = tree_rss_mb(args.rss_pid) if args.rss_pid else 0.0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        calls = [SimulatedCall(args.server, public_url=args.public_url, auth_token=args.auth_token,
                               tick_ms=args.tick_ms, session=session,
                               line=line_for(args, seed=k))
                 for k in range(args.calls)]
        tasks = []
        ramp = args.ramp_s / max(1, args.calls)
        for call in calls:  # ramp up: a thundering herd of handshakes is not what Twilio does
            tasks.append(asyncio.create_task(call.run(script)))
            await asyncio.sleep(ramp)
        cpu: dict[str, Any] | None = None
        if args.cpu_pid:
            cpu = await measure_cpu(args.cpu_pid, calls, args.settle_s, args.measure_s)
        if args.rss_pid:
            await asyncio.sleep(args.settle_s)  # every call live, greeted, talking
            during = tree_rss_mb(args.rss_pid)
            rss = {"idle_mb": round(rss_idle, 1), "with_calls_mb": round(during, 1),
                   "per_call_mb": round((during - rss_idle) / max(1, args.calls), 2)}
        reports: list[CallReport] = await asyncio.gather(*tasks)
    if args.out and calls:
        write_mulaw_wav(args.out, calls[0].heard())
    if args.questions:
        from voicecall.cli.latency_report import report

        return report(reports, args.db or None, rss)
    return summarize(reports, cpu)


async def measure_cpu(pid: int, calls: list[SimulatedCall], settle_s: float, measure_s: float) -> dict[str, Any]:
    """CPU of the server process over a window while every call is live."""
    await asyncio.sleep(settle_s)
    live = sum(1 for c in calls if c.ws is not None)
    frames0 = sum(c.report.frames_sent + c.report.media_received for c in calls)
    c0, t0 = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(measure_s)
    c1, t1 = cpu_seconds(pid), time.monotonic()
    frames1 = sum(c.report.frames_sent + c.report.media_received for c in calls)
    core = (c1 - c0) / (t1 - t0)
    return {"pid": pid, "live_calls": live, "window_s": round(t1 - t0, 2), "cpu_core_fraction": round(core, 4),
            "cpu_percent_per_call": round(100 * core / max(1, live), 3),
            "messages_per_s": round((frames1 - frames0) / (t1 - t0), 1)}


def summarize(reports: list[CallReport], cpu: dict[str, Any] | None) -> dict[str, Any]:
    if len(reports) == 1:
        out = reports[0].as_dict()
    else:
        errors = [e for r in reports for e in r.protocol_errors]
        out = {"calls": len(reports), "busy": sum(r.busy for r in reports),
               "calls_with_errors": sum(bool(r.protocol_errors) for r in reports), "protocol_errors": errors[:20],
               "response_ms": summary([v for r in reports for v in r.response_ms]),
               "barge_in_stop_ms": summary([v for r in reports for v in r.barge_in_stop_ms]),
               "marks": sum(len(r.marks) for r in reports),
               "marks_dropped": sum(m["dropped"] for r in reports for m in r.marks)}
    if cpu is not None:
        out["cpu"] = cpu
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", default="http://127.0.0.1:8080", help="where the server really listens")
    p.add_argument("--public-url", default="", help="the server's server.public_url (signatures use it); default --server")
    p.add_argument("--auth-token", default=os.environ.get("TWILIO_AUTH_TOKEN", ""), help="sign like Twilio")
    p.add_argument("--wav", default="", help="caller speech (any WAV); default a 1 s tone")
    p.add_argument("--tone-ms", type=int, default=1000)
    p.add_argument("--pause-ms", type=int, default=500, help="silence before each utterance")
    p.add_argument("--barge-in-wav", default="")
    p.add_argument("--barge-in-after-ms", type=int, default=None, help="talk over the server this long after its audio starts")
    p.add_argument("--dtmf", default="", help="digits as MS:DIGIT,MS:DIGIT (ms after the stream starts)")
    p.add_argument("--tail-ms", type=int, default=2500, help="silence after the script before stop")
    p.add_argument("--out", default="", help="write what the (first) caller heard to this WAV")
    p.add_argument("--calls", type=int, default=1)
    p.add_argument("--ramp-s", type=float, default=2.0, help="spread call starts over this long")
    p.add_argument("--duration-s", type=float, default=0.0, help="keep each call talking this long")
    add_line_arguments(p)
    p.add_argument("--tick-ms", type=int, default=20, help="send caller frames in bursts of this much (>=20)")
    p.add_argument("--cpu-pid", type=int, default=0, help="measure this process's CPU while calls are live")
    p.add_argument("--settle-s", type=float, default=3.0)
    p.add_argument("--measure-s", type=float, default=15.0)
    p.add_argument("--questions", type=int, default=0,
                   help="latency benchmark: each call asks this many questions (Piper speech), answers awaited")
    p.add_argument("--barge-in-every", type=int, default=5, help="with --questions: every Nth question interrupts")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--db", default="", help="with --questions: the server's call records, to cross-check per stage")
    p.add_argument("--rss-pid", type=int, default=0, help="with --questions: the supervisor's pid, for memory per call")
    p.add_argument("--json", default="", help="also write the result to this file")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_line_arguments(parser, args)
    result = asyncio.run(run_calls(args))
    if args.questions:
        from voicecall.cli.latency_report import print_table

        print_table(result)
    else:
        print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 1 if result.get("protocol_errors") else 0


if __name__ == "__main__":
    raise SystemExit(main())
