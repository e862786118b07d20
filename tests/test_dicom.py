"""DICOM series in: a phantom written as a CT series loads as the same volume and geometry as its NIfTI."""

from __future__ import annotations

import json

import nibabel as nib
import pytest
import torch
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd

from smart_nets.data import load_datalist, make_phantom
from smart_nets.data.dicom import write_dicom_series


def test_dicom_series_matches_nifti_after_reorientation(tmp_path):
    p = make_phantom(0, shape=(64, 64, 32), spacing=(5.0, 5.0, 10.0))
    write_dicom_series(p.image, p.affine, str(tmp_path / "series"))
    nib.save(nib.Nifti1Image(p.image, p.affine), tmp_path / "ct.nii.gz")
    (tmp_path / "dataset.json").write_text(json.dumps({"training": [{"image": "series"}, {"image": "ct.nii.gz"}]}))
    items = load_datalist(str(tmp_path / "dataset.json"))  # a DICOM folder is a valid path
    load = Compose([LoadImaged("image"), EnsureChannelFirstd("image"), Orientationd("image", "RAS", labels=None)])
    dicom, nifti = (load(item)["image"] for item in items)
    assert dicom.shape == nifti.shape == (1, 64, 64, 32)
    torch.testing.assert_close(dicom.as_tensor().float(), nifti.as_tensor().float())
    torch.testing.assert_close(dicom.affine.float(), nifti.affine.float())


def test_find_images_returns_nifti_files_and_dicom_series_folders(tmp_path):
    from smart_nets.data import find_images

    p = make_phantom(0, shape=(32, 32, 8), spacing=(5.0, 5.0, 10.0))
    write_dicom_series(p.image, p.affine, str(tmp_path / "series_b"))
    for name in ("b.nii.gz", "a.nii"):
        nib.save(nib.Nifti1Image(p.image, p.affine), tmp_path / name)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not an image")
    (tmp_path / "dataset.json").write_text("{}")
    found = find_images(tmp_path)
    assert found == [str(tmp_path / "a.nii"), str(tmp_path / "b.nii.gz"), str(tmp_path / "series_b")]
    assert find_images(tmp_path, dicom=False) == found[:2]
    assert find_images(tmp_path / "series_b") == [str(tmp_path / "series_b")]  # a series folder is one image
    assert find_images(tmp_path / "b.nii.gz") == [str(tmp_path / "b.nii.gz")]


def test_find_images_refuses_a_folder_without_images_naming_it(tmp_path):
    from smart_nets.data import find_images

    with pytest.raises(FileNotFoundError, match="is not a folder"):
        find_images(tmp_path / "nowhere")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not an image")
    with pytest.raises(
        ValueError, match=f"no images in dataset_dir {tmp_path}: .*give a folder of images \\(NIfTI, NRRD, MetaImage\\)"
    ):
        find_images(tmp_path)
