"""Shared by the training benchmarks (bench_gpu, bench_train): a random packed set, the benchmarked TrainConfig and a
device sync before reading the clock."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ganime_steps.common import save_npy
from ganime_steps.gan import get_family
from ganime_steps.gan.loop import TrainConfig


def random_dataset(path: Path, n: int, resolution: int) -> Path:
    """A packed set of ``n`` uniform-noise images (seed 0): the loop's speed does not depend on the content."""
    rng = np.random.default_rng(0)
    save_npy(path, rng.integers(0, 256, (n, resolution, resolution, 3), dtype=np.uint8))
    return path


def bench_config(
    family: str, *, resolution: int, batch: int, channels: int, amp: str, channels_last: bool, compile_: bool
) -> TrainConfig:
    """An endless run of ``family`` at its published lr; progressive families at their full network."""
    return TrainConfig(
        family=family,
        resolution=resolution,
        kimg=1e6,
        batch_size=batch,
        lr=get_family(family).lr,
        channels=channels,
        z_dim=128,
        seed=0,
        start_resolution=resolution,  # progressive families: the full network
        amp=amp,
        channels_last=channels_last,
        compile=compile_,  # the project's --compile path (warm-up, eager fallback with a warning)
    )


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (timings read the host clock)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
