"""Each family's training step as an object with ``d_step`` and ``g_step`` (stylegan2-ada's
``Loss.accumulate_gradients``): what D and G see and what they minimise. The loop
(:meth:`~ganime_steps.gan.loop.Trainer._iteration_body`) only draws the inputs, steps the optimisers and counts
images; everything a family does differently is here:

- :class:`Loss` (sngan, projected): D on the reals and on fakes made without G's graph; G on fresh latents,
  ``g_batch_mul`` times the D batch; no penalty.
- :class:`ReusedFakesLoss` (dcgan): the D step's fakes keep G's graph and the G step trains on them (one G forward
  per iteration, as the reference loops).
- :class:`PenaltyLoss` (wgan-gp, dragan, progan): the family's gradient penalty on its own points (interpolates,
  perturbed reals) through its own D forward.
- :class:`R1Loss` (stylegan): R1 on the reals, from the reals' D forward that the D loss uses.

``n_critic`` D steps make one iteration (the loop runs them). Every random draw (latents, DiffAugment, penalty
points) comes from the global torch RNG in a fixed order: real batch, latents, G, D on reals, D on fakes, penalty;
then the G step's latents, G, D. A resumed run redraws them exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch

from ganime_steps.gan import augment
from ganime_steps.gan.losses import Family, r1_from_logits

Tensor = torch.Tensor


@dataclass(frozen=True)
class StepNets:
    """What a step runs, from the Trainer: G at the phase's resolution, D for the losses (compiled under
    --compile), D for gradient penalties (double backward: never compiled), this rank's latents, and the precision
    contexts (penalties' D forwards in fp32 under fp16)."""

    G: Callable[[Tensor], Tensor]
    D: Callable[[Tensor], Tensor]
    D_eager: Callable[[Tensor], Tensor]
    latents: Callable[[int], Tensor]
    autocast: Callable[[], contextlib.AbstractContextManager]
    penalty_autocast: Callable[[], contextlib.AbstractContextManager]


class DStep(NamedTuple):
    """One D step's losses (0-d tensors with their graphs) and, where the family trains G on them, its fakes."""

    loss: Tensor
    penalty: Tensor
    fake_for_g: Tensor | None = None


class Loss:
    """The base step: D on the reals and on detached fakes, G on fresh latents; no gradient penalty."""

    def __init__(self, family: Family, nets: StepNets, diffaug: bool) -> None:
        self.family = family
        self.nets = nets
        self.diffaug = diffaug
        self.n_critic = family.n_critic  # D steps per G step
        self.g_batch_mul = family.g_batch_mul  # G batch = this x the D batch

    def run_D(self, x: Tensor) -> Tensor:
        """D for the losses, after DiffAugment where the run uses it; logits in fp32 even under autocast."""
        if self.diffaug:
            x = augment.diff_augment(x, self.family.cutout)
        return self.nets.D(x).float()

    def run_D_eager(self, x: Tensor) -> Tensor:
        """D for gradient penalties (double backward: never compiled), after DiffAugment where the run uses it."""
        if self.diffaug:
            x = augment.diff_augment(x, self.family.cutout)
        return self.nets.D_eager(x).float()

    def fakes(self, z: Tensor) -> tuple[Tensor, Tensor | None]:
        """(fakes for D, fakes for the G step or None): here without G's graph, the G step makes its own."""
        with torch.no_grad(), self.nets.autocast():
            return self.nets.G(z).float(), None

    def d_losses(self, real: Tensor, fake: Tensor, res_factor: float) -> tuple[Tensor, Tensor]:
        """(D loss, penalty) of one D step."""
        with self.nets.autocast():
            loss = self.family.d_loss(self.run_D(real), self.run_D(fake))
        return loss, torch.zeros((), device=loss.device)

    def d_step(self, real: Tensor, z: Tensor, res_factor: float) -> DStep:
        """One D step's losses on ``real`` and G(``z``). ``res_factor``: full resolution / the phase's (progressive
        families take penalties as at full resolution, see losses.gradient_norm_penalty)."""
        fake, fake_for_g = self.fakes(z)
        loss, penalty = self.d_losses(real, fake, res_factor)
        return DStep(loss, penalty, fake_for_g)

    def g_step(self, last: DStep, batch_size: int) -> Tensor:
        """G's loss after the iteration's D steps (``last``: the last one); D's parameters are frozen by the loop."""
        with self.nets.autocast():
            fake = self.nets.G(self.nets.latents(batch_size * self.g_batch_mul)).float()
            return self.family.g_loss(self.run_D(fake))


class ReusedFakesLoss(Loss):
    """The G step trains on the D step's fakes (DCGAN's reference loop): G's graph is kept from the D step."""

    def __init__(self, family: Family, nets: StepNets, diffaug: bool) -> None:
        if family.n_critic != 1 or family.g_batch_mul != 1:
            raise ValueError(f"family {family.name}: reused fakes need n_critic 1 and g_batch_mul 1")
        super().__init__(family, nets, diffaug)

    def fakes(self, z: Tensor) -> tuple[Tensor, Tensor | None]:
        with self.nets.autocast():
            fake_for_g = self.nets.G(z).float()
        return fake_for_g.detach(), fake_for_g

    def g_step(self, last: DStep, batch_size: int) -> Tensor:
        assert last.fake_for_g is not None
        with self.nets.autocast():
            return self.family.g_loss(self.run_D(last.fake_for_g))


class PenaltyLoss(Loss):
    """The family's gradient penalty (``family.penalty``: WGAN-GP's interpolates, DRAGAN's perturbed reals) on its
    own points, through its own eager D forward, after the D loss."""

    def d_losses(self, real: Tensor, fake: Tensor, res_factor: float) -> tuple[Tensor, Tensor]:
        fam = self.family
        with self.nets.autocast():
            loss = fam.d_loss(self.run_D(real), self.run_D(fake))
        with self.nets.penalty_autocast():
            penalty = fam.penalty(self.run_D_eager, real, fake, fam.penalty_weight, res_factor=res_factor)
        return loss, penalty


class R1Loss(Loss):
    """R1 on the reals (StyleGAN): the reals' D forward (eager, with grad w.r.t. the reals) serves the D loss and
    the penalty: one D forward fewer than a separate penalty."""

    def d_losses(self, real: Tensor, fake: Tensor, res_factor: float) -> tuple[Tensor, Tensor]:
        fam = self.family
        real = real.detach().requires_grad_(True)
        with self.nets.penalty_autocast():
            real_logits = self.run_D_eager(real)
        with self.nets.autocast():
            loss = fam.d_loss(real_logits, self.run_D(fake))
        return loss, r1_from_logits(real_logits, real, fam.penalty_weight, res_factor)


def family_loss(family: Family, nets: StepNets, diffaug: bool) -> Loss:
    """The step object for ``family``, from its flags (``g_step_reuses_fakes``, ``penalty_on_reals``,
    ``penalty``)."""
    if family.g_step_reuses_fakes:
        if family.penalty is not None:
            raise ValueError(f"family {family.name}: reused fakes with a gradient penalty is not implemented")
        return ReusedFakesLoss(family, nets, diffaug)
    if family.penalty_on_reals:
        return R1Loss(family, nets, diffaug)
    if family.penalty is not None:
        return PenaltyLoss(family, nets, diffaug)
    return Loss(family, nets, diffaug)
