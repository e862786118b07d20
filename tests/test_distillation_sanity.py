"""benchmarks/distillation_sanity.py: the toy's classes, the k-NN probe, and --quick filling every cell."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from benchmarks import distillation_sanity, loss_gradients


@pytest.fixture(scope="module")
def bench():
    return distillation_sanity


def test_toy_shapes_differ_by_class_and_sit_in_the_window(bench):
    rng = np.random.default_rng(0)
    volumes = [bench.toy_volume(label, rng)[0] for label in range(len(bench.CLASSES))]
    for v in volumes:
        assert v.shape == (bench.SIZE,) * 3 and v.dtype == np.float32
        assert -1000 < np.median(v) < -600  # background
        assert (v > -400).mean() > 0.01  # an object in view
    centre = bench.SIZE // 2
    ball, shell = volumes[0], volumes[1]
    # a solid ball is bright at its centre, a hollow shell dark there
    assert ball[centre - 1 : centre + 1, centre - 1 : centre + 1, centre - 1 : centre + 1].mean() > -400
    assert shell[centre - 1 : centre + 1, centre - 1 : centre + 1, centre - 1 : centre + 1].mean() < -500


def test_the_rod_is_elongated_and_the_ball_is_not(bench):
    """The rod's bright voxels spread along one axis (second moments > 2x apart), the ball's equally (within 20%)."""

    def moments(label: int) -> np.ndarray:
        volume, nuisance = bench.toy_volume(label, np.random.default_rng(2))
        points = np.argwhere(volume > (nuisance["object_hu"] + nuisance["background_hu"]) / 2).astype(float)
        return np.linalg.eigvalsh(np.cov(points.T))

    rod, ball = moments(bench.CLASSES.index("rod")), moments(bench.CLASSES.index("ball"))
    assert rod[-1] / rod[0] > 2 and ball[-1] / ball[0] < 1.2, (rod, ball)


def test_toy_classes_hold_the_same_volume(bench):
    """The amount of object says nothing of the class: the four shapes' volumes agree within 2% at the same radius."""
    counts = []
    for label in range(len(bench.CLASSES)):
        volume, nuisance = bench.toy_volume(label, np.random.default_rng(1))  # same radius and intensities
        fraction = (volume - nuisance["background_hu"]) / (nuisance["object_hu"] - nuisance["background_hu"])
        counts.append(int((fraction > 0.5).sum()))
    assert max(counts) / min(counts) < 1.02, counts


def test_view_agreement_finds_a_volumes_own_view_and_not_a_strangers(bench, tiny_swin):
    """Identical views: every view retrieves its own twin and agreement is high; views of other volumes (a derangement
    of the same batch): no view retrieves its own, and the agreement is about 0 or below."""
    import torch

    torch.manual_seed(0)
    x = torch.rand(8, 1, 32, 32, 32)
    same = bench.view_agreement(tiny_swin, (x, x))
    others = bench.view_agreement(tiny_swin, (x, x.roll(1, 0)))
    for name in ("cls", "pooled"):
        assert same[f"retrieval_{name}"] == 1.0 and same[f"agreement_{name}"] > 0.5, same
        assert others[f"retrieval_{name}"] == 0.0 and others[f"agreement_{name}"] < 0.3, others


def test_cls_anatomy_splits_the_cls_into_a_shared_and_a_varying_part(bench, tiny_swin):
    """At CaiT's init (zero token, LayerScale 1e-4) the [CLS] is tiny and varies between volumes; a large learnt
    token is all shared; the parts sum to the [CLS] the encoder computes."""
    import copy

    import torch

    torch.manual_seed(0)
    x = torch.rand(6, 1, 32, 32, 32)
    init = bench.cls_anatomy(tiny_swin, x)
    blocks = len(tiny_swin.class_attn_blocks)
    assert set(init) == {
        f"{n}_{k}"
        for n in ["token", "cls"] + [f"block{i}_{b}" for i in range(blocks) for b in ("attn", "mlp")]
        for k in ("constant", "varying")
    }
    assert init["token_constant"] == init["token_varying"] == 0.0
    assert 0 < init["cls_varying"] and init["cls_constant"] < 1e-2
    shifted = copy.deepcopy(tiny_swin)
    with torch.no_grad():
        shifted.cls_token.fill_(1.0)
    moved = bench.cls_anatomy(shifted, x)
    width = tiny_swin.cls_token.shape[-1]
    assert moved["token_constant"] == pytest.approx(width**0.5) and moved["token_varying"] == 0.0
    assert moved["cls_constant"] > 100 * moved["cls_varying"]
    assert bench.cls_anatomy(torch.nn.Conv3d(1, 1, 1), x) == {}


