"""Installing a Debian package on demand, for the test beds (MariaDB, BIND9)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence


def apt_install(packages: Sequence[str]) -> str | None:
    """Install ``packages`` with apt-get as root; ``None`` on success, else why not."""
    if os.geteuid() != 0:
        return f"install {' '.join(packages)} (automatic installation needs root)"
    apt_get = shutil.which("apt-get")
    if apt_get is None:
        return f"apt-get is not available to install {' '.join(packages)}"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in ([apt_get, "update", "-qq"], [apt_get, "install", "-y", "-qq", *packages]):
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()[-2000:]
            return f"`{' '.join(command)}` failed with exit code {result.returncode}:\n{output}"
    return None
