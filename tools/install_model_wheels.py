"""Install wheels we need only for the model files inside them, without their dependencies.

`pipecat-ai` ships Smart Turn v3.2 (`pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx`,
BSD-2-Clause), the end-of-turn model of the stt worker. We want the file, not the framework (whose
requirements would pull dozens of packages), and never import it: the worker locates the file with
importlib (workers/package_files.py). `--no-deps` cannot be said per package in setup.cfg, hence
this step. Idempotent: does nothing when the pinned versions are installed.
"""

from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys

WHEELS = {"pipecat-ai": "1.14.0"}


def main() -> int:
    for name, version in WHEELS.items():
        try:
            if md.version(name) == version:
                continue
        except md.PackageNotFoundError:
            pass
        print(f"installing {name} {version} (no deps: for its model files only)", flush=True)
        subprocess.check_call([sys.executable, "-m", "pip", "--disable-pip-version-check", "install", "-q",
                               "--no-deps", f"{name}=={version}"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
