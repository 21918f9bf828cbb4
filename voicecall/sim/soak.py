"""A chaos soak: N simulated callers for M minutes against a voicecall started here, with faults.

    LocalSystem (run.py, own port and call db, small stt_in ring)
      ├─ N caller loops: call after call, each a random mix of questions, barge-ins,
      │  backchannels, DTMF, malformed frames, and sometimes a hang-up mid-sentence
      ├─ a fault every `fault_every_s` (voicecall/sim/soak_faults.py), in a fixed cycle
      └─ at the end: SIGTERM, then what was left (processes, segments) and the call records

The report compares what the callers said and heard with what the records hold, counts the
apologies, the longest silence a caller sat through after finishing a question, telephony's RSS
growth per 1000 calls (summed over its incarnations, each from warm to its end; the whole tree's
RSS too, though workers restart under it), restarts per role and each fault's recovery time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from websockets.exceptions import ConnectionClosed

from voicecall.percentiles import summary
from voicecall.sim.client import SimulatedCall
from voicecall.sim.questions import BARGE_IN, QUESTIONS
from voicecall.sim.soak_faults import DEFAULT_CYCLE, FaultInjector, FaultResult
from voicecall.sim.system import LocalSystem

BACKCHANNEL = "Uh huh, okay."
ACTIONS = ("question", "question", "barge_in", "backchannel", "dtmf", "malformed")
REPLY_LIMIT_S = 20.0  # a caller who hears nothing for this long after a question gives up waiting
MALFORMED = ('{"event": "media"}', "not json", '{"event": "dance"}', '{"event": "media", "streamSid": "MZx", '
             '"media": {"payload": "%%%"}}', '[1, 2]', '{"event": "mark", "mark": {"name": 5}}', "")
#: The stt input ring a soak runs with: small enough that a 4 s stall of stt overflows it at 8 calls.
SOAK_TOML = "[ipc]\naudio_in_ring_bytes = 131072\n"


@dataclass
class SoakSettings:
    calls: int = 8
    minutes: float = 2.0
    fault_every_s: float = 60.0
    faults: tuple[str, ...] = DEFAULT_CYCLE
    seed: int = 1
    base_config: str = "configs/cpu.toml"
    workdir: Path = Path("data/soak")
    warmup_s: float = 30.0  # RSS growth is measured from here on


@dataclass
class CallerStats:
    calls_started: int = 0
    calls_completed: int = 0  # reached its end (stop, or the agent's goodbye)
    calls_cut: int = 0  # the connection died under it (a telephony restart) or the call failed
    refused: int = 0
    hangups_mid_sentence: int = 0
    caller_turns: int = 0  # questions, barge-ins, DTMF entries spoken in full
    barge_ins: int = 0
    backchannels: int = 0
    malformed_frames: int = 0
    replies_heard: int = 0
    silences_s: list[float] = field(default_factory=list)
    #: (monotonic time the question ended, seconds until the answer's first audio, the question) each
    waits: list[tuple[float, float, str]] = field(default_factory=list)
    quiet_waits_s: list[float] = field(default_factory=list)  # those no fault touched: load alone
    call_sids: list[str] = field(default_factory=list)
    spoken_by_call: dict[str, int] = field(default_factory=dict)  # caller turns spoken in full, per call sid
    cut_calls: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)


class Speech:
    """Every utterance a soak caller may say, synthesized once (Piper)."""

    def __init__(self) -> None:
        from voicecall.sim.speech import utterance

        self.questions = [utterance(q).mulaw for q in QUESTIONS]
        self.texts = dict(zip(self.questions, QUESTIONS, strict=True))  # what each question says
        self.barge_in = utterance(BARGE_IN).mulaw
        self.texts[self.barge_in] = BARGE_IN
        self.backchannel = utterance(BACKCHANNEL, lead_ms=200, trail_ms=200).mulaw


class SoakCaller:
    """One caller placing call after call until the soak ends."""

    def __init__(self, url: str, speech: Speech, rng: random.Random, stats: CallerStats,
                 session: aiohttp.ClientSession) -> None:
        self.url, self.speech, self.rng, self.stats, self.session = url, speech, rng, stats, session

    async def run_until(self, end: float) -> None:
        while time.monotonic() < end:
            await self.one_call()

    async def one_call(self) -> None:
        call = SimulatedCall(self.url, session=self.session)
        stats = self.stats
        try:
            async with asyncio.timeout(240):
                if await call.place() != 200 or not call.stream_url:
                    stats.refused += 1
                    await asyncio.sleep(1.0)
                    return
                stats.calls_started += 1
                stats.call_sids.append(call.call_sid)
                await call.connect()
                await call._wait_for_quiet(quiet_ms=400, limit_s=15.0)  # the greeting
                for _ in range(self.rng.randint(1, 3)):
                    await getattr(self, "_" + self.rng.choice(ACTIONS))(call)
                if self.rng.random() < 0.2:
                    await self._hang_up_mid_sentence(call)
                else:
                    await call.stop()
                stats.calls_completed += 1
        except (ConnectionClosed, OSError, TimeoutError, aiohttp.ClientError) as exc:
            stats.calls_cut += 1
            stats.cut_calls.add(call.call_sid)
            stats.errors.append(f"{type(exc).__name__}: {exc}"[:200])
            await asyncio.sleep(0.5)
        finally:
            with contextlib.suppress(Exception):
                await call.close()
            stats.replies_heard += len(call.report.response_ms)

    async def _ask(self, call: SimulatedCall, audio: bytes) -> bool:
        """Say `audio` and wait for the answer to start; True if it did."""
        heard, marks = len(call.report.response_ms), len(call.report.answer_heard_ms)
        await call._speak(audio, [])
        ended = time.monotonic()
        self._spoke(call)
        waited = 0.0
        while len(call.report.response_ms) == heard and waited < REPLY_LIMIT_S:
            await call.silence(100)
            waited += 0.1
        answered = len(call.report.response_ms) > heard
        wait = call.report.response_ms[-1] / 1000 if answered else REPLY_LIMIT_S
        self.stats.silences_s.append(wait)
        self.stats.waits.append((ended, wait, self.speech.texts.get(audio, "")))
        # "One moment." is audio but not the answer (it carries no mark): a person waits on for the
        # sentence that does, rather than taking the filler's end for the answer's and talking on.
        while answered and len(call.report.answer_heard_ms) == marks and waited < REPLY_LIMIT_S:
            await call.silence(100)
            waited += 0.1
        if answered and len(call.report.answer_heard_ms) == marks:
            self.stats.silences_s.append(waited)  # a filler, then nothing: the silence is the caller's wait
        return answered

    def _spoke(self, call: SimulatedCall) -> None:
        self.stats.caller_turns += 1
        self.stats.spoken_by_call[call.call_sid] = self.stats.spoken_by_call.get(call.call_sid, 0) + 1

    async def _question(self, call: SimulatedCall) -> None:
        await call.silence(self.rng.randint(300, 900))
        await self._ask(call, self.rng.choice(self.speech.questions))
        await call._wait_for_quiet(quiet_ms=400, limit_s=30.0)

    async def _barge_in(self, call: SimulatedCall) -> None:
        if await self._ask(call, self.rng.choice(self.speech.questions)):
            await call.silence(self.rng.randint(600, 1500))
            await self._ask(call, self.speech.barge_in)  # over the answer
            self.stats.barge_ins += 1
        await call._wait_for_quiet(quiet_ms=400, limit_s=30.0)

    async def _backchannel(self, call: SimulatedCall) -> None:
        if await self._ask(call, self.rng.choice(self.speech.questions)):
            await call.silence(800)
            await call.stream_audio(self.speech.backchannel)
            self.stats.backchannels += 1
        await call._wait_for_quiet(quiet_ms=400, limit_s=30.0)

    async def _dtmf(self, call: SimulatedCall) -> None:
        heard = len(call.report.response_ms)
        for digit in "12#":
            await call.send_dtmf(digit)
            await call.silence(100)
        self._spoke(call)
        waited = 0.0
        while len(call.report.response_ms) == heard and not call.server_audio.is_set() and waited < REPLY_LIMIT_S:
            await call.silence(100)
            waited += 0.1
        await call._wait_for_quiet(quiet_ms=400, limit_s=30.0)

    async def _malformed(self, call: SimulatedCall) -> None:
        assert call.ws is not None
        for _ in range(20):
            if self.rng.random() < 0.8:
                await call.send_text(self.rng.choice(MALFORMED))
            else:
                await call.ws.send(bytes([self.rng.randrange(256)]) * 7)  # a binary frame
            self.stats.malformed_frames += 1
        await call.silence(200)

    async def _hang_up_mid_sentence(self, call: SimulatedCall) -> None:
        if await self._ask(call, self.rng.choice(self.speech.questions)):
            await call.silence(self.rng.randint(200, 1200))
        self.stats.hangups_mid_sentence += 1
        await call.stop()


async def _faults(injector: FaultInjector, settings: SoakSettings, end: float, out: list[FaultResult],
                  memory: TelephonyMemory) -> None:
    i = 0
    while True:
        await asyncio.sleep(settings.fault_every_s)
        if time.monotonic() >= end or not settings.faults:
            return
        fault = settings.faults[i % len(settings.faults)]
        if fault == "kill:telephony":
            await memory.close()  # the victim's growth, up to its death
        result = await injector.inject(fault)
        result.done_s = time.monotonic() - injector.t0
        out.append(result)
        if fault == "kill:telephony":
            memory.open_after(min(settings.warmup_s, settings.fault_every_s / 2))
        i += 1


class TelephonyMemory:
    """Telephony's memory over each of its incarnations, from warm to its end.

    A killed telephony restarts small, so one reading at the start and one at the end would mix
    two processes; growth per 1000 calls is summed over whole windows of one process each. Two
    figures: RSS, and its anonymous (private heap) part, the one a per-call leak grows. RSS also
    counts shared ring pages as the rings' write positions first reach them (bounded by the rings'
    sizes, ~8.5 MB in configs/cpu.toml) and library pages as code first runs.
    """

    def __init__(self, system: LocalSystem, calls_so_far: Callable[[], int]) -> None:
        self.system = system
        self.calls_so_far = calls_so_far
        self.windows: list[dict[str, float]] = []
        #: a reading every `sample_every_s` through the run: whether growth levels off or keeps on
        self.samples: list[dict[str, float]] = []
        self._open: dict[str, float] | None = None
        self._opener: asyncio.Task[None] | None = None

    async def sample_every(self, every_s: float, t0: float) -> None:
        """Read telephony's memory every `every_s` until cancelled."""
        while True:
            await asyncio.sleep(every_s)
            mem = await asyncio.to_thread(telephony_memory_mb, self.system)
            c_heap = await asyncio.to_thread(telephony_c_heap_mb, self.system)
            self.samples.append({"min": (time.monotonic() - t0) / 60, "calls": self.calls_so_far(), **mem, **c_heap})

    def late_growth_per_1000_calls(self, key: str = "mb") -> float | None:
        """Growth over the second half of the calls, when one telephony served them all (None otherwise):
        what a long-lived process would keep adding once its allocator and caches are warm."""
        if len(self.windows) != 1 or len(self.samples) < 4:
            return None
        first = self.samples[len(self.samples) // 2 - 1]
        last = self.samples[-1]
        calls = last["calls"] - first["calls"]
        return (last[key] - first[key]) / calls * 1000 if calls > 0 and first[key] > 0 and last[key] > 0 else None

    async def open(self) -> None:
        mem = await asyncio.to_thread(telephony_memory_mb, self.system)
        self._open = {"start_mb": mem["mb"], "start_anon_mb": mem["anon_mb"], "start_calls": self.calls_so_far()}

    def open_after(self, delay_s: float) -> None:
        async def later() -> None:
            await asyncio.sleep(delay_s)
            await self.open()

        self._opener = asyncio.create_task(later())

    async def close(self) -> None:
        if self._opener is not None:  # killed again before it was warm: no window
            self._opener.cancel()
            self._opener = None
        if self._open is not None:
            mem = await asyncio.to_thread(telephony_memory_mb, self.system)
            self.windows.append({**self._open, "end_mb": mem["mb"], "end_anon_mb": mem["anon_mb"],
                                 "end_calls": self.calls_so_far()})
            self._open = None

    def growth_per_1000_calls(self, key: str = "mb") -> float | None:
        read = [w for w in self.windows if w[f"start_{key}"] > 0 and w[f"end_{key}"] > 0]  # 0: process not found
        calls = sum(w["end_calls"] - w["start_calls"] for w in read)
        return sum(w[f"end_{key}"] - w[f"start_{key}"] for w in read) / calls * 1000 if calls > 0 else None


def tree_rss_mb(pid: int) -> float:
    from voicecall.cli.simcall import tree_rss_mb as rss

    return rss(pid)


def telephony_rss_mb(system: LocalSystem) -> float:
    """RSS of telephony, the process that holds every call's state (workers restart under faults)."""
    return telephony_memory_mb(system)["mb"]


def telephony_c_heap_mb(system: LocalSystem) -> dict[str, float]:
    """glibc's account of telephony's C heap from /debug/memory?malloc=1: in use and free but kept
    (fragmentation); {} when unreadable (telephony restarting, not glibc)."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"{system.url}/debug/memory?malloc=1", timeout=2) as resp:  # noqa: S310 - our own server
            stats = json.loads(resp.read()).get("malloc") or {}
    except (OSError, ValueError):
        return {}
    return {"c_in_use_mb": stats.get("in_use_mb", 0.0), "c_free_mb": stats.get("free_kept_mb", 0.0)}


def telephony_memory_mb(system: LocalSystem) -> dict[str, float]:
    """Telephony's RSS and its anonymous, shared-memory and file parts (MB; 0 when it is not running)."""
    pid = system.pid_of("telephony")
    out = {"mb": 0.0, "anon_mb": 0.0, "shmem_mb": 0.0, "file_mb": 0.0}
    names = {"VmRSS:": "mb", "RssAnon:": "anon_mb", "RssShmem:": "shmem_mb", "RssFile:": "file_mb"}
    try:
        with open(f"/proc/{pid}/status") as f:  # Linux; psutil has no per-kind RSS
            for line in f:
                parts = line.split()
                if parts and parts[0] in names:
                    out[names[parts[0]]] = int(parts[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return out if pid else {k: 0.0 for k in out}


async def _soak(system: LocalSystem, settings: SoakSettings) -> dict[str, Any]:
    speech = Speech()
    stats = CallerStats()
    faults: list[FaultResult] = []
    t0 = time.monotonic()
    end = t0 + settings.minutes * 60
    injector = FaultInjector(system, t0)
    rng = random.Random(settings.seed)
    rss: dict[str, float] = {}
    memory = TelephonyMemory(system, lambda: stats.calls_completed + stats.calls_cut)

    async def warmup_rss() -> None:
        await asyncio.sleep(settings.warmup_s)
        rss["start_mb"] = await asyncio.to_thread(tree_rss_mb, system.proc.pid)
        rss["telephony_start_mb"] = await asyncio.to_thread(telephony_rss_mb, system)
        rss["start_calls"] = stats.calls_completed + stats.calls_cut
        await memory.open()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        callers = [SoakCaller(system.url, speech, random.Random(rng.random()), stats, session) for _ in range(settings.calls)]
        tasks = []
        for caller in callers:
            tasks.append(asyncio.create_task(caller.run_until(end)))
            await asyncio.sleep(0.5)  # a ramp, as real calls arrive
        side = [asyncio.create_task(_faults(injector, settings, end, faults, memory)), asyncio.create_task(warmup_rss()),
                asyncio.create_task(memory.sample_every(min(60.0, settings.minutes * 60 / 10), t0))]
        await asyncio.gather(*tasks)
        for task in side:
            task.cancel()
        await asyncio.gather(*side, return_exceptions=True)
        await memory.close()
    rss["end_mb"] = tree_rss_mb(system.proc.pid)
    rss["telephony_end_mb"] = telephony_rss_mb(system)
    rss["end_calls"] = stats.calls_completed + stats.calls_cut
    stats.quiet_waits_s = waits_through_faults(stats.waits, faults, t0)
    return _report(system, settings, stats, faults, rss, memory, time.monotonic() - t0)


def waits_through_faults(waits: list[tuple[float, float, str]], faults: list[FaultResult], t0: float) -> list[float]:
    """Give each fault the callers who waited for an answer while it lasted: for each, how long
    after the fault began (or after the question, if asked later) the first audio came, and the
    question. Returns the waits no fault touched."""
    quiet = []
    for ended, wait, question in waits:
        heard = ended + wait
        touched = False
        for fault in faults:
            start, over = t0 + fault.at_s, t0 + fault.done_s
            if ended <= over and heard >= start:
                fault.waits_s.append(heard - max(ended, start))
                fault.questions.append(question)
                touched = True
        if not touched:
            quiet.append(wait)
    return quiet


def _slowest(fault: dict[str, Any]) -> str:
    return f"slowest: {fault['slowest_question']!r}" if fault.get("slowest_question") else ""


def _summary(values: list[float]) -> dict[str, Any]:
    waits = summary(values, digits=2) or {"n": 0, "p50": 0.0, "p95": 0.0, "max": 0.0}
    return {"n": waits["n"], "p50_s": waits["p50"], "p95_s": waits["p95"], "max_s": waits["max"],
            "over_2s": sum(v > 2.0 for v in values)}


def _report(system: LocalSystem, settings: SoakSettings, stats: CallerStats, faults: list[FaultResult],
            rss: dict[str, float], memory: TelephonyMemory, took_s: float) -> dict[str, Any]:
    log = system.log()
    conn = sqlite3.connect(f"file:{system.db}?mode=ro", uri=True)
    sids = stats.call_sids
    marks = ",".join("?" * len(sids)) or "''"
    rows = conn.execute(f"SELECT t.role, t.text, t.turn_id, c.call_sid FROM turns t JOIN calls c ON c.id = t.call_id "
                        f"WHERE c.call_sid IN ({marks})", sids).fetchall()
    missed_by_call = dict(conn.execute(
        f"SELECT c.call_sid, count(*) FROM call_events e JOIN calls c ON c.id = e.call_id "
        f"WHERE e.kind = 'missed_words' AND c.call_sid IN ({marks}) GROUP BY c.call_sid", sids).fetchall())
    missed = sum(missed_by_call.values())
    # a barge-in right after the answer began continues the question: one record holds both
    went_on_by_call = dict(conn.execute(
        f"SELECT c.call_sid, count(*) FROM call_events e JOIN calls c ON c.id = e.call_id "
        f"WHERE e.kind = 'went_on' AND c.call_sid IN ({marks}) GROUP BY c.call_sid", sids).fetchall())
    fillers = conn.execute(f"SELECT count(*) FROM call_events e JOIN calls c ON c.id = e.call_id "
                           f"WHERE e.kind = 'wait_filler' AND c.call_sid IN ({marks})", sids).fetchone()[0]
    open_rows = conn.execute("SELECT count(*) FROM calls WHERE ended_at IS NULL").fetchone()[0]
    conn.close()
    from voicecall.config import CallConfig, load_config

    call_cfg = load_config(system.config).call if system.config.exists() else CallConfig()
    canned = (call_cfg.apology, call_cfg.missed_words)
    # A backchannel the server took for a turn is not a turn the caller meant (nor is noise).
    caller_rows = [(t, sid) for r, t, _, sid in rows if r == "caller" and not _backchannel(t)]
    agent_rows = [t for r, t, turn, _ in rows if r == "agent" and turn > 0]
    recorded_by_call: dict[str, int] = {}
    for _text, sid in caller_rows:
        recorded_by_call[sid] = recorded_by_call.get(sid, 0) + 1
    short = [{"call_sid": sid, "spoken": n, "recorded": recorded_by_call.get(sid, 0), "missed_words": missed_by_call.get(sid, 0),
              "went_on": went_on_by_call.get(sid, 0), "cut": sid in stats.cut_calls}
             for sid, n in stats.spoken_by_call.items()
             if recorded_by_call.get(sid, 0) + missed_by_call.get(sid, 0) + went_on_by_call.get(sid, 0) < n]
    growth = memory.growth_per_1000_calls()
    late = memory.late_growth_per_1000_calls()
    anon = memory.growth_per_1000_calls("anon_mb")
    anon_late = memory.late_growth_per_1000_calls("anon_mb")
    restarts = {role: len(re.findall(rf"ERROR\s+{role} died", log)) for role in ("telephony", "stt", "llm", "tts")}
    return {
        "settings": {"calls": settings.calls, "minutes": settings.minutes, "fault_every_s": settings.fault_every_s,
                     "seed": settings.seed, "config": settings.base_config, "took_s": round(took_s, 1)},
        "calls_started": stats.calls_started, "calls_completed": stats.calls_completed, "calls_cut": stats.calls_cut,
        "calls_refused": stats.refused, "hangups_mid_sentence": stats.hangups_mid_sentence,
        "caller_turns_spoken": stats.caller_turns, "caller_turns_recorded": len(caller_rows),
        "missed_words_asked": missed, "caller_turns_joined": sum(went_on_by_call.values()), "barge_ins": stats.barge_ins, "backchannels": stats.backchannels, "malformed_frames": stats.malformed_frames,
        "agent_replies_heard": stats.replies_heard, "agent_turns_recorded": len(agent_rows),
        "apologies_recorded": sum(t in canned for t in agent_rows),
        "wait_fillers_said": fillers,
        "longest_silence_s": round(max(stats.silences_s, default=0.0), 2),
        "silences_over_2s": sum(s > 2.0 for s in stats.silences_s),
        "waits_without_fault": _summary(stats.quiet_waits_s),
        "rss_mb": {k: round(v, 1) for k, v in rss.items()},
        "telephony_rss_windows": [{k: round(v, 1) for k, v in w.items()} for w in memory.windows],
        # telephony's: it holds every call's state and is not restarted unless a fault kills it
        "rss_growth_mb_per_1000_calls": None if growth is None else round(growth, 1),
        "rss_growth_late_mb_per_1000_calls": None if late is None else round(late, 1),
        # the private heap alone: what a per-call leak grows (RSS adds ring and library pages, bounded)
        "anon_growth_mb_per_1000_calls": None if anon is None else round(anon, 1),
        "anon_growth_late_mb_per_1000_calls": None if anon_late is None else round(anon_late, 1),
        "telephony_rss_samples": [{k: (v if k == "calls" else round(v, 1)) for k, v in x.items()}
                                  for x in memory.samples],
        "restarts": restarts, "calls_left_open": open_rows,
        "calls_with_unrecorded_turns": short,
        "faults": [f.as_dict() for f in faults], "errors": stats.errors[:20],
    }


_BACKCHANNEL_WORDS = frozenset(("uh", "huh", "um", "mm", "hmm", "mhm", "okay", "ok", "yeah", "yes", "right", "oh"))


def _backchannel(text: str) -> bool:
    words = re.findall(r"[a-z']+", text.lower())
    return all(w in _BACKCHANNEL_WORDS for w in words)


def admit_every_caller(config_text: str, calls: int) -> str:
    """Raise `server.max_calls` to the soak's callers: it measures faults, not capacity, and a
    refused call would test nothing."""
    return re.sub(r"^max_calls = (\d+)", lambda m: f"max_calls = {max(int(m[1]), calls)}", config_text,
                  count=1, flags=re.MULTILINE)


def run_soak(settings: SoakSettings) -> dict[str, Any]:
    """Start a system, soak it, stop it; the report includes what the stop left behind."""
    settings.workdir.mkdir(parents=True, exist_ok=True)
    system = LocalSystem(settings.workdir, extra_toml=SOAK_TOML, base=settings.base_config,
                         edit=lambda text: admit_every_caller(text, settings.calls))
    report: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 300
        while not system.ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"voicecall not ready after 300 s:\n{system.log()[-4000:]}")
            time.sleep(0.3)
        report = asyncio.run(_soak(system, settings))
    finally:
        left = system.stop()
        report["exit_code"] = left.exit_code
        report["leaked_processes"] = left.processes
        report["leaked_segments"] = left.segments
    return report


def table(report: dict[str, Any]) -> str:
    """The report as a Markdown table (README-ready)."""
    s = report["settings"]
    q = report.get("waits_without_fault") or _summary([])
    rows = [
        ("duration", f"{s['took_s'] / 60:.1f} min, {s['calls']} concurrent callers, a fault every {s['fault_every_s']:.0f} s"),
        ("calls completed / cut by a fault / refused", f"{report['calls_completed']} / {report['calls_cut']} / {report['calls_refused']}"),
        ("caller turns spoken / recorded", f"{report['caller_turns_spoken']} / {report['caller_turns_recorded']}"
                                           f" (+ {report['missed_words_asked']} 'missed that, say it again',"
                                           f" + {report.get('caller_turns_joined', 0)} joined to the turn before)"),
        ("calls with a turn not recorded (of them cut by a fault)",
         f"{len(report['calls_with_unrecorded_turns'])} ({sum(c['cut'] for c in report['calls_with_unrecorded_turns'])})"),
        ("agent replies heard / turns recorded", f"{report['agent_replies_heard']} / {report['agent_turns_recorded']}"),
        ("apologies recorded / 'one moment' fillers said", f"{report['apologies_recorded']} / {report.get('wait_fillers_said', 0)}"),
        ("barge-ins, backchannels, hang-ups mid-sentence, malformed frames",
         f"{report['barge_ins']}, {report['backchannels']}, {report['hangups_mid_sentence']}, {report['malformed_frames']}"),
        ("longest silence after a question (s)", f"{report['longest_silence_s']} ({report['silences_over_2s']} over 2 s)"),
        ("... of the waits no fault touched (load alone): p50 / p95 / max (s)",
         f"{q['p50_s']} / {q['p95_s']} / {q['max_s']} ({q['over_2s']} of {q['n']} over 2 s)"),
        ("telephony RSS growth per 1000 calls (MB)", f"{report['rss_growth_mb_per_1000_calls']} "
         f"(over {len(report['telephony_rss_windows'])} incarnation(s): "
         + ", ".join(f"{w['start_mb']} -> {w['end_mb']} MB in {w['end_calls'] - w['start_calls']:.0f} calls"
                     for w in report["telephony_rss_windows"])
         + f"; whole tree {report['rss_mb'].get('start_mb')} -> {report['rss_mb'].get('end_mb')} MB, workers restarted meanwhile)"),
        ("... over the second half of the calls (one telephony only)", str(report.get("rss_growth_late_mb_per_1000_calls"))),
        ("telephony private (anonymous) memory growth per 1000 calls (MB): whole run / second half",
         f"{report.get('anon_growth_mb_per_1000_calls')} / {report.get('anon_growth_late_mb_per_1000_calls')}"),
        ("telephony RSS (of it private, shared rings; C heap in use, free) through the run (MB at calls)",
         ", ".join(f"{x['mb']} ({x.get('anon_mb', '-')}, {x.get('shmem_mb', '-')}; {x.get('c_in_use_mb', '-')}, "
                   f"{x.get('c_free_mb', '-')}) at {x['calls']}" for x in report.get("telephony_rss_samples", [])) or "-"),
        ("restarts", ", ".join(f"{k} {v}" for k, v in report["restarts"].items())),
        ("leaked processes / segments", f"{len(report.get('leaked_processes', []))} / {len(report.get('leaked_segments', []))}"),
        ("exit code", str(report.get("exit_code"))),
    ]
    lines = ["| measure | value |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)]
    if report["faults"]:
        lines += ["", "| at (s) | fault | recovered in (s) | callers waiting: answer audio within 1 s / all, longest (s) | detail |",
                  "|---|---|---|---|---|"]
        lines += [f"| {f['at_s']} | {f['fault']} | {f['recovery_s']} | {f.get('heard_within_1s', 0)} / "
                  f"{f.get('waiting_callers', 0)}, {f.get('longest_wait_s', 0.0)} | "
                  f"{'; '.join(x for x in (f['detail'], _slowest(f)) if x)} |" for f in report["faults"]]
    return "\n".join(lines)
