"""Download a packaged bundle from an index, refusing anything whose sha256 the index does not vouch for."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

from smart_nets.io import sha256_file
from smart_nets.zoo.checks import safe_extract

__all__ = ["download_bundle", "load_index", "verify_zip"]

logger = logging.getLogger(__name__)


def _open(url: str):
    if "://" not in url:  # a local path
        url = Path(url).resolve().as_uri()
    return urllib.request.urlopen(url, timeout=60)


def load_index(index: str) -> dict:
    """The index JSON written by ``python -m smart_nets.zoo package`` (a URL or a path)."""
    try:
        with _open(index) as response:
            return json.loads(response.read())
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read the bundle index {index}: {e}") from e


def _entry(index: dict, source: str, name: str, version: str | None) -> tuple[str, dict]:
    bundles = index.get("bundles", {})
    if name not in bundles:
        raise KeyError(f"bundle {name!r} is not in the index {source} (it lists {sorted(bundles)})")
    versions = bundles[name]["versions"]
    version = version or bundles[name]["latest"]
    if version not in versions:
        raise KeyError(f"{name} has no version {version} in {source} (it lists {sorted(versions)})")
    return version, versions[version]


def verify_zip(path: str | os.PathLike, sha256: str) -> None:
    """Refuse ``path`` unless its sha256 is ``sha256`` and it is a readable zip (CRC-checked).

    Raises:
        ValueError: naming the file and what is wrong.
    """
    digest = sha256_file(path)
    if digest != sha256.lower():
        raise ValueError(
            f"{path}: sha256 {digest} does not match the index's {sha256}: refusing it "
            "(a corrupted, truncated or tampered download; fetch it again or ask who published the index)"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except zipfile.BadZipFile as e:
        raise ValueError(f"{path} is not a readable zip: {e}") from e
    if bad is not None:
        raise ValueError(f"{path} is corrupted: the CRC of {bad} does not match")


def download_bundle(
    name: str, index: str, bundle_dir: str | os.PathLike, version: str | None = None, progress: bool = True
) -> Path:
    """Download ``name`` (``version``, default the latest) listed in ``index`` into ``<bundle_dir>/<name>``.

    The zip is written to a temporary file, its sha256 compared with the index's, its CRCs checked, its members
    checked to stay inside ``bundle_dir``, and only then unpacked; its weights follow with MONAI's
    ``download_large_files``, which checks each against ``large_files.yml``'s sha256. An existing
    ``<bundle_dir>/<name>`` is replaced only once the new copy is complete.

    Raises:
        KeyError: the index has no such bundle or version.
        ValueError: the download's sha256 differs from the index's, or the zip is corrupted or unsafe.
    """
    from monai.bundle import download_large_files

    index_doc = load_index(index)
    version, entry = _entry(index_doc, index, name, version)
    url = entry["url"] if "://" in entry["url"] else urllib.parse.urljoin(index, entry["url"])
    bundle_dir = Path(bundle_dir).resolve()
    bundle_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=bundle_dir, prefix=".tmp-download-") as tmp:
        archive_path = Path(tmp) / f"{name}_v{version}.zip"
        with _open(url) as response, open(archive_path, "wb") as f:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"{name} {version}", disable=not progress) as bar:
                for block in iter(lambda: response.read(2**20), b""):
                    f.write(block)
                    bar.update(len(block))
        verify_zip(archive_path, entry["sha256"])
        with zipfile.ZipFile(archive_path) as archive:
            tops = {m.split("/", 1)[0] for m in archive.namelist()}
            if tops != {name}:
                raise ValueError(f"{url} should unpack to one folder {name}/, it has {sorted(tops)}")
            safe_extract(archive, tmp)
        download_large_files(bundle_path=str(Path(tmp) / name))
        target = bundle_dir / name
        if target.exists():
            old = Path(tmp) / "replaced"
            target.rename(old)
        (Path(tmp) / name).rename(target)
    logger.info(f"{name} {version} is in {target} (sha256 {entry['sha256']} verified)")
    return target
