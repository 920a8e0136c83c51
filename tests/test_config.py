"""Config resolution: defaults <- preset <- --set, unknown keys and presets, TOML round trip."""

from __future__ import annotations

import pytest

from liverctl.config import (
    list_presets,
    load_defaults,
    load_preset,
    parse_override,
    read_config,
    resolve_config,
    write_config,
)
from liverctl.errors import LiverctlError

DESIGN_ROWS = ["v1", "v2", "v3", "v3.1", "v3.2", "v3.3", "v3.4", "v3.5", "v3.6", "v4", "v5", "v5-focal", "v6", "demo"]


def test_every_design_row_is_a_preset_with_a_description():
    presets = list_presets()
    assert set(DESIGN_ROWS) <= set(presets)
    assert all(presets[name].strip() for name in DESIGN_ROWS)


@pytest.mark.parametrize("name", DESIGN_ROWS)
def test_preset_resolves_and_holds_only_differences(name):
    cfg = resolve_config(name)
    defaults = load_defaults()
    assert cfg["preset"] == name
    assert set(cfg) - {"preset", "description"} == set(defaults)
    # a preset file restating defaults in every key would not be "only the differences"
    raw = load_preset(name)
    restated = [
        f"{s}.{k}" for s, body in raw.items() if isinstance(body, dict) for k, v in body.items() if defaults[s][k] == v
    ]
    assert len(restated) <= 2, restated


def test_preset_values_follow_the_design_table():
    assert resolve_config("v1")["data"]["context"] == 0
    assert resolve_config("v1")["data"]["normalize"] == "minmax"
    v2 = resolve_config("v2")
    assert (v2["model"]["arch"], v2["model"]["encoder"], v2["train"]["batch_size"]) == ("UnetPlusPlus", "efficientnet-b4", 8)
    assert resolve_config("v3")["data"]["context"] == 1
    assert resolve_config("v4")["post"]["mode"] == "largest"
    assert resolve_config("v4")["data"]["augment"] == "distort"
    assert resolve_config("demo")["model"]["encoder_weights"] == "none"


def test_set_overrides_with_toml_literals_and_bare_words():
    cfg = resolve_config("v3", ["optim.lr=3e-4", "train.epochs=2", "model.encoder=resnet18", "data.window=[-50, 150]"])
    assert cfg["optim"]["lr"] == pytest.approx(3e-4)
    assert cfg["train"]["epochs"] == 2
    assert cfg["model"]["encoder"] == "resnet18"
    assert cfg["data"]["window"] == [-50, 150]


def test_int_is_widened_to_float_but_wrong_types_fail():
    assert isinstance(resolve_config("v3", ["optim.lr=1"])["optim"]["lr"], float)
    with pytest.raises(LiverctlError, match="train.epochs"):
        resolve_config("v3", ["train.epochs=many"])


def test_unknown_key_suggests_the_nearest():
    with pytest.raises(LiverctlError, match="did you mean 'optim.lr'"):
        resolve_config("v3", ["optim.lrr=1e-3"])
    with pytest.raises(LiverctlError, match="did you mean 'train.epochs'"):
        resolve_config("v3", ["train.epoch=3"])


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(LiverctlError, match="valid presets: .*v3.1"):
        resolve_config("v9")


@pytest.mark.parametrize("name", ["a" * 5000, "../defaults", "demo/../demo", "demo\x00"])
def test_a_preset_name_is_never_a_path(name):
    """A preset name 5000 characters long was a traceback (OSError: File name too long), and
    `../defaults` loaded defaults.toml as a preset: a name is looked up among the preset files."""
    with pytest.raises(LiverctlError) as info:
        resolve_config(name)
    assert str(info.value).startswith("unknown preset ") and len(str(info.value)) < 300


def test_bad_override_syntax():
    with pytest.raises(LiverctlError, match="section.key=value"):
        parse_override("foo=3")


@pytest.mark.parametrize("text, owners", [("lr=3", "'optim.lr'"), ("epochs=3", "'train.epochs'"),
                                          ("batch_size=8", "'train.batch_size' or 'infer.batch_size'")])
def test_a_key_without_its_section_is_said_where_it_is(text, owners):
    """`--set epochs=3` was "--set expects section.key=value, got 'epochs=3'", the section left to be found; the
    keys are quoted as every hint quotes its names (`suggest.hint_for`)."""
    with pytest.raises(LiverctlError) as info:
        parse_override(text)
    assert str(info.value) == f"--set expects section.key=value, got '{text}'; did you mean {owners}?"


