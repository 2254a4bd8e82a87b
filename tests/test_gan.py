"""Networks, losses, families, augmentation, generator export/load and the generate CLI."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.nn.utils import parametrize

from ganime_steps import generate
from ganime_steps.common import GanimeError
from ganime_steps.gan import (
    FAMILIES,
    NetConfig,
    available_families,
    generate_images,
    get_family,
    latents_for_seeds,
    load_generator,
)
from ganime_steps.gan.augment import diff_augment
from ganime_steps.gan.loop import ema_beta, update_ema
from ganime_steps.gan.losses import (
    dragan_penalty,
    dragan_points,
    gradient_norm_penalty,
    hinge_d_loss,
    nonsat_d_loss,
    nonsat_g_loss,
    r1_penalty,
    wasserstein_drift_d_loss,
    wgan_gp_penalty,
)
from ganime_steps.gan.networks import (
    Discriminator,
    Generator,
    batch_norm_layers,
    build_networks,
    export_generator,
    recalibrate_batch_norm,
    widths,
)

torch.set_num_threads(1)


def _net(family: str, resolution: int = 16, channels: int = 8, z_dim: int = 16) -> NetConfig:
    fam = get_family(family)
    return NetConfig(resolution=resolution, z_dim=z_dim, channels=channels, g_norm=fam.g_norm, d_norm=fam.d_norm)


@pytest.mark.parametrize("resolution", [16, 32, 64, 128, 256])
def test_shapes_all_resolutions(resolution: int) -> None:
    torch.manual_seed(0)
    cfg = NetConfig(resolution=resolution, z_dim=8, channels=2)
    G, D = build_networks(cfg)
    x = G(torch.randn(2, 8))
    assert x.shape == (2, 3, resolution, resolution)
    assert x.abs().max() <= 1.0
    assert D(x).shape == (2,)
    assert G.z_dim == 8 and G.resolution == resolution


def test_widths_halve_per_upsample_with_floor_and_cap() -> None:
    assert [w for _, w in widths(NetConfig(resolution=64, channels=64))] == [512, 256, 128, 64]  # DCGAN
    ws = widths(NetConfig(resolution=256, channels=16))
    assert [r for r, _ in ws] == [4, 8, 16, 32, 64, 128]
    assert [w for _, w in ws] == [128, 128, 128, 64, 32, 16]


@pytest.mark.parametrize("bad", [8, 48, 512])
def test_bad_resolution_is_user_error(bad: int) -> None:
    with pytest.raises(GanimeError, match="power of two"):
        NetConfig(resolution=bad)


def test_every_available_family_takes_a_training_step() -> None:
    """available_families() is what configs may name: each one must build its networks and give finite losses and
    gradients for both players (a family listed without a working implementation fails here)."""
    names = available_families()
    assert {"dcgan", "wgan-gp", "dragan", "sngan", "progan", "stylegan"} <= set(names)  # the study's six
    for name in names:
        fam = get_family(name)
        assert fam.name == name
        torch.manual_seed(0)
        cfg = NetConfig(resolution=16, z_dim=8, channels=4, g_norm=fam.g_norm, d_norm=fam.d_norm, arch=fam.arch)
        G, D = build_networks(cfg)
        real = torch.rand(4, 3, 16, 16) * 2 - 1
        fake = G(torch.randn(4, 8))
        d_loss = fam.d_loss(D(real), D(fake.detach()))
        if fam.penalty is not None:
            d_loss = d_loss + fam.penalty(D, real, fake, fam.penalty_weight)
        d_loss.backward()
        assert torch.isfinite(d_loss), name
        assert all(p.grad is None for p in G.parameters()), name  # the D step leaves G alone (penalties too)
        g_loss = fam.g_loss(D(fake))
        g_loss.backward()
        assert torch.isfinite(g_loss), name
        for net in (G, D):
            grads = [p.grad for p in net.parameters() if p.grad is not None]
            assert grads and all(torch.isfinite(g).all() for g in grads), name
            assert any(g.abs().sum() > 0 for g in grads), name
    with pytest.raises(GanimeError, match="--family biggan: unknown GAN family; available: " + ", ".join(names)):
        get_family("biggan")


def test_published_defaults() -> None:
    assert (FAMILIES["dcgan"].lr, FAMILIES["dcgan"].betas, FAMILIES["dcgan"].n_critic) == (2e-4, (0.5, 0.999), 1)
    wg = FAMILIES["wgan-gp"]
    assert (wg.lr, wg.betas, wg.n_critic, wg.penalty_weight) == (1e-4, (0.0, 0.9), 5, 10.0)
    assert FAMILIES["dragan"].penalty_weight == 10.0
    sn = FAMILIES["sngan"]
    assert (sn.lr, sn.betas, sn.n_critic, sn.penalty) == (2e-4, (0.0, 0.9), 5, None)
    pg = FAMILIES["progan"]
    assert (pg.lr, pg.betas, pg.n_critic, pg.penalty, pg.penalty_weight) == (1e-3, (0.0, 0.99), 1, wgan_gp_penalty, 10)
    assert (pg.arch, pg.start_resolution, pg.stable_kimg, pg.fade_kimg, pg.reset_opt_per_phase) == (
        "progan",
        4,
        600,
        600,
        True,
    )
    sg = FAMILIES["stylegan"]
    assert (sg.lr, sg.betas, sg.n_critic, sg.penalty, sg.penalty_weight) == (1e-3, (0.0, 0.99), 1, r1_penalty, 10)
    assert (sg.arch, sg.start_resolution, sg.d_loss, sg.g_loss) == ("stylegan", 8, nonsat_d_loss, nonsat_g_loss)
    assert NetConfig(arch="stylegan").mapping_layers == 8 and NetConfig().style_mixing == 0.9


def test_each_family_runs_its_own_step_object_and_the_loop_has_no_family_branch() -> None:
    """What a family's D and G steps do differently is its step object (steps.family_loss), not a branch in the loop:
    the G step on the D step's fakes (dcgan: no latents of its own), R1 from the reals' forward (stylegan: two D
    forwards per D step), a penalty on its own points (a third forward), g_batch_mul latents for G (sngan)."""
    from ganime_steps.gan.loop import Trainer
    from ganime_steps.gan.steps import Loss, PenaltyLoss, R1Loss, ReusedFakesLoss, StepNets, family_loss

    expected = {
        "dcgan": ReusedFakesLoss,
        "wgan-gp": PenaltyLoss,
        "dragan": PenaltyLoss,
        "sngan": Loss,
        "progan": PenaltyLoss,
        "stylegan": R1Loss,
        "projected": Loss,
    }
    body = inspect.getsource(Trainer._iteration_body)
    assert "self.family" not in body and "fam." not in body
    for name in ("dcgan", "wgan-gp", "stylegan", "sngan"):
        fam = get_family(name)
        torch.manual_seed(0)
        G, D = build_networks(NetConfig(resolution=16, z_dim=8, channels=4, g_norm=fam.g_norm, d_norm=fam.d_norm))
        calls = {"D": 0, "latents": []}

        def run_D(x, D=D, calls=calls):
            calls["D"] += 1
            return D(x)

        def latents(n, calls=calls):
            calls["latents"].append(n)
            return torch.randn(n, 8)

        nets = StepNets(G, run_D, run_D, latents, contextlib.nullcontext, contextlib.nullcontext)
        step = family_loss(fam, nets, diffaug=False)
        assert type(step) is expected[name] and step.n_critic == fam.n_critic
        d = step.d_step(torch.rand(4, 3, 16, 16) * 2 - 1, torch.randn(4, 8), 1.0)
        assert calls["D"] == {"wgan-gp": 3, "stylegan": 2}.get(name, 2), name
        assert torch.isfinite(d.loss + d.penalty) and (d.penalty.item() > 0) == (fam.penalty is not None), name
        assert (d.fake_for_g is not None) == (name == "dcgan") and (d.fake_for_g is None or d.fake_for_g.requires_grad)
        assert torch.isfinite(step.g_step(d, 4))
        assert calls["latents"] == ([] if name == "dcgan" else [4 * fam.g_batch_mul]), name
    assert {n: type(family_loss(f, nets, False)) for n, f in FAMILIES.items()} == expected
    with pytest.raises(ValueError, match="n_critic 1"):
        ReusedFakesLoss(dataclasses.replace(FAMILIES["wgan-gp"], penalty=None), nets, False)


def test_progan_drift_and_r1_known_values() -> None:
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([0.0, 2.0])
    assert wasserstein_drift_d_loss(real, fake).item() == pytest.approx(1.0 - 2.0 + 0.001 * 5.0)
    w = torch.full((1, 3, 2, 2), 0.5)

    def critic(x: torch.Tensor) -> torch.Tensor:
        return (x * w).flatten(1).sum(1)

    pts = torch.randn(4, 3, 2, 2)
    # gamma / 2 * ||w||^2 = 5 * 3
    assert r1_penalty(critic, pts, pts, 10.0).item() == pytest.approx(15.0, rel=1e-5)
    assert r1_penalty(critic, pts, pts, 10.0, scale=512.0).item() == pytest.approx(15.0, rel=1e-5)


def test_r1_penalises_the_gradient_at_the_real_batch_only() -> None:
    """D(x) = ||x||^2 / 2 has gradient x: R1 = gamma / 2 * E_real ||x||^2, whatever the (distinct) fake batch."""

    def critic(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x.square().flatten(1).sum(1)

    torch.manual_seed(0)
    real, fake = torch.randn(4, 3, 2, 2), 3 * torch.randn(4, 3, 2, 2) + 1
    on_real = 5.0 * real.square().flatten(1).sum(1).mean().item()
    on_fake = 5.0 * fake.square().flatten(1).sum(1).mean().item()
    assert on_fake > 2 * on_real  # the batches are told apart
    assert r1_penalty(critic, real, fake, 10.0).item() == pytest.approx(on_real, rel=1e-5)
    assert r1_penalty(critic, real, fake, 10.0, scale=512.0).item() == pytest.approx(on_real, rel=1e-5)
    assert r1_penalty(critic, real, torch.zeros_like(fake), 10.0).item() == pytest.approx(on_real, rel=1e-5)


def _count(module: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in module.modules())


def test_discriminator_norm_per_family() -> None:
    torch.manual_seed(0)
    d_dc = Discriminator(_net("dcgan", 32))
    assert _count(d_dc, nn.BatchNorm2d) > 0
    for fam in ("wgan-gp", "dragan"):
        d = Discriminator(_net(fam, 32))
        assert _count(d, nn.BatchNorm2d) == 0
        assert _count(d, nn.GroupNorm) > 0  # layer norm over (C, H, W)
    d_sn = Discriminator(_net("sngan", 32))
    assert _count(d_sn, nn.BatchNorm2d) == 0
    convs = [m for m in d_sn.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert convs and all(parametrize.is_parametrized(m, "weight") for m in convs)
    # Spectral norm actually bounds each layer: largest singular value of the reshaped weight ~ 1 after power iters.
    d_sn.train()
    for _ in range(30):
        d_sn(torch.randn(2, 3, 32, 32))
    d_sn.eval()
    for m in convs:
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)
        assert sigma == pytest.approx(1.0, abs=0.1)
    # G always has batch-norm
    assert _count(Generator(_net("sngan")), nn.BatchNorm2d) > 0


def test_spectral_norm_d_under_autocast_keeps_fp32_power_iteration() -> None:
    torch.manual_seed(0)
    D = Discriminator(_net("sngan", 16))
    x = torch.randn(4, 3, 16, 16)
    ref = copy.deepcopy(D)(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = D(x)
    out.float().sum().backward()  # the cached normalised weights stay in the graph
    assert all(p.grad is not None for p in D.parameters())
    assert all(b.dtype == torch.float32 for b in D.buffers())
    assert torch.allclose(out.float(), ref, atol=0.05, rtol=0.05)


def test_losses_known_values() -> None:
    real, fake = torch.tensor([0.0, 2.0]), torch.tensor([0.0, -2.0])
    expected = (math.log(2) + math.log1p(math.exp(-2))) / 2 * 2
    assert nonsat_d_loss(real, fake).item() == pytest.approx(expected, rel=1e-6)
    assert nonsat_g_loss(torch.tensor([0.0])).item() == pytest.approx(math.log(2), rel=1e-6)
    # hinge: relu(1-r) = [1, 0]; relu(1+f) = [1, 0]
    assert hinge_d_loss(real, fake).item() == pytest.approx(1.0)


def test_gradient_penalty_exact_for_linear_critic() -> None:
    w = torch.full((1, 3, 2, 2), 0.5)  # ||w|| = sqrt(12) * 0.5

    def critic(x: torch.Tensor) -> torch.Tensor:
        return (x * w).flatten(1).sum(1)

    pts = torch.randn(4, 3, 2, 2)
    expected = 10 * (math.sqrt(12) * 0.5 - 1) ** 2
    assert gradient_norm_penalty(critic, pts, 10.0).item() == pytest.approx(expected, rel=1e-5)
    # an fp16-style scale must not change the value
    assert gradient_norm_penalty(critic, pts, 10.0, scale=1024.0).item() == pytest.approx(expected, rel=1e-5)


class _SquareCritic:
    """Nonlinear: D(x) = ||x||^2 / 2, so grad D(x) = x and the penalty depends on where it is taken. Records the
    points it is called on."""

    def __init__(self) -> None:
        self.points: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.points.append(x.detach().clone())
        return 0.5 * x.square().flatten(1).sum(1)


def _gp(points: torch.Tensor, weight: float = 10.0) -> float:
    return weight * ((points.flatten(1).norm(dim=1) - 1) ** 2).mean().item()


def test_gradient_penalties_with_a_nonlinear_critic_use_their_own_points() -> None:
    torch.manual_seed(0)
    real, fake = torch.randn(6, 3, 2, 2), 2 * torch.randn(6, 3, 2, 2) + 1
    critic = _SquareCritic()
    assert gradient_norm_penalty(critic, real, 10.0).item() == pytest.approx(_gp(real), rel=1e-5)
    assert torch.equal(critic.points[-1], real)
    # WGAN-GP: at uniform interpolates real + alpha (fake - real), one alpha per sample
    critic = _SquareCritic()
    value = wgan_gp_penalty(critic, real, fake, 10.0).item()
    (points,) = critic.points
    alpha = ((points - real) / (fake - real)).flatten(1)
    assert torch.allclose(alpha, alpha[:, :1].expand_as(alpha), atol=1e-4)  # on the segment, one alpha per sample
    assert ((alpha >= 0) & (alpha <= 1)).all() and alpha[:, 0].unique().numel() == 6
    assert value == pytest.approx(_gp(points), rel=1e-5)
    assert len({round(v, 3) for v in (value, _gp(real), _gp(fake))}) == 3  # neither at the reals nor at the fakes
    # DRAGAN: at perturbed reals, not at the reals themselves
    critic = _SquareCritic()
    value = dragan_penalty(critic, real, fake, 10.0).item()
    (points,) = critic.points
    assert value == pytest.approx(_gp(points), rel=1e-5) and value != pytest.approx(_gp(real), rel=1e-3)
    assert not torch.equal(points, real) and (points - real).abs().max() <= 0.5 * real.std() + 1e-6


def test_dragan_points_stay_in_the_perturbation_box() -> None:
    torch.manual_seed(0)
    real = torch.rand(16, 3, 8, 8) * 2 - 1
    pts = dragan_points(real)
    delta = pts - real
    assert (delta >= 0).all() and (delta <= 0.5 * real.std() + 1e-6).all()
    assert delta.abs().max() > 0


def test_diff_augment_shape_grad_and_cutout() -> None:
    torch.manual_seed(0)
    x = torch.ones(8, 3, 16, 16, requires_grad=True)
    y = diff_augment(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # cutout zeroes a block in every image (ones in, zeros out)
    assert ((y.detach() == 0).flatten(1).sum(1) > 0).all()
    torch.manual_seed(1)
    a = diff_augment(x.detach())
    torch.manual_seed(1)
    assert torch.equal(a, diff_augment(x.detach()))


def test_diff_augment_cutout_is_the_asked_share_of_the_side() -> None:
    """The same draws with and without cutout: the extra zeros are one square of the asked side (20 px: 0.2 -> 4 px,
    the official Projected GAN's; 0.5 -> 10 px, the DiffAugment paper's), clipped at the image's border."""
    x = torch.ones(64, 3, 20, 20)

    def zeros(cutout: float) -> torch.Tensor:
        torch.manual_seed(3)
        return (diff_augment(x, cutout) == 0).all(1).flatten(1).sum(1)

    none = zeros(0.0)
    for share, side in ((0.2, 4), (0.5, 10)):
        extra = zeros(share) - none
        assert (extra >= 0).all() and (extra <= side * side).all(), share
        assert (extra == side * side).float().mean() > 0.2, share  # squares away from the border are whole


