"""What more than one study needs: the repository's root, comma-separated numbers on the command line, the command
that reran a study, results written atomically, a study run again in a fresh process, the process's resident
memory, and MONAI's Swin trunk holding a SMARTSwin's weights (also for the tests)."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def numbers(text: str, kind: type = int) -> tuple:
    """``"2,2,8,2"`` as ``(2, 2, 8, 2)``: a comma-separated list of ``kind`` (an argparse ``type``)."""
    return tuple(kind(t) for t in text.split(","))


def ints(text: str) -> tuple[int, ...]:
    """:func:`numbers` of ``int``: ``--depths 2,2,8,2``."""
    return numbers(text, int)


def floats(text: str) -> tuple[float, ...]:
    """:func:`numbers` of ``float``: ``--spacing 0.625,0.625,1.07``."""
    return numbers(text, float)


def command_line(name: str, argv: list[str] | None = None) -> str:
    """How to rerun the study ``benchmarks/<name>.py`` with ``argv`` (default: this process's arguments), as its
    results record it."""
    args = sys.argv[1:] if argv is None else argv
    return f"python -m benchmarks.{name}" + "".join(f" {shlex.quote(str(a))}" for a in args)


def write_text(path: Path, text: str) -> None:
    """Write through a temporary file and a rename (its folder made if missing): an interrupted study never leaves a
    half-written result."""
    from smart_nets.io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path, data: dict, indent: int = 1, default=None) -> None:
    """``data`` as JSON through :func:`write_text` (``default``: as :func:`json.dumps`, for values JSON lacks)."""
    write_text(path, json.dumps(data, indent=indent, default=default) + "\n")


def module_command(name: str, *args: str) -> list[str]:
    """``python -m benchmarks.<name> args``: a study (or one of its parts) run in a fresh process, with
    :func:`child_env` so that it finds this package wherever it starts."""
    return [sys.executable, "-m", f"benchmarks.{name}", *map(str, args)]


def child_env() -> dict[str, str]:
    """This process's environment with the repository root first on ``PYTHONPATH``, for :func:`module_command`."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def rss_mib(field: str) -> float:
    """A memory field of ``/proc/self/status`` (``"VmHWM"``: the peak resident set) in MiB; NaN where there is none."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return float("nan")


def monai_twin(net):
    """MONAI's ``SwinTransformer`` holding the SMARTSwin ``net``'s trunk weights (its PatchMergingV2 and a
    patch-embedding LayerNorm), built from ``net.arch``: the reference the attention-path parity checks compare
    against (``gpu_check.py`` on a GPU, ``tests/test_smart_swin.py`` on the CPU).

    Raises:
        ValueError: the trunk's weights do not map one to one onto MONAI's.
    """
    from monai.networks.nets.swin_unetr import SwinTransformer

    arch = net.arch
    ref = SwinTransformer(
        in_chans=arch["in_channels"],
        embed_dim=arch["feature_size"],
        window_size=tuple(arch["window_size"]),
        patch_size=(arch["patch_size"],) * 3,
        depths=tuple(arch["depths"]),
        num_heads=tuple(arch["num_heads"]),
        mlp_ratio=arch["mlp_ratio"],
        qkv_bias=arch["qkv_bias"],
        patch_norm=True,
        downsample="mergingv2",
    )
    renames = {"patch_embed.": "patch_embed.proj.", "patch_norm.": "patch_embed.norm."}
    renames |= {f"stages.{i}.": f"layers{i + 1}.0." for i in range(4)}
    state = {}
    for key, value in net.state_dict().items():
        for old, new in renames.items():
            if key.startswith(old):
                state[new + key[len(old) :]] = value
    missing, unexpected = ref.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("relative_position_index")]
    if missing or unexpected:
        raise ValueError(f"SMARTSwin's trunk does not map onto MONAI's: missing {missing}, unexpected {unexpected}")
    return ref
