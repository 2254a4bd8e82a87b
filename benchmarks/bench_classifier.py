"""Classifier inference throughput at 128 px: the scoring stage's batched path against a plain per-image baseline.

Rows (images/s, higher is better; ``ratio`` = optimised / baseline measured in the same run):

- ``model``: forward passes only, on preloaded tensors. Baseline: eager fp32, contiguous, batch size 1.
  Optimised: the stage's settings on this device (CPU: fp32 batch 64; CUDA: fp16 autocast + channels_last,
  batch 256).
- ``end_to_end``: PNG decode, square-pad, resize and forward for a folder of posts. Baseline: one image at a time in
  the main process. Optimised: :func:`ganime_steps.classifier.run_score` (DataLoader workers, batches).

The model is a randomly initialised ``resnet34`` (throughput does not depend on the weights).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path

import numpy as np

ARCH = "resnet34"
SIZE = 128


def _images_per_s(fn, n_images: int, repeats: int) -> float:
    fn()  # warm-up (allocator, cudnn autotune, first-call overheads)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n_images / best


def _make_posts(root: Path, n: int) -> Path:
    import pandas as pd
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        w, h = int(rng.integers(300, 500)), int(rng.integers(500, 800))  # booru-like full-body sizes
        img = Image.new("RGB", (w, h), "white")
        d = ImageDraw.Draw(img)
        for _ in range(6):
            x, y = int(rng.integers(0, w - 60)), int(rng.integers(0, h - 60))
            d.ellipse((x, y, x + 60, y + 90), fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        path = root / "images" / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path)
        md5 = hashlib.md5(path.read_bytes()).hexdigest()
        rows.append({"source": "bench", "post_id": i + 1, "md5": md5, "file": f"images/{i:04d}.png"})
    posts = root / "posts.parquet"
    pd.DataFrame(rows).to_parquet(posts, index=False)
    return posts


def _save_model(path: Path) -> None:
    import timm

    from ganime_steps.common import torch_save

    model = timm.create_model(ARCH, pretrained=False, num_classes=1)
    torch_save(
        path,
        {
            "arch": ARCH,
            "image_size": SIZE,
            "state_dict": model.state_dict(),
            "threshold": 0.5,
            "task": "bench",
            "classes": ["not_bench", "bench"],
        },
    )


def _model_rows(device: str, quick: bool) -> list[dict]:
    import timm
    import torch

    from ganime_steps.classifier import autocast as _autocast

    dev = torch.device(device)
    model = timm.create_model(ARCH, pretrained=False, num_classes=1).eval().to(dev)
    batch = 256 if dev.type == "cuda" else 64
    n = batch * (1 if quick else 4)
    n_base = min(n, 16 if quick else 64)  # batch-1 is slow; images/s normalises the count away
    x = torch.randn(n, 3, SIZE, SIZE, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def baseline():
        with torch.inference_mode():
            for i in range(n_base):
                model(x[i : i + 1])
        sync()

    fast_model = model.to(memory_format=torch.channels_last) if dev.type == "cuda" else model
    xf = x.contiguous(memory_format=torch.channels_last) if dev.type == "cuda" else x

    def optimised():
        with torch.inference_mode(), _autocast(dev):
            for i in range(0, n, batch):
                fast_model(xf[i : i + batch])
        sync()

    repeats = 1 if quick else 3
    base = _images_per_s(baseline, n_base, repeats)
    fast = _images_per_s(optimised, n, repeats)
    how = f"batch {batch}" + (", fp16 autocast, channels_last" if dev.type == "cuda" else ", fp32")
    return [
        {
            "case": "model",
            "device": device,
            "arch": ARCH,
            "size": SIZE,
            "images": n,
            "optimised": how,
            "images_per_s": round(fast, 1),
            "baseline": round(base, 1),
            "ratio": round(fast / base, 2),
        }
    ]


def _end_to_end_rows(device: str, quick: bool) -> list[dict]:
    import torch

    from ganime_steps import imaging
    from ganime_steps.classifier import load_classifier, run_score
    from ganime_steps.classifier import to_input as _to_input

    n = 32 if quick else 256
    n_base = 16 if quick else 64
    workers = max(1, min(4, len(os.sched_getaffinity(0)) - 1))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        posts = _make_posts(root, n)
        model_path = root / "model.pt"
        _save_model(model_path)
        net, ckpt = load_classifier(model_path)
        dev = torch.device(device)
        net = net.to(dev)
        mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
        import pandas as pd

        files = [root / f for f in pd.read_parquet(posts)["file"]]

        def baseline():
            with torch.inference_mode():
                for f in files[:n_base]:
                    arr = imaging.square_resize(imaging.load_rgb(f), SIZE)
                    x = torch.from_numpy(np.array(arr)).permute(2, 0, 1).unsqueeze(0)
                    net(_to_input(x, dev, mean, std, False))
            if dev.type == "cuda":
                torch.cuda.synchronize()

        def optimised():
            run_score(
                posts=posts,
                model=model_path,
                out=root / "scores.parquet",
                batch_size=64,
                device=device,
                workers=workers,
            )

        repeats = 1 if quick else 2
        base = _images_per_s(baseline, n_base, repeats)
        fast = _images_per_s(optimised, n, repeats)
    return [
        {
            "case": "end_to_end",
            "device": device,
            "arch": ARCH,
            "size": SIZE,
            "images": n,
            "optimised": f"run_score, batch 64, {workers} DataLoader worker(s)",
            "images_per_s": round(fast, 1),
            "baseline": round(base, 1),
            "ratio": round(fast / base, 2),
        }
    ]


def run(quick: bool = False) -> list[dict]:
    import logging

    import torch

    logging.getLogger("ganime").setLevel(logging.WARNING)
    logging.getLogger("ganime_steps").setLevel(logging.WARNING)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        rows += _model_rows(device, quick)
        rows += _end_to_end_rows(device, quick)
    return rows
