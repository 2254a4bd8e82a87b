"""A cheap Fréchet distance in downsampled pixel space: for tests, toy runs and a CPU-only metric over training.

Images are box-downsampled to ``size`` x ``size`` and flattened (values in [0, 1]); the Fréchet distance between two
Gaussians fitted to those vectors is reported as ``pixel_fd``. It is *not* FID (no Inception features) and is never
labelled as such; it does see colour, layout and diversity, which is what a toy distribution needs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ganime_steps.gan.networks import generate_images


def pixel_features(images: np.ndarray, size: int = 4) -> np.ndarray:
    """uint8 (N, H, W, 3) -> float64 (N, size * size * 3) in [0, 1], area-averaged down to size x size."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).double().div_(255.0)
    if x.shape[-1] != size:
        x = F.adaptive_avg_pool2d(x, size)
    return x.flatten(1).numpy()


def frechet_distance(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2), through symmetric eigendecompositions (stable for
    rank-deficient covariances; torch's, which keep to torch's thread setting)."""
    a, b = torch.from_numpy(np.asarray(s1, np.float64)), torch.from_numpy(np.asarray(s2, np.float64))
    w, v = torch.linalg.eigh(a)
    half = (v * w.clamp(min=0).sqrt()) @ v.T
    m = half @ b @ half
    tr_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum().item()
    return float(np.square(mu1 - mu2).sum() + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt)


def stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return features.mean(0), np.cov(features, rowvar=False)


def pixel_fd(real: np.ndarray, fake: np.ndarray, size: int = 4) -> float:
    """Fréchet distance between two uint8 image sets in ``size`` x ``size`` pixel space."""
    return frechet_distance(*stats(pixel_features(real, size)), *stats(pixel_features(fake, size)))


class PixelFD:
    """A ``snapshot_metric`` for :class:`~ganime_steps.gan.loop.Trainer`: ``{"pixel_fd": ...}`` of ``n`` images of
    G (fixed ``seed``, fresh StyleGAN noise per image) against ``real`` (uint8 (N, H, W, 3))."""

    def __init__(self, real: np.ndarray, n: int = 256, seed: int = 0, size: int = 4, key: str = "pixel_fd") -> None:
        self.mu, self.sigma = stats(pixel_features(np.asarray(real), size))
        self.n, self.seed, self.size, self.key = n, seed, size, key

    def __call__(self, G: torch.nn.Module) -> dict[str, Any]:
        fake = generate_images(G, self.n, seed=self.seed)
        return {self.key: frechet_distance(*stats(pixel_features(fake, self.size)), self.mu, self.sigma)}
