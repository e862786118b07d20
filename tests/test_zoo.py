"""Model-zoo distribution: package each bundle, check it as the zoo's CI does, serve it over HTTP, download it with
MONAI's and with the hash-checking downloader, and run it where `smart_nets` exists only inside the bundle."""

from __future__ import annotations

import functools
import http.server
import json
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest
import torch

from smart_nets import provenance
from smart_nets.io import sha256_file as sha256sum
from smart_nets.zoo import ZooCheckError, check_bundle, package_bundle, safe_extract
from tests.helpers import REPO, SCHEMA, copy_bundle, demo_network, make_phantoms

BUNDLES = ("smart_pretrain", "smart_seg", "smart_response")


def _tiny_weights(bundle: str, models: Path) -> None:
    net = demo_network(bundle)
    models.mkdir(parents=True, exist_ok=True)
    state = (net.encoder if bundle == "smart_pretrain" else net).state_dict()
    if bundle == "smart_seg":  # as a training run on phantoms records it; the others carry no record
        provenance.attach(state, {"bundle": "SMART lung tumour segmentation", "num_cases": 6, "synthetic": True})
    torch.save(state, models / "model.pt")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """Every bundle packaged with tiny demo weights into dist/, served on 127.0.0.1."""
    root = tmp_path_factory.mktemp("zoo")
    dist = root / "dist"
    handler = functools.partial(QuietHandler, directory=str(dist))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    for bundle in BUNDLES:
        _tiny_weights(bundle, root / "weights" / bundle)
        package_bundle(
            REPO / "bundles" / bundle, dist, base_url=url, models_dir=root / "weights" / bundle, schema=str(SCHEMA)
        )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    data = root / "data"
    make_phantoms(data, 2)
    yield {"root": root, "dist": dist, "url": url, "data": data}
    server.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def isolated_python(tmp_path_factory) -> str:
    """A Python with this environment's packages except `smart_nets` (no editable finder, no repository path)."""
    root = tmp_path_factory.mktemp("isolated")
    site = Path(next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()))
    farm = root / "site"
    farm.mkdir()
    for entry in site.iterdir():
        if not entry.name.startswith(("smart_nets", "smart-nets", "__editable__")) and entry.suffix != ".pth":
            (farm / entry.name).symlink_to(entry)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    own_site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(own_site, "farm.pth").write_text(str(farm) + "\n")
    return str(python)


