"""Plain helpers the tests share: paths, running bundles through MONAI's command line, the zoo's checks, demo networks,
checkpoints, error chains and the bad-input corpus. Fixtures live in ``conftest.py``; import these as
``from tests.helpers import ...`` (setup.cfg's ``pythonpath = .`` puts the repository root on ``sys.path`` under
``pytest`` as under ``python -m pytest``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from smart_nets.networks.nets import ENCODER_PRESETS

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
SCHEMA = FIXTURES / "meta_schema_20240725.json"
SCHEMA_MD5 = "06954cad2cc5d3784e72077ac76f0fc8"
# tiny SMARTSwin sizes (DEVELOPERS.md: embed 12-24, depths 1-2 per stage)
TINY = dict(ENCODER_PRESETS["demo"], drop_path_rate=0.0)  # the bundles' demo.json encoder (preset "demo")
# the small phantom grid the bundle tests train on
PHANTOM_GRID = dict(shape=(64, 64, 32), spacing=(5.0, 5.0, 10.0))
DEFAULT_TIMEOUT = 900  # seconds for one command: the longest bundle run of the suite takes ~3 minutes on 2 CPU cores


def _text(output) -> str:
    """A subprocess's captured output as text (a timeout can leave bytes or None)."""
    if output is None:
        return ""
    return output.decode(errors="replace") if isinstance(output, bytes) else output


def _finished(args: Sequence, cwd, timeout: float, env: dict | None) -> subprocess.CompletedProcess:
    """``args`` run to its end with its output captured; fails the test, showing the output so far, past
    ``timeout`` seconds."""
    args = [str(a) for a in args]
    try:
        return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as timeout_error:
        raise AssertionError(
            f"{' '.join(args)} did not finish within {timeout} s:\n"
            f"{_text(timeout_error.stdout)[-3000:]}\n{_text(timeout_error.stderr)[-3000:]}"
        ) from None


def run_command(
    args: Sequence, cwd: str | Path | None = None, timeout: float = DEFAULT_TIMEOUT, env: dict | None = None
) -> str:
    """Run ``args``; returns stdout + stderr, or fails the test (also past ``timeout`` seconds) showing the last
    3000 characters of each."""
    proc = _finished(args, cwd, timeout, env)
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(proc.args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc.stdout + proc.stderr


def run_together(
    commands: Sequence[Sequence],
    cwd: str | Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    env: dict | None = None,
) -> str:
    """Run ``commands`` at the same time (e.g. one ``torchrun`` per node); returns their outputs joined, or fails the
    test if any fails or all have not finished within ``timeout`` seconds (the rest are then killed)."""
    procs = [
        subprocess.Popen(
            [str(a) for a in c], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        for c in commands
    ]
    outputs, deadline = [], time.monotonic() + timeout
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=max(deadline - time.monotonic(), 1))[0])
    except subprocess.TimeoutExpired:
        for proc in procs:
            proc.kill()
        raise AssertionError(f"{len(procs)} commands did not finish within {timeout} s: {commands}") from None
    for proc, out in zip(procs, outputs):
        if proc.returncode != 0:
            raise AssertionError(f"{' '.join(proc.args)} failed ({proc.returncode}):\n{out[-3000:]}")
    return "\n".join(outputs)


def monai_bundle(
    args: Sequence, cwd: str | Path | None = None, timeout: float = DEFAULT_TIMEOUT, env: dict | None = None
) -> str:
    """``python -m monai.bundle <args>`` (any subcommand, arguments as given) in ``cwd``; see ``run_command``."""
    return run_command([sys.executable, "-m", "monai.bundle", *args], cwd=cwd, timeout=timeout, env=env)


def configs(bundle_dir: str | Path, *names: str | Path) -> str:
    """The ``--config_file`` list the command line wants, ``"['<bundle_dir>/configs/a.json',...]"``; a name that
    is an absolute path (a test's own override file) is taken as it is."""
    return "[" + ",".join(f"'{Path(bundle_dir) / 'configs' / name}'" for name in names) + "]"


_configs = configs  # run_bundle's argument of the same name hides the function


