"""Tests of the evaluate stage: metric maths, feature spaces, reference cache and the CLI (all offline, CPU)."""

from __future__ import annotations

import importlib
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import ganime_steps
from ganime_steps import evaluate as ev

torch.set_num_threads(1)


# ----------------------------------------------------------------------------------------------------------------------
# fixtures: tiny stand-ins for the classifier checkpoint, Inception weights and packed data


def _classifier_ckpt(path: Path, *, task: str = "chibi", seed: int = 0) -> Path:
    import timm

    torch.manual_seed(seed)
    model = timm.create_model("resnet18", pretrained=False, num_classes=1)
    ckpt = {
        "arch": "resnet18",
        "image_size": 32,
        "state_dict": model.state_dict(),
        "threshold": 0.5,
        "task": task,
        "classes": ["other", task],
    }
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="module")
def clf(tmp_path_factory) -> Path:
    return _classifier_ckpt(tmp_path_factory.mktemp("clf") / "model.pt")


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory) -> Path:
    """Randomly initialised weights in torch-fidelity's file format (a plain state_dict saved with torch.save)."""
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    with pytest.MonkeyPatch.context() as m:
        # Build the network without touching the network: no download, no loading.
        m.setattr(fe, "load_state_dict_from_url", lambda *a, **k: None)
        m.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, *a, **k: None)
        torch.manual_seed(0)
        model = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    path = tmp_path_factory.mktemp("inception") / "weights-inception-random.pth"
    torch.save(model.state_dict(), path)
    return path


def _packed(path: Path, n: int = 24, size: int = 32, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    # Smooth colour blobs rather than pure noise, so resizing behaves like on real images.
    small = rng.integers(0, 256, size=(n, 4, 4, 3), dtype=np.uint8)
    images = np.repeat(np.repeat(small, size // 4, axis=1), size // 4, axis=2)
    np.save(path, images)
    return path


# ----------------------------------------------------------------------------------------------------------------------
# metric maths


def test_frechet_identical_gaussians_is_zero():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 6))
    sigma = a @ a.T + np.eye(6)
    mu = rng.normal(size=6)
    assert ev.frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-6)


def test_frechet_diagonal_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    s1, s2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    # For diagonal covariances: |mu1 - mu2|² + Σ (s1 + s2 - 2 sqrt(s1 s2)) = Σ(Δmu²) + Σ (sqrt s1 - sqrt s2)².
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    assert expected == pytest.approx(1 + 6.25 + 4 + 1)
    assert ev.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-9)


def test_frechet_matches_torch_fidelity_and_survives_singular_covariances():
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(50, 8)), rng.normal(loc=0.3, scale=1.5, size=(60, 8))
    (m1, s1), (m2, s2) = ev.feature_stats(x), ev.feature_stats(y)
    ref = fid_statistics_to_metric({"mu": m1, "sigma": s1}, {"mu": m2, "sigma": s2}, False)
    assert ev.frechet_distance(m1, s1, m2, s2) == pytest.approx(ref["frechet_inception_distance"], rel=1e-6)
    # Fewer samples than dimensions: rank-deficient covariances must still give a finite, non-negative value.
    (m1, s1), (m2, s2) = ev.feature_stats(x[:5]), ev.feature_stats(y[:5])
    d = ev.frechet_distance(m1, s1, m2, s2)
    assert np.isfinite(d) and d > 0


def test_kid_zero_for_same_distribution_positive_for_shifted_and_matches_torch_fidelity():
    from torch_fidelity.metric_kid import kid_features_to_metric

    rng = np.random.default_rng(2)
    real = rng.normal(size=(200, 16))
    same = rng.normal(size=(200, 16))
    shifted = rng.normal(loc=1.0, size=(200, 16))
    kid_same, std_same, size = ev.kernel_inception_distance(same, real, subsets=20, subset_size=100, seed=3)
    kid_shift, _, _ = ev.kernel_inception_distance(shifted, real, subsets=20, subset_size=100, seed=3)
    assert size == 100
    assert abs(kid_same) < 0.02 and std_same >= 0
    assert kid_shift > 0.5 and kid_shift > 20 * abs(kid_same)
    tf = kid_features_to_metric(
        torch.from_numpy(shifted), torch.from_numpy(real), kid_subsets=20, kid_subset_size=100, rng_seed=3
    )
    assert kid_shift == pytest.approx(tf["kernel_inception_distance_mean"], rel=1e-6)
    # The subset size is capped by the smaller set.
    assert ev.kernel_inception_distance(same[:30], real, subsets=2, seed=0)[2] == 30