def _env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def _run(python: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([python, *args], cwd=cwd, env=_env(), capture_output=True, text=True)


def _ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, f"{proc.args} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def test_packaged_zips_pass_the_zoo_checks_and_carry_their_code(zoo):
    index = json.loads((zoo["dist"] / "index.json").read_text())
    assert set(index["bundles"]) == set(BUNDLES)
    for bundle in BUNDLES:
        version = json.loads((REPO / "bundles" / bundle / "configs" / "metadata.json").read_text())["version"]
        archive = zoo["dist"] / f"{bundle}_v{version}.zip"
        check_bundle(archive, schema=str(SCHEMA))
        entry = index["bundles"][bundle]["versions"][version]
        assert entry["sha256"] == sha256sum(archive) and entry["url"] == f"{zoo['url']}/{archive.name}"
        with zipfile.ZipFile(archive) as z:
            names = set(z.namelist())
            meta = json.loads(z.read(f"{bundle}/configs/metadata.json"))
            large = z.read(f"{bundle}/large_files.yml").decode()
        assert {f"{bundle}/scripts/__init__.py", f"{bundle}/scripts/smart_nets/__init__.py"} <= names
        assert f"{bundle}/scripts/smart_nets/networks/nets/smart_swin.py" in names
        assert not [n for n in names if n.endswith((".pt", ".onnx", ".pyc"))]
        assert "smart-nets" not in meta["required_packages_version"]
        # the model card: what the released weights were trained on
        if bundle == "smart_seg":
            assert (
                meta["trained_on"].startswith(provenance.SYNTHETIC_WARNING) and meta["weights_provenance"]["synthetic"]
            )
        else:
            assert meta["trained_on"].startswith("unknown") and meta["weights_provenance"] == {}
        weights = zoo["dist"] / f"{bundle}_v{version}_model.pt"
        assert f"{zoo['url']}/{weights.name}" in large and sha256sum(weights) in large


def test_a_downloaded_bundle_runs_where_smart_nets_is_not_installed(zoo, isolated_python, tmp_path):
    assert "ModuleNotFoundError" in _run(isolated_python, ["-c", "import smart_nets"], tmp_path).stderr
    for bundle in ("smart_seg", "smart_response"):
        version = json.loads((REPO / "bundles" / bundle / "configs" / "metadata.json").read_text())["version"]
        url = f"{zoo['url']}/{bundle}_v{version}.zip"
        _ok(
            _run(
                isolated_python,
                ["-m", "monai.bundle", "download", "--name", bundle, "--url", url, "--bundle_dir", "b"],
                tmp_path,
            )
        )
        home = tmp_path / "b" / bundle
        packaged = json.loads((home / "configs" / "inference.json").read_text())
        assert packaged["imports"][0] == "$import scripts", packaged["imports"]  # packaging adds it; source lacks it
        assert (
            "$import scripts"
            not in json.loads((REPO / "bundles" / bundle / "configs" / "inference.json").read_text())["imports"]
        )
        _ok(_run(isolated_python, ["-m", "monai.bundle", "download_large_files", "--bundle_path", "."], home))
        images = sorted(str(p) for p in (zoo["data"] / "imagesTr").glob("*.nii.gz"))
        log = _ok(
            _run(
                isolated_python,
                ["-m", "monai.bundle", "run", "--config_file", "['configs/inference.json','configs/demo.json']"]
                + ["--datalist", json.dumps(images).replace('"', "'"), "--output_dir", str(tmp_path / bundle)],
                home,
            )
        )
        assert str(home / "scripts" / "smart_nets") in _ok(
            _run(isolated_python, ["-c", "import scripts, smart_nets; print(smart_nets.__file__)"], home)
        )
        outputs = sorted(p.name for p in (tmp_path / bundle).iterdir())
        expected = ["predictions.csv"] if bundle == "smart_response" else [f"phantom_00{i}_seg.nii.gz" for i in (0, 1)]
        assert all(e in outputs for e in expected), (outputs, log[-2000:])


def test_the_hash_checking_download_refuses_tampered_and_corrupted_zips(zoo, tmp_path):
    zoo_cli = [sys.executable, "-m", "smart_nets.zoo", "download", "--name", "smart_seg", "--bundle_dir"]
    index_url = f"{zoo['url']}/index.json"
    _ok(subprocess.run(zoo_cli + [str(tmp_path / "good"), "--index", index_url], capture_output=True, text=True))
    assert (tmp_path / "good" / "smart_seg" / "models" / "model.pt").is_file()

    index = json.loads((zoo["dist"] / "index.json").read_text())
    entry = index["bundles"]["smart_seg"]["versions"][index["bundles"]["smart_seg"]["latest"]]
    tampered = json.loads(json.dumps(index))
    tampered["bundles"]["smart_seg"]["versions"] = {"0.2.0": dict(entry, sha256="0" * 64)}
    tampered["bundles"]["smart_seg"]["latest"] = "0.2.0"
    (zoo["dist"] / "tampered.json").write_text(json.dumps(tampered))
    proc = subprocess.run(
        zoo_cli + [str(tmp_path / "bad"), "--index", f"{zoo['url']}/tampered.json"], capture_output=True, text=True
    )
    assert proc.returncode == 1 and "does not match the index's 000000" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "bad" / "smart_seg").exists() and not list((tmp_path / "bad").glob(".tmp-*"))

    source = Path(entry["url"].replace(zoo["url"], str(zoo["dist"])))
    truncated = zoo["dist"] / "smart_seg_v9.9.9.zip"
    truncated.write_bytes(source.read_bytes()[:-2000])
    broken = json.loads(json.dumps(index))
    broken["bundles"]["smart_seg"]["versions"] = {
        "9.9.9": {"url": f"{zoo['url']}/{truncated.name}", "sha256": sha256sum(truncated)}
    }
    broken["bundles"]["smart_seg"]["latest"] = "9.9.9"
    (zoo["dist"] / "broken.json").write_text(json.dumps(broken))
    proc = subprocess.run(
        zoo_cli + [str(tmp_path / "bad"), "--index", f"{zoo['url']}/broken.json"], capture_output=True, text=True
    )
    assert proc.returncode == 1 and "is not a readable zip" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "bad" / "smart_seg").exists()

    verify = [sys.executable, "-m", "smart_nets.zoo", "verify", str(source), "--index", index_url]
    assert "verified" in _ok(subprocess.run(verify, capture_output=True, text=True))


def test_check_names_every_broken_zoo_rule(tmp_path):
    bundle = copy_bundle("smart_seg", tmp_path / "smart_seg")
    check_bundle(bundle, schema=str(SCHEMA))
    (bundle / "LICENSE").unlink()
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    meta["version"] = "9.0.0"
    del meta["monai_version"]
    (bundle / "configs" / "metadata.json").write_text(json.dumps(meta))
    (bundle / "large_files.yml").write_text("large_files:\n- path: models/model.pt\n  url: http://x/model.pt\n")
    (bundle / "docs" / "big.bin").write_bytes(b"0" * 60_000)
    with pytest.raises(ZooCheckError) as info:
        check_bundle(bundle, schema=str(SCHEMA), max_file_bytes=50_000)
    text = str(info.value)
    for problem in (
        "required file LICENSE is missing",
        "version 9.0.0 is not in the changelog",
        "metadata schema: (top): 'monai_version' is a required property",
        "lacks ['hash_val', 'hash_type']",
        "docs/big.bin is 58.6 KB, over the 48.8 KB limit",
    ):
        assert problem in text, (problem, text)


