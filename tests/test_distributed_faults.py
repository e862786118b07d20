"""A worker of a 2-process `torchrun` (gloo, CPU) dies: the job ends in bounded time, non-zero, naming the failed
rank; a restart with `--resume true` continues from the last checkpoint."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

from tests.helpers import completed_epochs, configs, run_command


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_killed_worker_ends_the_job_naming_its_rank_and_a_restart_resumes(tmp_path, bundle_workspace):
    bundle = bundle_workspace("smart_pretrain", root=tmp_path, phantoms=8, val_fraction=0.25) / "smart_pretrain"
    initialize = json.loads((bundle / "configs" / "multi_gpu_train.json").read_text())["initialize"]
    initialize.append("$open(@bundle_root + f'/pid{dist.get_rank()}', 'w').write(str(os.getpid()))")
    override = tmp_path / "ddp.json"
    override.write_text(json.dumps({"backend": "gloo", "batch_size": 1, "save_interval": 1, "initialize": initialize}))
    config_files = configs(bundle, "train.json", "multi_gpu_train.json", "demo.json", override)
    models = tmp_path / "models"

    def torchrun(*extra: str) -> list[str]:
        args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
        args += ["--master_port", str(_free_port()), "--monitor-interval", "1"]
        args += ["-m", "monai.bundle", "run", "--config_file", config_files]
        return args + [
            "--bundle_root",
            str(bundle),
            "--dataset_dir",
            str(tmp_path / "data"),
            "--ckpt_dir",
            str(models),
            *extra,
        ]

    env = dict(os.environ, OMP_NUM_THREADS="1")
    log = open(tmp_path / "job.log", "w+")
    job = subprocess.Popen(
        torchrun("--max_epochs", "40"),
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while completed_epochs(models / "checkpoint.pt") < 1 or not (bundle / "pid1").is_file():
            assert job.poll() is None, (tmp_path / "job.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 5 minutes"
            time.sleep(0.2)
        os.kill(int((bundle / "pid1").read_text()), signal.SIGKILL)
        killed = time.monotonic()
        returncode = job.wait(timeout=120)
        ended_after = time.monotonic() - killed
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    out = (tmp_path / "job.log").read_text()
    assert returncode != 0 and ended_after < 120, (returncode, ended_after)
    assert re.search(r"rank\s*:\s*1 ", out) and "exitcode" in out and "-9" in out, out[-3000:]

    saved = completed_epochs(models / "checkpoint.pt")
    restart = run_command(torchrun("--max_epochs", str(saved + 1), "--resume", "true"), tmp_path, timeout=600, env=env)
    assert "Restored all variables from" in restart
    assert completed_epochs(models / "checkpoint.pt") == saved + 1