def test_precision_recall_identical_disjoint_and_matches_torch_fidelity():
    from torch_fidelity.metric_prc import prc_features_to_metric

    rng = np.random.default_rng(4)
    real = rng.normal(size=(80, 8)).astype(np.float32)
    assert ev.precision_recall(real.copy(), real) == (1.0, 1.0)
    far = real + 100.0
    assert ev.precision_recall(far, real) == (0.0, 0.0)
    # A generator that covers only half of the real modes: high precision, lower recall.
    half = rng.normal(size=(80, 8)).astype(np.float32) * 0.3 + 0.5
    p, r = ev.precision_recall(half, real)
    tf = prc_features_to_metric(torch.from_numpy(half), torch.from_numpy(real), prc_neighborhood=3, prc_batch_size=64)
    assert (p, r) == pytest.approx((tf["precision"], tf["recall"]))
    assert p > r


def test_space_names():
    assert ev.fd_key("inception") == "fid" and ev.fd_label("inception") == "FID"
    assert ev.fd_key("classifier:chibi:resnet34") == "fd_classifier_chibi_resnet34"
    assert "FID" not in ev.fd_label("classifier:chibi:resnet34")


# ----------------------------------------------------------------------------------------------------------------------
# feature extractors and the reference cache


def test_inception_weights_load_through_path(inception_weights):
    ext = ev.load_extractor(inception_weights, None, "cpu")
    assert ext.space == "inception" and ext.is_fid
    images = np.random.default_rng(0).integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
    feats = ext(images)
    assert feats.shape == (2, 2048) and np.isfinite(feats).all()


def test_classifier_features_are_pooled_penultimate(clf):
    import timm

    ext = ev.load_extractor(None, clf, "cpu")
    assert ext.space == "classifier:chibi:resnet18" and not ext.is_fid
    images = np.random.default_rng(0).integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    feats = ext(images)
    # Same as the checkpoint's network with its head removed (num_classes=0), on ImageNet-normalised input.
    ckpt = torch.load(clf, weights_only=False)
    body = timm.create_model("resnet18", num_classes=0)
    body.load_state_dict({k: v for k, v in ckpt["state_dict"].items() if not k.startswith("fc.")})
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1
    )
    with torch.no_grad():
        expected = body.eval()(x).numpy()
    assert feats.shape == (3, 512)
    np.testing.assert_allclose(feats, expected, rtol=1e-4, atol=1e-5)


