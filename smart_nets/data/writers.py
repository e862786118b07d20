"""Atomic image output for MONAI's ``SaveImage(d)``: nothing half-written ever sits under a final name."""

from __future__ import annotations

from monai.data import NibabelWriter

from smart_nets.io import atomic_path

__all__ = ["AtomicNibabelWriter"]


class AtomicNibabelWriter(NibabelWriter):
    """MONAI's ``NibabelWriter`` writing through :func:`smart_nets.io.atomic_path`.

    ``SaveImage(d)`` writes in place, so an inference killed mid-write leaves a truncated mask under its final name;
    pass ``writer="smart_nets.data.writers.AtomicNibabelWriter"`` to ``SaveImaged`` to avoid that.
    """

    def write(self, filename, verbose: bool = False, **obj_kwargs):
        """Write to a temporary file beside ``filename`` and rename it."""
        with atomic_path(filename) as tmp:
            super().write(str(tmp), verbose=verbose, **obj_kwargs)
