"""Checkpoints: atomic, self-describing, sidecar without tensors, `load_run_model`; plain data only
(a file that would run code is refused by every reader), layout checked, old format converted on request."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
import torch
from full_disk import fill_disk

from liverctl.config import resolve_config
from liverctl.errors import LiverctlError
from liverctl.runs.checkpoint import (
    FORMAT,
    checkpoint_path,
    load_checkpoint,
    read_sidecar,
    rng_from_plain,
    rng_to_plain,
    save_checkpoint,
)
from liverctl.train.models import build_model, load_run_model

torch.set_num_threads(1)


def _state(cfg, model, dice=0.9):
    return {
        "run": "r",
        "preset": cfg["preset"],
        "config": cfg,
        "epoch": 2,
        "global_step": 40,
        "model": model.state_dict(),
        "optimizer": {},
        "metrics": {"val_loss": 0.1, "volume_dice": dice, "slice_dice": float("nan"), "global_dice": 0.9},
        "best": {"epoch": 2, "volume_dice": dice},
    }


@pytest.fixture
def cfg():
    return resolve_config("demo", ["data.input_size=64"])


def test_saved_checkpoint_loads_back_as_a_model(tmp_path, cfg):
    model = build_model(cfg)
    save_checkpoint(tmp_path, "best", _state(cfg, model))
    loaded, loaded_cfg = load_run_model(tmp_path, "best")
    assert loaded_cfg == cfg and not loaded.training
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model.eval()(x), atol=1e-5)


def test_sidecar_has_no_tensors_and_nan_as_null(tmp_path, cfg):
    save_checkpoint(tmp_path, "last", _state(cfg, build_model(cfg)))
    side = read_sidecar(tmp_path, "last")
    assert "model" not in side and side["epoch"] == 2
    assert side["metrics"]["slice_dice"] is None
    json.dumps(side, allow_nan=False)


def test_a_gpu_run_saves_cpu_tensors_that_a_plain_torch_load_reads_anywhere(tmp_path, cfg, monkeypatch):
    """torch.save records each tensor's device: a best.pt holding CUDA tensors fails a CPU-only notebook's plain
    `torch.load` ("Attempting to deserialize object on a CUDA device"). Fake CUDA tensors stand in for a GPU's."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        weight = torch.zeros(4, 3, device="cuda")
        moments = {"step": torch.tensor(3.0), "exp_avg": torch.zeros(4, 3, device="cuda")}
    assert weight.device.type == "cuda"
    state = {**_state(cfg, build_model(cfg)), "model": {"head.weight": weight},
             "optimizer": {"state": {0: moments}, "param_groups": [{"params": [0], "lr": 1e-3}]},
             "rng": {"cuda": [torch.zeros(16, dtype=torch.uint8)]}}
    saved = {}

    def spy(obj, fh):  # what torch.save is given (fake tensors hold no data to write)
        saved.update(obj)
        fh.write(b"fake")

    monkeypatch.setattr(torch, "save", spy)
    save_checkpoint(tmp_path, "best", state)
    devices = {t.device.type for part in ("model", "optimizer", "rng") for t in _tensors(saved[part])}
    assert devices == {"cpu"}
    assert saved["optimizer"]["param_groups"] == [{"params": [0], "lr": 1e-3}]


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)


def test_save_replaces_atomically_and_leaves_no_temp_files(tmp_path, cfg):
    model = build_model(cfg)
    save_checkpoint(tmp_path, "last", _state(cfg, model, 0.5))
    save_checkpoint(tmp_path, "last", _state(cfg, model, 0.7))
    assert load_checkpoint(checkpoint_path(tmp_path, "last"))["metrics"]["volume_dice"] == 0.7
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.json", "last.pt"]


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, cfg, monkeypatch):
    model = build_model(cfg)
    save_checkpoint(tmp_path, "last", _state(cfg, model, 0.5))

    def broken_save(obj, fh):
        fh.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    from liverctl.errors import LiverctlError

    with pytest.raises(LiverctlError, match="cannot write the checkpoint last.pt: disk full"):
        save_checkpoint(tmp_path, "last", _state(cfg, model, 0.7))
    monkeypatch.undo()
    assert load_checkpoint(checkpoint_path(tmp_path, "last"))["metrics"]["volume_dice"] == 0.5
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.json", "last.pt"]


