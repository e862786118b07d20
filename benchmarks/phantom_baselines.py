"""How much do the CT phantoms leave a network to learn? Baselines and statistics of the generator, CPU, minutes.

1. A HU threshold + largest connected component tumour "segmenter" on 8 and 32 phantoms, and on phantoms forced to
   each tumour kind: lungs found without labels (air
   below -400 HU inside the body, air connected to each slice's border removed, small air pockets such as stomach gas
   dropped, holes filled slice by slice), candidates = voxels above a threshold inside those lungs, the largest 3-D
   component is the prediction (optionally after one binary opening, which drops vessels); Dice against the tumour
   mask, per threshold and per tumour type. The finetuned networks of this project reached Dice 0.56-0.79 on the old
   phantoms; a baseline close to that means the tumour task needs no learning.
2. Median HU per organ label and contrast phase (and after three intensity windows), a sanity table.
3. Mean |difference| between two different whole phantoms, each windowed to [0, 1] and resampled to 64^3, against
   the same between the two views pretraining draws from one phantom at 2.5 mm (the bundle's ``RandTwoViewsd``:
   crops of 0.5-1.5 x a 64^3 ROI inside a 1.0-2.2 x ROI sub-volume, resized to 64^3). The goal: phantoms that differ
   more than two views of one phantom, so that the instance task has something stable to learn.
4. Generation time per volume (``make_phantom``, default per-case grid) and writing time.

Each part runs on the generator of the working tree and, when git can still show it, on the generator this one
replaced (``smart_nets/data/phantoms.py`` at commit 04c23ea), so the two can be compared.

    python -m benchmarks.phantom_baselines                     # ~40 s on 2 cores
    python -m benchmarks.phantom_baselines --num 4 --out /tmp  # quicker, results elsewhere
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from benchmarks.common import REPO, RESULTS, command_line, write_json, write_text
from smart_nets.data.phantoms import ORGAN_LABELS, PHASES, TUMOUR_TYPES, generate_phantoms, make_phantom
from smart_nets.transforms.views import RandTwoViewsd

OLD_COMMIT = "04c23ea"
THRESHOLDS = (-700, -500, -300, -100)
VARIANTS = ("plain", "opened")  # opened: one binary opening (6-neighbourhood) removes vessel-thin candidates
WINDOW = (-750.0, 1750.0)  # the bundles' hu_window until smart_pretrain 0.3.0 (now [-1000, 400])
ROI = 64


def old_generator():
    """The generator this package replaced, loaded from git (None when git or the commit is unavailable)."""
    try:
        source = subprocess.run(
            ["git", "show", f"{OLD_COMMIT}:smart_nets/data/phantoms.py"],
            cwd=REPO,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    path = Path(tempfile.mkdtemp()) / "old_phantoms.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_phantoms", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


def find_lungs(image: np.ndarray) -> np.ndarray:
    """Lungs without labels, as a classic lung-segmentation pipeline finds them (axial slices are ``image[:, :, k]``).

    Args:
        image: ``(X, Y, Z)`` HU.

    Returns:
        ``(X, Y, Z)`` bool: internal air (< -400 HU, not connected to the slice border), components of at least 10%
        of the largest, holes filled slice by slice.
    """
    air = image < -400
    inside = np.zeros_like(air)
    for k in range(air.shape[2]):
        labels, _ = ndimage.label(air[:, :, k])
        border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        inside[:, :, k] = (labels > 0) & ~np.isin(labels, border)
    labels, n = ndimage.label(inside)
    if n == 0:
        return inside
    sizes = np.bincount(labels.ravel())[1:]
    lungs = np.isin(labels, 1 + np.nonzero(sizes >= 0.1 * sizes.max())[0])
    for k in range(lungs.shape[2]):
        lungs[:, :, k] = ndimage.binary_fill_holes(lungs[:, :, k])
    return lungs


def threshold_tumour(image: np.ndarray, lungs: np.ndarray, threshold: float, opened: bool) -> np.ndarray:
    """The largest connected component of ``image > threshold`` inside ``lungs`` (empty if there is none); with
    ``opened``, after a binary opening that removes structures under ~3 voxels across (vessels)."""
    candidates = (image > threshold) & lungs
    if opened:
        candidates = ndimage.binary_opening(candidates, ndimage.generate_binary_structure(3, 1))
    labels, n = ndimage.label(candidates)
    if n == 0:
        return np.zeros_like(lungs)
    return labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two binary masks (1 when both are empty)."""
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2.0 * (a & b).sum() / total)


