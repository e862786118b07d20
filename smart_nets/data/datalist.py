"""Finding the images an entry point works on: a datalist with checks that name what is missing, or a folder of images
that must hold at least one."""

from __future__ import annotations

import fnmatch
import glob
import os
from collections.abc import Mapping, Sequence

from monai.data import load_decathlon_datalist

__all__ = ["check_datalist_file", "find_images", "image_items", "load_datalist"]

# the image files an inference run finds in a folder (LoadImageCheckedd reads each format; NRRD and MetaImage need the
# smart-nets[formats] extra); Slicer's segmentations (*.seg.nrrd) beside the images are masks, not images
IMAGE_PATTERNS = ("*.nii.gz", "*.nii", "*.nrrd", "*.nhdr", "*.mha", "*.mhd")
NOT_IMAGES = ("*.seg.nrrd", "*.seg.nhdr")


def check_datalist_file(datalist: str | os.PathLike) -> None:
    """Raise a ``FileNotFoundError`` that says how to point a bundle at its datalist when ``datalist`` is no file."""
    if not os.path.isfile(datalist):
        raise FileNotFoundError(
            f"datalist {datalist} does not exist: give --dataset_dir a folder holding an MSD-style dataset.json, or "
            "--datalist the path of one (see the bundle's docs/README.md, 'Data')"
        )


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
    check_datalist_file(datalist)
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


def _holds_dicom(folder: str, probe: int = 8) -> bool:
    """Whether one of the first ``probe`` files of ``folder`` (sorted, not recursive) is a DICOM file."""
    from pydicom.misc import is_dicom  # the Part 10 preamble check ("DICM" at byte 128), no parsing

    try:
        files = sorted(e.path for e in os.scandir(folder) if e.is_file())
        return any(is_dicom(f) for f in files[:probe])
    except OSError:
        return False


def find_images(
    dataset_dir: str | os.PathLike,
    patterns: Sequence[str] = IMAGE_PATTERNS,
    dicom: bool = True,
    exclude: Sequence[str] = NOT_IMAGES,
) -> list[str]:
    """The images an inference config runs on: image files in ``dataset_dir`` (NIfTI, NRRD, MetaImage) and DICOM
    series folders, sorted.

    ``glob`` in a config (``$sorted(glob.glob(@dataset_dir + '/*.nii.gz'))``) turns a wrong ``--dataset_dir`` into a
    run that exits 0 having written nothing; this refuses it and says where images were seen instead (a dataset
    root whose images sit in ``imagesTr/``, say).

    Args:
        dataset_dir: a folder holding image files and/or one subfolder per DICOM series; a folder of DICOM files is
            itself one series; a single image file is accepted as itself.
        patterns: file name patterns of the image files, matched directly in ``dataset_dir`` (not recursively).
        dicom: also return subfolders (and ``dataset_dir`` itself) that hold DICOM files.
        exclude: patterns of files that match ``patterns`` but are not images (Slicer's ``*.seg.nrrd`` masks).

    Returns:
        Paths: the matching files, then the DICOM folders.

    Raises:
        FileNotFoundError: when ``dataset_dir`` does not exist.
        ValueError: when nothing matches, naming what was searched and the subfolders that do hold images.
    """
    root = os.fspath(dataset_dir)

    def matching(folder: str) -> list[str]:
        found = {f for p in patterns for f in glob.glob(os.path.join(glob.escape(folder), p))}
        return sorted(f for f in found if not any(fnmatch.fnmatch(os.path.basename(f), x) for x in exclude))

    if os.path.isfile(root) and any(fnmatch.fnmatch(os.path.basename(root), p) for p in patterns):
        return [root]
    if not os.path.isdir(root):
        raise FileNotFoundError(f"dataset_dir {root} is not a folder (or a {'/'.join(patterns)} file)")
    files = matching(root)
    if dicom and not files and _holds_dicom(root):
        return [root]
    subfolders = sorted(e.path for e in os.scandir(root) if e.is_dir())
    series = [d for d in subfolders if _holds_dicom(d)] if dicom else []
    if files or series:
        return files + series
    searched = f"{', '.join(patterns)} files" + (" and DICOM series folders (one series per folder)" if dicom else "")
    if exclude:
        searched += f" (not {', '.join(exclude)})"
    counts = {d: len(matching(d)) for d in subfolders}
    holding = [d for d in subfolders if counts[d]]
    hint = (
        f"; subfolders holding images: {', '.join(f'{os.path.basename(d)}/ ({counts[d]} files)' for d in holding[:5])}"
        f" - point dataset_dir at one of them, e.g. --dataset_dir {holding[0]}"
        if holding
        else "; give a folder of images (NIfTI, NRRD, MetaImage) or of DICOM series folders"
    )
    raise ValueError(f"no images in dataset_dir {root}: searched for {searched} directly in it{hint}")


def image_items(images: str | os.PathLike | Sequence, key: str = "image") -> list[dict]:
    """The dataset items of an inference config: ``{key: path}`` per image, refusing an empty selection.

    Args:
        images: paths (image files, DICOM series folders) or items that are already dictionaries; a single path is
            a folder searched with :func:`find_images` (so ``--datalist /data/ct`` works as ``--dataset_dir``).
        key: the item key of the image.

    Raises:
        ValueError: when there is no image, e.g. ``--datalist "[]"`` or a glob that matched nothing.
    """
    if isinstance(images, (str, os.PathLike)):
        images = find_images(images)
    items = [i if isinstance(i, Mapping) else {key: i} for i in images]
    if not items:
        raise ValueError(
            "no images to run on: the datalist is empty; give --dataset_dir a folder of images (NIfTI, NRRD, "
            "MetaImage) or DICOM series folders, or --datalist a list of them"
        )
    return items
