"""GAN families as (network options, loss, optimiser defaults), selected by name from :data:`FAMILIES`.

Losses work on logits. ``d_loss(real_logits, fake_logits)``, ``g_loss(fake_logits)``; an optional gradient
penalty ``penalty(D, real, fake, weight, scale)`` receives D as a callable (it may include DiffAugment).

Published defaults:
- dcgan   Radford et al. 2016: non-saturating BCE, BN in G and D, Adam 2e-4 (0.5, 0.999).
- wgan-gp Gulrajani et al. 2017: Wasserstein loss + GP (lambda 10) on real/fake interpolates, n_critic 5,
          Adam 1e-4 (0.0, 0.9); no batch-norm in the critic (layer norm instead, as the paper recommends).
- dragan  Kodali et al. 2017: non-saturating BCE + GP (lambda 10) around real samples perturbed by
          0.5 * std(x) * U[0, 1]; no batch-norm in D (layer norm); the paper runs its comparisons on the DCGAN
          setup, so Adam 2e-4 (0.5, 0.999), n_critic 1.
- sngan   Miyato et al. 2018: hinge loss, spectral norm on every D conv, Adam 2e-4 (0.0, 0.9) with n_dis 5
          (the setting those betas come from in the paper and its official code; with n_dis 1 the paper uses
          beta1 0.5 instead).
- progan  Karras et al. 2018: progressive growing with fade-in, equalized lr, pixel norm, minibatch stddev;
          WGAN-GP (lambda 10, n_critic 1) plus the drift term 0.001 * E[D(x)^2]; Adam 1e-3 (0.0, 0.99), eps 1e-8,
          optimiser state reset at each phase change; 600 kimg stable + 600 kimg fade-in per resolution.
- stylegan Karras et al. 2019 (v1, progressive): non-saturating logistic loss with R1 (gamma 10) on reals,
          Adam 1e-3 (0.0, 0.99), eps 1e-8, optimiser reset per phase, style mixing 0.9, 600 + 600 kimg per
          resolution (the paper's lr/minibatch-per-resolution tables are left to ``--batch-schedule``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ganime_steps.common import GanimeError

Tensor = torch.Tensor
DRIFT_EPSILON = 1e-3  # ProGAN's epsilon_drift
DFn = Callable[[Tensor], Tensor]


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


def gradient_norm_penalty(D: DFn, points: Tensor, weight: float, scale: float | Tensor = 1.0) -> Tensor:
    """weight * E[(||grad_x D(x)||_2 - 1)^2] at ``points``.

    ``scale``: the fp16 GradScaler's current scale; the inner gradient is taken of the scaled output (so it
    does not underflow) and unscaled before the norm, as in PyTorch's AMP gradient-penalty recipe.
    """
    points = points.detach().requires_grad_(True)
    out = D(points)
    (grad,) = torch.autograd.grad((out.float().sum() * scale), points, create_graph=True)
    grad = grad.float() / scale
    norm = grad.flatten(1).norm(2, dim=1)
    return weight * ((norm - 1.0) ** 2).mean()


def wgan_gp_penalty(D: DFn, real: Tensor, fake: Tensor, weight: float, scale: float | Tensor = 1.0) -> Tensor:
    """WGAN-GP: penalty on uniform interpolates between real and fake samples."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    return gradient_norm_penalty(D, torch.lerp(real, fake.detach(), alpha), weight, scale)


def dragan_points(real: Tensor) -> Tensor:
    """DRAGAN: x + alpha * (x_p - x) with x_p = x + 0.5 * std(x) * U[0, 1] and alpha ~ U[0, 1] per sample."""
    perturbed = real + 0.5 * real.std() * torch.rand_like(real)
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    return real + alpha * (perturbed - real)


def r1_penalty(D: DFn, real: Tensor, fake: Tensor, weight: float, scale: float | Tensor = 1.0) -> Tensor:
    """R1 (Mescheder et al. 2018), StyleGAN's regulariser: gamma / 2 * E[||grad_x D(x_real)||^2]."""
    points = real.detach().requires_grad_(True)
    out = D(points)
    (grad,) = torch.autograd.grad((out.float().sum() * scale), points, create_graph=True)
    grad = grad.float() / scale
    return 0.5 * weight * grad.square().flatten(1).sum(1).mean()


def dragan_penalty(D: DFn, real: Tensor, fake: Tensor, weight: float, scale: float | Tensor = 1.0) -> Tensor:
    return gradient_norm_penalty(D, dragan_points(real), weight, scale)


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
    arch: str = "dcgan"  # NetConfig.arch: dcgan | progan | stylegan
    reset_opt_per_phase: bool = False  # progressive families: fresh Adam state when the lod changes
    stable_kimg: float = 600.0  # progressive families: per resolution
    fade_kimg: float = 600.0
    start_resolution: int = 4  # progressive families: ProGAN starts at 4x4, StyleGAN's configs at 8x8

    @property
    def progressive(self) -> bool:
        return self.arch in ("progan", "stylegan")


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
            lr=2e-4,
            betas=(0.5, 0.999),
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
        ),
        Family(
            "progan",
            wasserstein_drift_d_loss,
            wasserstein_g_loss,
            lr=1e-3,
            betas=(0.0, 0.99),
            g_norm="none",
            d_norm="none",
            penalty=wgan_gp_penalty,
            penalty_weight=10.0,
            reference="Karras et al. 2018",
            arch="progan",
            reset_opt_per_phase=True,
        ),
        Family(
            "stylegan",
            nonsat_d_loss,
            nonsat_g_loss,
            lr=1e-3,
            betas=(0.0, 0.99),
            g_norm="none",
            d_norm="none",
            penalty=r1_penalty,
            penalty_weight=10.0,
            reference="Karras et al. 2019",
            arch="stylegan",
            reset_opt_per_phase=True,
            start_resolution=8,
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
