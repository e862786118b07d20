"""benchmarks/outcome_study.py --quick: every arm scores the same test phantoms, paired against radiomics, the ceiling
and random init; --resume keeps a finetuned arm."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("radiomics", reason="the outcome study's radiomics arm needs the 'radiomics' extra")

from benchmarks import outcome_study  # noqa: E402
from smart_nets.networks.nets import smart_swin  # noqa: E402


def test_quick_study_scores_every_arm_on_the_same_cases(tmp_path):
    weights = tmp_path / "smart.pt"
    torch.manual_seed(1)  # "SMART" weights that differ from the study's random init (seed 0)
    torch.save(smart_swin("demo").state_dict(), weights)
    results = tmp_path / "out.json"
    arms = ["ceiling", "volume", "radiomics", "frozen_smart", "frozen_random", "finetuned_random"]
    args = ["--quick", "--pretrained", str(weights), "--work", str(tmp_path / "work"), "--results", str(results)]
    args += ["--endpoints", "response", "--arms", *arms]
    data = outcome_study.main(args)

    scores = data["scores"]["response"]
    dataset = json.loads((tmp_path / "work" / "phantoms" / "dataset.json").read_text())
    items = dataset["training"] + dataset["validation"]
    s = data["settings"]
    held = items[s["train"] + s["val"] :]  # the split is by case order: train, select, test
    assert scores["cases"] == [i["case_id"] for i in held]
    assert scores["label"] == [i["response"] for i in held]
    # the ceiling is the generator's own noise-free score of each test case
    assert scores["ceiling"] == [dataset["generator"]["cases"][c]["latent"]["response"] for c in scores["cases"]]
    for arm in arms:
        assert len(scores[arm]) == len(held), arm
    rows = data["compare"]["response"]
    assert set(rows) == set(arms)
    for arm, row in rows.items():
        assert 0.0 <= row["auc"]["auc"] <= 1.0
        if arm != "radiomics":  # every arm paired against radiomics on the same cases
            assert row["vs_radiomics"]["difference"] == pytest.approx(
                row["auc"]["auc"] - rows["radiomics"]["auc"]["auc"]
            )
    assert "vs_random_init" in rows["frozen_smart"] and "vs_random_init" not in rows["frozen_random"]
    # pretrained weights were really loaded: the two frozen encoders score the cases differently
    assert scores["frozen_smart"] != scores["frozen_random"]
    assert data["runs"]["response/radiomics"]["n_features"] > 50
    assert data["runs"]["response/finetuned_random"]["pretrained"] is None
    table = results.with_suffix(".md").read_text()
    assert "| `radiomics` |" in table and "--quick" in table
    assert results.with_name("out_roc.png").stat().st_size > 0

    # --resume keeps the finetuned arm (no new training: the same scores, its run folder untouched)
    run = tmp_path / "work" / "runs" / "tumour" / "response" / "finetuned_random" / "test" / "predictions.csv"
    before = run.stat().st_mtime_ns
    again = outcome_study.main(args + ["--resume"])
    assert run.stat().st_mtime_ns == before
    assert again["scores"]["response"]["finetuned_random"] == scores["finetuned_random"]


def test_missing_weights_and_too_few_phantoms_stop_with_the_reason(tmp_path, capsys):
    with pytest.raises(SystemExit):
        outcome_study.main(["--quick", "--pretrained", str(tmp_path / "none.pt")])
    assert "none.pt: no such file" in capsys.readouterr().err
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"")
    with pytest.raises(SystemExit):
        outcome_study.main(["--quick", "--pretrained", str(weights), "--num", "10"])
    assert "leaves no test phantoms" in capsys.readouterr().err
