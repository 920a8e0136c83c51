"""Fuzz the readers of untrusted files: each gives a result or one LiverctlError, never another exception.

    .venv/bin/python scripts/fuzz_readers.py nifti --cases 2000 --seed 1
    .venv/bin/python scripts/fuzz_readers.py checkpoint --cases 2000
    .venv/bin/python scripts/fuzz_readers.py json --cases 2000
    .venv/bin/python scripts/fuzz_readers.py events --cases 2000   (also submissions, config, csv, dataset)

Every case runs in a forked child (the imports are paid once) under an address-space limit (`--memory`, MB
above what the parent already maps) and a wall-clock limit (`--timeout`): a file claiming gigabytes shows as
MemoryError or an "out of memory" line, a hang as TIMEOUT. Printed: every outcome that is not a result or a
LiverctlError (one line, with the seed and case number that reproduce it: `--only N`), any LiverctlError of
more than one line or over LONGEST_LINE characters (counted apart), the peak memory of the case that grew most, and the counts per outcome.

Readers (a mutated copy of a real file each case):
  nifti       the real CT volumes and labels of /work/shared/data/real (.nii.gz and uncompressed .nii): header
              fields set to odd values (dim, pixdim, datatype/bitpix, vox_offset, scl_*, q/sform, magic,
              sizeof_hdr, extensions), random bytes flipped, truncated, the gzip stream flipped; read by
              ingest's case reader and writer (case_writer._write_case), read_liver_mask (evaluate,
              postprocess) and postprocess's writer. A gzip flip read as a result must give the same voxels.
  checkpoint  a tiny model's checkpoint saved by the trainer: the zip's bytes flipped or truncated, or the
              dict's values replaced by odd but weights_only-legal ones; read by load_checkpoint and
              load_run_model.
  json        a store's zarr.json attributes (LiverStore.open) and a run's config.json (load_run_model's
              config reading) with values replaced by wrong types, NaN, huge numbers, deep nesting, long text.
  events      a run's events.jsonl (two runs/ folders of tests/run_fixtures.make_run: one completed with a scored
              submission, one interrupted after a NaN with an ensemble's): one line's values replaced, a key
              given twice, bytes flipped, invalid UTF-8, control characters, a line dropped, doubled or over a
              megabyte, truncated; read by summarize_run (which never raises), `runs` (--json must be strict
              JSON: no NaN), report's load_run, `watch --once` and, one case in 20, `report --no-overlays`.
  submissions the same runs' submissions.jsonl and the scores.json beside the submission, and those of an
              experiment (summarize_experiment, `runs`, `report`), read as `events` is.
  config      the same runs' config.toml: a value of another TOML type (nan, inf, a date, 5000 digits, a table,
              arrays 3000 deep), a key or table twice, an unknown key, bytes; read as `events` is, and by
              `train --resume` (train.start.resumed_config).
  csv         a submission CSV for two small label volumes: ids and RLE strings replaced by odd ones, columns
              more or fewer, rows doubled, moved or dropped, quotes, headers, line ends, bytes, random bytes, the
              file in UTF-16 or Latin-1; read by evaluate_submission, `evaluate`, and read_sample (`submit
              --sample`) with and without the store's slices.
  dataset     a Decathlon or nnU-Net dataset.json (as `mutate_json`, a key twice, bytes) over a folder of small
              volumes: find_source, plan_sources, `ingest --dry-run` and, one case in 10, the ingest.
"""

# ruff: noqa: B023 - every closure of a case runs in that case's iteration
from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import os
import re
import resource
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"  # beside the checkout, as the tests look
if not REAL.is_dir():
    REAL = Path("/work/shared/data/real")


# ------------------------------------------------------------------------------------------------ running


