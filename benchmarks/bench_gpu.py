"""Device benchmark: training throughput of every family on one GPU, each row kept the moment it is measured.

``python -m benchmarks gpu`` (full; CUDA only) appends every row to ``benchmarks/results/gpu.jsonl`` (one JSON
object a line, flushed and synced) as it is measured, so a crash or a kill keeps the rows so far, then writes the
summary ``gpu.json`` from them. Rows, first to last:

1. the headline: StyleGAN at 128 px (batch 32, channels 64, amp auto, channels_last), timed per phase of its growth
   schedule plus the weighted total (NVIDIA's stylegan2-ada reports 12.8-13.7 s/kimg at 128 px on one V100:
   another network, for scale only);
2. every family at 64 and 128 px (amp auto, channels_last); progressive families per phase plus the total;
3. precision: fp32 / bf16 / fp16 for dcgan and stylegan at 128 px (stylegan: its full-resolution phase);
4. channels_last off for dcgan and stylegan at 128 px (stylegan: its full-resolution phase);
5. Inception feature throughput (images/s through the FID network, when its weights are installed);
6. torch.compile for dcgan and wgan-gp at 128 px (last: compiling takes the longest).

Timing: warm-up iterations, then full training iterations (D steps, penalties, G step, EMA) until at least
``GANIME_BENCH_GPU_MIN_SECONDS`` (default 10 s) have passed, the device synchronised before the clock is read;
each progressive phase for at least ``GANIME_BENCH_GPU_PHASE_SECONDS`` (default 3 s). A row has img/s, s/kimg,
the iterations and seconds timed, the peak GPU memory (MiB) and the Trainer's set-up time.

Progressive families (progan, stylegan) are timed per phase as a real run spends its images: the Trainer is set
to the first image of each phase of the family's :class:`~ganime_steps.gan.progressive.GrowthSchedule` (every
resolution from the family's start resolution, stable and fade-in) and its own ``schedule.at(images_seen)``
picks the phase, lod and batch of every iteration. The ``total`` row weighs each phase's s/kimg by the kimg a run
spends in it (stable_kimg / fade_kimg; the full-resolution stable phase: one stable_kimg), i.e. the average
s/kimg over the whole schedule up to the run's resolution; ``schedule_h`` is that schedule's hours.

A configuration that raises (out of memory, a compile failure, an unsupported dtype ...) records a row with
``error: "<Type>: <first line>"`` (a failing phase: that phase's row) and the run goes on with the next one; CUDA
memory is freed between configurations. Measurements stop starting after ``GANIME_BENCH_GPU_BUDGET_S`` (default
420 s); the rest are listed as skipped. Without a GPU the full mode measures nothing and says so (a GPU figure is
never estimated from a CPU one). ``--smoke`` / ``--quick``: the same code path, tiny sizes and two timed
iterations on CPU (``GANIME_BENCH_GPU_MIN_SECONDS`` default 0; 1 s on CUDA), on whatever device there is (the
tests run it on CPU).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from benchmarks import append_jsonl
from benchmarks.training import bench_config, random_dataset, sync
from ganime_steps.gan import available_families
from ganime_steps.gan.loop import Trainer
from ganime_steps.gan.progressive import GrowthSchedule, Phase

log = logging.getLogger(__name__)
Emit = Callable[[dict], None]


def _env_float(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    return float(text) if text else default


def _sig(x: float, digits: int = 4) -> float:
    """``x`` to ``digits`` significant digits (rates from 1 to 100 000 img/s keep the same relative precision)."""
    return float(f"{x:.{digits}g}")


def _data(folder: Path, resolution: int, n: int = 512) -> Path:
    path = folder / f"bench_{resolution}.npy"
    if not path.exists():
        random_dataset(path, n, resolution)
    return path


def error_text(exc: BaseException) -> str:
    """``"<Type>: <first line of the message>"`` (at most 300 characters)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300].rstrip(": ")


