"""Classifier stage: binary cleaning classifiers (chibi, multi, aesthetic) trained from hand labels; scores every post.

``train`` fits a timm model (``num_classes=1``, BCE with ``pos_weight`` for class balance) on the labelled posts,
split train/val/test by post (md5) with a fixed seed. Validation picks the best epoch (early stopping) and the decision
threshold; the held-out test split, seen by neither, gives the reported precision/recall/F1/ROC-AUC.
``score`` runs the saved model over every post and writes one probability per post.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ganime_steps import imaging
from ganime_steps.common import (
    GanimeError,
    atomic_path,
    progress,
    read_parquet,
    run_cli,
    seed_everything,
    torch_device,
    torch_save,
    write_json,
    write_parquet,
)

log = logging.getLogger(__name__)

POST_COLUMNS = ("source", "post_id", "md5", "file")
LABEL_COLUMNS = ("source", "post_id", "md5", "label")
MODEL_KEYS = ("arch", "image_size", "state_dict", "threshold", "task", "classes")
MIN_LABELS = 4  # below this a train/val split cannot hold both classes on both sides
MIN_PER_CLASS = 2  # one example of a class in train and one in val
MIN_GROUPS_FOR_TEST = 3  # distinct images (md5) per class for one each in train, val and test
VAL_SPLIT_NAME = "validation (used for epoch and threshold)"
TEST_SPLIT_NAME = "test (held out)"


# --------------------------------------------------------------------------------------------------------------
# Threshold selection (pure functions on numpy arrays)


def parse_threshold_rule(rule: str) -> tuple[str, float | None]:
    """``"best_f1"`` -> ("best_f1", None); ``"precision:0.9"`` -> ("precision", 0.9). Anything else: GanimeError."""
    rule = str(rule).strip()
    if rule == "best_f1":
        return "best_f1", None
    m = re.fullmatch(r"precision:([0-9]*\.?[0-9]+)", rule)
    if m:
        target = float(m.group(1))
        if 0.0 < target <= 1.0:
            return "precision", target
    raise GanimeError(
        f"threshold_rule {rule!r}: not understood; use best_f1 or precision:<p> with 0 < p <= 1 (e.g. precision:0.9)"
    )


def pr_points(scores: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall and F1 at every distinct score used as threshold (``predicted = score >= t``).

    Thresholds come out in descending order. Precision is 1 by convention where nothing is predicted positive
    (cannot happen here: every threshold is an observed score, so at least one post is predicted positive).
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).astype(np.int64).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} differ in length")
    if scores.size == 0:
        empty = np.zeros(0)
        return {"thresholds": empty, "precision": empty, "recall": empty, "f1": empty, "tp": empty, "fp": empty}
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    tp_all, fp_all = np.cumsum(y), np.cumsum(1 - y)
    # last position of each run of equal scores: all posts at that score are predicted positive together
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tp, fp = tp_all[last].astype(np.float64), fp_all[last].astype(np.float64)
    n_pos = float(y.sum())
    precision = tp / (tp + fp)
    recall = tp / n_pos if n_pos > 0 else np.zeros_like(tp)
    f1 = 2 * tp / (tp + fp + n_pos) if n_pos > 0 else np.zeros_like(tp)  # 2tp / (2tp + fp + fn)
    return {"thresholds": s[last], "precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp}


def select_threshold(scores: np.ndarray, labels: np.ndarray, rule: str) -> tuple[float, bool]:
    """The threshold ``rule`` picks on validation scores, and whether the rule itself was met (False: fallback).

    best_f1: the threshold with the highest F1; ties go to the highest such threshold (fewest positives).
    precision:p: the lowest threshold whose precision is >= p (the most recall at that precision); when no threshold
    reaches p, fall back to best_f1. Without any positive label, F1 means nothing: fall back to 0.5.
    """
    kind, target = parse_threshold_rule(rule)
    pts = pr_points(scores, labels)
    labels = np.asarray(labels)
    if pts["thresholds"].size == 0 or not labels.any():
        return 0.5, False
    if kind == "precision":
        ok = np.nonzero(pts["precision"] >= target - 1e-12)[0]
        if ok.size:
            return float(pts["thresholds"][ok[-1]]), True  # descending order: last index = lowest threshold
    best = int(np.argmax(pts["f1"]))  # first maximum in descending order = highest threshold among ties
    return float(pts["thresholds"][best]), kind == "best_f1"


def choose_threshold(scores: np.ndarray, labels: np.ndarray, rule: str) -> float:
    """:func:`select_threshold`, logging a warning when the rule could not be met and a fallback was used."""
    threshold, met = select_threshold(scores, labels, rule)
    if not met:
        if not np.asarray(labels).any():
            log.warning("threshold_rule %s: no positive validation labels; using threshold 0.5", rule)
        else:
            log.warning(
                "threshold_rule %s: no threshold reaches that precision on validation data; "
                "falling back to best F1 (threshold %.4f)",
                rule,
                threshold,
            )
    return threshold


def binary_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, Any]:
    """Precision, recall, F1, ROC AUC (None with one class) and confusion [[tn, fp], [fn, tp]] at ``threshold``."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).astype(np.int64).ravel()
    pred = scores >= threshold
    tp = int(np.sum(pred & (labels == 1)))
    fp = int(np.sum(pred & (labels == 0)))
    fn = int(np.sum(~pred & (labels == 1)))
    tn = int(np.sum(~pred & (labels == 0)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "roc_auc": roc_auc(scores, labels),
        "confusion": [[tn, fp], [fn, tp]],
    }


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve via the rank-sum (Mann-Whitney) statistic; ties count half. None with one class."""
    from scipy.stats import rankdata

    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).astype(np.int64).ravel()
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(scores)
    return float((ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(pts: dict[str, np.ndarray]) -> float | None:
    """Step-wise area under the PR curve (sum over thresholds of recall gain x precision)."""
    if pts["recall"].size == 0 or pts["recall"][-1] == 0:
        return None
    recall = np.r_[0.0, pts["recall"]]
    return float(np.sum(np.diff(recall) * pts["precision"]))


def split_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, Any]:
    """One split's block in metrics.json: size, class counts, :func:`binary_metrics`, average precision, PR curve."""
    labels = np.asarray(labels).astype(np.int64).ravel()
    pts = pr_points(scores, labels)
    return {
        "n": int(labels.size),
        "counts": _counts(labels),
        **binary_metrics(scores, labels, threshold),
        "average_precision": average_precision(pts),
        "pr_curve": {
            "thresholds": pts["thresholds"].tolist(),
            "precision": pts["precision"].tolist(),
            "recall": pts["recall"].tolist(),
        },
    }


# --------------------------------------------------------------------------------------------------------------
# Data


class Split(NamedTuple):
    """Row indices of the labelled posts per split; ``test_note`` says why ``test`` is empty (None when it is not)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    test_note: str | None


def split_by_post(df, *, seed: int, val_fraction: float, test_fraction: float) -> Split:
    """Row indices (train, val, test) of the labelled posts, stratified by label and reproducible from ``seed``.

    Posts sharing an md5 (the same image under two ids or sources) stay on one side, so neither val nor test ever
    sees a train image. Per class the md5 groups are shuffled once; the first ``test_fraction`` of them are test,
    the next ``val_fraction`` val, the rest train (so the test posts do not depend on ``val_fraction``).
    Each class with >= 2 groups puts at least one group in val and keeps at least one in train. A test split needs
    >= 3 groups in every class (one per split); with fewer, or with ``test_fraction`` 0, ``test`` is empty and
    ``test_note`` says why.
    """
    rng = np.random.default_rng(seed)
    groups = df.groupby("md5", sort=True)["label"].max()  # a group with any positive counts as positive
    per_class = {cls: int(np.sum(groups.values == cls)) for cls in (0, 1)}
    note = None
    if test_fraction <= 0:
        note = "test_fraction is 0: no test split; the metrics are validation only"
    elif min(per_class.values()) < MIN_GROUPS_FOR_TEST:
        small = ", ".join(f"class {c} has {n}" for c, n in per_class.items() if n < MIN_GROUPS_FOR_TEST)
        note = (
            f"too few labels for a test split ({small} distinct image(s); train, val and test need "
            f">= {MIN_GROUPS_FOR_TEST} per class): no test split, the metrics are validation only; label more posts"
        )
    val_md5: list[str] = []
    test_md5: list[str] = []
    for cls in (0, 1):
        members = np.array(sorted(groups.index[groups.values == cls]), dtype=object)
        rng.shuffle(members)
        n = len(members)
        n_test = 0
        if note is None:
            n_test = min(max(int(round(n * test_fraction)), 1), n - 2)
        n_val = int(round(n * val_fraction))
        if n - n_test >= 2:
            n_val = min(max(n_val, 1), n - n_test - 1)
        test_md5.extend(members[:n_test].tolist())
        val_md5.extend(members[n_test : n_test + n_val].tolist())
    md5 = df["md5"]
    in_val = md5.isin(set(val_md5)).to_numpy()
    in_test = md5.isin(set(test_md5)).to_numpy()
    return Split(np.nonzero(~in_val & ~in_test)[0], np.nonzero(in_val)[0], np.nonzero(in_test)[0], note)


class _PostImages:
    """Map-style dataset: decodes a post image, square-pads on white and resizes; errors travel as strings.

    Returning the error (instead of raising in a DataLoader worker) keeps the user's message to one line.
    """

    def __init__(self, paths: list[Path], image_size: int) -> None:
        self.paths = paths
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        import torch

        try:
            arr = imaging.square_resize(imaging.load_rgb(self.paths[i]), self.image_size)
            err = ""
        except GanimeError as exc:
            arr = np.full((self.image_size, self.image_size, 3), 255, dtype=np.uint8)
            err = str(exc)
        return torch.from_numpy(np.array(arr, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous(), err


class _Augmented:
    """Preloaded uint8 CHW images with labels; applies the (random) training transform per sample."""

    def __init__(self, images, labels, transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        x = self.images[i]
        return (self.transform(x) if self.transform is not None else x), self.labels[i]


def _train_transform(image_size: int):
    from torchvision.transforms import v2

    # mild on purpose: chibi/multi/aesthetic depend on proportions and composition, which heavy crops would change
    return v2.Compose(
        [
            v2.RandomHorizontalFlip(),
            v2.RandomResizedCrop(image_size, scale=(0.85, 1.0), ratio=(0.9, 1.1), antialias=True),
            v2.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.02),
        ]
    )


def _load_images(paths: list[Path], image_size: int, *, batch_size: int, workers: int, desc: str):
    """All images as one uint8 tensor (N, 3, S, S); the first unreadable one raises GanimeError naming it."""
    import torch
    from torch.utils.data import DataLoader

    out = torch.empty((len(paths), 3, image_size, image_size), dtype=torch.uint8)
    loader = DataLoader(_PostImages(paths, image_size), batch_size=batch_size, shuffle=False, num_workers=workers)
    pos = 0
    for x, errs in progress(loader, total=len(loader), desc=desc):
        bad = [e for e in errs if e]
        if bad:
            raise GanimeError(bad[0])
        out[pos : pos + len(x)] = x
        pos += len(x)
    return out


def _resolve_paths(posts_path: Path, files) -> list[Path]:
    # files are relative to the folder holding posts.parquet (the scrape stage writes them that way)
    return [posts_path.parent / str(f) for f in files]


def _read_posts(posts: Path):
    df = read_parquet(posts, POST_COLUMNS)
    df = df.drop_duplicates(["source", "post_id"], keep="first").reset_index(drop=True)
    df["post_id"] = df["post_id"].astype("int64")
    return df


def _join_labels(posts_df, labels: Path):
    """Labelled posts (source, post_id, md5, file, label); unknown or contradictory labels raise GanimeError."""
    import pandas as pd

    lab = read_parquet(labels, LABEL_COLUMNS)
    if lab["label"].isna().any() or not lab["label"].isin([0, 1]).all():
        bad = sorted({str(v) for v in lab["label"].unique()} - {"0", "1"})
        raise GanimeError(f"{labels}: column label must hold only 0 or 1; found {', '.join(bad[:5])}; fix the labels")
    lab = lab[["source", "post_id", "md5", "label"]].copy()
    lab["post_id"] = lab["post_id"].astype("int64")
    lab["label"] = lab["label"].astype("int64")
    conflicts = lab.groupby(["source", "post_id"])["label"].nunique()
    conflicts = conflicts[conflicts > 1]
    if len(conflicts):
        ids = ", ".join(f"{s}:{p}" for s, p in conflicts.index[:5])
        raise GanimeError(f"{labels}: posts labelled both 0 and 1 ({ids}); keep one label per post")
    lab = lab.drop_duplicates(["source", "post_id"])
    merged = lab.merge(
        posts_df[["source", "post_id", "md5", "file"]],
        on=["source", "post_id"],
        how="left",
        suffixes=("_label", ""),
        indicator=True,
    )
    missing = merged[merged["_merge"] == "left_only"]
    if len(missing):
        ids = ", ".join(f"{s}:{p}" for s, p in zip(missing["source"][:5], missing["post_id"][:5], strict=True))
        raise GanimeError(
            f"{labels}: {len(missing)} labelled post(s) not in the posts table (e.g. {ids}); "
            "remove them or label posts from the current scrape"
        )
    changed = int((merged["md5_label"].astype(str) != merged["md5"].astype(str)).sum())
    if changed:
        log.warning("%s: %d label(s) were made for a different md5 than the post now has", labels, changed)
    out = merged[["source", "post_id", "md5", "file", "label"]].reset_index(drop=True)
    return pd.DataFrame(out)


def _counts(labels: np.ndarray) -> dict[str, int]:
    return {"0": int(np.sum(labels == 0)), "1": int(np.sum(labels == 1))}


# --------------------------------------------------------------------------------------------------------------
# Model


def _check_arch(arch: str) -> None:
    import timm

    if not timm.is_model(arch):
        near = timm.list_models(f"*{arch.split('.')[0][:6]}*")[:5]
        hint = f" (similar: {', '.join(near)})" if near else ""
        raise GanimeError(f"arch {arch!r}: not a timm model name{hint}; see timm.list_models()")


def normalise_pretrained(value) -> str:
    """Config spellings of the weights choice: true/hub -> "hub", false/none/empty -> "none", else a file path."""
    text = str(value).strip()
    if text.lower() in ("true", "hub", "yes"):
        return "hub"
    if text.lower() in ("false", "none", "no", "null", ""):
        return "none"
    return text


def build_model(arch: str, pretrained: str = "none"):
    """A timm model with one output logit, randomly initialised or loaded from the hub or a local weights file.

    ``pretrained``: "none" (or false), "hub" (or true: timm's own download, fails offline), or a path to a
    .pth/.pt/.safetensors state dict (or a checkpoint with a ``state_dict`` key, such as this stage's own model.pt).
    The classifier head is always new: timm drops a head whose class count differs.
    """
    import timm

    _check_arch(arch)
    pretrained = normalise_pretrained(pretrained)
    if pretrained == "none":
        return timm.create_model(arch, pretrained=False, num_classes=1)
    if pretrained == "hub":
        try:
            return timm.create_model(arch, pretrained=True, num_classes=1)
        except Exception as exc:  # urllib, huggingface_hub and OSError variants all mean "could not fetch"
            raise GanimeError(
                f"cannot download {arch} weights (offline?); set pretrained to a local file path or none "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
            ) from exc
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise GanimeError(f"pretrained {str(path)!r}: file not found; give a weights file path, hub, or none")
    try:
        # timm's own local-file loader: it strips a mismatched classifier and loads the rest
        model = timm.create_model(
            arch, pretrained=True, num_classes=1, pretrained_cfg_overlay=dict(file=str(path.resolve()))
        )
    except Exception as exc:
        raise GanimeError(
            f"pretrained {str(path)!r}: cannot load as {arch} weights ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); check the file matches arch {arch}"
        ) from exc
    _check_coverage(model, path, arch)
    return model


def _check_coverage(model, path: Path, arch: str) -> None:
    """timm loads non-strictly once it drops the head, so a file for another arch could load half a network."""
    from timm.models import load_state_dict

    file_keys = set(load_state_dict(str(path)).keys())
    head = model.pretrained_cfg.get("classifier") or ()
    head = (head,) if isinstance(head, str) else tuple(head)
    needed = [
        k
        for k in model.state_dict()
        if not k.endswith("num_batches_tracked") and not any(k.startswith(h + ".") for h in head)
    ]
    missing = [k for k in needed if k not in file_keys]
    if missing:
        raise GanimeError(
            f"pretrained {str(path)!r}: lacks {len(missing)} of {len(needed)} {arch} weights "
            f"(e.g. {', '.join(missing[:3])}); use weights saved from a {arch} model"
        )


def _norm_stats(model) -> tuple[list[float], list[float]]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return list(cfg.get("mean", (0.485, 0.456, 0.406))), list(cfg.get("std", (0.229, 0.224, 0.225)))


def _to_input(x, device, mean, std, channels_last: bool):
    """uint8 NCHW on the host -> normalised float on ``device`` (the division happens on the device)."""
    import torch

    x = x.to(device, non_blocking=True).float().div_(255.0)
    m = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=device).view(1, -1, 1, 1)
    x = (x - m) / s
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _autocast(device):
    import torch

    # fp16 autocast on CUDA only; CPU runs stay in fp32 (CPU autocast is slower for these convs and less exact)
    return torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda" else contextlib.nullcontext()


def _predict_scores(model, images, device, mean, std, batch_size: int) -> np.ndarray:
    """Sigmoid scores for preloaded uint8 images, eval mode, no augmentation."""
    import torch

    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            x = _to_input(images[i : i + batch_size], device, mean, std, device.type == "cuda")
            with _autocast(device):
                logits = model(x)
            out.append(torch.sigmoid(logits.float().squeeze(1)).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)


# --------------------------------------------------------------------------------------------------------------
# Train


@dataclass
class TrainSummary:
    task: str
    arch: str
    pretrained: str
    n_train: int
    n_val: int
    n_test: int
    epochs_run: int
    best_epoch: int
    threshold: float
    val_f1: float  # on the split that chose the epoch and the threshold: optimistic
    test_precision: float | None  # None: no test split (see metrics.json test_note)
    test_recall: float | None
    test_f1: float | None
    test_roc_auc: float | None
    seconds_per_epoch: float
    out: Path


def _validate_knobs(
    *,
    task: str,
    image_size: int,
    epochs: int,
    batch_size: int,
    lr: float,
    val_fraction: float,
    test_fraction: float,
    patience: int,
) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", task or ""):
        raise GanimeError(f"task {task!r}: use letters, digits, _ . - only (e.g. chibi, multi, aesthetic)")
    if image_size < 16:
        raise GanimeError(f"image_size {image_size}: must be >= 16 (ResNets downsample 32x)")
    if epochs < 1:
        raise GanimeError(f"epochs {epochs}: must be >= 1")
    if batch_size < 2:
        raise GanimeError(f"batch_size {batch_size}: must be >= 2 (batch norm needs two samples per batch)")
    if not (lr > 0 and math.isfinite(lr)):
        raise GanimeError(f"lr {lr}: must be a positive number such as 1e-3")
    if not 0.0 < val_fraction < 1.0:
        raise GanimeError(f"val_fraction {val_fraction}: must be between 0 and 1 (e.g. 0.25)")
    if not 0.0 <= test_fraction < 1.0:
        raise GanimeError(f"test_fraction {test_fraction}: must be >= 0 and below 1 (e.g. 0.2; 0 = no test split)")
    if val_fraction + test_fraction >= 1.0:
        raise GanimeError(
            f"val_fraction {val_fraction} + test_fraction {test_fraction}: must leave posts to train on (sum below 1)"
        )
    if patience < 1:
        raise GanimeError(f"patience {patience}: must be >= 1 epoch")


def _check_workers(workers: int) -> None:
    if workers < 0:
        raise GanimeError(f"workers {workers}: must be >= 0 (0 loads images in the main process)")


def run_train(
    *,
    posts: Path,
    labels: Path,
    out: Path,
    task: str,
    arch: str = "resnet34",
    image_size: int = 128,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 1e-3,
    pretrained: str = "none",
    seed: int = 0,
    val_fraction: float = 0.25,
    test_fraction: float = 0.2,
    patience: int = 5,
    threshold_rule: str = "best_f1",
    device: str = "auto",
    workers: int = 0,
) -> TrainSummary:
    """Train one binary classifier; write model.pt, metrics.json, pr_curve.png and confusion.png into ``out``."""
    import torch
    from torch.utils.data import DataLoader

    posts, labels, out = Path(posts), Path(labels), Path(out)
    pretrained = normalise_pretrained(pretrained)
    _validate_knobs(
        task=task,
        image_size=image_size,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        patience=patience,
    )
    parse_threshold_rule(threshold_rule)  # fail before any work
    _check_workers(workers)
    _check_arch(arch)
    dev = torch_device(device)

    posts_df = _read_posts(posts)
    data = _join_labels(posts_df, labels)
    y_all = data["label"].to_numpy()
    counts = _counts(y_all)
    if len(data) < MIN_LABELS or min(counts.values()) < MIN_PER_CLASS:
        raise GanimeError(
            f"{labels}: too few labels to train and validate ({counts['0']} of class 0, {counts['1']} of class 1); "
            f"label at least {MIN_LABELS} posts with >= {MIN_PER_CLASS} of each class"
        )
    split = split_by_post(data, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
    train_idx, val_idx, test_idx = split.train, split.val, split.test
    y_train, y_val = y_all[train_idx], y_all[val_idx]
    # test labels are read only after the epoch and the threshold are fixed (below the training loop)
    log.info(
        "%s: %d labelled posts -> train %s, val %s, test %d posts",
        task,
        len(data),
        _counts(y_train),
        _counts(y_val),
        len(test_idx),
    )
    if split.test_note:
        log.warning("%s: %s", task, split.test_note)

    seed_everything(seed)
    model = build_model(arch, pretrained).to(dev)
    channels_last = dev.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    mean, std = _norm_stats(model)

    images = _load_images(
        _resolve_paths(posts, data["file"]), image_size, batch_size=batch_size, workers=workers, desc=f"{task} images"
    )
    train_images, val_images = images[torch.from_numpy(train_idx)], images[torch.from_numpy(val_idx)]
    test_images = images[torch.from_numpy(test_idx)]

    train_ds = _Augmented(train_images, torch.from_numpy(y_train).float(), _train_transform(image_size))
    loader = DataLoader(
        train_ds,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        generator=torch.Generator().manual_seed(seed),
        drop_last=len(train_ds) % batch_size == 1,  # a lone last sample would break batch norm
        pin_memory=dev.type == "cuda",
        persistent_workers=workers > 0,  # no re-fork of the workers every epoch
    )
    # class balance: weight positives by neg/pos so each class contributes equally to the loss
    n_pos, n_neg = int(y_train.sum()), int(len(y_train) - y_train.sum())
    pos_weight = n_neg / n_pos
    criterion = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, device=dev))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * len(loader)))
    val_t = torch.from_numpy(y_val).float()

    best: dict[str, Any] | None = None
    history: list[dict[str, Any]] = []
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        model.train()
        total, seen = 0.0, 0
        for x, y in progress(loader, total=len(loader), desc=f"{task} epoch {epoch}/{epochs}"):
            x = _to_input(x, dev, mean, std, channels_last)
            y = y.to(dev, non_blocking=True)
            with _autocast(dev):
                logits = model(x).squeeze(1)
            loss = criterion(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(y)
            seen += len(y)
        val_scores = _predict_scores(model, val_images, dev, mean, std, batch_size)
        p = torch.from_numpy(val_scores).double().clamp(1e-7, 1 - 1e-7)
        val_loss = float(
            torch.nn.functional.binary_cross_entropy(p, val_t.double(), weight=1 + (pos_weight - 1) * val_t.double())
        )
        thr, _ = select_threshold(val_scores, y_val, threshold_rule)
        val_f1 = binary_metrics(val_scores, y_val, thr)["f1"]
        seconds = time.perf_counter() - t0
        history.append(
            {
                "epoch": epoch,
                "train_loss": total / max(seen, 1),
                "val_loss": val_loss,
                "val_f1": val_f1,
                "seconds": seconds,
            }
        )
        log.info(
            "%s epoch %d: train loss %.4f, val loss %.4f, val F1 %.3f (%.1fs)",
            task,
            epoch,
            total / max(seen, 1),
            val_loss,
            val_f1,
            seconds,
        )
        # best = highest val F1; equal F1 (common on small val sets) is broken by lower val loss
        if (
            best is None
            or val_f1 > best["f1"] + 1e-12
            or (abs(val_f1 - best["f1"]) <= 1e-12 and val_loss < best["loss"])
        ):
            best = {
                "epoch": epoch,
                "f1": val_f1,
                "loss": val_loss,
                "scores": val_scores,
                "state": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()},
            }
        elif epoch - best["epoch"] >= patience:
            log.info("%s: early stop after epoch %d (no val F1 gain for %d epochs)", task, epoch, patience)
            break
    assert best is not None

    # epoch and threshold are now fixed from validation data alone; only then score and read the test split
    val_scores = best["scores"]
    threshold = choose_threshold(val_scores, y_val, threshold_rule)
    _, rule_met = select_threshold(val_scores, y_val, threshold_rule)
    val_block = {"split": VAL_SPLIT_NAME, **split_metrics(val_scores, y_val, threshold)}
    test_block = None
    if len(test_idx):
        model.load_state_dict(best["state"])
        test_scores = _predict_scores(model, test_images, dev, mean, std, batch_size)
        y_test = y_all[test_idx]
        test_block = {"split": TEST_SPLIT_NAME, **split_metrics(test_scores, y_test, threshold)}
        log.info(
            "%s: test (held out, %d posts) precision %.3f, recall %.3f, F1 %.3f; validation F1 %.3f",
            task,
            len(test_idx),
            test_block["precision"],
            test_block["recall"],
            test_block["f1"],
            val_block["f1"],
        )
    epochs_run = len(history)
    metrics = {
        "task": task,
        "arch": arch,
        "pretrained": pretrained,
        "image_size": image_size,
        "seed": seed,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "n_train": len(train_idx),
        "n_val": len(val_idx),
        "n_test": len(test_idx),
        "counts": {
            "all": counts,
            "train": _counts(y_train),
            "val": _counts(y_val),
            "test": _counts(y_all[test_idx]),
        },
        "class_balance": "BCEWithLogitsLoss pos_weight = n_negative / n_positive (train)",
        "pos_weight": pos_weight,
        "epochs_run": epochs_run,
        "best_epoch": best["epoch"],
        "threshold": threshold,
        "threshold_rule": threshold_rule,
        "threshold_rule_met": rule_met,
        "test": test_block,
        "test_note": split.test_note,
        "val": val_block,
        "history": history,
        "seconds_per_epoch": float(np.mean([h["seconds"] for h in history])),
        "device": str(dev),
    }

    out.mkdir(parents=True, exist_ok=True)
    torch_save(
        out / "model.pt",
        {
            "arch": arch,
            "image_size": image_size,
            "state_dict": best["state"],
            "threshold": threshold,
            "task": task,
            "classes": [f"not_{task}", task],
            "mean": mean,
            "std": std,
        },
    )
    write_json(out / "metrics.json", metrics)
    blocks = [b for b in (test_block, val_block) if b is not None]
    _plot_pr(out / "pr_curve.png", blocks, threshold, task)
    _plot_confusion(out / "confusion.png", blocks, task, threshold)
    test_block = test_block or {}
    return TrainSummary(
        task=task,
        arch=arch,
        pretrained=pretrained,
        n_train=len(train_idx),
        n_val=len(val_idx),
        n_test=len(test_idx),
        epochs_run=epochs_run,
        best_epoch=best["epoch"],
        threshold=threshold,
        val_f1=val_block["f1"],
        test_precision=test_block.get("precision"),
        test_recall=test_block.get("recall"),
        test_f1=test_block.get("f1"),
        test_roc_auc=test_block.get("roc_auc"),
        seconds_per_epoch=metrics["seconds_per_epoch"],
        out=out,
    )


def _save_figure(fig, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)  # Agg explicitly: no display, no pyplot global state
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def _plot_pr(path: Path, blocks: list[dict[str, Any]], threshold: float, task: str) -> None:
    """PR curve of each split block (test first when there is one), with the operating point at ``threshold``."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 4.2))
    ax = fig.add_subplot()
    for block, color, style in zip(blocks, ("tab:blue", "tab:gray"), ("-", "--"), strict=False):
        pr = block["pr_curve"]
        recall, precision = np.asarray(pr["recall"]), np.asarray(pr["precision"])
        # "pre": the precision at recall r_i holds over (r_{i-1}, r_i], as in average precision
        label = f"{block['split']}, n={block['n']}"
        ax.step(np.r_[0.0, recall], np.r_[precision[:1], precision], where="pre", color=color, ls=style, label=label)
        ax.plot([block["recall"]], [block["precision"]], "o", color=color)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02))
    ax.set_title(f"{task}: PR curves, dots at threshold {threshold:.3f}", fontsize=10)
    ax.legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    _save_figure(fig, path)


def _plot_confusion(path: Path, blocks: list[dict[str, Any]], task: str, threshold: float) -> None:
    """One confusion matrix panel per split block (test first when there is one)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4 * len(blocks), 3.8))
    names = [f"not {task}", task]
    for i, block in enumerate(blocks):
        cm = np.asarray(block["confusion"])
        ax = fig.add_subplot(1, len(blocks), i + 1)
        ax.imshow(cm, cmap="Blues", vmin=0, vmax=max(int(cm.max()), 1))
        for (r, c), v in np.ndenumerate(cm):
            ax.text(c, r, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
        ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=names, yticklabels=names, xlabel="predicted", ylabel="label")
        ax.set_title(f"{task}: {block['split']}\nthreshold {threshold:.3f}", fontsize=8)
    fig.tight_layout()
    _save_figure(fig, path)


# --------------------------------------------------------------------------------------------------------------
# Score


@dataclass
class ScoreSummary:
    task: str
    arch: str
    n_posts: int
    n_predicted: int
    threshold: float
    seconds: float
    out: Path


def load_classifier(path: Path):
    """(model on CPU in eval mode, checkpoint dict) from a model.pt written by ``train``."""
    import timm
    import torch

    path = Path(path)
    if not path.is_file():
        raise GanimeError(f"{path}: model file not found; run the classifier train step first")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise GanimeError(f"{path}: not a readable model file ({type(exc).__name__}); rerun classifier train") from exc
    missing = [k for k in MODEL_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise GanimeError(f"{path}: not a classifier model (missing {', '.join(missing)}); rerun classifier train")
    _check_arch(ckpt["arch"])
    model = timm.create_model(ckpt["arch"], pretrained=False, num_classes=1)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise GanimeError(f"{path}: weights do not fit {ckpt['arch']} ({str(exc).splitlines()[0]})") from exc
    return model.eval(), ckpt


def run_score(
    *, posts: Path, model: Path, out: Path, batch_size: int = 64, device: str = "auto", workers: int = 0
) -> ScoreSummary:
    """Score every post in batches; write ``out`` (parquet): source, post_id, md5, score, predicted, threshold.

    Images are decoded by ``workers`` DataLoader processes; on CUDA the forward pass runs under fp16 autocast with
    channels_last tensors and pinned host memory.
    """
    import pandas as pd
    import torch
    from torch.utils.data import DataLoader

    posts, model, out = Path(posts), Path(model), Path(out)
    if batch_size < 1:
        raise GanimeError(f"batch_size {batch_size}: must be >= 1")
    _check_workers(workers)
    t0 = time.perf_counter()
    dev = torch_device(device)
    net, ckpt = load_classifier(model)
    mean = ckpt.get("mean") or _norm_stats(net)[0]
    std = ckpt.get("std") or _norm_stats(net)[1]
    channels_last = dev.type == "cuda"
    net = net.to(dev)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    threshold = float(ckpt["threshold"])
    image_size = int(ckpt["image_size"])

    df = _read_posts(posts)
    loader = DataLoader(
        _PostImages(_resolve_paths(posts, df["file"]), image_size),
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
            with _autocast(dev):
                logits = net(_to_input(x, dev, mean, std, channels_last))
            scores.append(torch.sigmoid(logits.float().squeeze(1)).cpu().numpy())
    score = np.concatenate(scores) if scores else np.zeros(0, dtype=np.float32)
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


# --------------------------------------------------------------------------------------------------------------
# CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ganime_steps.classifier",
        description="Train binary cleaning classifiers from hand labels (train) and score every post (score).",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="{train,score}")

    t = sub.add_parser(
        "train",
        help="train one classifier from a labels table",
        description="Train a timm binary classifier on labelled posts; writes model.pt, metrics.json, "
        "pr_curve.png and confusion.png into --out.",
    )
    t.add_argument("--posts", type=Path, required=True, help="posts.parquet (images resolved relative to its folder)")
    t.add_argument("--labels", type=Path, required=True, help="labels parquet: source, post_id, md5, label (0/1)")
    t.add_argument("--task", required=True, help="task name stored in the model, e.g. chibi, multi, aesthetic")
    t.add_argument("--arch", default="resnet34", help="any timm model name (default: %(default)s)")
    t.add_argument("--image-size", type=int, default=128, help="square input size in px (default: %(default)s)")
    t.add_argument("--epochs", type=int, default=10, help="maximum epochs (default: %(default)s)")
    t.add_argument("--batch-size", type=int, default=32, help="batch size (default: %(default)s)")
    t.add_argument(
        "--lr", type=float, default=1e-3, help="AdamW peak learning rate, cosine decay (default: %(default)s)"
    )
    t.add_argument(
        "--pretrained",
        default="none",
        help="none/false (from scratch), hub/true (timm's own download, needs network), or a local weights file "
        "path (.pth/.pt/.safetensors) (default: %(default)s)",
    )
    t.add_argument(
        "--seed", type=int, default=0, help="seed for the split, init and augmentation (default: %(default)s)"
    )
    t.add_argument(
        "--val-fraction",
        type=float,
        default=0.25,
        help="share of posts for validation: picks the epoch and the threshold (default: %(default)s)",
    )
    t.add_argument(
        "--test-fraction",
        type=float,
        default=0.2,
        help="share of posts held out for the reported metrics; never seen by training, early stopping or the "
        "threshold choice; 0 = no test split (default: %(default)s)",
    )
    t.add_argument(
        "--patience", type=int, default=5, help="stop after this many epochs without val F1 gain (default: %(default)s)"
    )
    t.add_argument(
        "--threshold-rule",
        default="best_f1",
        help="best_f1, or precision:<p> = lowest threshold with val precision >= p (default: %(default)s)",
    )
    t.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    t.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default: %(default)s)")
    t.add_argument("--out", type=Path, required=True, help="output folder")

    s = sub.add_parser(
        "score",
        help="score every post with a trained classifier",
        description="Score every post; writes a parquet table: source, post_id, md5, score, predicted, threshold.",
    )
    s.add_argument("--posts", type=Path, required=True, help="posts.parquet (images resolved relative to its folder)")
    s.add_argument("--model", type=Path, required=True, help="model.pt written by train")
    s.add_argument("--batch-size", type=int, default=64, help="batch size (default: %(default)s)")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    s.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default: %(default)s)")
    s.add_argument("--out", type=Path, required=True, help="output parquet file, e.g. scores.parquet")
    return p


def _handle(args: argparse.Namespace):
    if args.command == "train":
        return run_train(
            posts=args.posts,
            labels=args.labels,
            out=args.out,
            task=args.task,
            arch=args.arch,
            image_size=args.image_size,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            pretrained=args.pretrained,
            seed=args.seed,
            val_fraction=args.val_fraction,
            test_fraction=args.test_fraction,
            patience=args.patience,
            threshold_rule=args.threshold_rule,
            device=args.device,
            workers=args.workers,
        )
    return run_score(
        posts=args.posts,
        model=args.model,
        out=args.out,
        batch_size=args.batch_size,
        device=args.device,
        workers=args.workers,
    )


def main(argv: list[str] | None = None) -> int:
    return run_cli(_parser(), _handle, argv)


if __name__ == "__main__":
    raise SystemExit(main())
