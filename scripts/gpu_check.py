"""The parts of `scripts/gpu-check.sh` that need Python: environment, model-only throughput, the NaN story,
reading a run's events, and the final JSON + Markdown summary.

Every part writes `<out>/<part>.json` as soon as it has its figures, so a part that fails or runs out of
time leaves the others' figures. Usage: python scripts/gpu_check.py PART --out DIR [options].
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from liverctl.config import in_channels

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _write(out: Path, part: str, data: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{part}.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    print(f"{part}: {len(data.get('runs') or data.get('ways') or data)} entries in {out / part}.json")


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _commit() -> str | None:
    """The commit the check ran on: GPU_CHECK_COMMIT (the device gets a copy of the tree without .git, so the
    session names it in the command), else git's HEAD where there is a .git, else None."""
    named = os.environ.get("GPU_CHECK_COMMIT", "").strip()
    if named:
        return named
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def part_env(args) -> None:
    import importlib.metadata as md

    import torch

    from liverctl.device import native_bf16

    names = ["torch", "torchvision", "segmentation-models-pytorch", "timm", "albumentations", "zarr", "numcodecs",
             "numpy", "nibabel", "connected-components-3d", "textual", "liverctl"]
    versions = {}
    for name in names:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    cuda = torch.cuda.is_available()
    try:  # the loader hands batches over through /dev/shm; a small one makes it fall back to files
        shm_free = round(shutil.disk_usage("/dev/shm").free / 2**30, 1)
    except OSError:
        shm_free = None
    _write(args.out, "env", {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": _commit(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "dev_shm_free_gib": shm_free,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None,
        "bf16": bool(cuda and native_bf16()),  # native, not emulated: what train.amp=auto takes
        "versions": versions,
    })


def _v5(preset: str, size: int):
    from liverctl.config import resolve_config

    return resolve_config(preset, [
        "model.encoder_weights=none", f"data.input_size={size}",
    ])


