"""``python -m smart_nets.zoo``: package, check, download and verify bundles.

    python -m smart_nets.zoo package bundles/smart_seg --out dist --base_url https://example.org/zoo \
        --models_dir outputs/seg/models --schema tests/fixtures/meta_schema_20240725.json
    python -m smart_nets.zoo check dist/smart_seg_v0.2.0.zip --schema tests/fixtures/meta_schema_20240725.json
    python -m smart_nets.zoo download --name smart_seg --index https://example.org/zoo/index.json --bundle_dir b
    python -m smart_nets.zoo verify smart_seg_v0.2.0.zip --index https://example.org/zoo/index.json

Errors print one message naming the file and what is wrong, and exit with status 1.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from smart_nets.zoo.checks import ZooCheckError, check_bundle
from smart_nets.zoo.download import _entry, download_bundle, load_index, verify_zip
from smart_nets.zoo.package import package_bundle


def package(
    bundle_dir: str,
    out: str,
    base_url: str | None = None,
    models_dir: str | None = None,
    schema: str | None = None,
    inference_overrides: list | None = None,
):
    """Write ``<out>/<name>_v<version>.zip``, the weights beside it and ``<out>/index.json``."""
    overrides = [inference_overrides] if isinstance(inference_overrides, str) else inference_overrides
    zip_path = package_bundle(
        bundle_dir, out, base_url=base_url, models_dir=models_dir, schema=schema, inference_overrides=overrides
    )
    print(zip_path)


def check(path: str, schema: str | None = None):
    """Check a bundle folder or zip against the model zoo's CI rules."""
    check_bundle(path, schema=schema)
    print(f"{path}: meets the model zoo's rules")


def download(name: str, index: str, bundle_dir: str, version: str | None = None):
    """Download a bundle listed in ``index`` into ``<bundle_dir>/<name>``, sha256-checked, with its weights."""
    print(download_bundle(name, index, bundle_dir, version=version))


def verify(path: str, sha256: str | None = None, index: str | None = None, version: str | None = None):
    """Check a downloaded zip against a sha256, or against the index entry of its name and version."""
    if sha256 is None:
        if index is None:
            raise ValueError("give --sha256 or --index")
        name, _, file_version = Path(path).name[: -len(".zip")].rpartition("_v")
        _, entry = _entry(load_index(index), index, name, version or file_version)
        sha256 = entry["sha256"]
    verify_zip(path, sha256)
    print(f"{path}: sha256 {sha256} verified")


def main() -> None:
    import fire

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        fire.Fire({"package": package, "check": check, "download": download, "verify": verify})
    except (ZooCheckError, ValueError, KeyError, FileNotFoundError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
