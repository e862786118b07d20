"""Datalist loading with checks that name what is missing."""

from __future__ import annotations

import os
from collections.abc import Sequence

from monai.data import load_decathlon_datalist

__all__ = ["load_datalist"]


def load_datalist(
    datalist: str,
    key: str = "training",
    base_dir: str | None = None,
    path_keys: Sequence[str] = ("image",),
) -> list[dict]:
    """Read an MSD-style ``dataset.json`` list and check that every referenced file or DICOM folder exists.

    Wraps ``monai.data.load_decathlon_datalist``, which resolves only ``image`` and ``label`` paths and defers a
    missing file to the first time the loader touches it; here extra path keys (e.g. ``organs``) are resolved
    against the same base and every path is checked up front.

    Args:
        datalist: path of the JSON file.
        key: list to read (``training``, ``validation``, ...).
        base_dir: folder relative paths start from (default: the datalist's folder).
        path_keys: item keys holding paths.

    Returns:
        The items with absolute paths.

    Raises:
        FileNotFoundError: for a missing datalist or referenced path (up to five named).
        ValueError: when the list is absent or empty.
    """
    if not os.path.isfile(datalist):
        raise FileNotFoundError(f"datalist {datalist} does not exist")
    base = base_dir if base_dir is not None else os.path.dirname(os.path.abspath(datalist))
    try:
        items = load_decathlon_datalist(datalist, is_segmentation=True, data_list_key=key, base_dir=base)
    except ValueError as e:
        raise ValueError(f"datalist {datalist}: {e}") from e
    if not items:
        raise ValueError(f"datalist {datalist} has an empty '{key}' list")
    missing = []
    for item in items:
        for k in path_keys:
            if k not in item:
                raise ValueError(f"datalist {datalist}: an item of '{key}' has no '{k}': {item}")
            paths = item[k] if isinstance(item[k], list) else [item[k]]
            paths = [p if os.path.isabs(p) else os.path.normpath(os.path.join(base, p)) for p in paths]
            item[k] = paths if isinstance(item[k], list) else paths[0]
            missing += [p for p in paths if not os.path.exists(p)]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise FileNotFoundError(f"datalist {datalist} references missing files: {missing[:5]}{more}")
    return items
