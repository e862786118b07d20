"""GPU-only checks: CUDA attention path parity with MONAI, SMART and bundle training steps with AMP, ONNX and
TensorRT inference of the segmentation and response bundles, and timings.

On a machine without CUDA it says so and exits 0 (``--allow_cpu`` runs the bundle checks on the CPU with the demo's
tiny networks, to test this script). With CUDA it:

1. checks that SMARTSwin's trunk equals MONAI's SwinTransformer with the same weights on the GPU (fused SDPA with the
   relative-position bias, forward and the bias gradient), in fp32;
2. runs SMART pretraining steps (``SMARTTrainer``) at paper scale in fp32 and with bf16 autocast, checking that the
   loss is finite and the teacher moved, and printing seconds per step and peak memory;
3. for ``smart_seg`` and ``smart_response``, through ``python -m monai.bundle`` on synthetic phantoms: one epoch of
   training with the bundle's AMP at paper scale, ``onnx_export`` with ``configs/onnx_export.json``, then inference
   with ``inference.json`` (PyTorch), ``inference_onnx.json`` (onnxruntime) and, where TensorRT is importable,
   ``inference_trt.json`` in fp16 and fp32 (``trt_required``), printing seconds per run and the agreement of each
   runtime's masks or probabilities with PyTorch's;
4. runs ``benchmarks.encoder_speed``, ``benchmarks.pretrain_step`` (paper scale, every mode of
   ``PRETRAIN_MODES`` with FLOPs, MFU and operator profiles, written beside ``--out`` as
   ``pretrain_step_gpu.{json,md}``) and ``benchmarks.inference_speed`` on the GPU.

    python -m benchmarks.gpu_check [--out results.json] [--quick]
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import REPO, child_env, module_command, monai_twin, write_json

# benchmarks.pretrain_step --modes for item 4: precision, fused AdamW, torch.compile, CUDA graphs
PRETRAIN_MODES = "fp32,fp32+tf32,bf16,bf16+fused,bf16+fused+compile,bf16+fused+cudagraphs"


def parity(device: torch.device) -> dict:
    """Forward and relative-position-bias gradient of SMARTSwin's trunk against MONAI's SwinTransformer, in true
    fp32. With PyTorch's defaults (cuDNN convolutions in TF32 on Ampere and later) the bias gradients differed by
    1.2e-3 (relative) on an H200, above this check's 1e-3; TF32 is the likely cause, not yet confirmed there."""
    cudnn_tf32, matmul_tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        return _parity(device)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = cudnn_tf32, matmul_tf32


def _parity(device: torch.device) -> dict:
    from smart_nets.networks.nets import smart_swin

    torch.manual_seed(0)
    net = smart_swin("demo", depths=(2, 2, 2, 2), drop_path_rate=0.0).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ref = monai_twin(net).eval()
    net, ref = net.to(device), ref.to(device)
    x = torch.randn(2, 1, 96, 96, 96, device=device)
    ours = net.hidden_states(net.forward_features(x))
    theirs = ref(x, normalize=True)
    fwd = max(float((a - b).abs().max()) for a, b in zip(ours, theirs))
    sum(o.float().square().mean() for o in ours).backward()
    sum(o.float().square().mean() for o in theirs).backward()
    g_ours = net.stages[0].blocks[1].attn.relative_position_bias_table.grad
    g_ref = ref.layers1[0].blocks[1].attn.relative_position_bias_table.grad
    grad = float((g_ours - g_ref).abs().max() / g_ref.abs().max())
    return {"max_abs_forward_diff": fwd, "rel_bias_grad_diff": grad, "ok": fwd < 1e-3 and grad < 1e-3}


