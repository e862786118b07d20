"""Atomic file output: nothing half-written ever sits under a final name."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from monai.data import NibabelWriter

__all__ = ["atomic_path", "AtomicNibabelWriter"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; rename it over ``path`` when the block succeeds.

    The temporary name keeps the final name as its suffix (``.tmp-<pid>-<name>``), so writers that infer the format
    from the extension (``.nii.gz``) still compress. On an error the temporary file is removed and ``path`` is left
    as it was. Every writer of the project goes through here.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class AtomicNibabelWriter(NibabelWriter):
    """MONAI's ``NibabelWriter`` writing through :func:`atomic_path`.

    ``SaveImage(d)`` writes in place, so an inference killed mid-write leaves a truncated mask under its final name;
    pass ``writer="smart_nets.data.writers.AtomicNibabelWriter"`` to ``SaveImaged`` to avoid that.
    """

    def write(self, filename, verbose: bool = False, **obj_kwargs):
        """Write to a temporary file beside ``filename`` and rename it."""
        with atomic_path(filename) as tmp:
            super().write(str(tmp), verbose=verbose, **obj_kwargs)
