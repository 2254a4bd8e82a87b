"""Real batches for training: the packed set (memory-mapped, on the device, or read ahead by a thread), drawn
from the run's numpy Generator so that every path gives bit-identical batches and a checkpoint resumes them exactly.

:func:`load_dataset` checks and maps the pack stage's ``.npy``; :func:`sample_real` is the plain memmap path;
:class:`DeviceDataset` (the set on the GPU) and :class:`PrefetchLoader` (the next batch read on a thread) draw the
same indices and flips; :class:`RealBatches` picks one of the three for a run and brings a batch to the phase's
resolution (progressive families).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ganime_steps.common import GanimeError
from ganime_steps.gan.progressive import Phase, resize_reals
from ganime_steps.metrics.images import load_packed

DEVICE_DATA_FRACTION = 0.25  # the packed set goes onto the GPU when it takes at most this share of free memory


def load_dataset(path: Path, resolution: int) -> np.ndarray:
    """Memory-map a packed uint8 (N, R, R, 3) array (:func:`~ganime_steps.metrics.images.load_packed`, the one
    ``.npy`` image reader) and check it holds square images at ``resolution``; GanimeError naming the file and the
    fix otherwise."""
    arr = load_packed(path, "--data")
    _, h, w, _ = arr.shape
    if h != w:
        raise GanimeError(f"--data {path}: images are {h}x{w}, not square; rerun the pack stage")
    if h != resolution:
        raise GanimeError(
            f"--data {path}: images are {h}x{w} but --resolution is {resolution}; "
            f"pass --resolution {h} or pack the dataset at {resolution}"
        )
    return arr


def draw_batch(
    rng: np.random.Generator, n: int, batch_size: int, shard: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted indices (the memmap is read front to back; order inside a batch does not matter to D) and flip flags
    of one batch. ``shard`` (rank, world): the global batch is drawn and this rank's rows ``rank::world`` kept."""
    idx = np.sort(rng.choice(n, size=batch_size, replace=n < batch_size))
    flip = rng.random(batch_size) < 0.5
    if shard is not None:
        rank, world = shard
        idx, flip = idx[rank::world], flip[rank::world]
    return idx, flip


def sample_real(
    images: np.ndarray,
    rng: np.random.Generator,
    batch_size: int,
    device: torch.device,
    channels_last: bool,
    shard: tuple[int, int] | None = None,
) -> torch.Tensor:
    """A random batch from the memmap (only these rows are read) as float in [-1, 1], randomly h-flipped."""
    idx, flip = draw_batch(rng, len(images), batch_size, shard)
    x = np.array(images[idx])  # (B, H, W, 3) uint8 copy
    x[flip] = x[flip, :, ::-1]
    t = torch.from_numpy(x)
    if device.type == "cuda":
        t = t.pin_memory().to(device, non_blocking=True)
    t = t.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    return t.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