def run_case(fn, timeout: float, memory_mb: int) -> tuple[str, str, float]:
    """(outcome, detail, peak MB) of fn() in a forked child; outcome is ok / LiverctlError / an exception's
    type / TIMEOUT / KILLED(signal)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read)
        try:
            soft = _mapped_bytes() + memory_mb * (1 << 20)
            resource.setrlimit(resource.RLIMIT_AS, (soft, resource.RLIM_INFINITY))
            from liverctl.errors import LiverctlError

            try:
                fn()
                result = ("ok", "")
            except LiverctlError as exc:
                result = ("LiverctlError", str(exc))
            except BaseException as exc:  # noqa: BLE001 (what the fuzzing looks for)
                frames = [f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in traceback.extract_tb(exc.__traceback__)
                          if "/liverctl/" in f.filename]  # where in liverctl it escaped from
                last = "".join(traceback.format_exception_only(exc)).strip()
                result = (type(exc).__name__, " < ".join(reversed(frames)) + "\n" + last[-1500:])
            os.write(write, json.dumps([result[0], result[1][:4000]]).encode())  # within a pipe's buffer
        finally:
            os._exit(0)
    os.close(write)
    deadline = time.monotonic() + timeout
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            _, status, usage = os.wait4(pid, 0)
            os.close(read)
            return "TIMEOUT", "", usage.ru_maxrss / 1024
        time.sleep(0.005)
    data = b""
    while chunk := os.read(read, 1 << 16):
        data += chunk
    os.close(read)
    if not data:
        return f"KILLED({os.WTERMSIG(status) if os.WIFSIGNALED(status) else status})", "", usage.ru_maxrss / 1024
    outcome, detail = json.loads(data)
    return outcome, detail, usage.ru_maxrss / 1024


def _mapped_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


LONGEST_LINE = 1000  # characters of an error line: a path, the problem and a clipped value fit well within it


class Tally:
    def __init__(self, seed: int):
        self.seed, self.counts, self.shown = seed, collections.Counter(), set()
        self.peak = (0.0, "")

    def add(self, case: int, reader: str, what: str, outcome: str, detail: str, peak: float) -> None:
        if outcome == "LiverctlError" and len(detail) > LONGEST_LINE:  # a line no one reads: someone's text in it
            outcome = f"LiverctlError over {LONGEST_LINE} characters"
        key = f"{reader}: {outcome}"
        self.counts[key] += 1
        if peak > self.peak[0]:
            self.peak = (peak, f"case {case} {reader} {what}")
        bad = outcome not in ("ok", "LiverctlError") or (outcome == "LiverctlError" and (
            "\n" in detail or "out of memory" in detail))
        if bad:
            first = (detail.strip().splitlines() or [""])[-1][:300]
            sig = (reader, outcome, first[:80])
            if sig not in self.shown:
                self.shown.add(sig)
                print(f"--- {reader} {outcome} (--seed {self.seed} --only {case}): {what}\n{detail[-1500:]}", flush=True)

    def read(self, args, case: int, what: str, readers, work: Path | None = None) -> None:
        """Each (name, read) of `readers` in its forked child (`run_case`, `args`' limits), its outcome added;
        then the case's folder `work` removed, unless --keep."""
        for reader, fn in readers:
            outcome, detail, peak = run_case(fn, args.timeout, args.memory)
            self.add(case, reader, what, outcome, detail, peak)
        if work is not None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    def report(self) -> None:
        print(f"peak RSS of a case: {self.peak[0]:.0f} MB ({self.peak[1]})")
        for key, n in sorted(self.counts.items()):
            print(f"{n:7d}  {key}")


def cases(args):
    """(case number, its generator: seeded by --seed and the number) of each case to run: --cases, or --only N."""
    for case in range(args.cases):
        if args.only is None or case == args.only:
            yield case, np.random.default_rng([args.seed, case])


@contextlib.contextmanager
def scratch(prefix: str, keep: bool = False):
    """A temporary folder for a fuzzer's files, removed at the end unless `keep` (--keep)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield tmp
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ NIfTI

# NIfTI-1 header fields: (offset, struct code, count)
FIELDS = {
    "sizeof_hdr": (0, "i", 1), "dim": (40, "h", 8), "intent_p": (56, "f", 3), "intent_code": (68, "h", 1),
    "datatype": (70, "h", 1), "bitpix": (72, "h", 1), "slice_start": (74, "h", 1), "pixdim": (76, "f", 8),
    "vox_offset": (108, "f", 1), "scl_slope": (112, "f", 1), "scl_inter": (116, "f", 1),
    "slice_end": (120, "h", 1), "slice_code": (122, "b", 1), "xyzt_units": (123, "b", 1),
    "cal_max": (124, "f", 1), "cal_min": (128, "f", 1), "slice_duration": (132, "f", 1),
    "toffset": (136, "f", 1), "qform_code": (252, "h", 1), "sform_code": (254, "h", 1),
    "quatern": (256, "f", 3), "qoffset": (268, "f", 3), "srow": (280, "f", 12), "magic": (344, "4s", 1),
}
INTS = [0, -1, 1, 2, 3, 4, 5, 7, 8, 9, 16, 32, 64, 127, 128, 255, 256, 511, 512, 1024, 2047, 4096, 32767, -32768,
        2**31 - 1, -(2**31)]
FLOATS = [0.0, -0.0, -1.0, 1.0, 0.5, 1e-30, 1e-45, -1e30, 1e30, 3.4e38, float("nan"), float("inf"), float("-inf"),
          348.0, 352.0, 351.5, 352.5, 1e9, 2**31, -352.0, 4.0]
DATATYPES = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 1536, 1792, 2048, 2304, 3, 5, 999, -1, 32767]


def nifti_bases() -> list[tuple[str, bytes, bool]]:
    """(name, uncompressed bytes, is label) of each real file."""
    import gzip

    out = []
    for path in sorted(REAL.glob("*/*.nii.gz")):
        out.append((f"{path.parent.name}/{path.name}", gzip.decompress(path.read_bytes()), path.name != "ct.nii.gz"))
    return out


def _field_value(rng, name: str, code: str):
    if code == "4s":
        return [b"n+1\x00", b"ni1\x00", b"n+2\x00", b"\x00\x00\x00\x00", bytes(rng.integers(0, 256, 4, dtype=np.uint8))][
            int(rng.integers(5))]
    if name == "datatype":
        return int(rng.choice(DATATYPES))
    if code in "hbi":
        limit = {"h": 2**15, "b": 2**7, "i": 2**31}[code]
        value = int(rng.choice(INTS)) if rng.random() < 0.8 else int(rng.integers(-limit, limit))
        return max(-limit, min(limit - 1, value))
    return float(rng.choice(FLOATS)) if rng.random() < 0.8 else float(rng.normal() * 10.0 ** int(rng.integers(-5, 10)))


def mutate_header(rng, raw: bytes) -> tuple[bytes, str]:
    data = bytearray(raw)
    order = "<" if struct.unpack_from("<i", data)[0] == 348 else ">"
    what = []
    for _ in range(int(rng.integers(1, 4))):
        name = list(FIELDS)[int(rng.integers(len(FIELDS)))]
        offset, code, count = FIELDS[name]
        index = int(rng.integers(count))
        if name == "dim" and rng.random() < 0.5:
            index = 0 if rng.random() < 0.4 else int(rng.integers(1, 4))
        value = _field_value(rng, name, code)
        size = struct.calcsize(code)
        struct.pack_into(order + code, data, offset + index * size, value)
        what.append(f"{name}[{index}]={value!r}")
    return bytes(data), " ".join(what)


def mutate_nifti(rng, raw: bytes, is_label: bool) -> tuple[bytes, str, bool]:
    """(file bytes uncompressed, what was done, whether a gzip flip: the stream is flipped after compression)."""
    kind = int(rng.integers(10))
    if kind <= 4:
        data, what = mutate_header(rng, raw)
        return data, what, False
    if kind == 5:  # random bytes in the header
        data = bytearray(raw)
        flips = [int(rng.integers(0, 352)) for _ in range(int(rng.integers(1, 6)))]
        for at in flips:
            data[at] = int(rng.integers(256))
        return bytes(data), f"header bytes {flips}", False
    if kind == 6:  # truncated
        at = int(rng.integers(0, len(raw))) if rng.random() < 0.5 else int(rng.integers(0, 400))
        return raw[:at], f"truncated at {at}", False
    if kind == 7:  # an extension
        data = bytearray(raw)
        order = "<" if struct.unpack_from("<i", data)[0] == 348 else ">"
        esize = int(rng.choice([0, 8, 16, 17, -16, 2**31 - 1, 32, 10**6]))
        ecode = int(rng.choice([0, 2, 4, 6, 44, -1, 2**31 - 1]))
        ext = struct.pack(order + "ii", esize, ecode) + bytes(int(rng.integers(0, 40)))
        data[348:352] = bytes([1, 0, 0, 0])
        if rng.random() < 0.5:  # inside the gap before the voxels
            data[352 : 352 + len(ext)] = ext
        else:
            data[352:352] = ext
        return bytes(data[: len(raw) + (0 if rng.random() < 0.5 else 24)]), f"extension esize={esize} ecode={ecode}", False
    if kind == 8:  # voxel values
        data = bytearray(raw)
        for _ in range(int(rng.integers(1, 20))):
            at = int(rng.integers(352, len(data)))
            data[at] = int(rng.integers(256))
        return bytes(data), "voxel bytes", False
    return raw, "gzip flip", True


def nifti_file(rng, tmp: Path, name: str, raw: bytes, is_label: bool, data: bytes, gzip_flip: bool):
    gz = rng.random() < 0.6 or gzip_flip
    stem = name.replace("/", "_").replace(".nii.gz", "")
    path = tmp / (stem + (".nii.gz" if gz else ".nii"))
    if gz:
        blob = bytearray(_gzip(data))
        what = ""
        if gzip_flip:
            kind = int(rng.integers(3))
            if kind == 0:
                at = int(rng.integers(0, len(blob)))
                blob[at] ^= 1 << int(rng.integers(8))
                what = f" bit at {at}/{len(blob)}"
            elif kind == 1:
                at = int(rng.integers(0, len(blob)))
                blob = blob[:at]
                what = f" cut at {at}/{len(blob)}"
            else:
                blob += bytes(rng.integers(0, 256, int(rng.integers(1, 40)), dtype=np.uint8))
                what = " junk after"
        path.write_bytes(bytes(blob))
        return path, what
    path.write_bytes(data)
    return path, ""


_GZ_CACHE: dict[int, bytes] = {}


def _gzip(data: bytes) -> bytes:
    key = hash(data)
    if key not in _GZ_CACHE:
        import gzip

        _GZ_CACHE.clear()
        _GZ_CACHE[key] = gzip.compress(data, compresslevel=1, mtime=0)
    return _GZ_CACHE[key]


def fuzz_nifti(args, tally: Tally) -> None:
    from liverctl.data.case_writer import CaseJob, _write_case
    from liverctl.data.liver_mask import read_liver_mask
    from liverctl.data.nifti import read_nifti
    from liverctl.data.sources import CaseFiles
    from liverctl.infer.postprocess import postprocess_nifti

    bases = nifti_bases()
    rng0 = np.random.default_rng(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="fuzz_nifti_"))
    originals = {}
    try:
        for case in range(args.cases):
            rng = np.random.default_rng([args.seed, case])
            rng0.random()
            if args.only is not None and case != args.only:
                continue
            name, raw, is_label = bases[int(rng.integers(len(bases)))]
            data, what, gzip_flip = mutate_nifti(rng, raw, is_label)
            work = tmp / str(case)
            work.mkdir()
            path, more = nifti_file(rng, work, name, raw, is_label, data, gzip_flip)
            what = f"{name} -> {path.name}: {what}{more}"
            if args.keep:
                print("kept", path)
            folder = REAL / name.split("/")[0]
            labels = (5,) if "multilabel" in name else None

            def ingest():
                if is_label:
                    job = CaseFiles("c", "train", folder / "ct.nii.gz", path)
                else:
                    label = next(p for p in sorted(folder.glob("*.nii.gz")) if p.name != "ct.nii.gz")
                    job = CaseFiles("c", "train", path, label)
                _write_case(CaseJob(job, str(work / "store"), labels))

            def mask():
                read_liver_mask(path, labels)

            def post():
                postprocess_nifti(path, work / ("out" + path.name), "largest", liver_labels=labels)

            def same_voxels():
                if name not in originals:
                    originals[name] = np.asarray(read_nifti(REAL / name)[1])
                _, voxels = read_nifti(path)
                if not np.array_equal(np.asarray(voxels), originals[name], equal_nan=True):
                    raise AssertionError("a damaged gzip read as other voxels, no error")

            readers = [("ingest", ingest)]
            if is_label:
                readers += [("read_liver_mask", mask), ("postprocess", post)]
            if gzip_flip:
                readers.append(("gzip-same", same_voxels))
            tally.read(args, case, what, readers)
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ checkpoints


ODD = [None, True, -1, 0, 2**63, -(2**63), 10**30, float("nan"), float("inf"), "", "x" * 100_000, "é\u202e\x00",
       [], {}, [1] * 10, [[[[[]]]]], {"a": {"b": {}}}, 1.5, "Unet", "none", [2**20] * 5, [0, 0, 0, 0, 0], 10**6]


def odd_tensor(rng):
    """A tensor of an odd dtype, shape, or a stride-0 one claiming 10^12 elements of one stored number."""
    import torch

    dtype = [torch.float16, torch.bfloat16, torch.int64, torch.bool, torch.complex64, torch.uint8, torch.float64,
             torch.float32][int(rng.integers(8))]
    shape = [(), (0,), (1,), (3, 3), (2, 0, 4), (1, 1, 1, 1)][int(rng.integers(6))]
    if rng.random() < 0.3:
        return torch.zeros(1).as_strided((10**6, 10**6), (0, 0))
    return torch.zeros(shape, dtype=dtype)


def _odd(rng):
    kind = int(rng.integers(12))
    if kind == 0:
        return odd_tensor(rng)
    if kind == 1:  # deep nesting
        value: object = 1
        for _ in range(int(rng.choice([10, 200, 900]))):
            value = [value]
        return value
    if kind == 2:
        return [0.5] * int(rng.choice([10, 10**5]))
    return ODD[int(rng.integers(len(ODD)))]


def mutate_state(rng, state: dict) -> str:
    """Replace, delete or add entries of a loaded checkpoint (in place); returns what was done."""
    import torch

    what = []
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.integers(6))
        if kind == 0:  # a top-level entry
            key = list(state)[int(rng.integers(len(state)))] if rng.random() < 0.8 else "optimizer"
            state[key] = _odd(rng)
            what.append(f"{key}=odd")
        elif kind == 1:
            key = list(state)[int(rng.integers(len(state)))]
            del state[key]
            what.append(f"del {key}")
        elif kind == 2 and isinstance(state.get("config"), dict):  # a config value
            sections = [s for s in state["config"] if isinstance(state["config"][s], dict)] or [None]
            section = sections[int(rng.integers(len(sections)))]
            if section is None:
                continue
            keys = list(state["config"][section]) or ["x"]
            key = keys[int(rng.integers(len(keys)))]
            state["config"][section][key] = _odd(rng)
            what.append(f"config.{section}.{key}=odd")
        elif kind == 3 and isinstance(state.get("model"), dict) and state["model"]:  # a weight
            keys = list(state["model"])
            key = keys[int(rng.integers(len(keys)))]
            state["model"][key] = _odd(rng) if rng.random() < 0.5 else state["model"][key].to(torch.float16)
            what.append(f"model[{key}]=odd")
        elif kind == 4:  # resume entries
            for key, value in {"optimizer": {"state": {}, "param_groups": []}, "scheduler": {}, "scaler": {},
                               "rng": None, "step_in_epoch": 0}.items():
                state.setdefault(key, value)
            key = ["optimizer", "scheduler", "scaler", "rng", "step_in_epoch", "best", "guard", "metrics",
                   "epoch_losses", "cases"][int(rng.integers(10))]
            state[key] = _odd(rng) if rng.random() < 0.5 else {"x": _odd(rng)}
            what.append(f"resume {key}=odd")
        else:
            state[str(rng.integers(1000))] = _odd(rng)
            what.append("extra entry")
    return " ".join(what)


def fuzz_checkpoint(args, tally: Tally) -> None:
    import torch

    from liverctl.config import resolve_config
    from liverctl.runs.checkpoint import load_checkpoint, save_checkpoint
    from liverctl.train.models import build_model, load_run_model

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="fuzz_ckpt_"))
    try:
        cfg = resolve_config("demo", ["data.input_size=64", "model.encoder='tu-mobilenetv3_small_050'",
                                      "model.decoder_channels=[16, 8, 8, 8, 8]", "model.encoder_weights='none'"])
        torch.manual_seed(0)
        model = build_model(cfg, pretrained=False)
        state = {"run": "r", "preset": "demo", "config": cfg, "epoch": 1, "global_step": 1,
                 "model": model.state_dict(), "metrics": {"val_loss": 0.5, "volume_dice": 0.5},
                 "best": {"epoch": 1, "volume_dice": 0.5}, "versions": {}}
        base_path = save_checkpoint(tmp / "base", "best", state)
        base = base_path.read_bytes()
        for case in range(args.cases):
            if args.only is not None and case != args.only:
                continue
            rng = np.random.default_rng([args.seed, case])
            run = tmp / str(case)
            path = run / "checkpoints" / "best.pt"
            path.parent.mkdir(parents=True)
            kind = int(rng.integers(4))
            if kind == 0:
                data = bytearray(base)
                flips = [int(rng.integers(len(data))) for _ in range(int(rng.integers(1, 8)))]
                for at in flips:
                    data[at] = int(rng.integers(256))
                path.write_bytes(bytes(data))
                what = f"bytes {flips}"
            elif kind == 1:
                at = int(rng.integers(len(base)))
                path.write_bytes(base[:at])
                what = f"truncated at {at}/{len(base)}"
            else:
                loaded = torch.load(io.BytesIO(base), weights_only=True)
                what = mutate_state(rng, loaded)
                try:
                    torch.save(loaded, path)
                except Exception as exc:  # noqa: BLE001
                    what += f" (not saved: {type(exc).__name__})"
                    continue
            tally.read(args, case, what, (("load_checkpoint", lambda: load_checkpoint(path)),
                                          ("load_checkpoint(resume)", lambda: load_checkpoint(path, resume=True)),
                                          ("load_run_model", lambda: load_run_model(run))))
            shutil.rmtree(run, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


JSON_ODD = ["null", "true", "-1", "0", "1.5", "NaN", "Infinity", "-Infinity", "1e999", "9" * 5000, "9" * 30,
            '"' + "x" * 200_000 + '"', '"\\ud800"', '"\\u202e\\u0000é"', "[" * 5000 + "]" * 5000, "[]", "{}",
            '[1, "a", null]', '{"a": {"b": [1]}}', '"none"', '"float16"', "[64, 64, 24]", "[-1, 64, 24]",
            "[0, 0, 0]", "[100000, 100000, 100000]", '["x"]', '{"format": 1}', "2147483648", "-9223372036854775809"]


def _leaves(value, path=()):
    """(path, value) of every value in a JSON document (containers too)."""
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value[:50]):
            yield from _leaves(v, (*path, i))



def read_whole_store(store, label_slice: int = 0) -> None:
    """What the readers of a store read of it: open it, each case's attributes and a slice, a training case's
    label slice, the folds and the sources (`LiverStore`)."""
    from liverctl.data.store import LiverStore

    s = LiverStore.open(store)
    for case_id in s.case_ids():
        s.meta(case_id)
        s.read_slice(case_id, 0)
    for case_id in s.case_ids("train"):
        s.read_label_slice(case_id, label_slice)
    s.folds()
    s.case_sources()

def mutate_json(rng, text: str) -> tuple[str, str]:
    """A JSON document with values replaced by odd JSON texts (or its bytes damaged); what was done."""
    kind = int(rng.integers(8))
    if kind == 0:  # bytes inserted anywhere
        at = int(rng.integers(len(text) + 1))
        piece = str(rng.choice(JSON_ODD))[:200]
        return text[:at] + piece + text[at:], f"inserted {piece[:30]!r} at {at}"
    if kind == 1:
        at = int(rng.integers(len(text) + 1))
        return text[:at], f"truncated at {at}"
    doc = json.loads(text)
    what = []
    for _ in range(int(rng.integers(1, 4))):
        leaves = list(_leaves(doc))[1:]
        if not leaves:
            break
        path, _ = leaves[int(rng.integers(len(leaves)))]
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if rng.random() < 0.1 and isinstance(parent, dict):
            del parent[path[-1]]
            what.append(f"del {'.'.join(map(str, path))}")
            continue
        marker = f"@@ODD{len(what)}@@"
        parent[path[-1]] = marker
        what.append(f"{'.'.join(map(str, path))}={str(rng.choice(JSON_ODD))[:40]}")
    text = json.dumps(doc)
    for i, item in enumerate(what):
        if "=" in item:
            value = item.split("=", 1)[1]
            full = next(o for o in JSON_ODD if o[:40] == value)
            text = text.replace(f'"@@ODD{i}@@"', full)
    return text, " ".join(what)


def write_base_experiment(exp: Path, store: Path) -> Path:
    """The experiment.json of a completed experiment `exp` (its folder made) over `store`, folds 0-2, fold 0's
    results, cv, out-of-fold figures and a decision, as `train --folds` writes it."""
    from liverctl.config import resolve_config
    from liverctl.experiment.folder import write_summary

    exp.mkdir(parents=True)
    write_summary(exp, {
        "name": exp.name, "preset": "demo", "store": str(store), "folds": [0, 1, 2],
        "config": resolve_config("demo"), "status": "completed", "created": 1_600_000_000.0,
        "fold_results": {"0": {"status": "completed", "best": {"epoch": 1, "volume_dice": 0.9},
                               "checkpoints": {"best": "0" * 64}}},
        "cv": {"mean": 0.9, "std": 0.01, "folds": {"0": 0.89, "1": 0.9, "2": 0.91}},
        "oof": {"volume_dice": 0.91, "slice_dice": 0.8, "global_dice": 0.93},
        "decision": {"threshold": 0.5, "post": "largest_component", "volume_dice": 0.92, "cases": 10}})
    return exp


def fuzz_json(args, tally: Tally) -> None:
    import cv2  # noqa: F401 - imported here, not in a child under the memory limit
    import torch  # noqa: F401

    from liverctl.config import resolve_config
    from liverctl.data.ingest import ingest_folder
    from liverctl.data.store import LiverStore
    from liverctl.data.store_check import verify_store
    from liverctl.data.synth import write_synthetic_dataset
    from liverctl.experiment.folder import read_summary
    from liverctl.experiment.summary import summarize_experiment

    tmp = Path(tempfile.mkdtemp(prefix="fuzz_json_"))
    try:
        data = tmp / "data"
        write_synthetic_dataset(data, workers=1, cases=3, test_cases=1, size=64, slices=4, seed=0)
        base_store = tmp / "base.zarr"
        assert ingest_folder(data, store=base_store, workers=1).ok
        metas = sorted(p.relative_to(base_store) for p in base_store.rglob("zarr.json"))
        base_exp = write_base_experiment(tmp / "runs_base" / "cv", base_store)
        for case in range(args.cases):
            if args.only is not None and case != args.only:
                continue
            rng = np.random.default_rng([args.seed, case])
            work = tmp / str(case)
            if rng.random() < 0.5:  # a store's zarr.json
                store = work / "liver.zarr"
                shutil.copytree(base_store, store)
                meta = metas[int(rng.integers(len(metas)))] if rng.random() < 0.7 else Path("zarr.json")
                text, what = mutate_json(rng, (store / meta).read_text())
                (store / meta).write_text(text, encoding="utf-8", errors="surrogatepass")
                what = f"{meta}: {what}"

                def read_store(store=store):
                    read_whole_store(store)

                def train_data(store=store):
                    from liverctl.data.dataset import SliceDataset, ValidationDataset, split_rows

                    s = LiverStore.open(store)
                    for normalize in ("window", "minmax"):
                        cfg = resolve_config("demo", ["data.input_size=64", f"data.normalize='{normalize}'"])
                        train_rows, val_rows = split_rows(s, s.folds()[s.case_ids("train")[0]])
                        if len(train_rows):
                            SliceDataset(s, train_rows, cfg).batch([(0, 1)])
                        if len(val_rows):
                            ValidationDataset(s, val_rows, cfg)[0]

                readers = [("LiverStore", read_store), ("verify", lambda store=store: verify_store(store)),
                           ("datasets", train_data)]
                if rng.random() < 0.2:
                    readers.append(("ingest-rerun", lambda store=store: _ingest_again(data, store)))
            else:  # experiment.json
                root = work / "runs"
                shutil.copytree(base_exp.parent, root)
                path = root / "cv" / "experiment.json"
                text, what = mutate_json(rng, path.read_text())
                path.write_text(text, encoding="utf-8", errors="surrogatepass")
                what = f"experiment.json: {what}"

                readers = [("read_summary", lambda root=root: read_summary(root / "cv")),
                           ("summarize_experiment", lambda root=root: summarize_experiment(root / "cv")),
                           ("runs --json", lambda root=root: strict_json(cli(["runs", str(root), "--json"])))]
            tally.read(args, case, what, readers)
            shutil.rmtree(work, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _ingest_again(data: Path, store: Path) -> None:
    from liverctl.data.ingest import ingest_folder

    summary = ingest_folder(data, store=store, workers=1)
    if not summary.ok:
        from liverctl.errors import LiverctlError

        raise LiverctlError(f"{summary.failures}"[:300])


# ------------------------------------------------------------------------------------------------ text files
# The files `runs`, `watch`, `report`, `evaluate`, `submit --sample`, `train --resume` and ingest's layouts read:
# JSON lines, JSON, TOML, CSV. Each case damages one file of a base folder in one of these ways: values of other
# types (JSON_ODD, TOML_ODD, CSV_ODD), a key given twice, the bytes flipped, invalid UTF-8 or control characters
# inserted, a line dropped, doubled or made over a megabyte long, truncated.

INVALID_UTF8 = [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80", b"\xfe\xff", b"\xc0\xaf"]
CONTROL = ["\x00", "\r", "\x1b[2J", "\x0b", "\x7f", "\u2028", "\u202e", "\ufeff", "\t", "\r\n", "\x85", "\x1c"]


def mutate_bytes(rng, data: bytes) -> tuple[bytes, str]:
    """`data` with its bytes damaged: flipped, invalid UTF-8 or a control character inserted, cut, a line dropped
    or doubled, or a line of over a megabyte (`events.MAX_LINE_BYTES`) inserted; what was done."""
    kind = int(rng.integers(7))
    at = int(rng.integers(len(data) + 1))
    if kind == 0:
        out = bytearray(data)
        flips = [int(rng.integers(len(out))) for _ in range(int(rng.integers(1, 8)))] if out else []
        for i in flips:
            out[i] = int(rng.integers(256))
        return bytes(out), f"bytes {flips[:4]}"
    if kind == 1:
        piece = INVALID_UTF8[int(rng.integers(len(INVALID_UTF8)))]
        return data[:at] + piece + data[at:], f"invalid UTF-8 {piece!r} at {at}"
    if kind == 2:
        piece = CONTROL[int(rng.integers(len(CONTROL)))]
        return data[:at] + piece.encode() + data[at:], f"control {piece!r} at {at}"
    if kind == 3:
        return data[:at], f"truncated at {at}/{len(data)}"
    lines = data.split(b"\n")
    i = int(rng.integers(len(lines)))
    if kind == 4:
        return b"\n".join(lines[:i] + lines[i + 1:]), f"line {i + 1} dropped"
    if kind == 5:
        return b"\n".join(lines[:i + 1] + lines[i:]), f"line {i + 1} doubled"
    size = int(rng.choice([5000, (1 << 20) + 10]))
    return b"\n".join([*lines[:i], b"x" * size, *lines[i:]]), f"a line of {size} bytes before line {i + 1}"


def duplicate_key(rng, text: str) -> tuple[str, str]:
    """A JSON object with one of its keys given again (Python's json keeps the last) holding an odd value."""
    keys = re.findall(r'"([^"\\]{1,40})"\s*:', text)
    if not keys:
        return text, "no key to duplicate"
    key, value = str(rng.choice(keys)), str(rng.choice(JSON_ODD))[:200]
    close = text.rfind("}")
    if close < 0 or rng.random() < 0.3:  # before the first: the original wins
        start = text.find("{") + 1
        return f'{text[:start]}"{key}": {value}, {text[start:]}', f"duplicate key {key!r} first"
    return f'{text[:close]}, "{key}": {value}{text[close:]}', f"duplicate key {key!r}={value[:30]!r}"


def mutate_json_text(rng, text: str) -> tuple[bytes, str]:
    """One JSON document (a file, or a line of a .jsonl) damaged: `mutate_json`, a key doubled, or its bytes."""
    kind = rng.random()
    if kind < 0.5:
        out, what = mutate_json(rng, text)
    elif kind < 0.65:
        out, what = duplicate_key(rng, text)
    else:
        return mutate_bytes(rng, text.encode())
    return out.encode("utf-8", errors="surrogatepass"), what


def mutate_jsonl(rng, text: str) -> tuple[bytes, str]:
    """A JSON lines file with one line damaged (`mutate_json_text`), or the file's bytes (`mutate_bytes`)."""
    lines = text.split("\n")
    if rng.random() < 0.3:
        return mutate_bytes(rng, text.encode())
    i = int(rng.integers(max(1, len(lines) - 1)))  # the last "line" is what follows the last newline: ""
    data, what = mutate_json_text(rng, lines[i])
    joined = "\n".join(lines[:i]).encode() + (b"\n" if i else b"") + data + ("\n" + "\n".join(lines[i + 1:])).encode()
    return joined, f"line {i + 1}: {what}"


TOML_ODD = ["nan", "inf", "-inf", "+nan", "1e999", "9" * 5000, "9" * 30, "-9223372036854775809", "-1", "0", "1.5",
            "true", '""', '"' + "x" * 200_000 + '"', '"\\u0000\\u202e\\u001b[2J"', "[" * 3000 + "]" * 3000, "[]",
            "{}", "{a = {b = 1}}", "1979-05-27T07:32:00Z", "07:32:00", "1979-05-27", '"none"', '[1, "a"]',
            "[[1], [2]]", "0x7fffffffffffffff", "1_000", "'''a\nb'''", '"Unet"', "[1e308, -1e308]", "-0.0",
            "[0, 0, 0, 0, 0]", "[nan, inf]", '"bce"', '"flip_rotate"', "1e-320"]


def mutate_toml(rng, text: str) -> tuple[bytes, str]:
    """A TOML file with a value replaced by another type, a key or table given twice, an unknown key, a table
    nested deep, a line dropped, or its bytes damaged."""
    lines = text.split("\n")
    values = [i for i, line in enumerate(lines) if " = " in line]
    tables = [i for i, line in enumerate(lines) if line.startswith("[")]
    kind = int(rng.integers(8))
    if kind <= 2 and values:
        what = []
        for _ in range(kind + 1):
            i = int(rng.choice(values))
            value = str(rng.choice(TOML_ODD))
            lines[i] = lines[i].split(" = ", 1)[0] + " = " + value
            what.append(f"{lines[i].split(' = ', 1)[0]}={value[:30]!r}")
        return "\n".join(lines).encode(), " ".join(what)
    if kind == 3 and values:  # a key given twice: not valid TOML
        i = int(rng.choice(values))
        return "\n".join(lines[:i + 1] + lines[i:]).encode(), f"key twice: {lines[i][:40]!r}"
    if kind == 4 and tables:  # a table given twice, or one of another name
        i = int(rng.choice(tables))
        extra = [lines[i], "[" + lines[i].strip("[]") + ".x]", "[zzz]", "[[train]]", "[" + ".".join(["a"] * 500) + "]"][
            int(rng.integers(5))]
        return "\n".join([*lines, extra, "k = 1"]).encode(), f"table {extra[:40]!r} added"
    if kind == 5 and tables:  # an unknown key in a table
        i = int(rng.choice(tables))
        return "\n".join([*lines[:i + 1], f"unknown_key = {rng.choice(TOML_ODD)}"[:300], *lines[i + 1:]]).encode(), \
            f"unknown key in {lines[i]}"
    return mutate_bytes(rng, text.encode())


CSV_IDS = ["", "0_-1", "0_99", "0_00", "x_1", "0_1" * 1000, "0_" + "9" * 5000, "0_1\x00", "０_1", "0_1 ", " 0_1",
           "0_²", "_1", "0_", "id", "0_0,0_1", '"0_1"', "0_1\r", "\ufeff0_1"]
RLE_ODD = ["", "1 0", "0 0", "-1 5", "1 -5", "1", "1 2 3", "1.5 2", "nan nan", "9" * 30 + " 1", "1 " + "9" * 5000,
           "1 999999", "3 1 1 1", "1 1 1 1", " 1 1", "1  1", "1\t1", "０ １", "1 1 " * 50_000, "\x00", "1e3 1",
           "0x10 1", "1 1\n2 1", '1 "1', "inf 1", "18446744073709551617 1", "1 18446744073709551616"]


def mutate_csv(rng, text: str) -> tuple[bytes, str]:
    """A submission CSV with an id or RLE replaced by an odd one, a column more or less, a row doubled, dropped
    or moved, quotes unbalanced, another header or line end, or the whole file damaged (`mutate_csv_file`)."""
    lines = text.split("\n")
    rows = [i for i in range(1, len(lines)) if lines[i]]
    kind = int(rng.integers(9))
    if not rows or kind == 8:
        return mutate_csv_file(rng, text)
    i = int(rng.choice(rows))
    row_id, _, code = lines[i].partition(",")
    if kind <= 1:
        value = str(rng.choice(CSV_IDS))
        lines[i] = f"{value},{code}"
        what = f"id {value[:30]!r}"
    elif kind <= 3:
        value = str(rng.choice(RLE_ODD))
        lines[i] = f"{row_id},{value}"
        what = f"rle {value[:30]!r}"
    elif kind == 4:
        extra = [f"{lines[i]},x", row_id, f"{row_id},{code},", '"' + lines[i], f'{row_id},"{code}', ","][int(rng.integers(6))]
        lines[i] = extra
        what = f"row {extra[:40]!r}"
    elif kind == 5:
        j = int(rng.choice(rows))
        lines.insert(j, lines[i])
        what = f"row {i + 1} also at {j + 1}"
    elif kind == 6:
        header = ["", "id", "id,rle,x", "ID,RLE", "0_0,1 0", "\ufeffid,rle", "Id,EncodedPixels", '"id,rle'][
            int(rng.integers(8))]
        lines[0] = header
        what = f"header {header!r}"
    else:
        end = ["\r\n", "\r", "\n\n"][int(rng.integers(3))]
        return end.join(lines).encode(), f"line ends {end!r}"
    return "\n".join(lines).encode("utf-8", errors="surrogatepass"), f"line {i + 1}: {what}"


def mutate_csv_file(rng, text: str) -> tuple[bytes, str]:
    """The whole CSV damaged: its bytes (`mutate_bytes`), random bytes in its place, or the text (an "é" in it)
    written in another encoding than UTF-8, as a spreadsheet may export it (UTF-16 with its BOM, Latin-1)."""
    kind = rng.random()
    if kind < 0.6:
        return mutate_bytes(rng, text.encode())
    if kind < 0.75:
        size = int(rng.integers(0, 300))
        return rng.bytes(size), f"{size} random bytes"
    at, encoding = int(rng.integers(len(text) + 1)), str(rng.choice(["utf-16", "utf-16-le", "latin-1"]))
    return (text[:at] + "é" + text[at:]).encode(encoding), f"'é' at {at}, written in {encoding}"


def cli(args: list[str], codes: tuple[int, ...] = (0,)) -> str:
    """`liverctl ARGS` in this process as its entry point runs it (`cli.main`: under `standard_streams`, which
    prints what the stream's encoding lacks escaped); its stdout. Exit 2 is a LiverctlError of stderr's last line
    (what the command printed as its one error line); another exit outside `codes`, or an exception through it,
    is raised."""
    from typer.testing import CliRunner

    from liverctl.cli import app
    from liverctl.commands._common import standard_streams
    from liverctl.errors import LiverctlError

    with CliRunner().isolation() as (out, err, _):
        try:
            with standard_streams():
                app(args=args, prog_name="liverctl")
            code = 0
        except SystemExit as end:
            code = end.code if isinstance(end.code, int) else int(end.code is not None)
        stdout, stderr = out.getvalue().decode(errors="replace"), err.getvalue().decode(errors="replace")
    if code == 2 and 2 not in codes:
        raise LiverctlError((stderr.strip().splitlines() or ["(exit 2 without a line)"])[-1])
    if code not in codes:
        raise RuntimeError(f"exit {code}: {(stdout + stderr)[-800:]}")
    return stdout


def strict_json(text: str):
    """JSON as any other tool reads it: NaN and Infinity are no JSON (Python writes them; jq and browsers refuse)."""
    def refuse(name):
        raise ValueError(f"{name} in the JSON printed")

    return json.loads(text, parse_constant=refuse)


def never_refuses(read, *args):
    """`read(*args)` for a reader that promises no error at all (`summarize_run`: problems are lines of its result)."""
    from liverctl.errors import LiverctlError

    try:
        return read(*args)
    except LiverctlError as exc:
        raise RuntimeError(f"refused, though it never should: {exc}") from exc


def base_runs(tmp: Path) -> Path:
    """runs/ with `a` (completed, a scored submission: its CSV and scores.json beside it), `b` (interrupted,
    a NaN, an ensemble submission with `a`) and the experiment `cv` (fold-0 a run, a scored submission of its
    own): run_fixtures.make_run's folders, as `train` and `submit` write them."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from run_fixtures import make_run

    root = tmp / "base" / "runs"
    a = make_run(root, "a", planned=3, submissions=[{"csv": "subs/a.csv", "scores": {
        "volume_dice": 0.9, "slice_dice": 0.8, "global_dice": 0.93, "sha256": "0" * 64,
        "cases": [{"case": "0", "volume_dice": 0.9}]}}])
    make_run(root, "b", planned=4, volume_dice=[0.5, None], status=None, nan_events=1, message="stopped")
    exp = write_base_experiment(root / "cv", tmp / "base" / "liver.zarr")
    make_run(exp, "fold-0", settings={"data.fold": 0}, submissions=[{"csv": str(root.parent / "subs" / "cv.csv"), "scores": {
        "volume_dice": 0.92, "slice_dice": 0.85, "global_dice": 0.94, "sha256": "0" * 64}}])
    (exp / "fold-0" / "submissions.jsonl").replace(exp / "submissions.jsonl")  # the experiment's, of its folds
    with open(root / "b" / "submissions.jsonl", "w") as fh:
        ts = 1_700_000_500.0
        fh.write(json.dumps({"ts": ts, "csv": str(root.parent / "subs" / "a.csv"), "sha256": "0" * 64, "rows": 3,
                             "tta": "hflip", "post": "largest", "threshold": 0.5, "which": "best",
                             "runs": [str(a), str(root / "b")], "ensemble": True,
                             "members": [{"run": str(a), "checkpoint": "best", "sha256": "1" * 64, "epoch": 3,
                                          "saved_at": 1.0}, {"run": str(root / "b"), "saved_at": None}]}) + "\n")
    return root


# The files of `_base_runs` each reader damages, relative to its runs/ folder.
RUN_FILES = {"events": ["a/events.jsonl", "b/events.jsonl"],
             "submissions": ["a/submissions.jsonl", "b/submissions.jsonl", "../subs/a.scores.json",
                             "cv/submissions.jsonl", "../subs/cv.scores.json"],
             "config": ["a/config.toml", "b/config.toml"]}


def damage_run_file(rng, root: Path, name: str) -> tuple[Path, str]:
    """Damage the file `name` (of RUN_FILES) under runs/ `root` in place with its kind's mutation; (the run folder
    whose file it is, what was done)."""
    path = root / name
    mutate = mutate_toml if name.endswith(".toml") else mutate_json_text if name.endswith(".json") else mutate_jsonl
    data, what = mutate(rng, path.read_text(encoding="utf-8"))
    path.write_bytes(data)
    # scores.json newer than the submission, so that a damaged one is read, not set aside as stale
    for scores in (root.parent / "subs").glob("*.scores.json"):
        os.utime(scores, (2e9, 2e9))
    run = root / (Path(name).name.split(".")[0] if name.startswith("..") else name.split("/")[0])
    return run, f"{name}: {what}"


def run_readers(root: Path, run: Path, *, resume: bool = False, report: bool = False) -> list[tuple[str, object]]:
    """(name, read) of everything that reads a run folder under runs/ `root`: summarize_run (which never raises),
    `runs --json` (strict JSON), `runs`, report's load_run, `watch --once`; `resume`: `train --resume`'s
    resumed_config; `report`: `report --no-overlays` (matplotlib: a second)."""
    from liverctl.experiment.summary import summarize_experiment
    from liverctl.report.run_data import load_run
    from liverctl.runs.summary import summarize_run
    from liverctl.train.start import TrainRequest, resumed_config

    if run.name == "cv":  # the experiment: its summary (its folds' too), `runs` and `report`
        readers = [("summarize_experiment", lambda: never_refuses(summarize_experiment, run)),
                   ("runs --json", lambda: strict_json(cli(["runs", str(root), "--json"]))),
                   ("runs (table)", lambda: cli(["runs", str(root)]))]
        return [*readers, ("report --no-overlays", lambda: cli(["report", str(run), "--no-overlays", "--out",
                                                                str(root.parent / "report")]))] if report else readers
    readers = [("summarize_run", lambda: never_refuses(summarize_run, run)),
               ("runs --json", lambda: strict_json(cli(["runs", str(root), "--json"]))),
               ("runs (table)", lambda: cli(["runs", str(root)])),
               ("report load_run", lambda: load_run(run)),
               ("watch --once", lambda: cli(["watch", str(run), "--once"], (0, 1)))]
    if resume:
        readers.append(("train --resume", lambda: resumed_config(TrainRequest(resume=str(run), runs_dir=root), run)))
    if report:
        readers.append(("report --no-overlays", lambda: cli(["report", str(run), "--no-overlays", "--out",
                                                             str(root.parent / "report")])))
    return readers


def fuzz_runs(args, tally: Tally) -> None:
    """A run folder's events.jsonl, submissions.jsonl, scores.json and config.toml, as `runs`, `watch --once`,
    `report` and `train --resume` read them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401 - imported here, not in a child under the memory limit

    files = RUN_FILES[args.reader]
    with scratch(f"fuzz_{args.reader}_", args.keep) as tmp:
        base = base_runs(tmp)
        for _, read in run_readers(base, base / "b", resume=True, report=True):  # what they import, once here
            read()
        shutil.rmtree(base.parent / "report")
        for case, rng in cases(args):
            work = tmp / str(case)
            shutil.copytree(base.parent, work, symlinks=True)
            root = work / "runs"
            run, what = damage_run_file(rng, root, files[int(rng.integers(len(files)))])
            if args.keep:
                print("kept", work)
            # a completed its epochs: a resume is refused; matplotlib's curves and the page: one case in 20
            readers = run_readers(root, run, resume=args.reader == "config" and run.name == "b", report=case % 20 == 0)
            tally.read(args, case, what, readers, work)


def _label_volumes(folder: Path, shapes: dict[str, tuple[int, int, int]], seed: int = 0) -> dict[str, np.ndarray]:
    """uint8 label NIfTI files `<case>.nii.gz` in `folder`: liver 1, a tumour 2, random blobs; case -> volume."""
    import nibabel as nib

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = {}
    for case, shape in shapes.items():
        volume = (rng.random(shape) < 0.4).astype(np.uint8)
        volume[(rng.random(shape) < 0.1) & (volume == 1)] = 2
        nib.save(nib.Nifti1Image(volume, np.eye(4)), str(folder / f"{case}.nii.gz"))
        out[case] = volume
    return out


def csv_readers(path: Path, labels: Path, n_slices: dict[str, int]) -> list[tuple[str, object]]:
    """(name, read) of everything that reads the CSV `path`: evaluate_submission against the label folder, the
    `evaluate` command, read_sample as `submit --sample` reads it (with the store's test slices `n_slices`, and
    the check against them) and without them."""
    from liverctl.infer.evaluate import evaluate_submission
    from liverctl.infer.submission import read_sample

    return [("evaluate_submission", lambda: evaluate_submission(path, labels)),
            ("read_sample", lambda: read_sample(path, n_slices).check_cases(n_slices)),
            ("read_sample (no store)", lambda: read_sample(path)),
            ("evaluate", lambda: cli(["evaluate", str(path), "--labels", str(labels)]))]


def base_submission(tmp: Path) -> tuple[Path, Path, dict[str, int]]:
    """(a submission CSV, the folder of the label volumes it was made from, their slice counts): two cases."""
    from liverctl.infer.submission import write_submission

    shapes = {"0": (6, 5, 3), "1": (4, 4, 2)}
    volumes = _label_volumes(tmp / "labels", shapes)
    write_submission(tmp / "base.csv", ((c, v > 0) for c, v in volumes.items()))
    return tmp / "base.csv", tmp / "labels", {c: s[2] for c, s in shapes.items()}


def fuzz_csv(args, tally: Tally) -> None:
    """A submission CSV as `evaluate` reads it, and a sample submission as `submit --sample` reads it."""
    with scratch("fuzz_csv_", args.keep) as tmp:
        base, labels, n_slices = base_submission(tmp)
        for _, read in csv_readers(base, labels, n_slices):  # what they import, once here
            read()
        text = base.read_text()
        for case, rng in cases(args):
            work = tmp / str(case)
            work.mkdir()
            path = work / "submission.csv"
            data, what = mutate_csv(rng, text)
            path.write_bytes(data)
            if args.keep:
                print("kept", path)
            tally.read(args, case, what, csv_readers(path, labels, n_slices), work)


DECATHLON_JSON = {"name": "Liver", "description": "liver and tumour", "tensorImageSize": "3D", "modality": {"0": "CT"},
                  "labels": {"0": "background", "1": "liver", "2": "cancer"}, "numTraining": 2, "numTest": 1,
                  "training": [{"image": "./imagesTr/liver_0.nii.gz", "label": "./labelsTr/liver_0.nii.gz"},
                               {"image": "./imagesTr/liver_1.nii.gz", "label": "./labelsTr/liver_1.nii.gz"}],
                  "test": ["./imagesTs/liver_2.nii.gz"]}
NNUNET_JSON = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1, "tumor": [2]}, "numTraining": 2,
               "file_ending": ".nii.gz", "name": "Dataset003_Liver"}


