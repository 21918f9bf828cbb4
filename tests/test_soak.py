"""The chaos soak in CI: 2 minutes, 4 callers, a fault every 20 s, generous bounds.

The long run (README "Faults and shutdown") uses the same code: `voicecall soak --calls 8 --minutes 10`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from voicecall.sim.soak import SoakSettings, run_soak, table, waits_through_faults
from voicecall.sim.soak_faults import FaultResult


def test_waits_are_given_to_the_faults_they_lived_through() -> None:
    kill = FaultResult(at_s=10.0, fault="kill:llm", recovery_s=5.0, done_s=15.0)
    # pending when it struck (audio 0.6 s after); asked during it (1.5 s wait); after it; before it
    quiet = waits_through_faults([(109.0, 1.6, "a"), (112.0, 1.5, "b"), (116.0, 0.7, "c"), (100.0, 0.8, "d")],
                                 [kill], t0=100.0)
    assert kill.waits_s == pytest.approx([0.6, 1.5]) and quiet == [0.7, 0.8]
    assert kill.as_dict()["heard_within_1s"] == 1 and kill.as_dict()["longest_wait_s"] == 1.5
    assert kill.as_dict()["slowest_question"] == "b"


@pytest.mark.slow
def test_two_minute_soak_with_faults_loses_nothing_and_leaks_nothing(tmp_path: Path) -> None:
    settings = SoakSettings(calls=4, minutes=2.0, fault_every_s=20.0, workdir=tmp_path, warmup_s=20.0,
                            faults=("kill:stt", "stop:tts", "kill:llm", "full_ring", "kill:tts"))
    report = run_soak(settings)
    print(table(report))
    assert report["exit_code"] == 0
    assert not report["leaked_processes"] and not report["leaked_segments"], report
    assert report["calls_left_open"] == 0
    assert report["calls_completed"] >= 8, report
    assert len(report["faults"]) >= 4 and all(f["recovery_s"] is not None for f in report["faults"]), report["faults"]
    assert report["restarts"]["telephony"] == 0
    # Every caller turn spoken is recorded, or answered with "missed that, say it again" (stt killed
    # mid-word), or joined to the turn before (a barge-in right after the answer began).
    spoken = report["caller_turns_spoken"]
    recorded = report["caller_turns_recorded"] + report["missed_words_asked"] + report["caller_turns_joined"]
    assert recorded >= spoken - 1, report  # one utterance may straddle the end of a call cut by a restart
    assert report["longest_silence_s"] < 20.0, report  # nobody waited out the reply limit in silence