class RowLog:
    """The rows of one run: each appended to ``path`` (JSON lines, flushed and synced) the moment it is measured,
    and read back for the final table. Without a path the rows are kept in memory only."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.rows: list[dict] = []
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("")

    def __call__(self, row: dict) -> None:
        self.rows.append(row)
        log.info("bench_gpu %s", row)
        if self.path is not None:
            append_jsonl(self.path, row)

    def read(self) -> list[dict]:
        if self.path is None:
            return list(self.rows)
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


# --- the growth schedule, phase by phase ---------------------------------------------------------------------------


def schedule_phases(schedule: GrowthSchedule) -> list[tuple[Phase, int, float]]:
    """The phases a run goes through, in order: ``(phase, first image of the phase, kimg spent in it)``. The
    full-resolution stable phase lasts to the end of a run: it weighs one ``stable_kimg`` (1 kimg if that is 0).
    A non-progressive family (or a run that starts at its full resolution): the one stable phase."""
    dur = schedule.stable + schedule.fade
    if dur <= 0 or schedule.lod0 == 0:
        return [(schedule.at(0), 0, schedule.stable / 1000 or 1.0)]
    out = []
    for stage in range(schedule.lod0 + 1):
        base = stage * dur
        if stage == schedule.lod0:
            out.append((schedule.at(base), base, schedule.stable / 1000 or 1.0))
            break
        if schedule.stable > 0:
            out.append((schedule.at(base), base, schedule.stable / 1000))
        if schedule.fade > 0:  # at the fade's first image the lod is still whole (stable): one image in
            first = base + schedule.stable + 1
            out.append((schedule.at(first), first, schedule.fade / 1000))
    return out


def phase_label(phase: Phase) -> str:
    return f"{phase.resolution} {phase.name}"


def time_phase(tr: Trainer, phase: Phase, first: int, *, warmup: int, min_s: float) -> dict:
    """Train in ``phase`` (the Trainer's own schedule picks it from ``images_seen``, set to ``first``; back to
    ``first`` whenever a step would leave the phase): ``warmup`` iterations, then at least two and at least
    ``min_s`` seconds of iterations, the device synchronised before the clock is read."""
    device = tr.device

    def step() -> int:
        if tr.schedule.at(tr.images_seen).key != phase.key:
            tr.images_seen = first
        before = tr.images_seen
        tr._iteration()
        return tr.images_seen - before

    tr.images_seen = first
    for _ in range(warmup):
        step()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    images, n, t0 = 0, 0, time.perf_counter()
    # the unsynchronised clock runs behind the device's work, so the synchronised time below is at least min_s
    while n < 2 or time.perf_counter() - t0 < min_s:
        images += step()
        n += 1
    sync(device)
    seconds = time.perf_counter() - t0
    if tr.phase.key != phase.key:
        raise RuntimeError(f"timed {phase_label(tr.phase)}, not {phase_label(phase)}")
    rate = images / seconds
    return {
        "phase": phase_label(phase),
        "phase_batch": phase.batch_size,
        "img_per_s": _sig(rate),
        "s_per_kimg": _sig(1000.0 / rate),
        "iterations": n,
        "timed_s": round(seconds, 2),
        "peak_mem_mib": round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None,
    }


# --- measurements -------------------------------------------------------------------------------------------------


def measure_training(
    family: str,
    folder: Path,
    device: torch.device,
    emit: Emit,
    base: dict,
    *,
    resolution: int,
    batch: int,
    channels: int,
    amp: str = "auto",
    channels_last: bool = True,
    compile_: bool = False,
    warmup: int = 5,
    min_s: float = 10.0,
    phase_s: float | None = None,
    phases: str = "schedule",
    start_resolution: int | None = None,
    stable_kimg: float | None = None,
    fade_kimg: float | None = None,
    batch_schedule: str = "",
) -> None:
    """Time full training iterations of ``family`` and ``emit`` a row per phase as it is measured.

    ``phases``: ``"schedule"``, every phase of the family's growth schedule (from ``start_resolution``, default
    the family's, with its stable/fade kimg unless given), each for ``phase_s`` seconds (default ``min_s``), plus
    a ``total`` row weighted by the kimg a run spends in each phase; ``"full"``, the full-resolution stable phase
    only, for ``min_s``. Non-progressive families have one phase (timed for ``min_s``). A phase that raises gives
    that phase's row an ``error`` and the next phase is timed; a failing set-up raises (the caller's row)."""
    cfg = bench_config(
        family,
        resolution=resolution,
        batch=batch,
        channels=channels,
        amp=amp,
        channels_last=channels_last,
        compile_=compile_,
    )
    cfg = dataclasses.replace(
        cfg,
        start_resolution=start_resolution if phases == "schedule" else resolution,
        stable_kimg=stable_kimg,
        fade_kimg=fade_kimg,
        batch_schedule=batch_schedule,
    )
    data = _data(folder, resolution)
    t_init = time.perf_counter()
    tr = Trainer(cfg, data=data, out=folder / f"run_{family}_{resolution}", device=device)
    init_s = round(time.perf_counter() - t_init, 1)
    settings = {**base, "amp": tr.amp, "channels_last": tr.channels_last, "compile": tr.compiled}

    def row(**fields) -> dict:
        return {**settings, **fields, "init_s": init_s}

    plan = schedule_phases(tr.schedule)
    seconds = min_s if len(plan) == 1 else (min_s if phase_s is None else phase_s)
    done: list[tuple[float, float]] = []  # (kimg weight, s/kimg) of the phases that ran
    for phase, first, kimg in plan:
        try:
            measured = time_phase(tr, phase, first, warmup=warmup, min_s=seconds)
        except Exception as exc:  # noqa: BLE001 - any failure: this phase's row says what, the next one runs
            emit(row(phase=phase_label(phase), phase_batch=phase.batch_size, error=error_text(exc)))
            measured = None
        if measured is None:  # the failed step's tensors went with its traceback: hand their memory back
            for p in tr.d_params:  # a step that failed inside the G step leaves D frozen
                p.requires_grad_(True)
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        emit(row(**measured, phase_kimg=kimg) if len(plan) > 1 else row(**measured))
        done.append((kimg, measured["s_per_kimg"]))
    if len(plan) > 1:
        if len(done) < len(plan):
            emit(row(phase="total", error=f"{len(plan) - len(done)} of {len(plan)} phases failed: no total"))
        else:
            kimg = sum(w for w, _ in done)
            seconds_total = sum(w * s for w, s in done)
            emit(
                row(
                    phase="total",
                    img_per_s=_sig(1000.0 * kimg / seconds_total),
                    s_per_kimg=_sig(seconds_total / kimg),
                    phase_kimg=round(kimg, 3),
                    schedule_h=round(seconds_total / 3600, 2),
                )
            )
    del tr


def measure_inception(device: torch.device, *, batch: int, seconds: float) -> dict:
    """Images/s through the FID Inception network (uint8 128 px in, resized to 299 inside)."""
    from ganime_steps.common import GanimeError
    from ganime_steps.metrics.features import load_extractor

    try:
        ext = load_extractor(None, None, str(device))
    except (GanimeError, OSError, ImportError) as exc:
        return {"family": "inception", "skipped": f"Inception weights not available: {str(exc)[:120]}"}
    images = np.random.default_rng(0).integers(0, 256, (batch, 128, 128, 3), dtype=np.uint8)
    ext(images)
    sync(device)
    t0, n = time.perf_counter(), 0
    while n < 2 or time.perf_counter() - t0 < seconds:
        ext(images)
        n += 1
    sync(device)
    elapsed = time.perf_counter() - t0
    rate = n * batch / elapsed
    return {
        "family": "inception",
        "resolution": 128,
        "batch": batch,
        "img_per_s": round(rate, 1),
        "iterations": n,
        "timed_s": round(elapsed, 2),
    }


# --- the plan and the run -----------------------------------------------------------------------------------------


def _plan(quick: bool, cuda: bool) -> list[tuple[str, dict]]:
    if quick:  # smoke: the code path of every kind of row, tiny (stylegan: its one full-resolution phase)
        min_s = _env_float("GANIME_BENCH_GPU_MIN_SECONDS", 1.0 if cuda else 0.0)
        small = dict(resolution=16, batch=8, channels=4, warmup=1, min_s=min_s)
        return [
            ("train", dict(family="stylegan", start_resolution=16, **small)),
            ("train", dict(family="dcgan", amp="off", channels_last=False, **small)),
        ]
    min_s = _env_float("GANIME_BENCH_GPU_MIN_SECONDS", 10.0)
    phase_s = _env_float("GANIME_BENCH_GPU_PHASE_SECONDS", min(3.0, min_s))
    big = dict(batch=32, channels=64, min_s=min_s, phase_s=phase_s)
    plan: list[tuple[str, dict]] = [("train", dict(family="stylegan", resolution=128, **big))]
    for res in (64, 128):
        plan += [
            ("train", dict(family=f, resolution=res, **big))
            for f in available_families()
            if (f, res) != ("stylegan", 128)  # the headline
        ]
    for fam in ("dcgan", "stylegan"):
        full = dict(family=fam, resolution=128, phases="full", **big)
        plan += [("train", dict(full, amp=a)) for a in ("off", "bf16", "fp16")]
        plan.append(("train", dict(full, channels_last=False)))
    plan.append(("inception", dict(batch=64, seconds=min_s / 2)))
    for fam in ("dcgan", "wgan-gp"):
        plan.append(("train", dict(family=fam, resolution=128, compile_=True, **big)))
    return plan


def _config_fields(kind: str, kwargs: dict) -> dict:
    """The row's identifying fields (before anything is measured)."""
    if kind != "train":
        return {"family": kind, **{k: v for k, v in kwargs.items() if k == "batch"}}
    return {
        "family": kwargs["family"],
        "resolution": kwargs["resolution"],
        "batch": kwargs["batch"],
        "channels": kwargs["channels"],
        "amp": kwargs.get("amp", "auto"),
        "channels_last": kwargs.get("channels_last", True),
        "compile": kwargs.get("compile_", False),
    }


