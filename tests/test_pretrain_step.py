"""benchmarks/pretrain_step.py's modes, FLOP count and MFU arithmetic, in process at a tiny size (the GPU figures
are the benchmark's business, not a test's)."""

from __future__ import annotations

import argparse
import math

import pytest
import torch

from benchmarks import pretrain_step


@pytest.fixture(scope="module")
def bench():
    return pretrain_step


def test_modes_parse_and_misspelt_modes_are_refused(bench):
    mode = bench.parse_mode("bf16+fused+cudagraphs")
    assert mode["amp"] and mode["fused"] and mode["compile"] and mode["compile_mode"] == "reduce-overhead"
    assert mode["number_format"] == "bf16"
    assert bench.parse_mode("fp32+tf32")["number_format"] == "tf32"
    assert bench.parse_mode("fp32") == {
        "amp": False,
        "tf32": False,
        "fused": False,
        "compile": False,
        "compile_mode": None,
        "number_format": "fp32",
        "malloc": False,
    }
    assert bench.parse_mode("bf16+malloc")["malloc"]
    for bad in ("fp16", "bf16+fuse", "fp32+compile+graphs"):
        with pytest.raises(ValueError, match="expected fp32 or bf16"):
            bench.parse_mode(bad)


def test_smart_worker_counts_flops_and_runs_fused_adamw(bench):
    args = argparse.Namespace(
        device="cpu",
        mode="fp32+fused",
        threads=torch.get_num_threads(),
        size=32,
        method="smart",
        feature_size=12,
        depths=(1, 1, 1, 1),
        heads=(1, 2, 3, 6),
        out_dim=64,
        head_hidden=32,
        head_bottleneck=16,
        batch=2,
        flops=True,
        warmup=1,
        steps=1,
        profile=3,
    )
    out = bench._worker(args)
    assert out["method"] == "smart" and out["mode"] == "fp32+fused" and out["seconds"] > 0
    assert math.isfinite(out["loss"])
    # two teacher views + two student views through the encoder, plus the backward: far more than one forward of
    # the patch embedding alone (2 x (16^3 tokens x 12 x 8 x 2 FLOPs))
    assert out["flops_per_step"] > 4 * 16**3 * 12 * 8 * 2
    assert "Self CPU" in out["profile"]


def test_summary_gives_ratio_tflops_and_mfu_against_the_given_peak(bench):
    runs = {
        "smart": [{"seconds": 0.2, "first_step_seconds": 3.0, "peak_gib": 2.0, "flops_per_step": 4e12}] * 2,
        "tang": [{"seconds": 0.25, "first_step_seconds": 1.0, "peak_gib": 3.0, "flops_per_step": 2e12}] * 2,
    }
    row = bench.summarise(runs, "cpu", bench.parse_mode("bf16"), peak_override=100.0)
    assert row["ratio"] == pytest.approx(0.8)
    assert "ratio" not in bench.summarise({"smart": runs["smart"]}, "cpu", bench.parse_mode("bf16"), None)
    assert row["smart_tflops"] == pytest.approx(20.0) and row["tang_tflops"] == pytest.approx(8.0)
    assert row["smart_mfu"] == pytest.approx(0.2) and row["tang_mfu"] == pytest.approx(0.08)
    assert "smart_mfu" not in bench.summarise(runs, "cpu", bench.parse_mode("bf16"), peak_override=None)
