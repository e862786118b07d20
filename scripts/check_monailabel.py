"""Serve this project's packaged bundles with a real MONAI Label server and use it as 3D Slicer does.

Run by ``scripts/check_monailabel.sh`` with the Python of ``.venv-monailabel`` (MONAI Label 0.8.5 over the project's
environment). In ``--work_dir`` (recreated) it:

1. generates phantoms (``smart_nets.data.phantoms``, the tests' small grid) and writes demo-size random weights for
   ``smart_seg`` and ``smart_response``;
2. packages both with ``python -m smart_nets.zoo package ... --inference_overrides configs/demo.json`` (MONAI Label
   reads ``configs/inference.json`` alone) and unpacks them with ``python -m smart_nets.zoo download`` into
   ``app/model/``, beside ``app/main.py`` (``scripts/monailabel_app/main.py``); ``smart_seg``'s ``train.json`` gets
   the demo sizes too (``BundleTrainTask`` reads ``configs/train.json`` alone) plus a one-epoch schedule that
   validates after the epoch only, so that the run writes a trained ``models/model.pt``;
3. makes a studies folder: the phantom images, with the tumour masks of all but the last one as final labels in
   ``labels/final/`` (MONAI Label's local datastore);
4. starts ``monailabel start_server`` (``python -m monailabel.main start_server``, what the ``monailabel`` command
   runs) on 127.0.0.1 in its own process group, waits for ``/info/``, and with MONAI Label's own client (the one
   its 3D Slicer plugin carries): reads ``/info/``, asks ``/activelearning/first`` for the unlabelled image, runs
   ``/infer/smart_seg`` (the mask must have the image's shape and affine, values 0/1), ``/infer/smart_response``
   (class probabilities), ``/train/smart_seg`` (one epoch; it must finish and write a new ``models/model.pt``)
   and ``/infer/smart_seg`` again (the server must reload the new model);
5. stops the server (its process group: SIGTERM, then SIGKILL) however the check ends.

A failed request prints its status code and body; a server that does not come up prints its log's last lines.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUNDLES = ("smart_seg", "smart_response")
PHANTOM_GRID = dict(shape=(64, 64, 32), spacing=(5.0, 5.0, 10.0))  # the tests' grid (tests/helpers.py)
MARKER = ".monailabel-check"  # marks a work folder this script made, the only kind it deletes
# merged into the served smart_seg's configs/train.json after configs/demo.json: no pretraining file, one epoch
# without warm-up, validation (and so the best-model save of models/model.pt) after that epoch and not before it
TRAIN_OVERRIDES = {
    "pretrained_path": "",
    "max_epochs": 1,
    "warmup_epochs": 0,
    "val_interval": 1,
    "train#handlers#0#exec_at_start": False,
}


class CheckFailed(Exception):
    pass


def say(message: str) -> None:
    print(f"[monailabel] {message}", flush=True)


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError as e:
        return f"(cannot read {path}: {e})"
    return "\n".join(f"[monailabel]   | {line}" for line in text)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(args: list[str], what: str) -> str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    try:
        proc = subprocess.run([str(a) for a in args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise CheckFailed(f"{what} did not finish within 600 s: {' '.join(map(str, args))}") from None
    if proc.returncode != 0:
        raise CheckFailed(f"{what} failed ({proc.returncode}): {' '.join(map(str, args))}\n{proc.stderr[-3000:]}")
    return proc.stdout


# --- 1-3: phantoms, packaged bundles, the app and its studies ---------------------------------------------------


def fresh_work_dir(work: Path) -> None:
    if work.exists():
        if not (work / MARKER).is_file():
            raise CheckFailed(f"{work} exists and was not made by this check ({MARKER} missing): choose another")
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / MARKER).write_text("made by scripts/check_monailabel.py; deleted by its next run\n")


def demo_weights(bundle: str, out: Path, datalist: Path | None = None) -> None:
    """Random (seeded) weights of the bundle's network at the demo sizes, as the tests make them; with ``datalist``,
    recorded as trained on it (``smart_nets.provenance``), as a training run would."""
    import torch
    from monai.bundle import ConfigParser

    from smart_nets import provenance

    configs = REPO / "bundles" / bundle / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / "inference.json"), str(configs / "demo.json")])
    torch.manual_seed(0)
    out.mkdir(parents=True, exist_ok=True)
    state = parser.get_parsed_content("network_def").state_dict()
    if datalist is not None:
        provenance.attach(state, provenance.training_record(datalist, REPO / "bundles" / bundle))
    torch.save(state, out / "model.pt")


def bake_train_overrides(bundle: Path) -> None:
    from monai.bundle import ConfigParser

    train = bundle / "configs" / "train.json"
    parser = ConfigParser()
    parser.read_config([str(train), str(bundle / "configs" / "demo.json")])
    if parser["train#handlers#0#_target_"] != "ValidationHandler":
        raise CheckFailed(f"{train}: train#handlers#0 is not the ValidationHandler; update TRAIN_OVERRIDES")
    for key, value in TRAIN_OVERRIDES.items():
        parser[key] = value
    train.write_text(json.dumps(parser.get(), indent=4) + "\n")


def prepare(work: Path, num_phantoms: int) -> tuple[Path, Path, list[str]]:
    """The app folder, the studies folder and the image ids (the last one unlabelled)."""
    from smart_nets.data import generate_phantoms

    generate_phantoms(str(work / "phantoms"), num=num_phantoms, seed=0, **PHANTOM_GRID)
    app, dist = work / "app", work / "dist"
    (app / "model").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "monailabel_app" / "main.py", app / "main.py")
    for bundle in BUNDLES:
        # smart_seg's weights say they were trained on the phantoms, smart_response's carry no record
        demo_weights(
            bundle, work / "weights" / bundle, work / "phantoms" / "dataset.json" if bundle == "smart_seg" else None
        )
        zip_path = run(
            [sys.executable, "-m", "smart_nets.zoo", "package", REPO / "bundles" / bundle, "--out", dist]
            + ["--models_dir", work / "weights" / bundle, "--inference_overrides", "configs/demo.json"],
            f"packaging {bundle}",
        ).strip()
        run(
            [sys.executable, "-m", "smart_nets.zoo", "download", "--name", bundle, "--index", dist / "index.json"]
            + ["--bundle_dir", app / "model"],
            f"unpacking {bundle}",
        )
        say(f"  {bundle}: {Path(zip_path).name} unpacked to {app / 'model' / bundle}")
    bake_train_overrides(app / "model" / "smart_seg")
    # what a finished MONAI Label training leaves beside model.pt: the app must not offer it as weights
    shutil.copy(
        app / "model" / "smart_seg" / "models" / "model.pt", app / "model" / "smart_seg" / "models" / "checkpoint.pt"
    )

    studies = work / "studies"
    (studies / "labels" / "final").mkdir(parents=True)
    images = sorted((work / "phantoms" / "imagesTr").glob("*.nii.gz"))
    for i, image in enumerate(images):
        shutil.copy(image, studies / image.name)
        if i < len(images) - 1:
            shutil.copy(work / "phantoms" / "labelsTr" / image.name, studies / "labels" / "final" / image.name)
    return app, studies, [image.name[: -len(".nii.gz")] for image in images]


# --- 4-5: the server -------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``monailabel start_server`` in its own process group, its output in ``log``."""

    def __init__(self, app: Path, studies: Path, port: int, log: Path, pid_file: Path):
        self.url, self.log, self.pid_file = f"http://127.0.0.1:{port}", log, pid_file
        cmd = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(app), "--studies", str(studies)]
        cmd += ["--conf", "models", ",".join(BUNDLES), "--host", "127.0.0.1", "--port", str(port)]
        say("$ monailabel " + " ".join(cmd[3:]))
        self._log_file = open(log, "w")
        # without PYTHONPATH: the bundles must run on the smart_nets they carry, not on this repository's
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        self.proc = subprocess.Popen(
            cmd, cwd=app.parent, env=env, stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        pid_file.write_text(str(self.proc.pid))

    def wait_ready(self, timeout: float) -> float:
        start = time.time()
        while time.time() - start < timeout:
            if self.proc.poll() is not None:
                raise CheckFailed(
                    f"the server exited ({self.proc.returncode}) before answering; last lines of {self.log}:\n"
                    + tail(self.log)
                )
            try:
                with urllib.request.urlopen(self.url + "/info/", timeout=5) as response:
                    if response.status == 200:
                        return time.time() - start
            except (urllib.error.URLError, ConnectionError, socket.timeout):
                pass
            time.sleep(1)
        raise CheckFailed(
            f"the server did not answer /info/ within {timeout:.0f} s; last lines of {self.log}:\n" + tail(self.log)
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            say(f"stopping the server (process group {self.proc.pid})")
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=15)
        try:  # children left behind (a training subprocess) share the group
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._log_file.close()
        self.pid_file.unlink(missing_ok=True)


def request(what: str, call, *args):
    """A MONAI Label client call; a failure names the request, its status code and the response body."""
    from monailabel.client.client import MONAILabelClientException

    try:
        return call(*args)
    except MONAILabelClientException as e:
        raise CheckFailed(f"{what} failed: {e.msg}") from None
    except (OSError, socket.timeout) as e:
        raise CheckFailed(f"{what} failed: {type(e).__name__}: {e}") from None


def check_mask(mask_file: str | None, image: Path, params: dict) -> str:
    import nibabel as nib
    import numpy as np

    if not mask_file:
        raise CheckFailed(f"/infer/smart_seg returned no mask (params: {json.dumps(params)[:500]})")
    mask, ref = nib.load(mask_file), nib.load(image)
    values = np.unique(np.asanyarray(mask.dataobj))
    problems = []
    if mask.shape != ref.shape:
        problems.append(f"shape {mask.shape} != the image's {ref.shape}")
    if not np.allclose(mask.affine, ref.affine, atol=1e-3):
        problems.append(f"affine\n{mask.affine}\n!= the image's\n{ref.affine}")
    if not set(values.tolist()) <= {0, 1}:
        problems.append(f"values {values.tolist()} outside {{0, 1}}")
    if params.get("label_names") != {"tumour": 1}:
        problems.append(f"label_names {params.get('label_names')} != {{'tumour': 1}}")
    if problems:
        raise CheckFailed(f"/infer/smart_seg mask {mask_file}: " + "; ".join(problems))
    voxels = int((np.asanyarray(mask.dataobj) == 1).sum())
    return f"mask {mask.shape}, affine equal to the image's, values {values.tolist()}, {voxels} tumour voxels"


def check_server(server: Server, studies: Path, ids: list[str], args) -> None:
    from monailabel.client import MONAILabelClient

    client = MONAILabelClient(server.url, tmpdir=str(server.log.parent / "client"))
    socket.setdefaulttimeout(args.request_timeout)  # the client's http.client connections have none of their own

    info = request("GET /info/", client.info)
    models, trainers = info.get("models", {}), info.get("trainers", {})
    types = {name: models[name].get("type") for name in models}
    say(f"GET /info/: models {types}, trainers {sorted(trainers)}, labels {info.get('labels')}")
    if types != {"smart_seg": "segmentation", "smart_response": "classification"} or sorted(trainers) != ["smart_seg"]:
        raise CheckFailed(f"/info/ should list smart_seg (segmentation, with a trainer) and smart_response: {types}")
    offered = {name: models[name].get("config", {}).get("model_filename") for name in models}
    say(f"GET /info/: weights offered {offered}")
    if any(files != ["model.pt"] for files in offered.values()):
        raise CheckFailed(f"/info/ should offer only model.pt as weights (checkpoint.pt sits beside it): {offered}")

    trained_on = {name: models[name].get("trained_on", "") for name in models}
    say(f"GET /info/: trained on {trained_on}")
    if not trained_on["smart_seg"].startswith("TRAINED ON SYNTHETIC DATA") or "SYNTHETIC" not in models[
        "smart_seg"
    ].get("description", ""):
        raise CheckFailed(f"/info/ should say that smart_seg's weights were trained on synthetic phantoms: {models}")
    if not trained_on["smart_response"].startswith("unknown"):
        raise CheckFailed(f"/info/ should say that smart_response's weights carry no record: {trained_on}")

    sample = request("POST /activelearning/first", client.next_sample, "first", {})
    say(f"POST /activelearning/first: {sample.get('id')} (the unlabelled image)")
    if sample.get("id") != ids[-1]:
        raise CheckFailed(f"/activelearning/first returned {sample.get('id')!r}, expected {ids[-1]!r}")
    image_id, image = ids[-1], studies / f"{ids[-1]}.nii.gz"

    start = time.time()
    mask, params = request(f"POST /infer/smart_seg?image={image_id}", client.infer, "smart_seg", image_id, {})
    say(f"POST /infer/smart_seg?image={image_id} ({time.time() - start:.1f} s): {check_mask(mask, image, params)}")

    start = time.time()
    _, params = request(f"POST /infer/smart_response?image={image_id}", client.infer, "smart_response", image_id, {})
    params = json.loads(params) if isinstance(params, (bytes, str)) else params  # the client leaves JSON undecoded
    prediction = params.get("prediction") if isinstance(params, dict) else None
    if not prediction or len(prediction) != 2 or abs(sum(p["score"] for p in prediction) - 1) > 1e-4:
        raise CheckFailed(f"/infer/smart_response should give 2 class probabilities: {json.dumps(params)[:1000]}")
    scores = ", ".join(f"{p['label']}: {p['score']:.3f}" for p in prediction)
    say(f"POST /infer/smart_response?image={image_id} ({time.time() - start:.1f} s): {scores}")

    model = studies.parent / "app" / "model" / "smart_seg" / "models" / "model.pt"
    before = (model.stat().st_mtime, sha256(model))
    start = time.time()
    train_params = {"max_epochs": 1, "val_split": 0.25, "multi_gpu": False}
    say(f"POST /train/smart_seg {json.dumps(train_params)}")
    task = request("POST /train/smart_seg", client.train_start, "smart_seg", dict(train_params))
    say(f"  task {task.get('id')}: {task.get('status')}")
    while True:
        status = request("GET /train/", client.train_status)
        if status.get("status") not in ("SUBMITTED", "RUNNING"):
            break
        if time.time() - start > args.train_timeout:
            request("DELETE /train/", client.train_stop)
            raise CheckFailed(
                f"training did not finish within {args.train_timeout} s; last lines:\n" + tail(server.log)
            )
        time.sleep(2)
    details = "\n".join(f"[monailabel]   | {line}" for line in status.get("details", []))
    if status.get("status") != "DONE":
        raise CheckFailed(f"/train/smart_seg ended {status.get('status')}; its last output:\n{details}")
    after = (model.stat().st_mtime, sha256(model))
    if not (after[0] > before[0] and after[1] != before[1]):
        raise CheckFailed(f"/train/smart_seg finished but did not write a new {model}; its last output:\n{details}")
    say(f"/train/smart_seg: DONE in {time.time() - start:.1f} s, wrote a new models/model.pt (sha256 {after[1][:12]})")

    reloads = server.log.read_text(errors="replace").count("Reload model from cache")
    start = time.time()
    mask, params = request(f"POST /infer/smart_seg?image={image_id}", client.infer, "smart_seg", image_id, {})
    summary = check_mask(mask, image, params)
    if server.log.read_text(errors="replace").count("Reload model from cache") <= reloads:
        raise CheckFailed("the /infer after training did not reload models/model.pt (no 'Reload model' in the log)")
    seconds = time.time() - start
    say(f"POST /infer/smart_seg?image={image_id} after training ({seconds:.1f} s, the new model reloaded): {summary}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work_dir", default="outputs/monailabel_check", type=Path)
    parser.add_argument("--port", type=int, default=0, help="0: a free one")
    parser.add_argument("--num_phantoms", type=int, default=4)
    parser.add_argument("--startup_timeout", type=float, default=300)
    parser.add_argument("--request_timeout", type=float, default=300)
    parser.add_argument("--train_timeout", type=float, default=600)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` stops the server
    work = args.work_dir.resolve()
    server = None
    begin = time.time()
    try:
        fresh_work_dir(work)
        say(f"preparing {work}: {args.num_phantoms} phantoms, demo-size bundles, the app, the studies")
        app, studies, ids = prepare(work, args.num_phantoms)
        say(f"prepared in {time.time() - begin:.0f} s")
        server = Server(app, studies, args.port or free_port(), work / "server.log", work / "server.pid")
        say(f"server up in {server.wait_ready(args.startup_timeout):.0f} s at {server.url} (log: {server.log})")
        check_server(server, studies, ids, args)
    except CheckFailed as e:
        print(f"[monailabel] FAILED: {e}", file=sys.stderr, flush=True)
        if server is not None and server.log.name not in str(e):  # a request failed: the server says why
            print(f"[monailabel] last lines of {server.log}:\n{tail(server.log)}", file=sys.stderr, flush=True)
        return 1
    finally:
        if server is not None:
            server.stop()
    say(f"PASSED in {time.time() - begin:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
