"""The checks the MONAI model zoo's CI applies to a bundle, runnable on a folder or a packaged zip."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

__all__ = ["MAX_FILE_BYTES", "ZooCheckError", "check_bundle", "safe_extract"]

MAX_FILE_BYTES = 25 * 2**20  # the model zoo keeps files over 25 MB out of bundles: large_files.yml points to them
REQUIRED_FILES = ("configs/metadata.json", "LICENSE", "docs/README.md")


class ZooCheckError(ValueError):
    """A bundle breaks model-zoo rules; ``problems`` lists every rule broken."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(f"{source} does not meet the model zoo's rules:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems


def safe_extract(archive: zipfile.ZipFile, dest: str | os.PathLike) -> None:
    """Extract ``archive`` into ``dest``, refusing members that would land outside it (absolute paths, ``..``)."""
    root = Path(dest).resolve()
    for member in archive.infolist():
        target = (root / member.filename).resolve()
        if target != root and root not in target.parents:
            raise ValueError(f"zip member {member.filename!r} would be written outside {dest}: refusing the archive")
    archive.extractall(root)


def _large_files_problems(path: Path) -> list[str]:
    import yaml

    problems = []
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        return [f"{path.name} is not valid YAML: {e}"]
    entries = data.get("large_files", [])
    if not isinstance(entries, list):
        return [f"{path.name}: 'large_files' must be a list"]
    for entry in entries:
        missing = [k for k in ("path", "url", "hash_val", "hash_type") if not entry.get(k)]
        if missing:
            problems.append(f"{path.name}: entry {entry} lacks {missing}")
        elif str(entry["hash_type"]).lower() != "sha256":
            problems.append(f"{path.name}: {entry['path']} has hash_type {entry['hash_type']}, expected sha256")
    return problems


def _check_folder(root: Path, schema: str | None, max_file_bytes: int) -> list[str]:
    problems = [f"required file {f} is missing" for f in REQUIRED_FILES if not (root / f).is_file()]
    if not any((root / "configs" / f"inference.{ext}").is_file() for ext in ("json", "yaml", "yml")):
        problems.append("configs/inference.json (or .yaml) is missing")
    meta_path = root / "configs" / "metadata.json"
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as e:
            meta = {}
            problems.append(f"configs/metadata.json is not valid JSON: {e}")
        version, changelog = meta.get("version"), meta.get("changelog", {})
        if not version:
            problems.append("configs/metadata.json has no 'version'")
        elif version not in changelog:
            problems.append(f"version {version} is not in the changelog of configs/metadata.json")
        if schema and meta:
            problems += _schema_problems(meta, schema)
    large = root / "large_files.yml"
    if large.is_file():
        problems += _large_files_problems(large)
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.stat().st_size > max_file_bytes:
            size, limit = _size(path.stat().st_size), _size(max_file_bytes)
            problems.append(f"{path.relative_to(root)} is {size}, over the {limit} limit (list it in large_files.yml)")
    return problems


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 2**10:.1f} KB"


def _schema_problems(meta: dict, schema: str) -> list[str]:
    import jsonschema

    with open(schema) as f:
        document = json.load(f)
    validator = jsonschema.validators.validator_for(document)(document)  # the draft the schema names
    return [
        f"metadata schema: {'/'.join(map(str, e.path)) or '(top)'}: {e.message}" for e in validator.iter_errors(meta)
    ]


def check_bundle(path: str | os.PathLike, schema: str | None = None, max_file_bytes: int = MAX_FILE_BYTES) -> None:
    """Check a bundle folder or ``<name>_v<version>.zip`` against the model zoo's CI rules.

    Rules: ``configs/metadata.json``, ``LICENSE``, ``docs/README.md`` and an inference config present; ``version``
    in the ``changelog``; the metadata valid against ``schema`` (the zoo's ``meta_schema_*.json``; skipped when
    None); ``large_files.yml`` entries with ``path``, ``url``, ``hash_val`` and sha256 ``hash_type``; no file over
    ``max_file_bytes``. A zip must also unpack to one folder named as the bundle (``<name>/...``) and pass
    ``zipfile``'s CRC check.

    Raises:
        ZooCheckError: listing every rule broken.
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"bundle {path} does not exist")
    if path.is_dir():
        problems = _check_folder(path, schema, max_file_bytes)
    else:
        problems = []
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
                if bad is not None:
                    raise zipfile.BadZipFile(f"CRC check failed for {bad}")
                tops = {m.split("/", 1)[0] for m in archive.namelist()}
                name = path.name.rsplit("_v", 1)[0]
                if tops != {name}:
                    problems.append(f"the zip should unpack to one folder {name}/, it has {sorted(tops)}")
                with tempfile.TemporaryDirectory() as tmp:
                    safe_extract(archive, tmp)
                    for top in tops:
                        problems += _check_folder(Path(tmp) / top, schema, max_file_bytes)
        except zipfile.BadZipFile as e:
            raise ZooCheckError(str(path), [f"not a readable zip (corrupted or truncated): {e}"]) from e
    if problems:
        raise ZooCheckError(str(path), problems)
