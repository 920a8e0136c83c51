"""Write a folder of wheels from which liverctl installs with no network (a Kaggle notebook attached to it).

    python scripts/wheelhouse.py OUT [--python 3.12] [--platform manylinux_2_28_x86_64]

OUT gets the liverctl wheel and a wheel of everything it needs for that Python and platform, except torch
and torchvision and what only they need (CUDA libraries, triton, sympy, ...): every Kaggle GPU image has
them, and a second copy would cost gigabytes. OUT/README.md has the install line. `make wheelhouse` runs
this; the Makefile holds the defaults (Kaggle's Python and manylinux x86-64).

How: pip builds the liverctl wheel, resolves its dependencies for the target (a dry run: the resolver reads
metadata, it does not download torch), keeps what liverctl reaches without passing through torch or
torchvision, and downloads exactly those versions, binary wheels only. The folder is built beside OUT and
renamed into place at the end, so a failed run never leaves a wheelhouse that looks complete. An OUT that
exists is replaced only if it is empty or holds the marker file this script writes.

Standard library only (plus the `packaging` that pip vendors), so it runs from any Python with pip.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

MARKER = ".liverctl-wheelhouse"
EXCLUDED_ROOTS = ("torch", "torchvision")


class WheelhouseError(Exception):
    pass


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def target_platforms(platform: str) -> list[str]:
    """`manylinux_2_28_x86_64` -> itself and every older manylinux tag a glibc-2.28 system also runs
    (pip expands only the legacy manylinux2014/2010 aliases by itself)."""
    m = re.fullmatch(r"manylinux_2_(\d+)_(\w+)", platform)
    if not m:
        return [platform]
    glibc, arch = int(m.group(1)), m.group(2)
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(glibc, 4, -1)]
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    tags += [f"{name}_{arch}" for minor, name in legacy.items() if minor <= glibc]
    return tags


def target_options(python: str, platform: str) -> list[str]:
    nodot = python.replace(".", "")
    opts = ["--only-binary=:all:", "--python-version", python, "--implementation", "cp"]
    for abi in (f"cp{nodot}", "abi3", "none"):
        opts += ["--abi", abi]
    for tag in target_platforms(platform):
        opts += ["--platform", tag]
    return opts


def marker_env(python: str, platform: str) -> dict[str, str]:
    """Environment markers of the target, for the `; python_version < ...` parts of requirements."""
    linux = "linux" in platform
    arch = re.sub(r"^(manylinux_\d+_\d+|manylinux\d+|musllinux_\d+_\d+|linux)_", "", platform)
    return {
        "python_version": python,
        "python_full_version": f"{python}.0",
        "implementation_name": "cpython",
        "implementation_version": f"{python}.0",
        "platform_python_implementation": "CPython",
        "sys_platform": "linux" if linux else sys.platform,
        "platform_system": "Linux" if linux else "",
        "platform_machine": arch,
        "os_name": "posix",
        "platform_release": "",
        "platform_version": "",
    }


def run(cmd: list[str], what: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise WheelhouseError(f"{what} failed (exit {done.returncode}):\n{tail}")


def kept_packages(report: dict, python: str, platform: str) -> list[tuple[str, str]]:
    """(name, version) of what liverctl needs without passing through torch or torchvision."""
    try:
        from packaging.requirements import Requirement
    except ImportError:  # pip's own copy
        from pip._vendor.packaging.requirements import Requirement

    env = marker_env(python, platform)
    items = {canonical(i["metadata"]["name"]): i for i in report["install"]}
    keep: dict[str, set[str]] = {}  # name -> extras asked of it
    todo = [("liverctl", frozenset())]
    while todo:
        name, extras = todo.pop()
        if name in EXCLUDED_ROOTS or name not in items:
            continue
        seen = keep.get(name)
        if seen is not None and extras <= seen:
            continue
        keep[name] = (seen or set()) | set(extras)
        for spec in items[name]["metadata"].get("requires_dist") or []:
            req = Requirement(spec)
            if req.marker is not None and not any(
                req.marker.evaluate({**env, "extra": e}) for e in {"", *keep[name]}
            ):
                continue
            todo.append((canonical(req.name), frozenset(req.extras)))
    return sorted(
        (canonical(items[n]["metadata"]["name"]), items[n]["metadata"]["version"]) for n in keep if n != "liverctl"
    )


def build(out: Path, python: str, platform: str, project: Path) -> list[Path]:
    out = out.absolute()
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    pip_version = tuple(int(x) for x in re.findall(r"\d+", metadata.version("pip"))[:2])
    if python != running and pip_version < (24, 2):
        # pip 24.1 and older check requires-python against the running Python, not --python-version: they
        # would quietly pick releases for this Python (seen: zarr 3.1.6 instead of 3.4.2 for 3.12)
        raise WheelhouseError(
            f"pip {metadata.version('pip')} cannot resolve for Python {python} from Python {running}; "
            f"upgrade it ({sys.executable} -m pip install -U pip) or run this with Python {python}"
        )
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise WheelhouseError(f"{out}: exists and is not a wheelhouse this script wrote; give an empty or new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip"]
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp_name:
        tmp = Path(tmp_name)
        house = tmp / "wheels"
        house.mkdir()
        print(f"building the liverctl wheel from {project}", flush=True)
        run([*pip, "wheel", "--quiet", "--no-deps", "--wheel-dir", str(house), str(project)], "pip wheel liverctl")
        (liverctl_wheel,) = house.glob("liverctl-*.whl")
        print(f"resolving its dependencies for Python {python} on {platform}", flush=True)
        report_file = tmp / "report.json"
        run(
            [*pip, "install", "--quiet", "--dry-run", "--ignore-installed", "--target", str(tmp / "unused"),
             "--report", str(report_file), *target_options(python, platform), str(liverctl_wheel)],
            "pip resolving liverctl's dependencies",
        )
        report = json.loads(report_file.read_text())
        keep = kept_packages(report, python, platform)
        excluded = sorted(
            canonical(i["metadata"]["name"]) for i in report["install"]
            if canonical(i["metadata"]["name"]) not in {k[0] for k in keep} | {"liverctl"}
        )
        print(f"downloading {len(keep)} wheels (leaving out {len(excluded)}: torch, torchvision and what only "
              "they need)", flush=True)
        run(
            [*pip, "download", "--quiet", "--no-deps", "--dest", str(house), *target_options(python, platform),
             *[f"{name}=={version}" for name, version in keep]],
            "pip download",
        )
        wheels = sorted(house.glob("*.whl"))
        stray = [w for w in house.iterdir() if w.suffix != ".whl"]
        if stray:
            raise WheelhouseError(f"pip downloaded files that are not wheels: {', '.join(w.name for w in stray)}")
        write_readme(house, wheels, python, platform, excluded)
        (house / MARKER).write_text("written by scripts/wheelhouse.py\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(house, out)
    return sorted(out.glob("*.whl"))


def write_readme(house: Path, wheels: list[Path], python: str, platform: str, excluded: list[str]) -> None:
    total = sum(w.stat().st_size for w in wheels)
    lines = [
        "# liverctl wheelhouse",
        "",
        f"Wheels of liverctl and everything it needs for Python {python} on {platform} (and older manylinux",
        "tags), except torch and torchvision, which the Python environment must already have (every Kaggle GPU",
        "image does). Install with no network:",
        "",
        "```bash",
        "pip install --no-index --find-links <this folder> liverctl",
        "```",
        "",
        "In a Kaggle notebook, with this folder attached as a dataset named `liverctl-wheels`:",
        "",
        "```bash",
        "!pip install --no-index --find-links /kaggle/input/liverctl-wheels liverctl",
        "```",
        "",
        f"{len(wheels)} wheels, {total / 1e6:.1f} MB. Left out (torch, torchvision and what only they need): "
        + (", ".join(excluded) or "nothing") + ".",
        "",
        "| wheel | MB |",
        "|---|---:|",
        *[f"| {w.name} | {w.stat().st_size / 1e6:.1f} |" for w in wheels],
        "",
        "Written by `make wheelhouse` (scripts/wheelhouse.py); docs/kaggle.md in the liverctl repository has the",
        "whole journey in a Kaggle notebook.",
        "",
    ]
    (house / "README.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write (replaced if a wheelhouse from this script)")
    parser.add_argument("--python", default=f"{sys.version_info.major}.{sys.version_info.minor}",
                        help="target Python, major.minor (default: this one)")
    parser.add_argument("--platform", default="manylinux_2_28_x86_64", help="target platform tag")
    parser.add_argument("--project", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="the liverctl source tree (default: this repository)")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"3\.\d+", args.python):
        print(f"error: --python must look like 3.12, not {args.python!r}", file=sys.stderr)
        return 2
    try:
        wheels = build(args.out, args.python, args.platform, args.project)
    except WheelhouseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    total = sum(w.stat().st_size for w in wheels)
    print(f"{args.out}: {len(wheels)} wheels, {total / 1e6:.1f} MB; install with:\n"
          f"  pip install --no-index --find-links {args.out} liverctl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
