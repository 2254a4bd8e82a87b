"""The projected family (Projected GAN): D's pretrained features are the offline ImageNet weights and stay frozen,
its random projections are fixed and travel in the checkpoint, only the heads train, and the generator exports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_train_config, train_tiny, write_disc_dataset

from ganime_steps import backbones
from ganime_steps.common import GanimeError
from ganime_steps.gan import generate_images, load_generator
from ganime_steps.gan.loop import Trainer
from ganime_steps.gan.networks import NetConfig, build_discriminator, build_generator
from ganime_steps.gan.projected import FEATURE_ARCH, ProjectedDiscriminator

torch.set_num_threads(1)

CFG = NetConfig(resolution=16, z_dim=16, channels=8, arch="projected", g_norm="batch", d_norm="spectral")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_disc_dataset(tmp_path_factory.mktemp("data") / "train_16.npy", 16)


def test_feature_network_is_the_offline_imagenet_weights() -> None:
    torch.manual_seed(0)
    D = build_discriminator(CFG)
    offline = backbones.create_model(FEATURE_ARCH)
    ours = dict(D.features.stages[0][0].named_parameters())  # the stem conv
    assert torch.equal(ours["weight"], offline.conv_stem.weight)
    deepest = D.features.stages[3][-1]  # the last block of stage 4 = the net's blocks[6]
    for (name, a), (_, b) in zip(deepest.state_dict().items(), offline.blocks[6].state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    random = build_discriminator(CFG, feature_weights="")
    assert not torch.equal(random.features.stages[0][0].weight, offline.conv_stem.weight)


def test_only_the_heads_train_and_features_stay_in_eval_mode(data: Path, tmp_path: Path) -> None:
    cfg = tiny_train_config("projected", kimg=0.016)
    trainer = Trainer(cfg, data=data, out=tmp_path, device=torch.device("cpu"))
    D = trainer.D
    assert isinstance(D, ProjectedDiscriminator)
    frozen = {k: v.clone() for k, v in D.features.state_dict().items()}
    heads = {k: v.clone() for k, v in D.heads.state_dict().items()}
    assert {id(p) for p in trainer.d_params} == {id(p) for p in D.heads.parameters()}
    trainer.train()
    D.train()
    assert not any(m.training for m in D.features.modules()) and all(m.training for m in D.heads.modules())
    assert not any(p.requires_grad for p in D.features.parameters())
    for k, v in D.features.state_dict().items():  # weights and BN statistics of the pretrained net, projections
        assert torch.equal(v, frozen[k]), k
    assert any(not torch.equal(v, heads[k]) for k, v in D.heads.state_dict().items())


def test_d_sees_the_official_cutout(data: Path, tmp_path: Path, monkeypatch) -> None:
    """Projected GAN's DiffAugment cuts out a square of 0.2 of the side (pg_modules/diffaug.py), not the paper's 1/2."""
    from ganime_steps.gan import augment

    seen = []
    real = augment.diff_augment
    monkeypatch.setattr(augment, "diff_augment", lambda x, cutout=0.5: seen.append(cutout) or real(x, cutout))
    Trainer(tiny_train_config("projected", kimg=0.016), data=data, out=tmp_path, device=torch.device("cpu")).train()
    assert seen and set(seen) == {0.2}


def test_projections_travel_in_the_checkpoint(data: Path, tmp_path: Path) -> None:
    """A D rebuilt from the checkpoint alone (random features, fresh projections) scores images exactly as the
    trained one: the projections are part of D's state, not redrawn."""
    train_tiny(data, tmp_path, family="projected", kimg=0.016)
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert any(k.startswith("features.ccm.") for k in ck["D"]) and any(k.startswith("features.csm.") for k in ck["D"])
    cfg = NetConfig.from_dict(ck["net"])
    torch.manual_seed(123)
    a = build_discriminator(cfg, feature_weights="")
    a.load_state_dict(ck["D"])
    torch.manual_seed(456)
    b = build_discriminator(cfg, feature_weights="")
    assert not torch.equal(a.features.ccm[0].weight, b.features.ccm[0].weight)  # fresh draws differ
    b.load_state_dict(ck["D"])
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    assert torch.equal(a.eval()(x), b.eval()(x))


def test_exported_generator_rebuilds_and_ignores_truncation(data: Path, tmp_path: Path) -> None:
    train_tiny(data, tmp_path, family="projected", kimg=0.016)
    G = load_generator(tmp_path / "generator.pt")
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    twin = build_generator(NetConfig.from_dict(ck["net"]))
    twin.load_state_dict(ck["G_ema"])
    a = generate_images(G, 4, seed=3)
    assert a.shape == (4, 16, 16, 3) and np.array_equal(a, generate_images(twin.eval(), 4, seed=3))
    assert np.array_equal(a, generate_images(G, 4, seed=3, truncation=0.5))  # z is normalised: psi changes nothing


@pytest.mark.parametrize("bad", [32, 80])
def test_feature_resolution_must_be_a_multiple_of_32_from_64(bad: int) -> None:
    with pytest.raises(GanimeError, match=f"--feature-resolution {bad}: must be a multiple of 32, at least 64"):
        NetConfig(resolution=16, arch="projected", feature_resolution=bad)


def test_studio_edits_a_projected_generator_in_z(data: Path, tmp_path: Path) -> None:
    """The studio over a projected generator: z edits along PCA directions change the image; truncation is
    reported unsupported and changes nothing (z is normalised, as ProGAN's); seeds render deterministically."""
    import io

    from fastapi.testclient import TestClient
    from PIL import Image

    from ganime_steps.studio import directions as directions_stage
    from ganime_steps.studio.app import create_app
    from ganime_steps.studio.render import Renderer

    train_tiny(data, tmp_path / "run", family="projected", kimg=0.016)
    gen = tmp_path / "run" / "generator.pt"
    s = directions_stage.run_directions(
        generator=gen,
        out=tmp_path / "d.npz",
        figure=tmp_path / "d.png",
        classifiers={},
        n=64,
        n_components=2,
        device="cpu",
    )
    assert s.space == "z" and s.names == ["pc0", "pc1"]
    c = TestClient(create_app(Renderer(gen, directions=tmp_path / "d.npz")))
    info = c.get("/api/info").json()
    assert info["latent_space"] == "z" and not info["supports"]["truncation"]

    def png(url: str) -> np.ndarray:
        resp = c.get(url)
        assert resp.status_code == 200, resp.text
        return np.asarray(Image.open(io.BytesIO(resp.content)).convert("RGB"))

    base = png("/api/generate?seed=1")
    assert np.array_equal(base, png("/api/generate?seed=1"))
    assert not np.array_equal(base, png("/api/generate?seed=1&directions=pc0:3"))
    assert np.array_equal(base, png("/api/generate?seed=1&truncation=0.5"))
    assert c.get("/api/generate?seed=1&mix_seed=2").status_code == 400  # no style layers
