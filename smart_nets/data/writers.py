"""Image writers that never leave a half-written file under the final name."""

from __future__ import annotations

import os
from pathlib import Path

from monai.data import NibabelWriter

__all__ = ["AtomicNibabelWriter"]


class AtomicNibabelWriter(NibabelWriter):
    """MONAI's ``NibabelWriter`` writing to a temporary file in the target folder, then renaming it.

    ``SaveImage(d)`` writes in place, so an inference killed mid-write leaves a truncated mask under its final name;
    pass ``writer="smart_nets.data.writers.AtomicNibabelWriter"`` to ``SaveImaged`` to avoid that.
    """

    def write(self, filename, verbose: bool = False, **obj_kwargs):
        """Write to ``.tmp-<pid>-<name>`` beside ``filename`` (same extension, so compression is kept), rename."""
        path = Path(filename)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
        try:
            super().write(str(tmp), verbose=verbose, **obj_kwargs)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
