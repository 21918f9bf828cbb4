"""The `voicecall` command and what the running system shows in `ps`."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.running_system import RunningSystem
from voicecall.cli import COMMANDS, load

ROOT = Path(__file__).resolve().parents[1]


def _voicecall(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "voicecall.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_setup_cfg_installs_the_voicecall_command() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    scripts = [line.strip() for line in cfg["options.entry_points"]["console_scripts"].splitlines() if line.strip()]
    assert "voicecall = voicecall.cli:main" in scripts


def test_help_lists_every_command_with_its_summary() -> None:
    out = _voicecall("--help")
    assert out.returncode == 0, out.stderr
    for name, command in COMMANDS.items():
        assert f"  {name} " in out.stdout and command.summary in out.stdout
    unknown = _voicecall("no-such-command")
    assert unknown.returncode == 2 and "unknown command" in unknown.stderr


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_resolves_to_a_function(name: str) -> None:
    assert callable(load(name))


def test_a_subcommand_runs_through_the_entry_point() -> None:
    out = _voicecall("check", "--config", "configs/cpu.toml")
    assert out.returncode == 0, out.stderr
    assert "configs/cpu.toml: config valid" in out.stdout


def test_tools_import_nothing_from_tests() -> None:
    offenders = [str(p.relative_to(ROOT)) for room in ("voicecall", "workers", "ipc", "tools") for p in (ROOT / room).rglob("*.py")
                 if "from tests" in p.read_text() or "import tests" in p.read_text()]
    assert offenders == []


@pytest.mark.slow
def test_ps_shows_each_role_by_name(tmp_path: Path) -> None:
    system = RunningSystem(tmp_path)
    try:
        system.wait_ready()
        supervisor = psutil.Process(system.proc.pid)
        titles = {" ".join(p.cmdline()).strip() for p in (supervisor, *supervisor.children(recursive=True))}
        # What `ps -o args` prints: the title replaces `python -c from multiprocessing.spawn ...`.
        ps = subprocess.run(["ps", "-o", "args=", "-p", str(system.proc.pid)], capture_output=True, text=True)
    finally:
        system.stop()
    for role in ("supervisor", "telephony", "stt", "llm", "tts"):
        assert f"voicecall: {role}" in titles, titles
    if ps.returncode == 0:  # procps may be absent; psutil read the same /proc/PID/cmdline above
        assert ps.stdout.strip() == "voicecall: supervisor"
