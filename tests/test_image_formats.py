"""NRRD and MetaImage in: 3D Slicer's and ITK's files load as the same volume and geometry as their NIfTI, and the
readers are chosen by format (DICOM folders stay with pydicom when ITK is installed)."""

from __future__ import annotations

import importlib.util
import json

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Compose, EnsureChannelFirstd, Orientationd

from smart_nets.data import find_images, load_datalist, make_phantom
from smart_nets.data.dicom import write_dicom_series
from smart_nets.transforms import LoadImageCheckedd
from smart_nets.transforms.checks import reader_for
from tests.helpers import write_lps_image

FORMATS = ("ct.nrrd", "ct.nhdr", "ct.mha", "ct.mhd")


def _phantom(tmp_path, affine_flip: bool = False):
    p = make_phantom(0, shape=(48, 40, 12), spacing=(5.0, 4.0, 10.0))
    affine = p.affine.copy()
    if affine_flip:  # a RAS-stored grid: x and y run the other way, so the LPS files store them flipped
        affine[:2] = -affine[:2]
    nib.save(nib.Nifti1Image(p.image, affine), tmp_path / "ct.nii.gz")
    return p.image, affine


@pytest.mark.parametrize("ras_stored", [False, True])
@pytest.mark.parametrize("name", FORMATS)
def test_lps_files_load_as_their_nifti(tmp_path, name, ras_stored):
    volume, affine = _phantom(tmp_path, ras_stored)
    write_lps_image(volume, affine, tmp_path / name)
    load = Compose(
        [LoadImageCheckedd("image"), EnsureChannelFirstd("image"), Orientationd("image", "RAS", labels=None)]
    )
    nifti, other = load({"image": str(tmp_path / "ct.nii.gz")})["image"], load({"image": str(tmp_path / name)})["image"]
    assert other.shape == nifti.shape == (1, 48, 40, 12)
    torch.testing.assert_close(other.as_tensor().float(), nifti.as_tensor().float())
    torch.testing.assert_close(other.affine.double(), nifti.affine.double(), atol=1e-4, rtol=0)
    assert other.meta["filename_or_obj"] == str(tmp_path / name)


def test_a_slicer_segmentation_is_a_label_in_a_datalist(tmp_path):
    volume, affine = _phantom(tmp_path)
    mask = (volume > 0).astype(np.uint8)
    write_lps_image(volume, affine, tmp_path / "ct.nrrd")
    write_lps_image(mask, affine, tmp_path / "ct.seg.nrrd")
    (tmp_path / "dataset.json").write_text(json.dumps({"training": [{"image": "ct.nrrd", "label": "ct.seg.nrrd"}]}))
    item = load_datalist(str(tmp_path / "dataset.json"), path_keys=("image", "label"))[0]
    keys = ["image", "label"]
    data = Compose([LoadImageCheckedd(keys), EnsureChannelFirstd(keys), Orientationd(keys, "RAS", labels=None)])(item)
    expected = Orientationd("m", "RAS", labels=None)(
        EnsureChannelFirstd("m")(LoadImageCheckedd("m")({"m": str(tmp_path / "ct.nii.gz")}))
    )["m"]
    torch.testing.assert_close(data["label"].as_tensor().float(), (expected.as_tensor() > 0).float())
    torch.testing.assert_close(data["label"].affine.double(), data["image"].affine.double())


def test_find_images_takes_nrrd_and_metaimage_but_not_segmentations(tmp_path):
    volume, affine = _phantom(tmp_path)
    for name in ("a.nrrd", "b.mha", "c.mhd", "a.seg.nrrd"):
        write_lps_image(volume, affine, tmp_path / name)
    found = [p.split("/")[-1] for p in find_images(tmp_path)]
    assert found == ["a.nrrd", "b.mha", "c.mhd", "ct.nii.gz"]  # c.mhd's c.raw and the .seg.nrrd are not images
    assert find_images(tmp_path / "a.nrrd") == [str(tmp_path / "a.nrrd")]
    (tmp_path / "only_masks").mkdir()
    write_lps_image(volume, affine, tmp_path / "only_masks" / "x.seg.nrrd")
    with pytest.raises(ValueError, match=r"no images in dataset_dir .*only_masks.*not \*\.seg\.nrrd"):
        find_images(tmp_path / "only_masks")


def test_the_reader_follows_the_format_and_dicom_stays_with_pydicom(tmp_path):
    p = make_phantom(0, shape=(32, 32, 8), spacing=(5.0, 5.0, 10.0))
    write_dicom_series(p.image, p.affine, str(tmp_path / "series"))
    assert importlib.util.find_spec("itk") is not None  # installed: MONAI alone would hand the folder to ITKReader
    assert reader_for(tmp_path / "series") == "PydicomReader"
    assert [reader_for(f"x{s}") for s in (".nii.gz", ".NII", ".seg.nrrd", ".nhdr", ".mha", ".mhd", ".png")] == [
        "NibabelReader",
        "NibabelReader",
        "NrrdReader",
        "NrrdReader",
        "ITKReader",
        "ITKReader",
        None,
    ]
    image = LoadImageCheckedd("image")({"image": str(tmp_path / "series")})["image"]
    assert image.shape == (32, 32, 8) and "lastImagePositionPatient" in image.meta  # PydicomReader's, not ITK's


def test_a_missing_reader_package_names_the_file_and_the_extra(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nrrd" else real(name, *a))
    with pytest.raises(
        ImportError, match=r"scan\.nrrd: reading \.nrrd files needs the 'nrrd' package.*smart-nets\[formats\]"
    ):
        LoadImageCheckedd("image")({"image": str(tmp_path / "scan.nrrd")})
