"""Does the distillation learn where learning is guaranteed? Self-distillation on a toy of 3D shapes.

Four shape classes that no human confuses - a solid ball, a hollow shell, a rod (cylinder) and a ring (torus), of the
same volume at a given size - each under a random rotation, position, size, object and background intensity (HU) and
noise level, in 40^3 volumes at 2.5 mm.
The encoder is pretrained on them without labels through ``bundles/smart_pretrain`` (``train.json`` + ``demo.json``
with overrides, in this process: the project's own trainer, loss, transforms and configs), and the frozen features
of held-out volumes are judged by k-NN class accuracy (cosine, k = 10, the training volumes as the bank) of three
feature kinds: the [CLS] token, the pooled token, and the stage-3 patch tokens (flattened). Three references come
from the same run:

- random initialisation: the same encoder untrained (what the features give for free);
- the ceiling: the same encoder trained with the labels (cross-entropy on [CLS] and pooled, the same views);
- a small plain 3D CNN trained with the labels on the same views: how hard the toy itself is.

Variants (``VARIANTS``; each a set of bundle overrides on top of ``TOY``): plain DINO (``w_rec = w_patch = 0``, no
student masking), DINO with SMART's attention-guided student masking, iBOT + DINO (``w_rec = 0``) and full SMART,
each with DINO's centring or DINOv2's Sinkhorn-Knopp (``loss_def#centering``), plus one-factor variations for
bisecting. The collapse monitor's first and last windows say what the teacher's targets carried, and
``view_agreement`` whether two training views of one volume look more alike to each encoder than views of different
volumes: what self-distillation has to bootstrap from.

Backbones (``--backbone``, ``BACKBONES``): the bundle's encoder (``swin``), the same z-scoring each input volume first
(``swin_znorm``, blind to a view's contrast and brightness), or the small CNN reference with the bundle's projection
head (``cnn``, DINO variants only): the bisection from a backbone that learns the toy to the one that does not.

    python -m benchmarks.distillation_sanity                      # the study (see --variants), ~6.5 min a variant
    python -m benchmarks.distillation_sanity --backbone cnn --variants dino_bn   # the same DINO on the small CNN
    python -m benchmarks.distillation_sanity --variants dino dino_bn --iterations 200 --no_supervised  # bisecting
    python -m benchmarks.distillation_sanity --quick --results /tmp/ds.json   # every cell in about a minute (CI)
    python -m benchmarks.distillation_sanity --summarize s0.json s1.json --results seeds.md   # one table over seeds

Writes ``benchmarks/results/distillation_sanity.json`` (settings, machine, every number) and ``.md`` beside it,
after every variant (``--resume`` skips variants already in the JSON).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import numpy as np

from benchmarks import label_efficiency as le  # bundle-in-process helpers, --set parsing, machine facts
from benchmarks.common import RESULTS, write_json, write_text

PRETRAIN = le.PRETRAIN
CLASSES = ("ball", "shell", "rod", "ring")
SIZE, ROI, SPACING = 40, 32, 2.5
RADIUS = (10.0, 14.0)  # voxels
# in the cached files' names: 3 = a rod in place of version 2's box, which the demo encoder trained with labels could
# not tell from the ball (version 2's ceiling: ball and box all called "ball"; a small CNN told them apart); 2 = the
# classes hold the same volume; 1 = the first toy
TOY_VERSION = 3
FEATURES = ("cls", "pooled", "patch")
NUISANCES = ("radius", "object_hu")  # what a shortcut would encode instead of the shape
# the bundle's view transform is the 8th of train#preprocessing (checked by name before it is overridden)
VIEWS = "train#preprocessing#transforms#7"
TOY = {
    "roi_size": [ROI] * 3,
    "pixdim": [SPACING] * 3,
    "hu_window": [-1000, 400],
    f"{VIEWS}#sub_volume_scale": [SIZE / ROI, SIZE / ROI],  # the whole volume
    f"{VIEWS}#view_scale": [0.8, 1.25],
    f"{VIEWS}#intensity_scale": [0.7, 1.3],
    f"{VIEWS}#intensity_shift": [-0.1, 0.1],
}
DINO = le.DINO_ONLY  # the objectives as published, without the bundle's KoLeo term
VARIANTS = {
    "dino": DINO,
    "dino_sk": {**DINO, "loss_def#centering": "sinkhorn"},
    "dino_masked": {**DINO, "train#trainer#mask_ratio": 0.75, "teacher_mask_ratio": 0.3},
    "dino_masked_sk": {
        **DINO,
        "train#trainer#mask_ratio": 0.75,
        "teacher_mask_ratio": 0.3,
        "loss_def#centering": "sinkhorn",
    },
    "ibot_dino": {"loss_def#w_rec": 0.0},
    "ibot_dino_sk": {"loss_def#w_rec": 0.0, "loss_def#centering": "sinkhorn"},
    "smart": {},
    "smart_sk": {"loss_def#centering": "sinkhorn"},
    "simmim": le.SIMMIM_ONLY,
    # one change at a time from plain DINO, against DINO's recipe and the field's cures for small-batch collapse
    "dino_bn": {**DINO, "network_def#head_use_bn": True},
    # the class-attention blocks' LayerScale at 1 instead of CaiT's 1e-4: at 1e-4 the [CLS] starts below the final
    # LayerNorm's eps and learns a shared offset ~100x its varying part (cls_anatomy)
    "dino_ls1": {**DINO, "encoder_def#layer_scale_init": 1.0},
    "dino_bn_ls1": {**DINO, "network_def#head_use_bn": True, "encoder_def#layer_scale_init": 1.0},
    "dino_lr5e-5": {**DINO, "learning_rate": 5e-5},
    "dino_m0.996": {**DINO, "schedule#momentum": 0.996},
    "dino_tt0.01": {**DINO, "schedule#teacher_temp": 0.01, "schedule#teacher_temp_end": 0.01},
    "dino_torch_init": {**DINO, "encoder_def#linear_init": "torch"},
    # combinations of what kept the targets alive above
    "dino_bn_lr5e-5": {**DINO, "network_def#head_use_bn": True, "learning_rate": 5e-5},
    "dino_bn_jitter": {
        **DINO,
        "network_def#head_use_bn": True,
        f"{VIEWS}#intensity_scale": [0.5, 1.5],
        f"{VIEWS}#intensity_shift": [-0.25, 0.25],
    },
    # without the per-view contrast and brightness: on toy 3 they leave two views of one volume uncorrelated in an
    # untrained encoder's features (centred cosine 0.24, own-view retrieval 2%; without them 0.61 and 25%)
    "dino_bn_no_jitter": {
        **DINO,
        "network_def#head_use_bn": True,
        f"{VIEWS}#intensity_scale": [1.0, 1.0],
        f"{VIEWS}#intensity_shift": [0.0, 0.0],
    },
    # full SMART and iBOT + DINO with the batch-normalized head, and bisecting between them and dino_bn
    "ibot_dino_bn": {"loss_def#w_rec": 0.0, "network_def#head_use_bn": True},
    "smart_bn": {"network_def#head_use_bn": True},
    # bisecting full SMART back towards what learnt (dino_bn): SMART's masking alone, on DINO
    "dino_bn_masked": {
        **DINO,
        "network_def#head_use_bn": True,
        "train#trainer#mask_ratio": 0.75,
        "teacher_mask_ratio": 0.3,
    },
    "dino_bn_student_masked": {**DINO, "network_def#head_use_bn": True, "train#trainer#mask_ratio": 0.75},
    # towards iBOT's masking from SMART's (every view, 75%): fewer tokens, then half of the views (iBOT: 10-50% of
    # the tokens of half the views)
    "dino_bn_student_masked30": {**DINO, "network_def#head_use_bn": True, "train#trainer#mask_ratio": 0.3},
    "dino_bn_student_masked30_half": {
        **DINO,
        "network_def#head_use_bn": True,
        "train#trainer#mask_ratio": 0.3,
        "train#trainer#mask_probability": 0.5,
    },
    "dino_bn_teacher_noised": {**DINO, "network_def#head_use_bn": True, "teacher_mask_ratio": 0.3},
    # SMART with a tenth of the reconstruction weight (w_rec 1 instead of 10): its gradient on the encoder, 4-5x
    # DINO's on smart_bn's final checkpoint (loss_gradients.py), takes most of the globally clipped (0.3) update
    "smart_bn_rec1": {"network_def#head_use_bn": True, "loss_def#w_rec": 1.0},
    "smart_bn_rec0.1": {"network_def#head_use_bn": True, "loss_def#w_rec": 0.1},
    # SMART with half the views masked (iBOT's and DINOv2's share), the rest whole
    "smart_bn_half_masked": {"network_def#head_use_bn": True, "train#trainer#mask_probability": 0.5},
    # full SMART with what kept DINO's gain above: a clean teacher and 30% of the tokens of half the views
    "smart_bn_clean_masked30_half": {
        "network_def#head_use_bn": True,
        "teacher_mask_ratio": 0.0,
        "train#trainer#mask_ratio": 0.3,
        "train#trainer#mask_probability": 0.5,
    },
}
# DINOv2's KoLeo term (weight 0.1) on the student's [CLS] and pooled features: against the collapse where every
# volume gets the same feature
VARIANTS.update(
    {
        f"{name}_koleo": {**VARIANTS[name], "loss_def#w_koleo": 0.1}
        for name in ("dino", "dino_bn", "smart_bn_clean_masked30_half", "smart")
    }
)
# KoLeo on the head's normalised bottleneck instead, the vectors the prototypes score: the targets flatten in the head
# (the encoder's features stay apart, the teacher's logits do not)
VARIANTS.update(
    {
        f"{name}_koleo_head": {**VARIANTS[f"{name}_koleo"], "loss_def#koleo_features": "head"}
        for name in ("dino", "smart")
    }
)
VIEW_PAIRS = 64  # training volumes whose two views view_agreement compares
# 1,024 training volumes: with 256 the demo encoder trained with labels fit them and generalised to 0.84 (ball and
# rod confused); with 1,024, 0.90
FULL = dict(
    seed=0,
    train=1024,
    heldout=128,
    iterations=1000,
    batch=16,
    windows=10,
    supervised_iterations=2000,
    k=10,
    backbone="swin",
)
QUICK = dict(FULL, train=16, heldout=8, iterations=4, batch=4, windows=2, supervised_iterations=4, k=3)


# ---------------------------------------------------------------------------------------------------------- toy data
def _rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3D rotation (QR of a Gaussian matrix, sign-fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


# Every class holds the same volume at a given r, so that the amount of bright voxels - which features of an untrained
# network pick up for free - says nothing of the class: the ring is a torus of major radius 0.65 r and tube 0.35 r,
# and the ball, the shell's wall and the box are sized to its volume (2 pi^2 0.65 0.35^2 r^3 = 1.57 r^3).
_UNIT = 2 * math.pi**2 * 0.65 * 0.35**2
_BALL = (_UNIT / (4 / 3 * math.pi)) ** (1 / 3)  # 0.72 r
_SHELL = (1 - _UNIT / (4 / 3 * math.pi)) ** (1 / 3)  # inner radius 0.79 r, outer r
_ROD = (_UNIT / (2 * math.pi)) ** 0.5  # radius 0.5 r, half length r


def toy_volume(label: int, rng: np.random.Generator, size: int = SIZE) -> tuple[np.ndarray, dict]:
    """One ``(size,)*3`` float32 volume in HU holding one shape of class ``label`` (index into ``CLASSES``), and
    its nuisance parameters (``radius``, ``object_hu``, ``background_hu``, ``noise_hu``).

    The shape is drawn at a random rotation, centre (+-4 voxels), radius (``RADIUS``), object HU (-300..300),
    background HU (-900..-650) and noise (10-50 HU), with a one-voxel soft edge; the four classes hold the same volume
    at a given radius: only the shape tells them apart.
    """
    grid = np.stack(np.meshgrid(*[np.arange(size, dtype=np.float32)] * 3, indexing="ij"), -1)
    centre = size / 2 - 0.5 + rng.uniform(-4, 4, 3)
    x = (grid - centre) @ _rotation(rng).astype(np.float32)  # coordinates in the object's frame
    r = rng.uniform(*RADIUS)
    norm = np.linalg.norm(x, axis=-1)
    if CLASSES[label] == "ball":
        signed = norm - _BALL * r
    elif CLASSES[label] == "shell":
        signed = np.abs(norm - (1 + _SHELL) / 2 * r) - (1 - _SHELL) / 2 * r
    elif CLASSES[label] == "rod":
        signed = np.maximum(np.hypot(x[..., 0], x[..., 1]) - _ROD * r, np.abs(x[..., 2]) - r)
    else:  # ring
        signed = np.hypot(np.hypot(x[..., 0], x[..., 1]) - 0.65 * r, x[..., 2]) - 0.35 * r
    inside = 1.0 / (1.0 + np.exp(np.clip(signed / 0.5, -50, 50)))
    background, obj, noise = rng.uniform(-900, -650), rng.uniform(-300, 300), rng.uniform(10, 50)
    volume = background + (obj - background) * inside + rng.normal(0.0, noise, inside.shape)
    return volume.astype(np.float32), {"radius": r, "object_hu": obj, "background_hu": background, "noise_hu": noise}


def make_toy(folder: Path, num: int, seed: int) -> list[dict]:
    """``num`` toy volumes (classes in turn) as NIfTI in ``folder``; returns datalist items with ``label``."""
    import nibabel as nib

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    items = []
    for i in range(num):
        label = i % len(CLASSES)
        path = folder / f"toy{TOY_VERSION}_{seed}_{i:04d}_{CLASSES[label]}.nii.gz"
        volume, nuisance = toy_volume(label, rng)
        if not path.is_file():
            nib.save(nib.Nifti1Image(volume, np.diag([SPACING] * 3 + [1.0])), str(path))
        items.append({"image": str(path), "label": label, **nuisance})
    return items


def toy_data(work: Path, s: dict) -> dict:
    """The training and held-out toys (seeds ``seed`` and ``seed + 1000``), their datalist and tensors: ``raw`` (the
    training volumes at full size), ``train`` and ``heldout`` (resized to the ROI, with labels) and ``pairs``."""
    import torch

    train = make_toy(work / "train", s["train"], s["seed"])
    held = make_toy(work / "heldout", s["heldout"], s["seed"] + 1000)
    datalist = work / "toy.json"
    write_json(datalist, {"name": "toy shapes", "training": train, "validation": held})

    def tensors(x: torch.Tensor, items: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.nn.functional.interpolate(x, size=(ROI,) * 3, mode="trilinear")
        return x, torch.tensor([i["label"] for i in items])

    def quartiles(key: str) -> tuple[np.ndarray, np.ndarray]:  # a nuisance as 4 classes, cut at the bank's quartiles
        cuts = np.quantile([i[key] for i in train], [0.25, 0.5, 0.75])
        return tuple(np.searchsorted(cuts, [i[key] for i in items]) for items in (train, held))

    nuisance = {key: quartiles(key) for key in NUISANCES}
    raw = _load(train)
    return {
        "datalist": datalist,
        "raw": raw,
        "train": tensors(raw, train),
        "heldout": tensors(_load(held), held),
        "nuisance": nuisance,
        "pairs": view_pairs(raw[:VIEW_PAIRS], s["seed"]),
    }


def _load(items: list[dict]):
    """The toy volumes of ``items`` as one ``(N, 1, SIZE^3)`` tensor in the bundle's window, scaled to [0, 1]."""
    import nibabel as nib
    import torch

    x = np.stack([np.asarray(nib.load(i["image"]).dataobj, dtype=np.float32) for i in items])[:, None]
    return torch.from_numpy(np.clip((x + 1000.0) / 1400.0, 0.0, 1.0))  # the bundle's hu_window, scaled to [0, 1]


