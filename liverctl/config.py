"""Training configuration: `defaults.toml` <- `presets/<name>.toml` <- `--set section.key=value`.

A resolved config is a plain dict of sections (data, model, loss, optim, train, infer, post) plus the
top-level `preset` and `description`. `apply_overrides` changes a resolved config with the checks `--set`
gets (a resumed run with `--epochs`, a fold of an experiment), so no caller rebuilds `--set` texts. Every key must exist in `defaults.toml`; an unknown one fails with
the nearest valid key. Values keep the type of their default (an int is accepted where a float is).
The string "none" stands for "no value" (TOML has no null): see `is_none`.
"""

from __future__ import annotations

import copy
import math
import sys
from collections.abc import Iterable, Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from liverctl.errors import LiverctlError
from liverctl.files import natural_key, write_atomic
from liverctl.printable import one_line, quoted
from liverctl.suggest import did_you_mean, hint_for

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SECTIONS = ("data", "model", "loss", "optim", "train", "infer", "post")
TOP_LEVEL = ("preset", "description")


def _package_file(name: str) -> Path:
    return Path(str(resources.files("liverctl").joinpath(name)))


def presets_dir() -> Path:
    return _package_file("presets")


def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise LiverctlError("file not found", path=path) from None
    except tomllib.TOMLDecodeError as exc:
        raise LiverctlError(f"not valid TOML: {exc}", path=path) from None
    except (UnicodeDecodeError, RecursionError, ValueError) as exc:  # not UTF-8, nested too deep, huge integer
        raise LiverctlError(f"not valid TOML ({type(exc).__name__}): {one_line(exc, 120)}", path=path) from None
    except OSError as exc:
        raise LiverctlError(f"cannot read: {exc.strerror or exc}", path=path) from None


def load_defaults() -> dict:
    return _read_toml(_package_file("defaults.toml"))


def list_presets() -> dict[str, str]:
    """Preset name -> one-line description, in natural order (demo, v1, v2, v3, v3.1, ...)."""
    out = {}
    for path in sorted(presets_dir().glob("*.toml"), key=lambda p: natural_key(p.stem)):
        out[path.stem] = str(_read_toml(path).get("description", ""))
    return out


def is_none(value: Any) -> bool:
    """True for the spellings of "no value" a config may hold."""
    return value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null"))


def _valid_keys(defaults: dict) -> list[str]:
    return [f"{s}.{k}" for s in SECTIONS for k in defaults.get(s, {})]


def _unknown_key(key: str, defaults: dict, where: str) -> LiverctlError:
    valid = _valid_keys(defaults)
    near = did_you_mean(key, valid, cutoff=0.5)
    hint = f"; {near}" if near else f"; sections are {', '.join(SECTIONS)}"
    return LiverctlError(f"unknown config key {quoted(key)} in {where}{hint}")


def _coerce(key: str, value: Any, default: Any, where: str) -> Any:
    """Check `value` against the type of its default; ints are widened to float where a float is expected."""
    numbers = value if isinstance(value, list) else [value]
    bad = next((x for x in numbers if isinstance(x, (int, float)) and not isinstance(x, bool)
                and not (abs(x) < 2**63 and math.isfinite(x))), None)  # nan, inf or beyond int64 (a float's range too)
    if bad is not None:
        raise LiverctlError(f"config key {quoted(key)} in {where}: {quoted(bad, 40)} is not a finite number in range")
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, list):
        ok = isinstance(value, list)
    else:
        ok = True
    if not ok:
        raise LiverctlError(
            f"config key {quoted(key)} in {where} expects {type(default).__name__} like {default!r}, got {_shown(value)}"
        )
    return value


