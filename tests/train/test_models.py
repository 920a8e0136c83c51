"""Model factory: every preset builds, shapes follow the context, pretrained weights never hang."""

from __future__ import annotations

import time

import pytest
import torch

from liverctl.config import list_presets, resolve_config
from liverctl.errors import LiverctlError
from liverctl.train import models
from liverctl.train.models import build_model

torch.set_num_threads(1)


@pytest.mark.parametrize("preset", sorted(list_presets()))
def test_every_preset_builds_a_model_with_its_input_channels(preset):
    cfg = resolve_config(preset, ["model.encoder_weights=none"])
    model = build_model(cfg).eval()
    channels = 2 * cfg["data"]["context"] + 1
    with torch.no_grad():
        logits = model(torch.zeros(1, channels, 64, 64))
    assert logits.shape == (1, 1, 64, 64)


def test_missing_weights_fail_fast_with_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    cfg = resolve_config("v3")
    t0 = time.monotonic()
    with pytest.raises(LiverctlError) as err:
        build_model(cfg)
    assert time.monotonic() - t0 < 10
    msg = str(err.value)
    assert "model.encoder_weights=none" in msg and "model.encoder_weights_path" in msg


def test_no_network_is_detected_without_the_hub_timeout(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(models, "hub_reachable", lambda timeout=1.5: False)
    with pytest.raises(LiverctlError, match="no network"):
        build_model(resolve_config("v4"))


def test_unknown_weights_name_lists_the_available(monkeypatch):
    with pytest.raises(LiverctlError, match="available: imagenet"):
        build_model(resolve_config("v4", ["model.encoder_weights=instagram"]))


def test_local_weights_file_is_loaded_and_fitted_to_one_channel(tmp_path):
    source = build_model(resolve_config("demo", ["data.context=1"]))  # 3-channel encoder
    path = tmp_path / "resnet18.pth"
    torch.save(source.encoder.state_dict(), path)
    cfg = resolve_config("demo", ["data.context=0", f"model.encoder_weights_path='{path}'"])
    model = build_model(cfg)
    src, dst = source.encoder.state_dict(), model.encoder.state_dict()
    assert torch.equal(dst["layer1.0.conv1.weight"], src["layer1.0.conv1.weight"])
    assert dst["conv1.weight"].shape[1] == 1
    assert torch.allclose(dst["conv1.weight"], src["conv1.weight"].sum(1, keepdim=True))


def test_a_weights_file_under_home_is_found_by_its_tilde_path(tmp_path, monkeypatch):
    """`--set model.encoder_weights_path=~/resnet18.pth` (the shell leaves `~` after a dotted key's `=`) said
    "~/resnet18.pth: encoder weights file not found" beside the file, while `--set data.store=~/x` was found."""
    source = build_model(resolve_config("demo"))
    torch.save(source.encoder.state_dict(), tmp_path / "resnet18.pth")
    monkeypatch.setenv("HOME", str(tmp_path))
    model = build_model(resolve_config("demo", ["model.encoder_weights_path='~/resnet18.pth'"]))
    assert torch.equal(model.encoder.state_dict()["conv1.weight"], source.encoder.state_dict()["conv1.weight"])


def test_missing_local_weights_file(tmp_path):
    cfg = resolve_config("demo", [f"model.encoder_weights_path='{tmp_path / 'nope.pth'}'"])
    with pytest.raises(LiverctlError, match="nope.pth"):
        build_model(cfg)


class _RunsCode:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os
        import shlex

        return (os.system, (f"touch {shlex.quote(self.marker)}",))


def test_weights_file_that_would_run_code_is_refused_in_one_line(tmp_path):
    path = tmp_path / "encoder.pth"
    torch.save({"conv1.weight": torch.zeros(1), "x": _RunsCode(tmp_path / "PWNED")}, path)
    cfg = resolve_config("demo", [f"model.encoder_weights_path='{path}'"])
    with pytest.raises(LiverctlError, match="may contain code") as exc:
        build_model(cfg)
    assert str(exc.value).startswith(str(path)) and "\n" not in str(exc.value)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("arch", ["Unet", "UnetPlusPlus", "MAnet", "Linknet", "FPN", "DeepLabV3", "DeepLabV3Plus",
                                  "UPerNet", "Segformer"])
def test_the_architectures_defaults_toml_offers_map_a_slice_to_logits_of_its_size(arch):
    """model.decoder_channels (a list per stage) goes only to the decoders that take one: DeepLabV3Plus and
    UPerNet took it as their one number and failed with a TypeError traceback."""
    from liverctl.train.start import check_model

    cfg = resolve_config("demo", [f"model.arch='{arch}'", "data.input_size=64"])
    assert check_model(cfg) > 0
    with torch.no_grad():
        assert build_model(cfg).eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 1, 64, 64)