def test_reference_round_trip(tmp_path, clf):
    data = _packed(tmp_path / "data.npy", n=24)
    out = tmp_path / "ref.npz"
    s = ev.run_reference(data=data, out=out, n=16, classifier_model=clf, seed=5, batch_size=5, device="cpu")
    assert (s.n, s.n_available, s.dim, s.is_fid) == (16, 24, 512, False)
    ref = ev.load_reference(out)
    assert ref["feature_space"] == "classifier:chibi:resnet18" and ref["is_fid"] is False
    assert ref["n"] == 16 and ref["data"] == str(data) and ref["data_shape"] == (24, 32, 32, 3)
    assert ref["features"].shape == (16, 512)
    np.testing.assert_allclose(ref["mu"], ref["features"].astype(np.float64).mean(0), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(ref["sigma"], np.cov(ref["features"].astype(np.float64), rowvar=False), atol=1e-8)
    # Features really are those of the chosen subset, and the subset is a function of the seed.
    direct = ev.load_extractor(None, clf, "cpu")(np.load(data)[ref["indices"]])
    np.testing.assert_allclose(ref["features"], direct, rtol=1e-4, atol=1e-5)
    ev.run_reference(data=data, out=tmp_path / "ref2.npz", n=16, classifier_model=clf, seed=5, batch_size=7)
    np.testing.assert_array_equal(ev.load_reference(tmp_path / "ref2.npz")["indices"], ref["indices"])
    # Asking for more images than the dataset holds uses them all.
    assert ev.run_reference(data=data, out=out, n=100, classifier_model=clf, seed=0, batch_size=8).n == 24


def test_reference_inception_space(tmp_path, inception_weights):
    data = _packed(tmp_path / "data.npy", n=4)
    s = ev.run_reference(data=data, out=tmp_path / "ref.npz", n=4, inception_weights=inception_weights, device="cpu")
    ref = ev.load_reference(tmp_path / "ref.npz")
    assert s.is_fid and ref["is_fid"] is True and ref["feature_space"] == "inception"
    assert ref["features"].shape == (4, 2048)


# ----------------------------------------------------------------------------------------------------------------------
# CLI, with a stand-in generator (the evaluate contract only needs load_generator / generate_images)


class _FakeG:
    z_dim = 8
    resolution = 16


def _fake_generate(G, n, seed, batch_size=64, truncation=1.0):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(n, 4, 4, 3), dtype=np.uint8)
    return np.repeat(np.repeat(small, G.resolution // 4, axis=1), G.resolution // 4, axis=2)


@pytest.fixture
def fake_gan(monkeypatch):
    """Patch the real gan module when it imports; otherwise stand in for it (it is being written concurrently)."""
    calls = []

    def load_generator(path, device="cpu"):
        calls.append(("load", Path(path), device))
        return _FakeG()

    def generate_images(G, n, seed, batch_size=64, truncation=1.0):
        calls.append(("generate", n, seed, batch_size, truncation))
        return _fake_generate(G, n, seed, batch_size, truncation)

    try:
        mod = importlib.import_module("ganime_steps.gan")
    except Exception:
        mod = types.ModuleType("ganime_steps.gan")
        monkeypatch.setitem(sys.modules, "ganime_steps.gan", mod)
        monkeypatch.setattr(ganime_steps, "gan", mod, raising=False)
    monkeypatch.setattr(mod, "load_generator", load_generator, raising=False)
    monkeypatch.setattr(mod, "generate_images", generate_images, raising=False)
    return calls


def test_cli_reference_and_run(tmp_path, clf, fake_gan, monkeypatch):
    monkeypatch.setattr(ev, "GEN_CHUNK", 7)  # exercise chunked generation on a tiny n
    data = _packed(tmp_path / "data.npy", n=20)
    ref = tmp_path / "ref.npz"
    gen = tmp_path / "G.pt"
    gen.write_bytes(b"stand-in checkpoint")
    base = ["--seed", "1", "--device", "cpu", "--classifier-model", str(clf)]
    assert ev.main(["reference", "--data", str(data), "--n", "20", "--batch-size", "8", *base, "--out", str(ref)]) == 0
    assert ref.exists()
    out = tmp_path / "runs" / "r1" / "metrics.json"
    run = ["run", "--generator", str(gen), "--reference", str(ref), "--n", "16", *base, "--truncation", "0.7"]
    assert ev.main([*run, "--batch-size", "4", "--out", str(out)]) == 0
    m = json.loads(out.read_text())
    assert m["feature_space"] == "classifier:chibi:resnet18" and m["is_fid"] is False
    assert "fid" not in m and m["fd_key"] == "fd_classifier_chibi_resnet18"
    assert m["fd_classifier_chibi_resnet18"] == m["fd"] and m["fd"] > 0
    assert "FID" not in m["fd_label"] and "classifier:chibi:resnet18" in m["fd_label"]
    assert (m["n_fake"], m["n_real"], m["kid_subset_size"], m["image_size"]) == (16, 20, 16, [32, 32])
    assert 0 <= m["precision"] <= 1 and 0 <= m["recall"] <= 1 and np.isfinite(m["kid_mean"])
    gens = [c for c in fake_gan if c[0] == "generate"]
    assert [c[1] for c in gens] == [7, 7, 2] and all(c[3] == 4 and c[4] == 0.7 for c in gens)
    # Generated samples depend on --seed and --n only: a different --batch-size gives the same metrics.
    out2 = tmp_path / "m2.json"
    assert ev.main([*run, "--batch-size", "16", "--out", str(out2)]) == 0
    assert json.loads(out2.read_text())["fd"] == pytest.approx(m["fd"], rel=1e-4)


def test_cli_space_mismatch_exits_2(tmp_path, clf, inception_weights, fake_gan, capsys):
    data = _packed(tmp_path / "data.npy", n=8)
    ref = tmp_path / "ref.npz"
    gen = tmp_path / "G.pt"
    gen.write_bytes(b"x")
    assert (
        ev.main(["reference", "--data", str(data), "--n", "8", "--classifier-model", str(clf), "--out", str(ref)]) == 0
    )
    capsys.readouterr()
    run = ["run", "--generator", str(gen), "--reference", str(ref), "--n", "8", "--out", str(tmp_path / "m.json")]
    assert ev.main([*run, "--inception-weights", str(inception_weights)]) == 2
    err = capsys.readouterr().err
    assert "classifier:chibi:resnet18" in err and "'inception'" in err and str(ref) in err
    # Another task's classifier is another space too.
    other = _classifier_ckpt(tmp_path / "other.pt", task="aesthetic")
    assert ev.main([*run, "--classifier-model", str(other)]) == 2
    assert "classifier:aesthetic:resnet18" in capsys.readouterr().err
    # Same task and arch but retrained weights: still refused, the features are not comparable.
    retrained = _classifier_ckpt(tmp_path / "retrained.pt", seed=1)
    assert ev.main([*run, "--classifier-model", str(retrained)]) == 2
    assert "rebuild the reference" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists() and not any(c[0] == "generate" for c in fake_gan)


def test_cli_bad_inputs_exit_2(tmp_path, clf, capsys):
    data = _packed(tmp_path / "data.npy", n=8)
    out = tmp_path / "ref.npz"
    missing = tmp_path / "nope.pth"
    assert (
        ev.main(["reference", "--data", str(data), "--n", "8", "--inception-weights", str(missing), "--out", str(out)])
        == 2
    )
    err = capsys.readouterr().err
    assert "--inception-weights" in err and str(missing) in err
    assert ev.main(["reference", "--data", str(data), "--n", "8", "--out", str(out)]) == 2
    assert "--inception-weights" in capsys.readouterr().err
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((4, 8, 8), dtype=np.float32))
    assert (
        ev.main(["reference", "--data", str(bad), "--n", "8", "--classifier-model", str(clf), "--out", str(out)]) == 2
    )
    assert "uint8" in capsys.readouterr().err
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not torch")
    assert (
        ev.main(["reference", "--data", str(data), "--n", "8", "--inception-weights", str(junk), "--out", str(out)])
        == 2
    )
    assert "torch-fidelity" in capsys.readouterr().err
    run = ["run", "--generator", str(tmp_path / "G.pt"), "--n", "8", "--classifier-model", str(clf)]
    assert ev.main([*run, "--reference", str(tmp_path / "none.npz"), "--out", str(tmp_path / "m.json")]) == 2
    assert "none.npz" in capsys.readouterr().err
    assert not out.exists()


def test_help_documents_every_flag(capsys):
    for cmd, flags in [
        ("reference", ["--data", "--n", "--seed", "--batch-size", "--device", "--inception-weights", "--out"]),
        ("run", ["--generator", "--reference", "--classifier-model", "--truncation", "--out"]),
    ]:
        with pytest.raises(SystemExit):
            ev.main([cmd, "--help"])
        text = capsys.readouterr().out
        assert all(f in text for f in flags)
