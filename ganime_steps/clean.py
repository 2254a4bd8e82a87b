"""Stage 5, clean: filter posts (or face crops) into a named dataset, then pack it for training.

``filter`` applies tag rules and classifier filters in order and writes ``manifest.parquet`` (every candidate,
kept or not, with the filter and score that removed it, plus every filter's own verdict ``hit:<filter>`` and every
classifier's ``score:<task>`` whatever the order), ``removed.csv`` (the removed posts, for people) and
``summary.json`` (yields per filter, thresholds used).
``removed-grid`` draws a sample of the images one filter removed, each with its score, so a person can judge it.
``pack`` turns the kept images into one uint8 array (N, R, R, 3) ``.npy`` at resolution R (square-pad on
white, Lanczos resize), memory-mappable by the trainer, plus a preview grid.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import logging
import multiprocessing
import re
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ganime_steps.common import (
    GanimeError,
    JsonRecord,
    atomic_path,
    call_with_args,
    parse_assignments,
    progress,
    read_parquet,
    run_cli,
    save_image,
    write_json,
    write_parquet,
    write_text,
)
from ganime_steps.imaging import load_rgb, make_grid, square_resize
from ganime_steps.thresholds import RULE_HELP, parse_threshold_rule, precision_recall_at, threshold_at

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["source", "post_id", "md5", "file", "kept", "removed_by", "removed_score"]
REMOVED_COLUMNS = ["source", "post_id", "md5", "file", "removed_by", "removed_score"]


@dataclass
class CleanSummary(JsonRecord):
    dataset: str
    unit: str  # "post" or "face"
    n_total: int
    n_kept: int
    removed_by: dict[str, int] = field(default_factory=dict)
    filters: dict[str, str] = field(default_factory=dict)
    flagged_by: dict[str, int] = field(default_factory=dict)  # each filter on its own, ignoring the order
    thresholds: dict[str, float | None] = field(default_factory=dict)  # classifier filters: the score cut used
    # classifier filters at a named operating point (drop TASK: precision:0.4): the rule, the threshold it gave on the
    # classifier's validation curve, whether the rule was met, and precision/recall there on validation and test
    operating_points: dict[str, dict] = field(default_factory=dict)


@dataclass
class PackSummary:
    dataset: str
    resolution: int
    n_images: int
    bytes: int


def filter_names(spec: dict) -> list[str]:
    """A dataset's filters in the order they apply (config ``datasets.<name>``): tag rules, then classifiers."""
    return (
        [f"require:{t}" for t in spec.get("require_tags", [])]
        + [f"exclude:{t}" for t in spec.get("exclude_tags", [])]
        + list(spec.get("drop", {}))
    )


def filter_slug(name: str) -> str:
    """A file-name-safe form of a filter name: ``require:full_body`` -> ``require-full_body``.

    Booru tags may hold any character; where characters had to be replaced, a short hash keeps names distinct.
    """
    plain = name.replace(":", "-")
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", plain)
    return slug if slug == plain else f"{slug}_{hashlib.md5(name.encode()).hexdigest()[:6]}"


def removed_grid_paths(dataset: str, spec: dict) -> list[str]:
    """``results/datasets/<dataset>/removed_<filter slug>.png`` for each of a dataset's filters (workflow paths)."""
    return [f"results/datasets/{dataset}/removed_{filter_slug(name)}.png" for name in filter_names(spec)]


def filter_from_slug(dataset: str, spec: dict, slug: str) -> str:
    """The filter name behind a file-name slug of dataset ``dataset``; GanimeError when it has no such filter."""
    names = {filter_slug(name): name for name in filter_names(spec)}
    if slug not in names:
        raise GanimeError(f"datasets.{dataset}: no filter {slug!r}; its filters are {', '.join(names) or 'none'}")
    return names[slug]


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


