"""Data: synthetic CT phantoms, training datasets with caching, DICOM series and DICOM-SEG writing, datalist
loading, atomic image writers.

Names load on first access (PEP 562) so that ``python -m smart_nets.data.phantoms`` runs its module only once.
"""

from __future__ import annotations

import importlib

_NAMES = {
    "ORGAN_LABELS": "phantoms",
    "Phantom": "phantoms",
    "generate_phantoms": "phantoms",
    "make_phantom": "phantoms",
    "check_datalist_file": "datalist",
    "find_images": "datalist",
    "image_items": "datalist",
    "load_datalist": "datalist",
    "write_dicom_series": "dicom",
    "dicom_series_in": "dicom",
    "SaveDicomSegd": "dicom_seg",
    "check_output_format": "dicom_seg",
    "write_dicom_seg": "dicom_seg",
    "AtomicNibabelWriter": "writers",
    "CACHE_MODES": "datasets",
    "make_dataset": "datasets",
}
__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name in _NAMES:
        return getattr(importlib.import_module(f"smart_nets.data.{_NAMES[name]}"), name)
    if name in {"phantoms", "datalist", "datasets", "dicom", "dicom_seg", "writers"}:
        return importlib.import_module(f"smart_nets.data.{name}")
    raise AttributeError(f"module 'smart_nets.data' has no attribute {name!r}")
