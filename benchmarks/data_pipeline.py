"""Does the pretraining data pipeline keep a GPU fed? Volumes per second per data-loader worker, by cache mode.

Writes CT-sized phantoms (default 512x512x300 int16 NIfTI, 0.625 x 0.625 x 1.07 mm, a 320 mm field of view), builds
the transform chain of ``bundles/smart_pretrain/configs/train.json`` through MONAI's ``ConfigParser`` (the bundle's
own chain, resampled to its ``pixdim``), and times in one process, which is what one data-loader worker does:

- where the time goes: each transform of the chain once per volume;
- ``cache "none"``: the whole chain per volume (``monai.data.Dataset``);
- ``cache "disk"``: the first epoch (load, preprocess, write the cache file) and a later one (read the file, then
  only the random views and masks), with the bytes per cached volume;
- ``cache "memory"``: an epoch after the cache is filled (only the random transforms).

Against a GPU's appetite (``--step_seconds`` per step of ``--step_volumes`` volumes; default the paper-scale SMART
step measured by ``benchmarks/gpu_check.py`` on an H200: fp32, 0.107 s per step of 2 volumes) it reports the
data-loader workers one GPU needs in each mode, and for ``--dataset_size`` CTs (default 10,000) the disk a cache
takes and the time its first epoch spends filling it. Results: ``--out`` (``.json`` and ``.md``).

    python -m benchmarks.data_pipeline --out benchmarks/results/data_pipeline        # ~10 min on 2 cores
    python -m benchmarks.data_pipeline --num 2 --shape 256,256,150 --spacing 1.25,1.25,2.14 --epochs 1  # quick
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import REPO, command_line, floats, ints, write_json, write_text


def ct_sized_phantoms(folder: Path, num: int, shape: tuple, spacing: tuple) -> list[Path]:
    """``num`` int16 NIfTI phantoms of ``shape`` voxels at ``spacing`` mm in ``folder`` (kept if already there).

    The phantom generator draws a 512x512x300 grid in minutes, so each case is drawn at half the resolution, upsampled
    trilinearly and given CT-like noise (15 HU) so that it compresses like a scan, not like a smooth volume.
    """
    import nibabel as nib
    import numpy as np

    from smart_nets.data import make_phantom

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(num):
        path = folder / f"ct_{i:03d}.nii.gz"
        paths.append(path)
        if path.exists():
            continue
        print(f"writing {path} ({'x'.join(map(str, shape))})", flush=True)
        half = make_phantom(seed=i, shape=[s // 2 for s in shape], spacing=[2 * s for s in spacing])
        image = torch.as_tensor(np.asarray(half.image, dtype=np.float32))[None, None]
        image = torch.nn.functional.interpolate(image, size=tuple(shape), mode="trilinear", align_corners=False)[0, 0]
        image += torch.randn(image.shape, generator=torch.Generator().manual_seed(i)) * 15.0
        affine = half.affine.copy()
        affine[:3, :3] /= 2  # the phantom's orientation and position, at the full resolution
        tmp = folder / f".ct_{i:03d}.tmp.nii.gz"
        nib.save(nib.Nifti1Image(image.round().clamp(-1024, 3071).numpy().astype(np.int16), affine), str(tmp))
        os.replace(tmp, path)
    return paths


def build_chain(pixdim: tuple, roi: int):
    """The bundle's pretraining transform chain, as ``monai.bundle run`` would build it."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles/smart_pretrain/configs/train.json"))
    parser["bundle_root"] = str(REPO / "bundles/smart_pretrain")
    parser["pixdim"] = list(pixdim)
    parser["roi_size"] = [roi] * 3
    return parser.get_parsed_content("train#preprocessing")


def per_transform_seconds(items: list, chain) -> tuple[dict, list[int]]:
    """Median seconds of each transform of ``chain`` over ``items`` (applied in order, random ones seeded), and the
    spatial shape of the first item after the deterministic start of the chain (what the caches hold)."""
    from monai.transforms import Randomizable

    times: dict[str, list[float]] = {}
    cached_shape: list[int] = []
    for i, item in enumerate(items):
        data = dict(item)
        for t in chain.transforms:
            if isinstance(t, Randomizable):
                cached_shape = cached_shape or list(data["image"].shape[1:])
                t.set_random_state(seed=i)
            start = time.perf_counter()
            data = t(data)
            times.setdefault(type(t).__name__, []).append(time.perf_counter() - start)
    return {name: statistics.median(v) for name, v in times.items()}, cached_shape


def epoch_seconds(dataset) -> list[float]:
    """Seconds of each ``dataset[i]`` over one pass."""
    out = []
    for i in range(len(dataset)):
        start = time.perf_counter()
        dataset[i]
        out.append(time.perf_counter() - start)
    return out