def operating_point(task: str, rule: str, metrics: Path | None) -> dict:
    """The threshold of a named operating point (``precision:0.4``, ``best_f1``: the classifier's own threshold rules)
    read off the ``task`` classifier's validation PR curve in its metrics.json, with precision and recall at it on
    validation and on the held-out test split. The rule is applied as the classifier applies its own: where no
    threshold reaches the precision, best F1 (``met`` False, logged)."""
    if metrics is None:
        raise GanimeError(f"--drop {task}={rule}: needs the {task} classifier's metrics.json (--classifier-metrics)")
    try:
        m = json.loads(Path(metrics).read_text(encoding="utf-8"))
        val_curve = m["val"]["pr_curve"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GanimeError(
            f"{metrics}: no validation PR curve (val.pr_curve: {exc}); rerun rule classifier_train for {task}"
        ) from exc
    threshold, met = threshold_at(val_curve, rule)
    if not met:
        log.warning("%s %s: not reached on validation; best F1's threshold %.4f instead", task, rule, threshold)
    val_precision, val_recall = precision_recall_at(val_curve, threshold)
    test_curve = (m.get("test") or {}).get("pr_curve")
    test_precision, test_recall = precision_recall_at(test_curve, threshold) if test_curve else (None, None)
    return {
        "rule": rule,
        "threshold": threshold,
        "met": met,
        "val_precision": val_precision,
        "val_recall": val_recall,
        "test_precision": test_precision,
        "test_recall": test_recall,
    }


HOLDOUT_FILTER = "gold sample"  # the uniform draw gold comes from: held out of every dataset


def in_sample(table: pd.DataFrame, sample: Path) -> np.ndarray:
    """Which rows of ``table`` (keyed by source, post_id) are posts of a drawn sample (``label_queue gold``'s
    sample.csv)."""
    try:
        drawn = pd.read_csv(sample, usecols=["source", "post_id"])
    except (OSError, ValueError) as exc:  # missing file, or no source/post_id columns
        raise GanimeError(f"{sample}: not a gold sample table ({exc}); rerun rule gold_queue to draw it") from exc
    drawn = drawn.astype({"source": str}).drop_duplicates().assign(_drawn=True)
    keys = table[["source", "post_id"]].astype({"source": str})
    return keys.merge(drawn, on=["source", "post_id"], how="left")["_drawn"].fillna(False).to_numpy(dtype=bool)


def run_filter(
    *,
    dataset: str,
    out: Path,
    posts: Path | None = None,
    faces: Path | None = None,
    posts_tags: Path | None = None,
    scores: dict[str, Path] | None = None,
    drop: dict[str, float | str | None] | None = None,
    classifier_metrics: dict[str, Path] | None = None,
    require_tags: list[str] = (),
    exclude_tags: list[str] = (),
    holdout: Path | None = None,
) -> CleanSummary:
    """Drop the held-out gold sample's posts (``holdout``: its sample.csv), then rows by tag rules, then by each
    classifier in ``drop``: threshold None = the classifier's own, a number = that score, a rule such as
    ``precision:0.4`` = :func:`operating_point` on the classifier's ``classifier_metrics`` file. Holding the whole
    uniform draw out (clean or not) keeps every dataset a uniform sample of what it filters while no GAN trains on the
    gold images it is judged against, and no data-FID sample shares an image with gold."""
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
    hits: dict[str, np.ndarray] = {}
    task_scores: dict[str, np.ndarray] = {}
    thresholds: dict[str, float | None] = {}
    points: dict[str, dict] = {}

    def apply(name: str, hit: pd.Series, score: pd.Series | None = None) -> None:
        hits[name] = hit.to_numpy(dtype=bool)
        fresh = hits[name] & (removed_by == "").to_numpy()
        removed_by[fresh] = name
        if score is not None:
            removed_score[fresh] = score[fresh]

    if holdout is not None:
        apply(HOLDOUT_FILTER, pd.Series(in_sample(table, Path(holdout))))
        filters[HOLDOUT_FILTER] = "held out: gold is drawn from it"
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
        keep_cols = ["source", "post_id", "score", "predicted"] + (["threshold"] if "threshold" in table_scores else [])
        table_scores = table_scores[keep_cols].drop_duplicates(["source", "post_id"])
        joined = table[["source", "post_id"]].merge(table_scores, on=["source", "post_id"], how="left")
        if joined["score"].isna().any():
            missing = joined.loc[joined["score"].isna(), "post_id"].head(3).tolist()
            raise GanimeError(f"{scores[task]}: no score for posts {missing}; rerun the {task} scoring rule")
        if isinstance(threshold, str):
            points[task] = operating_point(task, threshold, (classifier_metrics or {}).get(task))
            threshold = points[task]["threshold"]
        hit = joined["predicted"].astype(bool) if threshold is None else joined["score"] >= threshold
        apply(task, hit, joined["score"])
        task_scores[task] = joined["score"].to_numpy(dtype=float)
        if threshold is not None:
            thresholds[task] = float(threshold)
        elif "threshold" in joined and joined["threshold"].notna().any():
            thresholds[task] = float(joined["threshold"].dropna().iloc[0])
        else:
            thresholds[task] = None  # an older scores table without the threshold column
        filters[task] = "classifier threshold" if threshold is None else f">= {threshold}"
        if task in points:
            reached = "" if points[task]["met"] else ", not reached: best F1"
            filters[task] = f"{points[task]['rule']} on validation{reached} (>= {threshold:.4f})"

    manifest = table.assign(
        kept=(removed_by == "").to_numpy(), removed_by=removed_by.to_numpy(), removed_score=removed_score.to_numpy()
    )[MANIFEST_COLUMNS]
    extra = {f"hit:{name}": hit for name, hit in hits.items()}
    extra.update({f"score:{task}": values for task, values in task_scores.items()})
    manifest = pd.concat([manifest, pd.DataFrame(extra, index=manifest.index)], axis=1)
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
        {name: int(hit.sum()) for name, hit in hits.items()},
        thresholds,
        points,
    )
    out = Path(out)
    write_parquet(out / "manifest.parquet", manifest)
    removed = manifest.loc[~manifest["kept"], REMOVED_COLUMNS].sort_values(
        ["removed_by", "removed_score"], ascending=[True, False], kind="mergesort"
    )
    write_text(out / "removed.csv", removed.to_csv(index=False, float_format="%.4f", lineterminator="\n"))
    write_json(out / "summary.json", summary.to_json())
    log.info("dataset %s: kept %d of %d; removed %s", dataset, summary.n_kept, summary.n_total, summary.removed_by)
    return summary


