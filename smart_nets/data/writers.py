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
    """Yield a temporary path beside ``path`` to write to; fsync it and rename it over ``path`` when the block
    succeeds.

    The temporary name keeps the final name as its suffix (``.tmp-<pid>-<name>``), so writers that infer the format
    from the extension (``.nii.gz``) still compress. On an error the temporary file is removed and ``path`` is left
    as it was. Every writer of the project goes through here.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        yield tmp
        _fsync(tmp)  # the data is on disk before the name points at it: a crash never leaves a named, empty file
        os.replace(tmp, path)
        _fsync(path.parent)  # and the rename itself survives a power cut
    finally:
        tmp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    """``fsync`` a file or a folder; a file system that cannot (some network mounts) is left to its own devices."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class AtomicNibabelWriter(NibabelWriter):
    """MONAI's ``NibabelWriter`` writing through :func:`atomic_path`.

    ``SaveImage(d)`` writes in place, so an inference killed mid-write leaves a truncated mask under its final name;
    pass ``writer="smart_nets.data.writers.AtomicNibabelWriter"`` to ``SaveImaged`` to avoid that.
    """

    def write(self, filename, verbose: bool = False, **obj_kwargs):
        """Write to a temporary file beside ``filename`` and rename it."""
        with atomic_path(filename) as tmp:
            super().write(str(tmp), verbose=verbose, **obj_kwargs)