def test_knn_accuracy_counts_majority_votes(bench):
    bank = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    labels = np.array([0, 0, 1, 1])
    assert bench.knn_accuracy(bank, labels, np.array([[1.0, 0.05], [0.05, 1.0]]), np.array([0, 1]), 1) == 1.0
    assert bench.knn_accuracy(bank, labels, np.array([[1.0, 0.05], [0.05, 1.0]]), np.array([1, 0]), 1) == 0.0


def test_quick_run_fills_every_cell(bench, tmp_path):
    results = tmp_path / "ds.json"
    args = ["--quick", "--work", str(tmp_path / "work"), "--results", str(results), "--variants", "dino", "smart_sk"]
    data = bench.main(args)
    assert set(data["variants"]) == {"dino", "smart_sk"}
    for name, run in data["variants"].items():
        assert run["iterations"] > 0 and run["monitor"], name
        for encoder in ("teacher", "student"):
            for kind in bench.FEATURES:
                assert 0.0 <= run[encoder][f"knn_{kind}"] <= 1.0 and math.isfinite(run[encoder][f"spread_{kind}"])
    # plain DINO really is DINO alone: no reconstruction, no patch loss, no student masking
    assert data["variants"]["dino"]["losses"]["loss_rec"] == 0.0
    assert data["variants"]["dino"]["losses"]["loss"] == pytest.approx(data["variants"]["dino"]["losses"]["loss_cls"])
    assert data["variants"]["smart_sk"]["overrides"] == {"loss_def#centering": "sinkhorn"}
    assert 0.0 <= data["supervised"]["knn_pooled"] <= 1.0 and 0.0 <= data["random_init"]["knn_cls"] <= 1.0
    for labelled in ("supervised", "cnn"):  # the labelled references' heads: accuracy and a full confusion matrix
        confusion = np.array(data[labelled]["confusion"])
        assert confusion.shape == (4, 4) and confusion.sum() == data["settings"]["heldout"], labelled
        assert data[labelled]["heldout_accuracy"] == pytest.approx(np.trace(confusion) / confusion.sum())
    table = results.with_suffix(".md").read_text()
    assert "| `dino` teacher |" in table and "supervised (ceiling)" in table and "## Goal" in table
    assert "a small 3D CNN" in table
    assert "## Where the [CLS] comes from" in table and "| `dino` teacher | " in table.split("comes from")[1]
    assert 0.0 <= data["random_init"]["retrieval_pooled"] <= 1.0 and math.isfinite(data["random_init"]["agreement_cls"])
    assert json.loads(results.read_text())["settings"]["iterations"] == data["settings"]["iterations"]
    # one table over seeds: a row per encoder, the gain over random init computed from the file
    bench.main(["--summarize", str(results), str(results), "--results", str(tmp_path / "seeds.json")])
    seeds = (tmp_path / "seeds.md").read_text()
    best = max(data["variants"]["dino"]["teacher"][f"knn_{f}"] for f in ("cls", "pooled"))
    gain = best - max(data["random_init"][f"knn_{f}"] for f in ("cls", "pooled"))
    assert f"| dino | {best:.3f} | {best:.3f} | {best:.3f} | {gain:+.3f} ({gain:+.3f} to {gain:+.3f}) |" in seeds
    with pytest.raises(SystemExit, match="no such results file"):
        bench.main(["--summarize", str(tmp_path / "missing.json"), "--results", str(tmp_path / "x.json")])


