"""Turn-taking benchmark: generated callers against a running voicecall, a table and JSON.

    voicecall run --config configs/cpu.toml &                 # or a copy on another port
    voicecall turn-bench --config configs/cpu.toml --calls 1 4 --json /tmp/turns.json
    voicecall turn-bench --signals --set tuning               # each end-of-turn signal alone, offline
    voicecall turn-bench --signals --set dev                  # ... on a third set, to check a rule change
    voicecall turn-bench --signals --set dev --voices espeak:en-gb,piper@0.9   # ... in voices not tuned on
    voicecall turn-bench --signals --set twice                # ... callers who pause twice in a sentence
    voicecall turn-bench --signals --noise-dbfs -45 --level-db -15   # ... a noisy line, a quiet caller (also live)
    voicecall turn-bench --signals --band                     # ... callers through the telephone band (also live)
    voicecall turn-bench --calls 1 --echo-db -30              # live: a line that echoes the agent back

Callers (voicecall/sim/turn_callers.py, the REPORT set unless --set tuning): sentences with a
0.6-1.0 s pause after an unfinished clause, complete questions, backchannels at different points
of an answer, real interruptions. With --calls N the items are dealt to N simultaneous calls.
Measured at the simulated caller (voicecall/sim/client.py) and from the server's call records:

  talk-over        the agent's audio arrived during a paused caller's pause or second half
  answered <=1.5s  a paused utterance answered within 1.5 s of its real end (and that time, p50 / max:
                   a long wait ends with a reply prepared stt.vad.speculative_lead_ms before it)
  joined           talked over, then the caller went on: one caller turn, one reply (`went_on`
                   events; call.went_on_window_ms)
  backchannel      resumed (its stop followed by a `backchannel` event: no caller turn for it, no
                   reply to it), or never stopped (the VAD heard no onset: the answer played on);
                   the silence from the end of the caller's "uh-huh" to the answer's audio arriving
                   again, ms
  interruption     taken for a backchannel (its stop followed by a `backchannel` event: the answer
                   resumed and the caller's words went unanswered); caller speech onset -> `clear`
                   arrived (the audio stops there), ms; of it, how late the server's VAD placed the
                   onset in the caller's audio (`barge_in_stop` events), and the server's split
                   (/metrics voicecall_barge_in_stop_seconds): the onset frame's arrival -> stt
                   onset (min_speech_ms included), then -> clear sent
  voice-to-voice   complete questions: end of caller speech -> first agent audio arrived, ms
  endpoint wait    speech end -> turn end (records), ms; Smart Turn ms per check (records); turns
                   ended after a second look at their last pause (stt.vad.second_look_ms)
  speculative      replies prepared at a pause that were used / started (records)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed

from voicecall.cli.line_options import add_line_arguments, check_line_arguments, line_for
from voicecall.config import load_config
from voicecall.percentiles import percentile
from voicecall.sim.client import SimulatedCall
from voicecall.sim.phone_line import PhoneLine, phone_line
from voicecall.sim.speech import utterance
from voicecall.sim.turn_callers import VOICES, CallerLine, caller_set, parse_voices
from voicecall.twilio.protocol import OUTBOUND_DECODER, OutMedia

LONG_QUESTION = "What are your opening hours?"  # a ~9 s answer to talk over
BACKCHANNEL_AT_MS = (1000, 2500, 4000, 5500)  # into the answer


def pct(values: list[float], q: float) -> float | None:
    value = percentile(values, q)
    return None if math.isnan(value) else round(value, 1)


class TimedCall(SimulatedCall):
    """A simulated call that also keeps when each agent media frame arrived."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.media_ns: list[int] = []

    def _on_message(self, raw: str | bytes, now: int) -> None:
        if isinstance(raw, str) and '"media"' in raw[:40]:
            try:
                if isinstance(OUTBOUND_DECODER.decode(raw), OutMedia):
                    self.media_ns.append(now)
            except Exception:  # noqa: BLE001 - the base class reports protocol errors
                pass
        super()._on_message(raw, now)

    def media_between(self, a_ns: int, b_ns: int) -> list[int]:
        return [t for t in self.media_ns if a_ns <= t < b_ns]

    async def quiet(self, quiet_ms: int = 600, limit_s: float = 30.0) -> None:
        """Silence until no agent audio has been due for `quiet_ms` (its reply played out)."""
        end = time.monotonic_ns() + int(limit_s * 1e9)
        while time.monotonic_ns() < end:
            if time.monotonic_ns() - max(self.buffer.play_end_ns, self.media_ns[-1] if self.media_ns else 0) \
                    > quiet_ms * 1_000_000:
                return
            await self.silence(100)


