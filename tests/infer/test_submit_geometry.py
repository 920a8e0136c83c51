"""The whole chain's geometry on the real CT samples: NIfTI -> store -> prediction at the model's input size
and back -> RLE -> evaluate against NIfTI labels, with a model whose answer is known.

The synthetic phantom's slices are square and symmetric enough to hide an axis swapped or flipped
somewhere between `dataobj[..., z]` and the CSV; the real volumes are not (122 x 101 in RAS, 512 x 512 in
LAS and LPS). The model thresholds the windowed centre slice at its middle, HU -500 (body and organs
against air and lungs: coarse shapes that survive a resize), so the right answer is the same threshold
applied to the NIfTI itself, at full resolution."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

import liverctl.infer.predict
from liverctl.config import resolve_config
from liverctl.data.ingest import ingest_folder
from liverctl.infer import submit
from liverctl.infer.evaluate import evaluate_submission
from liverctl.infer.predict import RunModel
from liverctl.infer.rle import encode_volume

WINDOW = [-600, -400]  # data.window for these tests: HU -500 is 0.5 once windowed


class ThresholdModel(torch.nn.Module):
    """Logits of `windowed centre slice > 0.5`. Shape: (N, C, S, S) -> (N, 1, S, S)."""

    def forward(self, x):
        centre = x[:, x.shape[1] // 2 : x.shape[1] // 2 + 1]
        return (centre - 0.5) * 40.0


@pytest.fixture(scope="module")
def real_test_store(real_dataset, tmp_path_factory):
    """The real volumes as the competition's test cases; the expected masks as label files."""
    root = tmp_path_factory.mktemp("geometry")
    (root / "data" / "test").mkdir(parents=True)
    (root / "expected").mkdir()
    for name, (ct, _) in real_dataset.sources.items():
        (root / "data" / "test" / f"volume-{name}.nii.gz").symlink_to(ct)
        img = nib.load(ct)
        hu = np.asarray(img.dataobj, dtype=np.float32)
        nib.save(nib.Nifti1Image((hu > -500.0).astype(np.uint8), img.affine), root / "expected" / f"{name}.nii.gz")
    summary = ingest_folder(root / "data", store=root / "liver.zarr", workers=1)
    assert summary.ok, summary.failures
    return root


@pytest.mark.parametrize(("tta", "input_size"), [("none", 512), ("hflip", 512), ("flips", 640)])
def test_a_known_model_scores_its_own_answer_on_real_volumes(real_test_store, tmp_path, monkeypatch, tta,
                                                            input_size):
    cfg = resolve_config("demo", [f"data.input_size={input_size}", "data.context=1", f"data.window={WINDOW}"])
    assert cfg["data"]["normalize"] == "window"
    (tmp_path / "known").mkdir()  # where the submission is recorded
    known = RunModel(run_dir=tmp_path / "known", model=ThresholdModel().eval(), cfg=cfg)
    monkeypatch.setattr(liverctl.infer.predict, "load_run_models", lambda run_dirs, **_: [known])
    out = tmp_path / "submission.csv"
    submit.make_submission([tmp_path / "known"], out, store_path=real_test_store / "liver.zarr", tta=tta,
                           postprocess="none", threshold=0.5, device="cpu")
    scores = {c.case: c.volume_dice for c in evaluate_submission(out, real_test_store / "expected").cases}
    assert set(scores) == {"dcmqi-3slice", "totalseg-dicom20", "totalseg-example"}
    # Only the resize to the input size and back blurs the edges; an axis swapped or flipped anywhere
    # scores far lower (below).
    assert min(scores.values()) > 0.99, scores  # measured: 0.9985 to 0.99996


def test_the_geometry_check_can_fail(real_test_store, tmp_path):
    """The expected masks flipped along x or y score well below the bound above: a flip would be caught."""
    rows = ["id,rle"]  # the expected masks themselves as a submission
    for path in sorted((real_test_store / "expected").iterdir()):
        mask = np.asarray(nib.load(path).dataobj).astype(bool)
        case = path.name.removesuffix(".nii.gz")
        rows += [f"{case}_{z},{text}" for z, text in enumerate(encode_volume(mask))]
    csv = tmp_path / "expected.csv"
    csv.write_text("\n".join(rows) + "\n")
    assert {c.volume_dice for c in evaluate_submission(csv, real_test_store / "expected").cases} == {1.0}
    for axis in (0, 1):
        flipped = tmp_path / f"flipped-{axis}"
        flipped.mkdir()
        for path in (real_test_store / "expected").iterdir():
            img = nib.load(path)
            nib.save(nib.Nifti1Image(np.flip(np.asarray(img.dataobj), axis).copy(), img.affine), flipped / path.name)
        scores = [c.volume_dice for c in evaluate_submission(csv, flipped).cases]
        assert max(scores) < 0.97, (axis, scores)  # measured: x at most 0.94 (a body is nearly symmetric)
