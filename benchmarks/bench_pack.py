"""`clean pack --workers N` against one worker on the same manifest: wall time, ratio, identical bytes.

Synthetic 256x192 PNGs (the booru aspect the pack pads to a square) are written once; each variant packs them at
128 px through :func:`ganime_steps.clean.run_pack`, whole call (process start-up included)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ganime_steps.clean import run_pack


def _manifest(folder: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    files = []
    for i in range(n):
        path = folder / f"img_{i:05d}.png"
        Image.fromarray(rng.integers(0, 256, (256, 192, 3), dtype=np.uint8)).save(path)
        files.append(str(path))
    manifest = folder / "A" / "manifest.parquet"
    manifest.parent.mkdir()
    pd.DataFrame({"file": files, "kept": True}).to_parquet(manifest)
    return manifest


def run(quick: bool) -> list[dict]:
    n = 200 if quick else 2000
    cores = len(os.sched_getaffinity(0))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest = _manifest(folder, n)
        times, blobs = {}, {}
        for workers in sorted({1, 2, cores}):
            out = folder / f"pack_{workers}.npy"
            t0 = time.perf_counter()
            run_pack(manifest=manifest, resolution=128, out=out, workers=workers)
            times[workers] = time.perf_counter() - t0
            blobs[workers] = out.read_bytes()
        for workers, seconds in times.items():
            rows.append(
                {
                    "stage": "clean pack",
                    "images": n,
                    "workers": workers,
                    "cores": cores,
                    "seconds": round(seconds, 2),
                    "img_per_s": round(n / seconds, 1),
                    "ratio_vs_1": round(times[1] / seconds, 3),
                    "identical": blobs[workers] == blobs[1],
                }
            )
    return rows
