"""smart_nets: SMART self-supervised CT pretraining (arXiv 2310.01209) for MONAI bundles.

Subpackages are imported here so that bundle configs can write ``$smart_nets.engines.make_teacher(...)`` after a
plain ``$import smart_nets``.
"""

__version__ = "0.2.0"

from smart_nets import data, engines, handlers, losses, metrics, networks, transforms  # noqa: E402,F401
