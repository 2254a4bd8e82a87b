"""Classifier data: the labels joined to the posts, the train/val/test split by image, and the image datasets."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ganime_steps import imaging
from ganime_steps.classifier.metrics import counts
from ganime_steps.common import GanimeError, progress, read_parquet

log = logging.getLogger(__name__)

POST_COLUMNS = ("source", "post_id", "md5", "file")
LABEL_COLUMNS = ("source", "post_id", "md5", "label")
MIN_LABELS = 4  # below this a train/val split cannot hold both classes on both sides
MIN_PER_CLASS = 2  # one example of a class in train and one in val
MIN_GROUPS_FOR_TEST = 3  # distinct images (md5) per class for one each in train, val and test


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


class PostImages:
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


class Augmented:
    """Preloaded uint8 CHW images with labels; applies the (random) training transform per sample."""

    def __init__(self, images, labels, transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        x = self.images[i]
        return (self.transform(x) if self.transform is not None else x), self.labels[i]


def train_transform(image_size: int):
    from torchvision.transforms import v2

    # mild on purpose: chibi/multi/aesthetic depend on proportions and composition, which heavy crops would change.
    # No hue jitter: it was half of the augmentation's CPU time at 128 px (1.5 of 3.4 s per epoch of 150 images,
    # cProfile) for a shift of 0.02 that no task depends on.
    return v2.Compose(
        [
            v2.RandomHorizontalFlip(),
            v2.RandomResizedCrop(image_size, scale=(0.85, 1.0), ratio=(0.9, 1.1), antialias=True),
            v2.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1),
        ]
    )


def load_images(paths: list[Path], image_size: int, *, batch_size: int, workers: int, desc: str):
    """All images as one uint8 tensor (N, 3, S, S); the first unreadable one raises GanimeError naming it."""
    import torch
    from torch.utils.data import DataLoader

    out = torch.empty((len(paths), 3, image_size, image_size), dtype=torch.uint8)
    loader = DataLoader(PostImages(paths, image_size), batch_size=batch_size, shuffle=False, num_workers=workers)
    pos = 0
    for x, errs in progress(loader, total=len(loader), desc=desc):
        bad = [e for e in errs if e]
        if bad:
            raise GanimeError(bad[0])
        out[pos : pos + len(x)] = x
        pos += len(x)
    return out


def resolve_paths(posts_path: Path, files) -> list[Path]:
    # files are relative to the folder holding posts.parquet (the scrape stage writes them that way)
    return [posts_path.parent / str(f) for f in files]


def read_posts(posts: Path):
    df = read_parquet(posts, POST_COLUMNS)
    df = df.drop_duplicates(["source", "post_id"], keep="first").reset_index(drop=True)
    df["post_id"] = df["post_id"].astype("int64")
    return df


def join_labels(posts_df, labels: Path):
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


def check_workers(workers: int) -> None:
    if workers < 0:
        raise GanimeError(f"workers {workers}: must be >= 0 (0 loads images in the main process)")


def labelled_posts(posts: Path, labels: Path):
    """The labelled posts (source, post_id, md5, file, label); too few labels to train and validate: GanimeError."""
    data = join_labels(read_posts(posts), labels)
    n = counts(data["label"].to_numpy())
    if len(data) < MIN_LABELS or min(n.values()) < MIN_PER_CLASS:
        raise GanimeError(
            f"{labels}: too few labels to train and validate ({n['0']} of class 0, {n['1']} of class 1); "
            f"label at least {MIN_LABELS} posts with >= {MIN_PER_CLASS} of each class"
        )
    return data


def train_loader(images, labels: np.ndarray, *, image_size: int, batch_size: int, workers: int, seed: int, device):
    """Shuffled, augmented batches of the preloaded training images (float labels); the order follows ``seed``."""
    import torch
    from torch.utils.data import DataLoader

    dataset = Augmented(images, torch.from_numpy(labels).float(), train_transform(image_size))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        generator=torch.Generator().manual_seed(seed),
        drop_last=len(dataset) % batch_size == 1,  # a lone last sample would break batch norm
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,  # no re-fork of the workers every epoch
    )
