"""Hounsfield units per tissue and contrast phase, organ texture, and the scanner: noise, kernel, partial volume."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ._anatomy import Tissue
from ._geometry import Canvas, smooth_noise

PHASES = ("non_contrast", "arterial", "portal_venous")
KERNELS = ("smooth", "standard", "sharp")

# Mean HU per tissue, drawn uniformly per case from these ranges: one (lo, hi) for every phase, or one per phase in the
# order of PHASES. Typical values of routine chest/abdomen CT:
# non-contrast liver 55-65 > spleen 45-50 > kidney 30-35; arterial aorta 250-350 with corticomedullary kidneys
# (cortex 150-200, medulla 60-90) and a heterogeneous spleen; portal venous liver 100-120, spleen 110-130,
# homogeneous kidneys 140-180, aorta 150-180.
HU_RANGES: dict[Tissue, tuple] = {
    Tissue.AIR: (-1000, -995),
    Tissue.GAS: (-1000, -950),
    Tissue.FAT: (-115, -85),
    Tissue.MUSCLE: ((40, 55), (50, 60), (55, 65)),
    Tissue.VISCERAL: ((25, 40), (40, 60), (60, 90)),  # its soft-tissue end; mixed with fat per voxel
    Tissue.LUNG: (-880, -840),  # shifted by the lung's inflation, denser at the back
    Tissue.PULMONARY_VESSEL: ((35, 50), (200, 300), (140, 180)),
    Tissue.MYOCARDIUM: ((40, 50), (90, 130), (90, 110)),
    Tissue.BLOOD_POOL: ((40, 50), (200, 300), (140, 180)),
    Tissue.AORTA: ((40, 50), (250, 350), (150, 180)),
    Tissue.IVC: ((40, 50), (70, 110), (130, 160)),
    Tissue.LIVER: ((55, 65), (70, 80), (100, 120)),
    Tissue.LIVER_VESSEL: ((35, 45), (110, 160), (150, 190)),
    Tissue.SPLEEN: ((45, 50), (90, 130), (110, 130)),
    Tissue.KIDNEY_CORTEX: ((30, 35), (150, 200), (140, 180)),
    Tissue.KIDNEY_MEDULLA: ((30, 35), (60, 90), (140, 180)),  # portal venous: set equal to the cortex
    Tissue.CORTICAL_BONE: (700, 1000),
    Tissue.MARROW: (150, 350),
    Tissue.DISC: (70, 100),
    Tissue.RIB: (600, 900),
    Tissue.GUT_WALL: ((30, 45), (60, 80), (80, 100)),
    Tissue.FLUID: (0, 20),
    Tissue.COUCH: (-350, -250),
    Tissue.CSF: (5, 15),
}
# Texture amplitude (HU standard deviation): fine grain (~8 mm) and coarse patches (~30 mm)
_FINE = {Tissue.LIVER: (4, 10), Tissue.SPLEEN: (4, 8), Tissue.KIDNEY_CORTEX: (3, 6), Tissue.MUSCLE: (5, 10)}
_FINE |= {Tissue.MARROW: (30, 60), Tissue.CORTICAL_BONE: (40, 80), Tissue.RIB: (40, 80), Tissue.FAT: (5, 12)}
_COARSE = {Tissue.LUNG: (15, 35), Tissue.LIVER: (3, 8), Tissue.MYOCARDIUM: (3, 6), Tissue.GUT_WALL: (5, 15)}
_SPLEEN_ARTERIAL = (15, 25)  # the arterial phase's arciform (moire) spleen


def draw_phase(rng: np.random.Generator, phases: Sequence[str]) -> str:
    """One of ``phases``, uniformly."""
    return str(phases[int(rng.integers(len(phases)))])


def tissue_means(rng: np.random.Generator, phase: str) -> np.ndarray:
    """This case's mean HU per tissue class (index = :class:`Tissue`)."""
    p = PHASES.index(phase)
    means = np.zeros(len(Tissue), dtype=np.float32)
    for tissue, ranges in HU_RANGES.items():
        lo, hi = ranges[p] if isinstance(ranges[0], tuple) else ranges
        means[tissue] = rng.uniform(lo, hi)
    if phase == "portal_venous":  # nephrographic: cortex and medulla alike
        means[Tissue.KIDNEY_MEDULLA] = means[Tissue.KIDNEY_CORTEX]
    return means


