"""Process settings that make CPU inference and training faster."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

__all__ = ["PRECISIONS", "autocast_dtype", "keep_freed_memory", "native_bf16_cpu"]

PRECISIONS = ("fp32", "bf16")

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


def native_bf16_cpu(cpuinfo: str | Path = "/proc/cpuinfo") -> bool | None:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX-BF16 in its flags); None where it cannot tell
    (no ``/proc/cpuinfo``: not Linux)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_dtype(precision: str, device: str | torch.device) -> torch.dtype | None:
    """The ``torch.autocast`` dtype that ``precision`` asks for on ``device``, or None for float32.

    ``"bf16"`` is bfloat16 autocast on CPU and GPU alike (parameters, optimizer state, EMA and loss stay float32;
    bfloat16 has float32's range, so no gradient scaler is needed). On a CPU that lacks native bf16 (no AVX512-BF16
    or AMX) it is emulated and slower than float32: this warns and returns None (float32).

    Args:
        precision: ``"fp32"`` or ``"bf16"``.
        device: where the network runs.

    Raises:
        ValueError: on another ``precision``.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {PRECISIONS}")
    if precision == "fp32":
        return None
    if torch.device(device).type == "cpu" and native_bf16_cpu() is False:
        logger.warning(
            "precision bf16 asked for, but this CPU has neither AVX512-BF16 nor AMX (bf16 would be emulated and "
            "slower): running in float32"
        )
        return None
    return torch.bfloat16


def unwrap(network: torch.nn.Module) -> torch.nn.Module:
    """The module inside ``DistributedDataParallel``/``DataParallel``, or ``network`` itself (PyTorch and MONAI have
    no such helper; ignite's ``idist`` wraps but does not unwrap)."""
    wrappers = (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)
    return network.module if isinstance(network, wrappers) else network