def baseline(cases: list) -> dict:
    """Threshold baseline Dice per variant and threshold (mean and per case), and the best setting's mean."""
    per = {f"{v} {t}": [] for v in VARIANTS for t in THRESHOLDS}
    for image, tumour in cases:
        lungs = find_lungs(image)
        for v in VARIANTS:
            for t in THRESHOLDS:
                per[f"{v} {t}"].append(dice(threshold_tumour(image, lungs, t, v == "opened"), tumour.astype(bool)))
    means = {k: float(np.mean(d)) for k, d in per.items()}
    best = max(means, key=means.get)
    return {"mean_dice": means, "per_case": per, "best": [best, means[best]], "num": len(cases)}


def window(image: np.ndarray) -> torch.Tensor:
    """HU clipped to :data:`WINDOW` and scaled to [0, 1], as ``(1, 1, X, Y, Z)`` float32."""
    x = np.clip((image.astype(np.float32) - WINDOW[0]) / (WINDOW[1] - WINDOW[0]), 0.0, 1.0)
    return torch.from_numpy(x)[None, None]


def resize(x: torch.Tensor, size) -> torch.Tensor:
    """Trilinear resize of a ``(1, 1, ...)`` volume."""
    return F.interpolate(x, size=tuple(int(s) for s in size), mode="trilinear", align_corners=False)


