"""One training loop for every GAN family: kimg schedule, G EMA, AMP, checkpoints with exact resume, NaN guard.

Time is counted in images shown to D (kimg, as in ProGAN/StyleGAN): one iteration is ``n_critic`` D steps of
``batch_size`` real images each, then one G step; what each step computes is the family's step object
(:mod:`ganime_steps.gan.steps`: ``d_step``/``g_step``, as stylegan2-ada's ``Loss.accumulate_gradients``), so the
loop has no per-family branch. Training stops at the first iteration boundary at or past the target, so a run
stopped at N/2 kimg and resumed to N passes through exactly the same iterations.

The seams (after stylegan2-ada-pytorch's ``training_loop.py`` + ``loss.py`` + ``augment.py``):
:mod:`~ganime_steps.gan.data` (real batches), :mod:`~ganime_steps.gan.augment` (DiffAugment),
:mod:`~ganime_steps.gan.steps` (the families' D and G steps), :mod:`~ganime_steps.gan.checkpoint` (checkpoint,
exact resume, data and code fingerprints), :mod:`~ganime_steps.gan.snapshots` (metric snapshots, best generator,
sample grids, log.csv, generator.pt), :mod:`~ganime_steps.gan.parallel` (data parallel). This module: the run's
settings, set-up, the iteration and the loop.

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
(:class:`~ganime_steps.gan.data.DeviceDataset`), else a thread reads the next batch ahead
(:class:`~ganime_steps.gan.data.PrefetchLoader`); both draw exactly the memmap path's indices and flips, so exact
resume is unchanged. ``--compile`` compiles G and D (eager fallback). Data parallel over N GPUs with torchrun: see
:class:`Trainer`.

Batch norm and G_ema: :func:`update_ema` copies G's BN running statistics into G_ema, but those describe G's
weights, not the averaged ones; G_ema's are re-estimated before every use (see :mod:`~ganime_steps.gan.snapshots`,
which also describes the metrics over training).
"""

from __future__ import annotations

import copy
import logging
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.utils.deterministic

from ganime_steps.common import (
    GanimeError,
    Settings,
    progress,
    seed_everything,
    write_text,
)
from ganime_steps.gan.checkpoint import Checkpointing, dataset_fingerprint, training_code_fingerprint
from ganime_steps.gan.data import RealBatches, load_dataset
from ganime_steps.gan.losses import Family, data_parallel_shard, get_family, per_sample
from ganime_steps.gan.networks import PROGRESSIVE_ARCHS, NetConfig, build_networks, count_params
from ganime_steps.gan.parallel import (
    DIST_TIMEOUT,
    all_reduce_grads,
    check_data_parallel_batches,
    dist_env,
    rank_device,
)
from ganime_steps.gan.progressive import GrowthSchedule, Phase, parse_batch_schedule, parse_lr_schedule
from ganime_steps.gan.snapshots import SnapshotMetricFn, Snapshots, log_csv_text, preserved_rng
from ganime_steps.gan.steps import DStep, StepNets, family_loss

log = logging.getLogger(__name__)

AMP_MODES = ("auto", "bf16", "fp16", "off")
LOG_WRITE_S = 30.0  # log.csv is rewritten whole (atomically): at most this often, plus at checkpoints and the end