def _cli_value(value) -> str:
    """An override as the command line spells it: strings and paths as they are, anything else as a Python literal
    (``2``, ``True``, ``['a.nii.gz']``)."""
    if isinstance(value, (str, Path)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return repr([str(v) if isinstance(v, Path) else v for v in value])
    return repr(value)


def _run_args(bundle: str | Path, configs: str | Sequence[str | Path], **overrides) -> list[str]:
    """The arguments of ``python -m monai.bundle run``: ``--config_file`` (``configs``: names or paths resolved as
    ``configs(bundle, ...)`` does, or a string passed as it is), ``--bundle_root bundle`` and ``--key value`` for each
    override (``**{"train#progress_bar#disable": True}`` for keys Python cannot spell)."""
    config_file = configs if isinstance(configs, str) else _configs(bundle, *configs)
    args = ["run", "--config_file", config_file, "--bundle_root", str(bundle)]
    for key, value in overrides.items():
        args += [f"--{key}", _cli_value(value)]
    return args


def run_bundle(
    bundle: str | Path,
    configs: str | Sequence[str | Path],
    cwd: str | Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    env: dict | None = None,
    **overrides,
) -> str:
    """``python -m monai.bundle run`` of the bundle in folder ``bundle`` (``--bundle_root``) with ``configs`` and
    ``overrides`` (see ``_run_args``), in ``cwd`` (default: the folder holding ``bundle``); returns the run's
    stdout + stderr, or fails the test showing the end of both (also when it runs past ``timeout`` seconds)."""
    cwd = Path(bundle).parent if cwd is None else cwd
    return monai_bundle(_run_args(bundle, configs, **overrides), cwd=cwd, timeout=timeout, env=env)


def run_bundle_failure(
    bundle: str | Path,
    configs: str | Sequence[str | Path],
    cwd: str | Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    env: dict | None = None,
    **overrides,
) -> subprocess.CompletedProcess:
    """The same run as ``run_bundle`` when it must fail: fails the test when the run succeeds (or runs past
    ``timeout`` seconds), else returns the finished process, whose ``stdout`` and ``stderr`` the test checks."""
    cwd = Path(bundle).parent if cwd is None else cwd
    args = [sys.executable, "-m", "monai.bundle", *_run_args(bundle, configs, **overrides)]
    proc = _finished(args, cwd, timeout, env)
    if proc.returncode == 0:
        raise AssertionError(
            f"{' '.join(proc.args)} succeeded; it should fail:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def copy_bundle(bundle: str, dest: str | Path) -> Path:
    """A copy of ``bundles/<bundle>`` at ``dest`` (outputs written under its bundle root land there, not in the
    repository)."""
    return Path(shutil.copytree(REPO / "bundles" / bundle, dest))


def make_phantoms(folder: str | Path, num: int, **kwargs) -> str:
    """``generate_phantoms`` on the tests' small grid (``PHANTOM_GRID``, unless ``shape``/``spacing`` are given);
    the other keywords (``seed``, ``val_fraction``, ``tumour_types`` ...) go through. Returns the datalist path."""
    from smart_nets.data import generate_phantoms

    return generate_phantoms(str(folder), num=num, **{**PHANTOM_GRID, **kwargs})


def verify_bundle(bundle: Path, tmp_path: Path) -> None:
    """The model zoo's checks: ``verify_metadata`` against the schema fixture, ``verify_net_in_out`` on
    ``configs/inference.json``; the functions ``python -m monai.bundle verify_metadata``/``verify_net_in_out`` call,
    in one fresh process in the bundle's folder (two would pay MONAI's imports twice)."""
    schema = tmp_path / SCHEMA.name
    shutil.copy(SCHEMA, schema)
    script = (
        "from monai.bundle import verify_metadata, verify_net_in_out\n"
        f"verify_metadata(meta_file='configs/metadata.json', filepath={str(schema)!r}, hash_val={SCHEMA_MD5!r})\n"
        "verify_net_in_out('network_def', meta_file='configs/metadata.json', config_file='configs/inference.json',"
        " device='cpu')\n"
    )
    run_command([sys.executable, "-c", script], cwd=bundle)


def demo_network(bundle: str) -> torch.nn.Module:
    """The ``network_def`` of a bundle's ``configs/inference.json`` with its ``configs/demo.json`` sizes, freshly
    initialised, in eval mode."""
    from monai.bundle import ConfigParser

    configs = REPO / "bundles" / bundle / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / "inference.json"), str(configs / "demo.json")])
    return parser.get_parsed_content("network_def").eval()


