"""benchmarks/pretraining_parallel.py: run specs, and runs sized to the time left from a calibration."""

from __future__ import annotations

import json

import pytest

from benchmarks import pretraining_parallel as par


def test_a_run_spec_gives_variant_and_seed_and_may_give_length_and_batch():
    assert par.parse_run("smart:1", 640, 2) == {"variant": "smart", "seed": 1, "iterations": 640, "batch": 2}
    assert par.parse_run("simmim:0:2560", 640, 2)["iterations"] == 2560
    assert par.parse_run("simmim:0:2560:8", 640, 2)["batch"] == 8
    for bad, why in (("smrt:0", "variant"), ("smart", "variant"), ("smart:a", "integers"), ("smart:0:0", "positive")):
        with pytest.raises(SystemExit, match=why):
            par.parse_run(bad, 640, 2)


def test_runs_are_halved_until_their_estimate_fits_and_dropped_when_none_does(tmp_path):
    def calibration(variant: str, seconds: float, pretrain_seconds: float, iterations: int = 64) -> dict:
        path = tmp_path / f"{variant}.json"
        run = {"seconds": pretrain_seconds, "iterations": iterations}
        path.write_text(json.dumps({"pretrain": {variant: run}}))
        return {"results": str(path), "seconds": seconds}

    runs = [par.parse_run(r, 10240, 2) for r in ("smart:0", "simmim:0", "dino:0")]
    cal = {
        "smart_seed0_it64_b2": calibration("smart", 40.0, 6.4),  # 0.1 s/it, 33.6 s outside pretraining
        "simmim_seed0_it64_b2": calibration("simmim", 40.0, 64.0),  # 1 s/it: even 640 iterations do not fit
        "dino_seed0_it64_b2": {"results": None, "seconds": 3.0},  # its calibration failed
    }
    fitted = par.fit(runs, cal, 64, seconds_left=700.0)
    assert [r["variant"] for r in fitted] == ["smart"]
    # 0.1 s/it x 1.2 margin: 10240 -> 5120 (648 s with the 33.6 s) fits 700 s, 10240 (1262 s) does not
    assert fitted[0]["iterations"] == 5120 and fitted[0]["asked"] == 10240
    assert fitted[0]["estimate"] == pytest.approx(0.1 * 5120 * 1.2 + 33.6)


def test_a_failed_runs_excerpt_starts_at_its_first_traceback(tmp_path):
    log = tmp_path / "log.txt"
    chained = ["progress 1"] * 50 + ["Traceback (most recent call last):", "  root frame", "ValueError: root cause"]
    chained += ["", "During handling of the above exception, another exception occurred:", ""]
    chained += ["Traceback (most recent call last):"] + ["  frame"] * 20 + ["RuntimeError: wrapper"]
    log.write_text("\n".join(chained))
    excerpt = par.failure_excerpt(log).splitlines()
    assert excerpt[0].startswith("Traceback") and "ValueError: root cause" in excerpt
    assert excerpt[-1] == "RuntimeError: wrapper" and "progress 1" not in excerpt
    assert len(par.failure_excerpt(log, limit=5).splitlines()) == 6  # "..." and the last five
    log.write_text("\n".join(f"line {i}" for i in range(40)))  # no traceback: the end
    assert par.failure_excerpt(log).splitlines() == [f"line {i}" for i in range(25, 40)]