@dataclass
class Item:
    kind: str  # paused | complete | backchannel | interruption
    line: CallerLine
    at_ms: int = 0  # backchannel / interruption: ms into the answer
    result: dict[str, Any] = field(default_factory=dict)


async def run_item(call: TimedCall, item: Item, question: Any) -> None:
    await call.quiet()
    await call.silence(400)
    r = item.result
    if item.kind in ("paused", "complete"):
        start, _ = await call.stream_audio(item.line.mulaw)
        end_ns = start + item.line.speech_end_ms * 1_000_000
        deadline = time.monotonic() + 8
        while not any(t >= end_ns for t in call.media_ns[-5:]) and time.monotonic() < deadline:
            await call.silence(20)  # the answer has not started yet
        await call.quiet(quiet_ms=800, limit_s=15)
        after = [t for t in call.media_ns if t >= end_ns]
        r["v2v_ms"] = round((after[0] - end_ns) / 1e6, 1) if after else None
        if item.kind == "paused":
            pause_ns = start + item.line.pause_start_ms * 1_000_000
            r["talked_over"] = bool(call.media_between(pause_ns, end_ns))
        return
    # backchannel / interruption: ask the long question, talk over its answer
    before = len(call.media_ns)
    q_start, _ = await call.stream_audio(question.mulaw)
    deadline = time.monotonic() + 10
    while len(call.media_ns) == before and time.monotonic() < deadline:
        await call.silence(20)
    if len(call.media_ns) == before:
        r["error"] = "no answer to talk over"
        return
    answer_ns = call.media_ns[before]
    while time.monotonic_ns() < answer_ns + item.at_ms * 1_000_000:
        await call.silence(20)
    clears = len(call.clear_ns)
    r["speech_media_ms"] = call.next_media_ms + item.line.speech_start_ms  # where the words begin, in media time
    start, _ = await call.stream_audio(item.line.mulaw)
    onset = start + item.line.speech_start_ms * 1_000_000
    later = [t for t in call.clear_ns[clears:] if t >= start]
    r["stop_ms"] = round((later[0] - onset) / 1e6, 1) if later else None
    await call.quiet(quiet_ms=800, limit_s=25)
    if item.kind == "backchannel" and later:
        end_ns = start + item.line.speech_end_ms * 1_000_000
        again = [t for t in call.media_ns if t >= end_ns]
        r["resume_gap_ms"] = round((again[0] - end_ns) / 1e6, 1) if again else None


async def run_call(url: str, items: list[Item], line: PhoneLine | None = None) -> tuple[TimedCall, list[Item]]:
    call = TimedCall(url, line=line)
    question = utterance(LONG_QUESTION)
    assert await call.place() == 200, "webhook refused the call"
    await call.connect()
    await call.silence(600)
    for n, item in enumerate(items):
        try:
            await run_item(call, item, question)
        except ConnectionClosed as e:  # the agent hung up (a line misheard as "goodbye"): the rest go unasked
            print(f"the agent ended the call after {n} of {len(items)} items ({e.rcvd.reason if e.rcvd else e})",
                  flush=True)
            item.result["call_ended"] = True
            await call.close()
            return call, items[: n + 1]
    await call.silence(500)
    await call.stop()
    await call.close()
    return call, items


def records_of(url: str, call_sid: str) -> tuple[list[dict], list[dict]]:
    """The call's turns and events from the server's records (once the call has ended)."""
    from voicecall.records import call_turns, find_call
    from voicecall.storage.engine import connect

    db = connect(url, readonly=True)
    try:
        call = None
        for _ in range(50):
            call = find_call(db, call_sid)
            if call is not None and call["ended_at"]:
                break
            time.sleep(0.1)
        assert call is not None, f"no record for {call_sid}"
        events = db.query("SELECT kind, detail FROM call_events WHERE call_id = ? ORDER BY id", (call["id"],))
        return call_turns(db, call["id"]), events
    finally:
        db.close()


_WORD = re.compile(r"[a-z0-9']+")


