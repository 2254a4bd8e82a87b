"""One training loop for every GAN family: kimg schedule, G EMA, AMP, checkpoints with exact resume, NaN guard.

Time is counted in images shown to D (kimg, as in ProGAN/StyleGAN): one iteration is ``n_critic`` D steps of
``batch_size`` real images each, then one G step (on fresh latents, or on the D step's fakes where the family
says so: DCGAN). Training stops at the first iteration boundary at or past
the target, so a run stopped at N/2 kimg and resumed to N passes through exactly the same iterations.

Progressive families (ProGAN, StyleGAN) follow a :class:`GrowthSchedule`: the phase (resolution, fade-in alpha,
lod, batch size) is a function of the images shown so far, evaluated at the start of every iteration; reals are
downsampled to the phase's resolution and blended at fade-in; the optimiser state is reset when the lod crosses
an integer (the official ``reset_opt_for_new_lod``). The last phase key is in the checkpoint, so a resume inside
a fade-in continues exactly.

Exact resume (CPU): every source of randomness is either the global torch RNG (latents, penalties, DiffAugment),
a numpy Generator (batch indices, flips) or Python's ``random``; all three states, both optimisers, both grad
scalers, the BN / spectral-norm buffers and the log rows are in ``checkpoint.pt``. On CUDA, cuDNN autotuning is
on for speed, so resumed runs match statistically but not bit for bit.

GPU path: ``--amp auto`` is bf16 on GPUs with native bf16, else fp16 with GradScaler and fused Adam (which takes
the scaler's found-inf flag on the device: no host sync per step in any precision mode); gradient penalties take
their inner gradient unscaled in fp32; R1 reuses the reals' D forward. The packed set lives on the GPU when it fits
(:class:`DeviceDataset`), else a thread reads the next batch ahead (:class:`PrefetchLoader`); both draw exactly the
memmap path's indices and flips, so exact resume is unchanged. ``--compile`` compiles G and D (eager fallback).
Data parallel over N GPUs with torchrun: see :class:`Trainer`.

Batch norm and G_ema: :func:`update_ema` copies G's BN running statistics into G_ema, but those describe G's
weights, not the averaged ones. Before every use of G_ema (checkpoint, sample grid, metric, export) its BN
statistics are re-estimated on fresh latents (:func:`~ganime_steps.gan.networks.recalibrate_batch_norm`, its own
seeded generator: the training RNG streams are untouched); the exported ``generator.pt`` carries them.

Metrics over training: an optional ``snapshot_metric(G_ema) -> dict`` runs at checkpoints (every
``metrics_every`` kimg, a multiple of ``checkpoint_every``; default every checkpoint, and always at the end) with
G_ema in eval mode and every global RNG state saved and restored around it. One JSON object per snapshot goes to
``metrics.jsonl`` (``kimg``, ``step``, ``images_seen``, the phase, the last log window's loss means, the
metrics, ``seconds``, ``metric_seconds``, ``timestamp``); the rows are also in the checkpoint, so a resumed run
rewrites the file with exactly the rows up to its checkpoint. The snapshot with the lowest ``metric_key`` is
exported as ``generator_best.pt`` (generator.pt's format plus ``kimg``, ``metric_key``, ``metric``, ``metrics``).
With ``metric_at_start`` (the train stage's setting) a fresh run measures the untrained G_ema first: the curve starts
with a kimg-0 row. The metric's ``identity`` (``evaluate.SnapshotMetric``: the reference's content hash, n_fake,
n_real) goes into every row, the checkpoint and generator_best.pt; a resume with another identity drops the rows
measured otherwise (one log line), re-picks the best among those left (removing generator_best.pt if it belonged to a
dropped row), and, with no rows left, measures the checkpoint's G_ema before training on.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import datetime
import io
import json
import logging
import math
import os
import random
import resource
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.deterministic

from ganime_steps.checkpoints import load_torch_file
from ganime_steps.codedeps import code_fingerprint, training_files
from ganime_steps.common import (
    GanimeError,
    file_digest,
    progress,
    save_image,
    seed_everything,
    torch_save,
    write_text,
)
from ganime_steps.gan.losses import Family, data_parallel_shard, get_family, per_sample, r1_from_logits
from ganime_steps.gan.networks import (
    CHECKPOINT_FORMAT,
    PROGRESSIVE_ARCHS,
    NetConfig,
    build_networks,
    count_params,
    export_generator,
    images_to_uint8,
    recalibrate_batch_norm,
)
from ganime_steps.gan.progressive import (
    GrowthSchedule,
    Phase,
    parse_batch_schedule,
    parse_lr_schedule,
    resize_reals,
)
from ganime_steps.imaging import make_grid

log = logging.getLogger(__name__)

LOG_COLUMNS = (
    "step",
    "kimg",
    "phase",
    "resolution",
    "alpha",
    "lod",
    "loss_g",
    "loss_d",
    "penalty",
    "seconds",
    "img_per_s",
    "max_mem_mb",
)
GRID_SIZE = 64  # fixed latents in samples.png (8 x 8)
AMP_MODES = ("auto", "bf16", "fp16", "off")
LOG_WRITE_S = 30.0  # log.csv is rewritten whole (atomically): at most this often, plus at checkpoints and the end
# Settings that define the networks: a checkpoint is only resumed when all of these match.
ARCH_KEYS = ("family", "resolution", "channels", "z_dim")
METRICS_FILE = "metrics.jsonl"
BEST_FILE = "generator_best.pt"
BN_SEED_STREAM = 0x626E  # G_ema's BN recalibration latents: seed + this, never the training streams
SnapshotMetricFn = Callable[[torch.nn.Module], dict[str, Any]]
DEVICE_DATA_FRACTION = 0.25  # the packed set goes onto the GPU when it takes at most this share of free memory
# Data parallel: how long a rank waits in a collective. The other ranks wait in a barrier while rank 0 checkpoints
# and measures a snapshot (a 50k-sample FID can take longer than NCCL's default 10 minutes on a slow GPU).
DIST_TIMEOUT = datetime.timedelta(hours=1)


@dataclass(frozen=True)
class TrainConfig:
    family: str
    resolution: int
    kimg: float
    batch_size: int
    lr: float  # resolved: the family's default unless overridden
    channels: int
    z_dim: int
    seed: int
    ema_kimg: float = 10.0  # G_ema half-life in kimg
    ema_rampup: float | None = 0.05  # half-life <= this fraction of images seen, so tiny runs are not all-init
    checkpoint_every: float = 10.0  # kimg
    diffaug: bool = False
    amp: str = "auto"
    log_every: float | None = None  # kimg; None: min(1, kimg / 100)
    # progressive families only (None: the family's published default)
    start_resolution: int | None = None
    stable_kimg: float | None = None
    fade_kimg: float | None = None
    batch_schedule: str = ""  # "RES:BATCH,..." batch size per resolution; others use batch_size
    channels_last: bool | None = None  # None: on (faster on CUDA, and measured faster on CPU too: README)
    lr_schedule: str = ""  # "RES:LR,..." lr per resolution (progressive families); others use lr
    lr_decay_kimg: float | None = None  # linear lr decay to 0 at this many kimg (SNGAN: the run's kimg); None: off
    compile: bool = False  # torch.compile G and D (non-progressive families); falls back to eager on failure
    data_on_device: bool | None = None  # packed set as one tensor on the device; None: on CUDA when it fits
    resume_other_code: bool = False  # resume a checkpoint written by other training code (else: set aside, start over)
    # projected family only: D's feature-network input size, and its converted EfficientNet-Lite0 weights file
    # (None: resources/backbones/, then the cache; see ganime_steps.backbones.verified_weights)
    feature_resolution: int = 64
    feature_weights: str | None = None
    # TF32 matmuls and convolutions on CUDA (Ampere+): faster, 10 mantissa bits. Off by default, as stylegan2-ada
    # trains, so `--amp off` is real float32; metrics always run without it (evaluate.full_precision_matmul)
    tf32: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    step: int
    images_seen: int
    images_this_run: int
    seconds_total: float
    seconds_this_run: float
    img_per_s: float  # this run's training throughput
    resumed: bool
    device: str
    amp: str
    n_params_g: int
    n_params_d: int
    last_log: dict[str, float] = field(default_factory=dict)
    phase: dict[str, Any] = field(default_factory=dict)
    # metrics over training (only with a snapshot_metric): the best snapshot by metric_key (lowest)
    metric_key: str | None = None
    best_kimg: float | None = None
    best_metric: float | None = None
    metric_rows: int = 0


# --- data ---------------------------------------------------------------------------------------------------------


def load_dataset(path: Path, resolution: int) -> np.ndarray:
    """Memory-map a packed uint8 (N, R, R, 3) array; GanimeError naming the file and the fix otherwise."""
    path = Path(path)
    if not path.is_file():
        raise GanimeError(f"{path}: dataset file not found; run the pack stage for this dataset first")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise GanimeError(f"{path}: not a readable .npy array ({exc}); delete it and rerun the pack stage") from exc
    if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[3] != 3:
        shape = getattr(arr, "shape", None)
        raise GanimeError(
            f"{path}: expected a uint8 array (N, H, W, 3), got {getattr(arr, 'dtype', type(arr))} {shape}; "
            "rerun the pack stage"
        )
    n, h, w, _ = arr.shape
    if h != w:
        raise GanimeError(f"{path}: images are {h}x{w}, not square; rerun the pack stage")
    if h != resolution:
        raise GanimeError(
            f"{path}: images are {h}x{w} but --resolution is {resolution}; "
            f"pass --resolution {h} or pack the dataset at {resolution}"
        )
    if n == 0:
        raise GanimeError(f"{path}: the dataset is empty; loosen the cleaning settings and rerun")
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


# --- DiffAugment (Zhao et al. 2020): colour, translation 1/8, cutout ---------------------------------------------


def diff_augment(x: torch.Tensor, cutout: float = 0.5) -> torch.Tensor:
    """Differentiable augmentation applied identically to real and fake images before D. ``cutout``: the side of
    the zeroed square as a share of the image's (the DiffAugment paper's 1/2; Projected GAN's code uses 0.2)."""
    b, _, h, w = x.shape
    dev, dt = x.device, x.dtype

    def u() -> torch.Tensor:
        return per_sample(lambda size: torch.rand(size, device=dev, dtype=dt), (b, 1, 1, 1))

    def randint(low: int, high: int) -> torch.Tensor:
        return per_sample(lambda size: torch.randint(low, high, size, device=dev), (b, 1, 1))

    # colour: brightness, saturation, contrast
    x = x + (u() - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (u() * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * (u() + 0.5) + mean
    # translation by up to 1/8 of the size, zero fill
    sh, sw = int(h * 0.125 + 0.5), int(w * 0.125 + 0.5)
    ty = randint(-sh, sh + 1)
    tx = randint(-sw, sw + 1)
    gb, gy, gx = torch.meshgrid(
        torch.arange(b, device=dev), torch.arange(h, device=dev), torch.arange(w, device=dev), indexing="ij"
    )
    gy = (gy + ty + 1).clamp(0, h + 1)
    gx = (gx + tx + 1).clamp(0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)
    x = padded[gb, gy, gx].permute(0, 3, 1, 2)
    # cutout: one zeroed square per image
    ch, cw = int(h * cutout + 0.5), int(w * cutout + 0.5)
    cy = randint(0, h + (1 - ch % 2)) - ch // 2
    cx = randint(0, w + (1 - cw % 2)) - cw // 2
    rows = torch.arange(h, device=dev).view(1, h, 1)
    cols = torch.arange(w, device=dev).view(1, 1, w)
    inside = (rows >= cy) & (rows < cy + ch) & (cols >= cx) & (cols < cx + cw)
    return x * (~inside).unsqueeze(1).to(dt)


# --- helpers ------------------------------------------------------------------------------------------------------


def ema_beta(images_per_iter: int, ema_kimg: float, images_seen: int, rampup: float | None) -> float:
    """Per-iteration decay so that weights halve their influence every ``ema_kimg`` thousand images."""
    half_life = ema_kimg * 1000.0
    if rampup is not None:
        half_life = min(half_life, images_seen * rampup)
    if half_life <= 0:
        return 0.0
    return 0.5 ** (images_per_iter / half_life)


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, beta: float) -> None:
    """Parameters: exponential moving average. Buffers (lod, w_avg, BN statistics) are copied from G, as the
    official code's ``beta_nontrainable = 0``; BN statistics are re-estimated for G_ema's weights before use.
    One foreach lerp over all parameters (one fused kernel launch per dtype/device group on CUDA instead of one
    per parameter); the same arithmetic as a per-parameter ``lerp_``."""
    p_ema, p_model = list(ema.parameters()), [p.detach() for p in model.parameters()]
    if len(p_ema) != len(p_model):
        raise ValueError("update_ema: G_ema and G have different parameters")
    if p_ema:
        torch._foreach_lerp_(p_ema, p_model, 1.0 - beta)
    b_ema, b_model = list(ema.buffers()), list(model.buffers())
    if len(b_ema) != len(b_model):
        raise ValueError("update_ema: G_ema and G have different buffers")
    if b_ema:
        torch._foreach_copy_(b_ema, b_model)


def deterministic_algorithms(compiling: bool) -> None:
    """Deterministic kernels for eager CPU training (``warn_only``: an op without one warns, it does not fail), but
    without ``fill_uninitialized_memory``: that debugging aid NaN-fills every ``torch.empty`` output (hundreds of
    fills per iteration, ~4% of a DCGAN step on CPU). It changes nothing a correct op computes (every kernel writes
    its output before anything reads it), so results are bit for bit those with the fill.

    Eager runs set only the kernels' flag: ``torch.use_deterministic_algorithms`` also sets Inductor's flag, and
    importing Inductor (and Dynamo with it) costs ~1.5 s of every run's start-up on this machine's CPUs."""
    if compiling or "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch._C._set_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False


@contextlib.contextmanager
def preserved_rng(cuda: bool) -> Iterator[None]:
    """Restore the global torch (and CUDA), numpy and Python RNG states afterwards: whatever runs inside cannot
    shift the training streams (exact resume holds with or without it)."""
    torch_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if cuda else None
    np_state = np.random.get_state()
    py_state = random.getstate()
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
        np.random.set_state(np_state)
        random.setstate(py_state)


def _json_value(v: Any) -> Any:
    """Plain JSON: numpy/torch scalars as Python numbers, non-finite floats as null."""
    if isinstance(v, np.generic) or (isinstance(v, (np.ndarray, torch.Tensor)) and v.ndim == 0):
        v = v.item()
    elif isinstance(v, (np.ndarray, torch.Tensor)):
        v = v.tolist()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _json_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    return v


def metrics_jsonl_text(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def read_metrics_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a metrics.jsonl; unreadable lines (a file cut short by hand) are skipped with a warning."""
    rows = []
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("%s line %d: not JSON, dropped", path, i)
    return rows


def resolve_amp(amp: str, device: torch.device) -> str:
    if amp not in AMP_MODES:
        raise GanimeError(f"--amp {amp}: unknown; use one of {', '.join(AMP_MODES)}")
    if device.type != "cuda":
        if amp in ("bf16", "fp16"):
            log.warning("--amp %s ignored: mixed precision is used on CUDA only", amp)
        return "off"
    if amp == "auto":
        # Native bf16 only (Ampere and newer): V100/T4 emulate it, slower than fp16 with a GradScaler.
        return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    return amp


def max_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def log_csv_text(rows: list[dict[str, float]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LOG_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row[k] for k in LOG_COLUMNS})
    return buf.getvalue()


def snapshot_name(images_seen: int) -> str:
    return f"samples_{images_seen / 1000:010.3f}kimg.png"


# --- the trainer --------------------------------------------------------------------------------------------------


def dataset_fingerprint(path: Path) -> str:
    """sha256 of the packed array file: identifies the exact training data a checkpoint was made from."""
    return file_digest(path, "sha256")


def training_code_fingerprint() -> str:
    """Identifies the training code a checkpoint was made by: the modules a training run executes
    (:func:`ganime_steps.codedeps.training_files`, the train rule's code inputs), as parsed. Comments, docstrings,
    formatting and the metric and classifier code leave it unchanged: such edits keep a checkpoint resumable."""
    return code_fingerprint(training_files())


def own_cuda_rng_state(rng: dict[str, Any], device: torch.device, world: int) -> torch.Tensor | None:
    """The CUDA RNG state a resuming process restores into its one device: the checkpoint's ``cuda_device``; from
    older checkpoints (``cuda``: one state per GPU the writer could see) the writer's own, i.e. rank 0's (cuda:0)
    under data parallel, else this device's entry when the writer had it (its first otherwise)."""
    if rng.get("cuda_device") is not None:
        return rng["cuda_device"]
    states = rng.get("cuda") or []
    if not states:
        return None
    index = device.index if device.index is not None and world == 1 else 0
    return states[index] if index < len(states) else states[0]


def uses_diffaug(cfg: TrainConfig) -> bool:
    """DiffAugment before D: asked for (--diffaug), or part of the family (projected)."""
    return cfg.diffaug or get_family(cfg.family).diffaug


def metrics_every_images(cfg: TrainConfig, metrics_every: float | None) -> int:
    """Images between metric snapshots: every checkpoint unless ``metrics_every`` (kimg, a positive multiple of
    ``cfg.checkpoint_every``: metrics are computed at checkpoints) says otherwise."""
    ckpt_images = max(1, round(cfg.checkpoint_every * 1000))
    if metrics_every is None:
        return ckpt_images
    every = round(metrics_every * 1000)
    if metrics_every <= 0 or every % ckpt_images:
        raise GanimeError(
            f"--metrics-every {metrics_every:g}: must be a positive multiple of --checkpoint-every "
            f"{cfg.checkpoint_every:g} (metrics are computed at checkpoints)"
        )
    return every


def rank_device(device: torch.device, local_rank: int, world: int) -> torch.device:
    """The device this process works on: under data parallel on CUDA, torchrun's ``LOCAL_RANK``-th GPU (each
    rank its own), else ``device``."""
    return torch.device("cuda", local_rank) if world > 1 and device.type == "cuda" else device


def run_batch_sizes(schedule: GrowthSchedule) -> dict[int, int]:
    """{resolution: global batch size} at every resolution the run trains at: from its start resolution up to its
    own (a non-progressive run: its one resolution). Entries of the table above the run's resolution are not used."""
    sizes, res = {}, schedule.start_resolution
    while res <= schedule.resolution:
        sizes[res] = schedule.batch_schedule.get(res, schedule.batch_size)
        res *= 2
    return sizes


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def scale_batch_schedule(text: str, world: int, resolution: int) -> str:
    """A published per-resolution batch table (``--batch-schedule auto``) for ``world`` data-parallel ranks: each
    entry at or below the run's resolution that is not a multiple of ``world`` is rounded up to one (the table's
    global batch is kept wherever it splits evenly, so the run trains as on one GPU); entries above the resolution
    are never used and stay as published. Logs the entries it changed."""
    if world <= 1:
        return text
    table = parse_batch_schedule(text)
    scaled = {r: round_up(b, world) if r <= resolution else b for r, b in table.items()}
    changed = [f"{r}:{table[r]}->{b}" for r, b in scaled.items() if b != table[r]]
    if changed:
        log.warning(
            "--batch-schedule auto on %d GPUs: %s rounded up to a multiple of the GPU count", world, ", ".join(changed)
        )
    return ",".join(f"{r}:{b}" for r, b in scaled.items())


def check_data_parallel_batches(schedule: GrowthSchedule, world: int) -> None:
    """Every global batch the run trains with must split evenly over the ``world`` ranks; one GanimeError line
    naming the flag and a fix otherwise. Only the resolutions the run reaches count (:func:`run_batch_sizes`)."""
    sizes = run_batch_sizes(schedule)
    bad = {r: b for r, b in sizes.items() if b % world}
    if world <= 1 or not bad:
        return
    res, batch = min(bad.items())
    where = f"batch {batch} at {res} px is not a multiple of the {world} GPUs (each takes an equal share)"
    if res in schedule.batch_schedule:
        table = ",".join(f"{r}:{round_up(b, world)}" for r, b in sizes.items())
        raise GanimeError(
            f"--batch-schedule (run key batch_schedule): {where}; use multiples of {world} from "
            f"{schedule.start_resolution} to {schedule.resolution} px, e.g. '{table}', or run on a GPU count "
            "that divides them (run key gpus)"
        )
    raise GanimeError(
        f"--batch-size {batch} (run key batch_size): {where}; use e.g. --batch-size {round_up(batch, world)}, "
        "or run on a GPU count that divides it (run key gpus)"
    )


def dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) in a plain process."""
    return (
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


class Trainer:
    """Owns the networks, optimisers and state of one run folder.

    Data parallel (``torchrun --nproc_per_node N``, WORLD_SIZE > 1): every rank holds the same networks and RNG
    states and draws the same global batch (indices, flips, latents, DiffAugment and penalty draws, StyleGAN's
    noise maps and mixing latents), keeping its samples ``rank::world``; gradients are averaged over ranks (one
    flat all-reduce per step, as StyleGAN2-ADA does) before each optimiser step, so the result equals one process
    on the global batch up to summation order, except where layers couple a batch: batch norm on the CPU (gloo:
    per-rank statistics; on CUDA G's and D's batch norm is SyncBatchNorm, global statistics), the minibatch-stddev
    groups when batch / group is not a multiple of N, StyleGAN's tracked w_avg (each rank's own batch mean; rank
    0's is saved), DRAGAN's batch std. Every batch size the run reaches must be a multiple of N. Rank 0 alone
    writes files (checkpoints, logs, samples, metrics) while the others wait in a barrier (:data:`DIST_TIMEOUT`);
    :meth:`close` (or leaving a ``with`` block) destroys the process group the Trainer joined. A resume loads the
    same checkpoint on every rank, with any number of ranks (the checkpoint holds one CUDA RNG state, rank 0's own
    device's: every rank's is the same).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        data: Path,
        out: Path,
        device: torch.device,
        snapshot_metric: SnapshotMetricFn | None = None,
        metric_key: str = "fid",
        metrics_every: float | None = None,
        metric_at_start: bool = False,
    ) -> None:
        """``snapshot_metric(G_ema) -> {name: value}``: run at checkpoints (every ``metrics_every`` kimg, a multiple
        of ``cfg.checkpoint_every``; None = every checkpoint) and at the end; rows go to ``metrics.jsonl`` and the
        snapshot with the lowest ``metrics[metric_key]`` is exported as ``generator_best.pt``. Its optional
        ``identity`` attribute ({name: value}) says which rows are comparable. ``metric_at_start``: also measure
        G_ema before the first step of a run with no rows (a kimg-0 row for a fresh run)."""
        self.cfg = cfg
        self.snapshot_metric = snapshot_metric
        self.metric_key = metric_key
        self.metric_identity = dict(getattr(snapshot_metric, "identity", None) or {}) if snapshot_metric else {}
        self.metric_at_start = metric_at_start
        self.metrics_every_images = metrics_every_images(cfg, metrics_every)
        self.family: Family = get_family(cfg.family)
        self._owns_group = False
        device = self._join_processes(device)
        try:
            self.images = load_dataset(data, cfg.resolution)
            self.data_id = dataset_fingerprint(Path(data))
            self.code_id = training_code_fingerprint()
            self.out = Path(out)
            self.ckpt_path = self.out / "checkpoint.pt"
            self._setup_device(device)
            self._setup_schedule()
            self._setup_batches()
            self._seed_and_determinism()
            self._build_networks_and_optimisers()
            self._reset_run_state()
            self._resume_or_start()
        except BaseException:
            self.close()  # a set-up error leaves no process group behind
            raise

    def close(self) -> None:
        """Leave the process group this Trainer joined (data parallel; a no-op otherwise). Idempotent; callers run
        it at exit, on error paths too (``with Trainer(...) as trainer:`` does)."""
        if self._owns_group:
            import torch.distributed as dist

            self._owns_group = False
            if dist.is_initialized():
                dist.destroy_process_group()

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- set-up steps (in this order: __init__) ------------------------------------------------------------------

    def _join_processes(self, device: torch.device) -> torch.device:
        """Rank and world size from torchrun's environment; under data parallel, this rank's GPU and the process
        group. Returns the device this process trains on."""
        self.rank, self.world, local_rank = dist_env()
        self.main = self.rank == 0
        if self.world > 1:
            import torch.distributed as dist

            device = rank_device(device, local_rank, self.world)
            if device.type == "cuda":
                torch.cuda.set_device(device)
            if not dist.is_initialized():
                backend = "nccl" if device.type == "cuda" else "gloo"
                dist.init_process_group(backend=backend, timeout=DIST_TIMEOUT)
                self._owns_group = True
        self.shard = (self.rank, self.world) if self.world > 1 else None
        return device

    def _sync_ranks(self) -> None:
        """Data parallel: every rank waits here until rank 0 has done its file and metric work (a no-op otherwise)."""
        if self.world > 1:
            import torch.distributed as dist

            if self.cuda:
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()

    def _setup_device(self, device: torch.device) -> None:
        """The device, the mixed-precision mode and the memory format."""
        self.device = device
        self.cuda = device.type == "cuda"
        self.amp = resolve_amp(self.cfg.amp, device)
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.amp)
        self.channels_last = True if self.cfg.channels_last is None else self.cfg.channels_last
        if self.cuda:
            self._set_tf32()

    def _set_tf32(self) -> None:
        """The run's TF32 choice for CUDA matmuls and cuDNN convolutions (process-wide flags; cuDNN's is on in a
        fresh torch, so off has to be set too). The flags do nothing on the CPU: a CPU run leaves them alone."""
        torch.backends.cuda.matmul.allow_tf32 = self.cfg.tf32
        torch.backends.cudnn.allow_tf32 = self.cfg.tf32

    def _setup_schedule(self) -> None:
        """The network config and the growth schedule (one stable phase at full resolution unless progressive),
        the per-resolution lr table and the phase training starts in."""
        cfg, fam = self.cfg, self.family
        self.net_cfg = NetConfig(
            resolution=cfg.resolution,
            z_dim=cfg.z_dim,
            channels=cfg.channels,
            g_norm=fam.g_norm,
            d_norm=fam.d_norm,
            arch=fam.arch,
            feature_resolution=cfg.feature_resolution,
        )
        self.diffaug = uses_diffaug(cfg)
        self.progressive = fam.arch in PROGRESSIVE_ARCHS
        self.schedule = GrowthSchedule(
            resolution=cfg.resolution,
            # a non-progressive family is one stable phase at full resolution
            start_resolution=(cfg.start_resolution or fam.start_resolution) if self.progressive else cfg.resolution,
            stable_kimg=fam.stable_kimg if cfg.stable_kimg is None else cfg.stable_kimg,
            fade_kimg=fam.fade_kimg if cfg.fade_kimg is None else cfg.fade_kimg,
            batch_size=cfg.batch_size,
            batch_schedule=parse_batch_schedule(cfg.batch_schedule) if self.progressive else {},
        )
        self.lr_table = parse_lr_schedule(cfg.lr_schedule) if self.progressive else {}
        if cfg.lr_decay_kimg is not None and not cfg.lr_decay_kimg > 0:
            raise GanimeError(f"--lr-decay-kimg {cfg.lr_decay_kimg}: must be > 0 (or none)")
        self.phase: Phase = self.schedule.at(0)
        self.phase_key: list[Any] | None = None  # key of the last iteration's phase (optimiser resets)
        check_data_parallel_batches(self.schedule, self.world)

    def _setup_batches(self) -> None:
        """Where real batches come from: the set on the device, a read-ahead thread, or the plain memmap."""
        cfg, device = self.cfg, self.device
        on_device = DeviceDataset.fits(self.images, device) if cfg.data_on_device is None else cfg.data_on_device
        self.device_data = DeviceDataset(self.images, device) if on_device else None
        # CUDA, set too large for the device: read ahead on a thread (CPU: the plain memmap path, bit-identical)
        self.prefetch = PrefetchLoader(self.images, device) if self.cuda and not on_device else None

    def _seed_and_determinism(self) -> None:
        """Every RNG from the run's seed (before the networks are built); deterministic kernels on the CPU."""
        seed_everything(self.cfg.seed)
        self.rng = np.random.default_rng(self.cfg.seed)
        if self.cuda:
            torch.backends.cudnn.benchmark = True
        else:
            deterministic_algorithms(self.cfg.compile)

    def _build_networks_and_optimisers(self) -> None:
        """G, D and G_ema on the device, Adam and a grad scaler for each, the sample-grid latents, --compile."""
        cfg = self.cfg
        G, D = build_networks(self.net_cfg, self.cfg.feature_weights)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        self.G = G.to(self.device, memory_format=fmt)
        self.D = D.to(self.device, memory_format=fmt)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self._sync_batch_norm()
        # D's trainable parameters (a projected D's pretrained features and random projections stay frozen)
        self.d_params = [p for p in self.D.parameters() if p.requires_grad]
        self._set_phase(self.phase)
        betas = self.family.betas
        # CUDA: fused Adam (one kernel; GradScaler hands it found_inf on the device, so step() never syncs).
        # CPU: the foreach implementation (half the time of the per-parameter loop, bit-identical results).
        kind = {"fused": True} if self.cuda else {"foreach": True}
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr, betas=betas, eps=1e-8, **kind)
        self.opt_d = torch.optim.Adam(self.d_params, lr=cfg.lr, betas=betas, eps=1e-8, **kind)
        self.scaler_g = torch.amp.GradScaler("cuda", enabled=self.amp == "fp16")
        self.scaler_d = torch.amp.GradScaler("cuda", enabled=self.amp == "fp16")
        # Fixed latents for the sample grid, from their own generator so they never touch the training RNG.
        self.grid_z = self._grid_latents(cfg.seed)
        self.g_fwd: Callable[..., torch.Tensor] = self.G
        self.d_fwd: Callable[[torch.Tensor], torch.Tensor] = self.D
        self.compiled = cfg.compile and self._try_compile()

    def _sync_batch_norm(self) -> None:
        """Data parallel on CUDA: G's and D's batch norm (where the family's g_norm/d_norm is batch) becomes
        SyncBatchNorm, its statistics over the global batch as one process computes them (same parameters and
        buffers, so checkpoints are unchanged). G_ema keeps plain batch norm: rank 0 alone recalibrates and renders
        it. Not on the CPU: PyTorch's SyncBatchNorm takes GPU tensors only (a gloo run raises ValueError), so CPU
        ranks keep per-rank statistics."""
        if self.world <= 1 or not self.cuda:
            return
        convert = torch.nn.SyncBatchNorm.convert_sync_batchnorm
        if self.net_cfg.g_norm == "batch":
            self.G = convert(self.G)
        if self.net_cfg.d_norm == "batch":
            self.D = convert(self.D)

    def _reset_run_state(self) -> None:
        """The state of a run that starts from scratch (a resume overwrites it from the checkpoint)."""
        self.step = 0
        self.images_seen = 0
        self.elapsed_s = 0.0
        self.log_rows: list[dict[str, float]] = []
        self.resumed = False
        self.saved_at: int | None = None  # images_seen of the checkpoint on disk
        self.metric_rows: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None  # {"images_seen", "kimg", "step", "metric_key", "metric"}
        self._best_pending = False  # the current snapshot is the new best: export it after the checkpoint
        self._rows_dropped = False  # a resume dropped rows of another metric identity
        self._calibrated_at: int | None = None  # images_seen at which G_ema's BN statistics were re-estimated
        self._grid_cache: tuple[tuple[int, int], Any] | None = None  # ((images_seen, step), sample grid)

    def _resume_or_start(self) -> None:
        """Resume from the run folder's checkpoint when there is one made from the same data; else start over."""
        if self.ckpt_path.exists():
            ck = self._load_checkpoint()
            if self._same_data_and_code(ck):
                self._resume(ck)

    def _grid_latents(self, seed: int) -> torch.Tensor:
        return torch.randn(GRID_SIZE, self.cfg.z_dim, generator=torch.Generator().manual_seed(seed)).to(self.device)

    def _try_compile(self) -> bool:
        """torch.compile G and D for the loss forwards (penalties need double backward: they use eager D). A warm-up
        forward + backward (RNG states, weights and buffers restored after) surfaces compile errors here; on any
        failure one warning is logged and the run stays eager. Progressive families stay eager: their lod is a
        Python value that changes every iteration of a fade-in, which would recompile every step."""
        if self.progressive:
            log.warning("--compile ignored for %s: the fade-in lod changes every step (recompiles)", self.cfg.family)
            return False
        try:
            g_fwd, d_fwd = torch.compile(self.G), torch.compile(self.D)
            saved = [copy.deepcopy(m.state_dict()) for m in (self.G, self.D)]
            with preserved_rng(self.cuda):
                bs = max(2, self.phase.batch_size)
                z = torch.randn(bs, self.cfg.z_dim, device=self.device)
                with self._autocast():
                    out = d_fwd(g_fwd(z)).float().mean()
                out.backward()
            for m, state in zip((self.G, self.D), saved, strict=True):
                m.load_state_dict(state)
                m.zero_grad(set_to_none=True)
        except Exception as exc:  # noqa: BLE001 - any compiler failure means: run eager
            log.warning("--compile failed (%s: %s); training runs eager", type(exc).__name__, str(exc)[:300])
            for m in (self.G, self.D):
                m.zero_grad(set_to_none=True)
            return False
        self.g_fwd, self.d_fwd = g_fwd, d_fwd
        log.info("torch.compile: G and D compiled")
        return True

    def lr_at(self, phase: Phase, images_seen: int) -> float:
        """The lr of an iteration: the per-resolution table's entry (else --lr), times the linear decay factor
        ``1 - images / lr_decay`` when a decay is set. A function of the images seen: resume-exact."""
        lr = self.lr_table.get(phase.resolution, self.cfg.lr)
        if self.cfg.lr_decay_kimg:
            lr *= max(0.0, 1.0 - images_seen / (self.cfg.lr_decay_kimg * 1000.0))
        return lr

    # -- checkpoint --------------------------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.cfg.to_dict(),
            "data": self.data_id,
            "code": self.code_id,
            "net": self.net_cfg.to_dict(),
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "G_ema": self.G_ema.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "scaler_g": self.scaler_g.state_dict(),
            "scaler_d": self.scaler_d.state_dict(),
            "step": self.step,
            "images_seen": self.images_seen,
            "phase": self.phase.to_dict(),  # where training is (resolution, alpha, lod): for people and tools
            "phase_key": self.phase_key,
            "elapsed_s": self.elapsed_s,
            "log_rows": self.log_rows,
            "metric_rows": self.metric_rows,
            "metric_identity": self.metric_identity,
            "best": self.best,
            "rng": {
                "torch": torch.get_rng_state(),
                # this process's own GPU only (every rank's equals rank 0's by design: see the class), so the
                # checkpoint resumes on any number of GPUs
                "cuda_device": torch.cuda.get_rng_state(self.device) if self.cuda else None,
                # before any read-ahead draw: a resumed run redraws that batch
                "numpy": self.prefetch.rng_state(self.rng) if self.prefetch else self.rng.bit_generator.state,
                "python": random.getstate(),
            },
        }

    def save_checkpoint(self) -> None:
        torch_save(self.ckpt_path, self._state())
        self.saved_at = self.images_seen
        log.info("checkpoint at %.3f kimg (step %d): %s", self.images_seen / 1000, self.step, self.ckpt_path)

    def _load_checkpoint(self) -> dict[str, Any]:
        path = self.ckpt_path
        ck = load_torch_file(path, what="GAN checkpoint", made_by="the train stage to start the run over")
        if ck.get("format") != CHECKPOINT_FORMAT:
            raise GanimeError(f"{path}: not a ganime GAN checkpoint; delete it or use a new run folder")
        return ck

    def _same_data_and_code(self, ck: dict[str, Any]) -> bool:
        """A checkpoint trained on other data (e.g. the dataset's cleaning settings changed) or by other training
        code (a module the train stage imports was edited) is set aside, not resumed: Snakemake reruns the job
        because an input changed, and continuing (or, for a finished run, re-exporting) the old model would be
        wrong. Checkpoints written before a field existed are taken as matching it."""
        changed = [
            key for key, now in (("data", self.data_id), ("code", self.code_id)) if ck.get(key) not in (None, now)
        ]
        if changed == ["code"] and self.cfg.resume_other_code:
            log.warning(
                "%s was written by other training code; resuming it as asked (resume_other_code)", self.ckpt_path
            )
            return True
        if not changed:
            return True
        if not self.main:  # data parallel: rank 0 sets the old checkpoint aside; every rank starts over
            return False
        stale = self.ckpt_path.with_name(f"checkpoint.previous-{changed[0]}.pt")
        os.replace(self.ckpt_path, stale)
        log.warning(
            "%s changed since %s; starting over (old checkpoint kept as %s)",
            " and ".join(f"training {key}" for key in changed),
            self.ckpt_path,
            stale,
        )
        return False

    def _resume(self, ck: dict[str, Any]) -> None:
        path = self.ckpt_path
        old, new = ck["config"], self.cfg.to_dict()
        diffs = [f"{k} {old.get(k)!r} -> {new[k]!r}" for k in ARCH_KEYS if old.get(k) != new[k]]
        if not diffs and NetConfig.from_dict(ck["net"]) != self.net_cfg:
            diffs.append(f"network {ck['net']} -> {self.net_cfg.to_dict()}")
        if diffs:
            raise GanimeError(
                f"{path}: existing run has a different setup ({'; '.join(diffs)}); "
                f"delete {self.out} to start over or use a new run name"
            )
        for k in (
            "batch_size",
            "lr",
            "lr_schedule",
            "lr_decay_kimg",
            "ema_kimg",
            "diffaug",
            "seed",
            "start_resolution",
            "stable_kimg",
            "fade_kimg",
            "batch_schedule",
        ):
            if old.get(k) != new[k]:
                log.warning("resuming %s with %s changed from %r to %r", path, k, old.get(k), new[k])
        self.G.load_state_dict(ck["G"])
        self.D.load_state_dict(ck["D"])
        self.G_ema.load_state_dict(ck["G_ema"])
        self.opt_g.load_state_dict(ck["opt_g"])
        self.opt_d.load_state_dict(ck["opt_d"])
        for opt in (self.opt_g, self.opt_d):  # a changed --lr applies from here on
            for group in opt.param_groups:
                group["lr"] = self.cfg.lr
        self.scaler_g.load_state_dict(ck["scaler_g"])
        self.scaler_d.load_state_dict(ck["scaler_d"])
        self.step = int(ck["step"])
        self.images_seen = int(ck["images_seen"])
        self.phase_key = ck.get("phase_key")
        self._set_phase(self.schedule.at(self.images_seen))
        self.elapsed_s = float(ck["elapsed_s"])
        self.log_rows = list(ck["log_rows"])
        self._resume_metrics(ck)
        rng = ck["rng"]
        torch.set_rng_state(rng["torch"])
        if self.cuda and (state := own_cuda_rng_state(rng, self.device, self.world)) is not None:
            torch.cuda.set_rng_state(state, self.device)
        self.rng.bit_generator.state = rng["numpy"]
        random.setstate(_as_tuple(rng["python"]))
        self.grid_z = self._grid_latents(int(old.get("seed", self.cfg.seed)))  # keep samples comparable
        self._grid_cache = None
        self.resumed = True
        self.saved_at = self.images_seen
        log.info("resumed %s at %.3f kimg (step %d)", path, self.images_seen / 1000, self.step)

    def _resume_metrics(self, ck: dict[str, Any]) -> None:
        """Metric rows up to the checkpoint (from the checkpoint; from metrics.jsonl for checkpoints that predate
        them): rows a killed run wrote past its last checkpoint are dropped, as the resumed run redoes them."""
        path = self.out / METRICS_FILE
        if "metric_rows" in ck:
            self.metric_rows = [dict(r) for r in ck["metric_rows"]]
        elif path.is_file():
            rows = read_metrics_jsonl(path)
            self.metric_rows = [
                r for r in rows if isinstance(r.get("images_seen"), int) and r["images_seen"] <= ck["images_seen"]
            ]
        best = ck.get("best")
        if best is not None and best.get("metric_key") != self.metric_key and self.snapshot_metric is not None:
            log.warning(
                "%s: the best snapshot so far was chosen by %r, this run ranks by %r: best restarts from here",
                self.ckpt_path,
                best.get("metric_key"),
                self.metric_key,
            )
            best = None
        self.best = dict(best) if best is not None else None
        self._drop_rows_of_another_metric(ck.get("metric_identity") or {})

    def _drop_rows_of_another_metric(self, ck_identity: dict[str, Any]) -> None:
        """Rows measured against another reference or with other sample counts are not comparable with this run's:
        drop them and re-pick the best among the rest. A row without a key (written before it was recorded) is
        taken to have the checkpoint's value; with neither, it is kept."""
        if self.snapshot_metric is None or not self.metric_identity:
            return

        def differs(row: dict[str, Any]) -> list[str]:
            return [
                key
                for key, now in self.metric_identity.items()
                if row.get(key, ck_identity.get(key)) not in (None, now)
            ]

        stale = [differs(r) for r in self.metric_rows]
        if not any(stale):
            return
        keys = [k for k in self.metric_identity if any(k in keys for keys in stale)]
        kept = [r for r, keys in zip(self.metric_rows, stale, strict=True) if not keys]
        log.warning(
            "%s: %d metric rows were measured with another %s; dropped (%d kept), best snapshot re-picked",
            self.out / METRICS_FILE,
            len(self.metric_rows) - len(kept),
            ", ".join(keys),
            len(kept),
        )
        self.metric_rows = kept
        self._rows_dropped = True
        ranked = [r for r in kept if isinstance(r.get(self.metric_key), (int, float))]
        best = min(ranked, key=lambda r: r[self.metric_key], default=None)
        self.best = (
            None
            if best is None
            else {
                "images_seen": best["images_seen"],
                "kimg": best["kimg"],
                "step": best.get("step"),
                "metric_key": self.metric_key,
                "metric": float(best[self.metric_key]),
            }
        )

    # -- artifacts ---------------------------------------------------------------------------------------------

    def calibrate_ema(self) -> None:
        """Re-estimate G_ema's batch-norm statistics for its own weights (once per images_seen; no-op without BN)."""
        if self._calibrated_at == self.images_seen:
            return
        seed = (self.cfg.seed + BN_SEED_STREAM) % 2**63
        if recalibrate_batch_norm(self.G_ema, seed=seed):
            log.debug("G_ema batch-norm statistics re-estimated at %.3f kimg", self.images_seen / 1000)
        self.G_ema.eval()
        self._calibrated_at = self.images_seen

    def evaluate_snapshot(self) -> dict[str, Any]:
        """Run the snapshot metric on G_ema (BN re-estimated, eval mode, global RNG states restored afterwards),
        append its row and update the best snapshot. Returns the row."""
        assert self.snapshot_metric is not None
        self.calibrate_ema()
        t0 = time.perf_counter()
        try:
            with preserved_rng(self.cuda), torch.no_grad():
                metrics = self.snapshot_metric(self.G_ema)
        finally:
            self.G_ema.eval().requires_grad_(False)
        seconds = time.perf_counter() - t0
        if not isinstance(metrics, dict) or self.metric_key not in metrics:
            got = sorted(metrics) if isinstance(metrics, dict) else type(metrics).__name__
            raise GanimeError(
                f"snapshot metric returned {got}, without {self.metric_key!r}: pick --metric-key among its keys"
            )
        last = self.log_rows[-1] if self.log_rows else {}
        row: dict[str, Any] = {
            "kimg": self.images_seen / 1000,
            "step": self.step,
            "images_seen": self.images_seen,
            "phase": self.phase.name,
            "resolution": self.phase.resolution,
            "alpha": round(self.phase.alpha, 6),
            "loss_g": last.get("loss_g"),
            "loss_d": last.get("loss_d"),
            "penalty": last.get("penalty"),
        }
        for k, v in {**self.metric_identity, **metrics}.items():
            if k in row:
                log.warning("snapshot metric key %r clashes with a metrics.jsonl column; dropped", k)
            else:
                row[k] = v
        row.update(
            {
                "metric_key": self.metric_key,
                "seconds": round(self.elapsed_s, 3),
                "metric_seconds": round(seconds, 3),
                "timestamp": round(time.time(), 3),
            }
        )
        row = _json_value(row)
        self.metric_rows.append(row)
        value = row.get(self.metric_key)
        log.info("snapshot %.3f kimg: %s %s (%.1f s)", self.images_seen / 1000, self.metric_key, value, seconds)
        if isinstance(value, (int, float)) and (self.best is None or value < self.best["metric"]):
            self.best = {
                "images_seen": self.images_seen,
                "kimg": self.images_seen / 1000,
                "step": self.step,
                "metric_key": self.metric_key,
                "metric": float(value),
            }
            self._best_pending = True
        return row

    def write_metrics(self) -> None:
        """metrics.jsonl rewritten whole (atomically) from the rows: with a snapshot metric, or to trim a file."""
        path = self.out / METRICS_FILE
        if self.snapshot_metric is not None or path.exists():
            write_text(path, metrics_jsonl_text(self.metric_rows))

    def _export(self, path: Path, extra: dict[str, Any] | None = None) -> None:
        self.calibrate_ema()
        export_generator(
            path,
            self.G_ema,
            self.net_cfg,
            extra={
                "family": self.cfg.family,
                "images_seen": self.images_seen,
                "step": self.step,
                "phase": self.phase.to_dict(),
                **(extra or {}),
            },
        )

    def export_best(self) -> None:
        """generator_best.pt from the current G_ema, which must be the best snapshot."""
        best = self.best
        assert best is not None and best["images_seen"] == self.images_seen
        row = next((r for r in reversed(self.metric_rows) if r.get("images_seen") == self.images_seen), {})
        metrics = {k: v for k, v in row.items() if isinstance(v, (int, float, str, bool)) or v is None}
        self._export(
            self.out / BEST_FILE,
            extra={
                "kimg": best["kimg"],
                "metric_key": best["metric_key"],
                "metric": best["metric"],
                "metrics": metrics,
                "metric_identity": self.metric_identity,
            },
        )
        self._best_pending = False
        log.info(
            "best snapshot so far (%s %g) at %.3f kimg: %s",
            best["metric_key"],
            best["metric"],
            best["kimg"],
            self.out / BEST_FILE,
        )

    def _sync_best_file(self) -> None:
        """After a resume: re-export generator_best.pt if the checkpoint is the best snapshot and the file is not
        (a run killed between checkpoint and export); remove a file that is no longer the best of the rows kept
        (chosen with another metric identity, or its row was dropped); warn if an older best's file is missing."""
        best, path = self.best, self.out / BEST_FILE
        on_disk = None
        if path.is_file():
            with contextlib.suppress(Exception):
                on_disk = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(on_disk, dict):
            other = self._other_metric(on_disk.get("metric_identity"))
            dropped = self._rows_dropped and (best is None or on_disk.get("images_seen") != best["images_seen"])
            if other or dropped:
                why = f"chosen with another {other}" if other else "its snapshot's metric row was dropped"
                log.warning("%s: %s; removed", path, why)
                path.unlink()
                on_disk = None
        if best is None:
            return
        if isinstance(on_disk, dict) and on_disk.get("images_seen") == best["images_seen"]:
            return
        if best["images_seen"] == self.images_seen:
            self.export_best()
        else:
            log.warning(
                "%s: the best snapshot (%.3f kimg) has no matching %s; it is written again only by a better snapshot",
                self.out,
                best["kimg"],
                path.name,
            )

    def _other_metric(self, identity: Any) -> str:
        """The keys in which a recorded metric identity differs from this run's ('' if none or unknown)."""
        if self.snapshot_metric is None or not isinstance(identity, dict):
            return ""
        return ", ".join(k for k, v in self.metric_identity.items() if identity.get(k, v) != v)

    def _clear_stale_metrics(self) -> None:
        """A run that starts from scratch must not keep another run's metrics or best generator."""
        for name in (METRICS_FILE, BEST_FILE):
            path = self.out / name
            if path.exists():
                log.warning("%s: left from an earlier run; removed as this run starts over", path)
                path.unlink()

    @torch.no_grad()
    def write_samples(self, snapshot: bool) -> None:
        """samples.png (and the snapshot's file): G_ema on the fixed latents. The grid is rendered once per
        images_seen (the last checkpoint and the final artifacts share it; G_ema only changes with training)."""
        self.calibrate_ema()
        key = (self.images_seen, self.step)
        if self._grid_cache is not None and self._grid_cache[0] == key:
            grid = self._grid_cache[1]
        else:
            imgs = []
            for z in self.grid_z.split(16):
                imgs.append(images_to_uint8(self.G_ema(z)))
            grid = make_grid(np.concatenate(imgs), ncol=8)
            self._grid_cache = (key, grid)
        save_image(self.out / "samples.png", grid)
        if snapshot:
            save_image(self.out / snapshot_name(self.images_seen), grid)

    def _restore_snapshot_grid(self) -> None:
        """A checkpoint's sample grid is written after the checkpoint (checkpoint_event): a run killed in between
        resumes past that snapshot, so write the grid again from the restored G_ema (the same image; the killed
        writer's temporary file goes with it)."""
        if not (self.out / snapshot_name(self.images_seen)).exists():
            self.write_samples(snapshot=True)

    def write_final(self) -> None:
        self._export(self.out / "generator.pt")
        self.write_samples(snapshot=False)
        write_text(self.out / "log.csv", log_csv_text(self.log_rows))

    def checkpoint_event(self, evaluate: bool) -> None:
        """At a checkpoint: G_ema's BN statistics, the metric (if due), then the checkpoint (holding the metric
        rows and the best snapshot), metrics.jsonl, generator_best.pt (if this is the best) and the samples."""
        self.calibrate_ema()
        if evaluate and self.snapshot_metric is not None:
            self.evaluate_snapshot()
        self.save_checkpoint()
        self.write_metrics()
        if self._best_pending:
            self.export_best()
        self.write_samples(snapshot=True)

    # -- training ----------------------------------------------------------------------------------------------

    def _autocast(self):
        return torch.autocast("cuda", dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None)

    def _penalty_autocast(self):
        """Gradient penalties' D forwards: fp32 under fp16 (an unscaled fp16 inner gradient could underflow, a
        scaled one overflowed), the run's autocast otherwise (bf16 has fp32's range)."""
        if self.amp == "fp16":
            return torch.autocast("cuda", enabled=False)
        return self._autocast()

    def _d(self, x: torch.Tensor) -> torch.Tensor:
        """D for the losses (compiled when --compile is on)."""
        if self.diffaug:
            x = diff_augment(x, self.family.cutout)
        return self.d_fwd(x).float()  # losses in fp32 even under autocast

    def _d_eager(self, x: torch.Tensor) -> torch.Tensor:
        """D for gradient penalties (double backward: never compiled)."""
        if self.diffaug:
            x = diff_augment(x, self.family.cutout)
        return self.D(x).float()

    def _g(self, z: torch.Tensor) -> torch.Tensor:
        """G at the current phase's resolution."""
        return self.G(z, native=True) if self.progressive else self.g_fwd(z)

    def _set_phase(self, phase: Phase) -> None:
        self.phase = phase
        if self.progressive:
            for net in (self.G, self.D, self.G_ema):
                net.set_lod(phase.lod)

    def _enter_phase(self) -> Phase:
        """The phase for this iteration; a new lod level resets both optimisers' state where the family does."""
        phase = self.schedule.at(self.images_seen)
        self._set_phase(phase)
        key = list(phase.key)
        if self.phase_key is not None and key != self.phase_key and self.family.reset_opt_per_phase:
            for opt in (self.opt_g, self.opt_d):
                opt.state.clear()
        lr = self.lr_at(phase, self.images_seen)
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group["lr"] = lr
        if key != self.phase_key:
            log.info(
                "phase %s %dpx (lod %.3f, batch %d) at %.3f kimg",
                phase.name,
                phase.resolution,
                phase.lod,
                phase.batch_size,
                self.images_seen / 1000,
            )
        self.phase_key = key
        return phase

    def _real(self, batch_size: int) -> torch.Tensor:
        if self.device_data is not None:
            real = self.device_data.sample(self.rng, batch_size, self.channels_last, self.shard)
        elif self.prefetch is not None:
            real = self.prefetch.sample(self.rng, batch_size, self.channels_last, self.shard)
        else:
            real = sample_real(self.images, self.rng, batch_size, self.device, self.channels_last, self.shard)
        if self.progressive:
            real = resize_reals(real, self.phase)
            if self.channels_last:
                real = real.contiguous(memory_format=torch.channels_last)
        return real

    def _iteration(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """n_critic D steps then one G step; returns (loss_g, mean loss_d, mean penalty) as 0-d tensors.
        Two D forwards per D step (reals, fakes) plus the penalty's own where it is not taken on the reals; R1
        reuses the reals' forward. No host sync: losses stay on the device, fp16 steps go through fused Adam."""
        with data_parallel_shard(self.rank, self.world):
            return self._iteration_body()

    def _latents(self, n: int) -> torch.Tensor:
        """n global latents; this rank's share under data parallel."""
        return per_sample(lambda size: torch.randn(size, device=self.device), (n // self.world, self.cfg.z_dim))

    def _all_reduce_grads(self, module: torch.nn.Module) -> None:
        """Average the gradients over ranks: one flat all-reduce (no-op in a single process)."""
        if self.world == 1:
            return
        import torch.distributed as dist

        grads = [p.grad for p in module.parameters() if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        parts = [f.view_as(g) for f, g in zip(flat.split([g.numel() for g in grads]), grads, strict=True)]
        torch._foreach_copy_(grads, parts)

    def _iteration_body(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fam, cfg, dev = self.family, self.cfg, self.device
        phase = self._enter_phase()
        bs = phase.batch_size
        # progressive: penalties as at full resolution (the official code), see losses.gradient_norm_penalty
        res_factor = cfg.resolution / phase.resolution if self.progressive else 1.0
        ld_sum = torch.zeros((), device=dev)
        pen_sum = torch.zeros((), device=dev)
        for _ in range(fam.n_critic):
            real = self._real(bs)
            z = self._latents(bs)
            if fam.g_step_reuses_fakes:  # G's graph is kept for the G step below
                with self._autocast():
                    fake_for_g = self._g(z).float()
                fake = fake_for_g.detach()
            else:
                with torch.no_grad(), self._autocast():
                    fake = self._g(z).float()
            if fam.penalty is not None and fam.penalty_on_reals:
                real = real.detach().requires_grad_(True)
                with self._penalty_autocast():
                    real_logits = self._d_eager(real)
                with self._autocast():
                    loss_d = fam.d_loss(real_logits, self._d(fake))
                pen = r1_from_logits(real_logits, real, fam.penalty_weight, res_factor)
            else:
                with self._autocast():
                    loss_d = fam.d_loss(self._d(real), self._d(fake))
                if fam.penalty is not None:
                    with self._penalty_autocast():
                        pen = fam.penalty(self._d_eager, real, fake, fam.penalty_weight, res_factor=res_factor)
                else:
                    pen = torch.zeros((), device=dev)
            self.opt_d.zero_grad(set_to_none=True)
            self.scaler_d.scale(loss_d + pen).backward()
            self._all_reduce_grads(self.D)
            self.scaler_d.step(self.opt_d)
            self.scaler_d.update()
            ld_sum += loss_d.detach()
            pen_sum += pen.detach()
            self.images_seen += bs

        for p in self.d_params:  # G step: no D parameter grads needed
            p.requires_grad_(False)
        with self._autocast():
            if not fam.g_step_reuses_fakes:
                fake_for_g = self._g(self._latents(bs * fam.g_batch_mul)).float()
            loss_g = fam.g_loss(self._d(fake_for_g))
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler_g.scale(loss_g).backward()
        self._all_reduce_grads(self.G)
        self.scaler_g.step(self.opt_g)
        self.scaler_g.update()
        for p in self.d_params:
            p.requires_grad_(True)

        per_iter = bs * fam.n_critic
        update_ema(self.G_ema, self.G, ema_beta(per_iter, cfg.ema_kimg, self.images_seen, cfg.ema_rampup))
        self.step += 1
        return loss_g.detach(), ld_sum / fam.n_critic, pen_sum / fam.n_critic

    def _nonfinite_error(self, step: int) -> GanimeError:
        kept = (
            f"last good checkpoint kept at {self.ckpt_path} ({self.saved_at / 1000:.3f} kimg)"
            if self.saved_at is not None
            else f"no checkpoint was written yet in {self.out}"
        )
        return GanimeError(f"non-finite loss at step {step}; {kept}; lower --lr (now {self.cfg.lr:g})")

    def train(self) -> TrainResult:
        """Train to ``cfg.kimg`` (from where a resumed run left off), then write the final artifacts."""
        target = max(1, round(self.cfg.kimg * 1000))
        n_iters = self.schedule.iterations(self.images_seen, target, self.family.n_critic)
        self._warn_if_growth_unfinished(n_iters, target)
        start_images = self.images_seen
        session_start = time.perf_counter()
        self._prepare_metric_files()
        self._metric_at_start()
        self._sync_ranks()  # rank 0's files and kimg-0 metric are done before any rank trains
        if n_iters == 0:
            log.info(
                "%s already at %.3f kimg >= target %.3f: rewriting final artifacts only",
                self.out,
                self.images_seen / 1000,
                self.cfg.kimg,
            )
            train_s = 0.0
        else:
            train_s = self._train_loop(n_iters)
        if self.main:
            self.write_final()
        self._sync_ranks()
        return self._result(start_images, session_start, train_s)

    def _train_loop(self, n_iters: int) -> float:
        """``n_iters`` iterations with the log rows, NaN guard and checkpoints due among them; returns the seconds
        spent training (checkpoints and metrics excluded)."""
        cfg = self.cfg
        log.info(
            "training %s %dpx from %.3f to %.3f kimg (%d iterations) on %s, amp %s",
            cfg.family,
            cfg.resolution,
            self.images_seen / 1000,
            cfg.kimg,
            n_iters,
            self.device,
            self.amp,
        )
        self.G.train()
        self.D.train()
        ckpt_every = max(1, round(cfg.checkpoint_every * 1000))
        log_every = max(1, round((cfg.log_every if cfg.log_every else min(1.0, cfg.kimg / 100)) * 1000))
        metric_every = self.metrics_every_images
        next_ckpt = next_multiple(self.images_seen, ckpt_every)
        next_metric = next_multiple(self.images_seen, metric_every)
        next_log = next_multiple(self.images_seen, log_every)
        # Running sums stay on the device; the CPU syncs only at log/checkpoint points (or every step on CPU).
        window = LossWindow(self.device)
        log_written = window.t0
        first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
        step_t = torch.full((), self.step, dtype=torch.long, device=self.device)
        train_s = 0.0
        for i in progress(range(n_iters), total=n_iters, desc=f"train {cfg.family}"):
            before = self.images_seen
            losses = torch.stack(self._iteration())
            step_t += 1
            bad = ~torch.isfinite(losses).all()
            first_bad = torch.where(bad & (first_bad < 0), step_t, first_bad)
            window.add(losses, self.images_seen - before)
            last = i == n_iters - 1
            due_log, due_ckpt = self.images_seen >= next_log, self.images_seen >= next_ckpt
            if self.cuda and not (due_log or due_ckpt or last):
                continue
            self._raise_if_nonfinite(first_bad)
            if due_log or last:
                now = time.perf_counter()
                train_s += self._append_log_row(window, now)
                if self.main and (due_ckpt or last or now - log_written >= LOG_WRITE_S):
                    write_text(self.out / "log.csv", log_csv_text(self.log_rows))
                    log_written = now
                window.reset()
                next_log = next_multiple(self.images_seen, log_every)
            if due_ckpt or last:
                t0 = time.perf_counter()
                # metrics_every is a multiple of checkpoint_every, so a due metric is always at a checkpoint
                if self.main:
                    self.checkpoint_event(evaluate=self.images_seen >= next_metric or last)
                self._sync_ranks()  # the others wait here, not in the next step's all-reduce
                next_ckpt = next_multiple(self.images_seen, ckpt_every)
                next_metric = next_multiple(self.images_seen, metric_every)
                window.t0 += time.perf_counter() - t0  # do not bill checkpoint I/O or metrics to throughput
        return train_s

    def _warn_if_growth_unfinished(self, n_iters: int, target: int) -> None:
        cfg = self.cfg
        if self.progressive and n_iters and self.schedule.full_resolution_at_kimg() > cfg.kimg:
            log.warning(
                "%s: --kimg %g ends before growth reaches %dpx (at %g kimg); the generator renders at %dpx, upsampled",
                self.out,
                cfg.kimg,
                cfg.resolution,
                self.schedule.full_resolution_at_kimg(),
                self.schedule.at(target).resolution,
            )

    def _prepare_metric_files(self) -> None:
        """metrics.jsonl and generator_best.pt as the run starts: a resume trims them to its checkpoint, a fresh
        start removes another run's."""
        if not self.main:
            return  # data parallel: rank 0 alone writes files
        if self.resumed:
            self.write_metrics()  # exactly the checkpoint's rows: drops any a killed run wrote after it
            self._sync_best_file()
            self._restore_snapshot_grid()
        else:
            self._clear_stale_metrics()

    def _metric_at_start(self) -> None:
        """With ``metric_at_start``, a run with no rows (fresh: kimg 0; resumed after its rows were dropped: the
        checkpoint's kimg) measures G_ema before training, so its curve starts where its training does. A resumed
        run saves its checkpoint again to keep the row (the same state otherwise: the metric leaves every RNG as it
        was)."""
        if not (self.main and self.metric_at_start and self.snapshot_metric is not None) or self.metric_rows:
            return
        self.calibrate_ema()
        self.evaluate_snapshot()
        if self.resumed:
            self.save_checkpoint()
        self.write_metrics()
        if self._best_pending:
            self.export_best()

    def _raise_if_nonfinite(self, first_bad: torch.Tensor) -> None:
        """The NaN guard, at a sync point: ``first_bad`` is the first step with a non-finite loss, or -1."""
        if self.world > 1:  # every rank reaches the same sync points: agree on the NaNs
            import torch.distributed as dist

            dist.all_reduce(first_bad, op=dist.ReduceOp.MAX)
        bad_step = int(first_bad.item())
        if bad_step >= 0:
            raise self._nonfinite_error(bad_step)

    def _append_log_row(self, window: LossWindow, now: float) -> float:
        """One log row from the window's loss means (averaged over ranks); returns the window's seconds."""
        dt = now - window.t0
        self.elapsed_s += dt
        mean = window.means(self.world)
        self.log_rows.append(
            {
                "step": self.step,
                "kimg": self.images_seen / 1000,
                "phase": self.phase.name,
                "resolution": self.phase.resolution,
                "alpha": round(self.phase.alpha, 6),
                "lod": round(self.phase.lod, 6),
                "loss_g": mean[0],
                "loss_d": mean[1],
                "penalty": mean[2],
                "seconds": round(self.elapsed_s, 3),
                "img_per_s": round(window.images / dt, 2) if dt > 0 else 0.0,
                "max_mem_mb": round(max_memory_mb(self.device), 1),
            }
        )
        return dt

    def _result(self, start_images: int, session_start: float, train_s: float) -> TrainResult:
        trained = self.images_seen - start_images
        return TrainResult(
            step=self.step,
            images_seen=self.images_seen,
            images_this_run=trained,
            seconds_total=round(self.elapsed_s, 3),
            seconds_this_run=round(time.perf_counter() - session_start, 3),
            img_per_s=round(trained / train_s, 2) if train_s > 0 else 0.0,
            resumed=self.resumed,
            device=str(self.device),
            amp=self.amp,
            n_params_g=count_params(self.G),
            n_params_d=count_params(self.D),
            last_log=dict(self.log_rows[-1]) if self.log_rows else {},
            phase=self.phase.to_dict(),
            metric_key=self.best["metric_key"] if self.best else self.metric_key if self.snapshot_metric else None,
            best_kimg=self.best["kimg"] if self.best else None,
            best_metric=self.best["metric"] if self.best else None,
            metric_rows=len(self.metric_rows),
        )


def next_multiple(images: int, every: int) -> int:
    """The first multiple of ``every`` after ``images``: when the next log row, checkpoint or metric is due."""
    return (images // every + 1) * every


class LossWindow:
    """The loss sums (G, D, penalty) of one log window, kept on the device: the host reads them at log points."""

    def __init__(self, device: torch.device) -> None:
        self.sums = torch.zeros(3, device=device)
        self.reset()

    def reset(self) -> None:
        self.sums.zero_()
        self.n, self.images, self.t0 = 0, 0, time.perf_counter()

    def add(self, losses: torch.Tensor, images: int) -> None:
        self.sums += losses
        self.n += 1
        self.images += images

    def means(self, world: int) -> list[float]:
        """The window's mean losses; under data parallel, averaged over the ranks."""
        if world > 1:
            import torch.distributed as dist

            dist.all_reduce(self.sums)
            self.sums /= world
        return (self.sums / self.n).tolist()


def _as_tuple(state: Any) -> Any:
    """random.setstate needs tuples; a checkpoint round-trip may hand back lists."""
    if isinstance(state, list):
        return tuple(_as_tuple(s) for s in state)
    if isinstance(state, tuple):
        return tuple(_as_tuple(s) for s in state)
    return state
