"""Install the Debian packages the test suite uses: Chromium (the softphone browser test),
PostgreSQL (the records tests start their own server in a temporary directory and never touch
a cluster the package may have created) and espeak-ng (a second caller voice for
tests/test_turn_taking.py and `voicecall turn-bench`).

Best effort: when apt is unavailable or not root, print why and carry on; the tests that need
a package skip with that reason.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys

#: Debian package -> a file (glob) that proves it is installed.
PACKAGES = {"chromium": "/usr/bin/chromium", "postgresql": "/usr/lib/postgresql/*/bin/initdb",
            "espeak-ng": "/usr/bin/espeak-ng"}


def main() -> int:
    missing = [pkg for pkg, path in PACKAGES.items() if not glob.glob(path)]
    if not missing:
        return 0
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        print(f"note: cannot install {missing} (need root and apt-get); tests using them will skip")
        return 0
    print(f"installing Debian packages: {missing}", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)
    except subprocess.CalledProcessError as exc:
        print(f"note: apt-get failed ({exc}); tests using {missing} will skip")
    return 0


if __name__ == "__main__":
    sys.exit(main())