def test_cross_key_checks():
    with pytest.raises(LiverctlError, match="multiple of 32"):
        resolve_config("demo", ["data.input_size=100"])


def test_written_config_reads_back_identical(tmp_path):
    cfg = resolve_config("v3.4", ["train.epochs=3"])
    write_config(cfg, tmp_path / "config.toml")
    assert read_config(tmp_path / "config.toml") == cfg


@pytest.mark.parametrize("override", ["optim.lr=nan", "optim.lr=inf", "optim.min_lr=-inf", "data.window=[nan, 200.0]"])
def test_non_finite_numbers_are_refused_in_one_line(override):
    with pytest.raises(LiverctlError, match=f"config key '{override.split('=')[0]}' in .* is not a finite number in range"):
        resolve_config("demo", [override])


def test_a_config_from_elsewhere_is_checked_and_completed():
    from liverctl.config import check_config

    cfg = resolve_config("demo")
    del cfg["post"]["mode"]  # a key added after that config was written: the default fills it in
    assert check_config(cfg, "somewhere")["post"]["mode"] == resolve_config("demo")["post"]["mode"]
    with pytest.raises(LiverctlError, match="somewhere.*not a table"):
        check_config(["data"], "somewhere")
    cfg["optim"]["lr"] = 0.0
    with pytest.raises(LiverctlError, match="^somewhere: optim.lr"):
        check_config(cfg, "somewhere")


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("[" * 5000, "--set optim.lr: value is not usable TOML (RecursionError)"),
        ("1" * 5000, "--set optim.lr: value is not usable TOML (ValueError)"),
        ("nan", "nan is not a finite number in range"),
        ("-inf", "-inf is not a finite number in range"),
        (str(10**30), "is not a finite number in range"),
    ],
)
def test_unusable_set_values_are_one_line(value, fragment):
    with pytest.raises(LiverctlError) as info:
        resolve_config("demo", [f"optim.lr={value}"])
    assert fragment in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("content", [b"\xff\xfe\x00garbage", b"x = " + b"[" * 5000, b"x = " + b"9" * 5000])
def test_a_garbage_config_file_is_one_line(tmp_path, content):
    path = tmp_path / "config.toml"
    path.write_bytes(content)
    with pytest.raises(LiverctlError, match=r"config\.toml: not valid TOML") as info:
        read_config(path)
    if content.startswith(b"x = 9"):  # Python's long message was cut by hand, with no mark: now "…" says so
        assert str(info.value).endswith("…") and len(str(info.value).split(": ", 1)[1]) < 160


# --- overrides applied to a resolved config (what --resume --epochs and the train command's options use) ---


def test_apply_overrides_takes_set_texts_and_typed_values_in_order_and_leaves_the_input_alone():
    from liverctl.config import apply_overrides

    cfg = resolve_config("v3")
    out = apply_overrides(cfg, ["train.epochs=3", "optim.lr=2e-4"], {"train.epochs": 7, "data.store": "a b/'c\".zarr"})
    assert out["train"]["epochs"] == 7 and out["optim"]["lr"] == 2e-4  # the later group wins
    assert out["data"]["store"] == "a b/'c\".zarr"  # any path, no quoting: no --set text is built
    assert cfg["train"]["epochs"] == 15 and cfg["data"]["store"] != out["data"]["store"]
    assert isinstance(apply_overrides(cfg, {"optim.lr": 1})["optim"]["lr"], float)  # widened as --set does
    assert apply_overrides(cfg) == cfg and apply_overrides(cfg) is not cfg


