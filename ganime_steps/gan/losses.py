"""GAN families as (network options, loss, optimiser defaults), selected by name from :data:`FAMILIES`.

Losses work on logits. ``d_loss(real_logits, fake_logits)``, ``g_loss(fake_logits)``; an optional gradient
penalty ``penalty(D, real, fake, weight, scale, res_factor)`` receives D as a callable (it may include DiffAugment);
its inner gradient is unscaled fp32 (``scale`` is ignored, see :func:`gradient_norm_penalty`).

Published defaults:
- dcgan   Radford et al. 2016: non-saturating BCE, BN in G and D, Adam 2e-4 (0.5, 0.999); the G step trains on
          the D step's fakes, as the reference loops (one G forward per iteration; ``g_step_reuses_fakes``).
- wgan-gp Gulrajani et al. 2017: Wasserstein loss + GP (lambda 10) on real/fake interpolates, n_critic 5,
          Adam 1e-4 (0.0, 0.9); no batch-norm in the critic (layer norm instead, as the paper recommends).
- dragan  Kodali et al. 2017: non-saturating BCE + GP (lambda 10) around real samples perturbed by
          0.5 * std(x) * U[0, 1]; no batch-norm in D (layer norm); Adam 1e-4 (0.5, 0.9), n_critic 1, as the
          reference implementation (kodalinaveen3/DRAGAN).
- sngan   Miyato et al. 2018: hinge loss, spectral norm on every D conv, Adam 2e-4 (0.0, 0.9) with n_dis 5
          (the setting those betas come from in the paper and its official code; with n_dis 1 the paper uses
          beta1 0.5 instead); lr decayed linearly to 0 over the run and a generator batch twice the D batch, as
          its reference code (``lr_decay``, ``g_batch_mul``).
- progan  Karras et al. 2018: progressive growing with fade-in, equalized lr, pixel norm, minibatch stddev;
          WGAN-GP (lambda 10, n_critic 1) plus the drift term 0.001 * E[D(x)^2]; Adam 1e-3 (0.0, 0.99), eps 1e-8,
          optimiser state reset at each phase change; 600 kimg stable + 600 kimg fade-in per resolution.
- stylegan Karras et al. 2019 (v1, progressive): non-saturating logistic loss with R1 (gamma 10) on reals,
          Adam 1e-3 (0.0, 0.99), eps 1e-8, optimiser reset per phase, style mixing 0.9, 600 + 600 kimg per
          resolution, the official per-resolution lr and one-GPU minibatch tables (``STYLEGAN_LR_SCHEDULE``,
          ``STYLEGAN_BATCH_SCHEDULE``: NVlabs/stylegan train.py ``sched.G_lrate_dict`` / ``minibatch_dict``).
- projected Sauer et al. 2021 (autonomousvision/projected-gan, config fastgan_lite): FastGAN generator, D on frozen
          EfficientNet-Lite0 features through fixed random projections, hinge loss, no penalty, DiffAugment
          always on, Adam 2e-4 (0.0, 0.99), eps 1e-8.
Progressive families take their penalties at full resolution, as the official code (``res_factor``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ganime_steps.common import GanimeError

Tensor = torch.Tensor
DRIFT_EPSILON = 1e-3  # ProGAN's epsilon_drift
DFn = Callable[[Tensor], Tensor]
# NVlabs/stylegan (v1) train.py: sched.G_lrate_dict = D_lrate_dict (base 0.001 elsewhere) and the one-GPU
# sched.minibatch_dict (minibatch_base 4 elsewhere), keyed by the current resolution.
STYLEGAN_LR_SCHEDULE = "128:0.0015,256:0.002,512:0.003,1024:0.003"
STYLEGAN_BATCH_SCHEDULE = "4:128,8:128,16:128,32:64,64:32,128:16,256:8,512:4"


# --- data parallel: per-sample random draws as one process would make them ---------------------------------------

_SHARD: ContextVar[tuple[int, int] | None] = ContextVar("ganime_data_parallel_shard", default=None)


@contextlib.contextmanager
def data_parallel_shard(rank: int, world: int) -> Iterator[None]:
    """Inside: :func:`per_sample` draws the global batch's values and keeps this rank's samples (``rank::world``),
    so N ranks together use exactly the random numbers one process would (all ranks share the RNG state)."""
    token = _SHARD.set((rank, world)) if world > 1 else None
    try:
        yield
    finally:
        if token is not None:
            _SHARD.reset(token)


def per_sample(draw: Callable[[tuple[int, ...]], Tensor], size: tuple[int, ...]) -> Tensor:
    """``draw(size)``; under :func:`data_parallel_shard` the global batch is drawn and this rank's rows kept."""
    shard = _SHARD.get()
    if shard is None:
        return draw(size)
    rank, world = shard
    return draw((size[0] * world, *size[1:]))[rank::world]


# --- adversarial losses -------------------------------------------------------------------------------------------


