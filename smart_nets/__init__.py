"""smart_nets: SMART self-supervised CT pretraining (arXiv 2310.01209) for MONAI bundles.

Subpackages load on first attribute access (PEP 562), so bundle configs can write
``$smart_nets.engines.make_teacher(...)`` after a plain ``$import smart_nets``, and ``python -m
smart_nets.data.phantoms`` does not import the package it runs twice.
"""

from __future__ import annotations

import importlib

__version__ = "0.12.1"

_SUBPACKAGES = (
    "cluster",
    "data",
    "engines",
    "export",
    "handlers",
    "losses",
    "metrics",
    "networks",
    "options",
    "provenance",
    "runtime",
    "transforms",
    "zoo",
)


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"smart_nets.{name}")
    raise AttributeError(f"module 'smart_nets' has no attribute {name!r}")