def base_sources(tmp: Path) -> dict[str, Path]:
    """A Decathlon and an nnU-Net folder of small volumes (labels 0, 1, 2) with their dataset.json."""
    import nibabel as nib

    shapes = {"0": (16, 16, 3), "1": (16, 16, 2), "2": (16, 16, 2)}
    volumes = _label_volumes(tmp / "labels", shapes)
    msd, nnunet = tmp / "msd", tmp / "nnunet"
    for case, label in volumes.items():
        ct = nib.Nifti1Image((label.astype(np.int16) * 100 - 50), np.eye(4))
        folder = "imagesTs" if case == "2" else "imagesTr"
        for root, image_name in ((msd, f"liver_{case}.nii.gz"), (nnunet, f"liver{case}_0000.nii.gz")):
            (root / folder).mkdir(parents=True, exist_ok=True)
            nib.save(ct, str(root / folder / image_name))
            if case != "2":
                (root / "labelsTr").mkdir(exist_ok=True)
                label_name = f"liver_{case}.nii.gz" if root is msd else f"liver{case}.nii.gz"
                shutil.copyfile(tmp / "labels" / f"{case}.nii.gz", root / "labelsTr" / label_name)
    (msd / "dataset.json").write_text(json.dumps(DECATHLON_JSON, indent=4))
    (nnunet / "dataset.json").write_text(json.dumps(NNUNET_JSON, indent=4))
    return {"decathlon": msd, "nnunet": nnunet}


