"""benchmarks/pretraining_health.py --quick: every variant pretrains, is monitored, probed and judged."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks import pretraining_health as bench


def test_quick_health_check_fills_every_cell(tmp_path):
    results = tmp_path / "ph.json"
    # an architecture override (--set) must reach every network the benchmark builds, trained or not
    args = ["--quick", "--work", str(tmp_path / "work"), "--results", str(results), "--set", "out_dim=256"]
    data = bench.main(args)
    assert data["settings"]["overrides"] == {"out_dim": 256}
    runs = data["pretrain"]
    assert set(runs) == set(bench.DEFAULT_VARIANTS) == {"smart", "simmim", "dino_ibot"}
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
    assert runs["simmim"]["loss_koleo"] == 0  # SimMIM only: no KoLeo either
    dino_ibot = runs["dino_ibot"]  # the bundle's defaults without reconstruction: KoLeo (w_koleo 0.1) stays
    assert dino_ibot["loss_koleo"] != 0
    parts = dino_ibot["loss_cls"] + dino_ibot["loss_patch"] + 0.1 * dino_ibot["loss_koleo"]
    assert abs(dino_ibot["loss"] - parts) < 1e-4
    encoders = {"random_init"} | {f"{v}_{w}" for v in runs for w in ("teacher", "student")}
    assert set(data["probes"]) == encoders
    for name, probe in data["probes"].items():
        assert 0.0 <= probe["knn_1"] <= 1.0 and 0.0 <= probe["linear"] <= 1.0 and probe["n_embeddings"] > 0, name
        # paired against random init (and SimMIM's teacher): the difference is of the two accuracies, inside its CI
        refs = {"random_init", "simmim_teacher"} - {name}
        assert {k[3:] for k in probe if k.startswith("vs_")} == refs, name
        for ref in refs:
            for kind in ("knn_1", "linear"):
                d = probe[f"vs_{ref}"][kind]
                assert d["difference"] == probe[kind] - data["probes"][ref][kind]
                assert d["ci95"][0] <= d["difference"] <= d["ci95"][1] and d["n_cases"] == 2, (name, ref, kind)
    assert set(data["spread"]) == {"random_init", *runs}
    assert len(data["goals"]) == 5 and all(isinstance(g["met"], bool) for g in data["goals"])
    table = results.with_suffix(".md").read_text()
    assert "| `smart_teacher` |" in table and "--quick" in table and "## Goals" in table

    # --resume keeps the runs it has (same files, no new pretraining) and probes a new variant beside them
    again = bench.main(args + ["--resume", "--variants", "simmim", "smart_mild"])
    assert set(again["pretrain"]) == set(runs) | {"smart_mild"}
    assert again["pretrain"]["smart"] == runs["smart"]
    assert again["probes"]["smart_teacher"]["hits"] == data["probes"]["smart_teacher"]["hits"]
    with pytest.raises(SystemExit, match="other settings"):
        bench.main(args + ["--resume", "--seed", "3", "--variants", "simmim"])

    # --summarize: seeds' differences averaged per embedding, each seed's own kept
    other = json.loads(results.read_text())
    other["settings"]["seed"] = 1
    other["probes"]["smart_mild_teacher"]["knn_1"] += 0.5  # only the per-seed list reads the summary accuracy
    (tmp_path / "seed1.json").write_text(json.dumps(other))
    summary = bench.main(
        ["--summarize", str(results), str(tmp_path / "seed1.json"), "--results", str(tmp_path / "s.json")]
    )
    row = summary["encoders"]["smart_mild_teacher"]
    hits = np.array(again["probes"]["smart_mild_teacher"]["hits"]["knn_1"], float)
    ref = np.array(again["probes"]["smart_teacher"]["hits"]["knn_1"], float)
    assert row["knn_1_vs_smart_teacher"]["difference"] == pytest.approx((hits - ref).mean())
    assert len(row["knn_1_vs_smart_teacher"]["per_seed"]) == 2 and summary["seeds"] == [0, 1]
    assert "| `smart_mild_teacher` |" in (tmp_path / "s.md").read_text()
    with pytest.raises(SystemExit, match="overwrite"):
        bench.main(["--summarize", str(results), "--results", str(results)])

    # --merge: variants pretrained in separate processes, one file each, give the file one process would have
    def part(variants: set[str], name: str) -> str:
        r = json.loads(results.read_text())
        for key in ("pretrain", "spread"):
            r[key] = {k: v for k, v in r[key].items() if k in variants or k == "random_init"}
        keep = {"random_init"} | {f"{v}_{w}" for v in variants for w in ("teacher", "student")}
        r["probes"] = {
            k: {m: x for m, x in v.items() if not m.startswith("vs_")} for k, v in r["probes"].items() if k in keep
        }
        (tmp_path / name).write_text(json.dumps(r))
        return str(tmp_path / name)

    whole = json.loads(results.read_text())
    parts = [part({"smart", "dino_ibot"}, "a.json"), part({"simmim", "smart_mild"}, "b.json")]
    merged = bench.main(["--merge", *parts, "--results", str(tmp_path / "merged.json")])
    assert set(merged["pretrain"]) == set(whole["pretrain"]) and set(merged["probes"]) == set(whole["probes"])
    for name, probe in merged["probes"].items():
        for ref in {"random_init", "simmim_teacher"} - {name}:
            assert probe[f"vs_{ref}"] == whole["probes"][name][f"vs_{ref}"], (name, ref)
    assert "| `smart_teacher` |" in (tmp_path / "merged.md").read_text()
    # SimMIM with its own masking is a second SimMIM reference: every encoder is paired against it too
    own = json.loads(Path(parts[1]).read_text())
    own["pretrain"] = {"simmim_60" if k == "simmim" else k: v for k, v in own["pretrain"].items() if k != "smart_mild"}
    own["probes"] = {k.replace("simmim_", "simmim_60_"): v for k, v in own["probes"].items() if "mild" not in k}
    (tmp_path / "d.json").write_text(json.dumps(own))
    merged = bench.main(["--merge", parts[0], str(tmp_path / "d.json"), "--results", str(tmp_path / "own.json")])
    smart, own_hits = merged["probes"]["smart_teacher"], whole["probes"]["simmim_teacher"]["hits"]["knn_1"]
    expected = (np.array(smart["hits"]["knn_1"], float) - np.array(own_hits, float)).mean()
    assert smart["vs_simmim_60_teacher"]["knn_1"]["difference"] == pytest.approx(expected)
    assert "vs_simmim_teacher" not in smart and "SimMIM, own masking" in (tmp_path / "own.md").read_text()
    with pytest.raises(SystemExit, match="more than one"):
        bench.main(["--merge", parts[0], parts[0], "--results", str(tmp_path / "twice.json")])
    shifted = json.loads(Path(parts[1]).read_text())
    shifted["probes"]["random_init"]["hits"]["knn_1"][0] ^= 1
    (tmp_path / "c.json").write_text(json.dumps(shifted))
    with pytest.raises(SystemExit, match="random init"):
        bench.main(["--merge", parts[0], str(tmp_path / "c.json"), "--results", str(tmp_path / "bad.json")])


def test_mild_variants_cut_the_views_of_train_json():
    """``VIEWS`` is the index of ``RandTwoViewsd`` in train.json's preprocessing: the ``*_mild`` variants change the
    crops there, and would silently change another transform if train.json's list moved."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bench.PRETRAIN / "configs" / "train.json"))
    assert parser[bench.VIEWS]["_target_"].endswith("RandTwoViewsd")
    assert bench.VARIANTS["dino_bn_mild"] == {**bench.VARIANTS["dino_bn"], **bench._MILD}


