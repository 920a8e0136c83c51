"""Losses: registry, weighted sums, float32 outside autocast, finite on extreme fp16 logits."""

from __future__ import annotations

import pytest
import torch

from liverctl.config import list_presets, resolve_config
from liverctl.errors import LiverctlError
from liverctl.train.losses import LOSSES, build_loss, parse_loss_name

torch.set_num_threads(1)

# 256 x 256 = 65536 pixels: any pixel sum over one all-liver image exceeds float16's max (65504).
SHAPE = (2, 1, 256, 256)


def _target() -> torch.Tensor:
    t = torch.zeros(SHAPE)
    t[0] = 1.0  # one image all liver, the other half liver
    t[1, :, :128] = 1.0
    return t


def _extreme_logits(target: torch.Tensor) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    signs = torch.randint(0, 2, SHAPE, generator=g).float() * 2 - 1
    return {
        "saturated_right": (target * 2 - 1) * 1e4,
        "saturated_wrong": (1 - 2 * target) * 1e4,
        "random_pm1e4": signs * 1e4,
        "fp16_max": (target * 2 - 1) * 65504.0,
    }


def _loss_cfg(name: str) -> dict:
    return resolve_config("v3", {"loss.name": name})


@pytest.mark.parametrize("preset", sorted(list_presets()))
def test_preset_loss_finite_on_extreme_fp16_logits_where_fp16_maths_is_not(preset):
    loss = build_loss(resolve_config(preset))
    target = _target()
    fp16_failures = 0
    for case, logits in _extreme_logits(target).items():
        x = logits.half().requires_grad_()  # what an fp16 autocast forward hands over
        value = loss(x, target)
        assert value.dtype == torch.float32
        assert torch.isfinite(value), f"{preset} {case}: loss {value}"
        value.backward()
        assert torch.isfinite(x.grad).all(), f"{preset} {case}: non-finite gradient"
        with torch.no_grad():
            fp16_failures += int(not torch.isfinite(loss.inner(logits.half(), target.half())))
    assert fp16_failures > 0, f"{preset}: the same loss in float16 never failed, the contrast shows nothing"


def test_dice_loss_overflows_in_fp16_but_not_through_the_registry():
    target = _target()
    logits = ((target * 2 - 1) * 1e4).half()
    dice = build_loss(_loss_cfg("dice"))
    assert not torch.isfinite(dice.inner(logits, target.half()))  # smp issue #463
    assert dice(logits, target).item() == pytest.approx(0.0, abs=1e-4)


def test_loss_ignores_an_enclosing_autocast():
    # what a bf16 autocast forward hands over: bf16 logits, inside the autocast region
    loss = build_loss(_loss_cfg("0.5*bce + 0.5*dice"))
    target = _target()
    logits = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0)).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(logits, target)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, loss(logits.float(), target), rtol=0, atol=1e-7)


class _MatmulLoss(torch.nn.Module):
    """A loss built on a matmul, an op CPU autocast does run in bfloat16."""

    def forward(self, logits, target):
        return (torch.sigmoid(logits).flatten(1) @ target.flatten(1).T).diagonal().mean() / logits[0].numel()


def test_loss_turns_an_enclosing_autocast_off(monkeypatch):
    from liverctl.train.losses import names

    monkeypatch.setitem(LOSSES, "matmul", lambda params: _MatmulLoss())
    monkeypatch.setattr(names, "LOSS_NAMES", (*names.LOSS_NAMES, "matmul"))
    loss = build_loss(_loss_cfg("matmul"))
    target = _target()
    logits = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    exact = loss(logits, target)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(logits, target)
        unguarded = loss.inner(logits, target)
    assert unguarded.dtype == torch.bfloat16 or unguarded != exact  # the contrast: autocast does change it
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, exact, rtol=0, atol=1e-7)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_good_prediction_scores_lower_than_a_bad_one(name):
    loss = build_loss(_loss_cfg(name))
    target = _target()
    good = (target * 2 - 1) * 4
    bad = -good
    assert loss(good, target) < loss(bad, target)


def test_weighted_sum_is_the_sum_of_weighted_terms():
    target = _target()
    logits = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    combo = build_loss(_loss_cfg("0.25*bce + 0.75*dice"))(logits, target)
    bce = build_loss(_loss_cfg("bce"))(logits, target)
    dice = build_loss(_loss_cfg("dice"))(logits, target)
    assert combo.item() == pytest.approx(0.25 * bce.item() + 0.75 * dice.item(), rel=1e-5)


def test_target_without_channel_axis_is_accepted():
    loss = build_loss(_loss_cfg("dice"))
    target = _target()
    logits = torch.randn(SHAPE)
    assert loss(logits, target[:, 0]).item() == pytest.approx(loss(logits, target).item())


def test_parse_and_unknown_names():
    assert parse_loss_name("0.5*bce + 0.5*dice") == [(0.5, "bce"), (0.5, "dice")]
    assert parse_loss_name("dice + focal") == [(1.0, "dice"), (1.0, "focal")]
    with pytest.raises(LiverctlError, match="valid losses: .*focal_tversky"):
        parse_loss_name("0.5*bce + 0.5*dize")
    with pytest.raises(LiverctlError, match="bad weight"):
        parse_loss_name("half*bce")


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("-1*bce", "weight '-1' in '-1[*]bce' must be a finite number >= 0"),  # training would maximise the BCE
        ("nan*bce + dice", "weight 'nan' .* must be a finite number >= 0"),
        ("1e400*bce", "weight '1e400' .* must be a finite number >= 0"),
        ("0*bce + 0*dice", "the weights in '0[*]bce [+] 0[*]dice' are all 0"),  # a loss of 0 trains nothing
    ],
)
def test_weights_that_cannot_train_are_refused(name, words):
    with pytest.raises(LiverctlError, match=words):
        parse_loss_name(name)
    assert parse_loss_name("0*bce + 1*dice") == [(0.0, "bce"), (1.0, "dice")]


def test_the_torch_free_names_are_the_registry_s_names():
    from liverctl.train.losses import LOSS_NAMES

    assert tuple(LOSSES) == LOSS_NAMES
