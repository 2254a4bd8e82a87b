"""Stage 5, clean: filter posts (or face crops) into a named dataset, then pack it for training.

``filter`` applies tag rules and classifier filters in order and writes ``manifest.parquet`` (every candidate,
kept or not, with the filter and score that removed it) and ``summary.json`` (yields per filter).
``pack`` turns the kept images into one uint8 array (N, R, R, 3) ``.npy`` at resolution R (square-pad on
white, Lanczos resize), memory-mappable by the trainer, plus a preview grid.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ganime_steps.common import (
    GanimeError,
    atomic_path,
    progress,
    read_parquet,
    run_cli,
    save_image,
    write_json,
    write_parquet,
)
from ganime_steps.imaging import load_rgb, make_grid, square_resize

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["source", "post_id", "md5", "file", "kept", "removed_by", "removed_score"]


@dataclass
class CleanSummary:
    dataset: str
    unit: str  # "post" or "face"
    n_total: int
    n_kept: int
    removed_by: dict[str, int] = field(default_factory=dict)
    filters: dict[str, str] = field(default_factory=dict)


@dataclass
class PackSummary:
    dataset: str
    resolution: int
    n_images: int
    bytes: int


def parse_assignments(items: list[str], flag: str) -> dict[str, str]:
    """``["chibi=path", ...]`` → dict, order kept (filters apply in the order given)."""
    result = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise GanimeError(f"{flag} {item!r}: expected NAME=VALUE")
        result[key] = value
    return result


def _candidates(posts: Path | None, faces: Path | None) -> tuple[pd.DataFrame, str]:
    """Rows to filter with image paths usable from the working directory."""
    if (posts is None) == (faces is None):
        raise GanimeError("clean filter: give exactly one of --posts or --faces")
    table_path = posts or faces
    table = read_parquet(table_path, ["source", "post_id", "md5", "file"])
    table = table.assign(file=[str(Path(table_path).parent / f) for f in table["file"]])
    unit = "post" if posts else "face"
    if unit == "post":
        table = table.assign(tags=table["tags"] if "tags" in table else "")
    return table, unit


def run_filter(
    *,
    dataset: str,
    out: Path,
    posts: Path | None = None,
    faces: Path | None = None,
    posts_tags: Path | None = None,
    scores: dict[str, Path] | None = None,
    drop: dict[str, float | None] | None = None,
    require_tags: list[str] = (),
    exclude_tags: list[str] = (),
) -> CleanSummary:
    """Drop rows by tag rules, then by each classifier in ``drop`` (threshold None = the classifier's own)."""
    scores, drop = scores or {}, drop or {}
    table, unit = _candidates(posts, faces)
    if (require_tags or exclude_tags) and "tags" not in table:
        tags = read_parquet(posts_tags, ["source", "post_id", "tags"]) if posts_tags else None
        if tags is None:
            raise GanimeError("clean filter: tag rules on a face dataset need --posts-tags posts.parquet")
        table = table.merge(tags[["source", "post_id", "tags"]], on=["source", "post_id"], how="left")
    removed_by = pd.Series([""] * len(table), dtype=object)
    removed_score = pd.Series([np.nan] * len(table), dtype=float)
    filters: dict[str, str] = {}

    def apply(name: str, hit: pd.Series, score: pd.Series | None = None) -> None:
        fresh = hit.to_numpy() & (removed_by == "").to_numpy()
        removed_by[fresh] = name
        if score is not None:
            removed_score[fresh] = score[fresh]

    tag_sets = table["tags"].fillna("").str.split() if (require_tags or exclude_tags) else None
    for tag in require_tags:
        apply(f"require:{tag}", ~tag_sets.apply(lambda ts, t=tag: t in ts))
        filters[f"require:{tag}"] = "tag rule"
    for tag in exclude_tags:
        apply(f"exclude:{tag}", tag_sets.apply(lambda ts, t=tag: t in ts))
        filters[f"exclude:{tag}"] = "tag rule"
    for task, threshold in drop.items():
        if task not in scores:
            raise GanimeError(
                f"datasets.{dataset}.drop.{task}: no scores for classifier {task!r}; add it to classifiers"
            )
        table_scores = read_parquet(scores[task], ["source", "post_id", "score", "predicted"])
        joined = table[["source", "post_id"]].merge(table_scores, on=["source", "post_id"], how="left")
        if joined["score"].isna().any():
            missing = joined.loc[joined["score"].isna(), "post_id"].head(3).tolist()
            raise GanimeError(f"{scores[task]}: no score for posts {missing}; rerun the {task} scoring rule")
        hit = joined["predicted"].astype(bool) if threshold is None else joined["score"] >= threshold
        apply(task, hit, joined["score"])
        filters[task] = "classifier threshold" if threshold is None else f">= {threshold}"

    manifest = table.assign(
        kept=(removed_by == "").to_numpy(), removed_by=removed_by.to_numpy(), removed_score=removed_score.to_numpy()
    )[MANIFEST_COLUMNS]
    if not manifest["kept"].any():
        raise GanimeError(f"datasets.{dataset}: every one of {len(manifest)} images was removed; loosen the filters")
    counts = manifest.loc[~manifest["kept"], "removed_by"].value_counts()
    summary = CleanSummary(
        dataset,
        unit,
        len(manifest),
        int(manifest["kept"].sum()),
        {name: int(counts.get(name, 0)) for name in filters},
        filters,
    )
    write_parquet(out / "manifest.parquet", manifest)
    write_json(out / "summary.json", summary)
    return summary


def run_pack(*, manifest: Path, resolution: int, out: Path, preview: Path | None = None) -> PackSummary:
    """Pack kept images into a memory-mappable uint8 array, written through a temporary file."""
    if resolution < 8 or resolution & (resolution - 1):
        raise GanimeError(f"resolution {resolution}: must be a power of two >= 8")
    table = read_parquet(manifest, ["file", "kept"])
    kept = table.loc[table["kept"].astype(bool), "file"].tolist()
    if not kept:
        raise GanimeError(f"{manifest}: no kept images to pack")
    with atomic_path(out) as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(kept), resolution, resolution, 3))
        for i, file in enumerate(progress(kept, total=len(kept), desc=f"pack {out.name}")):
            array[i] = square_resize(load_rgb(file), resolution)
        array.flush()
        first = np.array(array[:64])
        del array
    if preview is not None:
        save_image(preview, make_grid(first, ncol=8))
    return PackSummary(Path(manifest).parent.name, resolution, len(kept), out.stat().st_size)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ganime_steps.clean", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("filter", help="apply a dataset's filters; write manifest.parquet and summary.json")
    f.add_argument("--dataset", required=True, help="dataset name from the config")
    f.add_argument("--posts", type=Path, help="posts.parquet (a dataset of whole posts)")
    f.add_argument("--faces", type=Path, help="faces.parquet (a dataset of face crops)")
    f.add_argument("--posts-tags", type=Path, help="posts.parquet giving tags to a face dataset's tag rules")
    f.add_argument("--scores", nargs="*", default=[], help="TASK=scores.parquet of each classifier used")
    f.add_argument("--drop", nargs="*", default=[], help="TASK=THRESHOLD or TASK=auto (the classifier's own)")
    f.add_argument("--require-tags", nargs="*", default=[], help="keep only posts with all these tags")
    f.add_argument("--exclude-tags", nargs="*", default=[], help="drop posts with any of these tags")
    f.add_argument("--out", type=Path, required=True, help="dataset folder")
    k = sub.add_parser("pack", help="pack a dataset's kept images into a uint8 .npy at one resolution")
    k.add_argument("--manifest", type=Path, required=True, help="manifest.parquet from `filter`")
    k.add_argument("--resolution", type=int, required=True, help="side in pixels (power of two)")
    k.add_argument("--preview", type=Path, help="also write a grid of the first 64 packed images here")
    k.add_argument("--out", type=Path, required=True, help="output .npy file")
    return p


def _thresholds(items: list[str]) -> dict[str, float | None]:
    result = {}
    for task, value in parse_assignments(items, "--drop").items():
        try:
            result[task] = None if value == "auto" else float(value)
        except ValueError:
            raise GanimeError(f"--drop {task}={value}: threshold must be a number in [0, 1] or 'auto'") from None
    return result


def _dispatch(a: argparse.Namespace):
    if a.command == "pack":
        return run_pack(manifest=a.manifest, resolution=a.resolution, out=a.out, preview=a.preview)
    scores = {k: Path(v) for k, v in parse_assignments(a.scores, "--scores").items()}
    return run_filter(
        dataset=a.dataset,
        out=a.out,
        posts=a.posts,
        faces=a.faces,
        posts_tags=a.posts_tags,
        scores=scores,
        drop=_thresholds(a.drop),
        require_tags=a.require_tags,
        exclude_tags=a.exclude_tags,
    )


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), _dispatch, argv)


if __name__ == "__main__":
    raise SystemExit(main())