def _free(device: torch.device) -> None:
    """Memory of the last configuration back to the device (its trainer, compiled graphs, cached blocks)."""
    gc.collect()
    if device.type == "cuda":
        try:
            torch._dynamo.reset()
        except Exception:  # noqa: BLE001 - nothing compiled, or no dynamo: nothing to reset
            pass
        torch.cuda.empty_cache()


def run_plan(
    plan: list[tuple[str, dict]],
    device: torch.device,
    rows_path: Path | None = None,
    *,
    budget_s: float | None = None,
) -> list[dict]:
    """Measure ``plan`` (``("train", measure_training kwargs)`` / ``("inception", ...)``) in order; every row goes to
    ``rows_path`` as it is measured. A configuration that raises records an error row and the next one runs; after
    ``budget_s`` seconds the rest are listed as skipped. Returns the rows as written."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    emit = RowLog(rows_path)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for kind, kwargs in plan:
            base = {"device": name, "kind": kind, **_config_fields(kind, kwargs)}
            if budget_s is not None and time.perf_counter() - t_start > budget_s:
                emit({**base, "skipped": "time budget"})
                continue
            try:
                if kind == "train":
                    measure_training(device=device, folder=folder, emit=emit, base=base, **kwargs)
                else:
                    emit({**base, **measure_inception(device, **kwargs)})
            except Exception as exc:  # noqa: BLE001 - OOM, compile failure, unsupported dtype ...: next config
                emit({**base, "error": error_text(exc)})
            _free(device)
    return emit.read()


def run(quick: bool, rows_path: Path | None = None) -> list[dict]:
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda and not quick:
        skipped = "no GPU on this machine: nothing measured (GPU figures are never estimated)"
        emit = RowLog(rows_path)
        emit({"device": "cpu", "skipped": skipped})
        return emit.read()
    budget = None if quick else _env_float("GANIME_BENCH_GPU_BUDGET_S", 420.0)
    return run_plan(_plan(quick, cuda), device, rows_path, budget_s=budget)