@dataclass
class GridSummary:
    dataset: str
    filter: str
    n_removed: int
    n_shown: int
    out: Path


def run_removed_grid(
    *, manifest: Path, filter_name: str, out: Path, n: int = 32, tile: int = 96, ncol: int = 8, seed: int = 0
) -> GridSummary:
    """A grid of up to ``n`` images the filter removed (a seeded random sample, highest score first), each captioned
    with its score; an explanatory card when the filter removed nothing."""
    from PIL import Image, ImageDraw

    if n < 1 or tile < 16 or ncol < 1:
        raise GanimeError(f"removed-grid: n {n}, tile {tile} and ncol {ncol} must be >= 1, >= 16 and >= 1")
    table = read_parquet(manifest, ["file", "removed_by", "removed_score"])
    removed = table[table["removed_by"] == filter_name]
    dataset = Path(manifest).parent.name
    if removed.empty:
        known = sorted(set(table["removed_by"]) - {""})
        image = Image.new("RGB", (tile * 4, tile // 2), "white")
        ImageDraw.Draw(image).text((8, 8), f"{dataset}: nothing removed by {filter_name}", fill=(80, 80, 80))
        log.info("%s: filter %r removed nothing (filters that did: %s)", manifest, filter_name, known)
        save_image(out, image)
        return GridSummary(dataset, filter_name, 0, 0, Path(out))
    sample = removed.sample(n=min(n, len(removed)), random_state=seed) if len(removed) > n else removed
    sample = sample.sort_values("removed_score", ascending=False, na_position="last", kind="mergesort")
    caption = 14
    tiles = []
    for row in sample.itertuples(index=False):
        cell = np.full((tile + caption, tile, 3), 255, dtype=np.uint8)
        cell[:tile] = square_resize(load_rgb(row.file), tile)
        img = Image.fromarray(cell)
        label = "tag rule" if pd.isna(row.removed_score) else f"{row.removed_score:.3f}"
        ImageDraw.Draw(img).text((3, tile + 1), label, fill=(160, 0, 0))
        tiles.append(np.asarray(img))
    save_image(out, make_grid(np.stack(tiles), ncol=min(ncol, len(tiles))))
    return GridSummary(dataset, filter_name, len(removed), len(tiles), Path(out))


def _pack_chunk(tmp: str, files: list[str], start: int, resolution: int) -> int:
    """Worker: resize ``files`` into rows ``start..`` of the .npy being written (opened read-write)."""
    array = np.load(tmp, mmap_mode="r+")
    for i, file in enumerate(files):
        array[start + i] = square_resize(load_rgb(file), resolution)
    array.flush()
    del array
    return len(files)


def run_pack(
    *, manifest: Path, resolution: int, out: Path, preview: Path | None = None, workers: int = 1
) -> PackSummary:
    """Pack kept images into a memory-mappable uint8 array, written through a temporary file.

    ``workers`` > 1: processes resize contiguous slices into the same file (each row is written by exactly one
    worker with the same code), so the bytes are identical to one worker's."""
    if resolution < 8 or resolution & (resolution - 1):
        raise GanimeError(f"resolution {resolution}: must be a power of two >= 8")
    if workers < 1:
        raise GanimeError(f"--workers {workers}: must be >= 1")
    table = read_parquet(manifest, ["file", "kept"])
    kept = table.loc[table["kept"].astype(bool), "file"].tolist()
    if not kept:
        raise GanimeError(f"{manifest}: no kept images to pack")
    with atomic_path(out) as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(kept), resolution, resolution, 3))
        workers = min(workers, len(kept))
        if workers == 1:
            for i, file in enumerate(progress(kept, total=len(kept), desc=f"pack {out.name}")):
                array[i] = square_resize(load_rgb(file), resolution)
        else:
            array.flush()  # the header and zeroed rows, before the workers open the file
            n_chunks = min(len(kept), workers * 8)  # small slices: balanced load, a live progress bar
            bounds = np.linspace(0, len(kept), n_chunks + 1).astype(int)
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                jobs = [
                    pool.submit(_pack_chunk, str(tmp), kept[a:b], int(a), resolution)
                    for a, b in itertools.pairwise(bounds)
                    if b > a
                ]
                bar = progress(as_completed(jobs), total=len(jobs), desc=f"pack {out.name} ({workers} workers)")
                for job in bar:
                    job.result()
        array.flush()  # single worker: its rows; several: nothing of ours (the workers flushed theirs)
        first = np.array(np.load(tmp, mmap_mode="r")[:64])
        del array
    if preview is not None:
        save_image(preview, make_grid(first, ncol=8))
    return PackSummary(Path(manifest).parent.name, resolution, len(kept), out.stat().st_size)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ganime_steps.clean", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("filter", help="apply a dataset's filters; write manifest.parquet, removed.csv and summary.json")
    f.add_argument("--dataset", required=True, help="dataset name from the config")
    f.add_argument("--posts", type=Path, help="posts.parquet (a dataset of whole posts)")
    f.add_argument("--faces", type=Path, help="faces.parquet (a dataset of face crops)")
    f.add_argument("--posts-tags", type=Path, help="posts.parquet giving tags to a face dataset's tag rules")
    f.add_argument("--scores", nargs="*", default=[], help="TASK=scores.parquet of each classifier used")
    f.add_argument(
        "--drop",
        nargs="*",
        default=[],
        help="TASK=THRESHOLD, TASK=auto (the classifier's own) or TASK=RULE (an operating point on the classifier's "
        "validation curve: precision:0.4, best_f1; needs --classifier-metrics)",
    )
    f.add_argument(
        "--classifier-metrics", nargs="*", default=[], help="TASK=metrics.json of each classifier dropped at a RULE"
    )
    f.add_argument("--require-tags", nargs="*", default=[], help="keep only posts with all these tags")
    f.add_argument("--exclude-tags", nargs="*", default=[], help="drop posts with any of these tags")
    f.add_argument("--holdout", type=Path, help="sample.csv of label_queue gold: its posts are held out of the dataset")
    f.add_argument("--out", type=Path, required=True, help="dataset folder")
    g = sub.add_parser("removed-grid", help="draw a sample of the images one filter removed (PNG)")
    g.add_argument("--manifest", type=Path, required=True, help="manifest.parquet from `filter`")
    g.add_argument("--filter", required=True, dest="filter_name", help="filter name, e.g. chibi or require:full_body")
    g.add_argument("--n", type=int, default=32, help="images shown at most (default: %(default)s)")
    g.add_argument("--tile", type=int, default=96, help="tile side in pixels (default: %(default)s)")
    g.add_argument("--out", type=Path, required=True, help="output PNG, e.g. results/datasets/B/removed_chibi.png")
    k = sub.add_parser("pack", help="pack a dataset's kept images into a uint8 .npy at one resolution")
    k.add_argument("--manifest", type=Path, required=True, help="manifest.parquet from `filter`")
    k.add_argument("--resolution", type=int, required=True, help="side in pixels (power of two)")
    k.add_argument("--preview", type=Path, help="also write a grid of the first 64 packed images here")
    k.add_argument("--workers", type=int, default=1, help="processes resizing images (same bytes as 1; default 1)")
    k.add_argument("--out", type=Path, required=True, help="output .npy file")
    return p