def _stops(events: list[dict]) -> list[tuple[dict, bool]]:
    """Each `barge_in_stop` event's detail, and whether the sound that caused it was then taken for
    a backchannel (a `backchannel` event before the next stop): the answer resumed."""
    out: list[tuple[dict, bool]] = []
    for e in events:
        if e["kind"] == "barge_in_stop":
            out.append((json.loads(e["detail"]), False))
        elif e["kind"] == "backchannel" and out:
            out[-1] = (out[-1][0], True)
    return out


def _joined(items: list[Item], turns: list[dict], events: list[dict]) -> int:
    """Talked-over paused lines that became one caller turn: a `went_on` event ("turn A went on
    as turn B") whose caller turn B holds a third of the line's words or more. Counting the events alone
    would also count a question asked right after a misjudged backchannel's reply began."""
    targets = {int(e["detail"].rsplit(" ", 1)[-1]) for e in events if e["kind"] == "went_on"}
    heard = [set(_WORD.findall(t["text"].lower())) for t in turns if t["role"] == "caller" and t["turn_id"] in targets]
    count = 0
    for it in items:
        if it.kind == "paused" and it.result.get("talked_over"):
            words = set(_WORD.findall(it.line.text.lower()))
            count += any(len(words & h) >= len(words) / 3 for h in heard)  # espeak is heard badly
    return count