def test_apply_overrides_equals_resolving_the_preset_with_the_same_overrides():
    from liverctl.config import apply_overrides

    sets = ["train.epochs=4", "model.encoder=resnet18", "data.window=[-50, 150]"]
    assert apply_overrides(resolve_config("v5"), sets) == resolve_config("v5", sets)
    assert resolve_config("v5", sets[:1], {"model.encoder": "resnet18"}) == resolve_config("v5", sets[:2])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"optim.lrr": 1e-3}, "unknown config key 'optim.lrr' in override optim.lrr=0.001; did you mean 'optim.lr'?"),
        ({"train.epochs": "many"}, "config key 'train.epochs' in override train.epochs='many' expects int like 15"),
        ({"optim.lr": float("nan")}, "config key 'optim.lr' in override optim.lr=nan: nan is not a finite number"),
        ({"epochs": 3}, "config override expects section.key, got 'epochs'"),
        (["optim.lrr=1"], "unknown config key 'optim.lrr' in --set optim.lrr=1; did you mean 'optim.lr'?"),
        ({"train.epochs": 0}, "train.epochs must be >= 1, got 0"),  # validated after
    ],
)
def test_apply_overrides_checks_what_set_checks(overrides, message):
    from liverctl.config import apply_overrides

    with pytest.raises(LiverctlError) as info:
        apply_overrides(resolve_config("v3"), overrides)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("value", [2.0, -1.0, 0.0, 1.0])
def test_a_threshold_outside_0_1_is_refused(value):
    """A mask is probability >= infer.threshold: 2 made every mask empty (and -1 every pixel liver) and a
    run's validation Dice, or a submission, silently worthless."""
    from liverctl.config import apply_overrides, check_threshold

    with pytest.raises(LiverctlError, match=r"infer.threshold .*: a probability threshold must lie between 0 and 1"):
        apply_overrides(resolve_config("demo"), {"infer.threshold": value})
    with pytest.raises(LiverctlError, match=r"^--threshold .*between 0 and 1"):
        check_threshold(value, "--threshold")
    for bad in (float("nan"), "abc", None, [0.5]):
        with pytest.raises(LiverctlError, match="between 0 and 1"):
            check_threshold(bad)
    assert check_threshold(0.35) == 0.35 and check_threshold("0.5") == 0.5


def test_overrides_are_validated_once_after_every_group():
    # a value that is only valid once a later group has run is accepted, as one --set list would be
    cfg = resolve_config("demo", ["model.encoder_depth=4"], {"model.decoder_channels": [32, 16, 8, 8]})
    assert cfg["model"]["encoder_depth"] == 4


def test_in_channels_is_the_stack_of_2_context_plus_1_slices():
    from liverctl.config import in_channels

    assert [in_channels(resolve_config("demo", [f"data.context={c}"])) for c in (0, 1, 2)] == [1, 3, 5]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        # each of these passed the type check and ended in a traceback during training, or trained wrongly
        ("train.log_every=0", "train.log_every must be >= 1, got 0"),  # ZeroDivisionError at the first step
        ("train.seed=-1", "train.seed must be >= 0, got -1"),  # numpy's ValueError in the sampler
        ("optim.weight_decay=-1", "optim.weight_decay must be >= 0, got -1.0"),  # torch's ValueError
        ("optim.grad_clip=-1", "optim.grad_clip must be >= 0, got -1.0"),  # reversed the clipped gradient
        ("train.nan_lr_factor=-1", "train.nan_lr_factor must be > 0 and <= 1, got -1.0"),  # a negative lr
        ("train.nan_lr_factor=0", "train.nan_lr_factor must be > 0 and <= 1, got 0.0"),
        ("optim.min_lr=-1e-6", "optim.min_lr must be >= 0"),
        ("optim.min_lr=1", "optim.min_lr (1.0) must not exceed optim.lr"),
        ("optim.lr=1e-7", "optim.min_lr (1e-06) must not exceed optim.lr (1e-07)"),  # the schedule rose
        ("optim.warmup_steps=-1", "optim.warmup_steps must be >= 0, got -1"),
        ("data.liver_oversample=-1", "data.liver_oversample must be > 0, got -1.0"),
        ("data.liver_oversample=0", "data.liver_oversample must be > 0, got 0.0"),
        ("data.num_workers=-1", "data.num_workers must be >= 0, got -1"),
        ("data.max_val_cases=-1", "data.max_val_cases must be >= 0, got -1"),
        ("data.rotate_limit=-10", "data.rotate_limit must be >= 0, got -10"),
        ("data.input_size=0", "data.input_size must be >= 32, got 0"),
        ("data.window=['a', 'b']", "data.window must be [low, high] in HU with low < high, got ['a', 'b']"),
        ("data.window=[0, 'b']", "data.window must be [low, high]"),  # a TypeError comparing them
        ("loss.pos_weight=-5", "loss.pos_weight must be > 0, got -5.0"),
        ("loss.focal_gamma=-1", "loss.focal_gamma must be >= 0, got -1.0"),
        ("loss.tversky_alpha=-0.3", "loss.tversky_alpha must be >= 0"),
        ("loss.smooth=-1", "loss.smooth must be >= 0"),
        (["loss.tversky_alpha=0", "loss.tversky_beta=0"], "loss.tversky_alpha + loss.tversky_beta must be > 0"),
        ("train.steps_per_epoch=-1", "train.steps_per_epoch must be >= 0, got -1"),
        ("train.nan_skip_limit=0", "train.nan_skip_limit must be >= 1, got 0"),
        ("train.nan_max_rollbacks=-1", "train.nan_max_rollbacks must be >= 0, got -1"),
        ("train.inject_nan_at_steps=['a']", "train.inject_nan_at_steps must be a list of step numbers >= 0"),
        ("infer.batch_size=0", "infer.batch_size must be >= 1, got 0"),
        ("infer.cpu_threads=-1", "infer.cpu_threads must be >= 0, got -1"),
    ],
)
def test_numbers_out_of_range_are_refused_in_one_line_naming_the_key(override, message):
    with pytest.raises(LiverctlError) as info:
        resolve_config("demo", [override] if isinstance(override, str) else override)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("override", ["data.num_workers=0", "train.nan_max_rollbacks=0", "optim.grad_clip=0",
                                      "train.steps_per_epoch=0", "optim.min_lr=0", "train.nan_lr_factor=1",
                                      "loss.smooth=0", "data.rotate_limit=0", "optim.warmup_steps=0",
                                      ["optim.scheduler=constant", "optim.lr=1e-7"]])