def test_safe_extract_refuses_members_outside_the_target(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("smart_seg/ok.txt", "fine")
        z.writestr("../outside.txt", "escape")
    with zipfile.ZipFile(evil) as z, pytest.raises(ValueError, match="outside"):
        safe_extract(z, tmp_path / "target")
    assert not (tmp_path / "outside.txt").exists()


MONAI_LABEL_SCRIPT = """
import json, sys, types
try:
    import torchvision.utils  # noqa: F401
except Exception:  # no CPU torchvision for this torch: MONAI Label imports it only for 2D debug dumps
    tv, tvu = types.ModuleType("torchvision"), types.ModuleType("torchvision.utils")
    tvu.make_grid = tvu.save_image = None
    tv.utils = tvu
    sys.modules["torchvision"], sys.modules["torchvision.utils"] = tv, tvu
import nibabel as nib
import numpy as np
from monailabel.tasks.infer.bundle import BundleInferTask

task = BundleInferTask(sys.argv[1], {})
mask, result = task({"image": sys.argv[2], "device": "cpu", "result_dtype": "uint8"})
out, ref = nib.load(mask), nib.load(sys.argv[2])
print(json.dumps({"shape": out.shape, "input_shape": ref.shape, "labels": result["label_names"],
                  "values": np.unique(np.asanyarray(out.dataobj)).tolist(),
                  "affine_equal": bool(np.allclose(out.affine, ref.affine, atol=1e-4))}))
"""


@pytest.fixture(scope="module")
def monailabel_site() -> Path:
    """MONAI Label 0.8.5 without its heavy dependencies, in ./.monailabel (installed once, reused)."""
    site = REPO / ".monailabel"
    if not (site / "monailabel" / "tasks" / "infer" / "bundle.py").is_file():
        requirements = REPO / "tests" / "fixtures" / "requirements-monailabel.txt"
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(site),
            "-r",
            str(requirements),
        ]
        _ok(subprocess.run(cmd, capture_output=True, text=True))
    return site


def test_monai_label_bundle_infer_task_segments_a_phantom_with_the_downloaded_bundle(
    zoo, isolated_python, monailabel_site, tmp_path
):
    """MONAI Label's own `BundleInferTask` on the zip a user downloads (demo weights baked in with
    `inference_overrides`), in a Python where `smart_nets` comes only from the bundle."""
    dist = tmp_path / "dist"
    package_bundle(
        REPO / "bundles" / "smart_seg",
        dist,
        models_dir=zoo["root"] / "weights" / "smart_seg",
        inference_overrides=["configs/demo.json"],
    )
    home = tmp_path / "b"
    _ok(
        subprocess.run(
            [
                sys.executable,
                "-m",
                "smart_nets.zoo",
                "download",
                "--name",
                "smart_seg",
                "--index",
                str(dist / "index.json"),
                "--bundle_dir",
                str(home),
            ],
            capture_output=True,
            text=True,
        )
    )
    image = sorted((zoo["data"] / "imagesTr").glob("*.nii.gz"))[0]
    (tmp_path / "infer.py").write_text(MONAI_LABEL_SCRIPT)
    env = dict(_env(), PYTHONPATH=str(monailabel_site))
    proc = subprocess.run(
        [isolated_python, str(tmp_path / "infer.py"), str(home / "smart_seg"), str(image)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    _ok(proc)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["shape"] == result["input_shape"] and result["affine_equal"], result
    assert set(result["values"]) <= {0, 1} and result["labels"] == {"tumour": 1}, result


@pytest.mark.parametrize("bundle", BUNDLES)
def test_changelog_entries_are_one_line_each_as_in_the_model_zoo(bundle):
    """The zoo's changelogs say each version in a line; the full notes live in the bundle's docs/changelog.md."""
    meta = json.loads((REPO / "bundles" / bundle / "configs" / "metadata.json").read_text())
    long = {v: len(text) for v, text in meta["changelog"].items() if len(text) > 200 or "\n" in text}
    assert not long, f"{bundle}: changelog entries over 200 characters: {long}"
    assert meta["version"] in meta["changelog"]
    assert f"## {meta['version']}" in (REPO / "bundles" / bundle / "docs" / "changelog.md").read_text()
