"""Process settings that make CPU inference and training faster."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

logger = logging.getLogger(__name__)

__all__ = ["keep_freed_memory"]

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Ask glibc's allocator to keep freed memory in the heap (no ``mmap`` for large blocks, no trimming back to the
    kernel), the runtime form of ``GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=...``.

    A 3D network on a CPU allocates and frees activations of hundreds of megabytes per layer; glibc serves each from
    a fresh ``mmap`` and returns it on free, so the kernel zeroes new pages all the time. Kept in the heap, they are
    reused: a SMARTUNETR (C 48) forward over four 96^3 windows on 2 cores took 12.5 s instead of 16.0 s in float32
    and 4.5 s instead of 7.9 s in bf16. The process's memory then stays at its peak instead of shrinking between
    volumes. Call it once, early; it changes nothing where the C library is not glibc.

    Returns:
        whether both settings took (False on macOS, Windows, musl).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    if ok:
        logger.info("glibc malloc keeps freed memory (mmap_max 0, trim_threshold 2 GiB) for faster CPU tensors")
    return ok
