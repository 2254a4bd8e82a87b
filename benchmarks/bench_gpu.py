"""Device benchmark: training throughput of every family on one GPU, within a fixed time budget (8 minutes).

``python -m benchmarks gpu`` (full; CUDA only) writes ``benchmarks/results/gpu.json``, rows first to last:

1. the headline: StyleGAN at 128 px (batch 32, channels 64, amp auto, channels_last), img/s and s/kimg
   (NVIDIA's stylegan2-ada reports 12.8-13.7 s/kimg at 128 px on one V100: another network, for scale only);
2. every family at 64 and 128 px (amp auto, channels_last);
3. precision: fp32 / bf16 / fp16 for dcgan and stylegan at 128 px;
4. channels_last on / off for dcgan and stylegan at 128 px;
5. Inception feature throughput (images/s through the FID network, when its weights are installed);
6. torch.compile on / off for dcgan and wgan-gp at 128 px (last: compiling takes the longest).

Every row has img/s, s/kimg and the peak GPU memory (MiB). Rows past the budget are listed as skipped. Without a
GPU the full mode measures nothing and says so (a GPU figure is never estimated from a CPU one).
``--smoke`` / ``--quick``: the same code path, tiny sizes and few steps, on whatever device there is (the tests
run it on CPU).
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.training import bench_config, random_dataset, sync
from ganime_steps.gan import available_families
from ganime_steps.gan.loop import Trainer

log = logging.getLogger(__name__)
BUDGET_S = 420.0  # measurements stop starting after this; the whole run stays under 8 minutes


def _data(folder: Path, resolution: int, n: int = 512) -> Path:
    path = folder / f"bench_{resolution}.npy"
    if not path.exists():
        random_dataset(path, n, resolution)
    return path


def measure_training(
    family: str,
    folder: Path,
    device: torch.device,
    *,
    resolution: int,
    batch: int,
    channels: int,
    amp: str = "auto",
    channels_last: bool = True,
    compile_: bool = False,
    warmup: int = 5,
    min_s: float = 3.0,
    max_iters: int = 200,
) -> dict:
    """img/s of full training iterations (D steps, penalties, G step, EMA) at the family's full network."""
    cfg = bench_config(
        family,
        resolution=resolution,
        batch=batch,
        channels=channels,
        amp=amp,
        channels_last=channels_last,
        compile_=compile_,
    )
    data = _data(folder, resolution)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    t_init = time.perf_counter()
    tr = Trainer(cfg, data=data, out=folder / f"run_{family}_{resolution}", device=device)
    init_s = time.perf_counter() - t_init
    for _ in range(warmup):
        tr._iteration()
    sync(device)
    start, t0, n = tr.images_seen, time.perf_counter(), 0
    while n < 2 or (time.perf_counter() - t0 < min_s and n < max_iters):
        tr._iteration()
        n += 1
    sync(device)
    rate = (tr.images_seen - start) / (time.perf_counter() - t0)
    row = {
        "family": family,
        "resolution": resolution,
        "batch": batch,
        "channels": channels,
        "amp": tr.amp,
        "channels_last": tr.channels_last,
        "compile": tr.compiled,
        "img_per_s": round(rate, 1),
        "s_per_kimg": round(1000.0 / rate, 2),
        "peak_mem_mib": round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None,
        "init_s": round(init_s, 1),
        "iterations": n,
    }
    del tr
    return row


def measure_inception(device: torch.device, *, batch: int, seconds: float) -> dict:
    """Images/s through the FID Inception network (uint8 128 px in, resized to 299 inside)."""
    from ganime_steps.common import GanimeError
    from ganime_steps.evaluate import load_extractor

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
    rate = n * batch / (time.perf_counter() - t0)
    return {"family": "inception", "resolution": 128, "batch": batch, "img_per_s": round(rate, 1)}


def _plan(quick: bool) -> list[tuple[str, dict]]:
    if quick:  # smoke: the code path of every kind of row, tiny
        small = dict(resolution=16, batch=8, channels=4, warmup=1, min_s=0.0, max_iters=2)
        return [
            ("train", dict(family="stylegan", **small)),
            ("train", dict(family="dcgan", amp="off", channels_last=False, **small)),
        ]
    big = dict(batch=32, channels=64)
    plan: list[tuple[str, dict]] = [("train", dict(family="stylegan", resolution=128, **big))]
    for res in (64, 128):
        plan += [("train", dict(family=f, resolution=res, **big)) for f in available_families()]
    for fam in ("dcgan", "stylegan"):
        plan += [("train", dict(family=fam, resolution=128, amp=a, **big)) for a in ("off", "bf16", "fp16")]
        plan.append(("train", dict(family=fam, resolution=128, channels_last=False, **big)))
    plan.append(("inception", dict(batch=64, seconds=5.0)))
    for fam in ("dcgan", "wgan-gp"):
        plan.append(("train", dict(family=fam, resolution=128, compile_=True, **big)))
    return plan


def run(quick: bool) -> list[dict]:
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda and not quick:
        skipped = "no GPU on this machine: nothing measured (GPU figures are never estimated)"
        return [{"device": "cpu", "skipped": skipped}]
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    t_start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for kind, kwargs in _plan(quick):
            if not quick and time.perf_counter() - t_start > BUDGET_S:
                rows.append({"device": name, "kind": kind, **kwargs, "skipped": "time budget"})
                continue
            try:
                if kind == "train":
                    row = measure_training(device=device, folder=folder, **kwargs)
                else:
                    row = measure_inception(device, **kwargs)
            except torch.cuda.OutOfMemoryError as exc:
                row = {**kwargs, "skipped": f"out of memory: {str(exc)[:80]}"}
            rows.append({"device": name, "kind": kind, **row})
            log.info("bench_gpu %s", rows[-1])
    return rows