def test_paired_bootstrap_resamples_whole_cases():
    cases = [0, 0, 1, 1, 2, 2, 3, 3]
    same = bench.paired_bootstrap([1, 0, 1, 0, 1, 1, 0, 0], [1, 0, 1, 0, 1, 1, 0, 0], cases, 200, 0)
    assert same == {"difference": 0.0, "ci95": [0.0, 0.0], "n_cases": 4}
    better = bench.paired_bootstrap([1] * 8, [1, 0, 1, 0, 0, 1, 0, 1], cases, 500, 0)
    assert better["difference"] == 0.5 and better["ci95"][0] == better["ci95"][1] == 0.5  # each case +0.5
    mixed = bench.paired_bootstrap([1, 1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1, 1, 1], cases, 500, 0)
    assert mixed["difference"] == 0.0 and mixed["ci95"][0] < -0.4 and mixed["ci95"][1] > 0.4


def test_a_run_stopped_part_way_continues_from_its_checkpoint(tmp_path):
    """A variant's run writes its resumable checkpoint every tenth of the run; started again in the same folder (as
    ``--resume`` does after a session ended mid-run) it continues the iteration count instead of starting over."""
    s = dict(bench.QUICK, iterations=3, overrides={})  # one epoch of 3 iterations (6 phantoms, batch 2)
    lists = bench.le.make_data(tmp_path / "work", s)
    first = bench.pretrain("simmim", s, lists, tmp_path / "run")  # stands for a run stopped after its first epoch
    assert first["resumed_from"] == 0 and first["iterations"] == 3
    again = bench.pretrain("simmim", dict(s, iterations=6), lists, tmp_path / "run")
    assert again["resumed_from"] == 3 and again["iterations"] == 6 and math.isfinite(again["loss_rec"])


