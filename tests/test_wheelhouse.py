"""The offline install (scripts/wheelhouse.py, `make wheelhouse`): wheels for this Python, then liverctl
installed from them with `--no-index` into a fresh virtual environment that already has torch, as a Kaggle
notebook's Python has."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import venv
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def torch_only_site(dest: Path) -> Path:
    """A site-packages folder holding torch, torchvision and what they need (numpy, pillow, CUDA libraries,
    ...), as links into this environment: the state of a Kaggle image before liverctl is installed."""
    dest.mkdir()
    every = {}
    for dist in metadata.distributions():  # also copies hidden behind another on sys.path
        every.setdefault(dist.metadata["Name"].lower().replace("_", "-"), []).append(dist)
    todo, seen = [Requirement("torch"), Requirement("torchvision")], {}
    while todo:
        want = todo.pop()
        name = want.name.lower().replace("_", "-")
        if name in seen and want.extras <= seen[name]:
            continue
        seen[name] = seen.get(name, set()) | want.extras
        dist = next(d for d in every[name] if want.specifier.contains(d.version, prereleases=True))
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in {"", *seen[name]}):
                todo.append(req)
        location = Path(dist.locate_file(""))
        for file in dist.files or []:
            top = file.parts[0]
            if top not in ("..", "__pycache__") and not (dest / top).exists() and (location / top).exists():
                (dest / top).symlink_to(location / top)
    return dest


def run(cmd: list, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.slow
def test_wheelhouse_installs_liverctl_offline_beside_an_existing_torch(tmp_path):
    if sys.platform != "linux":
        pytest.skip("the wheelhouse targets manylinux")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    env["NO_ALBUMENTATIONS_UPDATE"] = "1"
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    house = tmp_path / "wheels"
    run([sys.executable, ROOT / "scripts" / "wheelhouse.py", house, "--python", python,
         "--platform", f"manylinux_2_28_{platform.machine()}"], tmp_path, env)
    names = {w.name.split("-")[0].lower() for w in house.glob("*.whl")}
    assert {"liverctl", "zarr", "segmentation_models_pytorch", "textual", "numpy"} <= names
    assert not names & {"torch", "torchvision", "triton"} and not any(n.startswith("nvidia") for n in names)
    assert "pip install --no-index --find-links" in (house / "README.md").read_text()

    env_dir = tmp_path / "kaggle-python"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    (site,) = (env_dir / "lib").glob("python3.*/site-packages")
    (site / "preinstalled_torch.pth").write_text(f"{torch_only_site(tmp_path / 'preinstalled')}\n")
    offline = {**env, "PIP_CONFIG_FILE": os.devnull}  # no configured index, find-links or constraints
    if list(site.glob("setuptools-*")):  # ensurepip's old copy (Python 3.11) would hide torch's own
        run([bin_dir / "python", "-m", "pip", "uninstall", "-q", "-y", "setuptools"], tmp_path, offline)
    run([bin_dir / "python", "-m", "pip", "install", "--no-index", "--find-links", house, "liverctl"], tmp_path,
        offline)

    assert not (site / "torch").exists()  # the existing torch was used, not installed again
    where = run([bin_dir / "python", "-c", "import liverctl, torch; print(liverctl.__file__)"], tmp_path, offline)
    assert Path(where.stdout.strip()).is_relative_to(site)
    assert "ingest" in run([bin_dir / "liverctl", "--help"], tmp_path, offline).stdout
    run([bin_dir / "liverctl", "synth", "data", "--cases", "2", "--test-cases", "1", "--size", "64",
         "--slices", "8", "--seed", "0"], tmp_path, offline)
    out = run([bin_dir / "liverctl", "ingest", "data", "--store", "store/liver.zarr", "--workers", "2"], tmp_path,
              offline)
    assert "3 cases (2 train, 1 test; 3 ingested" in out.stdout


def load_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("wheelhouse_script", ROOT / "scripts" / "wheelhouse.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_what_the_wheelhouse_keeps_and_leaves_out():
    script = load_script()

    def item(name, version, *requires):
        return {"metadata": {"name": name, "version": version, "requires_dist": list(requires)}}

    report = {"install": [
        item("liverctl", "0.1.0", "torch", "torchvision", "zarr>=3", "Pillow", "tomli>=2; python_version < '3.11'"),
        item("torch", "2.14.1", "sympy>=1.13", "filelock", "nvidia-cublas; platform_system == 'Linux'"),
        item("torchvision", "0.29.1", "torch", "pillow>=5", "numpy"),
        item("zarr", "3.4.2", "numpy>=1.26", "numcodecs[crc32c]>=0.14", "filelock; extra == 'remote'"),
        item("numcodecs", "0.17.1", "numpy", "google-crc32c>=1.5; extra == 'crc32c'", "msgpack; extra == 'msgpack'"),
        *[item(n, "1") for n in ("sympy", "filelock", "nvidia-cublas", "pillow", "numpy", "google-crc32c",
                                 "msgpack", "tomli")],
    ]}
    kept = dict(script.kept_packages(report, "3.12", "manylinux_2_28_x86_64"))
    # torch and torchvision, and what only they need, stay out; pillow is liverctl's own need too
    assert sorted(kept) == ["google-crc32c", "numcodecs", "numpy", "pillow", "zarr"]
    assert script.target_platforms("manylinux_2_28_x86_64")[:2] == ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64"]
    assert "manylinux2014_x86_64" in script.target_platforms("manylinux_2_28_x86_64")
    assert "manylinux2014_x86_64" not in script.target_platforms("manylinux_2_12_x86_64")