def test_cnn_backbone_has_the_pretraining_nets_outputs_and_refuses_masks(bench):
    """The CNN backbone answers as SMARTPretrainNet does (so that the bundle's trainer runs it), [CLS] = pooled, the
    patch grid 16x smaller than the input; a token mask (SMART's masking) is refused by name."""
    import torch

    torch.manual_seed(0)
    net = bench.cnn_pretrain_net(out_dim=16, head_hidden_dim=8, head_bottleneck_dim=4, head_use_bn=True)
    x = torch.rand(4, 1, 32, 32, 32)
    out = net(x)
    assert out["global"].shape == (4, 2, 16) and out["patch"].shape == (4, 8, 16) and out["attn_map"].shape == (4, 8)
    assert torch.equal(out["global"][:, 0], out["global"][:, 1]) and torch.equal(out["recon"], torch.zeros_like(x))
    shared = net(x, torch.zeros(4, 2, 2, 2, dtype=torch.bool), reconstruct=False, shared_head=True)
    assert "recon" not in shared and not torch.allclose(shared["patch"], out["patch"])  # the global last layer
    with pytest.raises(ValueError, match="DINO only"):
        net(x, torch.ones(4, 2, 2, 2, dtype=torch.bool))
    features = bench.features(net.encoder, x)
    assert features["cls"].shape == (4, 64) and np.array_equal(features["cls"], features["pooled"])


def test_the_z_scoring_swin_is_blind_to_contrast_and_brightness_and_the_plain_one_is_not(bench, tiny_swin):
    """--backbone swin_znorm: the bundle's encoder class and weights, and the same features for ``0.5 x + 0.2`` as for
    ``x``; the plain encoder's features change."""
    import torch

    from smart_nets.networks.nets import SMARTSwin
    from tests.helpers import TINY

    znorm = bench.znorm_swin(**TINY).eval()
    znorm.load_state_dict(tiny_swin.state_dict())
    assert isinstance(znorm, SMARTSwin)
    assert bench.znorm_swin(preset="demo", drop_path_rate=0.0).arch == znorm.arch  # as the bundle's encoder_def gives
    x = torch.rand(2, 1, 32, 32, 32)
    same = bench.features(znorm, x)["pooled"], bench.features(znorm, 0.5 * x + 0.2)["pooled"]
    plain = bench.features(tiny_swin, x)["pooled"], bench.features(tiny_swin, 0.5 * x + 0.2)["pooled"]
    assert np.abs(same[0] - same[1]).max() < 1e-4 < np.abs(plain[0] - plain[1]).max()


def test_quick_run_with_the_cnn_backbone(bench, tmp_path):
    """--backbone cnn runs the bundle's trainer on the CNN: the bundle's network is replaced, the variant's head
    override still applies, and the settings record the backbone."""
    results = tmp_path / "ds.json"
    args = ["--quick", "--backbone", "cnn", "--no_supervised", "--variants", "dino_bn"]
    data = bench.main(args + ["--work", str(tmp_path / "work"), "--results", str(results)])
    run = data["variants"]["dino_bn"]
    assert data["settings"]["backbone"] == "cnn" and run["iterations"] > 0 and run["monitor"]
    assert run["teacher"]["knn_cls"] == run["teacher"]["knn_pooled"]  # one mean feature: CNN, not the Swin
    assert bench.BACKBONES["cnn"]["network_def"]["head_use_bn"] is False  # the variant's override did not stick
    assert "`--backbone cnn`" in results.with_suffix(".md").read_text()


def test_loss_gradients_names_each_terms_encoder_gradient(tmp_path):
    """benchmarks/loss_gradients.py: a finite, positive gradient norm per weighted term; a bad checkpoint is named."""
    lg = loss_gradients
    result = lg.main(["--quick", "--work", str(tmp_path), "--set", "network_def#head_use_bn=true"])
    assert set(result) == {"cls", "patch", "rec"}
    for term, r in result.items():
        assert math.isfinite(r["grad_norm"]) and r["grad_norm"] > 0, term
    with pytest.raises(SystemExit, match="no such file"):
        lg.main(["--quick", "--work", str(tmp_path), "--checkpoint", str(tmp_path / "missing.pt")])