def test_curve_draws_each_objective_run_at_two_lengths_one_point_per_seed(tmp_path):
    def results(name: str, iterations: int, seed: int, smart: float, simmim: float | None = None) -> str:
        probes = {"random_init": {"knn_1": 0.5, "linear": 0.6}, "smart_teacher": {"knn_1": smart, "linear": 0.6}}
        if simmim is not None:
            probes["simmim_teacher"] = {"knn_1": simmim, "linear": 0.5}
        path = tmp_path / name
        path.write_text(json.dumps({"settings": {"iterations": iterations, "seed": seed}, "probes": probes}))
        return str(path)

    files = [
        results("a.json", 640, 0, 0.6, simmim=0.55),  # SimMIM only at one length: not drawn
        results("a_again.json", 640, 0, 0.7),  # the same length and seed again: the later file counts
        results("b.json", 640, 1, 0.8),
        results("c.json", 2560, 0, 0.4),
    ]
    points = bench.main(["--curve", *files, "--results", str(tmp_path / "curve.json")])
    assert set(points["knn_1"]) == {"smart"}
    assert sorted(points["knn_1"]["smart"][640]) == pytest.approx([0.2, 0.3])
    assert points["knn_1"]["smart"][2560] == pytest.approx([-0.1])
    assert (tmp_path / "curve.png").stat().st_size > 1000
    with pytest.raises(SystemExit, match="two lengths"):
        bench.main(["--curve", files[0], "--results", str(tmp_path / "one.json")])
    # FILE:OLD=NEW: one objective under two names across results files is drawn as one
    renamed = bench.main(["--curve", files[0], f"{files[3]}:smart=simmim", "--results", str(tmp_path / "r.json")])
    assert set(renamed["knn_1"]) == {"simmim"} and renamed["knn_1"]["simmim"][2560] == pytest.approx([-0.1])
    with pytest.raises(SystemExit, match="no variant"):
        bench.main(["--curve", files[0], f"{files[3]}:dino=x", "--results", str(tmp_path / "bad.json")])


def test_a_work_folder_with_another_number_of_phantoms_is_refused(tmp_path):
    s = dict(bench.QUICK, overrides={})
    bench.le.make_data(tmp_path / "work", s)
    with pytest.raises(SystemExit, match="holds 6 phantoms where the settings ask for 7"):
        bench.le.make_data(tmp_path / "work", dict(s, pool=7))
