"""Data: synthetic CT phantoms and datalist helpers."""

from smart_nets.data.phantoms import ORGAN_LABELS, Phantom, generate_phantoms, make_phantom

__all__ = ["ORGAN_LABELS", "Phantom", "generate_phantoms", "make_phantom"]