def measure(items: list, chain, epochs: int, cache_dir: str) -> dict:
    """Seconds per volume in each cache mode (one process = one data-loader worker)."""
    from smart_nets.data import make_dataset

    rows: dict = {}
    none = make_dataset(items, chain, cache="none")
    rows["none"] = statistics.median(s for _ in range(epochs) for s in epoch_seconds(none))
    disk = make_dataset(items, chain, cache="disk", cache_dir=cache_dir)
    rows["disk, first epoch (writes the cache)"] = statistics.median(epoch_seconds(disk))
    rows["disk, later epochs"] = statistics.median(s for _ in range(epochs) for s in epoch_seconds(disk))
    start = time.perf_counter()
    memory = make_dataset(items, chain, cache="memory", cache_rate=1.0, num_workers=1)
    fill = (time.perf_counter() - start) / len(items)
    rows["memory, later epochs"] = statistics.median(s for _ in range(epochs) for s in epoch_seconds(memory))
    files = list(Path(cache_dir).glob("*.pt"))
    cached_bytes = statistics.mean(f.stat().st_size for f in files) if files else float("nan")
    return {"seconds_per_volume": rows, "memory_fill_seconds_per_volume": fill, "cached_bytes_per_volume": cached_bytes}


def report(results: dict, args) -> str:
    """The Markdown summary: per-worker rates, workers per GPU, and the arithmetic for ``--dataset_size`` CTs."""
    need = args.step_volumes / args.step_seconds
    gib = results["cached_bytes_per_volume"] / 2**30
    lines = [
        "# Pretraining data pipeline: volumes per second per data-loader worker (issue 19)",
        "",
        f"Command: `{command_line('data_pipeline')}`",
        f"Machine: {results['machine']}, torch {torch.__version__}. Input: {args.num} phantoms of "
        f"{'x'.join(map(str, args.shape))} int16 NIfTI at {'x'.join(map(str, args.spacing))} mm "
        f"({results['input_mib']:.0f} MiB compressed each), resampled to {'x'.join(map(str, args.pixdim))} mm "
        f"({'x'.join(map(str, results['resampled_shape']))} voxels), two {args.roi}^3 views; the bundle's "
        "`train#preprocessing` chain; one process (= one worker), medians over volumes and epochs.",
        "",
        "Where the time goes (one volume, median):",
        "",
        "| transform | seconds |",
        "| --- | --- |",
        *[f"| `{k}` | {v:.3f} |" for k, v in results["per_transform_seconds"].items()],
        "",
        f"A GPU at {args.step_seconds} s per step of {args.step_volumes} volumes eats {need:.1f} volumes/s.",
        "",
        "| cache | seconds per volume | volumes/s per worker | workers per GPU |",
        "| --- | --- | --- | --- |",
    ]
    for mode, s in results["seconds_per_volume"].items():
        lines.append(f"| {mode} | {s:.3f} | {1 / s:.2f} | {math.ceil(need * s)} |")
    n = args.dataset_size
    first = results["seconds_per_volume"]["disk, first epoch (writes the cache)"]
    lines += [
        "",
        f"For {n:,} CTs: the disk cache holds {gib * 1024:.0f} MiB per volume, **{gib * n / 1024:.2f} TiB** in all "
        f"(float32 after resampling; once per node unless the folder is shared). Its first epoch costs "
        f"{first:.2f} s per volume per worker: with W workers per GPU and G GPUs, {n:,} x {first:.2f} / (W x G) s, "
        f"e.g. {n * first / (8 * 8) / 60:.0f} min with 8 workers on each of 8 GPUs; later epochs run at the "
        "'disk, later epochs' rate. Memory caching holds the same bytes in RAM on every rank, so it suits only "
        "small datasets.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num", type=int, default=4, help="phantoms to write and time")
    parser.add_argument("--shape", type=ints, default=(512, 512, 300))
    parser.add_argument("--spacing", type=floats, default=(0.625, 0.625, 1.07))
    parser.add_argument("--pixdim", type=floats, default=(1.5, 1.5, 1.5), help="the bundle's resampling")
    parser.add_argument("--roi", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=2, help="epochs timed for the cached modes")
    parser.add_argument("--step_seconds", type=float, default=0.107)
    parser.add_argument("--step_volumes", type=int, default=2)
    parser.add_argument("--dataset_size", type=int, default=10000)
    parser.add_argument("--work", default=None, help="keep the phantoms here (default: a temporary folder)")
    parser.add_argument("--out", default=None, help="write <out>.json and <out>.md")
    args = parser.parse_args()
    torch.set_num_threads(1)  # a data-loader worker runs its transforms on one thread

    tmp = tempfile.TemporaryDirectory()
    work = Path(args.work or tmp.name)
    images = ct_sized_phantoms(work / "phantoms", args.num, args.shape, args.spacing)
    chain = build_chain(args.pixdim, args.roi)
    items = [{"image": str(p)} for p in images]
    print(f"timing {len(items)} volumes", flush=True)
    results: dict = {"machine": f"cpu x{os.cpu_count()} (1 thread per worker)", "config": vars(args).copy()}
    results["input_mib"] = statistics.mean(p.stat().st_size for p in images) / 2**20
    results["per_transform_seconds"], results["resampled_shape"] = per_transform_seconds(items, chain)
    with tempfile.TemporaryDirectory(dir=work) as cache_dir:
        results.update(measure(items, chain, args.epochs, cache_dir))
    text = report(results, args)
    print(text)
    if args.out:
        write_json(Path(f"{args.out}.json"), results, indent=2, default=str)
        write_text(Path(f"{args.out}.md"), text)


if __name__ == "__main__":
    main()