def _shown(value: Any) -> str:
    """A config value as found (a checkpoint's is anyone's pickle) in a message: a plain one as written, cut at 60
    characters; anything else by its type alone (a tensor's repr is several lines, and a stride-0 one claiming
    10^12 elements took minutes to print)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return quoted(value, 60)
    return f"a {type(value).__name__}"


def _merge(cfg: dict, updates: dict, defaults: dict, where: str) -> None:
    for section, body in updates.items():
        if not isinstance(section, str):  # a checkpoint is anyone's pickle: its keys need not be text
            raise LiverctlError(f"config key {quoted(section, 40)} in {where} is not text ({type(section).__name__})")
        if section in TOP_LEVEL:
            if not isinstance(body, str):  # printed and compared as text (runs, report, check_fold_config)
                raise LiverctlError(f"config key {quoted(section)} in {where} should be text, not {type(body).__name__}")
            cfg[section] = body
            continue
        if section not in SECTIONS or not isinstance(body, dict):
            raise _unknown_key(section, defaults, where)
        for key, value in body.items():
            full = f"{section}.{key}"
            if key not in defaults[section]:
                raise _unknown_key(full, defaults, where)
            cfg[section][key] = _coerce(full, value, defaults[section][key], where)


def parse_override(text: str) -> tuple[str, str, Any]:
    """`section.key=value` -> (section, key, value); the value is a TOML literal, else a plain string."""
    if "=" not in text:
        raise LiverctlError(f"--set expects section.key=value, got {quoted(text)}")
    lhs, rhs = text.split("=", 1)
    lhs = lhs.strip()
    if lhs.count(".") != 1:
        defaults = load_defaults()  # `--set epochs=3`: the key without its section, said where it is
        owners = [f"{section}.{lhs}" for section in SECTIONS if lhs in defaults.get(section, {})]
        hint = f"; {hint_for(owners)}" if owners else ""
        raise LiverctlError(f"--set expects section.key=value, got {quoted(text)}{hint}")
    section, key = lhs.split(".")
    try:
        value = tomllib.loads(f"v = {rhs.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = rhs.strip()  # bare words: resnet18, none, cosine
    except (RecursionError, ValueError) as exc:  # nested too deep, an integer of thousands of digits
        raise LiverctlError(f"--set {lhs}: value is not usable TOML ({type(exc).__name__})") from None
    return section, key, value


def check_shortcuts(sets: Iterable[str], shortcuts: Mapping[str, str]) -> None:
    """Refuse a `--set` of a key that a shortcut option given with it sets too (`shortcuts`: section.key -> the
    option as typed): `train --epochs 2 --set train.epochs=3` trained 2 epochs, the --set dropped without a word."""
    for text in sets:
        section, key, _ = parse_override(text)
        option = shortcuts.get(f"{section}.{key}")
        if option is not None:
            raise LiverctlError(f"{option} and --set {text} both set {section}.{key}; give one of them")


def load_preset(name: str) -> dict:
    """A preset by its name, one of the files in `presets/` (a name is never a path: `../defaults`, or one
    too long for the file system, is an unknown preset like any other)."""
    found = {path.stem: path for path in presets_dir().glob("*.toml")}
    if name not in found:
        valid = list(list_presets())  # in natural order, each file read once
        shown = repr(name) if len(name) <= 60 else repr(name[:60]) + f"... ({len(name)} characters)"
        near = did_you_mean(name, valid)
        raise LiverctlError(f"unknown preset {shown}; {f'{near} ' if near else ''}valid presets: {', '.join(valid)}")
    return _read_toml(found[name])


Overrides = Mapping[str, Any] | Iterable[str]


def resolve_config(preset: str, *overrides: Overrides) -> dict:
    """defaults <- preset <- each group of overrides (see `apply_overrides`), validated once at the end.
    Returns a fresh dict (safe to mutate)."""
    defaults = load_defaults()
    cfg = copy.deepcopy(defaults)
    _merge(cfg, load_preset(preset), defaults, f"preset {quoted(preset)}")
    cfg["preset"] = preset
    cfg.setdefault("description", "")
    return _apply(cfg, defaults, overrides)


def apply_overrides(cfg: dict, *overrides: Overrides) -> dict:
    """A copy of the resolved `cfg` with each group of `overrides` applied in turn, then validated.

    A group is `--set` texts (`["train.epochs=3", ...]`) or typed values (`{"train.epochs": 3}`); both get
    the checks `--set` gets: the key must exist (else the nearest one is suggested), the value keeps its
    default's type, numbers must be finite and in range. `cfg` itself is left as it is.
    """
    return _apply(copy.deepcopy(cfg), load_defaults(), overrides)


def _apply(cfg: dict, defaults: dict, groups: Iterable[Overrides]) -> dict:
    for group in groups:
        for key, value, where in _override_items(group):
            section, _, name = key.partition(".")
            _merge(cfg, {section: {name: value}}, defaults, where)
    validate(cfg)
    return cfg


def _override_items(group: Overrides) -> Iterator[tuple[str, Any, str]]:
    """(section.key, value, where) of each override of a group."""
    if isinstance(group, str):
        raise TypeError("overrides are a list of section.key=value texts or a mapping, not one string")
    if isinstance(group, Mapping):
        for key, value in group.items():
            if key.count(".") != 1:
                raise LiverctlError(f"config override expects section.key, got {quoted(key)}")
            yield key, value, f"override {key}={quoted(value, 60)}"
        return
    for text in group:
        section, key, value = parse_override(text)
        yield f"{section}.{key}", value, f"--set {text}"


# The numeric keys' ranges: key -> (low, high, low_open, high_open); None is no bound. Values outside them
# are refused before a run starts: some end in a traceback deep in training (log_every 0, a negative seed or
# weight decay), others train silently wrong (a negative grad_clip or nan_lr_factor turns the gradient around).
_RANGES: dict[str, tuple[float | None, float | None, bool, bool]] = {
    "data.context": (0, None, False, False),
    "data.input_size": (32, None, False, False),
    "data.rotate_limit": (0, None, False, False),
    "data.liver_oversample": (0, None, True, False),
    "data.num_workers": (0, None, False, False),
    "data.max_val_cases": (0, None, False, False),
    "loss.focal_gamma": (0, None, False, False),
    "loss.tversky_alpha": (0, None, False, False),
    "loss.tversky_beta": (0, None, False, False),
    "loss.focal_tversky_gamma": (0, None, True, False),
    "loss.pos_weight": (0, None, True, False),
    "loss.smooth": (0, None, False, False),
    "optim.lr": (0, None, True, False),
    "optim.weight_decay": (0, None, False, False),
    "optim.warmup_steps": (0, None, False, False),
    "optim.min_lr": (0, None, False, False),
    "optim.grad_clip": (0, None, False, False),
    "train.epochs": (1, None, False, False),
    "train.batch_size": (1, None, False, False),
    "train.seed": (0, None, False, False),
    "train.steps_per_epoch": (0, None, False, False),
    "train.log_every": (1, None, False, False),
    "train.nan_skip_limit": (1, None, False, False),
    "train.nan_max_rollbacks": (0, None, False, False),
    "train.nan_lr_factor": (0, 1, True, False),
    "infer.batch_size": (1, None, False, False),
    "infer.cpu_threads": (0, None, False, False),
}


def _check_range(cfg: dict, key: str) -> None:
    low, high, low_open, high_open = _RANGES[key]
    section, name = key.split(".")
    value = cfg[section][name]
    bounds = []
    if low is not None:
        bounds.append(f"> {low}" if low_open else f">= {low}")
    if high is not None:
        bounds.append(f"< {high}" if high_open else f"<= {high}")
    ok = (low is None or (value > low if low_open else value >= low)) and (
        high is None or (value < high if high_open else value <= high)
    )
    if not ok:
        raise LiverctlError(f"{key} must be {' and '.join(bounds)}, got {quoted(value)}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_threshold(value: Any, name: str = "infer.threshold") -> float:
    """A probability threshold as float, strictly between 0 and 1, else LiverctlError starting with `name`.

    A mask is `probability >= threshold`: at 0 or below every pixel is liver, at 1 or above (or NaN)
    none is, and a submission of such masks is still a valid CSV.
    """
    try:
        threshold = float(value)
    except (TypeError, ValueError, OverflowError):
        threshold = math.nan
    if not 0.0 < threshold < 1.0:
        raise LiverctlError(
            f"{name} {quoted(value, 40)}: a probability threshold must lie between 0 and 1 (exclusive), e.g. 0.5; "
            "masks are probability >= threshold"
        )
    return threshold


def validate(cfg: dict) -> None:
    """Cross-key checks that the type check cannot do."""
    data, loss, optim, train = cfg["data"], cfg["loss"], cfg["optim"], cfg["train"]
    for key in _RANGES:
        _check_range(cfg, key)
    if data["normalize"] not in ("window", "minmax"):
        raise LiverctlError(f"data.normalize must be window or minmax, got {quoted(data['normalize'])}")
    window = data["window"]
    if len(window) != 2 or not all(map(_is_number, window)) or window[0] >= window[1]:
        raise LiverctlError(f"data.window must be [low, high] in HU with low < high, got {window}")
    if data["input_size"] % 32:
        raise LiverctlError(f"data.input_size must be a multiple of 32, got {data['input_size']}")
    if data["augment"] not in ("none", "flip_rotate", "distort"):
        raise LiverctlError(f"data.augment must be none, flip_rotate or distort, got {quoted(data['augment'])}")
    if data["augment_on"] not in ("auto", "device", "cpu"):
        raise LiverctlError(f"data.augment_on must be auto, device or cpu, got {quoted(data['augment_on'])}")
    # model.decoder_channels against model.encoder_depth: liverctl.train.models (only some decoders take it)
    if loss["tversky_alpha"] + loss["tversky_beta"] <= 0:
        raise LiverctlError("loss.tversky_alpha + loss.tversky_beta must be > 0 (the Tversky index divides by it)")
    if optim["scheduler"] == "cosine" and optim["min_lr"] > optim["lr"]:
        raise LiverctlError(f"optim.min_lr ({optim['min_lr']}) must not exceed optim.lr ({optim['lr']}): the "
                            "cosine schedule falls from lr to min_lr; lower optim.min_lr too")
    steps = train["inject_nan_at_steps"]
    if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in steps):
        raise LiverctlError(f"train.inject_nan_at_steps must be a list of step numbers >= 0, got {quoted(steps)}")
    if train["amp"] not in ("auto", "bf16", "fp16", "off"):
        raise LiverctlError(f"train.amp must be auto, bf16, fp16 or off, got {quoted(train['amp'])}")
    if optim["name"] not in ("adamw", "adam", "sgd"):
        raise LiverctlError(f"optim.name: unknown optimiser {quoted(optim['name'])}; valid: adamw, adam, sgd")
    if optim["scheduler"] not in ("cosine", "constant"):
        raise LiverctlError(f"optim.scheduler: unknown {quoted(optim['scheduler'])}; valid: cosine, constant")
    check_threshold(cfg["infer"]["threshold"])
    _check_names(cfg)


def _check_names(cfg: dict) -> None:
    """The names whose lists other modules own (architectures, losses, TTA modes, post-processing steps),
    checked with those modules' parsers, none of which imports torch: a wrong name is refused in a fraction of
    a second, where it was refused only after torch had loaded (`liverctl train`: 4 s)."""
    from liverctl.infer.postprocess import check_spec
    from liverctl.infer.predict import parse_tta
    from liverctl.train.losses.names import parse_loss_name
    from liverctl.train.models import check_arch

    check_arch(cfg["model"]["arch"])
    parse_loss_name(cfg["loss"]["name"])
    for key, parse in (("infer.tta", parse_tta), ("post.mode", check_spec)):
        section, name = key.split(".")
        try:
            parse(cfg[section][name])
        except LiverctlError as exc:
            raise LiverctlError(f"{key}: {exc}") from None


def in_channels(cfg: dict) -> int:
    return 2 * int(cfg["data"]["context"]) + 1


def to_toml(cfg: dict) -> str:
    import tomli_w

    return tomli_w.dumps(cfg)


def write_config(cfg: dict, path: str | Path) -> None:
    """Write the resolved config atomically (`liverctl.files.write_atomic`)."""
    write_atomic(path, to_toml(cfg), what="the run's config")


def read_config(path: str | Path) -> dict:
    """A config written by `write_config`, checked against the current defaults (new keys filled in)."""
    return check_config(_read_toml(Path(path)), str(path))


def read_recorded_config(path: str | Path) -> dict:
    """A config.toml as it was written, nothing filled in or checked: what is compared with another record of
    the same run (`liverctl.experiment.folder.check_fold_config`)."""
    return _read_toml(Path(path))


def check_config(data: Any, where: str) -> dict:
    """A resolved config read from a file (config.toml, a checkpoint), as plain data: checked against the
    current defaults (new keys filled in) and validated; LiverctlError naming `where` otherwise."""
    if not isinstance(data, dict):
        raise LiverctlError(f"config in {where} is a {type(data).__name__}, not a table of sections")
    defaults = load_defaults()
    cfg = copy.deepcopy(defaults)
    _merge(cfg, data, defaults, where)
    try:
        validate(cfg)
    except LiverctlError as exc:
        raise LiverctlError(f"{where}: {exc}") from None
    return cfg