@dataclass(frozen=True)
class RunSettings(Settings):
    """What a run trains, as a person or the workflow gives it (``run_config.json``, ``train --config``): the
    settings of the train stage, unresolved (``lr`` None: the family's; ``lr_schedule`` auto: its table; the length in
    kimg or in epochs). Every default here is the workflow schema's ``runs.*`` default, written once: the CLI's flags,
    ``train.run_train`` and :class:`TrainConfig` take theirs from this class (``tests/test_settings.py`` checks the
    schema against it). Where and how fast a run happens (device, mixed precision and TF32, torch.compile, data
    placement, threads) and its file paths are not settings: they are ``train.run_train``'s keywords and runtime
    flags."""

    family: str = "dcgan"  # the schema requires it; the CLI's default
    resolution: int = 64  # image size: a power of two 16..256, the packed set's
    kimg: float | None = 1000.0  # run length in thousands of real images shown to D; None with epochs
    epochs: float | None = None  # run length in passes over the packed set instead (kimg = epochs x N / 1000)
    batch_size: int = 64  # images per D step
    lr: float | None = None  # Adam lr of G and D; None: the family's published one
    channels: int = 64  # width of the highest-resolution layer (x2 toward 4x4, capped at x8)
    z_dim: int = 128  # latent size
    seed: int = 0  # torch, numpy and Python RNGs and the sample-grid latents
    ema_kimg: float = 10.0  # G_ema half-life in kimg; 0: no EMA
    ema_rampup: float | None = 0.05  # half-life <= this fraction of images seen, so tiny runs are not all-init
    checkpoint_every: float = 50.0  # kimg between checkpoints (and sample grids)
    log_every: float | None = None  # kimg between log.csv rows; None: min(1, kimg / 100)
    metrics_every: float | None = None  # kimg between metric snapshots; None: every checkpoint
    diffaug: bool = False  # DiffAugment before D (the projected family always uses it)
    feature_resolution: int = 64  # projected: D's feature-network input size (a multiple of 32, >= 64)
    # progressive families only (None: the family's published default)
    start_resolution: int | None = None
    stable_kimg: float | None = None
    fade_kimg: float | None = None
    batch_schedule: str = ""  # "RES:BATCH,..." per resolution, others batch_size; auto: the family's table
    lr_schedule: str = "auto"  # "RES:LR,..." per resolution, others lr; auto: the family's table; "": lr throughout
    lr_decay_kimg: float | str | None = None  # linear lr decay to 0 at this kimg; None or auto: the family's
    # reference (SNGAN: the run's kimg; the others none); "none": off
    resume_other_code: bool = False  # resume a checkpoint written by other training code (else: set aside)

    what = "run settings"


@dataclass(frozen=True)
class TrainConfig:
    """A run's resolved settings as the Trainer runs them (in the checkpoint and generator.pt): the lr, the length
    and the schedules resolved from :class:`RunSettings` by ``train.run_train``, plus where and how fast it runs."""

    family: str
    resolution: int
    kimg: float
    batch_size: int
    lr: float  # resolved: the family's default unless overridden
    channels: int
    z_dim: int
    seed: int
    ema_kimg: float = RunSettings.ema_kimg  # G_ema half-life in kimg
    ema_rampup: float | None = RunSettings.ema_rampup  # half-life <= this fraction of images seen
    checkpoint_every: float = RunSettings.checkpoint_every  # kimg
    diffaug: bool = RunSettings.diffaug
    amp: str = "auto"
    log_every: float | None = RunSettings.log_every  # kimg; None: min(1, kimg / 100)
    # progressive families only (None: the family's published default)
    start_resolution: int | None = RunSettings.start_resolution
    stable_kimg: float | None = RunSettings.stable_kimg
    fade_kimg: float | None = RunSettings.fade_kimg
    batch_schedule: str = ""  # resolved: "RES:BATCH,..." batch size per resolution; others use batch_size
    channels_last: bool | None = None  # None: on (faster on CUDA, and measured faster on CPU too: README)
    lr_schedule: str = ""  # resolved: "RES:LR,..." lr per resolution (progressive families); others use lr
    lr_decay_kimg: float | None = None  # resolved: linear lr decay to 0 at this many kimg; None: off
    compile: bool = False  # torch.compile G and D (non-progressive families); falls back to eager on failure
    data_on_device: bool | None = None  # packed set as one tensor on the device; None: on CUDA when it fits
    resume_other_code: bool = RunSettings.resume_other_code  # resume a checkpoint written by other training code
    # projected family only: D's feature-network input size, and its converted EfficientNet-Lite0 weights file
    # (None: resources/backbones/, then the cache; see ganime_steps.backbones.verified_weights)
    feature_resolution: int = RunSettings.feature_resolution
    feature_weights: str | None = None
    # TF32 matmuls and convolutions on CUDA (Ampere+): faster, 10 mantissa bits. Off by default, as stylegan2-ada
    # trains, so `--amp off` is real float32; metrics always run without it (metrics.features.full_precision_matmul)
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


# --- the trainer --------------------------------------------------------------------------------------------------