def export_demo_onnx(
    bundle_dir: Path,
    filepath: str = "models/model.onnx",
    ckpt_file: str = "models/model.pt",
    roi_size: Sequence[int] = (64, 64, 64),
) -> str:
    """``python -m monai.bundle onnx_export`` in ``bundle_dir`` with its ``configs/onnx_export.json`` and the demo's
    network at ``roi_size`` (the demo's 64^3 unless a test's configs use another), as the bundle READMEs spell it."""
    return monai_bundle(
        ["onnx_export", "--args_file", "configs/onnx_export.json", "--filepath", filepath]
        + ["--ckpt_file", ckpt_file, "--meta_file", "configs/metadata.json"]
        + ["--config_file", "['configs/inference.json','configs/demo.json']", "--input_shape", str([1, 1, *roi_size])],
        cwd=bundle_dir,
    )


def completed_epochs(checkpoint: Path) -> int:
    """Epochs a training checkpoint has completed (ignite keeps the iteration and the epoch length); 0 before the
    first one is written."""
    try:
        trainer = torch.load(checkpoint, weights_only=True)["trainer"]
    except (FileNotFoundError, RuntimeError, EOFError):
        return 0
    return int(trainer["iteration"]) // int(trainer["epoch_length"])


def error_chain(error: BaseException | None) -> list[str]:
    """The messages of ``error`` and its causes: MONAI's ``Compose`` wraps a transform's error in its own."""
    messages = []
    while error is not None:
        messages.append(str(error))
        error = error.__cause__
    return messages


def bundle_failure(bundle_root: Path, configs: list[str], **overrides) -> str:
    """``monai.bundle run`` in-process (the function the command line calls) with ``configs`` from
    ``bundle_root/configs``; fails the test when the run succeeds, else returns the messages of the whole error
    chain, one per line."""
    from monai.bundle import run as bundle_run

    with pytest.raises(Exception) as info:
        bundle_run(
            config_file=[str(bundle_root / "configs" / c) for c in configs],
            bundle_root=str(bundle_root),
            logging_file=False,
            **overrides,
        )
    return "\n".join(error_chain(info.value))


def _patched_nifti(path: Path, array, affine, patches: dict[int, bytes]) -> Path:
    """A NIfTI-1 file whose header bytes are patched after nibabel wrote it (nibabel repairs zero or negative
    pixdims and refuses singular affines when it writes, so broken headers must be made by hand)."""
    import gzip

    import nibabel as nib

    block = bytearray(nib.Nifti1Image(array, affine).to_bytes())
    for offset, value in patches.items():
        block[offset : offset + len(value)] = value
    path.write_bytes(gzip.compress(bytes(block)))
    return path


BAD_IMAGE_CASES = [
    "text file named .nii.gz",
    "truncated .nii.gz",
    "2D image",
    "5D image",
    "two channels",
    "NaN voxels",
    "zero spacing",
    "negative spacing",
    "DICOM folder with two series",
]