def _thresholds(items: list[str]) -> dict[str, float | str | None]:
    """--drop values: auto -> None, a number in [0, 1] -> that score, a threshold rule -> the rule (checked)."""
    result: dict[str, float | str | None] = {}
    for task, value in parse_assignments(items, "--drop").items():
        try:
            if value == "auto":
                result[task] = None
            elif re.fullmatch(r"[0-9.eE+-]+", value):
                result[task] = float(value)
                if not 0.0 <= result[task] <= 1.0:
                    raise ValueError(value)
            else:
                parse_threshold_rule(value)
                result[task] = value
        except (ValueError, GanimeError):
            raise GanimeError(
                f"--drop {task}={value}: use a score threshold in [0, 1], auto (the classifier's own) or an operating "
                f"point, {RULE_HELP}"
            ) from None
    return result


def _handle(a: argparse.Namespace):
    if a.command == "filter":
        scores = {k: Path(v) for k, v in parse_assignments(a.scores, "--scores").items()}
        metrics = {k: Path(v) for k, v in parse_assignments(a.classifier_metrics, "--classifier-metrics").items()}
        return call_with_args(run_filter, a, scores=scores, drop=_thresholds(a.drop), classifier_metrics=metrics)
    return call_with_args(run_pack if a.command == "pack" else run_removed_grid, a)


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), _handle, argv)


if __name__ == "__main__":
    raise SystemExit(main())