class DeviceDataset:
    """The packed uint8 set as one (N, H, W, 3) tensor on the training device (a 128 px set of 50k images is
    2.5 GB: it fits a GPU many times over). Batches are gathered and flipped there; only the indices and flip
    flags cross from the host (pinned, non-blocking: no sync). The indices and flips are drawn from the same numpy
    Generator in the same order as :func:`sample_real`, so a batch is bit-identical to the memmap path's and the
    checkpointed RNG state resumes it exactly."""

    def __init__(self, images: np.ndarray, device: torch.device) -> None:
        self.device = device
        self.images = torch.empty(images.shape, dtype=torch.uint8, device=device)
        step = max(1, (256 << 20) // max(1, images[0].nbytes))  # copy in ~256 MB chunks: no full host copy on CUDA
        for start in range(0, len(images), step):
            chunk = torch.from_numpy(np.array(images[start : start + step]))
            self.images[start : start + len(chunk)].copy_(chunk)

    def __len__(self) -> int:
        return len(self.images)

    @staticmethod
    def fits(images: np.ndarray, device: torch.device, fraction: float = DEVICE_DATA_FRACTION) -> bool:
        if device.type != "cuda":
            return False
        free, _ = torch.cuda.mem_get_info(device)
        return images.nbytes <= fraction * free

    def sample(
        self, rng: np.random.Generator, batch_size: int, channels_last: bool, shard: tuple[int, int] | None = None
    ) -> torch.Tensor:
        idx, flip = draw_batch(rng, len(self.images), batch_size, shard)
        idx_t, flip_t = torch.from_numpy(idx), torch.from_numpy(flip)
        if self.device.type == "cuda":
            idx_t = idx_t.pin_memory().to(self.device, non_blocking=True)
            flip_t = flip_t.pin_memory().to(self.device, non_blocking=True)
        x = self.images.index_select(0, idx_t)  # (B, H, W, 3) uint8
        x = torch.where(flip_t.view(-1, 1, 1, 1), x.flip(2), x)
        t = x.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        return t.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


class PrefetchLoader:
    """For a set too large for the device: the next batch is read from the memmap, flipped and pinned by a worker
    thread while the current step runs, then copied non-blocking. The next batch's indices and flips are drawn
    (on the main thread, from the run's numpy Generator) right after the current one, so the draws are exactly
    those of :func:`sample_real`; :meth:`rng_state` is the Generator state *before* a pending draw (what the
    checkpoint stores), and a pending batch of another size (a new phase) is dropped and its draw rewound."""

    def __init__(self, images: np.ndarray, device: torch.device) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.images, self.device = images, device
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ganime-prefetch")
        self.pending: tuple[int, tuple[int, int] | None, dict, Any] | None = None

    def _read(self, idx: np.ndarray, flip: np.ndarray) -> torch.Tensor:
        x = np.array(self.images[idx])
        x[flip] = x[flip, :, ::-1]
        t = torch.from_numpy(x)
        return t.pin_memory() if self.device.type == "cuda" else t

    def rng_state(self, rng: np.random.Generator) -> dict:
        return self.pending[2] if self.pending is not None else rng.bit_generator.state

    def sample(
        self, rng: np.random.Generator, batch_size: int, channels_last: bool, shard: tuple[int, int] | None = None
    ) -> torch.Tensor:
        pending, self.pending = self.pending, None
        if pending is not None and pending[:2] == (batch_size, shard):
            t = pending[3].result()
        else:
            if pending is not None:  # another batch size: rewind the prefetched draw
                pending[3].cancel()
                rng.bit_generator.state = pending[2]
            t = self._read(*draw_batch(rng, len(self.images), batch_size, shard))
        before = rng.bit_generator.state
        job = self.pool.submit(self._read, *draw_batch(rng, len(self.images), batch_size, shard))
        self.pending = (batch_size, shard, before, job)
        if self.device.type == "cuda":
            t = t.to(self.device, non_blocking=True)
        t = t.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        return t.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


class RealBatches:
    """A run's source of real batches: the set on the device when asked (``on_device``; None: on CUDA when it
    fits), else a read-ahead thread on CUDA, else the plain memmap (CPU: bit-identical to the others). Progressive
    runs get the batch at the phase's resolution (blended at fade-in)."""

    def __init__(
        self,
        images: np.ndarray,
        device: torch.device,
        *,
        on_device: bool | None,
        channels_last: bool,
        progressive: bool,
        shard: tuple[int, int] | None,
    ) -> None:
        self.images, self.device, self.channels_last = images, device, channels_last
        self.progressive, self.shard = progressive, shard
        on_device = DeviceDataset.fits(images, device) if on_device is None else on_device
        self.device_data = DeviceDataset(images, device) if on_device else None
        # CUDA, set too large for the device: read ahead on a thread (CPU: the plain memmap path, bit-identical)
        self.prefetch = PrefetchLoader(images, device) if device.type == "cuda" and not on_device else None

    def rng_state(self, rng: np.random.Generator) -> dict:
        """The Generator's state before any read-ahead draw (what a checkpoint stores: a resumed run redraws it)."""
        return self.prefetch.rng_state(rng) if self.prefetch else rng.bit_generator.state

    def sample(self, rng: np.random.Generator, phase: Phase) -> torch.Tensor:
        """One batch of ``phase.batch_size`` reals (this rank's share under data parallel) in [-1, 1]."""
        batch_size, channels_last, shard = phase.batch_size, self.channels_last, self.shard
        if self.device_data is not None:
            real = self.device_data.sample(rng, batch_size, channels_last, shard)
        elif self.prefetch is not None:
            real = self.prefetch.sample(rng, batch_size, channels_last, shard)
        else:
            real = sample_real(self.images, rng, batch_size, self.device, channels_last, shard)
        if self.progressive:
            real = resize_reals(real, phase)
            if channels_last:
                real = real.contiguous(memory_format=torch.channels_last)
        return real
