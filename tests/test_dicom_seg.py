"""DICOM in, DICOM-SEG out: a mask on the grid MONAI's reader gives a DICOM series, written as a DICOM Segmentation
object, reads back with highdicom onto the source slices voxel for voxel, references the series, and comes out of
the smart_seg bundle's inference with ``output_format dicom_seg``."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.bundle import run as bundle_run
from monai.data import MetaTensor
from monai.transforms import LoadImage, Orientation

from smart_nets import provenance
from smart_nets.data import SaveDicomSegd, check_output_format, make_phantom, write_dicom_seg
from smart_nets.data.dicom import write_dicom_series
from tests.helpers import REPO, bundle_failure, copy_bundle, demo_network

hd = pytest.importorskip("highdicom")  # the [dicom] extra; CI installs it with the [test] extra

GRID = dict(shape=(40, 32, 12), spacing=(5.0, 4.0, 10.0))  # X != Y: a transposed frame cannot pass
VERSION = json.loads((REPO / "bundles" / "smart_seg" / "configs" / "metadata.json").read_text())["version"]


def _reoriented(volume: np.ndarray, affine: np.ndarray, geometry: str) -> tuple[np.ndarray, np.ndarray]:
    """The same physical volume on another voxel grid, so that its DICOM series is written another way: ``native``
    (the phantom's grid, DICOM's LPS order, head first), ``feet_first`` (Z reversed: the slices' InstanceNumbers run
    against their positions), ``right_to_left`` (X reversed: rows run the other way, and the slice normal with them)
    or ``transposed`` (X and Y swapped: rows run along the anterior-posterior axis)."""
    flip = {"feet_first": (2,), "right_to_left": (0,)}.get(geometry)
    if flip:
        matrix = np.eye(4)
        for axis in flip:
            matrix[axis, axis], matrix[axis, 3] = -1.0, volume.shape[axis] - 1
        return np.flip(volume, flip).copy(), affine @ matrix
    if geometry == "transposed":
        return volume.transpose(1, 0, 2).copy(), affine[:, [1, 0, 2, 3]]
    assert geometry == "native", geometry
    return volume, affine


def _known_mask(phantom, name: str) -> np.ndarray:
    if name == "tumour":  # a few slices: the object leaves the others out
        return phantom.tumour.astype(np.uint8)
    if name == "body":  # every slice
        return (phantom.image > -500).astype(np.uint8)
    return np.zeros(phantom.image.shape, np.uint8)


def _sorted_sources(folder: Path) -> list:
    """The source slices with pixels, sorted along the slice normal (the order the object's frames follow)."""
    slices = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
    normal = np.cross(*np.reshape(np.asarray(slices[0].ImageOrientationPatient, float), (2, 3)))
    return sorted(slices, key=lambda ds: float(np.dot(np.asarray(ds.ImagePositionPatient, float), normal)))


def _read_back(path: Path, sources: list) -> np.ndarray:
    """The object's tumour segment on each source slice, ``(slices, rows, columns)``, by SOP instance UID."""
    seg = hd.seg.segread(path)
    return seg.get_pixels_by_source_instance(
        [ds.SOPInstanceUID for ds in sources],
        segment_numbers=[1],
        combine_segments=True,
        assert_missing_frames_are_empty=True,  # left-out frames read as empty instead of raising
    )


@pytest.mark.parametrize("mask_grid", ["reader", "RAS"])
@pytest.mark.parametrize("geometry", ["native", "feet_first", "right_to_left", "transposed"])
@pytest.mark.parametrize("mask_name", ["tumour", "body", "empty"])
def test_a_mask_reads_back_onto_the_source_slices_voxel_for_voxel(tmp_path, geometry, mask_name, mask_grid):
    """``reader``: the mask on the grid MONAI's reader gives the series (the grid ``Invertd`` brings the bundle's
    predictions back to); ``RAS``: the same mask reoriented to RAS, whose rows, columns and slices run other ways."""
    phantom = make_phantom(3, **GRID)
    image, affine = _reoriented(phantom.image, phantom.affine, geometry)
    known, _ = _reoriented(_known_mask(phantom, mask_name), phantom.affine, geometry)
    write_dicom_series(image, affine, str(tmp_path / "ct"))
    # the mask on the grid MONAI's reader gives the CT series (the grid Invertd brings predictions back to): read it
    # from a DICOM series of the mask written with the CT's geometry
    write_dicom_series(known, affine, str(tmp_path / "mask_series"))
    load = LoadImage(image_only=True)
    ct, mask = load(str(tmp_path / "ct")), load(str(tmp_path / "mask_series"))
    torch.testing.assert_close(mask.affine, ct.affine)
    assert int(mask.sum()) == int(known.sum())
    if mask_grid == "RAS":
        mask = Orientation(axcodes="RAS", labels=None)(mask[None])[0]
        assert not torch.allclose(mask.affine, ct.affine)

    out = write_dicom_seg(np.asarray(mask), mask.affine.numpy(), tmp_path / "ct", tmp_path / "ct_seg.dcm", VERSION)

    sources = _sorted_sources(tmp_path / "ct")
    got = _read_back(out, sources)
    # write_dicom_series stores volume[:, :, k].T (rows along Y, columns along X) in slice_k: the truth per slice
    by_file = {ds.SOPInstanceUID: known[:, :, int(ds.InstanceNumber) - 1].T for ds in sources}
    expected = np.stack([by_file[ds.SOPInstanceUID] for ds in sources])
    assert got.shape == expected.shape == (len(sources), int(sources[0].Rows), int(sources[0].Columns))
    np.testing.assert_array_equal(got, expected)
    if mask_name != "empty":  # the comparison can fail: a flipped or reordered mask differs from the truth
        assert all(not np.array_equal(expected, np.flip(expected, axis)) for axis in range(3))
    # geometry: each frame sits where its source slice does
    seg = pydicom.dcmread(out)
    position = {ds.SOPInstanceUID: [float(v) for v in ds.ImagePositionPatient] for ds in sources}
    for frame in seg.PerFrameFunctionalGroupsSequence:
        source_uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        placed = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        np.testing.assert_allclose(placed, position[source_uid], atol=1e-3)
    shared = seg.SharedFunctionalGroupsSequence[0]
    np.testing.assert_allclose(
        [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient],
        [float(v) for v in sources[0].ImageOrientationPatient],
        atol=1e-6,
    )
    np.testing.assert_allclose(
        [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing], [float(v) for v in sources[0].PixelSpacing]
    )
    assert not list(tmp_path.glob(".tmp-*"))


def test_the_object_references_the_series_and_describes_the_segment(tmp_path):
    phantom = make_phantom(3, **GRID)
    write_dicom_series(phantom.image, phantom.affine, str(tmp_path / "ct"))
    out = write_dicom_seg(phantom.tumour, phantom.affine, tmp_path / "ct", tmp_path / "out" / "ct_seg.dcm", VERSION)
    seg, sources = pydicom.dcmread(out), _sorted_sources(tmp_path / "ct")
    first = sources[0]
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    assert seg.StudyInstanceUID == first.StudyInstanceUID and seg.PatientID == first.PatientID
    assert seg.FrameOfReferenceUID == first.FrameOfReferenceUID
    assert seg.SeriesInstanceUID != first.SeriesInstanceUID
    (referenced,) = seg.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == first.SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in referenced.ReferencedInstanceSequence} == {
        ds.SOPInstanceUID for ds in sources
    }
    (segment,) = seg.SegmentSequence
    assert segment.SegmentLabel == "tumour" and segment.SegmentAlgorithmType == "AUTOMATIC"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Neoplasm"
    (algorithm,) = segment.SegmentationAlgorithmIdentificationSequence
    assert algorithm.AlgorithmName == "SMART smart_seg" and algorithm.AlgorithmVersion == VERSION
    assert f"SMART smart_seg {VERSION}" in list(seg.SoftwareVersions)
    # only the slices holding tumour are stored
    tumour_slices = int(phantom.tumour.any(axis=(0, 1)).sum())
    assert 0 < tumour_slices < phantom.image.shape[2] and int(seg.NumberOfFrames) == tumour_slices


