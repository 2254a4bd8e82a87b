"""Stage 3, labels: import hand labels for one task (chibi, multi, aesthetic, ...) into a label table.

Label files, listed per task under ``labels.<task>`` in the config (the format is detected from the extension/shape,
or given as ``FORMAT=PATH``):

- ``csv``: a CSV naming each image by ``post_id`` (optionally with ``source``), ``md5`` or image path
  (``file``/``image``), with a ``label`` column (``choice``/``choices``/``class`` also accepted).
- ``label_studio``: a Label Studio JSON export (tasks with ``annotations[].result[].value.choices``).
- ``label_studio_min``: a Label Studio JSON-MIN export (one flat object per task, the choice under the control's name).
- ``label_studio_csv``: a Label Studio CSV export (``image`` plus the choice column); read like ``csv``.
- ``folder``: a folder per class, e.g. ``labels/chibi/yes/*.png`` and ``labels/chibi/no/*.png``; files are named by
  md5 (as stored by the scrape stage) or matched by the md5 of their content.

Label values: 1/0 (also 1.0/0.0), yes/no, true/false, positive/negative, ``<task>``/``not_<task>`` (case, spaces and
hyphens ignored). CSV headers are matched ignoring case, spaces and hyphens (``Post ID,Label`` works). CSV files may be
UTF-8 (with or without BOM), UTF-16 with BOM (Excel "Unicode Text") or Windows-1252/Latin-1, separated by commas, tabs
or semicolons; anything else (an .xlsx renamed .csv, UTF-16 without BOM) is refused naming the file and the fix.
Every unknown image, unknown class and conflicting duplicate is reported with file and line/record: all of them go
to ``<out stem>_problems.csv`` and the stage fails naming the first. On success it writes ``<out>`` (source, post_id,
md5, label, origin) and ``<out stem>_counts.json`` (label counts per class and per label file).
"""

from __future__ import annotations

import argparse
import codecs
import csv
import hashlib
import io
import json
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import pandas as pd

from ganime_steps.common import (
    GanimeError,
    JsonRecord,
    call_with_args,
    read_parquet,
    run_cli,
    write_json,
    write_parquet,
    write_text,
)

log = logging.getLogger(__name__)

POSITIVE = {"1", "yes", "true", "positive", "pos", "y"}
NEGATIVE = {"0", "no", "false", "negative", "neg", "n"}
KEY_COLUMNS = ("post_id", "md5", "file", "image")
LABEL_COLUMNS = ("label", "choice", "choices", "class")
FORMATS = ("csv", "label_studio", "label_studio_min", "label_studio_csv", "folder")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp"}
MD5_RE = re.compile(r"[0-9a-f]{32}")
TABLE_COLUMNS = ["source", "post_id", "md5", "label", "origin"]
HEADER_ALIASES = {"postid": "post_id", "md5_hash": "md5", "hash": "md5"}
CSV_FIX = "open it in Excel and save it again as 'CSV UTF-8 (Comma delimited) (*.csv)'"
_WHOLE_01 = re.compile(r"([01])(?:\.0*)?")  # 1.0 / 0.0: how spreadsheets write 1 and 0
_WHOLE = re.compile(r"(\d+)(?:\.0*)?")


@dataclass
class LabelsSummary(JsonRecord):
    task: str
    n_labels: int
    positive: int
    negative: int
    files: list[str]
    classes: dict[str, int] = field(default_factory=dict)
    per_label_file: dict[str, dict[str, int]] = field(default_factory=dict)  # label file path -> counts
    skipped: int = 0


@dataclass(frozen=True)
class LabelFile:
    path: Path
    format: str  # one of FORMATS, after detection


@dataclass
class Record:
    """One label as read from a label file, before it is matched to a post."""

    where: str  # "file:line", "file#task 12" or a file path: what a person opens to fix it
    key: dict[str, str]  # post_id/source/md5/file/image/path/content_md5
    value: Any  # the raw label value(s)


class LabelProblem(Exception):
    """One fixable problem with one record (collected, not raised to the user directly)."""


def normalise(value: str) -> str:
    return re.sub(r"[\s\-]+", "_", str(value).strip().lower())


def parse_label(value: Any, task: str) -> int | None:
    """1 / 0 for a recognised label value, None otherwise. Lists (Label Studio choices) must agree."""
    if isinstance(value, dict) and "choices" in value:  # JSON-MIN with multi-choice controls
        value = value["choices"]
    if isinstance(value, (list, tuple)):
        parsed = {parse_label(v, task) for v in value}
        return parsed.pop() if len(parsed) == 1 else None
    if isinstance(value, bool):
        return int(value)
    v = normalise(value)
    t = normalise(task)
    whole = _WHOLE_01.fullmatch(v)
    if whole:
        v = whole.group(1)
    if v in POSITIVE or v == t:
        return 1
    if v in NEGATIVE or v in (f"not_{t}", f"no_{t}", f"non_{t}"):
        return 0
    return None