def smart_steps(device: torch.device, amp: bool, size: int, steps: int = 6) -> dict:
    from ignite.engine import Events

    from benchmarks.trainer_step import build

    trainer, teacher = build(device, size, steps, amp)
    before = teacher.encoder.patch_embed.weight.detach().clone()
    times, losses = [], []

    @trainer.on(Events.ITERATION_STARTED)
    def _start(engine):
        torch.cuda.synchronize()
        engine.state.t0 = time.perf_counter()

    @trainer.on(Events.ITERATION_COMPLETED)
    def _stop(engine):
        torch.cuda.synchronize()
        times.append(time.perf_counter() - engine.state.t0)
        losses.append(float(engine.state.output[0]["loss"]))

    torch.cuda.reset_peak_memory_stats()
    trainer.run()
    moved = float((teacher.encoder.patch_embed.weight - before).abs().max())
    return {
        "amp_bf16": amp,
        "roi": size,
        "batch_per_view": 2,
        "seconds_per_step": sorted(times[1:])[len(times[1:]) // 2],
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
        "losses": losses,
        "finite": all(map(lambda v: v == v and abs(v) != float("inf"), losses)),
        "teacher_moved": moved > 0,
    }


def _bundle(args: list[str], cwd: Path) -> tuple[float, str]:
    """``python -m monai.bundle <args>``: wall seconds (with start-up) and output; raises with its tail on failure."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "monai.bundle", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"monai.bundle {args[0]} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return time.perf_counter() - start, proc.stdout + proc.stderr


def _outputs(bundle: str, out: Path):
    """What an inference run wrote: the masks (segmentation) or the class-1 probabilities (response)."""
    import nibabel as nib
    import numpy as np

    if bundle == "smart_seg":
        return {p.name: np.asanyarray(nib.load(p).dataobj) for p in sorted(out.glob("*_seg.nii.gz"))}
    return {r["case"]: float(r["prob_1"]) for r in csv.DictReader(open(out / "predictions.csv"))}


def _agreement(bundle: str, ours: dict, reference: dict) -> float:
    """Segmentation: the smallest per-case fraction of voxels equal to PyTorch's; response: the largest probability
    difference."""
    if bundle == "smart_seg":
        return min(float((ours[k] == reference[k]).mean()) for k in reference)
    return max(abs(ours[k] - reference[k]) for k in reference)


def bundle_checks(work: Path, tiny: bool) -> dict:
    """Train one epoch, export and infer with every runtime, for the segmentation and the response bundles."""
    from smart_nets.data import generate_phantoms
    from smart_nets.export import tensorrt_status

    data = work / "data"
    shape, spacing = ((64, 64, 32), (5.0, 5.0, 10.0)) if tiny else ((96, 96, 48), (3.4, 3.4, 6.7))
    generate_phantoms(str(data), num=4, shape=shape, spacing=spacing, val_fraction=0.5, tumour_radius=(16, 24))
    datalist = json.loads((data / "dataset.json").read_text())
    for items in (datalist["training"], datalist["validation"]):  # both classes on each side, whatever the seed gave
        for k, item in enumerate(items):
            item["response"] = k % 2
    (data / "dataset.json").write_text(json.dumps(datalist))
    images = [str(data / i["image"]) for i in datalist["validation"]]
    trt_ok, trt_why = tensorrt_status()
    results = {"tensorrt": trt_why}
    for bundle in ("smart_seg", "smart_response"):
        try:
            results[bundle] = _bundle_check(bundle, work, data, images, tiny, trt_ok)
        except RuntimeError as err:  # one bundle's failure leaves the other's checks to run
            results[bundle] = {"error": str(err)[-3000:]}
        print(bundle, results[bundle], flush=True)
    return results


def failed_bundles(rows: dict) -> list[str]:
    """The bundles whose checks in ``bundle_checks``'s result stopped with an error."""
    return [b for b, row in rows.items() if isinstance(row, dict) and "error" in row]


def _bundle_check(bundle: str, work: Path, data: Path, images: list[str], tiny: bool, trt_ok: bool) -> dict:
    """One bundle's epoch, export and inference with every runtime (``bundle_checks``).

    Raises:
        RuntimeError: a ``monai.bundle`` command failed (its output's end in the message).
    """
    root = work / bundle
    shutil.copytree(REPO / "bundles" / bundle, root)
    configs = ["configs/inference.json"] + (["configs/demo.json"] if tiny else [])
    roi = 64 if tiny else 96
    common = ["--bundle_root", str(root), "--pretrained_path", ""]
    train = "['" + "','".join(["configs/train.json", *configs[1:]]) + "']"
    seconds, _ = _bundle(
        ["run", "--config_file", train, *common, "--dataset_dir", str(data), "--max_epochs", "1"]
        + ["--val_interval", "1", "--amp", "True", "--output_dir", str(work / f"{bundle}_train")],
        root,
    )
    row = {"train_one_epoch_amp_seconds": seconds}
    seconds, _ = _bundle(
        ["onnx_export", "--args_file", "configs/onnx_export.json", "--filepath", "models/model.onnx"]
        + ["--ckpt_file", "models/model.pt", "--meta_file", "configs/metadata.json"]
        + ["--config_file", "['" + "','".join(configs) + "']", "--input_shape", f"[1, 1, {roi}, {roi}, {roi}]"],
        root,
    )
    row["onnx_export_seconds"] = seconds
    runtimes = {"torch": [], "onnx": ["configs/inference_onnx.json"]}
    if trt_ok:
        for precision in ("fp16", "fp32"):
            runtimes[f"trt_{precision}"] = ["configs/inference_trt.json", "--trt_precision", precision]
            runtimes[f"trt_{precision}"] += ["--trt_required", "True"]
    reference = None
    for name, extra in runtimes.items():
        files = configs + extra[:1]
        out = work / f"{bundle}_{name}"
        args = ["run", "--config_file", "['" + "','".join(files) + "']", *common, "--output_dir", str(out)]
        args += ["--datalist", json.dumps(images).replace('"', "'"), *extra[1:]]
        seconds, _ = _bundle(args, root)
        outputs = _outputs(bundle, out)
        reference = outputs if reference is None else reference
        row[f"{name}_inference_seconds"] = seconds
        row[f"{name}_agreement"] = _agreement(bundle, outputs, reference)
        if name.startswith("trt"):  # a second run reuses the cached plan: the engine's own speed
            row[f"{name}_cached_plan_seconds"] = _bundle(args, root)[0]
    return row


def _study(name: str, *args: str) -> str:
    """The last 3000 characters of ``python -m benchmarks.<name> args``'s output."""
    proc = subprocess.run(module_command(name, *args), capture_output=True, text=True, cwd=REPO, env=child_env())
    return (proc.stdout + proc.stderr)[-3000:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    parser.add_argument("--quick", action="store_true", help="skip the speed benchmarks (3.)")
    parser.add_argument("--allow_cpu", action="store_true", help="without CUDA, run the bundle checks with tiny nets")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        if args.allow_cpu:
            with tempfile.TemporaryDirectory() as work:
                failed = failed_bundles(bundle_checks(Path(work), tiny=True))
            if failed:
                raise SystemExit(f"bundle checks failed: {', '.join(failed)}")
            return
        print("no CUDA device: GPU checks skipped (nothing to do on a CPU-only machine)")
        return
    device = torch.device("cuda:0")
    results = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    results["parity"] = parity(device)
    print("parity", results["parity"], flush=True)
    for amp in (False, True):
        key = f"smart_step_{'bf16' if amp else 'fp32'}"
        results[key] = smart_steps(device, amp, 96)
        print(key, results[key], flush=True)
    if args.out:  # what has run so far survives a later failure or a time limit
        write_json(Path(args.out), results, indent=2)
    with tempfile.TemporaryDirectory() as work:
        results["bundles"] = bundle_checks(Path(work), tiny=False)
    if args.out:
        write_json(Path(args.out), results, indent=2)
    if not args.quick:
        paper = ["--feature_size", "48", "--depths", "2,2,8,2", "--heads", "4,4,8,16"]
        results["encoder_speed_bf16"] = _study(
            "encoder_speed", "--device", "cuda", "--amp", *paper, "--batch", "4", "--repeats", "10"
        )
        results["encoder_speed_fp32"] = _study(
            "encoder_speed", "--device", "cuda", *paper, "--batch", "4", "--repeats", "10"
        )
        # issue 19: the paper-scale step in every mode against Tang's, with FLOPs, MFU and where each loses time
        step_out = Path(args.out).with_name("pretrain_step_gpu") if args.out else Path(tempfile.mkdtemp()) / "step"
        step = ["--device", "cuda", "--sizes", "96", *paper, "--modes", PRETRAIN_MODES, "--flops", "--profile", "25"]
        step += ["--warmup", "3", "--steps", "10", "--rounds", "1", "--out", str(step_out)]
        results["pretrain_step_modes"] = _study("pretrain_step", *step)
        results["inference_speed"] = _study("inference_speed", "--device", "cuda")
        for key in ("encoder_speed_bf16", "encoder_speed_fp32", "pretrain_step_modes", "inference_speed"):
            print(key, results[key], flush=True)
    if args.out:
        write_json(Path(args.out), results, indent=2)
    failed = failed_bundles(results["bundles"])
    if failed or not results["parity"]["ok"]:
        raise SystemExit(f"GPU checks failed: {', '.join(failed + ([] if results['parity']['ok'] else ['parity']))}")


if __name__ == "__main__":
    main()
