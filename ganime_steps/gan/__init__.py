"""GAN families (DCGAN, WGAN-GP, DRAGAN, SNGAN, ProGAN, StyleGAN) in one training loop.

Public API used by the evaluate stage: :func:`load_generator` and :func:`generate_images`.
"""

from __future__ import annotations

from ganime_steps.gan.losses import FAMILIES, Family, available_families, get_family
from ganime_steps.gan.networks import (
    Discriminator,
    Generator,
    NetConfig,
    generate_images,
    latents_for_seeds,
    load_generator,
    synthesize,
)

__all__ = [
    "FAMILIES",
    "Discriminator",
    "Family",
    "Generator",
    "NetConfig",
    "available_families",
    "generate_images",
    "get_family",
    "latents_for_seeds",
    "load_generator",
    "synthesize",
]