def test_missing_and_foreign_checkpoints(tmp_path):
    with pytest.raises(LiverctlError, match="run folder not found"):
        load_run_model(tmp_path / "nope")
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(LiverctlError, match="no 'best' checkpoint"):
        load_run_model(tmp_path)
    torch.save({"weights": 1}, tmp_path / "checkpoints" / "best.pt")
    with pytest.raises(LiverctlError, match="not a liverctl checkpoint"):
        load_run_model(tmp_path)
    (tmp_path / "checkpoints" / "best.pt").write_bytes(b"garbage")
    with pytest.raises(LiverctlError, match="cannot read checkpoint"):
        load_run_model(tmp_path)


# --- untrusted files: nothing in a checkpoint runs, whatever reads it ---------------------------------


class _RunsCode:
    """Unpickling this runs a shell command that creates `marker` (what a malicious checkpoint does)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os
        import shlex

        return (os.system, (f"touch {shlex.quote(self.marker)}",))


def _malicious_run(root, cfg, marker, name="shared"):
    """A run folder as a stranger might publish it: config, sidecars, and best/last.pt carrying a payload."""
    from liverctl.config import write_config

    run = root / name
    model = build_model(cfg)
    for which in ("best", "last"):
        save_checkpoint(run, which, _state(cfg, model))  # honest sidecars and layout ...
        state = {"format": FORMAT, **_state(cfg, model), "payload": _RunsCode(marker)}
        torch.save(state, checkpoint_path(run, which))  # ... but a .pt that would run code when unpickled
    write_config(cfg, run / "config.toml")
    return run


def test_a_checkpoint_that_would_run_code_is_refused_by_every_reader(tmp_path, cfg, tiny_store):
    from typer.testing import CliRunner

    from liverctl.cli import app

    cfg["data"]["store"] = str(tiny_store)
    cfg["train"]["epochs"] = 5
    marker = tmp_path / "PWNED"
    run = _malicious_run(tmp_path / "runs", cfg, marker)
    with pytest.raises(LiverctlError, match="may contain code") as exc:
        load_run_model(run)
    assert str(checkpoint_path(run, "best")) in str(exc.value)

    runner = CliRunner()
    out = tmp_path / "sub.csv"
    result = runner.invoke(app, ["submit", "--run", str(run), "--store", str(tiny_store), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 2 and "may contain code" in result.stderr and "best.pt" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()

    result = runner.invoke(app, ["train", "--resume", str(run), "--device", "cpu", "-q"])
    assert result.exit_code == 2 and "may contain code" in result.stderr and "last.pt" in result.stderr

    result = runner.invoke(app, ["report", str(run), "--out", str(tmp_path / "rep"), "--store", str(tiny_store), "--device", "cpu"])
    assert "may contain code" in result.output  # the overlays are refused; the curves need no checkpoint
    assert result.exit_code == 2 and "report written without overlays" in result.stderr
    assert (tmp_path / "rep" / "index.html").is_file() and (tmp_path / "rep" / "curves.png").is_file()
    assert not marker.exists()


def test_missing_or_ill_typed_entries_are_one_line_not_a_keyerror(tmp_path, cfg):
    import copy

    model = build_model(cfg)
    path = checkpoint_path(tmp_path, "best")
    path.parent.mkdir()
    for change, words in [
        (lambda s: s.pop("config"), "no 'config' entry"),
        (lambda s: s.pop("model"), "no 'model' entry"),
        (lambda s: s.update(epoch="two"), "'epoch' should be a whole number"),
        (lambda s: s.update(config=[1, 2]), "'config' should be a table"),
        (lambda s: s.update(model={"w": [1.0]}), "table of tensors"),
        (lambda s: s.update(cases=["a"]), "'cases' should be a table, not list"),
        (lambda s: s.update(cases={"training": "a", "validation": []}), "'cases' should hold 'training': a list of"),
        (lambda s: s["config"]["optim"].update(lr=-1.0), "optim.lr must be > 0"),
        (lambda s: s["metrics"].update(volume_dice="0.9"), "'metrics' volume_dice should be a number, not str"),
        (lambda s: s["config"]["data"].pop("context"), None),  # an old config: the default fills it in
    ]:
        state = copy.deepcopy({"format": FORMAT, **_state(cfg, model)})
        change(state)
        torch.save(state, path)
        if words is None:
            assert load_checkpoint(path)["config"]["data"]["context"] == 1
            continue
        with pytest.raises(LiverctlError, match=words) as exc:
            load_run_model(tmp_path)
        assert str(exc.value).startswith(str(path)) and "\n" not in str(exc.value)
    state = {"format": FORMAT, **_state(cfg, model)}
    torch.save(state, path)
    with pytest.raises(LiverctlError, match="no 'scheduler' entry"):  # a resume needs more than a prediction
        load_checkpoint(path, resume=True)


def test_a_config_of_odd_keys_or_top_level_values_is_one_line(tmp_path, cfg):
    """A checkpoint is anyone's pickle: a config key that is not text ended in TypeError ('int' object is not
    iterable, from the nearest-key hint), and a preset or description that is not text (a table, a list nested
    thousands deep) was loaded and compared, printed or flattened as if it were."""
    model = build_model(cfg)
    path = checkpoint_path(tmp_path, "best")
    path.parent.mkdir()
    for config, words in [
        ({**cfg, 5: {}}, r"config key 5 in .* is not text \(int\)"),
        ({**cfg, "preset": {"a": 1}}, "config key 'preset' in .* should be text, not dict"),
        ({**cfg, "description": [[["deep"]]]}, "config key 'description' in .* should be text, not list"),
    ]:
        torch.save({"format": FORMAT, **_state(cfg, model), "config": config}, path)
        with pytest.raises(LiverctlError, match=words) as exc:
            load_run_model(tmp_path)
        assert str(path) in str(exc.value) and "\n" not in str(exc.value)


def test_a_config_value_that_is_a_tensor_is_one_short_line(tmp_path, cfg):
    """The config check printed the value it refused with repr: a tensor's is several lines, and a list of 10^5
    numbers made a line of 500 KB (scripts/fuzz_readers.py checkpoint). Now a value that is not plain is named by its
    type."""
    model = build_model(cfg)
    path = checkpoint_path(tmp_path, "best")
    path.parent.mkdir()
    for value, shown in ((torch.zeros(3, 3), "a Tensor"), (torch.zeros(1).as_strided((10**6, 10**6), (0, 0)), "a Tensor"),
                         ([0.5] * 10**5, "a list")):
        config = {**cfg, "train": {**cfg["train"], "log_every": value}}
        torch.save({"format": FORMAT, **_state(cfg, model), "config": config}, path)
        with pytest.raises(LiverctlError) as exc:
            load_checkpoint(path)
        assert str(exc.value) == f"config key 'train.log_every' in {path} (its config) expects int like 20, got {shown}"


def test_weights_that_do_not_fit_the_model_are_one_line_from_load_run_model(tmp_path, cfg):
    """load_state_dict's RuntimeError (a weight of another shape, a key missing) was turned into one line by
    predict's loader only: load_run_model, the API, ended in its traceback (scripts/fuzz_readers.py checkpoint).
    Now load_run_checkpoint says it, naming the file."""
    model = build_model(cfg)
    own = model.state_dict()
    key = next(k for k, v in own.items() if v.is_floating_point() and v.dim() == 1)
    path = checkpoint_path(tmp_path, "best")
    path.parent.mkdir()
    for weights, words in [({**own, key: torch.zeros(1)}, f"size mismatch for {key}"),
                           ({k: v for k, v in own.items() if k != key}, f'Missing key\\(s\\) in state_dict: "{key}"')]:
        torch.save({"format": FORMAT, **_state(cfg, model), "model": weights}, path)
        with pytest.raises(LiverctlError, match=f"^{path}: checkpoint weights do not fit the model its config "
                                                f"describes \\(.*{words}") as exc:
            load_run_model(tmp_path)
        assert "\n" not in str(exc.value)


def test_non_finite_weights_are_refused(tmp_path, cfg):
    model = build_model(cfg)
    state = _state(cfg, model)
    name = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][name] = state["model"][name].clone().fill_(float("nan"))
    save_checkpoint(tmp_path, "best", state)
    with pytest.raises(LiverctlError, match="weights are not finite") as exc:
        load_run_model(tmp_path)
    assert name in str(exc.value) and "best.pt" in str(exc.value)


def test_non_finite_weights_finds_every_nan_and_infinity_and_reads_a_finite_tensor_once(monkeypatch):
    """The check made a boolean copy of every weight (212-280 ms on the demo's v5 checkpoint, 12.5 M values; 12-17
    ms on sums, BENCHMARKS.md "Loading a checkpoint"): a tensor whose sum is finite is now passed on its sum; one
    whose sum is not is looked at whole, so a float16 tensor whose sum overflows is not refused for it."""
    from liverctl.runs.checkpoint import non_finite_weights

    clean = {"a": torch.rand(64, 64), "b": torch.full((1000,), 60000.0, dtype=torch.float16),
             "steps": torch.tensor(3)}
    assert not torch.isfinite(clean["b"].sum()) and non_finite_weights(clean) == []
    for bad in [float("nan"), float("inf"), -float("inf")]:
        for where in (0, 2047, 4095):
            damaged = {**clean, "a": clean["a"].clone().view(-1).index_fill_(0, torch.tensor(where), bad).view(64, 64)}
            assert non_finite_weights(damaged) == ["a"], (bad, where)
    both = clean["a"].clone()
    both[0, 0], both[5, 5] = float("inf"), -float("inf")
    assert non_finite_weights({"both": both, "half": torch.tensor([float("nan")], dtype=torch.float16)}) == [
        "both", "half"]
    looked_at: list[int] = []
    isfinite = torch.isfinite
    monkeypatch.setattr(torch, "isfinite", lambda t: looked_at.append(t.numel()) or isfinite(t))
    non_finite_weights({"a": clean["a"]})
    assert looked_at == [1], looked_at  # the sum, not the 4096 weights


def test_a_checkpoint_is_loaded_and_checked_on_one_torch_thread(tmp_path, cfg, monkeypatch):
    """Loading, copying and checking weights is memory work, done on one torch thread (device.one_torch_thread):
    2.8-3.6 s on 2 threads of a 2-core machine held by two busy loops, 2.6-2.7 s on one. torch's own count is back
    afterwards."""
    from liverctl.train import models

    save_checkpoint(tmp_path, "best", _state(cfg, build_model(cfg)))
    threads: list[int] = []
    check = models.non_finite_weights
    monkeypatch.setattr(models, "non_finite_weights", lambda w: threads.append(torch.get_num_threads()) or check(w))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        load_run_model(tmp_path)
        assert threads == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_weights_of_another_kind_than_the_model_holds_are_refused(tmp_path, cfg):
    """load_state_dict casts: integer or complex weights in a hostile checkpoint became float parameters (a
    complex one silently losing its imaginary part), and a float num_batches_tracked an integer buffer."""
    from liverctl.runs.checkpoint import check_weights_fit

    model = build_model(cfg)
    own = model.state_dict()
    weight = next(k for k, v in own.items() if v.is_floating_point() and v.dim() == 4)
    counter = next(k for k in own if k.endswith("num_batches_tracked"))
    state = _state(cfg, model)
    state["model"] = {**own, weight: own[weight].round().to(torch.int64)}
    save_checkpoint(tmp_path, "best", state)
    with pytest.raises(LiverctlError) as exc:
        load_run_model(tmp_path)
    assert str(exc.value) == (f"{checkpoint_path(tmp_path, 'best')}: refused: weight {weight!r} holds integer values "
                              "(int64) where the model holds floating-point ones (float32); the file is damaged or "
                              "was not written by liverctl train")
    for key, value, words in [
        (weight, own[weight].to(torch.complex64), "holds complex values (complex64)"),
        (counter, own[counter].to(torch.float32), "holds floating-point values (float32) where the model holds "
                                                   "integer ones (int64)"),
        (counter, own[counter].bool(), "holds boolean values (bool)"),
    ]:
        with pytest.raises(LiverctlError, match=f"^x.pt: refused: weight {key!r} {re.escape(words)}"):
            check_weights_fit({**own, key: value}, own, "x.pt")
    # float16 weights are still weights (loaded as the model's float32); keys the model lacks are load_state_dict's
    check_weights_fit({**{k: v.half() if v.is_floating_point() else v for k, v in own.items()}, "extra": 1j}, own, "x")


def test_encoder_weights_of_another_kind_are_refused(tmp_path, cfg):
    from liverctl.train.models import load_encoder_weights

    model = build_model(cfg)
    own = model.encoder.state_dict()
    key = next(k for k, v in own.items() if v.is_floating_point())
    path = tmp_path / "encoder.pt"
    torch.save({**own, key: own[key].to(torch.complex64)}, path)
    with pytest.raises(LiverctlError, match=f"^{path}: refused: weight {key!r} holds complex values"):
        load_encoder_weights(model, path)


def test_weights_of_a_claimed_huge_shape_are_refused_before_any_computing_on_them(tmp_path, cfg):
    """A stride-0 view claims any number of elements of one stored number (a few bytes in the file): isfinite()
    over a claimed (10^5, 10^5, 3, 3) weight tried to allocate 360 GB (a claim that fits in memory is allocated
    and computed on), and the first convolution of encoder weights was summed over its claimed size. Now the
    model's shapes are checked first (load_state_dict's size mismatch)."""
    from liverctl.infer.predict import load_run_models
    from liverctl.train.models import load_encoder_weights

    model = build_model(cfg)
    own = model.state_dict()
    key = next(k for k, v in own.items() if v.is_floating_point() and v.dim() == 4)
    claimed = torch.zeros(1).expand(10**5, 10**5, 3, 3)
    path = checkpoint_path(tmp_path, "best")
    path.parent.mkdir()
    torch.save({"format": FORMAT, **_state(cfg, model), "model": {**own, key: claimed}}, path)
    assert path.stat().st_size < 10 * sum(v.numel() * v.element_size() for v in own.values())
    with pytest.raises(LiverctlError, match=f"size mismatch for {key}") as exc:
        load_run_models([tmp_path])
    assert "allocate" not in str(exc.value)
    encoder = model.encoder.state_dict()
    first = next(k for k, v in encoder.items() if v.dim() == 4)
    weights = tmp_path / "encoder.pt"
    torch.save({**encoder, first: torch.zeros(1).expand(10**5, 4, 10**5, 10**5)}, weights)  # 4 inputs, not 3
    load_encoder_weights(model, weights)  # the claimed tensor fits nothing: left out, the rest loaded


def test_a_checkpoint_whose_parts_unpack_to_more_than_the_file_holds_is_refused(tmp_path, cfg):
    """torch's reader inflates a compressed zip member whole before comparing its size with its tensor: 32 MB of
    zeros deflated into a 32 kB file were loaded (a 1 MB file of them took 1 GB of memory before a refusal).
    torch.save stores every part as it is, so a compressed part is refused before torch reads it."""
    import io
    import zipfile

    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **_state(cfg, build_model(cfg)), "model": {"w": torch.zeros(8 << 20)}}, buffer)
    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as saved, zipfile.ZipFile(path, "w") as bomb:
        for member in saved.infolist():
            bomb.writestr(member.filename, saved.read(member.filename), compress_type=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < (1 << 20)
    with pytest.raises(LiverctlError) as exc:
        load_checkpoint(path)
    assert str(exc.value).startswith(f"{path}: cannot read checkpoint: its part ")
    assert "is compressed (torch.save stores every part as it is)" in str(exc.value)
    with pytest.raises(LiverctlError, match="is compressed"):  # read into memory to be checked first: the same
        load_checkpoint(path, verify=lambda sha256: None)


def test_a_bit_flipped_in_a_tensor_is_refused_by_the_crc_torch_save_recorded(tmp_path, cfg):
    """torch's reader never checks the CRC-32 each zip part records: a checkpoint with one bit of a weight flipped
    (a bad copy, a bad disk) loaded as other weights without a word. Now it is refused by every reader, naming the
    file; one saved without CRCs (torch.serialization.set_crc32_options(False), each recorded as 0) still loads."""
    import struct
    import zipfile

    model = build_model(cfg)
    path = save_checkpoint(tmp_path / "run", "best", _state(cfg, model))
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:  # the largest tensor's part, one bit in its middle
        part = max((m for m in archive.infolist() if "/data/" in m.filename), key=lambda m: m.file_size)
    assert part.CRC
    name_length, extra_length = struct.unpack("<HH", data[part.header_offset + 26: part.header_offset + 30])
    data[part.header_offset + 30 + name_length + extra_length + part.file_size // 2] ^= 0x10
    bad = tmp_path / "bad.pt"
    bad.write_bytes(bytes(data))
    flipped = torch.load(bad, weights_only=True)["model"]  # what torch alone makes of it: other weights
    assert any(not torch.equal(flipped[k], v) for k, v in model.state_dict().items())
    for read in (lambda: load_checkpoint(bad), lambda: load_checkpoint(bad, verify=lambda sha256: None)):
        with pytest.raises(LiverctlError) as exc:
            read()
        assert str(exc.value).startswith(f"{bad}: cannot read checkpoint: its part ")
        assert "does not match the CRC-32 torch.save recorded for it: the file is damaged" in str(exc.value)
    run = tmp_path / "run"
    checkpoint_path(run, "best").write_bytes(bytes(data))
    with pytest.raises(LiverctlError, match="does not match the CRC-32"):
        load_run_model(run, "best")

    torch.serialization.set_crc32_options(False)
    try:
        save_checkpoint(tmp_path / "no-crc", "best", _state(cfg, model))
    finally:
        torch.serialization.set_crc32_options(True)
    loaded = load_checkpoint(checkpoint_path(tmp_path / "no-crc", "best"))
    assert all(torch.equal(loaded["model"][k], v) for k, v in model.state_dict().items())


def test_checkpoints_are_plain_data_and_rng_states_round_trip(tmp_path, cfg):
    import random

    import numpy as np

    rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(), "cuda": None}
    save_checkpoint(tmp_path, "last", {**_state(cfg, build_model(cfg)), "rng": rng_to_plain(rng)})
    state = torch.load(checkpoint_path(tmp_path, "last"), weights_only=True)
    python_state, numpy_state = rng_from_plain(state["rng"])
    assert python_state == rng["python"]
    assert numpy_state[0] == rng["numpy"][0] and (numpy_state[1] == rng["numpy"][1]).all()
    assert numpy_state[2:] == rng["numpy"][2:]
    with pytest.raises(TypeError, match="not plain data"):  # never written, so never refused later
        save_checkpoint(tmp_path, "last", {**_state(cfg, build_model(cfg)), "rng": rng})


def test_previous_format_is_refused_then_converted_only_on_request(tmp_path, cfg):
    import random

    import numpy as np
    from typer.testing import CliRunner

    from liverctl.cli import app

    old = tmp_path / "old.pt"
    rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(), "cuda": None}
    model = build_model(cfg)
    torch.save({"format": FORMAT, **_state(cfg, model), "rng": rng}, old)  # as liverctl wrote it before
    with pytest.raises(LiverctlError, match="may contain code.*convert-checkpoint"):
        load_checkpoint(old)
    runner = CliRunner()
    result = runner.invoke(app, ["convert-checkpoint", str(old), str(tmp_path / "new.pt")])
    assert result.exit_code == 2 and "--trust-code" in result.stderr and not (tmp_path / "new.pt").exists()
    help_text = " ".join(runner.invoke(app, ["convert-checkpoint", "--help"]).output.split())
    assert "RUNS CODE" in help_text or "RUNS ANY CODE" in help_text
    result = runner.invoke(app, ["convert-checkpoint", str(old), str(tmp_path / "new.pt"), "--trust-code"])
    assert result.exit_code == 0, result.output
    state = load_checkpoint(tmp_path / "new.pt")
    assert rng_from_plain(state["rng"])[0] == rng["python"]
    assert json.loads((tmp_path / "new.json").read_text())["epoch"] == 2
    for key, tensor in model.state_dict().items():
        assert torch.equal(state["model"][key], tensor), key


def test_a_sidecar_that_is_not_a_json_object_reads_as_none(tmp_path):
    side = checkpoint_path(tmp_path, "last").with_suffix(".json")
    side.parent.mkdir()
    for content in (b"[1, 2]", b"\xff\xfe not utf-8", b"[" * 100_000 + b"]" * 100_000, b'{"epoch": 3'):
        side.write_bytes(content)
        assert read_sidecar(tmp_path, "last") is None
    side.write_bytes(b'{"epoch": 3}')
    assert read_sidecar(tmp_path, "last") == {"epoch": 3}


def test_a_full_disk_while_saving_a_checkpoint_is_one_line_and_leaves_no_temp_file(tmp_path, monkeypatch):
    import errno

    from liverctl import files
    from liverctl.errors import LiverctlError
    from liverctl.runs.checkpoint import save_checkpoint

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", no_space)
    with pytest.raises(LiverctlError) as info:
        save_checkpoint(tmp_path / "run", "last", {"config": {}, "model": {}, "epoch": 0, "global_step": 0})
    assert "no space left on" in str(info.value) and "the checkpoint last.pt" in str(info.value)
    assert "\n" not in str(info.value)
    assert list((tmp_path / "run" / "checkpoints").iterdir()) == []


def test_a_disk_that_fills_inside_torch_save_is_the_full_disk_line_and_keeps_the_last_checkpoint(
    tmp_path, monkeypatch
):
    """torch.save reports a failed write as its own RuntimeError ("[enforce fail at inline_container.cc]
    unexpected pos ..."); the CI machine's full disk showed that line. It must be the full-disk line."""
    cfg = resolve_config("demo", ["model.encoder='tu-mobilenetv3_small_050'"])
    model = build_model(cfg)
    save_checkpoint(tmp_path / "run", "last", _state(cfg, model))
    kept = checkpoint_path(tmp_path / "run", "last").read_bytes()
    fill_disk(monkeypatch, room=50_000)
    with pytest.raises(LiverctlError) as info:
        save_checkpoint(tmp_path / "run", "last", _state(cfg, model, dice=0.95))
    message = str(info.value)
    assert " no space left on " in message and message.endswith("while writing the checkpoint last.pt")
    assert "\n" not in message and "inline_container" not in message
    assert checkpoint_path(tmp_path / "run", "last").read_bytes() == kept
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["last.json", "last.pt"]


def test_a_file_size_limit_met_inside_torch_save_is_one_line(tmp_path):
    """The same through the kernel: a process whose file size limit (ulimit -f) is below the checkpoint's
    size gets EFBIG from write(2) inside torch.save, and says so in one line."""
    import subprocess
    import sys

    script = f"""
import resource, signal, torch
from liverctl.errors import LiverctlError
from liverctl.runs.checkpoint import save_checkpoint
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, resource.RLIM_INFINITY))
state = {{"config": {{}}, "model": {{"w": torch.zeros(1_000_000)}}, "epoch": 0, "global_step": 0}}
try:
    save_checkpoint({str(tmp_path / "run")!r}, "last", state)
except LiverctlError as exc:
    print("ERROR", exc)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ERROR ") and done.stdout.count("\n") == 1, done.stdout
    assert "cannot write the checkpoint last.pt: File too large" in done.stdout
    assert list((tmp_path / "run" / "checkpoints").iterdir()) == []


@pytest.mark.parametrize("optimiser", ["adamw", "sgd"])
def test_the_checkpoint_size_estimate_is_what_a_trained_checkpoint_takes(tmp_path, optimiser):
    from liverctl.runs.checkpoint import checkpoint_bytes
    from liverctl.train.session import build_optimizer

    cfg = resolve_config("demo", ["model.encoder='tu-mobilenetv3_small_050'", f"optim.name='{optimiser}'"])
    model = build_model(cfg)
    optimizer = build_optimizer(cfg, model.parameters())
    estimate = checkpoint_bytes(model, optimizer)
    from liverctl.config import in_channels

    model(torch.randn(2, in_channels(cfg), 64, 64)).mean().backward()
    optimizer.step()  # the optimiser's state exists from here on
    state = _state(cfg, model)
    state["optimizer"] = optimizer.state_dict()
    written = save_checkpoint(tmp_path, "last", state).stat().st_size
    assert 0.95 < written / estimate < 1.1, (written, estimate)


@pytest.mark.parametrize(("arch", "encoder"), [("Unet", "resnet18"), ("Segformer", "mit_b0"), ("Unet", "mit_b0")])
def test_the_planned_checkpoint_size_is_the_built_models_also_where_meta_building_fails(arch, encoder):
    """train checks the disk before anything is built, from a model on the meta device; mit_b0 (Segformer's
    encoder) cannot be built there and is built on the CPU instead."""
    from liverctl.runs.checkpoint import checkpoint_bytes
    from liverctl.train.session import build_optimizer
    from liverctl.train.start import check_model

    cfg = resolve_config("demo", [f"model.arch='{arch}'", f"model.encoder='{encoder}'"])
    model = build_model(cfg, pretrained=False)
    assert check_model(cfg) == checkpoint_bytes(model, build_optimizer(cfg, model.parameters()))


def test_fuzz_checkpoints_give_a_model_or_one_liverctl_error(tmp_path):
    """A checkpoint is anyone's file: a small model's checkpoint with bytes flipped, truncated, or entries replaced by
    odd but weights_only-legal values (tensors of other dtypes, shapes and a stride-0 one claiming 10^12 elements,
    nesting, long lists, text where tables go; scripts/fuzz_readers.py mutate_state), read by load_checkpoint (also
    for a resume) and load_run_model. A RuntimeError and a repr running past a minute escaped before. Flipped bytes
    that load are the weights saved: a flip inside a tensor is refused by the zip's CRC-32 (it loaded before)."""
    from collections import Counter

    from fuzz_script import load_fuzz_script, outcome
    from train_fixtures import SMALL_NET

    fuzz = load_fuzz_script()
    cfg = resolve_config("demo", ["data.input_size=64", *SMALL_NET, "model.encoder_weights='none'"])
    torch.manual_seed(0)
    model = build_model(cfg, pretrained=False)
    base = save_checkpoint(tmp_path / "base", "best", {**_state(cfg, model), "optimizer": {}}).read_bytes()
    run = tmp_path / "run"
    path = checkpoint_path(run, "best")
    path.parent.mkdir(parents=True)
    rng = np.random.default_rng(3)
    outcomes = Counter()
    for case in range(30):
        kind = int(rng.integers(4))
        if kind == 0:
            data = bytearray(base)
            for _ in range(int(rng.integers(1, 8))):
                data[int(rng.integers(len(data)))] = int(rng.integers(256))
            path.write_bytes(bytes(data))
            what = "bytes flipped"
        elif kind == 1:
            path.write_bytes(base[: int(rng.integers(len(base)))])
            what = "truncated"
        else:
            state = torch.load(io.BytesIO(base), weights_only=True)
            if kind == 2:
                what = fuzz.mutate_state(rng, state)
            else:  # a tensor where the file claims a weight, or a config value, is (shapes, dtypes, stride 0)
                keys = sorted(state["model"])
                key, odd = keys[int(rng.integers(len(keys)))], fuzz.odd_tensor(rng)
                if rng.random() < 0.7:
                    state["model"][key], what = odd, f"model[{key}] = {odd.dtype} {tuple(odd.shape)}"
                else:
                    state["config"]["train"]["epochs"], what = odd, f"config.train.epochs = {odd.dtype} {tuple(odd.shape)}"
            torch.save(state, path)
        what = f"case {case}: {what}"
        loaded = outcome(lambda: load_checkpoint(path), what)
        outcome(lambda: load_checkpoint(path, resume=True), what)
        if loaded == "ok":  # else load_run_model's own load_checkpoint refuses it alike
            outcomes[outcome(lambda: load_run_model(run), what)] += 1
            if kind < 2:  # flipped or cut bytes that load must be the weights saved (the zip's CRCs): never others
                weights = load_checkpoint(path)["model"]
                assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items()), what
        outcomes[loaded] += 1
    assert outcomes["ok"] >= 5 and outcomes["refused"] > 10, outcomes
