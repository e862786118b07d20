"""benchmarks/pretraining_health.py --quick: every variant pretrains, is monitored, probed and judged."""

from __future__ import annotations

import math

from tests.helpers import load_benchmark


def _benchmark():
    return load_benchmark("pretraining_health")


def test_quick_health_check_fills_every_cell(tmp_path):
    bench = _benchmark()
    results = tmp_path / "ph.json"
    # an architecture override (--set) must reach every network the benchmark builds, trained or not
    args = ["--quick", "--work", str(tmp_path / "work"), "--results", str(results), "--set", "out_dim=256"]
    data = bench.main(args)
    assert data["settings"]["overrides"] == {"out_dim": 256}
    runs = data["pretrain"]
    assert set(runs) == set(bench.VARIANTS) == {"smart", "simmim", "dino_ibot"}
    iterations = {r["iterations"] for r in runs.values()}
    assert len(iterations) == 1 and iterations.pop() > 0  # the same schedule for every variant
    for variant, run in runs.items():
        assert run["teacher_init_share"] <= data["settings"]["max_teacher_share"] + 1e-9, variant
        for window in (run["monitor_first"], run["monitor_last"]):
            for token in ("cls", "pooled", "patch"):
                assert math.isfinite(window[f"collapse/{token}_information"]), (variant, token)
                assert window[f"collapse/{token}_prototypes"] >= 1
        assert run["teacher"] != run["student"]
    # each objective really is what it claims: SimMIM-only distils nothing, DINO+iBOT rebuilds nothing
    assert abs(runs["simmim"]["loss"] - 10.0 * runs["simmim"]["loss_rec"]) < 1e-5
    assert abs(runs["dino_ibot"]["loss"] - runs["dino_ibot"]["loss_cls"] - runs["dino_ibot"]["loss_patch"]) < 1e-4
    encoders = {"random_init"} | {f"{v}_{w}" for v in bench.VARIANTS for w in ("teacher", "student")}
    assert set(data["probes"]) == encoders
    for name, probe in data["probes"].items():
        assert 0.0 <= probe["knn_1"] <= 1.0 and 0.0 <= probe["linear"] <= 1.0 and probe["n_embeddings"] > 0, name
    assert set(data["spread"]) == {"random_init", *bench.VARIANTS}
    assert len(data["goals"]) == 5 and all(isinstance(g["met"], bool) for g in data["goals"])
    table = results.with_suffix(".md").read_text()
    assert "| `smart_teacher` |" in table and "--quick" in table and "## Goals" in table