def test_ema_beta_half_life_and_rampup() -> None:
    beta = ema_beta(64, ema_kimg=10.0, images_seen=10**9, rampup=None)
    assert beta ** (10_000 / 64) == pytest.approx(0.5, rel=1e-9)
    assert ema_beta(64, 10.0, images_seen=0, rampup=0.05) == 0.0  # first step copies G
    assert ema_beta(64, 0.0, 10**6, None) == 0.0
    g, e = nn.Linear(2, 2), nn.Linear(2, 2)
    w0 = e.weight.detach().clone()
    update_ema(e, g, 0.75)
    assert torch.allclose(e.weight, 0.75 * w0 + 0.25 * g.weight)


def _bn_input_stats(G: nn.Module, n: int = 2048) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per BN layer, the mean and variance of what it actually receives when G renders in eval mode."""
    seen: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda m, inp, out: seen.append(inp[0])) for m in batch_norm_layers(G)]
    G.eval()
    with torch.no_grad():
        G(torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(99)))
    for h in hooks:
        h.remove()
    return [(x.mean((0, 2, 3)), x.var((0, 2, 3))) for x in seen]


def _var_error(G: nn.Module) -> float:
    """Mean |log(true variance / running variance)| over every BN channel."""
    errs = [
        (var / m.running_var).log().abs().mean()
        for (_, var), m in zip(_bn_input_stats(G), batch_norm_layers(G), strict=True)
    ]
    return float(torch.stack(errs).mean())


def test_recalibrated_batch_norm_describes_the_ema_weights() -> None:
    """G_ema = an average of G's weights, with G's BN statistics copied (update_ema): those statistics do not
    describe what G_ema's BN layers see. Re-estimating them on fresh latents does, leaves the global RNG alone
    and gives the same statistics whatever was there before."""
    torch.manual_seed(0)
    cfg = _net("dcgan", resolution=32)
    G = Generator(cfg)
    ema = copy.deepcopy(G)
    with torch.no_grad():  # G trains on: its weights move away from the average
        for p in G.parameters():
            p.add_(torch.randn_like(p) * p.std().clamp(min=0.02))
    G.train()
    for _ in range(30):
        G(torch.randn(64, 16))
    update_ema(ema, G, 0.8)
    copied = _var_error(ema)
    state = torch.get_rng_state()
    assert recalibrate_batch_norm(ema, seed=7)
    assert torch.equal(torch.get_rng_state(), state) and not ema.training
    recal = _var_error(ema)
    assert recal < 0.05 < copied / 4, (recal, copied)
    again = copy.deepcopy(ema)
    for m in batch_norm_layers(again):
        m.running_var.fill_(5.0)
    recalibrate_batch_norm(again, seed=7)
    for a, b in zip(ema.buffers(), again.buffers(), strict=True):
        assert torch.equal(a, b)
    assert batch_norm_layers(ema)[0].momentum == 0.1  # the layer's own momentum is restored
    assert not recalibrate_batch_norm(build_networks(NetConfig(arch="progan", g_norm="none", d_norm="none"))[0], 0)


@pytest.fixture
def exported(tmp_path):
    torch.manual_seed(3)
    cfg = _net("dcgan")
    G = Generator(cfg)
    G.train()
    G(torch.randn(8, 16))  # give BN non-trivial running stats
    path = tmp_path / "generator.pt"
    export_generator(path, G, cfg, extra={"family": "dcgan"})
    return path, G


def test_generator_export_round_trip(exported) -> None:
    path, G = exported
    G2 = load_generator(path)
    assert not G2.training and G2.z_dim == 16 and G2.resolution == 16
    for (k, a), (_, b) in zip(G.state_dict().items(), G2.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    G.eval()
    a = generate_images(G, 5, seed=7)
    b = generate_images(G2, 5, seed=7, batch_size=2)
    assert a.shape == (5, 16, 16, 3) and a.dtype == np.uint8
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # batch size may change conv blocking, not images
    assert np.array_equal(a, generate_images(G2, 5, seed=7))
    assert not np.array_equal(a, generate_images(G2, 5, seed=8))
    flat = generate_images(G2, 4, seed=1, truncation=0.0)  # psi = 0: every latent is the mean -> one image
    assert (flat == flat[0]).all()
    assert generate_images(G2, 0, seed=0).shape == (0, 16, 16, 3)


def test_load_generator_errors(tmp_path) -> None:
    with pytest.raises(GanimeError, match="not found"):
        load_generator(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(GanimeError, match="junk.pt"):
        load_generator(junk)
    other = tmp_path / "other.pt"
    torch.save({"hello": 1}, other)
    with pytest.raises(GanimeError, match="not a ganime generator"):
        load_generator(other)


def test_parse_seeds() -> None:
    assert generate.parse_seeds("0-3,7,9-10") == [0, 1, 2, 3, 7, 9, 10]
    for bad in ("a", "5-2", "-1", "1,,2"):
        with pytest.raises(GanimeError, match="--seeds"):
            generate.parse_seeds(bad)


def test_latents_per_seed_are_independent_of_the_other_seeds() -> None:
    z = latents_for_seeds([3, 4, 5], 16)
    assert torch.equal(z[1], latents_for_seeds([4], 16)[0])


def test_generate_cli_writes_grid(exported, tmp_path, capsys) -> None:
    path, _ = exported
    out = tmp_path / "grid.png"
    assert generate.main(["--checkpoint", str(path), "--seeds", "0-5", "--out", str(out), "--ncol", "3"]) == 0
    with Image.open(out) as im:
        assert im.size == (3 * (16 + 2) + 2, 2 * (16 + 2) + 2)  # 3 x 2 tiles, 2 px padding
    assert generate.main(["--checkpoint", str(tmp_path / "nope.pt"), "--out", str(out)]) == 2
    assert "nope.pt" in capsys.readouterr().err
    assert generate.main(["--checkpoint", str(path), "--seeds", "x", "--out", str(out)]) == 2
    assert "--seeds" in capsys.readouterr().err
