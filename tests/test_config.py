"""Config: every shipped file validates; bad input names the file, the key and the expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from voicecall.config import Config, ConfigError, config_from_toml, load_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.toml")))
def test_shipped_configs_validate(name: str) -> None:
    cfg = load_config(ROOT / "configs" / name)
    assert isinstance(cfg, Config)


def test_unknown_key_names_file_and_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[stt.vad]\nthreshhold = 0.4\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert str(path) in text and "$.stt.vad" in text and "threshhold" in text


def test_all_problems_reported_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        config_from_toml('[server]\nport = "eighty"\n[tts]\nbackend = "espeak"\n[nonsense]\nx = 1\n')
    problems = err.value.problems
    assert len(problems) == 3
    assert any("$.server.port" in p and "int" in p for p in problems)
    assert any("$.tts.backend" in p for p in problems)
    assert any("$.nonsense" in p for p in problems)


def test_semantic_checks() -> None:
    with pytest.raises(ConfigError) as err:
        config_from_toml('[ipc]\naudio_in_ring_bytes = 100000\n[llm]\nbackend = "vllm"\nend_call_match_threshold = 0.3\n'
                         '[stt.vad]\nsilence_ms_question_disputed = 1500\nsilence_ms_unpunctuated = 300\nsilence_ms_question = 500\n'
                         'second_look_ms = 40\n')
    assert "$.ipc.audio_in_ring_bytes: expected a power of two, got 100000" in err.value.problems
    assert any("$.stt.vad" in p and "silence_ms_question_disputed" in p and "1500" in p for p in err.value.problems)
    assert any("$.stt.vad" in p and "silence_ms_unpunctuated" in p and "300" in p for p in err.value.problems)
    assert any("$.stt.vad" in p and "silence_ms_question <=" in p and "500" in p for p in err.value.problems)
    assert any("$.stt.vad.second_look_ms" in p and "40" in p for p in err.value.problems)
    assert any("$.llm.model" in p for p in err.value.problems)
    assert any("$.llm.end_call_match_threshold" in p and "0.3" in p for p in err.value.problems)


def test_ranges_name_file_key_bound_and_value(tmp_path: Path) -> None:
    path = tmp_path / "cpu.toml"
    path.write_text('[stt.vad]\nthreshold = 1.5\n[server]\nport = 0\nplayout_lead_ms = 10\n'
                    '[ipc]\nevents_ring_bytes = 1024\n[llm.process]\nthreads = 0\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.problems == [  # every broken bound at once, not just each section's first
        "$.stt.vad.threshold: Expected `float` < 1.0, got 1.5",
        "$.server.port: Expected `int` >= 1, got 0",
        "$.server.playout_lead_ms: Expected `int` >= 20, got 10",
        "$.ipc.events_ring_bytes: Expected `int` >= 65536, got 1024",
        "$.llm.process.threads: Expected `int` >= 1, got 0",
    ]
    assert f"{path}: $.stt.vad.threshold: Expected `float` < 1.0, got 1.5" in str(err.value)


def test_environment_variable_names_are_checked() -> None:
    with pytest.raises(ConfigError) as err:
        config_from_toml('[server]\nsoftphone_token_env = "my token"\n')
    (problem,) = err.value.problems
    assert problem.startswith("$.server.softphone_token_env: Expected `str` matching regex") and "'my token'" in problem


def test_not_toml() -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        config_from_toml("[server\nport=1")