def nonsat_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """BCE: -log sigmoid(D(x)) - log(1 - sigmoid(D(G(z)))), via softplus for stability."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def nonsat_g_loss(fake_logits: Tensor) -> Tensor:
    """Non-saturating generator loss: -log sigmoid(D(G(z)))."""
    return F.softplus(-fake_logits).mean()


def wasserstein_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    return fake_logits.mean() - real_logits.mean()


def wasserstein_g_loss(fake_logits: Tensor) -> Tensor:
    return -fake_logits.mean()


def wasserstein_drift_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """ProGAN's critic loss: Wasserstein + epsilon_drift * E[D(x_real)^2] (epsilon 0.001) keeps scores near 0."""
    return fake_logits.mean() - real_logits.mean() + DRIFT_EPSILON * real_logits.square().mean()


def hinge_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


hinge_g_loss = wasserstein_g_loss  # SNGAN's generator loss is -D(G(z)) as well


# --- gradient penalties -------------------------------------------------------------------------------------------


def gradient_norm_penalty(
    D: DFn, points: Tensor, weight: float, scale: float | Tensor = 1.0, res_factor: float = 1.0
) -> Tensor:
    """weight * E[(||grad_x D(x)||_2 / res_factor - 1)^2] at ``points``.

    The inner gradient is taken of the unscaled fp32 output: the training loop runs a penalty's D forward in fp32
    under fp16 autocast (``Trainer._penalty_autocast``), so nothing can underflow and no loss scale is needed.
    ``scale`` (the GradScaler's scale) is accepted and ignored: multiplying by it overflowed fp16 intermediate
    gradients to inf at large scales, which tripped the NaN guard where GradScaler would have skipped the step.

    ``res_factor``: full resolution / the phase's resolution (progressive families). The official code takes the
    penalty at full resolution, on reals and fakes upsampled to it; D's first op there is a box downsample by
    ``res_factor``, so the full-resolution gradient is the phase-resolution one upsampled and divided by
    ``res_factor ** 2``: its norm is ``||grad|| / res_factor``. Computing at the phase resolution and dividing is
    exact and avoids full-resolution activations.
    """
    del scale
    points = points.detach().requires_grad_(True)
    out = D(points)
    (grad,) = torch.autograd.grad(out.float().sum(), points, create_graph=True)
    norm = grad.float().flatten(1).norm(2, dim=1) / res_factor
    return weight * ((norm - 1.0) ** 2).mean()


def wgan_gp_penalty(
    D: DFn, real: Tensor, fake: Tensor, weight: float, scale: float | Tensor = 1.0, res_factor: float = 1.0
) -> Tensor:
    """WGAN-GP: penalty on uniform interpolates between real and fake samples."""
    alpha = per_sample(lambda size: torch.rand(size, device=real.device, dtype=real.dtype), (real.shape[0], 1, 1, 1))
    return gradient_norm_penalty(D, torch.lerp(real, fake.detach(), alpha), weight, scale, res_factor)


def dragan_points(real: Tensor) -> Tensor:
    """DRAGAN: x + alpha * (x_p - x) with x_p = x + 0.5 * std(x) * U[0, 1] and alpha ~ U[0, 1] per sample."""
    rand = lambda size: torch.rand(size, device=real.device, dtype=real.dtype)  # noqa: E731
    perturbed = real + 0.5 * real.std() * per_sample(rand, tuple(real.shape))
    alpha = per_sample(rand, (real.shape[0], 1, 1, 1))
    return real + alpha * (perturbed - real)


def r1_from_logits(real_logits: Tensor, points: Tensor, weight: float, res_factor: float = 1.0) -> Tensor:
    """R1 from D's logits on ``points`` (reals with requires_grad, the same forward the D loss uses: no extra D
    forward); unscaled fp32 inner gradient; ``res_factor`` as :func:`gradient_norm_penalty` (squared norm / f^2)."""
    (grad,) = torch.autograd.grad(real_logits.float().sum(), points, create_graph=True)
    return 0.5 * weight * grad.float().square().flatten(1).sum(1).mean() / (res_factor * res_factor)


def r1_penalty(
    D: DFn, real: Tensor, fake: Tensor, weight: float, scale: float | Tensor = 1.0, res_factor: float = 1.0
) -> Tensor:
    """R1 (Mescheder et al. 2018), StyleGAN's regulariser: gamma / 2 * E[||grad_x D(x_real)||^2].
    ``scale`` is ignored (see :func:`gradient_norm_penalty`); training fuses it with the D loss's real forward
    (``steps.R1Loss``)."""
    del scale
    points = real.detach().requires_grad_(True)
    return r1_from_logits(D(points), points, weight, res_factor)


def dragan_penalty(
    D: DFn, real: Tensor, fake: Tensor, weight: float, scale: float | Tensor = 1.0, res_factor: float = 1.0
) -> Tensor:
    return gradient_norm_penalty(D, dragan_points(real), weight, scale, res_factor)