def _toy_views(seed: int):
    """The bundle's ``RandTwoViewsd`` with ``TOY``'s settings, seeded."""
    views = le._workflow(PRETRAIN, ["train.json", "demo.json"], **TOY).parser.get_parsed_content(VIEWS)
    views.set_random_state(seed)
    return views


def view_pairs(raw, seed: int) -> tuple:
    """Two training views of each volume of ``raw`` ``(N, 1, SIZE^3)``."""
    import torch

    views = _toy_views(seed)
    pairs = [views({"image": x}) for x in raw]
    return torch.stack([p["view1"] for p in pairs]), torch.stack([p["view2"] for p in pairs])


def view_agreement(encoder, pairs: tuple) -> dict:
    """Do two training views of one volume look alike to ``encoder``? For [CLS] and pooled: the mean centred cosine
    of a volume's two views minus that of two different volumes' (``agreement_<f>``), and how often a view's nearest
    view among the others' second views is its own (``retrieval_<f>``; chance 1 / the number of volumes).

    Self-distillation bootstraps from the first: when the views of one volume are no closer than different volumes'
    views, the teacher's target for one view cannot be predicted from the other, and the student's best answer is
    the batch's mean target, which centring makes uniform (the flat collapse)."""
    f1, f2 = features(encoder, pairs[0]), features(encoder, pairs[1])
    out = {}
    for name in ("cls", "pooled"):
        centre = np.concatenate([f1[name], f2[name]]).mean(0)
        sim = _unit(f1[name], centre) @ _unit(f2[name], centre).T
        n = len(sim)
        off = (sim.sum() - np.trace(sim)) / max(1, n * (n - 1))
        out[f"agreement_{name}"] = float(np.trace(sim) / n - off)
        out[f"retrieval_{name}"] = float((sim.argmax(1) == np.arange(n)).mean())
    return out