# ----------------------------------------------------------------------------------------------------------------
# label file specs


def parse_label_file(spec: str | dict | Path) -> LabelFile:
    """A config entry (``path``, ``FORMAT=path`` or ``{path: ..., format: ...}``) as a LabelFile with a known format."""
    if isinstance(spec, dict):
        if "path" not in spec:
            raise GanimeError(f"label file {spec!r}: needs a 'path' key")
        path, fmt = Path(str(spec["path"])), str(spec.get("format") or "auto")
    else:
        text = str(spec)
        head, sep, tail = text.partition("=")
        path, fmt = (Path(tail), head) if sep and head in (*FORMATS, "auto") else (Path(text), "auto")
    if fmt not in (*FORMATS, "auto"):
        raise GanimeError(f"label file {str(path)!r}: format {fmt!r} is unknown; use one of {', '.join(FORMATS)}")
    if fmt == "auto":
        fmt = detect_format(path)
    return LabelFile(path, fmt)


def detect_format(path: Path) -> str:
    """folder / csv / label_studio_csv / label_studio / label_studio_min, from the file system entry and its shape."""
    if path.is_dir():
        return "folder"
    if not path.is_file():
        raise GanimeError(f"{path}: label file or folder not found; fix the path under labels in the config")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        header = {_header_name(h) for h in _csv_dict_reader(read_csv_text(path)).fieldnames or []}
        studio = {"annotation_id", "annotator", "lead_time"} & header
        return "label_studio_csv" if studio else "csv"
    if suffix == ".json":
        data = _load_json(path)
        first = data[0] if data else {}
        return (
            "label_studio"
            if isinstance(first, dict) and ("annotations" in first or "data" in first)
            else ("label_studio_min")
        )
    raise GanimeError(f"{path}: cannot tell the label format from {suffix or 'no'} extension; write FORMAT=PATH")


def _spec_path(spec: str | dict | Path) -> Path:
    if isinstance(spec, dict):
        return Path(str(spec.get("path", "")))
    head, sep, tail = str(spec).partition("=")
    return Path(tail) if sep and head in (*FORMATS, "auto") else Path(str(spec))


def label_file_inputs(specs: str | dict | Iterable) -> list[str]:
    """Every file the label files read (a label folder lists its image files), for the workflow's input.

    A path that does not exist yet is listed as is, so that Snakemake names it as a missing input.
    """
    files: list[str] = []
    for spec in as_spec_list(specs):
        path = _spec_path(spec)
        if path.is_dir():
            files.extend(str(p) for p in _folder_images(path))
        else:
            files.append(str(path))
    return files


def label_file_args(specs: Iterable[str | dict]) -> list[str]:
    """The ``--label-file`` arguments for a task's config entry (``FORMAT=PATH`` where a format is given)."""
    out = []
    for spec in as_spec_list(specs):
        if isinstance(spec, dict):
            fmt = spec.get("format") or "auto"
            out.append(f"{fmt}={spec['path']}" if fmt != "auto" else str(spec["path"]))
        else:
            out.append(str(spec))
    return out


def as_spec_list(specs: str | dict | Iterable) -> list:
    return [specs] if isinstance(specs, (str, dict)) else list(specs)


# ----------------------------------------------------------------------------------------------------------------
# readers: each yields Records


def _load_json(path: Path) -> list:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GanimeError(f"{path}: not readable JSON ({exc}); export it again from Label Studio") from exc
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise GanimeError(f"{path}: expected a JSON list of tasks, got {type(data).__name__}")
    return data


