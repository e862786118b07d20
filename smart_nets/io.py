"""Low-level file I/O: atomic writes, checkpoint reading that names the file, and file hashes.

This is the bottom layer of ``smart_nets``: it imports nothing from the package, so any module may import it
without a cycle. The package writes its checkpoints, results, images and indexes through :func:`atomic_path`, reads
checkpoints through :func:`read_checkpoint` (or :func:`check_checkpoint_file` and :func:`refused` where MONAI does the
reading), and computes every sha256 with :func:`sha256_file`.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import os
import pickle
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import torch

__all__ = ["atomic_path", "check_checkpoint_file", "read_checkpoint", "refused", "sha256_file", "write_csv"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; fsync it and rename it over ``path`` when the block
    succeeds.

    The temporary name keeps the final name as its suffix (``.tmp-<pid>-<name>``), so writers that infer the format
    from the extension (``.nii.gz``) still compress. On an error the temporary file is removed and ``path`` is left
    as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        yield tmp
        _fsync(tmp)  # the data is on disk before the name points at it: a crash never leaves a named, empty file
        os.replace(tmp, path)
        _fsync(path.parent)  # and the rename itself survives a power cut
    finally:
        tmp.unlink(missing_ok=True)


def write_csv(path: str | os.PathLike, rows: Sequence[Mapping], fieldnames: Sequence[str]) -> None:
    """Write ``rows`` under a ``fieldnames`` header to ``path`` atomically (see :func:`atomic_path`)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fieldnames))
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue().encode())


def _fsync(path: Path) -> None:
    """``fsync`` a file or a folder; a file system that cannot (some network mounts) is left to its own devices."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (the number ``sha256sum`` prints)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_checkpoint_file(path: str | os.PathLike) -> None:
    """Raise, naming ``path``, when it is missing or not a ``torch.save`` archive (truncated, or another format).

    ``torch.load`` reports these as ``PytorchStreamReader failed reading zip archive`` or a bare ``KeyError: 101``
    (a text file) without the file's name; the archive's central directory, at its end, is cheap to look for.

    Raises:
        FileNotFoundError: for a missing file.
        ValueError: for a file that is not a complete zip archive.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path} is not a readable PyTorch checkpoint: truncated (an interrupted copy or download?) or not "
            "written by torch.save"
        )


def refused(path: str | os.PathLike, error: pickle.UnpicklingError) -> ValueError:
    """The message for a checkpoint that ``weights_only`` loading refused: it pickles objects besides tensors."""
    return ValueError(
        f"{path} was refused: it holds Python objects besides tensors, which weights_only loading does not run "
        f"(only load checkpoints you trust): {str(error).splitlines()[0]}"
    )


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu", mmap: bool = False) -> dict:
    """``torch.load(path, weights_only=True)`` with errors that name the file and say what is wrong.

    ``mmap``: memory-map the file, so that reading its metadata (a training record, a score) does not read its
    tensors.

    Raises:
        FileNotFoundError, ValueError: see :func:`check_checkpoint_file` and :func:`refused`.
    """
    check_checkpoint_file(path)
    try:
        if mmap:
            try:
                return torch.load(path, map_location=map_location, weights_only=True, mmap=True)
            except RuntimeError:  # a file that cannot be memory-mapped is read whole
                pass
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:  # weights_only refused an object that is not a tensor: possibly code
        raise refused(path, e) from e
    except (RuntimeError, EOFError, OSError) as e:  # a damaged archive whose end is intact
        raise ValueError(f"{path} is not a readable PyTorch checkpoint: {e}") from e
