"""Training throughput per GAN family: the optimised path against plain eager fp32, same network, same run.

Each row times full training iterations (n_critic D steps + one G step, penalties and EMA included) of the real
:class:`~ganime_steps.gan.loop.Trainer` on a synthetic packed dataset, after warm-up iterations:

- baseline:  eager, fp32, contiguous (NCHW) tensors
- optimised: channels_last everywhere; on CUDA also mixed precision (bf16 where supported, ``amp auto``), plus a
  ``compile`` row with ``torch.compile`` on G and D for the non-progressive families (the progressive ones
  change their graph at every fade-in step, so compiling them would recompile continually).

Progressive families are timed at their full resolution (stable phase, lod 0). ``ratio`` = optimised img/s divided
by baseline img/s (> 1: the optimisation helps). On CUDA, full mode also reports StyleGAN at 128 px in s/kimg.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.training import bench_config, random_dataset, sync
from ganime_steps.gan import available_families, get_family
from ganime_steps.gan.loop import Trainer

log = logging.getLogger(__name__)


def _data(folder: Path, resolution: int, n: int = 256) -> Path:
    return random_dataset(folder / f"bench_{resolution}.npy", n, resolution)


def _trainer(
    family: str, data: Path, out: Path, device: torch.device, *, resolution, batch, channels, optimised, compile_=False
):
    cfg = bench_config(
        family,
        resolution=resolution,
        batch=batch,
        channels=channels,
        amp="auto" if optimised else "off",
        channels_last=optimised,
        compile_=compile_,
    )
    return Trainer(cfg, data=data, out=out, device=device)


def _img_per_s(tr: Trainer, warmup: int, iters: int, min_s: float) -> float:
    for _ in range(warmup):
        tr._iteration()
    sync(tr.device)
    start_images, t0 = tr.images_seen, time.perf_counter()
    done = 0
    while done < iters or time.perf_counter() - t0 < min_s:
        tr._iteration()
        done += 1
        if done >= 10 * iters:
            break
    sync(tr.device)
    return (tr.images_seen - start_images) / (time.perf_counter() - t0)


def _measure(family, data, folder, device, *, resolution, batch, channels, warmup, iters, min_s, compile_=False):
    rates = {}
    for variant in ("baseline", "optimised"):
        torch.manual_seed(0)
        tr = _trainer(
            family,
            data,
            folder / f"{family}_{variant}",
            device,
            resolution=resolution,
            batch=batch,
            channels=channels,
            optimised=variant == "optimised",
            compile_=compile_ and variant == "optimised",
        )
        rates[variant] = _img_per_s(tr, warmup, iters, min_s)
        amp = tr.amp
        del tr
    return rates, amp


def run(quick: bool) -> list[dict]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    if cuda:
        resolution, batch, channels = (64, 32, 64) if quick else (128, 32, 64)
        warmup, iters, min_s = (3, 10, 2.0) if quick else (10, 50, 10.0)
    else:
        resolution, batch, channels = (32, 16, 16) if quick else (64, 32, 32)
        warmup, iters, min_s = (1, 2, 1.5) if quick else (2, 5, 8.0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = _data(folder, resolution)
        variants = [(f, False) for f in available_families()]
        if cuda:  # torch.compile: CUDA only (on CPU it needs a C++ toolchain and long compiles for a small gain)
            variants += [(f, True) for f in available_families() if not get_family(f).progressive]
        for family, compile_ in variants:
            rates, amp = _measure(
                family,
                data,
                folder,
                device,
                resolution=resolution,
                batch=batch,
                channels=channels,
                warmup=warmup,
                iters=iters,
                min_s=min_s,
                compile_=compile_,
            )
            opt = ["channels_last"] + ([f"amp {amp}"] if amp != "off" else []) + (["compile"] if compile_ else [])
            rows.append(
                {
                    "family": family,
                    "device": str(device),
                    "resolution": resolution,
                    "batch": batch,
                    "channels": channels,
                    "optimised": "+".join(opt),
                    "img_per_s": round(rates["optimised"], 1),
                    "baseline": round(rates["baseline"], 1),
                    "ratio": round(rates["optimised"] / rates["baseline"], 3),
                }
            )
            log.info("bench_train %s", rows[-1])
        if cuda and not quick:  # the config.yaml runs: StyleGAN 128 px, batch 32, s/kimg
            data128 = _data(folder, 128)
            rates, amp = _measure(
                "stylegan",
                data128,
                folder,
                device,
                resolution=128,
                batch=32,
                channels=64,
                warmup=warmup,
                iters=iters,
                min_s=min_s,
            )
            rows.append(
                {
                    "family": "stylegan",
                    "device": str(device),
                    "resolution": 128,
                    "batch": 32,
                    "channels": 64,
                    "optimised": f"channels_last+amp {amp}",
                    "img_per_s": round(rates["optimised"], 1),
                    "baseline": round(rates["baseline"], 1),
                    "ratio": round(rates["optimised"] / rates["baseline"], 3),
                    "s_per_kimg": round(1000 / rates["optimised"], 2),
                    "baseline_s_per_kimg": round(1000 / rates["baseline"], 2),
                }
            )
    return rows