def dataset_readers(root: Path, store: Path, layout: str, *, ingest: bool = False) -> list[tuple[str, object]]:
    """(name, read) of what reads the source folder `root`'s dataset.json: find_source and the plan (checked) for
    `store`, `ingest --dry-run`, and `ingest`: the ingest itself (a second)."""
    from liverctl.data.ingest import ingest_sources
    from liverctl.data.sources import find_source
    from liverctl.data.sources.plan import plan_sources
    from liverctl.errors import LiverctlError

    def plan():
        found = find_source(root, layout)
        for line in [*map(str, found.problems), *found.skipped]:  # printed by ingest and its dry run, one a line
            if "\n" in line or len(line) > LONGEST_LINE:
                raise RuntimeError(f"a problem or note line of {len(line)} characters: {line[:300]!r}")
        plan_sources([root], store, layouts={None: layout}).check()

    def ingest_it():
        summary = ingest_sources([root], store, layouts={None: layout}, workers=1)
        if not summary.ok:
            raise LiverctlError(f"{summary.failures}"[:300])

    readers = [("plan", plan),
               ("ingest --dry-run", lambda: cli(["ingest", str(root), "--store", str(store), "--layout", layout,
                                                 "--dry-run"]))]
    return [*readers, ("ingest", ingest_it)] if ingest else readers


