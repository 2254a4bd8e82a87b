"""GAN families (DCGAN, WGAN-GP, DRAGAN, SNGAN, ProGAN, StyleGAN) in one training loop.

Public API used by the evaluate stage: :func:`load_generator` and :func:`generate_images` (fresh StyleGAN noise per
image by default), :func:`recalibrate_batch_norm` (BN statistics for an averaged generator's own weights).
"""

from __future__ import annotations

from ganime_steps.gan.losses import FAMILIES, Family, available_families, get_family
from ganime_steps.gan.networks import (
    NOISE_MODES,
    Discriminator,
    Generator,
    NetConfig,
    generate_images,
    latents_for_seeds,
    load_generator,
    noise_seeds_for,
    recalibrate_batch_norm,
    synthesize,
)

__all__ = [
    "FAMILIES",
    "NOISE_MODES",
    "Discriminator",
    "Family",
    "Generator",
    "NetConfig",
    "available_families",
    "generate_images",
    "get_family",
    "latents_for_seeds",
    "load_generator",
    "noise_seeds_for",
    "recalibrate_batch_norm",
    "synthesize",
]
