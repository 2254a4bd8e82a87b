"""``score``: one probability per post from a trained classifier."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ganime_steps.classifier.data import PostImages, check_workers, read_posts, resolve_paths
from ganime_steps.classifier.model import autocast, load_classifier, norm_stats, to_input
from ganime_steps.common import GanimeError, progress, torch_device, write_parquet

log = logging.getLogger(__name__)


@dataclass
class ScoreSummary:
    task: str
    arch: str
    n_posts: int
    n_predicted: int
    threshold: float
    seconds: float
    out: Path


def run_score(
    *, posts: Path, model: Path, out: Path, batch_size: int = 64, device: str = "auto", workers: int = 0
) -> ScoreSummary:
    """Score every post in batches; write ``out`` (parquet): source, post_id, md5, score, predicted, threshold.

    Images are decoded by ``workers`` DataLoader processes; on CUDA the forward pass runs under fp16 autocast with
    channels_last tensors and pinned host memory.
    """
    import pandas as pd

    posts, model, out = Path(posts), Path(model), Path(out)
    if batch_size < 1:
        raise GanimeError(f"batch_size {batch_size}: must be >= 1")
    check_workers(workers)
    t0 = time.perf_counter()
    dev = torch_device(device)
    net, ckpt = load_classifier(model)
    threshold = float(ckpt["threshold"])
    df = read_posts(posts)
    score = _score_images(net, ckpt, resolve_paths(posts, df["file"]), dev, batch_size, workers)
    table = pd.DataFrame(
        {
            "source": df["source"].astype(str),
            "post_id": df["post_id"].astype("int64"),
            "md5": df["md5"].astype(str),
            "score": score.astype(np.float32),
            "predicted": score >= threshold,
            "threshold": np.full(len(score), threshold, dtype=np.float64),
        }
    )
    write_parquet(out, table)
    n_pred = int(table["predicted"].sum())
    log.info("%s: %d/%d posts predicted %s (threshold %.4f)", out, n_pred, len(table), ckpt["task"], threshold)
    return ScoreSummary(
        task=ckpt["task"],
        arch=ckpt["arch"],
        n_posts=len(table),
        n_predicted=n_pred,
        threshold=threshold,
        seconds=time.perf_counter() - t0,
        out=out,
    )


def _score_images(net, ckpt, paths: list[Path], dev, batch_size: int, workers: int) -> np.ndarray:
    """Sigmoid scores of the images at ``paths``; the first unreadable one raises GanimeError naming it."""
    import torch
    from torch.utils.data import DataLoader

    mean, std = norm_stats(net)
    channels_last = dev.type == "cuda"
    net = net.to(dev)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    loader = DataLoader(
        PostImages(paths, int(ckpt["image_size"])),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=dev.type == "cuda",
    )
    scores: list[np.ndarray] = []
    with torch.inference_mode():
        for x, errs in progress(loader, total=len(loader), desc=f"score {ckpt['task']}"):
            bad = [e for e in errs if e]
            if bad:
                raise GanimeError(bad[0])
            with autocast(dev):
                logits = net(to_input(x, dev, mean, std, channels_last))
            scores.append(torch.sigmoid(logits.float().squeeze(1)).cpu().numpy())
    return np.concatenate(scores) if scores else np.zeros(0, dtype=np.float32)
