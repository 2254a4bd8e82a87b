"""Quality per compute: FID of each GAN family after the same CPU budgets, on the demo's kind of data.

Data: the demo's synthetic booru (``configs/demo.yaml``: seed 0, style booru), drawn here by its truth, not by the
pipeline's classifiers: ``A`` is every post that is neither chibi nor multi-character, padded to a square on white
and resized to 32 px (as ``clean`` packs it); ``faces`` is every such post's face box, cropped with the faces
stage's margin, at 32 px. Posts 1..700 (the demo's booru) are the training set; the held-out reference is the
same kind of image from posts 701..(700 + HELD_OUT_POSTS): never trained on. FID: the standard Inception (offline
weights, as ``evaluate``), N_FAKE images of G_ema (batch-norm statistics re-estimated) against every held-out image.

Budget: CPU time of the training process on one thread (``time.process_time``; snapshot FIDs excluded), so the
figure does not depend on what else the machine runs; two families train side by side on a 2-core machine.
Each family runs once to the largest budget with its published losses and optimiser settings, batch 32; widths:
``CHANNELS`` (the demo's dcgan width, 32; projected 16, whose FastGAN generator is 16x ``channels`` wide at 4x4).

``--quick``: budgets 0.5 and 1 CPU-minute, dcgan and projected, A only. Environment:
``GANIME_BENCH_QUALITY_FAMILIES`` (comma list), ``GANIME_BENCH_QUALITY_CHANNELS`` (e.g. ``projected=8``),
``GANIME_BENCH_QUALITY_DATASETS`` (``A,faces``), ``GANIME_BENCH_QUALITY_BUDGETS`` (CPU-minutes, e.g. ``2,5,10``),
``GANIME_BENCH_QUALITY_JOBS`` (families trained at once, default: the CPUs), ``GANIME_BENCH_QUALITY_LOG`` (one JSON
line per measurement as it is made), ``GANIME_BENCH_QUALITY_GRIDS`` (a folder: the first 64 measured images of each
family at each budget as ``<dataset>_<family>_<budget>min.png``, to look at what a FID stands for).
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks import append_jsonl, env_list

SEED = 0
TRAIN_POSTS = 700
HELD_OUT_POSTS = 1300
RES = 32
N_FAKE = 500
BUDGETS = (2.0, 5.0, 10.0)  # CPU-minutes of one thread
FAMILIES = ("dcgan", "wgan-gp", "dragan", "sngan", "progan", "stylegan", "projected")
DATASETS = ("A", "faces")
CHANNELS = {"projected": 16}  # others 32
SETTINGS = {  # beyond the family's published defaults
    "dcgan": dict(lr=5e-4),  # the demo's dcgan lr (configs/demo.yaml)
    "progan": dict(stable_kimg=20.0, fade_kimg=20.0),  # grow 4 -> 32 px within the budgets
    "stylegan": dict(stable_kimg=20.0, fade_kimg=20.0),
}
FACE_MARGIN = 0.25


def draw_sets(root: Path) -> dict[str, tuple[Path, np.ndarray]]:
    """{dataset: (training pack path, held-out uint8 images)} by the synthetic truth."""
    from ganime_steps.common import save_npy
    from ganime_steps.faces import crop_face
    from ganime_steps.imaging import square_resize
    from ganime_steps.sources.synthetic.render import render_post

    sets: dict[str, tuple[list, list]] = {name: ([], []) for name in DATASETS}
    for post_id in range(1, TRAIN_POSTS + HELD_OUT_POSTS + 1):
        image, truth = render_post(SEED, post_id)
        if truth.chibi or truth.multiple:
            continue
        part = 0 if post_id <= TRAIN_POSTS else 1
        sets["A"][part].append(square_resize(image, RES))
        for box in truth.face_boxes[:1]:
            sets["faces"][part].append(np.asarray(crop_face(image, box, RES, FACE_MARGIN)))
    out = {}
    for name, (train, held) in sets.items():
        path = root / f"{name}_{RES}.npy"
        save_npy(path, np.stack(train))
        out[name] = (path, np.stack(held))
    return out


def _channels() -> dict[str, int]:
    """CHANNELS, overridden by GANIME_BENCH_QUALITY_CHANNELS (e.g. ``projected=8,dcgan=16``)."""
    pairs = [p.split("=") for p in env_list("GANIME_BENCH_QUALITY_CHANNELS", ())]
    return {**CHANNELS, **{k: int(v) for k, v in pairs}}


def _config(family: str):
    from ganime_steps.gan import get_family
    from ganime_steps.gan.loop import TrainConfig

    kw = {"lr": get_family(family).lr, **SETTINGS.get(family, {})}
    return TrainConfig(
        family=family,
        resolution=RES,
        kimg=1e6,
        batch_size=32,
        channels=_channels().get(family, 32),
        z_dim=128,
        seed=0,
        checkpoint_every=1e6,
        **kw,
    )


def train_family(family: str, dataset: str, pack: str, reference: str, budgets: tuple[float, ...], work: str) -> list:
    """One family to the largest budget; a FID row at each budget (CPU-minutes of this process's training)."""
    import torch

    torch.set_num_threads(1)
    from ganime_steps.gan import generate_images
    from ganime_steps.gan.loop import Trainer
    from ganime_steps.metrics.distances import frechet_distance_features
    from ganime_steps.metrics.features import extract_features, load_extractor

    trainer = Trainer(_config(family), data=Path(pack), out=Path(work), device=torch.device("cpu"))
    ref = np.load(reference)  # held-out Inception features
    extractor = load_extractor(None, None, "cpu")
    rows, spent, started_wall = [], 0.0, time.monotonic()
    for budget in sorted(budgets):
        while spent < budget * 60:
            t0 = time.process_time()
            trainer._iteration()
            spent += time.process_time() - t0
        trainer.calibrate_ema()
        fake = generate_images(trainer.G_ema, N_FAKE, seed=1)
        if grids := os.environ.get("GANIME_BENCH_QUALITY_GRIDS"):
            from ganime_steps.imaging import make_grid

            Path(grids).mkdir(parents=True, exist_ok=True)
            make_grid(fake[:64], ncol=8).save(Path(grids) / f"{dataset}_{family}_{budget:g}min.png")
        fid = frechet_distance_features(extract_features(extractor, fake, batch_size=50), ref)
        rows.append(
            {
                "dataset": dataset,
                "family": family,
                "cpu_min": budget,
                "kimg": round(trainer.images_seen / 1000, 2),
                "fid": round(float(fid), 1),
                "wall_min": round((time.monotonic() - started_wall) / 60, 1),
            }
        )
        if log := os.environ.get("GANIME_BENCH_QUALITY_LOG"):
            append_jsonl(log, rows[-1])
    return rows


def table(rows: list[dict]) -> list[dict]:
    """One row per dataset and family: FID (kimg) at each budget."""
    out: dict[tuple[str, str], dict] = {}
    for r in rows:
        row = out.setdefault((r["dataset"], r["family"]), {"dataset": r["dataset"], "family": r["family"]})
        row[f"FID @ {r['cpu_min']:g} CPU-min (kimg)"] = f"{r['fid']:.1f} ({r['kimg']:g})"
    return list(out.values())


def run(quick: bool = False) -> list[dict]:
    import logging

    for name in ("ganime", "ganime_steps"):
        logging.getLogger(name).setLevel(logging.WARNING)
    families = env_list("GANIME_BENCH_QUALITY_FAMILIES", ("dcgan", "projected") if quick else FAMILIES)
    datasets = env_list("GANIME_BENCH_QUALITY_DATASETS", ("A",) if quick else DATASETS)
    budgets = env_list("GANIME_BENCH_QUALITY_BUDGETS", (0.5, 1.0) if quick else BUDGETS, float)
    jobs = int(os.environ.get("GANIME_BENCH_QUALITY_JOBS", len(os.sched_getaffinity(0))))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        import torch

        from ganime_steps.metrics.features import extract_features, load_extractor

        torch.set_num_threads(jobs)
        sets = draw_sets(root)
        extractor = load_extractor(None, None, "cpu")
        refs = {}
        for name in datasets:
            refs[name] = str(root / f"ref_{name}.npy")
            np.save(refs[name], extract_features(extractor, sets[name][1], batch_size=50))
            n_train = len(np.load(sets[name][0], mmap_mode="r"))
            print(f"{name}: {n_train} training images, {len(sets[name][1])} held out")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [
                pool.submit(train_family, f, d, str(sets[d][0]), refs[d], budgets, str(root / f"{d}_{f}"))
                for d in datasets
                for f in families
            ]
            rows = [row for fut in futures for row in fut.result()]
    return table(rows)