def _synthetic_batch(torch, generator, batch: int, channels: int, size: int, device):
    """A smooth random image stack and a blob mask drawn from it: (N, C, H, W) float, (N, 1, H, W) float."""
    low = torch.rand(batch, channels, size // 16, size // 16, generator=generator, device=device)
    image = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    mask = (image[:, channels // 2: channels // 2 + 1] > 0.55).float()
    return image, mask


def _plain_step(torch, model, loss_fn, optimizer, scaler, precision, clip: float,
                loss_in_autocast: bool = False, device: str = "cuda"):
    """A plain AMP step with no checks: autocast forward, the loss in float32 outside autocast unless
    `loss_in_autocast` (the notebooks' way), GradScaler backward, clipping, step. Returns the loss (a float)
    only when asked to (`step(image, mask, read=True)`), so that timing it reads nothing on the host.
    `precision`: a `liverctl.device.Precision`, as `_build` resolved it."""

    def step(image, mask, read: bool = False):
        optimizer.zero_grad(set_to_none=True)
        with precision.autocast_context(device):
            logits = model(image)
            if loss_in_autocast:
                loss = loss_fn(logits, mask)
        if not loss_in_autocast:
            loss = loss_fn(logits.float(), mask)
        scaler.scale(loss).backward()
        if clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        scaler.step(optimizer)
        scaler.update()
        return float(loss.detach()) if read else None

    return step


def _liverctl_step(torch, cfg: dict, model, loss_fn, optimizer, scaler, precision, device: str):
    """The trainer's own step, `liverctl.train.step.guarded_step` (float32 loss, GradScaler, clipping and
    the NaN guard's host reads and decision) on the same model, loss, optimiser and scaler. Returns the loss
    and the guard's action."""
    from liverctl.train.nan_guard import NaNGuard
    from liverctl.train.session import step_session
    from liverctl.train.step import guarded_step

    session = step_session(cfg, torch.device(device), precision, model, loss_fn, optimizer, scaler)
    guard = NaNGuard()

    def step(image, mask, read: bool = False):
        result = guarded_step(session, image, mask, guard)
        return (result.loss, result.action) if read else None

    return step


def _build(torch, cfg: dict, mode: str, channels_last: bool, device: str = "cuda"):
    """Model, loss, the trainer's optimiser, a GradScaler and the `Precision` of `mode` (bf16 | fp16), as
    the trainer resolves them (`liverctl.device.resolve_precision`), for both kinds of step."""
    from liverctl.device import resolve_precision
    from liverctl.train.losses import build_loss
    from liverctl.train.models import build_model
    from liverctl.train.session import build_optimizer

    model = build_model(cfg, pretrained=False).to(device).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = build_loss(cfg).to(device)
    optimizer = build_optimizer(cfg, model.parameters())
    precision = resolve_precision(mode, torch.device(device))
    scaler = torch.amp.GradScaler(device, enabled=precision.needs_scaler)
    return model, loss_fn, optimizer, scaler, precision


def _synchronize(torch, device: str, reset_peak: bool = False) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
        if reset_peak:
            torch.cuda.reset_peak_memory_stats()


def _peak_gib(torch, device: str) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None


# (step, channels_last + cudnn.benchmark): the plain AMP step, liverctl's guarded step (the trainer's), and
# one try of the memory format and autotuning on the plain step
MODEL_ONLY_VARIANTS = (("plain", False), ("liverctl", False), ("plain", True))


def part_model_only(args) -> None:
    """Images/s of v5 alone on tensors already on the GPU, per precision: a plain AMP step against
    liverctl's guarded step (what the guard costs), and channels_last + cudnn.benchmark; peak memory."""
    import torch

    device = args.device
    cfg = _v5("v5", args.size)
    channels = in_channels(cfg)
    clip = float(cfg["optim"]["grad_clip"])
    results = {"device": device, "size": args.size, "batch": args.batch, "steps": args.steps, "runs": []}
    for mode in args.precisions.split(","):
        for kind, channels_last in MODEL_ONLY_VARIANTS:
            torch.backends.cudnn.benchmark = channels_last
            torch.manual_seed(0)
            model, loss_fn, optimizer, scaler, precision = _build(torch, cfg, mode, channels_last, device)
            gen = torch.Generator(device=device).manual_seed(0)
            image, mask = _synthetic_batch(torch, gen, args.batch, channels, args.size, device)
            if channels_last:
                image = image.contiguous(memory_format=torch.channels_last)
            if kind == "liverctl":
                step = _liverctl_step(torch, cfg, model, loss_fn, optimizer, scaler, precision, device)
            else:
                step = _plain_step(torch, model, loss_fn, optimizer, scaler, precision, clip, device=device)
            for _ in range(min(5, args.steps)):  # warm-up: allocator, autotuning
                step(image, mask)
            _synchronize(torch, device, reset_peak=True)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(image, mask)
            _synchronize(torch, device)
            seconds = time.perf_counter() - t0
            results["runs"].append({
                "precision": mode, "step": kind, "channels_last_cudnn_benchmark": channels_last,
                "images_per_s": round(args.steps * args.batch / seconds, 1),
                "peak_memory_gib": _peak_gib(torch, device),
            })
            del model, optimizer, step
            if device == "cuda":
                torch.cuda.empty_cache()
            _write(args.out, "model_only", results)
    torch.backends.cudnn.benchmark = False


def part_nan_story(args) -> None:
    """v5-focal under fp16 autocast for `steps` steps on the same synthetic batches: the notebooks' way
    (smp losses inside autocast on fp16 logits, no checks) against liverctl's (its guarded step: float32 loss
    outside autocast, the NaN guard on; the guard's actions are counted, a rollback is the loop's)."""
    import segmentation_models_pytorch as smp
    import torch

    device = args.device
    cfg = _v5("v5-focal", args.size)
    channels = in_channels(cfg)
    dice = smp.losses.DiceLoss(mode="binary", from_logits=True)
    focal = smp.losses.FocalLoss(mode="binary", gamma=2.0)

    def notebook_loss(logits, mask):
        return 0.7 * dice(logits, mask) + 0.3 * focal(logits, mask)

    story = {"device": device, "preset": "v5-focal", "precision": "fp16", "size": args.size, "batch": args.batch,
             "steps": args.steps, "lr": float(cfg["optim"]["lr"]) * args.lr_scale, "ways": {}}
    for way in ("notebook", "liverctl"):
        torch.manual_seed(0)
        model, loss_fn, optimizer, scaler, precision = _build(torch, cfg, "fp16", False, device)
        for group in optimizer.param_groups:
            group["lr"] = story["lr"]
        if way == "notebook":
            step = _plain_step(torch, model, notebook_loss, optimizer, scaler, precision,
                               float(cfg["optim"]["grad_clip"]), loss_in_autocast=True, device=device)
        else:
            step = _liverctl_step(torch, cfg, model, loss_fn, optimizer, scaler, precision, device)
        gen = torch.Generator(device=device).manual_seed(1)
        first_nan, losses, scales, actions = None, [], [], {}
        t0 = time.perf_counter()
        for i in range(args.steps):
            image, mask = _synthetic_batch(torch, gen, args.batch, channels, args.size, device)
            out = step(image, mask, read=True)
            loss = out[0] if way == "liverctl" else out
            if way == "liverctl" and out[1] != "ok":
                actions[out[1]] = actions.get(out[1], 0) + 1
            if first_nan is None and not math.isfinite(loss):
                first_nan = i
            losses.append(loss)
            scales.append(float(scaler.get_scale()))
        finite = [x for x in losses if math.isfinite(x)]
        params_finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
        story["ways"][way] = {
            "first_non_finite_loss_step": first_nan,
            "non_finite_losses": len(losses) - len(finite),
            "guard_actions": actions if way == "liverctl" else None,
            "last_loss": losses[-1],
            "median_loss_last_50": statistics.median(finite[-50:]) if finite else None,
            "weights_finite_at_end": params_finite,
            "grad_scaler_scale_min_max_end": [min(scales), max(scales), scales[-1]],
            "seconds": round(time.perf_counter() - t0, 1),
        }
        _write(args.out, "nan_story", story)


def part_events(args) -> None:
    """What a real run did, from its events.jsonl: steps, samples/s (median after the first epoch's warm-up),
    NaN-guard events, the end status and best volume Dice."""
    from liverctl.runs.events import read_events

    log = args.run / "events.jsonl"
    if not log.is_file():
        _write(args.out, args.name, {"run": str(args.run), "error": "no events.jsonl: the run did not start"})
        return
    events = read_events(log)
    rates = [e["samples_per_s"] for e in events if e.get("kind") == "step" and e.get("samples_per_s")]
    end = next((e for e in reversed(events) if e.get("kind") == "run_end"), {})
    start = next((e for e in events if e.get("kind") == "run_start"), {})
    _write(args.out, args.name, {
        "run": str(args.run),
        "device": start.get("device"), "amp": start.get("amp"), "world_size": start.get("world_size"),
        "backend": start.get("distributed_backend"),
        "steps": max((e.get("step") or 0 for e in events), default=0),
        "samples_per_s_median": round(statistics.median(rates[len(rates) // 4:]), 1) if rates else None,
        "nan_events": [{k: e.get(k) for k in ("step", "action", "where", "message")}
                       for e in events if e.get("kind") == "nan"],
        "status": end.get("status"), "best": end.get("best"),
        "notes": [e.get("message") for e in events if e.get("kind") == "note"],  # the loader's plan, precision
        "gpu_mem_peak_gb": next((e.get("gpu_mem_peak_gb") for e in reversed(events) if e.get("gpu_mem_peak_gb")), None),
    })


def part_submission(args) -> None:
    """The last submission made from a run (its submissions.jsonl): rows, device, seconds of the whole
    `submit` (load, predict with TTA, post-process, write, check) and so its slices/s end to end."""
    log = args.run / "submissions.jsonl"
    lines = log.read_text().splitlines() if log.is_file() else []
    if not lines:
        _write(args.out, args.name, {"run": str(args.run),
                                     "error": "no submissions.jsonl: submit did not finish"})
        return
    last = json.loads(lines[-1])
    rows, seconds = last.get("rows"), last.get("seconds")
    _write(args.out, args.name, {
        "run": str(args.run), "rows": rows, "tta": last.get("tta"), "device": last.get("device"),
        "seconds": seconds, "slices_per_s": round(rows / seconds, 1) if rows and seconds else None,
    })


def _model_only_rate(parts: dict, precision: str, step: str) -> float | None:
    """images/s of the model alone with `step` ("plain" or "liverctl"), contiguous layout, no autotuning:
    the trainer's own settings."""
    for r in parts.get("model_only", {}).get("runs", []):
        if (r.get("precision"), r.get("step"), bool(r.get("channels_last_cudnn_benchmark"))) == (precision, step, False):
            return r.get("images_per_s")
    return None


def _verdicts(parts: dict) -> list[dict]:
    """The issue's targets from the parts' figures: full pipeline >= 0.9x model only (liverctl's guarded
    step, the trainer's own, on tensors already on the GPU), the guard's own cost (guarded vs a plain AMP
    step), no NaN in liverctl's v5-focal run, torchrun on NCCL. A missing figure is said to be missing,
    never passed."""
    out = []
    for amp in ("bf16", "fp16"):
        train = parts.get(f"train_{amp}", {})
        pipe, alone = train.get("samples_per_s_median"), _model_only_rate(parts, amp, "liverctl")
        ratio = round(pipe / alone, 2) if pipe and alone else None
        out.append({"figure": f"full pipeline vs model only, v5, {amp} (images/s)",
                    "measured": f"{pipe} / {alone} = {ratio}x" if ratio else f"missing ({pipe} / {alone})",
                    "target": ">= 0.9x",
                    "verdict": "not measured" if ratio is None else ("met" if ratio >= 0.9 else "MISSED")})
        plain = _model_only_rate(parts, amp, "plain")
        cost = round(plain / alone - 1, 3) if alone and plain else None
        out.append({"figure": f"the guard, model only, {amp}: time added per step "
                              "(guarded vs plain AMP step)",
                    "measured": "missing" if cost is None else f"{cost:.1%} ({plain} -> {alone} images/s)",
                    "target": "a few percent", "verdict": "not measured" if cost is None else (
                        "met" if cost <= 0.05 else "MISSED")})
    focal = parts.get("train_v5focal_fp16", {})
    nans = [e for e in focal.get("nan_events") or [] if e.get("action") != "report"]
    ended = focal.get("status") in ("completed", "interrupted")
    out.append({"figure": "liverctl's v5-focal under fp16: NaN-guard actions",
                "measured": f"{len(nans)} ({focal.get('status')}, {focal.get('steps')} steps)" if focal and
                "error" not in focal else "missing", "target": "none",
                "verdict": "not measured" if not ended else ("met" if not nans else "MISSED")})
    ddp = parts.get("train_torchrun", {})
    ran = bool(ddp) and "error" not in ddp
    out.append({"figure": "torchrun --nproc_per_node 1: backend and end",
                "measured": f"{ddp.get('backend')}, {ddp.get('status')}" if ran else "missing",
                "target": "nccl, completed", "verdict": "not measured" if not ran else (
                    "met" if (ddp.get("backend"), ddp.get("status")) == ("nccl", "completed") else "MISSED")})
    return out


def part_summary(args) -> None:
    """All parts' JSON in one file, and a Markdown table for BENCHMARKS.md."""
    parts = {p.stem: json.loads(p.read_text()) for p in sorted(args.out.glob("*.json")) if p.stem != "gpu-check"}
    stages = args.out / "stages.tsv"
    if stages.exists():
        parts["stages"] = [dict(zip(("part", "rc", "seconds"), line.split("\t"), strict=False))
                           for line in stages.read_text().splitlines() if line]
    (args.out / "gpu-check.json").write_text(json.dumps({**parts, "verdicts": _verdicts(parts)}, indent=2,
                                                        default=str) + "\n")
    lines = ["# GPU check", ""]
    env = parts.get("env", {})
    lines.append(f"{env.get('date')}, commit {env.get('commit') or 'unknown'}; {env.get('device')} ({env.get('gpu_memory_gib')} GiB), "
                 f"{env.get('cpus')} CPUs "
                 f"({env.get('cpu_model')}, /dev/shm {env.get('dev_shm_free_gib')} GiB free), "
                 f"CUDA {env.get('cuda')}, Python {env.get('python')}; "
                 + ", ".join(f"{k} {v}" for k, v in (env.get("versions") or {}).items() if v))
    lines += ["", "| part | exit | seconds |", "|---|---|---|"]
    lines += [f"| {s['part']} | {s['rc']} | {s['seconds']} |" for s in parts.get("stages", [])]
    mo = parts.get("model_only", {})
    if mo:
        lines += ["", f"Model only, v5 {mo.get('size')}x{mo.get('size')}, batch {mo.get('batch')}, "
                  f"{mo.get('steps')} steps:", "",
                  "| precision | step | channels_last + cudnn.benchmark | images/s | peak GiB |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r.get('precision')} | {r.get('step')} | {r.get('channels_last_cudnn_benchmark')} | "
                  f"{r.get('images_per_s')} | {r.get('peak_memory_gib')} |" for r in mo.get("runs", [])]
    for name in sorted(k for k in parts if k.startswith("train_")):
        t = parts[name]
        if "error" in t:  # a part that failed or was killed before its run wrote events: say so, go on
            lines.append(f"\n{name}: {t['error']} ({t.get('run')})")
            continue
        lines.append(f"\n{name}: device {t.get('device')}, amp {t.get('amp')}, world {t.get('world_size')}"
                     f"{' (' + t['backend'] + ')' if t.get('backend') else ''}, "
                     f"{t.get('steps')} steps, median {t.get('samples_per_s_median')} samples/s, "
                     f"status {t.get('status')}, best {t.get('best')}, "
                     f"nan events {len(t.get('nan_events') or [])}"
                     + "".join(f"; note: {n}" for n in t.get("notes") or []))
    verdicts = _verdicts(parts)
    if verdicts:
        lines += ["", "| figure | measured | target | verdict |", "|---|---|---|---|"]
        lines += [f"| {v['figure']} | {v['measured']} | {v['target']} | {v['verdict']} |" for v in verdicts]
    bench = parts.get("bench_training", {})
    if bench.get("figures"):
        from liverctl.bench.report import report_from_json, report_markdown

        lines += ["", "`liverctl bench --only training` on this machine:", "",
                  report_markdown(report_from_json(bench))]
    sub = parts.get("submit_figures", {})
    if sub:
        lines.append(f"\nsubmit: {sub['error']}" if "error" in sub else
                     f"\nsubmit: {sub.get('rows')} slices, tta {sub.get('tta')}, {sub.get('device')}, "
                     f"{sub.get('seconds')} s end to end = {sub.get('slices_per_s')} slices/s")
    story = parts.get("nan_story", {})
    for way, r in (story.get("ways") or {}).items():
        actions = r.get("guard_actions")
        lines.append(f"\nNaN story, {way} way ({story.get('preset')}, fp16, lr {story.get('lr')}, "
                     f"{story.get('steps')} steps): "
                     f"first non-finite loss at step {r.get('first_non_finite_loss_step')}, "
                     f"{r.get('non_finite_losses')} non-finite losses, "
                     + (f"guard actions {actions}, " if actions is not None else "")
                     + f"weights finite at end: {r.get('weights_finite_at_end')}, "
                     f"GradScaler scale min/max/end {r.get('grad_scaler_scale_min_max_end')}")
    (args.out / "gpu-check.md").write_text("\n".join(lines) + "\n")
    if not args.quiet:
        print("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("part", choices=["env", "model-only", "nan-story", "events", "submission", "summary"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--precisions", default="bf16,fp16")
    parser.add_argument("--lr-scale", type=float, default=1.0)
    parser.add_argument("--run", type=Path)
    parser.add_argument("--name", default="train")
    parser.add_argument("--quiet", action="store_true", help="summary: write the files, print nothing")
    parser.add_argument("--allow-cpu", action="store_true",
                        help="run model-only and nan-story on the CPU where no CUDA device is visible: a dry run "
                             "of the check's own code (its figures mean nothing)")
    args = parser.parse_args(argv)
    parts = {"env": part_env, "model-only": part_model_only, "nan-story": part_nan_story, "events": part_events,
             "submission": part_submission, "summary": part_summary}
    if args.part in ("model-only", "nan-story"):
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
        if args.device == "cpu" and not args.allow_cpu:
            sys.exit(f"gpu_check {args.part}: no CUDA device is visible")
    parts[args.part](args)


if __name__ == "__main__":
    main()
