"""CPU parity: the project's dcgan run against a plain PyTorch-examples DCGAN loop, whole process each.

Both sides are separate processes timed wall-clock from start to exit (interpreter start, imports, data loading,
network set-up, training, final saves), on the same packed uint8 (N, 64, 64, 3) ``.npy`` (made here with a fixed
seed), on the CPU, for the same number of real images shown to D:

- baseline: ``benchmarks/parity_reference_dcgan.py``, the ``dcgan/main.py`` loop of github.com/pytorch/examples
  (ngf = ndf = 64, nz = 100, batch 64, BCE on Sigmoid, Adam 2e-4 (0.5, 0.999), a shuffling DataLoader over a
  TensorDataset, ``.item()`` reads every iteration, G and D saved at the end);
- project: ``python -m ganime_steps.train --family dcgan --resolution 64 --batch-size 64 --channels 64 --z-dim 100
  --device cpu``, the family's defaults otherwise: G_ema with its default half-life and ramp-up, the NaN guard,
  log rows, random flips, fresh latents for the G step, the final checkpoint + G_ema BN re-estimation +
  generator.pt + sample grids + log.csv + train_summary.json. Only what the baseline genuinely lacks and is
  optional is left out: no metrics over training (``--metric-samples`` 0, the default) and checkpoints as rare as
  allowed (``--checkpoint-every`` = the run's length: the one at the end is always written).

Same architecture: at 64 px and ``--channels 64`` the project's dcgan G and D are the example's layer for layer
(512-256-128-64 widths, 4x4 transposed / strided convs, BN, ReLU / LeakyReLU 0.2, Tanh). The only difference is
biases: the example has none, the project keeps them where no BN follows (G's last layer: 3; D's first and last
layers: 64 + 1), so G has 3 and D 65 parameters more (see ``params_*`` in the row): no extra layers, no
measurable cost. The project's D emits logits and takes BCE as softplus (the same loss, no Sigmoid layer).

Where the work differs: both train G on the D step's fakes (the dcgan family's ``g_step_reuses_fakes``, DCGAN's
reference loop: one G forward per iteration); the project skips D's weight gradients in the G step (the example
computes and discards them); it also updates G_ema every iteration, re-estimates its BN statistics before the final
save and writes a ~90 MB checkpoint. It runs G and D in channels_last (the default; the example is contiguous).
What else keeps it fast (all bit-identical in results): foreach Adam on CPU, no
NaN-fill of uninitialised memory under deterministic mode, that mode set without importing Inductor, freed tensor
memory kept by glibc (``train.keep_freed_memory``: no page faults re-zeroing activations every step), one
sample-grid render for the last checkpoint and the final artifacts.

Order alternates (baseline first on even repetitions, project first on odd), after one untimed ``import torch``
to warm the file cache; each side's best (shortest) wall time is reported (other jobs on the machine only ever add
time). ``ratio`` = project img/s divided by baseline img/s (>= 1: the project is at least as fast). Of the best
runs, ``*_loop_s`` is the training loop alone as each process reports it (the project excludes its checkpoint I/O
there) and ``*_other_s`` the rest: interpreter start, imports, set-up, final saves. Full mode: 2048 images (~40 s a
side on 2 cores), 3 repetitions; ``--quick``: 256 images, one each.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ganime_steps.common import save_npy

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
REFERENCE = HERE / "parity_reference_dcgan.py"
RESOLUTION, BATCH, CHANNELS, Z_DIM = 64, 64, 64, 100
N_IMAGES = 2048  # dataset size (25 MB)


def _data(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    path = folder / "parity_64.npy"
    save_npy(path, rng.integers(0, 256, (N_IMAGES, RESOLUTION, RESOLUTION, 3), dtype=np.uint8))
    return path


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU comparison on any machine
    env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    return env


def _timed(cmd: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return seconds, proc.stdout


def _baseline(data: Path, out: Path, images: int) -> tuple[float, dict]:
    cmd = [sys.executable, str(REFERENCE), "--data", str(data), "--out", str(out), "--images", str(images)]
    cmd += ["--batch-size", str(BATCH), "--ngf", str(CHANNELS), "--ndf", str(CHANNELS), "--nz", str(Z_DIM)]
    seconds, stdout = _timed(cmd)
    return seconds, json.loads(stdout.strip().splitlines()[-1])


def _project(data: Path, out: Path, images: int) -> tuple[float, dict]:
    kimg = f"{images / 1000:g}"
    cmd = [sys.executable, "-m", "ganime_steps.train", "--data", str(data), "--out", str(out)]
    cmd += ["--family", "dcgan", "--resolution", str(RESOLUTION), "--batch-size", str(BATCH)]
    cmd += ["--channels", str(CHANNELS), "--z-dim", str(Z_DIM), "--kimg", kimg, "--checkpoint-every", kimg]
    cmd += ["--device", "cpu", "--seed", "0"]
    seconds, _ = _timed(cmd)
    summary = json.loads((out / "train_summary.json").read_text())
    if summary["images_this_run"] != images or summary["resumed"]:
        raise RuntimeError(f"project run trained {summary['images_this_run']} images, not {images}: {summary}")
    return seconds, summary


def run(quick: bool) -> list[dict]:
    images = BATCH * (4 if quick else 32)  # full: ~40 s of training on 2 cores
    reps = 1 if quick else 3
    runs: dict[str, list[tuple[float, float, dict]]] = {"baseline": [], "project": []}  # (wall s, loop s, info)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = _data(folder)
        subprocess.run([sys.executable, "-c", "import torch"], env=_env(), check=True)  # warm the file cache
        for rep in range(reps):
            order = ("baseline", "project") if rep % 2 == 0 else ("project", "baseline")
            for side in order:
                out = folder / f"{side}_{rep}"
                if side == "baseline":
                    seconds, info = _baseline(data, out, images)
                    loop = info["seconds"]
                else:
                    seconds, info = _project(data, out, images)
                    loop = images / info["img_per_s"]
                runs[side].append((seconds, loop, info))
                log.info("bench_parity rep %d %s: %.2f s (loop %.2f s)", rep, side, seconds, loop)
    best = {side: min(r, key=lambda run: run[0]) for side, r in runs.items()}
    rate = {side: images / best[side][0] for side in best}
    ref, proj = best["baseline"][2], best["project"][2]
    return [
        {
            "family": "dcgan",
            "device": "cpu",
            "resolution": RESOLUTION,
            "batch": BATCH,
            "channels": CHANNELS,
            "images": images,
            "reps": reps,
            "baseline_s": round(best["baseline"][0], 2),
            "project_s": round(best["project"][0], 2),
            "baseline_img_per_s": round(rate["baseline"], 2),
            "img_per_s": round(rate["project"], 2),
            "ratio": round(rate["project"] / rate["baseline"], 3),
            # of the best runs: the training loop alone, and everything else (start-up, data, final saves)
            "baseline_loop_s": round(best["baseline"][1], 2),
            "project_loop_s": round(best["project"][1], 2),
            "baseline_other_s": round(best["baseline"][0] - best["baseline"][1], 2),
            "project_other_s": round(best["project"][0] - best["project"][1], 2),
            "params_g": f"{proj['n_params_g']} vs {ref['params_g']}",
            "params_d": f"{proj['n_params_d']} vs {ref['params_d']}",
            "all_baseline_s": [round(r[0], 2) for r in runs["baseline"]],
            "all_project_s": [round(r[0], 2) for r in runs["project"]],
        }
    ]