def read_csv_text(path: Path) -> str:
    """The text of a CSV file as spreadsheets export it: UTF-8 (BOM or not), UTF-16 with BOM, Windows-1252/Latin-1.

    What cannot be one of those (a workbook renamed .csv, UTF-16 without a BOM) is refused naming the file and the fix.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise GanimeError(f"{path}: cannot read the label file ({exc.strerror})") from exc
    if data.startswith((b"PK\x03\x04", b"\xd0\xcf\x11\xe0")):
        raise GanimeError(f"{path}: is an Excel workbook (.xlsx/.xls), not a CSV; {CSV_FIX}")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise GanimeError(f"{path}: damaged UTF-16 text at byte {exc.start}; {CSV_FIX}") from exc
    bom = data.startswith(codecs.BOM_UTF8)
    if bom:
        data = data[len(codecs.BOM_UTF8) :]
    if b"\x00" in data[:4096]:
        raise GanimeError(f"{path}: has NUL bytes (UTF-16 without a byte-order mark, or not text); {CSV_FIX}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if bom:
            raise GanimeError(f"{path}: starts as UTF-8 but byte {exc.start + 3} is not UTF-8; {CSV_FIX}") from exc
    log.info("%s: not UTF-8; read as Windows-1252 (Latin-1)", path)
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _header_name(name: str | None) -> str:
    """A CSV header as the key it names: case, spaces and hyphens ignored (``Post ID`` -> ``post_id``)."""
    key = normalise(name or "")
    return HEADER_ALIASES.get(key, key)


def _csv_dict_reader(text: str) -> csv.DictReader:
    """Comma, tab (Excel "Unicode Text") or semicolon (Excel in many locales): whichever the header line uses most."""
    first = text.split("\n", 1)[0]
    delimiter = max((",", "\t", ";"), key=first.count) if any(d in first for d in ",\t;") else ","
    return csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)


def _key_from_mapping(m: dict[str, Any]) -> dict[str, str]:
    key = {k: str(m[k]) for k in ("post_id", "source", "md5", "file") if m.get(k) not in (None, "")}
    for k in ("image", "img", "url"):
        if m.get(k) not in (None, "") and "image" not in key:
            key["image"] = str(m[k])
    return key


def read_csv_records(path: Path, task: str) -> Iterator[Record]:
    reader = _csv_dict_reader(read_csv_text(path))
    header = [_header_name(h) for h in (reader.fieldnames or [])]
    label_col = next((c for c in (*LABEL_COLUMNS, normalise(task)) if c in header), None)
    if label_col is None or not any(k in header for k in KEY_COLUMNS):
        raise GanimeError(
            f"{path}: header must have 'label' (or {', '.join(LABEL_COLUMNS[1:])}) and one of "
            f"{', '.join(KEY_COLUMNS)}; got {header}"
        )
    for line, raw in enumerate(reader, start=2):
        record = {_header_name(k): (v or "").strip() for k, v in raw.items() if k is not None}
        value = record.get(label_col, "")
        if value.startswith("{") and "choices" in value:  # Label Studio CSV of a multi-choice control
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        yield Record(f"{path}:{line}", _key_from_mapping(record), value)


def read_label_studio(path: Path, task: str) -> Iterator[Record]:
    """Label Studio JSON export: one record per submitted (not cancelled) annotation with a choices result."""
    for i, item in enumerate(_load_json(path)):
        if not isinstance(item, dict):
            raise GanimeError(f"{path}: record {i} is not a task object; export the project as JSON")
        where = f"{path}#task {item.get('id', i)}"
        data = item.get("data") if isinstance(item.get("data"), dict) else {}
        key = _key_from_mapping(data)
        for ann in item.get("annotations") or item.get("completions") or []:
            if ann.get("was_cancelled"):
                continue
            choices = [
                c
                for r in ann.get("result") or []
                if r.get("type") == "choices" or "choices" in (r.get("value") or {})
                for c in (r.get("value") or {}).get("choices", [])
            ]
            if choices:
                yield Record(f"{where} annotation {ann.get('id', '?')}", key, choices)


def read_label_studio_min(path: Path, task: str) -> Iterator[Record]:
    """Label Studio JSON-MIN: flat objects holding the task data and the choice under its control's name."""
    meta = {"id", "annotator", "annotation_id", "created_at", "updated_at", "lead_time", "post_id", "source"}
    meta |= {"md5", "file", "image", "img", "url", "score"}
    for i, item in enumerate(_load_json(path)):
        if not isinstance(item, dict):
            raise GanimeError(f"{path}: record {i} is not an object; export the project as JSON-MIN")
        where = f"{path}#task {item.get('id', i)}"
        field_name = next((c for c in (*LABEL_COLUMNS, normalise(task)) if c in item), None)
        if field_name is None:
            candidates = [k for k in item if k not in meta]
            if len(candidates) != 1:
                continue  # an unlabelled (skipped) task: no choice field
            field_name = candidates[0]
        yield Record(where, _key_from_mapping(item), item[field_name])