# --- families -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    name: str
    d_loss: Callable[[Tensor, Tensor], Tensor]
    g_loss: Callable[[Tensor], Tensor]
    lr: float
    betas: tuple[float, float]
    n_critic: int = 1  # D steps per G step
    g_norm: str = "batch"
    d_norm: str = "batch"
    penalty: Callable[..., Tensor] | None = None
    penalty_weight: float = 0.0
    reference: str = ""
    arch: str = "dcgan"  # NetConfig.arch: dcgan | progan | stylegan | projected
    diffaug: bool = False  # DiffAugment before D whatever --diffaug says (Projected GAN's D includes it)
    cutout: float = 0.5  # DiffAugment's cutout square, a share of the image side (the paper's 1/2)
    reset_opt_per_phase: bool = False  # progressive families: fresh Adam state when the lod changes
    stable_kimg: float = 600.0  # progressive families: per resolution
    fade_kimg: float = 600.0
    start_resolution: int = 4  # progressive families: ProGAN starts at 4x4, StyleGAN's configs at 8x8
    lr_decay: bool = False  # linear decay of the lr to 0 at the end of the run (SNGAN's reference)
    g_batch_mul: int = 1  # generator batch = this x the D batch (SNGAN's reference: 2)
    lr_schedule: str = ""  # published per-resolution lr table, "RES:LR,..." (the CLI's --lr-schedule auto)
    batch_schedule: str = ""  # published per-resolution batch table (the CLI's --batch-schedule auto)
    # How the family's steps run (ganime_steps.gan.steps.family_loss picks the step object from these two and penalty)
    penalty_on_reals: bool = False  # R1: the penalty reuses D's forward on the reals (one D forward fewer)
    # The G step trains on the D step's fakes (DCGAN's reference loop): one G forward per iteration, not two.
    # Only where one D step and one G batch of the same size make an iteration (n_critic 1, g_batch_mul 1).
    g_step_reuses_fakes: bool = False

    def __post_init__(self) -> None:
        if self.g_step_reuses_fakes and (self.n_critic != 1 or self.g_batch_mul != 1):
            raise ValueError(f"family {self.name}: g_step_reuses_fakes needs n_critic 1 and g_batch_mul 1")

    @property
    def progressive(self) -> bool:
        return self.arch in ("progan", "stylegan")


# What the progressive families (Karras et al.) share: Adam(0, 0.99) at 1e-3, no normalisation layers from
# NetConfig (their networks bring their own: pixel norm, AdaIN), penalty weight 10, optimiser reset per resolution.
PROGRESSIVE_SETUP: dict[str, Any] = {
    "lr": 1e-3,
    "betas": (0.0, 0.99),
    "g_norm": "none",
    "d_norm": "none",
    "penalty_weight": 10.0,
    "reset_opt_per_phase": True,
}

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "dcgan",
            nonsat_d_loss,
            nonsat_g_loss,
            lr=2e-4,
            betas=(0.5, 0.999),
            d_norm="batch",
            reference="Radford et al. 2016",
            g_step_reuses_fakes=True,
        ),
        Family(
            "wgan-gp",
            wasserstein_d_loss,
            wasserstein_g_loss,
            lr=1e-4,
            betas=(0.0, 0.9),
            n_critic=5,
            d_norm="layer",
            penalty=wgan_gp_penalty,
            penalty_weight=10.0,
            reference="Gulrajani et al. 2017",
        ),
        Family(
            "dragan",
            nonsat_d_loss,
            nonsat_g_loss,
            lr=1e-4,
            betas=(0.5, 0.9),
            d_norm="layer",
            penalty=dragan_penalty,
            penalty_weight=10.0,
            reference="Kodali et al. 2017",
        ),
        Family(
            "sngan",
            hinge_d_loss,
            hinge_g_loss,
            lr=2e-4,
            betas=(0.0, 0.9),
            n_critic=5,
            d_norm="spectral",
            reference="Miyato et al. 2018",
            lr_decay=True,
            g_batch_mul=2,
        ),
        Family(
            "progan",
            wasserstein_drift_d_loss,
            wasserstein_g_loss,
            penalty=wgan_gp_penalty,
            reference="Karras et al. 2018",
            arch="progan",
            **PROGRESSIVE_SETUP,
        ),
        Family(
            "stylegan",
            nonsat_d_loss,
            nonsat_g_loss,
            penalty=r1_penalty,
            reference="Karras et al. 2019",
            arch="stylegan",
            **PROGRESSIVE_SETUP,
            start_resolution=8,
            lr_schedule=STYLEGAN_LR_SCHEDULE,
            batch_schedule=STYLEGAN_BATCH_SCHEDULE,
            penalty_on_reals=True,
        ),
        Family(
            "projected",
            hinge_d_loss,
            hinge_g_loss,
            lr=2e-4,
            betas=(0.0, 0.99),
            g_norm="batch",
            d_norm="spectral",
            reference="Sauer et al. 2021",
            arch="projected",
            diffaug=True,
            cutout=0.2,  # the official code's DiffAugment (pg_modules/diffaug.py)
        ),
    )
}


def available_families() -> list[str]:
    return sorted(FAMILIES)


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise GanimeError(
            f"--family {name}: unknown GAN family; available: {', '.join(available_families())}"
        ) from None