def test_the_documented_zero_and_one_values_are_still_accepted(override):
    resolve_config("demo", [override] if isinstance(override, str) else override)


NAMED_VALUES = [
    ("post.mode=bogus", "post.mode: unknown post-processing 'bogus'"),
    ("post.mode=largest+", "post.mode: post-processing 'largest+' has an empty step"),
    ("loss.name='dice + foo'", "loss.name: unknown loss 'foo'"),
    ("model.arch=Unett", "model.arch: unknown architecture 'Unett' (did you mean 'Unet'?)"),
    ("infer.tta=hflipp", "infer.tta: unknown TTA mode 'hflipp'"),
    ("optim.name=lamb", "optim.name: unknown optimiser 'lamb'; valid: adamw, adam, sgd"),
    ("optim.scheduler=step", "optim.scheduler: unknown 'step'; valid: cosine, constant"),
]


def test_named_values_are_refused_when_the_config_resolves_without_importing_torch():
    """`--set post.mode=bogus` (or a wrong loss, architecture, TTA, optimiser name) was refused only by the
    training preflight, after torch had loaded (4 s into `liverctl train`); every command that resolves or reads
    a config (train, bench, submit and report through a run's config) now refuses it in `validate`, before any
    heavy import. One subprocess for all the cases: the check is that torch never loads."""
    import json
    import subprocess
    import sys

    script = (
        "import json, sys\n"
        "from liverctl.config import resolve_config\n"
        "from liverctl.errors import LiverctlError\n"
        "out = {}\n"
        f"for text, _ in {NAMED_VALUES!r}:\n"
        "    try:\n"
        "        resolve_config('demo', [text]); out[text] = None\n"
        "    except LiverctlError as exc:\n"
        "        out[text] = str(exc)\n"
        "resolve_config('demo', ['post.mode=auto', 'model.arch=unetplusplus', \"loss.name='0.5*bce + 0.5*dice'\"])\n"
        "print(json.dumps({'errors': out, 'heavy': [m for m in ('torch', 'segmentation_models_pytorch') "
        "if m in sys.modules]}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["heavy"] == []
    for text, message in NAMED_VALUES:
        assert result["errors"][text] is not None and message in result["errors"][text], text
        assert "\n" not in result["errors"][text]


def test_a_saved_config_with_an_unknown_name_is_refused_naming_its_file(tmp_path):
    from liverctl.config import to_toml

    cfg = resolve_config("demo")
    cfg["post"]["mode"] = "bogus"
    path = tmp_path / "config.toml"
    path.write_text(to_toml(cfg))
    with pytest.raises(LiverctlError, match=r"config.toml: post.mode: unknown post-processing 'bogus'"):
        read_config(path)
