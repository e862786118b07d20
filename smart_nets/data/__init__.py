"""Data: synthetic CT phantoms and datalist helpers."""

from smart_nets.data.datalist import load_datalist
from smart_nets.data.phantoms import ORGAN_LABELS, Phantom, generate_phantoms, make_phantom

__all__ = ["ORGAN_LABELS", "Phantom", "generate_phantoms", "load_datalist", "make_phantom"]
