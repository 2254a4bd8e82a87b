"""Stage 3, labels: import hand-label CSVs for one task (chibi, multi, aesthetic, ...) into a label table.

A CSV names each image by ``post_id`` (optionally with ``source``), ``md5`` or image path (``file``/``image``),
and gives ``label``: 1/0, yes/no, true/false, positive/negative, ``<task>``/``not_<task>``.
Unknown images, unknown label values and conflicting duplicates are reported with file and line.
Writes ``<out>`` (source, post_id, md5, label, origin) and ``<out stem>_counts.json`` beside it.
"""

from __future__ import annotations

import argparse
import csv
import logging
from dataclasses import dataclass
from pathlib import Path, PurePath

import pandas as pd

from ganime_steps.common import GanimeError, read_parquet, run_cli, write_json, write_parquet

log = logging.getLogger(__name__)

POSITIVE = {"1", "yes", "true", "positive", "pos", "y"}
NEGATIVE = {"0", "no", "false", "negative", "neg", "n"}
KEY_COLUMNS = ("post_id", "md5", "file", "image")


@dataclass
class LabelsSummary:
    task: str
    n_labels: int
    positive: int
    negative: int
    files: list[str]


def parse_label(value: str, task: str) -> int | None:
    v = value.strip().lower()
    if v in POSITIVE or v == task:
        return 1
    if v in NEGATIVE or v in (f"not_{task}", f"no_{task}"):
        return 0
    return None


class _PostIndex:
    """Look posts up by id (with or without source), md5, or image file name."""

    def __init__(self, posts: pd.DataFrame) -> None:
        self.by_id: dict[tuple[str, int], tuple] = {}
        self.by_bare_id: dict[int, list[tuple]] = {}
        self.by_md5: dict[str, tuple] = {}
        for row in posts[["source", "post_id", "md5"]].itertuples(index=False):
            key = (row.source, int(row.post_id), row.md5)
            self.by_id[(row.source, int(row.post_id))] = key
            self.by_bare_id.setdefault(int(row.post_id), []).append(key)
            self.by_md5[row.md5] = key

    def find(self, record: dict[str, str]) -> tuple | str:
        """The post's (source, post_id, md5), or a string saying why it was not found."""
        if record.get("post_id", "").strip():
            raw = record["post_id"].strip()
            if not raw.isdigit():
                return f"post_id {raw!r} is not a number"
            pid = int(raw)
            if record.get("source", "").strip():
                return self.by_id.get((record["source"].strip(), pid), f"post {record['source']}/{pid} is unknown")
            matches = self.by_bare_id.get(pid, [])
            if len(matches) > 1:
                return f"post_id {pid} exists in several sources; add a source column"
            return matches[0] if matches else f"post_id {pid} is not among the scraped posts"
        name = (record.get("md5") or record.get("file") or record.get("image") or "").strip()
        md5 = PurePath(name).stem.split("_")[0].lower()  # accepts an md5, a stored image path or a face crop
        return self.by_md5.get(md5, f"image {name!r} is not among the scraped posts")


def read_label_csv(path: Path, task: str, index: _PostIndex) -> list[tuple]:
    if not path.is_file():
        raise GanimeError(f"{path}: label file not found; fix labels.{task} in the config")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip().lower() for h in (reader.fieldnames or [])]
        if "label" not in header or not any(k in header for k in KEY_COLUMNS):
            raise GanimeError(f"{path}: header must have 'label' and one of {', '.join(KEY_COLUMNS)}; got {header}")
        rows = []
        for line, raw in enumerate(reader, start=2):
            record = {(k or "").strip().lower(): (v or "") for k, v in raw.items()}
            label = parse_label(record.get("label", ""), task)
            if label is None:
                raise GanimeError(
                    f"{path}:{line}: label {record.get('label')!r} is not a {task} label; "
                    f"use 1/0, yes/no, {task}/not_{task}"
                )
            post = index.find(record)
            if isinstance(post, str):
                raise GanimeError(f"{path}:{line}: {post}; fix or remove the line")
            rows.append((*post, label, f"{path.name}:{line}"))
    return rows


def run(*, posts: Path, csvs: list[Path], task: str, out: Path) -> LabelsSummary:
    if not csvs:
        raise GanimeError(f"labels.{task}: no label file given; list at least one CSV in the config")
    index = _PostIndex(read_parquet(posts, ["source", "post_id", "md5"]))
    rows = [row for path in csvs for row in read_label_csv(Path(path), task, index)]
    table = pd.DataFrame(rows, columns=["source", "post_id", "md5", "label", "origin"])
    # The same image labelled twice is fine when the labels agree; a disagreement needs a person.
    for md5, group in table.groupby("md5"):
        if group["label"].nunique() > 1:
            raise GanimeError(f"conflicting {task} labels for image {md5}: {', '.join(group['origin'])}; keep one")
    table = table.drop_duplicates("md5").reset_index(drop=True)
    positive = int(table["label"].sum())
    write_parquet(out, table)
    summary = LabelsSummary(task, len(table), positive, len(table) - positive, [str(p) for p in csvs])
    write_json(out.with_name(out.stem + "_counts.json"), summary)
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ganime_steps.labels", description=__doc__)
    p.add_argument("--posts", type=Path, required=True, help="posts.parquet of the scrape stage")
    p.add_argument("--task", required=True, help="label task name, e.g. chibi, multi, aesthetic")
    p.add_argument("--csv", type=Path, nargs="+", required=True, dest="csvs", help="label CSV file(s)")
    p.add_argument("--out", type=Path, required=True, help="output label table (.parquet)")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), lambda a: run(posts=a.posts, csvs=a.csvs, task=a.task, out=a.out), argv)


if __name__ == "__main__":
    raise SystemExit(main())
