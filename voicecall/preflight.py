"""Pre-flight checks behind `run.py --check`: every model and file the config names is present.

Nothing here imports a model library: a model counts as present when its files are found
(an installed package's directory, a local path, or a Hugging Face hub cache entry).
"""

from __future__ import annotations

import os
from pathlib import Path

from voicecall.config import Config
from workers.package_files import package_dir


def _hub_cache_dirs(repo_id: str) -> list[Path]:
    root = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", "~/.cache/huggingface")).expanduser() / "hub")
    return [root / f"models--{repo_id.replace('/', '--')}"]


def locate_model(ref: str) -> tuple[Path | None, str]:
    """Where a model reference resolves to, or (None, why not)."""
    if ref.startswith("package:"):
        name, _, rel = ref.removeprefix("package:").partition("/")
        try:
            return package_dir(name, ref), f"package {name}" + (f" ({rel})" if rel else "")
        except FileNotFoundError as exc:
            return None, str(exc)
    path = Path(ref).expanduser()
    if path.exists():
        return path, "local path"
    if "/" in ref and not ref.startswith((".", "/")):
        for d in _hub_cache_dirs(ref):
            if d.exists():
                return d, "hub cache"
        return None, f"{ref!r} is neither a local path nor in the Hugging Face cache (download it first)"
    for d in _hub_cache_dirs(f"Systran/faster-whisper-{ref}"):  # faster-whisper's short names
        if d.exists():
            return d, "hub cache"
    return None, f"{ref!r} not found: not a path, an installed package, or a cached hub model"


def check_models(cfg: Config, config_path: str) -> tuple[list[str], list[str]]:
    """Return (found lines, problems) for every model and data file the config uses."""
    wanted: list[tuple[str, str]] = [("stt.model", cfg.stt.model)]
    if cfg.tts.backend == "piper":
        wanted.append(("tts.voice", cfg.tts.voice))
    else:
        wanted.append(("tts.model", cfg.tts.model))
    if cfg.llm.backend == "vllm":
        wanted.append(("llm.model", cfg.llm.model))
    wanted.append(("llm.embedding_model", cfg.llm.embedding_model))
    found, problems = [], []
    for key, ref in wanted:
        path, how = locate_model(ref)
        if path is None:
            problems.append(f"{config_path}: $.{key}: {how}")
        else:
            found.append(f"{key:<22} {ref}  ->  {path} [{how}]")
    if cfg.stt.vad.turn_model:
        from workers.stt.smart_turn import model_path  # numpy only; onnxruntime is imported at load

        try:
            found.append(f"{'stt.vad.turn_model':<22} {model_path(cfg.stt.vad.turn_model)}")
        except FileNotFoundError as exc:
            problems.append(f"{config_path}: $.stt.vad.turn_model: {exc}")
    knowledge = Path(cfg.llm.knowledge)
    if knowledge.exists():
        found.append(f"{'llm.knowledge':<22} {knowledge}")
    else:
        problems.append(f"{config_path}: $.llm.knowledge: file {knowledge} not found")
    return found, problems


def check_records(cfg: Config, config_path: str) -> tuple[list[str], list[str]]:
    """(found lines, problems) for `records.url`: reachable, and not migrated by a newer voicecall."""
    from voicecall.storage.engine import RecordsUnavailable, RecordsUrl, connect
    from voicecall.storage.migrations import SCHEMA_VERSION, current_version

    rc = cfg.records
    target = RecordsUrl.parse(rc.resolved_url())
    if target.engine == "sqlite" and not Path(target.path).exists():
        return [f"{'records.url':<22} {target.url}  (created at start-up)"], []
    try:
        db = connect(target, password_env=rc.password_env, readonly=True, connect_timeout_s=rc.connect_timeout_s)
    except RecordsUnavailable as exc:
        return [], [f"{config_path}: $.records.url: {exc}"]
    try:
        version = current_version(db)
    except Exception as exc:  # noqa: BLE001 - sqlite3.Error or psycopg.Error: reported, not raised
        return [], [f"{config_path}: $.records.url: {db.where}: cannot read the schema version: {exc}"]
    finally:
        db.close()
    if version > SCHEMA_VERSION:
        return [], [f"{config_path}: $.records.url: {db.where} is at schema version {version}, newer than this "
                    f"voicecall's {SCHEMA_VERSION}: a newer voicecall migrated it"]
    return [f"{'records.url':<22} {db.where}  schema v{version} (this voicecall: v{SCHEMA_VERSION}, migrated at start-up)"], []