# ---------------------------------------------------------------------------------------------------------- features
def features(encoder, x) -> dict[str, np.ndarray]:
    """The frozen encoder's [CLS], pooled and flattened patch tokens of ``x`` ``(B, 1, ROI^3)``, batch by batch."""
    import torch

    encoder.eval()
    out: dict[str, list] = {k: [] for k in FEATURES}
    with torch.no_grad():
        for batch in x.split(16):
            head = encoder.forward_class_attention(encoder.forward_features(batch))
            out["cls"].append(head.cls_token)
            out["pooled"].append(head.pooled)
            out["patch"].append(head.patch_tokens.flatten(1))
    return {k: torch.cat(v).numpy() for k, v in out.items()}


def cls_anatomy(encoder, x) -> dict[str, float]:
    """Where the [CLS] token comes from, before the final LayerNorm: for the learnt token itself, each class-attention
    block's attention and MLP branches (after their LayerScale) and the token they sum to, the norm of the part every
    volume shares (the mean over ``x``) and the mean norm of the part that varies between volumes. An empty dict for
    an encoder without class attention (the CNN)."""
    import torch

    blocks = getattr(encoder, "class_attn_blocks", None)
    if blocks is None:
        return {}
    captured: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(module, args, output):
            captured[name] = output[0] if isinstance(output, tuple) else output

        return hook

    hooks = []
    for i, block in enumerate(blocks):
        hooks += [
            block.ls1.register_forward_hook(keep(f"block{i}_attn")),
            block.ls2.register_forward_hook(keep(f"block{i}_mlp")),
        ]
    hooks.append(blocks[-1].register_forward_hook(keep("cls")))
    try:
        with torch.no_grad():
            encoder.eval().forward_class_attention(encoder.forward_features(x))
    finally:
        for h in hooks:
            h.remove()
    captured["token"] = encoder.cls_token.expand(len(x), -1, -1)
    out = {}
    for name, v in captured.items():
        v = v[:, 0].double()
        mean = v.mean(0)
        out[f"{name}_constant"] = float(mean.norm())
        out[f"{name}_varying"] = float((v - mean).norm(dim=1).mean())
    return out