class Trainer(Checkpointing, Snapshots):
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
        code_id: str | None = None,
    ) -> None:
        """``snapshot_metric(G_ema) -> {name: value}``: run at checkpoints (every ``metrics_every`` kimg, a multiple
        of ``cfg.checkpoint_every``; None = every checkpoint) and at the end; rows go to ``metrics.jsonl`` and the
        snapshot with the lowest ``metrics[metric_key]`` is exported as ``generator_best.pt``. Its optional
        ``identity`` attribute ({name: value}) says which rows are comparable. ``metric_at_start``: also measure
        G_ema before the first step of a run with no rows (a kimg-0 row for a fresh run). ``code_id``: the training
        code's fingerprint, passed in by the caller (``train.run_train`` passes ``training_code_fingerprint()``); a
        checkpoint made by other code is set aside. None: that fingerprint, computed here (for direct callers)."""
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
            self.code_id = training_code_fingerprint() if code_id is None else code_id
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
        self.reals = RealBatches(
            self.images,
            self.device,
            on_device=self.cfg.data_on_device,
            channels_last=self.channels_last,
            progressive=self.progressive,
            shard=self.shard,
        )

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
        self.loss = family_loss(
            self.family,
            StepNets(
                G=self._g,
                D=lambda x: self.d_fwd(x),
                D_eager=lambda x: self.D(x),
                latents=self._latents,
                autocast=self._autocast,
                penalty_autocast=self._penalty_autocast,
            ),
            self.diffaug,
        )

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

    # -- training ----------------------------------------------------------------------------------------------

    def _autocast(self):
        return torch.autocast("cuda", dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None)

    def _penalty_autocast(self):
        """Gradient penalties' D forwards: fp32 under fp16 (an unscaled fp16 inner gradient could underflow, a
        scaled one overflowed), the run's autocast otherwise (bf16 has fp32's range)."""
        if self.amp == "fp16":
            return torch.autocast("cuda", enabled=False)
        return self._autocast()

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

    def _real(self) -> torch.Tensor:
        return self.reals.sample(self.rng, self.phase)

    def _latents(self, n: int) -> torch.Tensor:
        """n global latents; this rank's share under data parallel."""
        return per_sample(lambda size: torch.randn(size, device=self.device), (n // self.world, self.cfg.z_dim))

    def _iteration(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """n_critic D steps then one G step, each computed by the family's step object (:mod:`.steps`); returns
        (loss_g, mean loss_d, mean penalty) as 0-d tensors. No host sync: losses stay on the device, fp16 steps go
        through fused Adam."""
        with data_parallel_shard(self.rank, self.world):
            return self._iteration_body()

    def _iteration_body(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The draws in a fixed order (reals, latents, then the step's own: DiffAugment, penalty points), the
        optimiser steps, the image count and G_ema: the same for every family."""
        loss, phase = self.loss, self._enter_phase()
        bs = phase.batch_size
        # progressive: penalties as at full resolution (the official code), see losses.gradient_norm_penalty
        res_factor = self.cfg.resolution / phase.resolution if self.progressive else 1.0
        ld_sum = torch.zeros((), device=self.device)
        pen_sum = torch.zeros((), device=self.device)
        d: DStep | None = None
        for _ in range(loss.n_critic):
            real = self._real()
            d = loss.d_step(real, self._latents(bs), res_factor)
            self._optimise(self.D, self.opt_d, self.scaler_d, d.loss + d.penalty)
            ld_sum += d.loss.detach()
            pen_sum += d.penalty.detach()
            self.images_seen += bs
        assert d is not None
        for p in self.d_params:  # G step: no D parameter grads needed
            p.requires_grad_(False)
        loss_g = loss.g_step(d, bs)
        self._optimise(self.G, self.opt_g, self.scaler_g, loss_g)
        for p in self.d_params:
            p.requires_grad_(True)
        beta = ema_beta(bs * loss.n_critic, self.cfg.ema_kimg, self.images_seen, self.cfg.ema_rampup)
        update_ema(self.G_ema, self.G, beta)
        self.step += 1
        return loss_g.detach(), ld_sum / loss.n_critic, pen_sum / loss.n_critic

    def _optimise(
        self, net: torch.nn.Module, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler, loss: torch.Tensor
    ) -> None:
        """One optimiser step of ``net`` on ``loss``: backward (loss-scaled under fp16), gradients averaged over
        ranks, the scaler's step (skipped on inf/NaN gradients) and scale update."""
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        all_reduce_grads(net, self.world)
        scaler.step(opt)
        scaler.update()

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
        n_iters = self.schedule.iterations(self.images_seen, target, self.loss.n_critic)
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