def _series_and_mask(tmp_path: Path) -> tuple[Path, MetaTensor]:
    phantom = make_phantom(3, **GRID)
    write_dicom_series(phantom.image, phantom.affine, str(tmp_path / "ct"))
    ct = LoadImage(image_only=True)(str(tmp_path / "ct"))
    mask = MetaTensor(torch.as_tensor(phantom.tumour[None], dtype=torch.float32), affine=ct.affine, meta=ct.meta)
    return tmp_path / "ct", mask


def test_the_transform_writes_series_name_seg_dcm_and_refuses_what_it_cannot_place(tmp_path):
    folder, mask = _series_and_mask(tmp_path)
    save = SaveDicomSegd("pred", output_dir=tmp_path / "out", algorithm_version=VERSION)
    save({"pred": mask})
    assert (tmp_path / "out" / "ct_seg.dcm").is_file() and mask.meta["saved_to"] == str(tmp_path / "out" / "ct_seg.dcm")

    nifti = mask.clone()
    nifti.meta["filename_or_obj"] = str(tmp_path / "case.nii.gz")
    with pytest.raises(ValueError, match="NIfTI inputs get NIfTI masks") as info:
        save({"pred": nifti})
    assert str(tmp_path / "case.nii.gz") in str(info.value)

    with pytest.raises(ValueError, match="binary mask"):
        save({"pred": mask * 2})
    resampled = MetaTensor(mask[:, ::2], affine=mask.affine, meta=mask.meta)
    with pytest.raises(ValueError, match="do not match the mask"):
        save({"pred": resampled})

    # a gap in the series: MONAI stacks the remaining slices with their average spacing, so no slice-for-slice map
    gap = tmp_path / "gap"
    shutil.copytree(folder, gap)
    (gap / "slice_0005.dcm").unlink()
    gapped = LoadImage(image_only=True)(str(gap))
    gapped_mask = MetaTensor(torch.zeros((1, *gapped.shape)), affine=gapped.affine, meta=gapped.meta)
    with pytest.raises(ValueError, match="do not lie on the mask's grid") as info:
        save({"pred": gapped_mask})
    assert str(gap) in str(info.value)
    assert not (tmp_path / "out" / "gap_seg.dcm").exists() and not list((tmp_path / "out").glob(".tmp-*"))


