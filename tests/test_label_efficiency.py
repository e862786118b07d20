"""benchmarks/label_efficiency.py --quick: every cell present, each variant's overrides really applied, resumable."""

from __future__ import annotations

import json
import math

from monai.bundle import ConfigParser

from benchmarks import label_efficiency as study


def _expected_effective(study, overrides: dict) -> dict:
    """What the pretraining bundle builds for a variant, read from its configs with the variant's overrides."""
    parser = ConfigParser()
    configs = study.PRETRAIN / "configs"
    parser.read_config([str(configs / "train.json"), str(configs / "demo.json")])
    parser.update(overrides)
    tokens = parser["loss_def"].get("global_tokens", ["cls", "pooled"])
    return {
        "masking": parser["train"]["trainer"]["masking"],
        "teacher_mask_ratio": parser["teacher_mask_ratio"],
        "w_rec": parser["loss_def"]["w_rec"],
        "global_tokens": [tokens] if isinstance(tokens, str) else list(tokens),
    }


def test_quick_study_fills_every_cell_with_the_variants_it_claims(tmp_path):
    results = tmp_path / "le.json"
    args = ["--quick", "--work_dir", str(tmp_path / "work"), "--results", str(results)]
    study.main(args + ["--diagnose"])
    data = json.loads(results.read_text())
    s = data["settings"]
    assert set(data["cells"]) == set(study.VARIANTS) and len(study.VARIANTS) == 6
    for variant, cell in data["cells"].items():
        keys = [f"dice_{n}" for n in s["labels"]] + [f"hd95_{n}" for n in s["labels"]] + list(study.CLUSTER_METRICS)
        for key in keys:
            assert cell[key]["n"] == len(s["seeds"]), (variant, key)
            assert all(math.isfinite(v) for v in cell[key]["values"]), (variant, key, cell[key])
        assert all(0.0 <= v <= 1.0 for n in s["labels"] for v in cell[f"dice_{n}"]["values"])

    runs = data["runs"]
    pretrained = [v for v, o in study.VARIANTS.items() if o is not None]
    for variant in pretrained:
        run = runs[f"pretrain/{variant}/seed0"]
        assert run["effective"] == _expected_effective(study, study.VARIANTS[variant]), variant
        assert run["iterations"] == runs[f"pretrain/{pretrained[0]}/seed0"]["iterations"] > 0
    assert runs["pretrain/smart/seed0"]["effective"]["masking"] == "attention"
    assert runs["pretrain/teacher_noise_0/seed0"]["effective"]["teacher_mask_ratio"] == 0
    assert "pretrain/random_init/seed0" not in runs
    for variant in study.VARIANTS:  # every network's output spread, the untrained one's included
        spread = runs[f"diagnose/{variant}/seed0"]
        assert all(math.isfinite(v) and v >= 0 for v in spread.values()) and spread["global_std_across_prototypes"] > 0
    for n in s["labels"]:
        iterations = {runs[f"finetune/{v}/n{n}/seed0"]["iterations"] for v in study.VARIANTS}
        assert len(iterations) == 1, (n, iterations)  # the same schedule for every encoder

    table = results.with_suffix(".md").read_text()
    for variant in study.VARIANTS:
        assert f"| `{variant}` |" in table
    assert "--quick" in table

    # resuming a finished study reruns nothing and keeps every number
    study.main(args + ["--resume"])
    again = json.loads(results.read_text())
    assert again["runs"] == runs