def two_views(x: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two views of ``x`` ``(1, 1, X, Y, Z)`` as pretraining draws them (the bundle's ``RandTwoViewsd``: a sub-volume
    of 1.0-2.2 x the ROI, then two crops of 0.5-1.5 x the ROI resized to ROI^3), without flips or noise."""
    sampler = RandTwoViewsd("image", (ROI,) * 3, flip_prob=0.0, noise_prob=0.0)
    sampler.set_random_state(seed)
    out = sampler({"image": x[0]})
    return out["view1"][None], out["view2"][None]


def differences(volumes: list, pairs: int = 4) -> dict:
    """Mean |difference| between whole phantoms (all pairs), between the two views of one phantom, and between a view
    of one phantom and a view of the next. ``volumes``: ``(image, spacing)`` pairs; views are drawn at 2.5 mm."""
    whole = [resize(window(im), (ROI,) * 3) for im, _ in volumes]
    iso = [resize(window(im), np.round(np.multiply(im.shape, sp) / 2.5)) for im, sp in volumes]
    n = len(volumes)
    views = [[two_views(x, 1000 * i + k) for k in range(pairs)] for i, x in enumerate(iso)]
    between = [float((whole[i] - whole[j]).abs().mean()) for i in range(n) for j in range(i + 1, n)]
    same = [float((a - b).abs().mean()) for per in views for a, b in per]
    other = [float((views[i][k][0] - views[(i + 1) % n][k][1]).abs().mean()) for i in range(n) for k in range(pairs)]
    return {
        "between_phantoms": float(np.mean(between)),
        "views_of_one_phantom": float(np.mean(same)),
        "views_of_two_phantoms": float(np.mean(other)),
        "iso_shapes": [list(x.shape[2:]) for x in iso],
    }


def organ_table(num_per_phase: int) -> dict:
    """Mean over cases of each organ label's median HU, per contrast phase (default per-case grids)."""
    table = {}
    for phase in PHASES:
        rows = {name: [] for name in ORGAN_LABELS.values() if name != "background"}
        for i in range(num_per_phase):
            p = make_phantom((1000, i), phases=(phase,))
            for k, name in ORGAN_LABELS.items():
                if k and (p.organs == k).any():
                    rows[name].append(float(np.median(p.image[p.organs == k])))
        table[phase] = {name: float(np.mean(v)) for name, v in rows.items() if v}
    return table


def timing(num: int, work: Path, old=None) -> dict:
    """Seconds per ``make_phantom`` at the default per-case grid (mean, median, max) and voxels per volume, with the
    old generator's seconds at its default 128 x 128 x 64 timed in turn (so outside load hits both alike); and seconds
    per case of ``generate_phantoms`` (generation plus writing three gzipped NIfTI files)."""
    seconds, old_seconds, voxels = [], [], []
    for i in range(num):
        start = time.perf_counter()
        p = make_phantom((2000, i))
        seconds.append(time.perf_counter() - start)
        voxels.append(int(p.image.size))
        if old is not None:
            start = time.perf_counter()
            old.make_phantom((2000, i))
            old_seconds.append(time.perf_counter() - start)
    start = time.perf_counter()
    generate_phantoms(str(work / "timing"), num=min(num, 4), seed=2000)
    out = {
        "make_phantom_s": float(np.mean(seconds)),
        "make_phantom_median_s": float(np.median(seconds)),
        "make_phantom_max_s": float(np.max(seconds)),
        "mean_voxels": float(np.mean(voxels)),
        "generate_phantoms_s_per_case": (time.perf_counter() - start) / min(num, 4),
    }
    if old_seconds:
        out |= {
            "old_make_phantom_s": float(np.mean(old_seconds)),
            "old_make_phantom_median_s": float(np.median(old_seconds)),
        }
    return out


def new_cases(num: int, start: int = 0) -> tuple[list, list, list]:
    """Default phantoms ``(0, start)`` .. ``(0, start + num - 1)``: (image, tumour) pairs, (image, spacing) pairs,
    and their tumour types."""
    cases, volumes, types = [], [], []
    for i in range(start, start + num):
        p = make_phantom((0, i))
        cases.append((p.image, p.tumour))
        volumes.append((p.image, p.acquisition["spacing"]))
        types.append(p.tumour_properties["type"])
    return cases, volumes, types


def by_type(result: dict, types: list, per_type: int) -> dict:
    """Mean Dice per tumour type at the best setting of ``result`` (a mixed sample of ``types``), and the best
    setting and Dice on ``per_type`` phantoms forced to each type."""
    best = result["best"][0]
    out = {}
    for kind in TUMOUR_TYPES:
        mixed = [d for d, k in zip(result["per_case"][best], types) if k == kind]
        forced = baseline(
            [(p.image, p.tumour) for p in (make_phantom((3000, i), tumour_types=(kind,)) for i in range(per_type))]
        )
        out[kind] = {
            "in_mix": float(np.mean(mixed)) if mixed else None,
            "count_in_mix": len(mixed),
            "forced_best": forced["best"],
        }
    return out


def run(num: int, num_large: int, work: Path) -> dict:
    """Every measurement; returns the results dictionary."""
    results = {"settings": {"num": num, "num_large": num_large, "thresholds": list(THRESHOLDS), "window": list(WINDOW)}}
    old = old_generator()
    if old is not None:
        olds = [old.make_phantom((0, i)) for i in range(num)]
        results["old"] = {
            "generator": f"smart_nets/data/phantoms.py at {OLD_COMMIT}, default shape (128, 128, 64), 2.5x2.5x5 mm",
            "threshold_baseline": baseline([(p.image, p.tumour) for p in olds]),
            "differences": differences([(p.image, np.abs(np.diag(p.affine))[:3]) for p in olds]),
        }
    cases, volumes, types = new_cases(num)
    more, _, more_types = new_cases(num_large - num, start=num)
    large = baseline(cases + more)
    new = {"threshold_baseline": baseline(cases), "tumour_types": types, "threshold_baseline_large": large}
    new["threshold_baseline_by_type"] = by_type(large, types + more_types, max(2, 3 * num // 4))
    new["differences"] = differences(volumes)
    new["organ_median_hu"] = organ_table(max(2, num // 4))
    new["timing"] = timing(num, work, old)
    results["new"] = new
    return results


def _window(hu: float, lo: float, hi: float) -> float:
    return float(np.clip((hu - lo) / (hi - lo), 0.0, 1.0))


def markdown(results: dict, command: str) -> str:
    """The results as a Markdown report."""
    new, old = results["new"], results.get("old")
    lines = [
        "# Phantom baselines",
        "",
        f"Command: `{command}` ({results['machine']['cores']} cores, Python {results['machine']['python']}, "
        f"{results['seconds']:.0f} s in all). Raw numbers: `phantom_baselines.json`.",
    ]
    return (
        "\n".join(
            lines + _baseline_lines(new, old) + _difference_lines(new, old) + _organ_lines(new) + _timing_lines(new)
        )
        + "\n"
    )


def _baseline_lines(new: dict, old: dict | None) -> list[str]:
    lines = ["", "## HU threshold + largest connected component tumour baseline", ""]
    lines += [
        "Lungs found without labels (air < -400 HU not connected to the slice border, air pockets under 10% of the "
        "largest dropped, holes filled slice by slice); candidates = voxels above the threshold inside them "
        "(`opened`: after one binary opening, which removes vessels); the largest 3-D component is the prediction. "
        "Dice against the tumour mask, mean over phantoms `(0, i)`. For scale: the finetuned networks of "
        "`label_efficiency.md` reached 0.56-0.79 on the old phantoms.",
        "",
        "| generator | phantoms | " + " | ".join(f"{v} {t}" for v in VARIANTS for t in THRESHOLDS) + " | best |",
        "| --- | --- |" + " --- |" * (len(VARIANTS) * len(THRESHOLDS) + 1),
    ]
    rows = [("old (04c23ea)", old["threshold_baseline"] if old else None), ("new", new["threshold_baseline"])]
    rows.append(("new", new["threshold_baseline_large"]))
    for name, b in rows:
        if b is None:
            lines.append("| old (04c23ea) | 8 | not reachable here (no git history): the audit measured 0.84 |")
            continue
        cells = " | ".join(f"{b['mean_dice'][f'{v} {t}']:.2f}" for v in VARIANTS for t in THRESHOLDS)
        lines.append(f"| {name} | {b['num']} | {cells} | **{b['best'][1]:.2f}** ({b['best'][0]}) |")
    lines += ["", f"Per tumour type: in the {new['threshold_baseline_large']['num']}-phantom mix at its best setting, "]
    lines[-1] += "and on phantoms forced to one type at that type's own best setting."
    lines += ["", "| type | cases in mix | Dice in mix | forced: best Dice (setting) |", "| --- | --- | --- | --- |"]
    for kind, row in new["threshold_baseline_by_type"].items():
        mix = "-" if row["in_mix"] is None else f"{row['in_mix']:.2f}"
        best = row["forced_best"]
        lines.append(f"| {kind} | {row['count_in_mix']} | {mix} | {best[1]:.2f} ({best[0]}) |")
    return lines


def _difference_lines(new: dict, old: dict | None) -> list[str]:
    lines = ["", "## Phantoms against views of one phantom", ""]
    lines.append(
        f"Mean |difference| after windowing HU [{WINDOW[0]:.0f}, {WINDOW[1]:.0f}] to [0, 1]. Whole phantoms: every "
        f"pair, each resampled to {ROI}^3. Views: the volume resampled to 2.5 mm, then the bundle's `RandTwoViewsd` "
        f"(sub-volume 1.0-2.2 x a {ROI}^3 ROI, two crops of 0.5-1.5 x ROI resized to {ROI}^3; no flips or noise), "
        "4 pairs per phantom; 'two phantoms' pairs a view of each phantom with a view of the next."
    )
    lines += ["", "| generator | between phantoms | views of one phantom | views of two phantoms |"]
    lines.append("| --- | --- | --- | --- |")
    for name, part in (("old (04c23ea)", old), ("new", new)):
        if part is not None:
            d = part["differences"]
            lines.append(
                f"| {name} | {d['between_phantoms']:.3f} | {d['views_of_one_phantom']:.3f} | "
                f"{d['views_of_two_phantoms']:.3f} |"
            )
    return lines


def _organ_lines(new: dict) -> list[str]:
    table = new["organ_median_hu"]
    organs = list(next(iter(table.values())))
    windows = ((-750.0, 1750.0), (-1000.0, 400.0), (-160.0, 240.0))
    lines = ["", "## Median HU per organ label and contrast phase", ""]
    lines.append(
        "Mean over cases of the median HU inside each label; in brackets the value after the windows "
        + ", ".join(f"[{lo:.0f}, {hi:.0f}]" for lo, hi in windows)
        + " (the bundles' window first)."
    )
    lines += ["", "| organ | " + " | ".join(table) + " |", "| --- |" + " --- |" * len(table)]
    for organ in organs:
        cells = []
        for t in table.values():
            w = ", ".join(f"{_window(t[organ], lo, hi):.2f}" for lo, hi in windows)
            cells.append(f"{t[organ]:.0f} ({w})" if organ in t else "-")
        lines.append(f"| {organ} | " + " | ".join(cells) + " |")
    return lines


def _timing_lines(new: dict) -> list[str]:
    t = new["timing"]
    lines = ["", "## Generation time", ""]
    lines.append(
        f"`make_phantom` at the default per-case grid (mean {t['mean_voxels'] / 1e6:.2f} M voxels): "
        f"{t['make_phantom_s']:.3f} s per volume on average (median {t['make_phantom_median_s']:.3f} s), "
        f"{t['make_phantom_max_s']:.3f} s at most; "
        "`generate_phantoms` with writing three gzipped NIfTI files: "
        f"{t['generate_phantoms_s_per_case']:.2f} s per case."
    )
    if "old_make_phantom_s" in t:
        lines[-1] += (
            f" The old generator, timed in turn: {t['old_make_phantom_s']:.3f} s per volume (median "
            f"{t['old_make_phantom_median_s']:.3f} s) at 128 x 128 x 64 (1.05 M voxels)."
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num", type=int, default=8, help="phantoms per measurement (8: as the audit)")
    parser.add_argument("--num_large", type=int, default=32, help="phantoms of the larger baseline sample")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS), help="folder for phantom_baselines.json and .md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        results = run(args.num, max(args.num_large, args.num + 1), Path(work))
    results["seconds"] = time.perf_counter() - start
    results["machine"] = {"cores": args.threads, "python": platform.python_version(), "platform": platform.platform()}
    command = command_line("phantom_baselines")
    out = Path(args.out)
    write_json(out / "phantom_baselines.json", results, indent=2)
    write_text(out / "phantom_baselines.md", markdown(results, command))
    print(markdown(results, command))


if __name__ == "__main__":
    main()