def render(
    c: Canvas,
    rng: np.random.Generator,
    texture_rng: np.random.Generator,
    phase: str,
    inflation: float,
    visceral_fat: float,
) -> np.ndarray:
    """The noise-free HU image (float32) of the tissue map of ``c`` in ``phase``, with organ texture.

    Args:
        c: the drawn canvas.
        rng: random generator of this case's intensities (as many draws whatever the grid).
        texture_rng: random generator of the texture fields (their size follows the grid).
        phase: one of :data:`PHASES`.
        inflation: the lung inflation factor (a deflated lung is denser).
        visceral_fat: bias of the fat share of visceral tissue (see :class:`._anatomy.Habitus`).

    Returns:
        ``(X, Y, Z)`` float32 HU.
    """
    means = tissue_means(rng, phase)
    means[Tissue.LUNG] += 200.0 * (1.0 - inflation)
    fine_amp, coarse_amp = np.zeros_like(means), np.zeros_like(means)
    for table, amp in ((_FINE, fine_amp), (_COARSE, coarse_amp)):
        for tissue, (lo, hi) in table.items():
            amp[tissue] = rng.uniform(lo, hi)
    if phase == "arterial":
        coarse_amp[Tissue.SPLEEN] = rng.uniform(*_SPLEEN_ARTERIAL)
    gravity = rng.uniform(0.1, 0.4)
    fine = smooth_noise(texture_rng, c.shape, c.spacing, 8.0)
    coarse = smooth_noise(texture_rng, c.shape, c.spacing, 30.0)
    hu = means[c.tissue] + fine_amp[c.tissue] * fine + coarse_amp[c.tissue] * coarse
    visceral = c.tissue == Tissue.VISCERAL
    share = 1.0 / (1.0 + np.exp(-(2.5 * fine[visceral] + 1.5 * coarse[visceral] - visceral_fat)))
    hu[visceral] = means[Tissue.FAT] + (means[Tissue.VISCERAL] - means[Tissue.FAT]) * share
    lung = c.tissue == Tissue.LUNG
    hu[lung] -= gravity * np.broadcast_to(c.v, c.shape)[lung]  # denser at the back, where the patient lies
    return hu


def draw_scan(rng: np.random.Generator) -> dict[str, float | str]:
    """The scanner settings of a case: reconstruction kernel (smooth, standard or sharp) as an in-plane Gaussian
    blur ``kernel_sigma_mm``, the unsharp-mask ``sharpening`` of a sharp kernel, and the noise level ``noise_hu``
    (standard deviation after blurring, before sharpening)."""
    kernel = KERNELS[int(rng.integers(len(KERNELS)))]
    sigma = {"smooth": rng.uniform(1.6, 2.4), "standard": rng.uniform(1.0, 1.4), "sharp": rng.uniform(0.6, 0.9)}[kernel]
    sharpening = rng.uniform(0.3, 0.8) if kernel == "sharp" else 0.0
    noise = rng.uniform(8.0, 30.0)
    return {
        "kernel": kernel,
        "kernel_sigma_mm": float(sigma),
        "sharpening": float(sharpening),
        "noise_hu": float(noise),
    }


def acquire(
    hu: np.ndarray, rng: np.random.Generator, scan: dict[str, float | str], spacing: Sequence[float]
) -> np.ndarray:
    """Scan ``hu``: add noise, then blur with the reconstruction kernel in-plane and the slice profile (0.4 slice
    along z), so the noise is correlated as on a real scanner; a sharp kernel then adds an unsharp mask (edge
    overshoot, more noise).

    Args:
        hu: ``(X, Y, Z)`` float32 noise-free HU (not modified).
        rng: random generator of the noise.
        scan: settings from :func:`draw_scan`.
        spacing: ``(X, Y, Z)`` voxel size in mm.

    Returns:
        The scanned image, float32.
    """
    sigma_mm = float(scan["kernel_sigma_mm"])
    sigma = (sigma_mm / spacing[0], sigma_mm / spacing[1], 0.4)
    gain = float(np.prod([np.sqrt(np.sum(_gaussian_taps(s) ** 2)) for s in sigma]))  # white-noise std after blurring
    out = hu + rng.standard_normal(hu.shape, dtype=np.float32) * (float(scan["noise_hu"]) / gain)
    out = ndimage.gaussian_filter(out, sigma, truncate=3.0)
    if scan["sharpening"]:
        detail = out - ndimage.gaussian_filter(out, (1.5 / spacing[0], 1.5 / spacing[1], 0.0), truncate=3.0)
        out += float(scan["sharpening"]) * detail
    return out


def _gaussian_taps(sigma: float, truncate: float = 3.0) -> np.ndarray:
    """The normalised 1-D kernel :func:`scipy.ndimage.gaussian_filter` uses for ``sigma``."""
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1)
    taps = np.exp(-0.5 * (x / sigma) ** 2)
    return taps / taps.sum()