def _unit(a: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """The rows of ``a - centre`` at unit length."""
    a = a - centre
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def knn_accuracy(bank: np.ndarray, bank_labels: np.ndarray, query: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Cosine k-NN majority vote of ``query`` against ``bank`` (ties to the lowest class)."""
    centre = bank.mean(0)  # centred on the bank: a constant offset shared by every feature carries nothing
    sims = _unit(query, centre) @ _unit(bank, centre).T
    nearest = np.argsort(-sims, axis=1)[:, :k]
    votes = np.stack([(bank_labels[nearest] == c).sum(1) for c in range(len(CLASSES))], 1)
    return float((votes.argmax(1) == labels).mean())


def spread(f: np.ndarray) -> float:
    """Mean over dimensions of the standard deviation across volumes, after L2 normalisation."""
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    return float(f.std(0).mean())


def evaluate(encoder, data: dict, k: int) -> dict:
    """k-NN accuracy and spread of each feature kind, the training toys as the bank and the held-out as queries."""
    (xb, yb), (xq, yq) = data["train"], data["heldout"]
    fb, fq = features(encoder, xb), features(encoder, xq)
    out = {}
    for name in FEATURES:
        out[f"knn_{name}"] = knn_accuracy(fb[name], yb.numpy(), fq[name], yq.numpy(), k)
        out[f"spread_{name}"] = spread(fq[name])
    for key, (nb, nq) in data["nuisance"].items():  # the same k-NN on a nuisance's quartile (chance 0.25)
        out[f"nuisance_{key}"] = max(knn_accuracy(fb[f], nb, fq[f], nq, k) for f in ("cls", "pooled"))
    anatomy = {f"cls_anatomy/{k}": v for k, v in cls_anatomy(encoder, xq[:64]).items()}
    return {**out, **view_agreement(encoder, data["pairs"]), **anatomy}


# ---------------------------------------------------------------------------------------------------------- runs
def _workflow(s: dict, data: dict, out: Path, overrides: dict, iterations: int):
    """The pretraining bundle on the toy, initialised; ``iterations`` at ``s["batch"]``."""
    per_epoch = s["train"] // s["batch"]
    epochs = max(1, math.ceil(iterations / per_epoch))
    total = epochs * per_epoch
    from smart_nets.engines import SMARTSchedule

    settings = {
        **TOY,
        "datalist": str(data["datalist"]),
        "output_dir": str(out),
        "ckpt_dir": str(out / "models"),
        "seed": s["seed"],
        "max_epochs": epochs,
        "save_interval": epochs,
        "log_every": max(1, total // s["windows"]),
        "batch_size": s["batch"],
        "schedule#momentum": SMARTSchedule().momentum_for(total, 0.02),
        "train#progress_bar#disable": True,
        "train#dataset#progress": False,
        **BACKBONES[s["backbone"]],
        **overrides,
    }
    wf = le._workflow(PRETRAIN, ["train.json", "demo.json"], **settings)
    views = wf.parser.get_parsed_content(VIEWS)
    if type(views).__name__ != "RandTwoViewsd":
        raise RuntimeError(f"{VIEWS} is {type(views).__name__}, not RandTwoViewsd: update VIEWS")
    return wf, settings


def encoder_at_init(s: dict, data: dict, out: Path, overrides: dict):
    """The encoder the bundle builds with ``overrides`` before any training (random initialisation)."""
    wf, _ = _workflow(s, data, out, overrides, 1)
    return wf.parser.get_parsed_content("network_def").encoder


def pretrain(name: str, s: dict, data: dict, out: Path) -> dict:
    """One self-distillation run: monitor windows, losses, time, and the k-NN of the exported teacher and student."""
    import torch

    from smart_nets.engines import unwrap

    wf, settings = _workflow(s, data, out, {**VARIANTS[name], **s["overrides"]}, s["iterations"])
    start = time.perf_counter()
    wf.run()
    seconds = time.perf_counter() - start
    trainer = wf.parser.get_parsed_content("train#trainer")
    history = wf.parser.get_parsed_content("train#collapse_monitor").history
    last = trainer.state.output[0]
    teacher, student = wf.parser.get_parsed_content("teacher").encoder, unwrap(trainer.network).encoder
    result = {
        "overrides": {k: v for k, v in settings.items() if k in VARIANTS[name] or k in s["overrides"]},
        "iterations": trainer.state.iteration,
        "seconds": seconds,
        "losses": {k: float(last[k]) for k in ("loss", "loss_cls", "loss_patch", "loss_rec")},
        "monitor": history,
        "teacher": evaluate(teacher, data, s["k"]),
        "student": evaluate(student, data, s["k"]),
    }
    wf.finalize()
    del teacher, student, trainer, wf
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return result


CNN_ITERATIONS = 600  # enough for the CNN reference: on whole toy volumes it is at 1.0 held-out by 200


def _small_cnn():
    """A small plain 3D CNN (four conv-norm-GELU-maxpool blocks, 16-64 channels, global average pooling, 64 outputs):
    the toy's own difficulty, set beside the encoder's ceiling. If it is at 1.0 where the encoder is not, the gap is
    the encoder's, not the toy's."""
    from torch import nn

    def block(i: int, o: int) -> nn.Module:
        return nn.Sequential(
            nn.Conv3d(i, o, 3, padding=1), nn.InstanceNorm3d(o, affine=True), nn.GELU(), nn.MaxPool3d(2)
        )

    return nn.Sequential(
        block(1, 16), block(16, 32), block(32, 64), block(64, 64), nn.AdaptiveAvgPool3d(1), nn.Flatten()
    )


def cnn_pretrain_net(
    out_dim: int,
    head_hidden_dim: int,
    head_bottleneck_dim: int,
    norm_last_layer: bool = True,
    head_use_bn: bool = False,
):
    """The small CNN reference as the backbone of the bundle's self-distillation (``--backbone cnn``): a network with
    ``SMARTPretrainNet``'s call and outputs, so that the bundle's trainer, loss, views, schedules and monitor run on
    it unchanged, DINO only. It answers one bisecting question: does the machinery learn the toy with a backbone that
    learns it from labels in a minute? Its [CLS] and pooled tokens are the same vector, the mean of its last feature
    map (16x smaller than the input, as SMARTSwin's stage-3 grid), whose cells are its patch tokens."""
    import torch
    from torch import nn

    from smart_nets.networks.blocks.heads import ProjectionHead, prototype_layer
    from smart_nets.networks.nets.smart_swin import ClassAttentionOutput

    class Encoder(nn.Module):
        embed_dim = 64

        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(*list(_small_cnn())[:-2])  # without the global pooling

        def forward_features(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> list[torch.Tensor]:
            if mask is not None and bool(mask.any()):
                raise ValueError("the CNN backbone takes no token mask: use it with DINO only (mask ratios 0)")
            return [self.body(x)]

        def forward_class_attention(self, features: list[torch.Tensor]) -> ClassAttentionOutput:
            tokens = features[-1].flatten(2).transpose(1, 2)  # (B, N, C)
            pooled = tokens.mean(1)
            uniform = tokens.new_full(tokens.shape[:2], 1.0 / tokens.shape[1])
            return ClassAttentionOutput(pooled, pooled, tokens, uniform)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = Encoder()
            width = Encoder.embed_dim
            self.head = ProjectionHead(
                width, out_dim, head_hidden_dim, head_bottleneck_dim, 3, norm_last_layer, head_use_bn
            )
            self.patch_last_layer = prototype_layer(head_bottleneck_dim, out_dim, norm_last_layer)

        def forward(self, x, mask=None, reconstruct=True, shared_head=None) -> dict:
            out = self.encoder.forward_class_attention(self.encoder.forward_features(x, mask))
            last = self.head.last_layer if shared_head else self.patch_last_layer
            result = {
                "global": torch.stack((self.head(out.cls_token), self.head(out.pooled)), dim=1),
                "patch": last(self.head.embed(out.patch_tokens)),
                "attn_map": out.attn_map,
            }
            if reconstruct:  # nothing to rebuild with: DINO only (w_rec = 0, no masked voxel)
                result["recon"] = torch.zeros_like(x)
            return result

    return Net()


def znorm_swin(**kwargs):
    """The bundle's ``SMARTSwin`` (``kwargs`` as ``encoder_def`` gives them) that first z-scores each input volume
    (``--backbone swin_znorm``): blind to a view's contrast and brightness and to the toy's absolute intensities, as
    the CNN backbone's instance normalization nearly is. Bisects the CNN's success between that invariance and the
    architecture."""
    import torch

    from smart_nets.networks.nets import ENCODER_PRESETS, SMARTSwin

    class ZNormSwin(SMARTSwin):
        def forward_features(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> list[torch.Tensor]:
            dims = tuple(range(2, x.ndim))
            x = (x - x.mean(dims, keepdim=True)) / x.std(dims, keepdim=True).clamp(min=1e-6)
            return super().forward_features(x, mask)

    preset = ENCODER_PRESETS[kwargs.pop("preset", "paper")]  # as smart_swin reads encoder_def
    return ZNormSwin(**{**preset, **kwargs})


# the bundle overrides that swap the encoder (``--backbone``); the variants' own overrides of ``network_def#...``
# apply on top
BACKBONES = {
    "swin": {},
    "swin_znorm": {"encoder_def#_target_": "benchmarks.distillation_sanity.znorm_swin"},
    "cnn": {
        "network_def": {
            "_target_": "benchmarks.distillation_sanity.cnn_pretrain_net",
            "out_dim": "@out_dim",
            "head_hidden_dim": "@head_hidden_dim",
            "head_bottleneck_dim": "@head_bottleneck_dim",
            "norm_last_layer": True,
            "head_use_bn": False,
        }
    },
}
BACKBONE_NAMES = {  # as the results' Markdown names them
    "swin": "Demo encoder",
    "swin_znorm": "Demo encoder, z-scoring each input volume first (`--backbone swin_znorm`)",
    "cnn": "The small CNN reference as the backbone (`--backbone cnn`: 4 conv blocks, 64 features, no [CLS]: its [CLS] "
    "and pooled columns are the same mean feature)",
}


def supervised(s: dict, data: dict, out: Path, model: str = "encoder") -> dict:
    """The ceiling: the bundle's encoder (``model="encoder"``) or the small CNN reference (``"cnn"``) on the bundle's
    views, trained with the labels (cross-entropy of a linear head; on [CLS] and pooled for the encoder), AdamW at
    1e-3 with 5% warm-up and cosine decay, batch ``s["batch"]``. Returns the held-out accuracy of that head
    (``heldout_accuracy``) and, for the encoder, the k-NN of :func:`evaluate`."""
    import torch
    from torch import nn

    torch.manual_seed(s["seed"])
    if model == "encoder":
        encoder = encoder_at_init(s, data, out, s["overrides"])
        width = 2 * encoder.embed_dim

        def embed(x):
            h = encoder.forward_class_attention(encoder.forward_features(x))
            return torch.cat((h.cls_token, h.pooled), 1)

    else:
        encoder, width = _small_cnn(), 64
        embed = encoder
    views = _toy_views(s["seed"])
    head = nn.Linear(width, len(CLASSES))
    params = list(encoder.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05)
    steps = s["supervised_iterations"] if model == "encoder" else min(s["supervised_iterations"], CNN_ITERATIONS)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 1e-3, total_steps=steps, pct_start=0.05)
    y, g = data["train"][1], torch.Generator().manual_seed(s["seed"])
    raw = data["raw"]
    start = time.perf_counter()
    encoder.train()
    for _ in range(steps):
        idx = torch.randint(0, len(raw), (s["batch"],), generator=g)
        batch = torch.stack([views({"image": raw[i]})["view1"] for i in idx.tolist()])
        loss = nn.functional.cross_entropy(head(embed(batch)), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    seconds = time.perf_counter() - start
    encoder.eval()
    with torch.no_grad():
        x, labels = data["heldout"]
        predicted = torch.cat([head(embed(b)).argmax(1) for b in x.split(16)])
    result = {
        "seconds": seconds,
        "final_loss": loss.item(),
        "heldout_accuracy": (predicted == labels).float().mean().item(),
    }
    result["confusion"] = [
        [int(((labels == a) & (predicted == b)).sum()) for b in range(len(CLASSES))] for a in range(len(CLASSES))
    ]
    return {**result, **evaluate(encoder, data, s["k"])} if model == "encoder" else result


# ---------------------------------------------------------------------------------------------------------- report
def _value(r: dict, key: str) -> str:
    return f"{r[key]:.3f}" if key in r else "-"


def _window(w: dict, key: str) -> str:
    return f"{w[key]:.3f}" if key in w else "-"


def markdown(result: dict, json_name: str) -> str:
    s = result["settings"]
    chance = 1 / len(CLASSES)
    lines = [
        "# Distillation sanity: does self-distillation learn the classes of a toy?",
        "",
        f"Command: `{result['command']}`; {result['machine']['cpu']}, {result['machine']['torch_threads']} threads, "
        f"torch {result['machine']['torch']}. Every number: [{json_name}]({json_name}).",
        "",
        f"Toy (version {TOY_VERSION}): {len(CLASSES)} shape classes ({', '.join(CLASSES)}) of the same volume at a "
        f"given size, at random rotation, position, size, intensities "
        f"and noise, {SIZE}^3 voxels at {SPACING} mm; {s['train']} training and {s['heldout']} held-out volumes. "
        + BACKBONE_NAMES[s.get("backbone", "swin")]  # results written before --backbone: the demo encoder
        + f" (`train.json` + `demo.json`) at ROI {ROI}^3, {s['iterations']} iterations at batch "
        f"{s['batch']}, seed {s['seed']}; views: the whole volume, crops of 0.8-1.25 x ROI, per-view contrast "
        f"0.7-1.3 and brightness +-0.1. k-NN: cosine, k = {s['k']}, training volumes as the bank, held-out as "
        f"queries; chance {chance:.2f}. The nuisance columns: the same k-NN (best of [CLS] and pooled) asked for the "
        f"quartile of the object's radius or HU instead of its class (chance 0.25): what a shortcut would carry. "
        f"Extra overrides on every run: `{json.dumps(s['overrides'])}`.",
        "",
        "| encoder | k-NN [CLS] | k-NN pooled | k-NN patch | spread [CLS] / pooled | k-NN of the radius / object HU "
        "quartile | two views of a volume, pooled: agreement / own-view retrieval | minutes |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def row(name: str, r: dict, minutes: float | None) -> str:
        m = f"{minutes:.1f}" if minutes is not None else "-"
        return (
            f"| {name} | {r['knn_cls']:.3f} | {r['knn_pooled']:.3f} | {r['knn_patch']:.3f} | "
            f"{r['spread_cls']:.4f} / {r['spread_pooled']:.4f} | "
            f"{r.get('nuisance_radius', float('nan')):.3f} / {r.get('nuisance_object_hu', float('nan')):.3f} | "
            f"{_value(r, 'agreement_pooled')} / {_value(r, 'retrieval_pooled')} | {m} |"
        )

    lines.append(row("random init", result["random_init"], None))
    if "supervised" in result:
        lines.append(row("supervised (ceiling)", result["supervised"], result["supervised"]["seconds"] / 60))
    for name, r in result["variants"].items():
        lines.append(row(f"`{name}` teacher", r["teacher"], r["seconds"] / 60))
        lines.append(row(f"`{name}` student", r["student"], None))
    labelled = [(n, result[k]) for n, k in (("the encoder", "supervised"), ("a small 3D CNN", "cnn")) if k in result]
    if labelled:
        lines += [
            "",
            "Held-out accuracy of the labelled models' own linear heads (confusion: rows true, columns "
            f"predicted, in the order {', '.join(CLASSES)}): "
            + "; ".join(
                f"{n} {r['heldout_accuracy']:.3f} {r['confusion']}" for n, r in labelled if "heldout_accuracy" in r
            )
            + ".",
        ]
    lines += [
        "",
        "## The teacher's targets (collapse monitor, first -> last window)",
        "",
        "| variant | overrides | [CLS] information | pooled information | patch information | final loss cls / patch"
        " / rec |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in result["variants"].items():
        first, last = (r["monitor"][0], r["monitor"][-1]) if r["monitor"] else ({}, {})
        info = [
            f"{_window(first, k)} -> {_window(last, k)}"
            for k in ("collapse/cls_information", "collapse/pooled_information", "collapse/patch_information")
        ]
        losses = r["losses"]
        lines.append(
            f"| `{name}` | `{json.dumps(r['overrides'])}` | {' | '.join(info)} | {losses['loss_cls']:.2f} / "
            f"{losses['loss_patch']:.2f} / {losses['loss_rec']:.3f} |"
        )
    anatomy = [("random init", result["random_init"])] + [
        (f"`{n}` teacher", r["teacher"]) for n, r in result["variants"].items()
    ]
    anatomy = [(n, r) for n, r in anatomy if "cls_anatomy/cls_constant" in r]
    if anatomy:
        lines += [
            "",
            "## Where the [CLS] comes from",
            "",
            "Before the final LayerNorm, on 64 held-out volumes: the norm of the part every volume shares (the mean) "
            "and the mean norm of the part that varies, for the learnt token, each class-attention block's attention "
            "and MLP branches (after LayerScale; block 1, block 2, ...) and their sum.",
            "",
            "| encoder | learnt token | attention branches: shared / varying | MLP branches: shared / varying | "
            "[CLS]: shared / varying | varying / shared |",
            "|---|---|---|---|---|---|",
        ]
        for name, r in anatomy:
            a = {k.split("/", 1)[1]: v for k, v in r.items() if k.startswith("cls_anatomy/")}
            blocks = sorted({k.split("_")[0] for k in a if k.startswith("block")})

            def branch(kind: str, a=a, blocks=blocks) -> str:
                shared = ", ".join(f"{a[f'{b}_{kind}_constant']:.2g}" for b in blocks)
                varying = ", ".join(f"{a[f'{b}_{kind}_varying']:.2g}" for b in blocks)
                return f"{shared} / {varying}"

            ratio = a["cls_varying"] / max(a["cls_constant"], 1e-30)
            lines.append(
                f"| {name} | {a['token_constant']:.2g} | {branch('attn')} | {branch('mlp')} | "
                f"{a['cls_constant']:.2g} / {a['cls_varying']:.2g} | {ratio:.3g} |"
            )
    if "goal" in result:
        lines += ["", "## Goal", "", result["goal"]]
    return "\n".join(lines) + "\n"


def check_goal(result: dict) -> str:
    """DINO only reaches >= 80% of the ceiling where random init stays near chance (best feature kind of each)."""
    if "supervised" not in result:
        return "no ceiling measured"
    ceiling = max(result["supervised"][f"knn_{f}"] for f in ("cls", "pooled"))
    rnd = max(result["random_init"][f"knn_{f}"] for f in ("cls", "pooled"))
    lines = [f"ceiling {ceiling:.3f} (goal >= 0.9: {'met' if ceiling >= 0.9 else 'not met'}); random init {rnd:.3f}."]
    for name, r in result["variants"].items():
        best = max(r["teacher"][f"knn_{f}"] for f in ("cls", "pooled"))
        ratio = best / ceiling if ceiling else float("nan")
        gain = (best - rnd) / (ceiling - rnd) if ceiling > rnd else float("nan")
        lines.append(
            f"- `{name}`: teacher {best:.3f} = {ratio:.0%} of the ceiling ({'met' if ratio >= 0.8 else 'not met'}); "
            f"{gain:.0%} of the way from random init to the ceiling"
        )
    return "\n".join(lines)


def summary(paths: list[Path]) -> str:
    """One table over seeds from several results JSONs (one seed each): the best of [CLS] and pooled k-NN of random
    init, the labelled ceiling and each variant's teacher, per seed, with the mean and the gain over random init."""
    runs = [(p, json.loads(p.read_text())) for p in paths]
    names = ["random init", "ceiling"] + sorted({v for _, r in runs for v in r.get("variants", {})})

    def best(r: dict, name: str) -> float | None:
        references = {"random init": r.get("random_init"), "ceiling": r.get("supervised")}
        entry = references[name] if name in references else r.get("variants", {}).get(name, {}).get("teacher")
        return max(entry[f"knn_{f}"] for f in ("cls", "pooled")) if entry else None

    seeds = [r["settings"]["seed"] for _, r in runs]
    lines = [
        "# Distillation sanity over seeds",
        "",
        "The best of the [CLS] and pooled k-NN (the exported teacher for the variants) per seed; gain: the mean of "
        "(variant - random init) over the seeds that ran it, with its range. Sources: "
        + ", ".join(f"[{p.name}]({p.name})" for p, _ in runs)
        + ".",
        "",
        "| encoder | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | gain over random init (range) |",
        "|---|" + "---|" * (len(seeds) + 2),
    ]
    for name in names:
        values = [best(r, name) for _, r in runs]
        have = [v for v in values if v is not None]
        gains = [v - best(r, "random init") for v, (_, r) in zip(values, runs) if v is not None]
        cells = [f"{v:.3f}" if v is not None else "-" for v in values]
        mean = f"{np.mean(have):.3f}" if have else "-"
        gain = (
            f"{np.mean(gains):+.3f} ({min(gains):+.3f} to {max(gains):+.3f})"
            if gains and name != "random init"
            else "-"
        )
        lines.append(f"| {name} | {' | '.join(cells)} | {mean} | {gain} |")
    cnn = [r["cnn"]["heldout_accuracy"] if "cnn" in r else None for _, r in runs]
    if any(v is not None for v in cnn):
        cells = [f"{v:.3f}" if v is not None else "-" for v in cnn]
        lines.append(f"| small 3D CNN with labels (its own head's accuracy) | {' | '.join(cells)} | - | - |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings: every cell, about a minute")
    parser.add_argument(
        "--variants", nargs="+", choices=list(VARIANTS), default=["dino", "dino_sk", "ibot_dino_sk", "smart_sk"]
    )
    parser.add_argument("--iterations", type=int)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--supervised_iterations", type=int, help="iterations of the labelled ceiling")
    parser.add_argument("--seed", type=int)
    parser.add_argument(
        "--backbone",
        choices=list(BACKBONES),
        help="the bundle's encoder (swin, default), the same z-scoring each input (swin_znorm), or the small CNN "
        "reference, DINO variants only (cnn)",
    )
    parser.add_argument("--no_supervised", action="store_true", help="skip the ceiling")
    parser.add_argument("--set", nargs="*", default=[], metavar="ID=JSON", help="bundle overrides for every variant")
    parser.add_argument("--work", default="/tmp/distillation_sanity")
    parser.add_argument("--results", default=str(RESULTS / "distillation_sanity.json"))
    parser.add_argument("--resume", action="store_true", help="keep the variants already in --results")
    parser.add_argument(
        "--summarize", nargs="+", metavar="JSON", help="write one table over these seeds' results to --results (.md)"
    )
    args = parser.parse_args(argv)
    if args.summarize:
        missing = [p for p in args.summarize if not Path(p).is_file()]
        if missing:
            raise SystemExit(f"--summarize: no such results file: {', '.join(missing)}")
        text = summary([Path(p) for p in args.summarize])
        write_text(Path(args.results).with_suffix(".md"), text)
        return {"summary": text}
    s = dict(QUICK if args.quick else FULL)
    given = ("iterations", "batch", "seed", "supervised_iterations", "backbone")
    s.update({k: getattr(args, k) for k in given if getattr(args, k) is not None})
    s["overrides"] = le.parse_sets(parser, args.set)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("distillation_sanity")
    log.setLevel(logging.INFO)
    import torch

    work, out = Path(args.work), Path(args.results)
    data = toy_data(work, s)
    result = le.resumable_result(out, s, args.resume, "distillation_sanity", argv)
    result.setdefault("variants", {})

    def save() -> None:
        result["goal"] = check_goal(result)
        write_json(out, result)
        write_text(out.with_suffix(".md"), markdown(result, out.name))

    torch.manual_seed(s["seed"])
    result["random_init"] = evaluate(encoder_at_init(s, data, work / "init", s["overrides"]), data, s["k"])
    log.info("random init: %s", result["random_init"])
    if not args.no_supervised and "supervised" not in result:
        result["supervised"] = supervised(s, data, work / "supervised")
        log.info("supervised: %s", result["supervised"])
        save()
    if not args.no_supervised and "cnn" not in result:
        result["cnn"] = supervised(s, data, work / "cnn", model="cnn")
        log.info("small CNN with labels: %s", result["cnn"])
        save()
    for name in args.variants:
        if name in result["variants"]:
            continue
        result["variants"][name] = r = pretrain(name, s, data, work / "runs" / name)
        log.info("%s (%.1f min): teacher %s; student %s", name, r["seconds"] / 60, r["teacher"], r["student"])
        save()
    save()
    log.info("wrote %s and %s", out, out.with_suffix(".md"))
    return result


if __name__ == "__main__":
    main()
