"""Print the path of the newest CPython on this machine that is newer than the one running this, or nothing.

Looks at `python3.N` on PATH and at pyenv's installs ($PYENV_ROOT or ~/.pyenv), final releases only, and
asks each candidate its version (a pyenv shim for a version that is not installed answers nothing).
`make test-newest` and `.ci/run` use it to run the suite on the newest stack the machine has.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path


def candidates() -> list[str]:
    found = [shutil.which(f"python3.{minor}") for minor in range(30, sys.version_info.minor, -1)]
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    if root.is_dir():
        found += [str(d / "bin" / "python3") for d in root.iterdir() if re.fullmatch(r"3\.\d+\.\d+", d.name)]
    return [c for c in found if c]


def version(python: str) -> tuple[int, ...] | None:
    try:
        done = subprocess.run(
            [python, "-c", "import sys; print(*sys.version_info[:3], sys.version_info.releaselevel)"],
            capture_output=True, text=True, timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    parts = done.stdout.split()
    if done.returncode != 0 or len(parts) != 4 or parts[3] != "final":
        return None
    return tuple(int(p) for p in parts[:3])


def main() -> int:
    versions = {c: v for c in candidates() if (v := version(c)) is not None}
    newer = {c: v for c, v in versions.items() if v[:2] > sys.version_info[:2]}
    if newer:
        print(max(newer, key=lambda c: newer[c]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
