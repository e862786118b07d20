"""The training dataset with the caching a config asks for: none, in memory, or on disk."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from monai.data import CacheDataset, Dataset, PersistentDataset
from monai.data.utils import pickle_hashing
from monai.utils import look_up_option

__all__ = ["CACHE_MODES", "make_dataset"]

CACHE_MODES = ("none", "memory", "disk")


def make_dataset(
    data: Sequence,
    transform: Callable,
    cache: str = "none",
    cache_rate: float = 1.0,
    cache_dir: str | os.PathLike | None = None,
    num_workers: int | None = 0,
    progress: bool = True,
) -> Dataset:
    """A MONAI dataset over ``data`` that caches the deterministic start of ``transform`` as ``cache`` says.

    MONAI has the three datasets but they take different arguments, so a bundle config would need its whole
    ``dataset`` section rewritten to switch; this picks one by a single ``cache`` key and checks the arguments the
    chosen one needs. Each caches the output of the transforms before the first random one (for the pretraining
    chain: load, orientation, resampling, intensity window), so every epoch after the first skips them.

    - ``"none"``: ``monai.data.Dataset``, everything recomputed each time (no memory, slowest per volume).
    - ``"memory"``: ``monai.data.CacheDataset`` with ``cache_rate`` and ``num_workers``: a fraction of the volumes
      held in RAM, filled before training starts, per process (each data-loader worker shares it by fork, but every
      rank of a multi-GPU run holds its own copy).
    - ``"disk"``: ``monai.data.PersistentDataset`` in ``cache_dir``: one file per volume written the first time it is
      read (atomically, so ranks and workers may share a folder), reused by later epochs and later runs. The cache
      keys hash the item and the cached transforms (``hash_transform``), so a changed spacing or window writes
      new files instead of reusing stale ones; delete the folder to reclaim the space.

    Args:
        data: the items, e.g. ``[{"image": path}, ...]``.
        transform: the whole transform chain.
        cache: ``"none"``, ``"memory"`` or ``"disk"``.
        cache_rate: fraction of the items ``"memory"`` caches (0 to 1).
        cache_dir: folder for ``"disk"``; created if missing.
        num_workers: threads ``"memory"`` fills its cache with.
        progress: show ``"memory"``'s progress bar while it fills.

    Returns:
        The dataset.

    Raises:
        ValueError: an unknown ``cache``, ``cache_rate`` outside [0, 1], ``"disk"`` without ``cache_dir``, or no items.
        NotADirectoryError: ``cache_dir`` exists and is not a folder.
        PermissionError: ``cache_dir`` cannot be written.
    """
    mode = look_up_option(cache, CACHE_MODES)
    if len(data) == 0:
        raise ValueError("the dataset has no items: the datalist selection matched nothing")
    if mode == "none":
        return Dataset(data, transform)
    if mode == "memory":
        if not 0.0 <= float(cache_rate) <= 1.0:
            raise ValueError(f"cache_rate must be between 0 and 1, got {cache_rate}")
        return CacheDataset(data, transform, cache_rate=float(cache_rate), num_workers=num_workers, progress=progress)
    if cache_dir is None or str(cache_dir) == "":
        raise ValueError('cache "disk" needs a cache_dir: the folder the preprocessed volumes are written to')
    if os.path.exists(cache_dir) and not os.path.isdir(cache_dir):
        raise NotADirectoryError(
            f'cache_dir {cache_dir} exists and is not a folder (cache "disk" writes files into it)'
        )
    os.makedirs(cache_dir, exist_ok=True)
    if not os.access(cache_dir, os.W_OK):
        raise PermissionError(f"cache_dir {cache_dir} is not writable")
    return PersistentDataset(data, transform, cache_dir=cache_dir, hash_transform=pickle_hashing)