def test_output_format_is_checked_and_a_missing_highdicom_names_the_extra(tmp_path, monkeypatch):
    assert check_output_format("nifti") == "nifti" and check_output_format("dicom_seg") == "dicom_seg"
    with pytest.raises(ValueError, match="output_format 'dicom'"):
        check_output_format("dicom")
    monkeypatch.setitem(sys.modules, "highdicom", None)  # import highdicom now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'smart-nets\[dicom\]'"):
        SaveDicomSegd("pred", output_dir=tmp_path, algorithm_version=VERSION)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> dict:
    """A copy of smart_seg with a freshly initialised demo-sized network, a phantom as a DICOM series and as NIfTI,
    and the inference configs with the demo's sizes and a datalist override."""
    root = tmp_path_factory.mktemp("dicom_seg_bundle")
    bundle = copy_bundle("smart_seg", root / "smart_seg")
    torch.manual_seed(0)
    record = {"bundle": "SMART lung tumour segmentation", "num_cases": 6, "synthetic": True}
    torch.save(provenance.attach(demo_network("smart_seg").state_dict(), record), bundle / "models" / "model.pt")
    phantom = make_phantom(5, shape=(64, 64, 32), spacing=(5.0, 5.0, 10.0))
    write_dicom_series(phantom.image, phantom.affine, str(root / "inputs" / "series"))
    nib.save(nib.Nifti1Image(phantom.image, phantom.affine), root / "inputs" / "case.nii.gz")
    configs = [str(bundle / "configs" / "inference.json"), str(bundle / "configs" / "demo.json")]
    return {"root": root, "bundle": bundle, "configs": configs, "series": root / "inputs" / "series"}


