"""Several ``benchmarks.pretraining_health`` runs side by side, one process each, sized to a time budget.

For a machine with many cores or a GPU that one demo-scale run leaves mostly idle: every run
(``variant:seed[:iterations[:batch]]``) is its own ``pretraining_health`` process on phantoms generated once, with
``--threads`` intra-op threads each. Then the runs of the same seed, length and batch are merged
(``pretraining_health --merge``) into one results file with the paired CIs across variants,
``<results>_it<N>_b<B>_seed<S>.json`` and ``.md``.

``--budget SECONDS`` sizes the runs to the time left: all runs first pretrain ``--calibrate`` iterations at once (the
same processes side by side, so the seconds per iteration include their contention), then each run's length is
halved until its estimate (seconds per iteration x iterations x 1.2, plus the calibration run's time outside
pretraining: start, phantoms, diagnosis, probes) fits the time left, down to 640; a run that still does not fit is
dropped, and every change is printed and recorded in ``<results>_plan.json``. Runs still going at the deadline are
stopped and reported. ``--pack DIR`` writes the results and logs (``results.tar.gz``) and the exported encoders
(``encoders_<i>.tar``, at most 15 MB each) there, for a machine that returns only a few files.

    python -m benchmarks.pretraining_parallel --runs smart:0 simmim:0 smart:1 simmim:1 smart:0:2560:8 \\
        simmim:0:2560:8 --iterations 10240 --budget 420 --results /tmp/ph/pretraining_health_v5 --pack $OUT

On an H200 (16 cores) with those six runs side by side, each 48-iteration calibration took 60-73 s in all and the fit
estimated 268-274 s for 640 iterations at batch 2 (385-393 s at batch 8): per run, no faster than two CPU cores, so
a 15-minute GPU lease holds no run longer than the CPU's (``benchmarks/results/gpu_h200.md``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from benchmarks import label_efficiency as le
from benchmarks import pretraining_health as ph
from benchmarks.common import REPO, write_json

log = logging.getLogger(__name__)
MIN_ITERATIONS = 640


def parse_run(text: str, iterations: int, batch: int) -> dict:
    """``variant:seed[:iterations[:batch]]`` -> a run; stops naming the text and what is wrong."""
    parts = text.split(":")
    if not 2 <= len(parts) <= 4 or parts[0] not in ph.VARIANTS:
        raise SystemExit(
            f"--runs {text!r}: expected variant:seed[:iterations[:batch]] with a variant of {', '.join(ph.VARIANTS)}"
        )
    try:
        numbers = [int(p) for p in parts[1:]]
    except ValueError:
        raise SystemExit(f"--runs {text!r}: seed, iterations and batch must be integers") from None
    seed, its, b = numbers + [None, iterations, batch][len(numbers) :]
    if its < 1 or b < 1:
        raise SystemExit(f"--runs {text!r}: iterations and batch must be positive")
    return {"variant": parts[0], "seed": seed, "iterations": its, "batch": b}


def run_name(run: dict) -> str:
    return f"{run['variant']}_seed{run['seed']}_it{run['iterations']}_b{run['batch']}"


def launch(runs: list[dict], args, shared: Path, work: Path, out: Path, deadline: float) -> dict[str, dict]:
    """Every run as its own ``pretraining_health`` process on the phantoms in ``shared``, all at once; waits for
    them or the deadline. Returns per run its results file (or None), return code and wall seconds."""
    out.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads), PYTHONUNBUFFERED="1")
    procs = {}
    for run in runs:
        name = run_name(run)
        run_work = work / name
        run_work.mkdir(parents=True, exist_ok=True)
        for folder in ("phantoms_pool", "phantoms_heldout"):  # generated once, shared
            link = run_work / folder
            if not link.exists():
                link.symlink_to((shared / folder).resolve())
        results = out.parent / f"{out.name}_{name}.json"
        cmd = [sys.executable, "-m", "benchmarks.pretraining_health", "--variants", run["variant"]]
        cmd += ["--seed", str(run["seed"]), "--iterations", str(run["iterations"]), "--batch", str(run["batch"])]
        cmd += ["--work", str(run_work), "--results", str(results), "--resume"]
        cmd += ["--set", *args.set] if args.set else []
        handle = open(run_work / "log.txt", "w")
        procs[name] = dict(
            proc=subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=REPO),
            log=handle,
            results=results,
            start=time.monotonic(),
        )
        log.info("started %s", name)
    done: dict[str, dict] = {}
    while len(done) < len(procs):
        for name, p in procs.items():
            if name in done:
                continue
            code = p["proc"].poll()
            if code is None and time.monotonic() > deadline:
                p["proc"].kill()
                code = p["proc"].wait()
                log.warning("%s: stopped at the deadline", name)
            if code is not None:
                p["log"].close()
                ok = code == 0 and p["results"].is_file()
                done[name] = {
                    "results": str(p["results"]) if ok else None,
                    "returncode": code,
                    "seconds": time.monotonic() - p["start"],
                    "log": str(work / name / "log.txt"),
                }
                if not ok:
                    log.error("%s failed (exit %s):\n%s", name, code, failure_excerpt(work / name / "log.txt"))
        time.sleep(1.0)
    return done


def failure_excerpt(path: Path, limit: int = 80) -> str:
    """What a failed run's log says of its failure: from its first traceback on (the root cause, not only the last
    frames of a chained one), else its last lines; at most ``limit`` lines, the end kept."""
    lines = path.read_text(errors="replace").splitlines()
    first = next((i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")), None)
    lines = lines[first:] if first is not None else lines[-15:]
    return "\n".join(lines if len(lines) <= limit else ["...", *lines[-limit:]])


def fit(runs: list[dict], calibration: dict[str, dict], calibrate: int, seconds_left: float) -> list[dict]:
    """Each run's length halved until its estimate fits ``seconds_left`` (see the module's docstring)."""
    fitted = []
    for run in runs:
        cal = calibration.get(run_name(dict(run, iterations=calibrate)))
        if not cal or not cal["results"]:
            log.error("%s: its calibration run failed; dropped", run_name(run))
            continue
        r = json.loads(Path(cal["results"]).read_text())
        pre = r["pretrain"][run["variant"]]
        per_it = pre["seconds"] / max(1, pre["iterations"])
        fixed = cal["seconds"] - pre["seconds"]
        its = run["iterations"]
        while its > MIN_ITERATIONS and per_it * its * 1.2 + fixed > seconds_left:
            its //= 2
        estimate = per_it * its * 1.2 + fixed
        entry = dict(run, asked=run["iterations"], iterations=its, seconds_per_iteration=per_it, estimate=estimate)
        if estimate > seconds_left:
            log.error(
                "%s: %.0f s estimated at %d iterations, %.0f s left; dropped",
                run_name(run),
                estimate,
                its,
                seconds_left,
            )
            continue
        if its != run["iterations"]:
            log.warning(
                "%s: %d iterations do not fit the %.0f s left (%.3f s/it); runs %d",
                run_name(run),
                run["iterations"],
                seconds_left,
                per_it,
                its,
            )
        fitted.append(entry)
    return fitted


def pack(folder: Path, out: Path, work: Path, limit: int = 15_000_000) -> None:
    """Results, logs and the plan in ``results.tar.gz``; the encoders in ``encoders_<i>.tar`` of at most ``limit``
    bytes each."""
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(folder / "results.tar.gz", "w:gz") as tar:
        for f in sorted(out.parent.glob(f"{out.name}_*")):
            tar.add(f, arcname=f"results/{f.name}")
        for f in sorted(work.glob("*/log.txt")):
            tar.add(f, arcname=f"logs/{f.parent.name}.txt")
    encoders = sorted(p for p in work.glob("*/runs/*/*/models/*.pt") if p.name in ("model.pt", "student.pt"))
    index, size, tar = 0, 0, None
    for f in encoders:
        if tar is None or size + f.stat().st_size > limit:
            if tar is not None:
                tar.close()
            tar, size, index = tarfile.open(folder / f"encoders_{index}.tar", "w"), 0, index + 1
        tar.add(f, arcname=str(f.relative_to(work)))
        size += f.stat().st_size
    if tar is not None:
        tar.close()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True, metavar="VARIANT:SEED[:ITERATIONS[:BATCH]]")
    parser.add_argument("--iterations", type=int, default=640, help="length of runs that do not give their own")
    parser.add_argument("--batch", type=int, default=2, help="batch of runs that do not give their own")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads per process")
    parser.add_argument("--budget", type=float, help="seconds for everything; runs are sized to it (see above)")
    parser.add_argument("--calibrate", type=int, default=64, help="iterations of the calibration runs")
    parser.add_argument("--work", default="/tmp/pretraining_parallel", help="phantoms and runs")
    parser.add_argument("--results", required=True, help="prefix of the results files")
    parser.add_argument("--pack", help="folder for results.tar.gz and encoders_<i>.tar")
    parser.add_argument("--set", nargs="*", default=[], metavar="ID=JSON", help="overrides for every run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    start = time.monotonic()
    deadline = start + args.budget if args.budget else float("inf")
    runs = [parse_run(r, args.iterations, args.batch) for r in args.runs]
    names = [run_name(r) for r in runs]
    if len(set(names)) != len(names):
        raise SystemExit(f"--runs: a run is given twice: {names}")
    work, out = Path(args.work), Path(args.results)
    out.parent.mkdir(parents=True, exist_ok=True)
    shared = work / "shared"
    le.make_data(shared, ph.FULL)
    plan: dict = {"runs": runs, "budget": args.budget}
    if args.budget:
        cal_runs = [dict(r, iterations=args.calibrate) for r in runs]
        cal_runs = [dict(t) for t in {tuple(sorted(r.items())): r for r in cal_runs}.values()]  # one per variant/seed
        calibration = launch(
            cal_runs, args, shared, work / "calibration", out.parent / "calibration" / out.name, deadline
        )
        plan["calibration"] = calibration
        runs = fit(runs, calibration, args.calibrate, deadline - time.monotonic() - 30)
        plan["fitted"] = runs
    write_json(out.parent / f"{out.name}_plan.json", plan)
    runs_done = launch(runs, args, shared, work, out, deadline - 20)
    plan["done"] = runs_done
    groups: dict[tuple, list[Path]] = {}
    for run in runs:
        res = runs_done[run_name(run)]["results"]
        if res:
            groups.setdefault((run["iterations"], run["batch"], run["seed"]), []).append(Path(res))
    plan["merged"] = []
    for (its, b, seed), files in sorted(groups.items()):
        merged = out.parent / f"{out.name}_it{its}_b{b}_seed{seed}.json"
        try:
            result = ph.merge(files, merged)
        except SystemExit as err:
            log.error("merging %s: %s", [str(f) for f in files], err)
            continue
        plan["merged"].append(str(merged))
        for name, p in result["probes"].items():
            log.info("it %d b %d seed %d %s: 1-NN %.3f linear %.3f", its, b, seed, name, p["knn_1"], p["linear"])
    plan["seconds"] = time.monotonic() - start
    write_json(out.parent / f"{out.name}_plan.json", plan)
    if args.pack:
        pack(Path(args.pack), out, work)
    return plan


if __name__ == "__main__":
    main()
