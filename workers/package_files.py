"""Where a pip package's data files are, found without importing the package.

Why not import it: `silero_vad`'s `__init__` imports torch (and changes its thread count), and
model packages need no code run at all to hand over a directory.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def package_dir(package: str, what: str) -> Path:
    """The directory of installed `package`; `what` names the model in the error if it is missing."""
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(f"{what}: Python package {package!r} is not installed "
                                f"(pip install {package.replace('_', '-')})")
    return Path(next(iter(found.submodule_search_locations)))