def bad_image_corpus(root: Path, image_file: Path) -> dict[str, tuple[Path, str]]:
    """The bad-input corpus of issue 9, made from a good phantom image: ``{case: (path, what the error must say)}``.

    Every case is generated here (nothing binary is committed): a text file named ``.nii.gz``, a truncated
    ``.nii.gz``, 2D, 5D, two-channel and NaN images, zero and negative header spacing, and a DICOM folder holding
    two series.
    """
    import struct

    import nibabel as nib
    import numpy as np

    from smart_nets.data.dicom import write_dicom_series

    root.mkdir(parents=True, exist_ok=True)
    ref = nib.load(image_file)
    image = np.asanyarray(ref.dataobj)

    def nifti(name: str, array) -> Path:
        path = root / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(array, ref.affine), path)
        return path

    text = root / "text.nii.gz"
    text.write_text("not an image")
    truncated = root / "truncated.nii.gz"
    truncated.write_bytes(Path(image_file).read_bytes()[:3000])
    nan = image.astype(np.float32)
    nan[10, 10, 10] = np.nan
    spacing = {}
    no_sform = {254: struct.pack("<h", 0)}  # sform_code 0: the geometry comes from pixdim
    for name, patches in (
        ("zero_spacing", {80: struct.pack("<f", 0.0), **no_sform}),  # pixdim[1]
        ("negative_spacing", {80: struct.pack("<f", -5.0), **no_sform}),
    ):
        spacing[name] = _patched_nifti(root / f"{name}.nii.gz", image, ref.affine, patches)
    mixed = root / "two_series"
    for series in ("ct", "scout"):
        written = write_dicom_series(image[:, :, : 6 if series == "scout" else None], ref.affine, str(root / series))
        mixed.mkdir(exist_ok=True)
        for path in written:
            shutil.copy(path, mixed / f"{series}_{Path(path).name}")
    corpus = {
        "text file named .nii.gz": (text, "cannot read image"),
        "truncated .nii.gz": (truncated, "cannot read image"),
        "2D image": (nifti("slice", image[:, :, 0]), "a 3D volume is needed, got an image of shape (1,"),
        "5D image": (nifti("series", np.stack([image, image], -1)[..., None, :]), "a time series or a multi"),
        "two channels": (nifti("two_channels", np.stack([image, image], -1)), "2 channels"),
        "NaN voxels": (nifti("nan", nan), "NaN"),
        "zero spacing": (spacing["zero_spacing"], "pixdim (0.0,"),
        "negative spacing": (spacing["negative_spacing"], "pixdim (-5.0,"),
        "DICOM folder with two series": (mixed, "holds 2 series"),
    }
    assert list(corpus) == BAD_IMAGE_CASES, "BAD_IMAGE_CASES names the corpus's cases, in order"
    return corpus


LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS world coordinates


def write_lps_image(volume: np.ndarray, affine: np.ndarray, path: str | Path) -> Path:
    """``volume`` with its voxel-to-RAS ``affine`` (an axis-aligned grid, as ``make_phantom`` gives) written as a
    3D Slicer or ITK user would have it: in LPS space with identity directions (each axis whose LPS direction is
    negative flipped), as ``.nrrd``/``.nhdr`` (pynrrd) or ``.mha``/``.mhd`` (ITK). The file describes the same world
    volume."""
    path = Path(path)
    lps = np.diag(LPS @ affine)[:3]
    if not np.allclose(affine[:3, :3], np.diag(np.diag(affine)[:3])):
        raise ValueError(f"write_lps_image takes an axis-aligned affine, got {affine.tolist()}")
    flips = [a for a in range(3) if lps[a] < 0]
    flipped = np.flip(volume, flips) if flips else volume
    # the LPS coordinate of the stored array's first voxel: the original's last voxel along each flipped axis
    corner = np.array([volume.shape[a] - 1 if a in flips else 0 for a in range(3)] + [1.0])
    origin = (LPS @ affine @ corner)[:3]
    spacing = np.abs(lps)
    if path.name.endswith((".nrrd", ".nhdr")):
        import nrrd

        header = {
            "space": "left-posterior-superior",
            "space directions": np.diag(spacing),
            "space origin": origin,
        }
        nrrd.write(str(path), np.ascontiguousarray(flipped), header, detached_header=path.name.endswith(".nhdr"))
    else:
        import itk

        image = itk.image_from_array(np.ascontiguousarray(flipped.transpose(2, 1, 0)))  # ITK arrays are (z, y, x)
        image.SetSpacing([float(s) for s in spacing])
        image.SetOrigin([float(o) for o in origin])
        itk.imwrite(image, str(path))
    return path
