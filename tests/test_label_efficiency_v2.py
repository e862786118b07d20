"""benchmarks/label_efficiency_v2.py: the statistics on known data, and --quick: both parts join into one table with
every cell and a CI around every mean, and --resume reruns nothing."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from benchmarks import label_efficiency_v2 as study


def test_hierarchical_bootstrap_resamples_seeds_and_cases():
    rng = np.random.default_rng(0)
    boot = study.hierarchical_bootstrap
    # the same difference in every case and seed: no uncertainty
    same = boot([np.full(8, 0.1)] * 5, study._mean_of_cases, 500)
    assert same["mean"] == pytest.approx(0.1) and same["ci_low"] == pytest.approx(0.1) == same["ci_high"]
    assert same["n_seeds"] == 5 and same["n_cases"] == 40
    # cases vary, seeds do not: the CI is about the cases' standard error
    cases = rng.normal(0.0, 1.0, size=200)
    only_cases = boot([cases], study._mean_of_cases, 2000)
    se = cases.std() / math.sqrt(len(cases))
    assert only_cases["ci_high"] - only_cases["ci_low"] == pytest.approx(2 * 1.96 * se, rel=0.2)
    # seeds shift every case: a seed-level spread widens the CI beyond the within-seed one
    shifted = [cases[:40] + shift for shift in (-1.0, -0.5, 0.0, 0.5, 1.0)]
    wide = boot(shifted, study._mean_of_cases, 2000)
    narrow = boot([cases[:40]] * 5, study._mean_of_cases, 2000)
    assert wide["ci_high"] - wide["ci_low"] > 2 * (narrow["ci_high"] - narrow["ci_low"])
    assert wide["ci_low"] <= wide["mean"] <= wide["ci_high"] and wide["per_seed"][0] < wide["per_seed"][-1]
    assert boot([], study._mean_of_cases, 10) == {"n_seeds": 0}


def test_outcome_probe_scores_are_cross_validated_and_unbiased():
    rng = np.random.default_rng(1)
    y = np.array([0, 1] * 30)
    noise = rng.normal(size=(60, 40))
    informative = noise.copy()
    informative[:, 0] += 3.0 * y
    auc = study._auc_difference  # column 0 labels, columns 1 and 2 scores
    good = study.cross_validated_scores(informative, y, 5, 3, 0.1)
    blind = study.cross_validated_scores(noise, y, 5, 3, 0.1)
    table = np.stack([y, good, blind], 1)[None]
    assert auc(table)[0] > 0.3  # the informative feature is found on held-out cases
    aucs = [
        auc(np.stack([y, study.cross_validated_scores(rng.normal(size=(60, 40)), y, 5, 1, 0.1), 0 * y], 1)[None])
        for _ in range(8)
    ]
    assert abs(np.mean(aucs)) < 0.12  # AUC - 0 ... about 0.5 - 0.5: no leave-one-out bias below chance
    assert len(good) == len(y) and np.isfinite(good).all()


def _every_stat(cell: dict):
    for value in cell.values():
        if isinstance(value, dict) and value.get("n_seeds"):
            yield value


@pytest.fixture
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_quick_study_joins_both_parts_and_resume_reruns_nothing(tmp_path, monkeypatch, _restore_threads):
    results = tmp_path / "le2.json"
    # one torch thread: two threads on two busy cores spin on each other (5x slower when other tests run beside)
    args = ["--quick", "--threads", "1", "--work_dir", str(tmp_path / "work"), "--results", str(results)]
    study.main(args + ["--part", "main"])
    main_runs = json.loads(results.read_text())["runs"]

    finetuned = []
    real_finetune = study.le.finetune

    def counting_finetune(n, seed, s, lists, encoder, out, **kwargs):
        finetuned.append(out.name)
        return real_finetune(n, seed, s, lists, encoder, out, **kwargs)

    monkeypatch.setattr(study.le, "finetune", counting_finetune)
    data = study.main(args + ["--part", "ablations", "--resume"])
    s, cells, runs = data["settings"], data["cells"], data["runs"]
    (n_abl,) = s["ablation_labels"]
    # the ablations reuse the main part's runs (smart and random init at their label count) and change none of them
    assert sorted(finetuned) == sorted(f"finetune_{v}_n{n_abl}_seed0" for v in study.ABLATIONS)
    assert {k: runs[k] for k in main_runs} == main_runs
    assert set(data["parts"]) == {"main", "ablations"} and all(p["wall_time_s"] > 0 for p in data["parts"].values())

    # every cell of both parts
    assert set(cells) == set(study.VARIANTS)
    for v in study.PARTS["main"]:
        for n in s["labels"]:
            assert cells[v][f"dice_{n}"]["n_seeds"] == len(s["seeds"]) and cells[v][f"dice_{n}"]["n_cases"] == 2
    for n in s["labels"]:
        for v, ref in (("smart", "random_init"), ("simmim", "random_init"), ("smart", "simmim")):
            assert cells[v][f"dice_{n}_minus_{ref}"]["n_seeds"] == len(s["seeds"]), (v, ref, n)
    for v in study.ABLATIONS:
        for ref in ("random_init", "smart"):
            assert cells[v][f"dice_{n_abl}_minus_{ref}"]["n_seeds"] == 1, (v, ref)
        assert {k for k in cells[v] if k.startswith("dice_") and k.count("_") == 1} == {f"dice_{n_abl}"}, v
    for v, cell in cells.items():
        assert all(0.0 <= cell[f"organ_{k}"]["mean"] <= 1.0 for k in ("knn_1", "linear")), v
        for endpoint in study.ENDPOINTS:
            assert 0.0 <= cell[f"{endpoint}_auc"]["mean"] <= 1.0, (v, endpoint)
            assert (f"{endpoint}_auc_minus_random_init" in cell) == (v != "random_init"), (v, endpoint)
        for stat in _every_stat(cell):  # a CI around every mean
            assert stat["ci_low"] - 1e-9 <= stat["mean"] <= stat["ci_high"] + 1e-9, (v, stat)
    pretrained = [v for v, o in study.VARIANTS.items() if o is not None]
    for v in pretrained:  # the same schedule, a fitted momentum and the variant's own overrides
        run = runs[f"pretrain/{v}/seed0"]
        assert run["iterations"] == runs["pretrain/smart/seed0"]["iterations"] > 0
        assert run["teacher_init_share"] <= s["max_teacher_share"] + 1e-9 and run["overrides"] == study.VARIANTS[v]
    assert abs(runs["pretrain/simmim/seed0"]["loss"] - 10.0 * runs["pretrain/simmim/seed0"]["loss_rec"]) < 1e-5
    iterations = {runs[k]["iterations"] for k in runs if k.startswith("finetune/")}
    assert len(iterations) == 1  # the same finetuning schedule for every cell
    assert {len(g["value"]) > 0 and isinstance(g["met"], bool) for g in data["goals"]} == {True}
    assert len(data["goals"]) == 2 * len([n for n in s["labels"] if n <= 8]) + len(study.ABLATIONS)

    # the table: every row as wide as its header, every encoder, the plot beside it
    table = results.with_suffix(".md").read_text()
    for block in table.split("\n\n"):
        rows = [r for r in block.splitlines() if r.startswith("|")]
        assert len({r.count(" | ") for r in rows if not r.startswith("|-")}) <= 1, block
    for v in study.VARIANTS:
        assert f"| `{v}` |" in table
    assert "--quick" in table and "## Ablations" in table and "`smart` - `simmim`" in table
    assert results.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # resuming a finished part reruns nothing and keeps every number
    def refuse(*a, **k):
        raise AssertionError("--resume reran a finished run")

    for name in ("pretrain", "probe"):
        monkeypatch.setattr(study.ph, name, refuse)
    monkeypatch.setattr(study.le, "finetune", refuse)
    monkeypatch.setattr(study, "outcome", refuse)
    again = study.main(args + ["--part", "main", "--resume"])
    assert again["runs"] == runs
