"""Encoder smoke run: preprocess a few CTs of a datalist and run a SMARTSwin on them (step 2 of ``scripts/demo.sh``).

    python -m smart_nets.smoke data/phantoms/dataset.json --num 2

It loads each image with MONAI's transforms (reorient to RAS, resample, clip HU [-1000, 400] to [0, 1], pad or crop
to the ROI), runs a tiny randomly initialised SMARTSwin, logs every output's shape, and writes the class-attention
map, upsampled to the ROI, as ``<out_dir>/<case>_attn.nii.gz`` so it can be overlaid on the preprocessed image. The
bundles (pretraining, segmentation, response) replace this with trained weights.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from monai.data import load_decathlon_datalist
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    LoadImaged,
    Orientationd,
    ResizeWithPadOrCropd,
    SaveImage,
    ScaleIntensityRanged,
    Spacingd,
)

from smart_nets.networks.nets import SMARTSwin

logger = logging.getLogger("smart_nets.smoke")


def run(
    datalist: str,
    num: int = 2,
    roi: int = 64,
    pixdim: float = 5.0,
    feature_size: int = 12,
    out_dir: str = "outputs/smoke",
    seed: int = 0,
) -> dict[str, list[int]]:
    """Run the encoder on the first ``num`` validation cases of ``datalist``.

    Args:
        datalist: an MSD-style ``dataset.json`` with a ``validation`` list.
        num: number of cases.
        roi: cubic ROI in voxels (a multiple of 32).
        pixdim: isotropic resampling in mm (5 mm fits a 320 mm phantom into 64 voxels).
        feature_size: encoder width (12 is the tiny test configuration).
        out_dir: where the attention maps go.
        seed: seed of the random initialisation.

    Returns:
        The output shapes of the last case, by field name.

    Raises:
        FileNotFoundError: when ``datalist`` does not exist.
        ValueError: when ``roi`` is not a multiple of 32.
    """
    if not os.path.isfile(datalist):
        raise FileNotFoundError(f"datalist {datalist} not found; generate phantoms first")
    items = load_decathlon_datalist(datalist, data_list_key="validation")[:num]
    preprocess = Compose(
        [
            LoadImaged("image"),
            EnsureChannelFirstd("image"),
            Orientationd("image", axcodes="RAS", labels=None),
            Spacingd("image", pixdim=(pixdim,) * 3, mode="bilinear"),
            ScaleIntensityRanged("image", a_min=-1000, a_max=400, b_min=0.0, b_max=1.0, clip=True),
            ResizeWithPadOrCropd("image", spatial_size=(roi,) * 3),
        ]
    )
    torch.manual_seed(seed)
    net = SMARTSwin(feature_size=feature_size, depths=(1, 1, 1, 1), num_heads=(1, 2, 3, 6)).eval()
    net.token_grid((roi,) * 3)  # fail early on a bad ROI
    logger.info("SMARTSwin: %.2fM parameters", sum(p.numel() for p in net.parameters()) / 1e6)
    saver = SaveImage(output_dir=out_dir, output_postfix="attn", separate_folder=False, print_log=False)
    shapes: dict[str, list[int]] = {}
    for item in items:
        data = preprocess(item)
        image = data["image"]
        start = time.perf_counter()
        with torch.no_grad():
            out = net(image.as_tensor().unsqueeze(0))
        seconds = time.perf_counter() - start
        shapes = {k: list(v.shape) for k, v in out._asdict().items() if torch.is_tensor(v)}
        shapes["hidden_states"] = [list(h.shape) for h in out.hidden_states]
        grid = net.token_grid(image.shape[1:])
        attn = F.interpolate(out.attn_map.view(1, 1, *grid), size=image.shape[1:], mode="nearest")[0]
        saver(image.clone().copy_(attn / attn.max()), meta_data=image.meta)
        name = Path(item["image"]).name.split(".")[0]
        logger.info("%s: forward %.2f s, outputs %s", name, seconds, shapes)
    logger.info("attention maps written to %s", out_dir)
    return shapes


if __name__ == "__main__":
    import fire

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    fire.Fire(run)