@pytest.mark.parametrize(
    ("sets", "refused"),
    [
        (["model.arch='PSPNet'"], r"PSPNet / resnet18 with model.encoder_depth=5 gives 16x16 logits for a 64x64 input "
                                  r"\(data.input_size\); .* change model.encoder_depth \(PSPNet: 3\)"),
        (["model.arch='PAN'"], r"PAN / resnet18 cannot train on batches of 64x64 slices \(train.batch_size, "
                               r"data.input_size\); it takes data.input_size 128 and more: "),
        (["model.arch='DeepLabV3'", "train.batch_size=1"],
         r"DeepLabV3 / resnet18 cannot train on a batch of 1 of 64x64 slices .*: Expected more than 1 value per"),
        (["model.arch='DPT'", "model.encoder='tu-vit_tiny_patch16_224'"],
         r"cannot build model DPT / tu-vit_tiny_patch16_224 \(model.encoder_depth=5\): "),
        (["model.arch='Unet'", "model.encoder_depth=4"],
         r"model.decoder_channels needs 4 entries for Unet \(one per encoder stage, model.encoder_depth\), got \[128"),
    ],
)
def test_a_model_that_cannot_give_logits_of_the_input_size_is_refused_in_one_line(sets, refused):
    from liverctl.train.start import check_model

    with pytest.raises(LiverctlError, match=refused) as info:
        check_model(resolve_config("demo", [*sets, "data.input_size=64"]))
    assert "\n" not in str(info.value)


def test_pspnet_at_its_own_depth_is_accepted():
    from liverctl.train.start import check_model

    assert check_model(resolve_config("demo", ["model.arch='PSPNet'", "model.encoder_depth=3", "data.input_size=64"]))


@pytest.mark.parametrize(
    ("encoder", "said"),
    [("tu-efficientnetv2_b0", "'tu-tf_efficientnetv2_b0'"), ("resnet19", "; did you mean 'resnet18'"),
     ("no-such-thing", "model.encoder: unknown encoder 'no-such-thing'; ")],
)
def test_an_unknown_encoder_is_one_line_with_the_nearest_names(encoder, said):
    """A timm name that timm does not know ended in a RuntimeError traceback; smp's own refusal listed all
    of its encoders. The nearest names are offered as every other hint offers them ('nearest: resnet18, ...',
    unquoted, was the one hint worded otherwise)."""
    for preset in ("demo", "v5"):  # v5 asks for imagenet weights: checked (cache, network) before any build
        with pytest.raises(LiverctlError, match=f"^model.encoder: unknown encoder '{encoder}'; ") as info:
            build_model(resolve_config(preset, [f"model.encoder='{encoder}'"]))
        assert said in str(info.value) and len(str(info.value)) < 200


def test_the_architectures_config_checks_are_smp_s():
    """`liverctl.config.validate` checks model.arch against `ARCHITECTURES` without importing smp."""
    import segmentation_models_pytorch as smp

    from liverctl.train.models import ARCHITECTURES

    assert sorted(name.lower() for name in ARCHITECTURES) == sorted(smp.MODEL_ARCHITECTURES_MAPPING)
