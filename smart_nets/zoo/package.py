"""Package a bundle the model zoo's way: ``<name>_v<version>.zip`` carrying the ``smart_nets`` code it runs on,
weights beside it listed in ``large_files.yml``, and an index a zoo can serve."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from smart_nets import provenance
from smart_nets.io import atomic_path, sha256_file
from smart_nets.zoo.checks import MAX_FILE_BYTES, check_bundle

__all__ = ["WEIGHT_SUFFIXES", "package_bundle"]

logger = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".pt", ".pth", ".ts", ".onnx")
_SKIP_DIRS = {"__pycache__", "eval", ".ipynb_checkpoints"}
_PACKAGE = Path(__file__).resolve().parents[1]  # the smart_nets source the zip carries

SCRIPTS_INIT = '''"""Code carried by this bundle (written by `python -m smart_nets.zoo package`).

The configs import this module first (`$import scripts`, added when packaging: the source tree has no `scripts/`,
and its configs use the installed `smart_nets`); it puts this folder first on `sys.path`, so that
`smart_nets` (version {version}, beside this file) is the copy the bundle was packaged and tested with, even where
another version is installed. Run the bundle from its folder (or with it on PYTHONPATH) so that `scripts` is found.
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
'''


def _copy_bundle(src: Path, dst: Path) -> None:
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if any(part in _SKIP_DIRS or part.startswith(".tmp-") for part in rel.parts):
            continue
        if rel.parts[0] == "models" and path.suffix in WEIGHT_SUFFIXES:
            continue  # weights travel beside the zip (large_files.yml)
        if rel.parts[0] == "scripts" and len(rel.parts) > 1 and rel.parts[1] == "smart_nets":
            continue  # a stale carried copy: replaced below
        if path.is_dir():
            (dst / rel).mkdir(parents=True, exist_ok=True)
        elif path.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dst / rel)


def _carry_code(dst: Path, version: str) -> None:
    """Copy this package into ``dst/scripts/smart_nets`` and make every config that imports modules import
    ``scripts`` first, so that the carried copy is the one the bundle runs on."""
    for config in sorted((dst / "configs").glob("*.json")):
        content = json.loads(config.read_text())
        imports = content.get("imports") if isinstance(content, dict) else None
        if isinstance(imports, list) and "$import scripts" not in imports:
            content["imports"] = ["$import scripts"] + imports
            config.write_text(json.dumps(content, indent=4) + "\n")
    scripts = dst / "scripts"
    scripts.mkdir(exist_ok=True)
    (scripts / "__init__.py").write_text(SCRIPTS_INIT.format(version=version))
    for path in sorted(p for p in _PACKAGE.rglob("*") if p.suffix in (".py", ".json")):  # code and package data
        rel = path.relative_to(_PACKAGE)
        if "__pycache__" in rel.parts:
            continue
        (scripts / "smart_nets" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, scripts / "smart_nets" / rel)


def _update_index(out: Path, name: str, version: str, entry: dict) -> None:
    index_path = out / "index.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    bundle = index.setdefault("bundles", {}).setdefault(name, {"versions": {}})
    bundle["versions"][version] = entry
    bundle["latest"] = max(bundle["versions"], key=lambda v: tuple(int(p) for p in v.split(".") if p.isdigit()))
    with atomic_path(index_path) as tmp:
        tmp.write_text(json.dumps(index, indent=2, sort_keys=True))


def package_bundle(
    bundle_dir: str | os.PathLike,
    out: str | os.PathLike,
    base_url: str | None = None,
    models_dir: str | os.PathLike | None = None,
    schema: str | None = None,
    max_file_bytes: int = MAX_FILE_BYTES,
    inference_overrides: list[str] | None = None,
) -> Path:
    """Write ``<out>/<name>_v<version>.zip`` and the weights beside it, and add the bundle to ``<out>/index.json``.

    The zip unpacks to ``<name>/`` with the bundle's files, ``scripts/smart_nets`` (this package's source) and
    ``scripts/__init__.py`` that puts it on ``sys.path``, so the downloaded bundle runs where only MONAI and the
    metadata's packages are installed (``smart-nets`` leaves its ``required_packages_version``: it is carried).
    Weights (``*.pt``, ``*.ts``, ``*.onnx`` in ``models_dir``, default ``<bundle>/models``) are copied to
    ``<out>/<name>_v<version>_<file>`` and listed in the zip's ``large_files.yml`` with ``<base_url>/<file>`` and
    their sha256, as the model zoo keeps weights out of bundles; ``python -m monai.bundle download_large_files``
    fetches and hash-checks them. The packaged ``metadata.json`` says what ``model.pt`` was trained on (``trained_on``
    and ``weights_provenance``, from the record inside the file, :mod:`smart_nets.provenance`), as a model card does.
    The zip is checked with :func:`check_bundle` before it is written.

    Args:
        bundle_dir: the bundle folder; its name is the bundle's name.
        out: output folder (created).
        base_url: where ``out`` will be served (``http://host/path``); default ``file://`` + ``out``, for local use.
        models_dir: where the weights are.
        schema: the model zoo's metadata schema JSON, to validate against (skipped when None).
        inference_overrides: config files (relative to the bundle, e.g. ``["configs/demo.json"]``) merged into
            the packaged ``configs/inference.json``, for weights trained with them: MONAI Label reads
            ``inference.json`` alone.

    Returns:
        the zip's path. The index entry holds its ``url``, ``sha256`` and ``size``.

    Raises:
        ZooCheckError: the packaged bundle breaks a model-zoo rule (nothing is written).
    """
    bundle_dir, out = Path(bundle_dir).resolve(), Path(out).resolve()
    meta_path = bundle_dir / "configs" / "metadata.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{bundle_dir} is not a bundle: configs/metadata.json is missing")
    meta = json.loads(meta_path.read_text())
    name, version = bundle_dir.name, str(meta.get("version", ""))
    base_url = (base_url or out.as_uri()).rstrip("/")
    out.mkdir(parents=True, exist_ok=True)
    models = Path(models_dir) if models_dir else bundle_dir / "models"
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp) / name
        _copy_bundle(bundle_dir, stage)
        _carry_code(stage, version)
        if inference_overrides:
            from monai.bundle import ConfigParser

            files = [stage / "configs" / "inference.json"] + [bundle_dir / f for f in inference_overrides]
            merged = ConfigParser.load_config_files([str(f) for f in files])
            (stage / "configs" / "inference.json").write_text(json.dumps(merged, indent=4) + "\n")
        meta.get("required_packages_version", {}).pop("smart-nets", None)
        weights = sorted(p for p in models.glob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
        if (models / "model.pt").is_file():  # the model card: what the released weights were trained on
            record = provenance.from_file(models / "model.pt")
            meta["trained_on"] = provenance.describe(record)
            meta["weights_provenance"] = record or {}
            if provenance.is_synthetic(record):
                logger.warning(f"{name}: {meta['trained_on']}")
        (stage / "configs" / "metadata.json").write_text(json.dumps(meta, indent=4) + "\n")
        entries = []
        for weight in weights:
            served = f"{name}_v{version}_{weight.name}"
            entries.append(
                {
                    "path": f"models/{weight.name}",
                    "url": f"{base_url}/{served}",
                    "hash_val": sha256_file(weight),
                    "hash_type": "sha256",
                }
            )
        if not weights:
            logger.warning(f"no weights in {models}: {name}'s large_files.yml lists none (train before packaging)")
        header = "# Weights of this release: `python -m monai.bundle download_large_files --bundle_path .`\n"
        (stage / "large_files.yml").write_text(header + _yaml(entries))
        check_bundle(stage, schema=schema, max_file_bytes=max_file_bytes)
        zip_path = out / f"{name}_v{version}.zip"
        with atomic_path(zip_path) as tmp_zip:
            with zipfile.ZipFile(tmp_zip, "w", zipfile.ZIP_DEFLATED) as archive:
                for path in sorted(stage.rglob("*")):
                    if path.is_file():
                        archive.write(path, path.relative_to(stage.parent).as_posix())
    for weight, entry in zip(weights, entries):
        with atomic_path(out / entry["url"].rsplit("/", 1)[1]) as tmp_weight:
            shutil.copy2(weight, tmp_weight)
    digest = sha256_file(zip_path)
    _update_index(
        out, name, version, {"url": f"{base_url}/{zip_path.name}", "sha256": digest, "size": zip_path.stat().st_size}
    )
    logger.info(f"packaged {name} {version}: {zip_path} (sha256 {digest}), {len(weights)} weight file(s) beside it")
    return zip_path


def _yaml(entries: list[dict]) -> str:
    import yaml

    return yaml.safe_dump({"large_files": entries}, sort_keys=False)
