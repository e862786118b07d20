"""SMARTUNETR and loading SMART weights: shapes, matched-key report, loud failures; segmentation input checks."""

from __future__ import annotations

import logging
import re

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.networks.nets import SwinUNETR
from monai.transforms import Compose, EnsureChannelFirstd

from smart_nets.networks.nets import SMARTUNETR, SMARTClassifier, SMARTPretrainNet, SMARTSwin
from smart_nets.networks.pretrained import load_pretrained_encoder
from smart_nets.transforms import CheckSegmentationd, LoadImageCheckedd
from tests.helpers import TINY, error_chain

ARCH = {k: TINY[k] for k in ("feature_size", "depths", "num_heads")}


@pytest.mark.parametrize("size", [64, 96])
def test_segmentation_shapes(size):
    net = SMARTUNETR(SMARTSwin(**ARCH), out_channels=3).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, size, size, size)).shape == (1, 3, size, size, size)


def test_the_networks_share_the_encoder_object_they_are_given_and_refuse_other_modules():
    encoder = SMARTSwin(**ARCH)
    assert SMARTUNETR(encoder).encoder is encoder
    assert SMARTClassifier(encoder).encoder is encoder and SMARTPretrainNet(encoder, out_dim=64).encoder is encoder
    with pytest.raises(TypeError, match="encoder must be a smart_nets SMARTSwin, got Linear"):
        SMARTUNETR(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="patch_size 2, got 4"):
        SMARTUNETR(SMARTSwin(patch_size=4, **ARCH))


def test_loads_every_encoder_tensor_from_a_pretraining_checkpoint(tmp_path, caplog):
    pre = SMARTPretrainNet(SMARTSwin(**ARCH), out_dim=64, head_hidden_dim=32, head_bottleneck_dim=16)
    checkpoint = {"teacher": pre.state_dict(), "network": {}, "trainer": {"iteration": 3}}
    torch.save(checkpoint, tmp_path / "checkpoint.pt")
    torch.save(pre.encoder.state_dict(), tmp_path / "model.pt")
    n_encoder = len(SMARTSwin(**ARCH).state_dict())
    for name in ("checkpoint.pt", "model.pt"):
        with caplog.at_level(logging.INFO):
            net = SMARTUNETR(SMARTSwin(**ARCH), pretrained=str(tmp_path / name))
        assert f"{n_encoder} of {n_encoder} tensors loaded" in caplog.text
        for key, value in pre.encoder.state_dict().items():
            assert torch.equal(net.encoder.state_dict()[key], value), key


def test_another_architecture_or_configuration_fails_loudly(tmp_path):
    swin = SwinUNETR(in_channels=1, out_channels=2, feature_size=12)
    torch.save(swin.state_dict(), tmp_path / "swinunetr.pt")
    with pytest.raises(ValueError, match="none of the .* pretrained tensors matched"):
        SMARTUNETR(SMARTSwin(**ARCH), pretrained=str(tmp_path / "swinunetr.pt"))
    wider = SMARTSwin(**(ARCH | {"feature_size": 24, "num_heads": (1, 2, 3, 6)}))
    with pytest.raises(ValueError, match="shape mismatches"):
        load_pretrained_encoder(SMARTSwin(**ARCH), wider.state_dict())
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        SMARTUNETR(SMARTSwin(**ARCH), pretrained=str(tmp_path / "nowhere.pt"))


def _pair(tmp_path, image: np.ndarray, label: np.ndarray) -> dict:
    nib.save(nib.Nifti1Image(image, np.eye(4)), tmp_path / "ct.nii.gz")
    nib.save(nib.Nifti1Image(label, np.eye(4)), tmp_path / "mask.nii.gz")
    return {"image": str(tmp_path / "ct.nii.gz"), "label": str(tmp_path / "mask.nii.gz")}


def _check(item):
    pipeline = Compose(
        [
            LoadImageCheckedd(["image", "label"]),
            EnsureChannelFirstd(["image", "label"]),
            CheckSegmentationd(num_classes=2),
        ]
    )
    return pipeline(item)


def _messages(info) -> str:
    return "\n".join(error_chain(info.value))


@pytest.mark.parametrize(
    "image_shape,label_shape,label_value,expected",
    [
        ((32, 32, 16), (32, 32, 12), 1, r"image .*ct.nii.gz has spatial shape \(32, 32, 16\) but label .*mask.nii.gz"),
        ((32, 32, 16), (32, 32, 16), 3, r"mask.nii.gz: label values \[3\] outside the classes 0..1"),
        ((32, 32), (32, 32), 1, r"ct.nii.gz: a 3D volume is needed"),
    ],
)
def test_bad_pairs_name_their_files(tmp_path, image_shape, label_shape, label_value, expected):
    label = np.zeros(label_shape, np.uint8)
    label[..., :2] = label_value
    with pytest.raises(Exception) as info:
        _check(_pair(tmp_path, np.zeros(image_shape, np.int16), label))
    assert re.search(expected, _messages(info)), _messages(info)


def test_an_affine_with_zero_or_non_finite_spacing_is_refused_naming_the_source():
    from monai.data import MetaTensor

    for bad in (0.0, float("nan")):
        affine = torch.eye(4, dtype=torch.float64)
        affine[1, 1] = bad
        image = MetaTensor(torch.zeros(1, 8, 8, 8), affine=affine, meta={"filename_or_obj": "scan_17.nii.gz"})
        with pytest.raises(ValueError, match=r"scan_17.nii.gz: voxel spacing \(1.0, (0.0|nan), 1.0\) mm"):
            CheckSegmentationd(label_key=None)({"image": image})
    image = MetaTensor(torch.zeros(1, 8, 8, 8), affine=torch.diag(torch.tensor([-2.0, 2.0, 3.0, 1.0])))
    assert CheckSegmentationd(label_key=None)({"image": image})["image"] is image  # flips are fine


def test_corrupt_nifti_names_the_file(tmp_path):
    item = _pair(
        tmp_path, np.random.randint(-1000, 1000, (64, 64, 32)).astype(np.int16), np.zeros((64, 64, 32), np.uint8)
    )
    data = open(item["image"], "rb").read()
    open(item["image"], "wb").write(data[: len(data) // 2])
    with pytest.raises(Exception) as info:
        _check(item)
    assert "ct.nii.gz" in _messages(info) and "cannot read" in _messages(info)


def test_spacing_keeps_monai_label_image_path_which_monai_spacingd_trips_on(tmp_path):
    from monai.transforms import Spacingd

    from smart_nets.transforms import SpacingExtrasSafed

    item = _pair(tmp_path, np.zeros((32, 32, 16), np.int16), np.zeros((32, 32, 16), np.uint8))
    data = Compose([LoadImageCheckedd("image"), EnsureChannelFirstd("image")])({"image": item["image"]})
    data["image_path"] = item["image"]  # what MONAI Label's BundleInferTask adds
    with pytest.raises(Exception):
        Spacingd("image", pixdim=(2.0, 2.0, 2.0))(dict(data))
    out = SpacingExtrasSafed("image", pixdim=(2.0, 2.0, 2.0))(dict(data))
    assert out["image_path"] == item["image"] and out["image"].shape == (1, 16, 16, 8)
