"""benchmarks/data_pipeline.py end to end at a tiny size: every cache mode timed, the cache written, the arithmetic
reported (the figures themselves are the benchmark's business, not a test's)."""

from __future__ import annotations

import json
import sys

from tests.helpers import REPO, run_command


def test_tiny_run_times_every_cache_mode_and_reports_workers_per_gpu(tmp_path):
    out = tmp_path / "result"
    args = [sys.executable, "-m", "benchmarks.data_pipeline", "--num", "2", "--shape", "96,96,64"]
    args += ["--spacing", "3.33,3.33,5", "--pixdim", "5,5,5", "--roi", "16", "--epochs", "1"]
    args += ["--work", tmp_path, "--out", out]
    log = run_command(args, cwd=REPO, timeout=300)
    results = json.loads(out.with_suffix(".json").read_text())
    modes = results["seconds_per_volume"]
    assert list(modes) == ["none", "disk, first epoch (writes the cache)", "disk, later epochs", "memory, later epochs"]
    assert all(s > 0 for s in modes.values())
    assert results["resampled_shape"] == [64, 64, 64]  # 320 mm at 5 mm
    assert results["cached_bytes_per_volume"] >= 64**3 * 4  # float32 volumes were written to the disk cache
    assert {"LoadImageCheckedd", "Spacingd", "RandTwoViewsd"} <= set(results["per_transform_seconds"])
    assert "| disk, later epochs |" in out.with_suffix(".md").read_text() and "workers per GPU" in log