def _folder_images(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


def read_folder(path: Path, task: str) -> Iterator[Record]:
    """``<path>/<class>/<image>``: the class folder is the label; the image is found by md5 name or content md5."""
    for class_dir in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for image in _folder_images(class_dir):
            stem = image.stem.lower().split("_")[0]
            key = {"md5": stem} if MD5_RE.fullmatch(stem) else {}
            key["path"] = str(image)
            yield Record(str(image), key, class_dir.name)
    loose = [p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if loose:
        raise GanimeError(
            f"{loose[0]}: image outside a class folder; put it under {path}/yes/ or {path}/no/ "
            f"(or {path}/{task}/, {path}/not_{task}/)"
        )


READERS = {
    "csv": read_csv_records,
    "label_studio_csv": read_csv_records,
    "label_studio": read_label_studio,
    "label_studio_min": read_label_studio_min,
    "folder": read_folder,
}


# ----------------------------------------------------------------------------------------------------------------
# matching records to posts


class _PostIndex:
    """Look posts up by id (with or without source), md5, or image file name / URL."""

    def __init__(self, posts: pd.DataFrame) -> None:
        self.by_id: dict[tuple[str, int], tuple] = {}
        self.by_bare_id: dict[int, list[tuple]] = {}
        self.by_md5: dict[str, tuple] = {}
        for row in posts[["source", "post_id", "md5"]].itertuples(index=False):
            key = (row.source, int(row.post_id), row.md5)
            self.by_id[(row.source, int(row.post_id))] = key
            self.by_bare_id.setdefault(int(row.post_id), []).append(key)
            self.by_md5[row.md5] = key

    def find(self, record: dict[str, str]) -> tuple:
        """The post's (source, post_id, md5); LabelProblem saying why it was not found."""
        raw = (record.get("post_id") or "").strip()
        if raw:
            whole = _WHOLE.fullmatch(raw)  # 123.0: a spreadsheet's number format
            if not whole:
                raise LabelProblem(f"post_id {raw!r} is not a number")
            pid = int(whole.group(1))
            source = (record.get("source") or "").strip()
            if source:
                if (source, pid) not in self.by_id:
                    raise LabelProblem(f"post {source}/{pid} is unknown")
                return self.by_id[(source, pid)]
            matches = self.by_bare_id.get(pid, [])
            if len(matches) > 1:
                raise LabelProblem(f"post_id {pid} exists in several sources; add a source column")
            if not matches:
                raise LabelProblem(f"post_id {pid} is not among the scraped posts")
            return matches[0]
        if "path" in record:  # an image in a label folder: md5 file name first, then the md5 of the content
            md5 = record.get("md5", "")
            if md5 in self.by_md5:
                return self.by_md5[md5]
            content = hashlib.md5(Path(record["path"]).read_bytes()).hexdigest()
            if content in self.by_md5:
                return self.by_md5[content]
            raise LabelProblem("image is not among the scraped posts (neither its name nor its content md5 matches)")
        name = (record.get("md5") or record.get("file") or record.get("image") or "").strip()
        if not name:
            raise LabelProblem("no post_id, md5 or image to identify the post")
        md5 = _md5_from_name(name)
        if md5 not in self.by_md5:
            raise LabelProblem(f"image {name!r} is not among the scraped posts")
        return self.by_md5[md5]


def _md5_from_name(name: str) -> str:
    """md5 from a bare md5, a stored path, a face crop name, or a Label Studio URL (``/data/local-files/?d=...``)."""
    if "://" in name or name.startswith("/data/") or "?" in name:
        parsed = urlparse(name)
        query = parse_qs(parsed.query)
        name = unquote(query["d"][0]) if "d" in query else unquote(parsed.path)
    stem = PurePath(name).stem.lower()
    # Label Studio uploads prefix a random hash: "8f3a9c1e-<original name>"
    return stem.split("-", 1)[1].split("_")[0] if re.fullmatch(r"[0-9a-f]{8}-.+", stem) else stem.split("_")[0]


@dataclass
class _Problem:
    where: str
    kind: str  # unknown_image, unknown_class, conflict
    message: str


def collect(label_files: list[LabelFile], task: str, index: _PostIndex) -> tuple[pd.DataFrame, list[_Problem], dict]:
    rows: list[tuple] = []
    problems: list[_Problem] = []
    per_label_file: dict[str, dict[str, int]] = {}
    for label_file in label_files:
        if label_file.format != "folder" and not label_file.path.is_file():
            raise GanimeError(f"{label_file.path}: label file not found; fix labels.{task} in the config")
        if label_file.format == "folder" and not label_file.path.is_dir():
            raise GanimeError(f"{label_file.path}: label folder not found; fix labels.{task} in the config")
        counts = {"positive": 0, "negative": 0}
        for rec in READERS[label_file.format](label_file.path, task):
            label = parse_label(rec.value, task)
            if label is None:
                shown = rec.value if not isinstance(rec.value, (list, dict)) else json.dumps(rec.value)
                hint = "name class folders" if label_file.format == "folder" else "use"
                problems.append(
                    _Problem(
                        rec.where,
                        "unknown_class",
                        f"label {shown!r} is not a {task} label; {hint} 1/0, yes/no, {task}/not_{task}",
                    )
                )
                continue
            try:
                post = index.find(rec.key)
            except LabelProblem as exc:
                problems.append(_Problem(rec.where, "unknown_image", f"{exc}; fix or remove it"))
                continue
            rows.append((*post, label, rec.where))
            counts["positive" if label else "negative"] += 1
        per_label_file[str(label_file.path)] = counts
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    # The same image labelled twice is fine when the labels agree; a disagreement needs a person.
    for md5, group in table.groupby("md5", sort=False):
        if group["label"].nunique() > 1:
            origins = ", ".join(
                f"{w} ({'1' if v else '0'})" for w, v in zip(group["origin"], group["label"], strict=True)
            )
            problems.append(
                _Problem(
                    group["origin"].iloc[-1],
                    "conflict",
                    f"conflicting {task} labels for image {md5}: {origins}; keep one",
                )
            )
    return table, problems, per_label_file


def _write_problems(path: Path, problems: list[_Problem]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["where", "kind", "message"])
    w.writerows((p.where, p.kind, p.message) for p in problems)
    write_text(path, buf.getvalue())


def run_labels(
    *, posts: Path, label_files: list[str | dict | Path] | None = None, task: str, out: Path, csvs: list[Path] = ()
) -> LabelsSummary:
    """Import every label file for ``task``; fail (listing every problem in ``<out stem>_problems.csv``) or write."""
    specs = [*(label_files or []), *[LabelFile(Path(p), "csv") for p in csvs]]
    if not specs:
        raise GanimeError(f"labels.{task}: no label file given; list at least one file or folder in the config")
    parsed = [s if isinstance(s, LabelFile) else parse_label_file(s) for s in specs]
    out = Path(out)
    index = _PostIndex(read_parquet(posts, ["source", "post_id", "md5"]))
    table, problems, per_label_file = collect(parsed, task, index)
    problems_path = out.with_name(out.stem + "_problems.csv")
    if problems:
        _write_problems(problems_path, problems)
        first = problems[0]
        more = f" ({len(problems)} problems in all, listed in {problems_path})" if len(problems) > 1 else ""
        raise GanimeError(f"{first.where}: {first.message}{more}")
    problems_path.unlink(missing_ok=True)  # a stale list from an earlier failed import would mislead
    if table.empty:
        raise GanimeError(f"labels.{task}: the label files hold no labels ({', '.join(str(s.path) for s in parsed)})")
    table = table.drop_duplicates("md5").reset_index(drop=True)
    positive = int(table["label"].sum())
    write_parquet(out, table)
    summary = LabelsSummary(
        task=task,
        n_labels=len(table),
        positive=positive,
        negative=len(table) - positive,
        files=[str(s.path) for s in parsed],
        classes={task: positive, f"not_{task}": len(table) - positive},
        per_label_file=per_label_file,
    )
    write_json(out.with_name(out.stem + "_counts.json"), summary.to_json())
    log.info(
        "labels %s: %d labels (%d %s, %d not) from %d label file(s)",
        task,
        len(table),
        positive,
        task,
        len(table) - positive,
        len(parsed),
    )
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ganime_steps.labels",
        description=__doc__.split("\n\n")[0],
        epilog=f"Formats: {', '.join(FORMATS)}; detected from the extension/shape unless given as FORMAT=PATH.",
    )
    p.add_argument("--posts", type=Path, required=True, help="posts.parquet of the scrape stage")
    p.add_argument("--task", required=True, help="label task name, e.g. chibi, multi, aesthetic")
    p.add_argument(
        "--label-file",
        nargs="+",
        default=[],
        dest="label_files",
        help="label files: PATH or FORMAT=PATH (a file, or a folder per class)",
    )
    p.add_argument("--csv", type=Path, nargs="+", default=[], dest="csvs", help="plain label CSV file(s)")
    p.add_argument("--out", type=Path, required=True, help="output label table (.parquet)")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_cli(
        build_parser(),
        lambda a: call_with_args(run_labels, a),
        argv,
    )


if __name__ == "__main__":
    raise SystemExit(main())
