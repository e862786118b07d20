"""smart_nets: SMART self-supervised CT pretraining (arXiv 2310.01209) for MONAI bundles."""

__version__ = "0.1.0"