def bench(url: str, db: str, calls: int, items: list[Item], line: argparse.Namespace) -> dict[str, Any]:
    """`items` dealt to `calls` simultaneous calls over the phone line `line` describes (the
    options of voicecall/cli/line_options.py); the figures of the module docstring."""
    n = len(items)
    dealt = [items[i * n // calls:(i + 1) * n // calls] for i in range(calls)]  # each gets every kind

    async def main() -> list[tuple[TimedCall, list[Item]]]:
        return await asyncio.gather(*(run_call(url, part, line_for(line, seed=k))
                                      for k, part in enumerate(dealt)))

    load = os.getloadavg()
    stops_before = barge_in_stop_totals(url)
    t0 = time.monotonic()
    results = asyncio.run(main())
    server_stops = {part: (total[0] - stops_before.get(part, (0.0, 0))[0], total[1] - stops_before.get(part, (0.0, 0))[1])
             for part, total in barge_in_stop_totals(url).items()}
    out: dict[str, Any] = {"calls": calls, "noise_dbfs": line.noise_dbfs, "level_db": line.level_db, "band": line.band,
                           "echo_db": line.echo_db, "echo_delay_ms": line.echo_delay_ms if line.echo_db is not None else None,
                           "load_before": [round(x, 2) for x in load], "wall_s": 0.0}
    paused, complete, backch, inter = [], [], [], []
    end_waits, checks, spec = [], [], {"started": 0, "used": 0, "discarded": 0}
    turn_ends = looked = 0
    backchannels = extra_turns = heard_whole = joined = 0
    for call, its in results:
        turns, events = records_of(db, call.report.call_sid)
        for it in its:
            {"paused": paused, "complete": complete, "backchannel": backch, "interruption": inter}[it.kind].append(it)
        callers = [t for t in turns if t["role"] == "caller"]
        questions = sum(1 for it in its if it.kind in ("paused", "complete", "interruption")) + \
            sum(1 for it in its if it.kind in ("backchannel", "interruption"))  # the long question each time
        extra_turns += max(0, len(callers) - questions)
        n_bc = sum(1 for it in its if it.kind == "backchannel")
        backchannels += n_bc
        joined += _joined(its, turns, events)
        # the long answers talked over: heard whole = after a backchannel (resumed, or never stopped)
        long_answers = [t for t in turns if t["role"] == "agent" and t["text"].startswith("We're open Monday")]
        heard_whole += min(n_bc, sum(1 for t in long_answers if not t["interrupted"]))
        for t in turns:
            if t["role"] == "agent" and t.get("speech_end_ns") and t.get("turn_end_ns"):
                end_waits.append((t["turn_end_ns"] - t["speech_end_ns"]) / 1e6)
        stops = _stops(events)
        for it in its:  # the server's onset for each talked-over line: how late its VAD saw the words
            at = it.result.get("speech_media_ms")
            near = [st for st in stops if at is not None and -500 <= st[0]["onset_media_ms"] - at <= 2000]
            if near:
                it.result["onset_late_ms"] = near[0][0]["onset_media_ms"] - at
                it.result["server_detect_ms"] = near[0][0]["detect_ms"]
                it.result["resumed"] = near[0][1]
        for e in events:
            if e["kind"] == "endpoint":
                d = json.loads(e["detail"])
                turn_ends += 1
                looked += bool(d.get("second_look"))
                if d["check_ms"] > 0:
                    checks.append(d["check_ms"])
            elif e["kind"] == "speculative":
                outcome = e["detail"].split()[0]  # "used for turn N" / "discarded turn N: why"
                spec[outcome] = spec.get(outcome, 0) + 1
        spec["started"] = spec["used"] + spec["discarded"]
    out["wall_s"] = round(time.monotonic() - t0, 1)
    out["load_after"] = [round(x, 2) for x in os.getloadavg()]
    v2v = [it.result["v2v_ms"] for it in complete if it.result.get("v2v_ms") is not None]
    paused_v2v = [it.result["v2v_ms"] for it in paused if it.result.get("v2v_ms") is not None]
    out.update({
        "paused": len(paused),
        "talk_over": sum(it.result.get("talked_over", False) for it in paused),
        "talked_over_texts": [it.line.text for it in paused if it.result.get("talked_over")],
        "talked_over_joined": joined,
        "paused_answered_1500ms": sum(1 for it in paused if (it.result.get("v2v_ms") or 1e9) <= 1500),
        "paused_answer_p50_ms": pct(paused_v2v, 50), "paused_answer_max_ms": max(paused_v2v) if paused_v2v else None,
        "complete": len(complete), "v2v_p50_ms": pct(v2v, 50), "v2v_p95_ms": pct(v2v, 95),
        "v2v_max_ms": max(v2v) if v2v else None,
        "backchannels": backchannels, "backchannels_resumed": sum(bool(it.result.get("resumed")) for it in backch),
        "answers_heard_whole": heard_whole,
        # no clear at all: the VAD let it pass (no onset), the answer played on
        "backchannels_never_stopped": sum(1 for it in backch if it.result.get("stop_ms") is None),
        # the dead air a caller sits through after their "uh-huh" before the answer goes on
        "resume_gap_p50_ms": pct(gaps := [it.result["resume_gap_ms"] for it in backch
                                          if it.result.get("resume_gap_ms") is not None], 50),
        "resume_gap_max_ms": max(gaps, default=None),
        "extra_caller_turns": extra_turns,
        "interruptions": len(inter),
        # a real interruption the server took for a backchannel or a sound with no words: not answered
        "interruptions_resumed": sum(bool(it.result.get("resumed")) for it in inter),
        "stop_p50_ms": pct([it.result["stop_ms"] for it in inter if it.result.get("stop_ms") is not None], 50),
        "stop_max_ms": max([it.result["stop_ms"] for it in inter if it.result.get("stop_ms") is not None],
                           default=None),
        # of it: the server's VAD onset after the words began (media time), then its min_speech_ms + hops
        "onset_late_p50_ms": pct([it.result["onset_late_ms"] for it in inter + backch if "onset_late_ms" in it.result], 50),
        "onset_late_max_ms": max([it.result["onset_late_ms"] for it in inter + backch if "onset_late_ms" in it.result],
                                 default=None),
        # the server's own split of every stop over the agent (interruptions and backchannels alike)
        "stop_detect_mean_ms": round(server_stops["detect"][0] / server_stops["detect"][1] * 1e3, 1) if server_stops.get("detect", (0, 0))[1] else None,
        "stop_deliver_mean_ms": round(server_stops["deliver"][0] / server_stops["deliver"][1] * 1e3, 1) if server_stops.get("deliver", (0, 0))[1] else None,
        "endpoint_p50_ms": pct(end_waits, 50), "endpoint_p95_ms": pct(end_waits, 95),
        "smart_turn_check_p50_ms": pct(checks, 50), "smart_turn_check_p95_ms": pct(checks, 95),
        "turn_ends": turn_ends, "second_looks": looked,
        "speculative": spec,
        "speculative_hit_rate": round(spec["used"] / spec["started"], 2) if spec["started"] else None,
        "items": [{"kind": it.kind, "voice": it.line.voice, "text": it.line.text, **it.result}
                  for _, its in results for it in its],
    })
    return out


def barge_in_stop_totals(url: str) -> dict[str, tuple[float, int]]:
    """The server's `voicecall_barge_in_stop_seconds` sum and count by part, from /metrics ({} if unreadable)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:  # noqa: S310 - the server under test
            text = resp.read().decode()
    except OSError:
        return {}
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "voicecall_barge_in_stop_seconds":
            continue
        for sample in family.samples:
            part = sample.labels.get("part", "")
            if sample.name.endswith("_sum"):
                sums[part] = sample.value
            elif sample.name.endswith("_count"):
                counts[part] = int(sample.value)
    return {part: (sums.get(part, 0.0), counts.get(part, 0)) for part in counts}


def signals(set_name: str, config: str, voices: list[tuple[str, float]] | None = None,
            noise_dbfs: float | None = None, level_db: float = 0.0, band: bool = False) -> dict[str, Any]:
    """Each end-of-turn signal alone and combined, offline, where the stt worker decides: `settle_ms`
    into every pause of every paused line (truth: unfinished) and after every complete question
    (truth: finished), and where the worker would, again `second_look_ms` into it; decoded as the
    worker decodes (its engine and window, from `config`), over the phone line `noise_dbfs`,
    `level_db` and `band` make (voicecall/sim/phone_line.py)."""
    from ipc.audio import ulaw_decode
    from voicecall.sim.speech import mulaw_to_16k
    from workers.stt.endpointing import (
        Completeness,
        completeness,
        required_silence_ms,
        second_look_reading,
        wants_second_look,
    )
    from workers.stt.smart_turn import SmartTurn
    from workers.stt.whisper import WhisperEngine

    stt = load_config(config).stt
    engine, model, cfg = WhisperEngine.for_config(stt, threads=1, decoders=1), SmartTurn.load(), stt.vad
    rows = []
    points = []  # (line, the pause's (start, end) or None for the end of a complete question, its number)
    for ln in caller_set(set_name, ("paused", "complete"), voices=voices):
        points += [(ln, p, i + 1) for i, p in enumerate(ln.pauses)] if ln.kind == "paused" else [(ln, None, 0)]
    mixed: dict[int, bytes] = {}
    for ln, at, nth in points:
        if id(ln) not in mixed:
            line = phone_line(noise_dbfs, level_db, seed=len(mixed), band=band)
            mixed[id(ln)] = ln.mulaw if line is None else line.mix(ln.mulaw)
        mulaw = mixed[id(ln)]
        cut = (at[0] if at else ln.speech_end_ms) + cfg.settle_ms
        heard = engine.transcribe(mulaw_to_16k(mulaw[max(0, ln.speech_start_ms - cfg.prefix_padding_ms) * 8: cut * 8]))
        text = heard.text
        t0 = time.perf_counter()
        prob = model.probability_8k(ulaw_decode(mulaw[: cut * 8]))
        ms = (time.perf_counter() - t0) * 1e3
        done = ln.kind == "complete"
        pause = at[1] - at[0] if at else 0
        combined = first = required_silence_ms(cfg, text, prob)
        rules = required_silence_ms(cfg, text, None)
        look = cfg.second_look_ms
        looked = combined > look and (done or pause > look) and wants_second_look(cfg, text, combined)
        if looked:  # the worker's second look (stt.vad.second_look_ms): both signals again, later in the pause
            cut2 = (at[0] if at else ln.speech_end_ms) + look
            look_text = engine.transcribe(mulaw_to_16k(mulaw[max(0, ln.speech_start_ms - cfg.prefix_padding_ms) * 8: cut2 * 8])).text
            look_prob = model.probability_8k(ulaw_decode(mulaw[: cut2 * 8]))
            weighed, weighed_prob = second_look_reading(text, prob, look_text, look_prob)
            combined = max(look, required_silence_ms(cfg, weighed, weighed_prob))
        rows.append({"kind": ln.kind, "voice": ln.voice, "text": text, "p_complete": round(prob, 3), "check_ms": round(ms, 1),
                     "pause_ms": pause if not done else None, "pause_no": nth or None,
                     "avg_logprob": round(heard.avg_logprob, 2),
                     "model_ok": (prob >= cfg.turn_complete_prob) == done,
                     "rules_ok": (completeness(text) is Completeness.COMPLETE) == done,
                     "rules_wait_ms": rules, "first_look_wait_ms": first, "combined_wait_ms": combined,
                     "second_look": {"text": look_text, "p_complete": round(look_prob, 3)} if looked else None,
                     # unfinished: right when the wait outlasts the pause; finished: when it is short
                     "rules_talk_over": (not done) and rules < pause, "combined_talk_over": (not done) and combined < pause})
        print(f"{ln.kind:8}{nth or '':>2} {ln.voice:6} P={prob:.3f} wait {combined:4} ms (rules {rules:4})  {text!r}"
              + (f"  second look: P={look_prob:.3f} {look_text!r} (first {first} ms)" if looked else ""))
    n = len(rows)
    paused = [r for r in rows if r["kind"] == "paused"]
    done = [r for r in rows if r["kind"] == "complete"]
    return {
        "set": set_name, "noise_dbfs": noise_dbfs, "level_db": level_db, "band": band, "voices": [v if k == 1.0 else f"{v}@{k}" for v, k in voices or VOICES[set_name]], "n": n, "model_accuracy": round(sum(r["model_ok"] for r in rows) / n, 2),
        "rules_accuracy": round(sum(r["rules_ok"] for r in rows) / n, 2),
        "talk_over_rules_alone": sum(r["rules_talk_over"] for r in paused),
        "talk_over_combined": sum(r["combined_talk_over"] for r in paused), "paused": len(paused),
        "complete_wait_p50_rules_ms": statistics.median(r["rules_wait_ms"] for r in done) if done else None,
        "complete_wait_p50_combined_ms": statistics.median(r["combined_wait_ms"] for r in done) if done else None,
        "complete_waits_over_500ms": sum(r["combined_wait_ms"] > 500 for r in done),
        "complete_waits_over_500ms_first_look": sum(r["first_look_wait_ms"] > 500 for r in done),
        "talk_over_first_look": sum((r["first_look_wait_ms"] < r["pause_ms"]) for r in paused),
        "second_looks": sum(r["second_look"] is not None for r in rows),
        "check_ms_p50": pct([r["check_ms"] for r in rows], 50), "rows": rows,
    }


def print_table(runs: list[dict[str, Any]]) -> None:
    def f(v: Any) -> str:
        return "-" if v is None else str(v)

    print(f"\n{'':34}" + "".join(f"{str(r['calls']) + ' call' + ('s' if r['calls'] > 1 else ''):>16}" for r in runs))
    rows = [
        ("talk-over (paused utterances)", lambda r: f"{r['talk_over']}/{r['paused']}"),
        ("  then joined: one turn, one reply", lambda r: f"{r.get('talked_over_joined', 0)}/{r['talk_over']}"),
        ("paused answered <= 1.5 s", lambda r: f"{r['paused_answered_1500ms']}/{r['paused']}"),
        ("  real end -> answer p50 / max ms", lambda r: f"{f(r.get('paused_answer_p50_ms'))} / {f(r.get('paused_answer_max_ms'))}"),
        ("backchannels: stopped+resumed", lambda r: f"{r['backchannels_resumed']}/{r['backchannels']}"),
        ("  never stopped (no onset)", lambda r: f"{r.get('backchannels_never_stopped', 0)}/{r['backchannels']}"),
        ("  answer heard whole", lambda r: f"{r['answers_heard_whole']}/{r['backchannels']}"),
        ("  silence, then resumed p50/max ms", lambda r: f"{f(r.get('resume_gap_p50_ms'))} / {f(r.get('resume_gap_max_ms'))}"),
        ("caller turns beyond the questions", lambda r: f(r["extra_caller_turns"])),
        ("interruptions taken for backchannels", lambda r: f"{r.get('interruptions_resumed', '-')}/{r['interruptions']}"),
        ("interruption stop p50 / max ms", lambda r: f"{f(r['stop_p50_ms'])} / {f(r['stop_max_ms'])}"),
        ("  words -> VAD onset p50 / max ms", lambda r: f"{f(r.get('onset_late_p50_ms'))} / {f(r.get('onset_late_max_ms'))}"),
        ("  server: stt onset / to clear, mean", lambda r: f"{f(r.get('stop_detect_mean_ms'))} / {f(r.get('stop_deliver_mean_ms'))}"),
        ("v2v complete p50 / p95 ms", lambda r: f"{f(r['v2v_p50_ms'])} / {f(r['v2v_p95_ms'])}"),
        ("endpoint wait p50 / p95 ms", lambda r: f"{f(r['endpoint_p50_ms'])} / {f(r['endpoint_p95_ms'])}"),
        ("Smart Turn check p50 / p95 ms", lambda r: f"{f(r['smart_turn_check_p50_ms'])} / {f(r['smart_turn_check_p95_ms'])}"),
        ("  turns ended after a second look", lambda r: f"{r.get('second_looks', '-')}/{r.get('turn_ends', '-')}"),
        ("speculative used / started", lambda r: f"{r['speculative']['used']}/{r['speculative']['started']}"),
        ("line noise dBFS / caller level dB", lambda r: f"{f(r.get('noise_dbfs'))} / {r.get('level_db', 0.0):g}"),
        ("caller in the telephone band", lambda r: "yes" if r.get("band") else "no"),
        ("line echo dB / delay ms", lambda r: f"{f(r.get('echo_db'))} / {f(r.get('echo_delay_ms'))}"),
        ("load avg before -> after (1 min)", lambda r: f"{r['load_before'][0]} -> {r['load_after'][0]}"),
    ]
    for label, get in rows:
        print(f"{label:34}" + "".join(f"{get(r):>16}" for r in runs))


def make_items(set_name: str, voices: list[tuple[str, float]] | None = None) -> list[Item]:
    lines = caller_set(set_name, voices=voices)
    items = []
    counts: dict[str, int] = {}
    for ln in lines:
        i = counts[ln.kind] = counts.get(ln.kind, 0) + 1
        # interruptions past call.went_on_window_ms (1.5 s): sooner, the caller's words join their question
        at = BACKCHANNEL_AT_MS[i % len(BACKCHANNEL_AT_MS)] if ln.kind == "backchannel" else 2000 + 250 * (i % 4)
        items.append(Item(ln.kind, ln, at_ms=at))
    # interleave kinds so every call of a --calls N run gets some of each
    order = {"paused": 0, "complete": 1, "backchannel": 2, "interruption": 3}
    rank, seen = [], {}
    for it in items:
        seen[it.kind] = seen.get(it.kind, 0) + 1
        rank.append((seen[it.kind], order[it.kind]))
    return [it for _, it in sorted(zip(rank, items, strict=True), key=lambda x: x[0])]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/cpu.toml", help="the running server's config (url, records db)")
    p.add_argument("--calls", type=int, nargs="+", default=[1, 4], help="runs: simultaneous calls in each")
    p.add_argument("--set", default="report", choices=["report", "tuning", "dev", "twice"],
                   help="caller lines (dev: paused and complete only; twice: callers who pause twice in a "
                        "sentence, each pause judged; both for --signals)")
    p.add_argument("--voices", default="",
                   help="speak the set in these voices instead of its own, taken in turn: e.g. "
                        "'espeak:en-gb,piper@0.9' (piper, espeak or espeak:VOICE from `espeak-ng --voices`; "
                        "@N: length scale, above 1 slower). The rules were tuned on piper: this checks other voices")
    add_line_arguments(p)
    p.add_argument("--limit", type=int, default=0, help="only the first N items (a quick look)")
    p.add_argument("--signals", action="store_true", help="offline: each end-of-turn signal alone and combined")
    p.add_argument("--json", default="", help="write the results here")
    args = p.parse_args(argv)
    if args.set in ("dev", "twice") and not args.signals:
        p.error(f"the {args.set} set has no backchannels or interruptions: use it with --signals")
    try:
        voices = parse_voices(args.voices) if args.voices else None
    except ValueError as e:
        p.error(f"--voices: {e}")
    check_line_arguments(p, args)
    if args.signals and args.echo_db is not None:
        p.error("--echo-db: --signals is offline, with no agent audio to echo")
    if args.signals:
        result: Any = signals(args.set, args.config, voices, args.noise_dbfs, args.level_db, args.band)
        print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))
    else:
        cfg = load_config(args.config)
        url = f"http://{cfg.server.host}:{cfg.server.port}"
        items = make_items(args.set, voices)
        if args.limit:
            items = items[: args.limit]
        result = []
        for n in args.calls:
            print(f"{n} call(s), {len(items)} items ...", flush=True)
            result.append(bench(url, cfg.records.url, n, [Item(i.kind, i.line, i.at_ms) for i in items], args))
        print_table(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0