def _infer(bundle: dict, datalist: list[Path], out: Path, output_format: str) -> None:
    bundle_run(
        config_file=bundle["configs"],
        bundle_root=str(bundle["bundle"]),
        datalist=[str(p) for p in datalist],
        output_dir=str(out),
        output_format=output_format,
        logging_file=False,
    )


def test_the_bundle_writes_dicom_seg_matching_its_nifti_mask_for_a_dicom_series(bundle):
    root = bundle["root"]
    _infer(bundle, [bundle["series"]], root / "nifti", "nifti")
    _infer(bundle, [bundle["series"]], root / "dicom", "dicom_seg")
    assert sorted(p.name for p in (root / "dicom").iterdir()) == ["measurements.csv", "series_seg.dcm"]  # no NIfTI
    nifti = np.asanyarray(nib.load(root / "nifti" / "series_seg.nii.gz").dataobj)
    assert 0.01 < nifti.mean() < 0.99, nifti.mean()  # the random network's mask is neither empty nor everything
    assert not np.array_equal(nifti, np.flip(nifti, (0, 1)))  # so a mask put on the slices the wrong way fails

    sources = _sorted_sources(bundle["series"])
    got = _read_back(root / "dicom" / "series_seg.dcm", sources)
    # the phantom's grid is DICOM's own order, so the NIfTI mask's slice k is slice_k's frame, transposed
    expected = np.stack([nifti[:, :, int(ds.InstanceNumber) - 1].T for ds in sources])
    np.testing.assert_array_equal(got, expected)
    seg = pydicom.dcmread(root / "dicom" / "series_seg.dcm")
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == sources[0].SeriesInstanceUID
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("SMART smart_seg", VERSION)
    assert seg.SeriesDescription == "SMART smart_seg tumour [SYNTHETIC-TRAINED]"  # the weights' record says so


def test_the_bundle_refuses_an_unknown_output_format_and_dicom_seg_for_nifti_inputs(bundle):
    root = bundle["root"]
    overrides = dict(datalist=[str(bundle["series"])], output_dir=str(root / "typo"), output_format="dicom")
    message = bundle_failure(bundle["bundle"], ["inference.json", "demo.json"], **overrides)
    assert "output_format 'dicom' is not one of 'nifti', 'dicom_seg'" in message, message[-2000:]
    assert not (root / "typo").exists()

    nifti = root / "inputs" / "case.nii.gz"
    overrides = dict(datalist=[str(nifti)], output_dir=str(root / "refused"), output_format="dicom_seg")
    message = bundle_failure(bundle["bundle"], ["inference.json", "demo.json"], **overrides)
    assert f"{nifti}: output_format 'dicom_seg'" in message and "NIfTI inputs get NIfTI masks" in message, message
    assert not (root / "refused").exists() or not any((root / "refused").iterdir())


@pytest.mark.parametrize("output_format, writer", [("nifti", "SaveImaged"), ("dicom_seg", "SaveDicomSegd")])
def test_output_format_leaves_exactly_one_writer_in_the_postprocessing(output_format, writer):
    """MONAI Label's BundleInferTask takes ``postprocessing`` as built and drops its ``SaveImaged``: the disabled
    writer must be gone from the list, not left as a ``None``."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / "smart_seg" / "configs" / "inference.json"))
    parser.update({"bundle_root": str(REPO / "bundles" / "smart_seg"), "output_format": output_format})
    names = [type(t).__name__ for t in parser.get_parsed_content("postprocessing").transforms]
    # the function and the first SaveImaged write the foreground probability, only with save_probabilities
    assert names == ["Activationsd", "Invertd", "function", "SaveImaged", "AsDiscreted", writer]
