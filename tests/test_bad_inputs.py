"""Bad CT inputs through the segmentation bundle's inference entry point (`monai.bundle run`, the function the
command line calls): each stops naming the file and what is wrong, outputs written earlier stay intact, and the
inputs that deserve to work (a constant image, an image smaller than the ROI) work."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import run as bundle_run

from tests.helpers import BAD_IMAGE_CASES, bad_image_corpus, bundle_failure, demo_network, run_bundle_failure


@pytest.fixture(scope="module")
def seg(bundle_workspace):
    root = bundle_workspace("smart_seg", phantoms=2)
    bundle = root / "smart_seg"
    configs = [str(bundle / "configs" / "inference.json"), str(bundle / "configs" / "demo.json")]
    torch.save(demo_network("smart_seg").state_dict(), bundle / "models" / "model.pt")
    reference = nib.load(root / "data" / "imagesTr" / "phantom_000.nii.gz")
    out = root / "out"
    out.mkdir()
    (out / "earlier_seg.nii.gz").write_bytes(b"a mask written by an earlier run")
    return {"root": root, "bundle": bundle, "configs": configs, "ref": reference, "out": out}


def _nifti(seg, name: str, array: np.ndarray) -> Path:
    path = seg["root"] / f"{name}.nii.gz"
    nib.save(nib.Nifti1Image(array, seg["ref"].affine), path)
    return path


def _infer(seg, path: Path) -> None:
    bundle_run(
        config_file=seg["configs"],
        bundle_root=str(seg["bundle"]),
        datalist=[str(path)],
        output_dir=str(seg["out"]),
        logging_file=False,
    )


@pytest.fixture(scope="module")
def corpus(seg) -> dict:
    return bad_image_corpus(seg["root"] / "corpus", seg["root"] / "data" / "imagesTr" / "phantom_000.nii.gz")


@pytest.mark.parametrize("case", BAD_IMAGE_CASES)
def test_a_bad_image_stops_naming_the_file_and_the_problem_and_keeps_earlier_outputs(seg, corpus, case):
    path, problem = corpus[case]
    message = bundle_failure(
        seg["bundle"], ["inference.json", "demo.json"], datalist=[str(path)], output_dir=str(seg["out"])
    )
    assert str(path) in message and problem in message, message[-2000:]
    assert (seg["out"] / "earlier_seg.nii.gz").read_bytes() == b"a mask written by an earlier run"
    assert not (seg["out"] / f"{path.name.split('.')[0]}_seg.nii.gz").exists() and not list(seg["out"].glob(".tmp-*"))


@pytest.mark.parametrize("case", ["constant image", "image smaller than the ROI"])
def test_inputs_that_deserve_to_work_work(seg, case):
    image = np.asanyarray(seg["ref"].dataobj)
    array = np.full(image.shape, -1000, np.int16) if case == "constant image" else image[:20, :24, :6]
    path = _nifti(seg, case.replace(" ", "_"), array)
    _infer(seg, path)
    mask = nib.load(seg["out"] / f"{path.name[:-7]}_seg.nii.gz")
    assert mask.shape == array.shape


def test_the_command_line_exits_non_zero_in_bounded_time_with_the_message(seg, corpus):
    path, problem = corpus["two channels"]
    proc = run_bundle_failure(seg["bundle"], seg["configs"], timeout=120, datalist=f"['{path}']", output_dir=seg["out"])
    assert str(path) in proc.stderr and "the network takes 1" in proc.stderr