def fuzz_dataset(args, tally: Tally) -> None:
    """A Decathlon or nnU-Net dataset.json as ingest's layouts read it (`data/sources/`): the plan, the dry run,
    and now and then the ingest itself."""
    with scratch("fuzz_dataset_", args.keep) as tmp:
        bases = base_sources(tmp / "base")
        for layout, root in bases.items():  # what they import, once here
            for _, read in dataset_readers(root, tmp / "base" / f"{layout}.zarr", layout, ingest=True):
                read()
        for case, rng in cases(args):
            layout = list(bases)[int(rng.integers(len(bases)))]
            work = tmp / str(case)
            root = work / layout
            shutil.copytree(bases[layout], root)
            path = root / "dataset.json"
            data, what = mutate_json_text(rng, path.read_text())
            path.write_bytes(data)
            what = f"{layout} dataset.json: {what}"
            store = work / "liver.zarr"
            if args.keep:
                print("kept", path)
            tally.read(args, case, what, dataset_readers(root, store, layout, ingest=case % 10 == 0), work)


FUZZERS = {"nifti": fuzz_nifti, "checkpoint": fuzz_checkpoint, "json": fuzz_json, "events": fuzz_runs,
           "submissions": fuzz_runs, "config": fuzz_runs, "csv": fuzz_csv, "dataset": fuzz_dataset}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reader", choices=list(FUZZERS))
    parser.add_argument("--cases", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", type=int, default=None, help="run this case number only (a reproducer)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a case may take")
    parser.add_argument("--memory", type=int, default=1500, help="MB of address space a case may add")
    parser.add_argument("--keep", action="store_true", help="keep the files made (their paths printed)")
    args = parser.parse_args()
    tally = Tally(args.seed)
    started = time.monotonic()
    FUZZERS[args.reader](args, tally)
    tally.report()
    print(f"{time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
