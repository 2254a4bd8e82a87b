"""Stage export: publish a cleaned dataset as a Hugging Face ``imagefolder`` dataset with a dataset card.

Writes under ``--out`` (``results/export/<dataset>/`` in the workflow):

- ``train/<name>``: the dataset's kept images. By default the files as scraped, byte for byte (a face dataset: its
  crops), so each row's ``md5`` names the booru's file and nothing is lost to resizing; with ``--resolution R`` the
  training pixels instead: square-padded on white and Lanczos-resized exactly as ``clean pack`` does (the rows of
  ``pack_<R>.npy``), as PNG.
- ``train/metadata.jsonl``: one JSON object per image, ``file_name`` first (the imagefolder loader's key), then the
  post id, source, post URL, md5, tags, rating, booru score, image size and ``score_<task>`` of every cleaning
  classifier given (whether or not the dataset filters on it).
- ``README.md``: the dataset card: the query and source, counts per filter, each classifier's threshold with the
  validation and held-out test metrics that chose it, the image resolution, the fields, how to load it, and the
  licence caveat for scraped images.
- ``--zip``: also ``<out>.zip`` holding the same tree (``load_dataset("imagefolder", data_files=...)`` reads it).

The export is built in a temporary folder beside ``--out`` and moved into place at the end: a failed or killed run
leaves an existing export as it was.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ganime_steps.common import (
    GanimeError,
    _pid_alive,
    atomic_path,
    parse_assignments,
    progress,
    read_parquet,
    run_cli,
)
from ganime_steps.thresholds import f1_of, precision_recall_at

log = logging.getLogger(__name__)

SPLIT = "train"  # the imagefolder split folder
METADATA = "metadata.jsonl"  # the imagefolder loader's metadata file name
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed member times: the same export gives the same zip bytes
POST_FIELDS = ["source", "post_id", "source_url", "tags", "rating", "score", "fetched_at"]
LICENCE = (
    "The images were scraped from {site}. Their copyright stays with their artists; this export grants no licence to "
    "them, and its metadata and card do not change that. Publishing it may need the rights holders' permission (or an "
    "exception such as text-and-data mining for research where your law has one) and must follow the site's terms. "
    "Each row's `post_url` links the original post for attribution; honour takedown requests."
)

SYNTHETIC_LICENCE = (
    "The images were drawn by ganime's synthetic booru (procedural characters, no third-party artwork): a demo "
    "dataset, free of the rights questions of scraped images."
)
SIZE_CATEGORIES = [
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (10**6, "100K<n<1M"),
    (np.inf, "n>1M"),
]


@dataclass
class ExportSummary:
    dataset: str
    unit: str  # "post" or "face"
    n_images: int
    resolution: int | None  # None: the original files
    out: Path
    zip: Path | None = None
    bytes: int = 0
    classifiers: list[str] = field(default_factory=list)


@dataclass
class SourceInfo:
    """What the card says about where the images came from (the scrape settings of the dataset's source)."""

    name: str
    kind: str = ""
    site: str = ""  # base URL, or the folder/archive of a folder source
    query: str = ""  # the tag query

    @property
    def where(self) -> str:
        return self.site or self.name


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise GanimeError(f"{path}: file not found; run the stage that writes the {what} first") from None
    except (OSError, ValueError) as exc:
        raise GanimeError(f"{path}: not a readable {what} ({exc}); delete it and rerun its stage") from None


def _file_names(files: list[str], resolution: int | None) -> list[str]:
    """Image names inside ``train/``: the stored names (content-addressed: ``<md5>.<ext>``, a crop's
    ``<md5>_<i>.png``), as PNG when resized. Two images under one name would overwrite each other: refused."""
    names = [Path(f).name if resolution is None else f"{Path(f).stem}.png" for f in files]
    seen: dict[str, str] = {}
    for name, file in zip(names, files, strict=True):
        if name in seen:
            raise GanimeError(
                f"export: {seen[name]} and {file} would both be {SPLIT}/{name}; rename one source's files"
            )
        seen[name] = file
    return names


def _metadata(
    manifest: pd.DataFrame, posts: Path, scores: dict[str, Path], dataset: str
) -> tuple[pd.DataFrame, list[str]]:
    """The kept rows with the post fields and every classifier's score, in manifest order."""
    kept = manifest.loc[manifest["kept"].astype(bool)].reset_index(drop=True)
    table = read_parquet(posts, ["source", "post_id"])
    cols = [c for c in POST_FIELDS if c in table.columns]
    post_rows = table[cols].drop_duplicates(["source", "post_id"]).rename(columns={"score": "booru_score"})
    rows = kept.merge(post_rows, on=["source", "post_id"], how="left", validate="many_to_one")
    if "source_url" in rows and rows["source_url"].isna().any():
        missing = rows.loc[rows["source_url"].isna(), "post_id"].head(3).tolist()
        raise GanimeError(f"{posts}: no post rows for posts {missing} of dataset {dataset}; rerun the dataset's filter")
    tasks = []
    for task, path in scores.items():
        s = read_parquet(path, ["source", "post_id", "score"])[["source", "post_id", "score"]]
        s = s.drop_duplicates(["source", "post_id"]).rename(columns={"score": f"score_{task}"})
        rows = rows.merge(s, on=["source", "post_id"], how="left")
        if rows[f"score_{task}"].isna().any():
            missing = rows.loc[rows[f"score_{task}"].isna(), "post_id"].head(3).tolist()
            raise GanimeError(
                f"{path}: no score for posts {missing} of dataset {dataset}; rerun the {task} scoring rule"
            )
        tasks.append(task)
    return rows, tasks


def _json_value(value: Any) -> Any:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if hasattr(value, "item"):
        return value.item()
    return value


def _write_images(rows: pd.DataFrame, names: list[str], folder: Path, resolution: int | None) -> list[tuple[int, int]]:
    """Copy (or resize) every image into ``folder``; the (width, height) of each written image."""
    from PIL import Image

    from ganime_steps.imaging import load_rgb, square_resize

    sizes = []
    for file, name in progress(zip(rows["file"], names, strict=True), total=len(names), desc=f"export {folder}"):
        target = folder / name
        if resolution is None:
            try:
                shutil.copyfile(file, target)
                with Image.open(target) as img:
                    sizes.append(img.size)
            except OSError as exc:
                raise GanimeError(f"{file}: cannot copy the image ({exc}); rerun the stage that stored it") from exc
        else:
            Image.fromarray(square_resize(load_rgb(file), resolution)).save(target, format="PNG")
            sizes.append((resolution, resolution))
    return sizes


def _metadata_lines(rows: pd.DataFrame, names: list[str], sizes: list[tuple[int, int]], tasks: list[str]) -> str:
    lines = []
    for i, row in enumerate(rows.to_dict("records")):
        record = {
            "file_name": names[i],
            "source": str(row["source"]),
            "post_id": _json_value(row["post_id"]),
            "post_url": _json_value(row.get("source_url")),
            "md5": str(row["md5"]),
            "tags": _json_value(row.get("tags")) or "",
            "rating": _json_value(row.get("rating")),
            "booru_score": _json_value(row.get("booru_score")),
            "width": int(sizes[i][0]),
            "height": int(sizes[i][1]),
        }
        record.update({f"score_{task}": round(float(row[f"score_{task}"]), 6) for task in tasks})
        lines.append(json.dumps(record, ensure_ascii=False))
    return "\n".join(lines) + "\n"


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _at_threshold(block: dict, threshold: float | None) -> dict:
    """A split's precision, recall and F1 at the threshold the dataset used, from the split's stored PR curve (the
    block's own numbers are at the classifier's threshold; a dataset may cut elsewhere, e.g. at precision:0.4)."""
    curve = block.get("pr_curve")
    if threshold is None or not curve:
        return block
    precision, recall = precision_recall_at(curve, threshold)
    f1 = None if precision is None else float(f1_of(precision, recall))
    return {**block, "precision": precision, "recall": recall, "f1": f1}


def _classifier_rows(tasks: list[str], summary: dict, metrics: dict[str, dict]) -> list[str]:
    """One Markdown table row per classifier: its threshold and the metrics that chose it."""
    used = summary.get("thresholds", {})
    rows = []
    for task in tasks:
        m = metrics.get(task, {})
        val, test = m.get("val") or {}, m.get("test") or {}
        if task in used:
            val, test = _at_threshold(val, used[task]), _at_threshold(test, used[task])
        threshold = used.get(task, m.get("threshold"))
        applied = "yes" if task in used else "no (scores only)"
        rule = summary.get("filters", {}).get(task) if task in used else None
        rule = m.get("threshold_rule", "–") if rule in (None, "classifier threshold") else rule
        labels = (m.get("counts") or {}).get("all") or {}
        rows.append(
            f"| {task} | {applied} | {_fmt(threshold)} | {rule} | {m.get('arch', '–')} | "
            f"{labels.get('1', '–')} / {labels.get('0', '–')} | {_fmt(val.get('f1'))} | "
            f"{_fmt(test.get('precision'))} | {_fmt(test.get('recall'))} | {_fmt(test.get('f1'))} | "
            f"{_fmt(test.get('roc_auc'))} | {test.get('n', '–')} |"
        )
    return rows


def dataset_card(
    *,
    dataset: str,
    unit: str,
    source: SourceInfo,
    summary: dict,
    metrics: dict[str, dict],
    tasks: list[str],
    n_images: int,
    resolution: int | None,
    fetched: tuple[str, str] | None = None,
    order: list[str] = (),
) -> str:
    """The dataset card (README.md): YAML front matter for the Hub, then what a reader needs to trust and use it.
    ``order``: the filters in the order they applied (summary.json keeps them sorted by name)."""
    size = next(label for bound, label in SIZE_CATEGORIES if n_images < bound)
    things = "face crops" if unit == "face" else "images"
    front = [
        "---",
        "license: other",
        f"license_name: scraped-{source.name}",
        "task_categories:",
        "- unconditional-image-generation",
        "tags:",
        "- anime",
        "- ganime",
        "size_categories:",
        f"- {size}",
        f"pretty_name: ganime dataset {dataset}",
        "---",
        "",
    ]
    if resolution is None:
        images = (
            f"The {things} as scraped, byte for byte (sizes and formats vary; `width`/`height` give each one's size). "
            f"The study trained on them square-padded on white and Lanczos-resized."
        )
    else:
        images = (
            f"{resolution}×{resolution} PNG: each {things[:-1]} square-padded on white, then Lanczos-resized (the "
            f"pixels the study's GANs trained on, `pack_{resolution}.npy`)."
        )
    query = f"`{source.query}`" if source.query else "(not recorded)"
    when = f"; fetched {fetched[0]} to {fetched[1]}" if fetched else ""
    lines = front + [
        f"# ganime dataset {dataset}",
        "",
        f"{n_images} {things} kept of {summary.get('n_total', '?')} candidates, cleaned by the ganime pipeline "
        f"(a booru tag query, hand-labelled cleaning classifiers).",
        "",
        "## Source",
        "",
        f"- source: {source.name} ({', '.join(filter(None, [source.kind, source.site])) or 'kind not recorded'}){when}",
        f"- query: {query}",
        "",
        "## Cleaning",
        "",
        "Filters apply in order; a row is removed by the first filter that flags it. `flagged` counts every "
        "candidate a filter flags on its own, whatever the order.",
        "",
        "| filter | kind | flagged | removed |",
        "|---|---|---|---|",
    ]
    filters = summary.get("filters", {})
    for name in [f for f in order if f in filters] + [f for f in filters if f not in order]:
        kind = filters[name]
        lines.append(
            f"| {name} | {kind} | {summary.get('flagged_by', {}).get(name, '–')} | "
            f"{summary.get('removed_by', {}).get(name, 0)} |"
        )
    lines += [f"| kept | | | {summary.get('n_kept', n_images)} |", ""]
    if tasks:
        lines += [
            "Cleaning classifiers: the threshold each filter used, chosen on the validation split by the rule "
            "shown; precision, recall, F1 and ROC-AUC on the held-out test split at that threshold "
            "(labels: positive / negative hand labels).",
            "",
            "| classifier | filters this set | threshold | rule | arch | labels | val F1 | test precision | "
            "test recall | test F1 | test ROC-AUC | test n |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
            *_classifier_rows(tasks, summary, metrics),
            "",
        ]
    lines += [
        "## Images",
        "",
        images,
        "",
        "## Fields (`train/metadata.jsonl`)",
        "",
        "- `file_name`: the image in `train/`",
        "- `source`, `post_id`: the post it comes from; `post_url`: the post's page",
        f"- `md5`: the md5 of the {'post file a crop was cut from' if unit == 'face' else 'image file'} as the booru "
        "reports it (verified on download)",
        "- `tags` (space-separated, as the booru gives them), `rating`, `booru_score`",
        "- `width`, `height`: the exported image's size",
        *[f"- `score_{task}`: the {task} classifier's score (0–1; above its threshold = flagged)" for task in tasks],
        "",
        "## Loading",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        'ds = load_dataset("imagefolder", data_dir="PATH/TO/THIS/FOLDER", split="train")',
        "```",
        "",
        "## Licence",
        "",
        SYNTHETIC_LICENCE if source.kind == "synthetic" else LICENCE.format(site=source.where),
        "",
    ]
    return "\n".join(lines)


def _zip_tree(folder: Path, out: Path) -> None:
    """``out``: every file under ``folder`` (sorted, fixed times), images stored, text deflated; atomically."""
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w") as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            name = path.relative_to(folder).as_posix()
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.external_attr = 0o644 << 16
            text = path.suffix in (".jsonl", ".md")
            info.compress_type = zipfile.ZIP_DEFLATED if text else zipfile.ZIP_STORED
            with path.open("rb") as src, archive.open(info, "w") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def _replace_folder(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` folder to ``out``; an existing ``out`` is set aside first and removed after."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old.{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def run_export(
    *,
    dataset: str,
    manifest: Path,
    summary: Path,
    posts: Path,
    out: Path,
    scores: dict[str, Path] | None = None,
    metrics: dict[str, Path] | None = None,
    source: SourceInfo | None = None,
    resolution: int | None = None,
    make_zip: bool = False,
) -> ExportSummary:
    """Write the export of ``dataset`` to ``out`` (and ``<out>.zip`` with ``make_zip``); see the module doc."""
    if resolution is not None and resolution < 8:
        raise GanimeError(f"--resolution {resolution}: must be at least 8 (or left out for the original files)")
    scores, metrics = scores or {}, metrics or {}
    out = Path(out)
    table = read_parquet(manifest, ["source", "post_id", "md5", "file", "kept"])
    if not table["kept"].astype(bool).any():
        raise GanimeError(f"{manifest}: no kept images to export; loosen the filters of dataset {dataset}")
    clean = _read_json(summary, "dataset summary (clean filter)")
    unit = clean.get("unit", "post")
    source = source or SourceInfo(name=", ".join(sorted(table["source"].astype(str).unique())))
    rows, tasks = _metadata(table, posts, scores, dataset)
    metric_blocks = {task: _read_json(path, "classifier metrics") for task, path in metrics.items()}
    fetched = None
    if "fetched_at" in rows and rows["fetched_at"].notna().any():
        stamps = rows["fetched_at"].dropna().astype(str)
        fetched = (stamps.min()[:10], stamps.max()[:10])
    names = _file_names(rows["file"].tolist(), resolution)

    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{glob.escape(out.name)}.*.*"):  # left by a killed export (kill -9 skips cleanup)
        pid = stale.name.rsplit(".", 1)[-1]
        if stale.is_dir() and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = out.with_name(f".{out.name}.tmp.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        (tmp / SPLIT).mkdir(parents=True)
        sizes = _write_images(rows, names, tmp / SPLIT, resolution)
        (tmp / SPLIT / METADATA).write_text(_metadata_lines(rows, names, sizes, tasks), encoding="utf-8")
        card = dataset_card(
            dataset=dataset,
            unit=unit,
            source=source,
            summary=clean,
            metrics=metric_blocks,
            tasks=tasks,
            n_images=len(rows),
            resolution=resolution,
            fetched=fetched,
            order=[c.removeprefix("hit:") for c in table.columns if c.startswith("hit:")],
        )
        (tmp / "README.md").write_text(card, encoding="utf-8")
        archive = out.with_name(out.name + ".zip")
        if make_zip:
            _zip_tree(tmp, archive)
        _replace_folder(tmp, out)
        if not make_zip and archive.exists():  # an older export's archive would disagree with the folder
            log.info("%s: removed (an older export's archive; --zip writes a new one)", archive)
            archive.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    log.info("export %s: %d %ss to %s (%d bytes)", dataset, len(rows), unit, out, total)
    return ExportSummary(dataset, unit, len(rows), resolution, out, archive if make_zip else None, total, tasks)


# --------------------------------------------------------------------------------------------------------------
# CLI: the workflow passes every input; at the shell, --dataset and --out find the rest under --results.


def _query_of(scrape_dir: Path) -> dict:
    """The query record a scrape wrote first in its ``listing.jsonl`` ({} when there is none)."""
    try:
        first = (scrape_dir / "listing.jsonl").open().readline()
        record = json.loads(first) if first.strip() else {}
    except (OSError, ValueError):
        return {}
    return record.get("query", {}) if record.get("type") == "query" else {}


def _scores_for(results: Path, source: str) -> dict[str, Path]:
    """Every classifier's scores of ``source``: ``scores_<source>.parquet``, else ``scores.parquet`` where it holds
    that source's posts (the main source's file)."""
    found = {}
    for task_dir in sorted(p for p in (results / "classifiers").glob("*") if p.is_dir()):
        for path in (task_dir / f"scores_{source}.parquet", task_dir / "scores.parquet"):
            if path.exists() and (read_parquet(path, ["source"])["source"].astype(str) == source).any():
                found[task_dir.name] = path
                break
    return found


def _shell_inputs(a: argparse.Namespace) -> dict[str, Any]:
    """Fill what the workflow would pass from the results folder (``--results``, default ``results``)."""
    results = Path(a.results)
    manifest = a.manifest or results / "datasets" / a.dataset / "manifest.parquet"
    if not Path(manifest).exists():
        raise GanimeError(
            f"{manifest}: file not found; make the dataset first (snakemake {manifest}) or give --results"
        )
    sources = read_parquet(manifest, ["source"])["source"].astype(str).unique().tolist()
    name = sources[0]
    if a.scores is None:
        scores = _scores_for(results, name)
    else:
        scores = {k: Path(v) for k, v in parse_assignments(a.scores, "--scores", "TASK=PATH").items()}
    if a.metrics is not None:
        metrics = {k: Path(v) for k, v in parse_assignments(a.metrics, "--metrics", "TASK=PATH").items()}
    else:
        metrics = {t: results / "classifiers" / t / "metrics.json" for t in scores}
        metrics = {t: p for t, p in metrics.items() if p.exists()}
    query = {} if a.query is not None else _query_of(results / "scrape" / name)
    source = SourceInfo(
        name=name,
        kind=a.kind or query.get("kind", ""),
        site=a.site or query.get("base_url") or query.get("path") or "",
        query=a.query if a.query is not None else query.get("tags", ""),
    )
    return {
        "manifest": Path(manifest),
        "summary": a.summary or Path(manifest).parent / "summary.json",
        "posts": a.posts or results / "scrape" / name / "posts.parquet",
        "scores": scores,
        "metrics": metrics,
        "source": source,
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ganime_steps.export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", required=True, help="dataset name (results/datasets/<name>/)")
    p.add_argument("--out", type=Path, required=True, help="export folder, e.g. results/export/B")
    p.add_argument(
        "--resolution", type=int, help="resize to RxR as the training packs are (PNG); default: the original files"
    )
    p.add_argument("--zip", action="store_true", dest="make_zip", help="also write <out>.zip with the same tree")
    p.add_argument("--results", type=Path, default=Path("results"), help="where the inputs below are found by default")
    p.add_argument("--manifest", type=Path, help="default: <results>/datasets/<dataset>/manifest.parquet")
    p.add_argument("--summary", type=Path, help="default: summary.json beside the manifest")
    p.add_argument("--posts", type=Path, help="default: <results>/scrape/<source>/posts.parquet")
    p.add_argument(
        "--scores",
        nargs="*",
        help="TASK=scores.parquet per classifier (none after the flag: no scores); default: every one under --results",
    )
    p.add_argument("--metrics", nargs="*", help="TASK=metrics.json per classifier; default: beside each scores file")
    p.add_argument("--query", help="the scrape's tag query, for the card; default: from the scrape's listing.jsonl")
    p.add_argument("--kind", help="the source's kind (dapi, danbooru, folder, synthetic), for the card")
    p.add_argument("--site", help="the source's base URL or folder, for the card")
    return p


def _handle(a: argparse.Namespace) -> ExportSummary:
    return run_export(dataset=a.dataset, out=a.out, resolution=a.resolution, make_zip=a.make_zip, **_shell_inputs(a))


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), _handle, argv)


if __name__ == "__main__":
    raise SystemExit(main())
