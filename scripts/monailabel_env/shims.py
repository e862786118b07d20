"""Two import shims for MONAI Label 0.8.5 in the check's environment (``.venv-monailabel``, made by
``scripts/check_monailabel.sh``, which copies this file into its site-packages with a ``.pth`` line that calls
:func:`install` at start-up). Each answers only the module names below, and only when nothing real was found first:
:func:`install` appends its finder to the END of ``sys.meta_path``.

1. ``torchvision`` and ``torchvision.utils``. No torchvision loads beside the CPU torch: PyPI's Linux torchvision
   wheels are CUDA builds whose ``_C.so`` needs ``libtorch_cuda.so``, and ``import torchvision`` then stops with
   ``operator torchvision::nms does not exist``. MONAI Label imports ``torchvision.utils.make_grid`` and
   ``save_image`` at the top of ``monailabel/transform/post.py`` (which ``monailabel.tasks.infer.bundle`` imports)
   and ``monailabel/deepedit/handlers.py``, and calls them only to dump 2D debug images
   (``DumpImagePrediction2Dd``, DeepEdit handlers); the bundle app's inference and training never do. Here they
   raise a ``RuntimeError`` saying why; any other attribute or submodule of torchvision stays missing, so MONAI's
   ``optional_import`` reports it as missing.
2. ``pydicom._storage_sopclass_uids``, which pydicom 3 removed (its UIDs live in ``pydicom.uid`` since pydicom 2.3).
   ``pydicom-seg`` 0.4.1, the latest release, still imports ``SegmentationStorage`` from it, so with pydicom 3 (this
   project's version) ``monailabel.endpoints.infer`` fails to import (MONAILabel issue #1841, pydicom-seg issue
   #60). The shim is that module with ``pydicom.uid``'s names.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types

_TORCHVISION = ("torchvision", "torchvision.utils")
_SOP_UIDS = "pydicom._storage_sopclass_uids"
_WHY = (
    "torchvision is not installed in this environment (no torchvision wheel loads beside the CPU torch); a stand-in "
    "serves MONAI Label's imports, and {name} (2D debug image dumps) is unavailable"
)


def _unavailable(name: str):
    def function(*args, **kwargs):
        raise RuntimeError(_WHY.format(name=f"torchvision.utils.{name}"))

    function.__name__ = name
    return function


def _missing(module: str):
    def __getattr__(attribute: str):
        raise AttributeError(f"{module}.{attribute}: " + _WHY.format(name=f"{module}.{attribute}"))

    return __getattr__


class _Loader(importlib.abc.Loader):
    def create_module(self, spec):
        return None  # a plain module object

    def exec_module(self, module: types.ModuleType) -> None:
        name = module.__name__
        if name == _SOP_UIDS:
            uid = importlib.import_module("pydicom.uid")
            module.__dict__.update({k: v for k, v in vars(uid).items() if not k.startswith("_")})
            return
        module.__getattr__ = _missing(name)
        module.__monailabel_shim__ = True
        if name == "torchvision":
            module.__version__ = "0.0.0+shim"
        else:
            module.make_grid = _unavailable("make_grid")
            module.save_image = _unavailable("save_image")


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _TORCHVISION and fullname != _SOP_UIDS:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Loader(), is_package=fullname == "torchvision")


def install() -> None:
    """Append the shims' finder to ``sys.meta_path`` once: after the path finder, so real modules win."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())
