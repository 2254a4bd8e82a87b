"""Stage report: one self-contained HTML page comparing runs, classifiers and dataset yields.

Inputs (DESIGN §2 layout):

- ``results/runs/<run>/metrics.json`` from ``evaluate run`` (the run name is the folder name), with
  ``train_summary.json`` beside it when present (family, dataset, kimg);
- ``results/classifiers/<task>/metrics.json`` with ``pr_curve.png`` / ``confusion.png`` beside it when present;
- ``results/datasets/<name>/summary.json`` with ``dataset``, ``n_total``, ``n_kept``, ``removed_by``;
- ``results/runs/<run>/samples.png`` sample grids;
- ``results/datasets/<name>/removed_<filter>.png``: samples of what each filter removed;
- ``results/groundtruth/groundtruth.json`` (synthetic source only): each filter's precision/recall against the truth;
- ``results/labels/<task>_counts.json`` (label counts per class) and ``results/label_queue/<task>.csv`` (the next
  posts to label).

Outputs under ``--out``: ``index.html`` (images embedded as base64 PNG, no external CSS/JS), ``metrics.csv`` (the run
table) and ``report_summary.json``.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import io
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ganime_steps import comparison
from ganime_steps.common import GanimeError, run_cli, write_json, write_text

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
]
DATASET_KEYS = ("dataset", "n_total", "n_kept", "removed_by")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:1200px;padding:0 1rem;
color:#222;line-height:1.4}
h1{margin-bottom:.2rem}h2{border-bottom:2px solid #ddd;padding-bottom:.2rem;margin-top:2.2rem}
.meta{color:#666;font-size:.9rem}.note{background:#fff6d6;border-left:4px solid #e0b400;padding:.5rem .8rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.92rem}
th,td{border:1px solid #ccc;padding:.3rem .6rem;text-align:right}th{background:#f2f2f2}
td.t,th.t{text-align:left}tr.best td{font-weight:600;background:#eef8ee}
.cards{display:flex;flex-wrap:wrap;gap:1.2rem}.card{border:1px solid #ddd;border-radius:6px;padding:.6rem .8rem}
.card img{max-width:520px;height:auto;display:block}figure{margin:0}figcaption{color:#555;font-size:.9rem}
.grid img{max-width:100%;image-rendering:pixelated}
"""


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


def _first(d: dict[str, Any], *keys: str) -> Any:
    """The first present, non-null key, also looking one level down in 'val'/'test'/'metrics' sections."""
    for scope in (d, d.get("metrics"), d.get("test"), d.get("val")):
        if isinstance(scope, dict):
            for k in keys:
                if scope.get(k) is not None:
                    return scope[k]
    return None


_num = comparison.as_float


def read_run(path: Path) -> dict[str, Any]:
    """One row of the run table from ``<run>/metrics.json`` (+ ``train_summary.json`` beside it)."""
    m = _read_json(path, "--run-metrics")
    space = m.get("feature_space")
    if not space:
        raise GanimeError(f"--run-metrics {path}: no 'feature_space' key; rerun `python -m ganime_steps.evaluate run`")
    is_fid = bool(m.get("is_fid", False))
    fd = m.get("fd", m.get("fid") if is_fid else m.get(m.get("fd_key", "")))
    train = path.parent / "train_summary.json"
    t = _read_json(train, "train summary") if train.is_file() else {}
    dataset = t.get("dataset")
    if dataset is None and t.get("data"):
        dataset = Path(str(t["data"])).parent.name  # train records results/datasets/<dataset>/pack_<res>.npy
    kimg = _num(t.get("kimg"))
    if kimg is None and _num(t.get("images_seen")) is not None:
        kimg = round(_num(t["images_seen"]) / 1000.0, 1)  # images shown to D, as trained so far
    return {
        "run": path.parent.name,
        "group": path.parent.name,  # the config run whose seed this is; set from --groups
        "family": t.get("family"),
        "dataset": dataset,
        "resolution": t.get("resolution"),
        "references": comparison.run_references(m),
        "kimg": kimg if kimg is not None else _num(t.get("kimg_target")),
        # runs are comparable only against the same reference set (e.g. A and B runs vs dataset A, face runs vs faces)
        "reference": Path(str(m["reference_data"])).parent.name if m.get("reference_data") else None,
        "feature_space": str(space),
        "is_fid": is_fid,
        "fd": _num(fd),
        "kid_mean": _num(m.get("kid_mean")),
        "kid_std": _num(m.get("kid_std")),
        "precision": _num(m.get("precision")),
        "recall": _num(m.get("recall")),
        "n_fake": m.get("n_fake"),
        "n_real": m.get("n_real"),
    }


def _confusion(m: dict[str, Any]) -> list[list[int]] | None:
    """2x2 [[tn, fp], [fn, tp]] (rows: true class, columns: predicted) from a list or a tn/fp/fn/tp dict."""
    c = _first(m, "confusion_matrix", "confusion")
    if isinstance(c, dict) and all(k in c for k in ("tn", "fp", "fn", "tp")):
        return [[c["tn"], c["fp"]], [c["fn"], c["tp"]]]
    if isinstance(c, list) and c and all(isinstance(r, list) for r in c):
        return c
    if all(_first(m, k) is not None for k in ("tn", "fp", "fn", "tp")):
        return [[_first(m, "tn"), _first(m, "fp")], [_first(m, "fn"), _first(m, "tp")]]
    return None


CLASSIFIER_NUMBERS = ("precision", "recall", "f1", "roc_auc")


def _classifier_split(block: dict[str, Any]) -> dict[str, Any]:
    """One split's numbers from a classifier metrics.json block (or a flat, pre-test-split file)."""
    return {
        "n": block.get("n"),
        "precision": _num(block.get("precision")),
        "recall": _num(block.get("recall")),
        "f1": _num(block["f1"] if block.get("f1") is not None else block.get("f1_score")),
        "roc_auc": _num(block["roc_auc"] if block.get("roc_auc") is not None else block.get("auc")),
        "confusion": _confusion(block),
    }


def read_classifier(path: Path) -> dict[str, Any]:
    """Headline numbers from the held-out test split; the validation split (which chose the epoch and the
    threshold) is kept beside them. A file from before test splits (flat keys) reads as validation only."""
    m = _read_json(path, "--classifier-metrics")
    classes = m.get("classes")
    task = str(m.get("task") or path.parent.name)
    if not isinstance(classes, list):
        classes = [f"not_{task}", task]  # the classifier stage's binary convention (model.pt 'classes')
    if isinstance(m.get("val"), dict) or "test" in m:
        val = _classifier_split(m["val"]) if isinstance(m.get("val"), dict) else None
        test = _classifier_split(m["test"]) if isinstance(m.get("test"), dict) else None
        note = m.get("test_note") or (None if test else "no test split in metrics.json")
    else:
        val, test = _classifier_split(m), None
        note = "metrics.json has no test split (written before held-out test splits); rerun classifier train"
    head = test or val or _classifier_split({})
    if val is not None and val["n"] is None:
        val["n"] = m.get("n_val")
    return {
        "task": task,
        "arch": m.get("arch"),
        "headline": "test" if test else "validation",
        **{k: head[k] for k in (*CLASSIFIER_NUMBERS, "confusion")},
        "threshold": _num(_first(m, "threshold")),
        "sizes": {k: m.get(f"n_{k}") for k in ("train", "val", "test")},
        "test": test,
        "val": val,
        "test_note": str(note) if note else None,
        "classes": [str(c) for c in classes],
        "images": {name: path.parent / f"{name}.png" for name in ("pr_curve", "confusion")},
    }


def read_dataset(path: Path) -> dict[str, Any]:
    s = _read_json(path, "--dataset-summaries")
    missing = [k for k in DATASET_KEYS if k not in s]
    if missing:
        raise GanimeError(f"--dataset-summaries {path}: missing key(s) {', '.join(missing)}; rerun the clean stage")
    if not isinstance(s["removed_by"], dict):
        raise GanimeError(f"--dataset-summaries {path}: 'removed_by' must map filter name → count")
    total, kept = int(s["n_total"]), int(s["n_kept"])
    return {
        "dataset": str(s["dataset"]),
        "n_total": total,
        "n_kept": kept,
        "kept_pct": 100.0 * kept / total if total else None,
        "removed_by": {str(k): int(v) for k, v in s["removed_by"].items()},
        "flagged_by": {str(k): int(v) for k, v in (s.get("flagged_by") or {}).items()},
        "thresholds": {str(k): _num(v) for k, v in (s.get("thresholds") or {}).items()},
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
    c = _read_json(path, "--label-counts")
    if "task" not in c or "positive" not in c or "negative" not in c:
        raise GanimeError(f"--label-counts {path}: needs task, positive, negative; rerun the labels stage")
    return {
        "task": str(c["task"]),
        "positive": int(c["positive"]),
        "negative": int(c["negative"]),
        "sources": len(c.get("per_source") or c.get("files") or []),
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
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


# ----------------------------------------------------------------------------------------------------------------------
# rendering


def _e(v: Any) -> str:
    return html.escape("—" if v is None else str(v))


def _f(v: float | None, digits: int) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _fd_label(row: dict[str, Any]) -> str:
    return "FID" if row["is_fid"] else f"FD in {row['feature_space']} space"


def _runs_section(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>No runs evaluated.</p>"
    spaces = sorted({r["feature_space"] for r in rows})
    # Lowest Fréchet distance per (feature space, reference set): only those numbers are comparable.
    best = {}
    for group in sorted({(r["feature_space"], r["reference"]) for r in rows}, key=str):
        scored = [r for r in rows if (r["feature_space"], r["reference"]) == group and r["fd"] is not None]
        if len(scored) > 1:
            best[group] = min(scored, key=lambda r: r["fd"])["run"]
    parts = []
    if len(spaces) > 1:
        parts.append(
            '<p class="note">These runs were evaluated in different feature spaces ('
            + ", ".join(_e(s) for s in spaces)
            + "); compare Fréchet distances only within one space.</p>"
        )
    if not any(r["is_fid"] for r in rows):
        parts.append(
            '<p class="note">No run was evaluated with the standard Inception-v3 weights: the Fréchet distances '
            "below are in a classifier's feature space and are <b>not FID</b>.</p>"
        )
    head = ["run", "family", "dataset", "kimg", "reference", "feature space", "Fréchet distance", "KID (mean ± std)"]
    head += ["precision", "recall", "n fake / real"]
    out = [
        "<table><tr>"
        + "".join(f'<th class="t">{_e(h)}</th>' if i < 6 else f"<th>{_e(h)}</th>" for i, h in enumerate(head))
        + "</tr>"
    ]
    for r in rows:
        kid = "—" if r["kid_mean"] is None else f"{r['kid_mean']:.5f} ± {_f(r['kid_std'], 5)}"
        cls = ' class="best"' if best.get((r["feature_space"], r["reference"])) == r["run"] else ""
        cells = [
            f'<td class="t">{_e(r["run"])}</td>',
            f'<td class="t">{_e(r["family"])}</td>',
            f'<td class="t">{_e(r["dataset"])}</td>',
            f'<td class="t">{_e(r["kimg"])}</td>',
            f'<td class="t">{_e(r["reference"])}</td>',
            f'<td class="t">{_e(r["feature_space"])}</td>',
            f'<td title="{_e(_fd_label(r))}">{_e(_f(r["fd"], 2))} <small>{"FID" if r["is_fid"] else "FD"}</small></td>',
            f"<td>{_e(kid)}</td>",
            f"<td>{_e(_f(r['precision'], 3))}</td>",
            f"<td>{_e(_f(r['recall'], 3))}</td>",
            f"<td>{_e(r['n_fake'])} / {_e(r['n_real'])}</td>",
        ]
        out.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    out.append("</table>")
    parts.append("\n".join(out))
    parts.append(
        '<p class="meta">Lower Fréchet distance and KID are better; precision (fidelity) and recall (coverage) '
        "follow Kynkäänniemi et al. 2019 with k = 3. Numbers compare only within one reference set and feature space; "
        "the best run of each such group is highlighted.</p>"
    )
    return "\n".join(parts)


def _confusion_table(c: list[list[Any]], classes: list[str] | None) -> str:
    names = classes if classes and len(classes) == len(c) else [str(i) for i in range(len(c))]
    out = ['<table><tr><th class="t">true \\ predicted</th>' + "".join(f"<th>{_e(n)}</th>" for n in names) + "</tr>"]
    for name, row in zip(names, c, strict=False):
        out.append(f'<tr><th class="t">{_e(name)}</th>' + "".join(f"<td>{_e(v)}</td>" for v in row) + "</tr>")
    return "".join(out) + "</table>"


def _classifiers_section(items: list[dict[str, Any]], counts: dict[str, dict[str, Any]] | None = None) -> str:
    if not items:
        return "<p>No classifier metrics given.</p>"
    counts = counts or {}
    head = ["task", "arch", "hand labels (pos / neg)", "train / val / test posts", "metrics on"]
    head += ["precision", "recall", "F1", "ROC-AUC", "threshold", "validation F1 (used for epoch and threshold)"]
    rows = [
        "<table><tr>"
        + "".join(f'<th class="t">{h}</th>' if i < 2 else f"<th>{h}</th>" for i, h in enumerate(head))
        + "</tr>"
    ]
    for c in items:
        n = counts.get(c["task"])
        labelled = "—" if n is None else f"{n['positive']} / {n['negative']}"
        sizes = " / ".join("—" if c["sizes"][k] is None else str(c["sizes"][k]) for k in ("train", "val", "test"))
        split = "test (held out)" if c["headline"] == "test" else "validation only: no test split"
        val_f1 = c["val"]["f1"] if c["val"] else None
        rows.append(
            f'<tr><td class="t">{_e(c["task"])}</td><td class="t">{_e(c["arch"])}</td><td>{_e(labelled)}</td>'
            f"<td>{_e(sizes)}</td><td>{_e(split)}</td>"
            + "".join(f"<td>{_e(_f(c[k], 3))}</td>" for k in (*CLASSIFIER_NUMBERS, "threshold"))
            + f"<td>{_e(_f(val_f1, 3))}</td></tr>"
        )
    rows.append("</table>")
    notes = [f"<li>{_e(c['task'])}: {_e(c['test_note'])}</li>" for c in items if c["headline"] != "test"]
    cards = []
    for c in items:
        body = [f"<h3>{_e(c['task'])}</h3>"]
        for name, block in (("test (held out)", c["test"]), ("validation (used for epoch and threshold)", c["val"])):
            if block and block["confusion"]:
                size = "" if block["n"] is None else f", n={block['n']}"
                table = _confusion_table(block["confusion"], c["classes"])
                body.append(f'<p class="meta">{_e(name + size)}</p>{table}')
        for name, img in c["images"].items():
            if img.is_file():
                uri = png_data_uri(img, "classifier figure")
                alt = _e(f"{c['task']} {name}")
                body.append(f'<figure><img src="{uri}" alt="{alt}"><figcaption>{_e(name)}</figcaption></figure>')
        cards.append('<div class="card">' + "\n".join(body) + "</div>")
    return (
        "\n".join(rows)
        + '\n<p class="meta">Precision, recall, F1, ROC-AUC and the confusion matrix are on the held-out test posts, '
        "which neither early stopping nor the threshold choice saw, at the threshold chosen on the validation posts; "
        "ROC-AUC does not depend on the threshold. Validation F1 is optimistic: those posts picked the epoch and the "
        "threshold. Posts sharing an image (md5) are always on one side of each split.</p>"
        + (f'\n<p class="meta">Without a test split:</p><ul>{"".join(notes)}</ul>' if notes else "")
        + '\n<div class="cards">'
        + "\n".join(cards)
        + "</div>"
    )


def _datasets_section(items: list[dict[str, Any]]) -> str:
    if not items:
        return "<p>No dataset summaries given.</p>"
    filters = sorted({f for d in items for f in d["removed_by"]})
    head = '<tr><th class="t">dataset</th><th>total</th><th>kept</th><th>kept %</th>'
    head += "".join(f"<th>removed by {_e(f)}</th>" for f in filters) + "</tr>"
    rows = ["<table>" + head]
    for d in items:
        removed = []
        for f in filters:
            n = d["removed_by"].get(f)
            pct = f" ({100.0 * n / d['n_total']:.1f}%)" if n is not None and d["n_total"] else ""
            removed.append(f"<td>{_e(n)}{_e(pct)}</td>")
        rows.append(
            f'<tr><td class="t">{_e(d["dataset"])}</td><td>{d["n_total"]}</td><td>{d["n_kept"]}</td>'
            f"<td>{_e(_f(d['kept_pct'], 1))}</td>" + "".join(removed) + "</tr>"
        )
    rows.append("</table>")
    rows.append(
        '<p class="meta">Filters apply in order; each count is the images that filter removed first. '
        "Every removed image, with the filter and score that removed it, is listed in "
        "<code>results/datasets/&lt;dataset&gt;/removed.csv</code>.</p>"
    )
    for d in items:
        if not d["removed_grids"]:
            continue
        rows.append(f"<h3>{_e(d['dataset'])}: what each filter removed</h3>")
        cards = []
        for f, uri in d["removed_grids"].items():
            thr = d["thresholds"].get(f)
            how = f", score ≥ {thr:.3f}" if thr is not None else ""
            caption = f"removed by {f}: {d['removed_by'].get(f, 0)} of {d['n_total']}{how}"
            cards.append(
                f'<div class="card grid"><figure><img src="{uri}" alt="{_e(d["dataset"])} removed by {_e(f)}">'
                f"<figcaption>{_e(caption)}</figcaption></figure></div>"
            )
        rows.append('<div class="cards">' + "\n".join(cards) + "</div>")
    return "\n".join(rows)


def _groundtruth_section(gt: dict[str, Any] | None) -> str:
    if not gt:
        return ""
    head = ["dataset", "filter", "true flag", "flagged", "removed", "precision", "recall", "F1"]
    out = [
        '<p class="meta">The synthetic booru knows what every post shows. Each filter\'s own verdict (whatever '
        "the filter order) against the flag it is meant to catch; ~ means “not”.</p>",
        "<table><tr>"
        + "".join(f'<th class="t">{h}</th>' if i < 3 else f"<th>{h}</th>" for i, h in enumerate(head))
        + "</tr>",
    ]
    for name, d in (gt.get("datasets") or {}).items():
        for f, e in (d.get("filters") or {}).items():
            nums = "".join(f"<td>{_e(_f(_num(e.get(k)), 3))}</td>" for k in ("precision", "recall", "f1"))
            out.append(
                f'<tr><td class="t">{_e(name)}</td><td class="t">{_e(f)}</td><td class="t">{_e(e.get("truth"))}</td>'
                f"<td>{_e(e.get('flagged'))}</td><td>{_e(e.get('removed'))}</td>{nums}</tr>"
            )
    out.append("</table>")
    flaws = sorted({k for d in (gt.get("datasets") or {}).values() for k in (d.get("flaws") or {})})
    if flaws:
        out.append(
            '<table><tr><th class="t">dataset</th>' + "".join(f"<th>{_e(k)}: all → kept</th>" for k in flaws) + "</tr>"
        )
        for name, d in gt["datasets"].items():
            cells = []
            for k in flaws:
                v = (d.get("flaws") or {}).get(k) or {}
                a, b = _num(v.get("all")), _num(v.get("kept"))
                before, after = ("—" if x is None else f"{100 * x:.1f}%" for x in (a, b))
                cells.append(f"<td>{_e(before)} → {_e(after)}</td>")
            out.append(f'<tr><td class="t">{_e(name)}</td>' + "".join(cells) + "</tr>")
        out.append("</table>")
    return "\n".join(out)


def _queue_section(queues: list[dict[str, Any]]) -> str:
    if not queues:
        return ""
    out = [
        '<p class="meta">The unlabelled posts each classifier is least sure about (scores closest to its threshold), '
        "exported as Label Studio tasks: label them next, import the export under <code>labels</code>, rerun.</p>",
        '<table><tr><th class="t">task</th><th>queued</th><th>threshold</th><th>score range</th>'
        '<th class="t">Label Studio tasks</th></tr>',
    ]
    for q in queues:
        rng = "—" if q["score_min"] is None else f"{q['score_min']:.3f} – {q['score_max']:.3f}"
        out.append(
            f'<tr><td class="t">{_e(q["task"])}</td><td>{q["n"]}</td><td>{_e(_f(q["threshold"], 3))}</td>'
            f'<td>{_e(rng)}</td><td class="t"><code>{_e(q["json"])}</code></td></tr>'
        )
    out.append("</table>")
    return "\n".join(out)


def _pm(mean: float | None, std: float | None, digits: int) -> str:
    if mean is None:
        return "—"
    return f"{mean:.{digits}f}" + ("" if std is None else f" ± {std:.{digits}f}")


def _study_section(groups: list[dict[str, Any]], verdicts: list[dict[str, Any]], data: list[dict[str, Any]]) -> str:
    """The study's question first: which dataset makes the better GAN, per reference, beside the seeds' spread."""
    if not groups:
        return "<p>No runs evaluated.</p>"
    parts = []
    if not all(g["is_fid"] for g in groups):
        parts.append(
            '<p class="note">Some runs were measured without the standard Inception weights: their numbers are '
            "Fréchet distances in another feature space, <b>never FID</b>.</p>"
        )
    if verdicts:
        items = []
        for v in verdicts:
            against = (
                "each against its own training set"
                if v["reference"] == "train"
                else f"against {comparison.REFERENCE_TITLES[v['reference']]} <b>{_e(v['reference_dataset'])}</b>"
            )
            items.append(
                f"<li>{_e(v['family'])}, {against}: <b>{_e(v['better_dataset'])}</b> ({_e(v['better'])}) beats "
                f"{_e(v['worse_dataset'])} ({_e(v['worse'])}) by {v['difference']:.2f}; "
                f"that is {_e(v['meaning'])}.</li>"
            )
        shown = [v for v in verdicts if v["significant"]]
        gold = [v for v in shown if v["reference"] == "gold"]
        if gold:
            lead = "Against the gold set, " + "; ".join(
                f"{_e(v['better_dataset'])} gives the better {_e(v['family'])} by more than the seeds' spread"
                for v in gold
            )
        elif shown:
            lead = "A difference larger than the seeds' spread shows against some references (below), not against gold"
        else:
            lead = (
                "These runs do not show that one dataset makes a better GAN: every difference is within the spread "
                "between seeds, or a side has one seed only. Tiny CPU runs are not expected to reproduce the study"
            )
        parts.append(f'<p class="note">{lead}.</p><ul>' + "".join(items) + "</ul>")
    else:
        parts.append(
            "<p>No two run groups differ only in their dataset (same family, resolution and feature space), so "
            "no dataset comparison can be made.</p>"
        )
    refs = [r for r in comparison.REFERENCE_ORDER if any(r in g["references"] for g in groups)]
    head = "".join(f"<th>{_e(comparison.REFERENCE_TITLES[r])}<br><small>FID · KID×10³</small></th>" for r in refs)
    rows = []
    for g in groups:
        cells = []
        for r in refs:
            x = g["references"].get(r)
            if not x:
                cells.append("<td>—</td>")
                continue
            kid_std = x["kid_std_seeds"] if x["kid_std_seeds"] is not None else x["kid_std_subsets"]
            kid = _pm(*(None if v is None else v * 1e3 for v in (x["kid_mean"], kid_std)), 2)
            cells.append(
                f'<td title="vs {_e(x["dataset"])}">{_e(_pm(x["fd_mean"], x["fd_std"], 2))} · {_e(kid)}'
                f"<br><small>vs {_e(x['dataset'])}</small></td>"
            )
        rows.append(
            f'<tr><td class="t">{_e(g["group"])}</td><td class="t">{_e(g["family"])}</td>'
            f'<td class="t">{_e(g["dataset"])}</td><td>{_e(g["n_seeds"])}</td>' + "".join(cells) + "</tr>"
        )
    parts.append(
        '<table><tr><th class="t">run</th><th class="t">family</th><th class="t">dataset</th><th>seeds</th>'
        + head
        + "</tr>"
        + "".join(rows)
        + "</table>"
    )
    parts.append(
        '<p class="meta">Mean ± standard deviation over seeds (one seed: KID ± its spread over subsets). Lower is '
        "better. Gold is the set of posts known to be clean on every cleaning task (hand labels, or the synthetic "
        "booru's truth); gold sets are small, so read KID beside FID.</p>"
    )
    if data:
        drows = "".join(
            f'<tr><td class="t">{_e(d["dataset"])}</td><td class="t">{_e(d["gold"])}</td>'
            f"<td>{_e(d['resolution'])}</td><td>{_e(_f(d['fd'], 2))}</td>"
            f"<td>{_e(_pm(*(None if v is None else v * 1e3 for v in (d['kid_mean'], d['kid_std'])), 2))}</td>"
            f"<td>{_e(d['n_a'])} / {_e(d['n_b'])}</td></tr>"
            for d in data
        )
        parts.append(
            "<h3>Data FID: each dataset against gold, no GAN</h3>"
            '<table><tr><th class="t">dataset</th><th class="t">gold set</th><th>px</th><th>FID</th>'
            "<th>KID×10³</th><th>n dataset / gold</th></tr>" + drows + "</table>"
            '<p class="meta">What the cleaning alone did: a dataset closer to gold has fewer of the flaws the '
            "cleaning targets. Gold posts are part of every dataset that keeps them, which lowers these numbers.</p>"
        )
    return "\n".join(parts)


def _dataset_study_section(table: dict[str, Any]) -> str:
    """One run matrix: datasets as rows, families as columns, FID · KID over seeds against the study's reference."""
    if table["reference"] == "train":
        against = "each run against its own training set (the seeds' protocol: how well a GAN fits its data)"
    else:
        against = f"every run against dataset <b>{_e(table['reference'])}</b>"
    head = "".join(f"<th>{_e(f)}<br><small>FID · KID×10³</small></th>" for f in table["families"])
    rows = []
    for ds in table["datasets"]:
        cells = []
        for fam in table["families"]:
            c = table["cells"].get(ds, {}).get(fam)
            if not c or c["fd_mean"] is None:
                cells.append("<td>—</td>")
                continue
            kid = _pm(*(None if v is None else v * 1e3 for v in (c["kid_mean"], c["kid_std"])), 2)
            cells.append(
                f'<td title="{_e(c["group"])}">{_e(_pm(c["fd_mean"], c["fd_std"], 2))} · {_e(kid)}'
                f"<br><small>{_e(c['n_seeds'])} seed(s)</small></td>"
            )
        rows.append(f'<tr><td class="t">{_e(ds)}</td>' + "".join(cells) + "</tr>")
    parts = [
        f"<p>Measured {against}. {'FID' if table['is_fid'] else 'Fréchet distance (not FID)'} "
        "mean ± standard deviation over seeds (one seed: KID ± its spread over subsets); lower is better.</p>",
        '<table><tr><th class="t">dataset</th>' + head + "</tr>" + "".join(rows) + "</table>",
    ]
    if table["verdicts"]:
        parts.append(
            "<ul>"
            + "".join(
                f"<li>{_e(v['family'])}: <b>{_e(v['better_dataset'])}</b> beats {_e(v['worse_dataset'])} by "
                f"{v['difference']:.2f}; that is {_e(v['meaning'])}.</li>"
                for v in table["verdicts"]
            )
            + "</ul>"
        )
    if table["missing"]:
        parts.append(f'<p class="note">Not evaluated: {_e(", ".join(table["missing"]))}.</p>')
    return "\n".join(parts)


def _curves_section(curves: list[tuple[str, str, dict[str, Any] | None]]) -> str:
    if not curves:
        return "<p>No training curves (set evaluation.metric_samples above 0 for metric snapshots).</p>"
    cards = []
    for run, uri, best in curves:
        cap = (
            run
            if best is None
            else f"{run}: best snapshot at {best['kimg']:g} kimg ({best['metric']} {best['value']:.2f})"
        )
        cards.append(
            f'<div class="card"><figure><img src="{uri}" alt="curves of {_e(run)}"><figcaption>{_e(cap)}'
            "</figcaption></figure></div>"
        )
    return '<div class="cards">' + "\n".join(cards) + "</div>"


def read_data_fid(path: Path) -> dict[str, Any]:
    """One row of the data-FID table from ``results/evaluation/data_<dataset>_<res>.json``."""
    m = _read_json(path, "--data-fid")
    stem = path.stem.removeprefix("data_")
    dataset, _, res = stem.rpartition("_")
    fd = m.get("fd", m.get("fid", m.get(m.get("fd_key", ""))))
    gold = m.get("b") or m.get("reference_b") or m.get("b_data") or ""
    return {
        "dataset": dataset or stem,
        "resolution": res,
        "gold": Path(str(gold)).stem.removeprefix("reference_").rsplit("_", 1)[0] if gold else "gold",
        "fd": _num(fd),
        "kid_mean": _num(m.get("kid_mean")),
        "kid_std": _num(m.get("kid_std")),
        "n_a": m.get("n_a", m.get("n_fake")),
        "n_b": m.get("n_b", m.get("n_real")),
        "is_fid": bool(m.get("is_fid")),
    }


def _grids_section(grids: list[tuple[str, str]]) -> str:
    if not grids:
        return "<p>No sample grids given.</p>"
    cards = [
        f'<div class="card grid"><figure><img src="{uri}" alt="samples of {_e(run)}">'
        f"<figcaption>{_e(run)}</figcaption></figure></div>"
        for run, uri in grids
    ]
    return '<div class="cards">' + "\n".join(cards) + "</div>"


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
) -> str:
    groups = comparison.aggregate(runs)
    gt = _groundtruth_section(groundtruth)
    queue = _queue_section(list(queues))
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
            f"<h1>{_e(title)}</h1>",
            f'<p class="meta">Generated {_e(when)} by ganime_steps.report.</p>',
            "<h2>Does stricter cleaning make a better GAN?</h2>",
            _study_section(groups, comparison.verdicts(groups), list(data_fid)),
            *(
                part
                for table in studies
                for part in (f"<h2>Dataset study: {_e(table['study'])}</h2>", _dataset_study_section(table))
            ),
            "<h2>Generative models</h2>",
            _runs_section(runs),
            "<h2>Training curves</h2>",
            _curves_section(list(curves)),
            "<h2>Sample grids</h2>",
            _grids_section(grids),
            *(
                [
                    "<h2>Latent directions (style studio)</h2>",
                    '<p class="meta">Each row moves one direction from the same seed: principal components of the '
                    "sampled latents (GANSpace) and one boundary per cleaning classifier (InterFaceGAN). Explore them "
                    "with <code>python -m ganime_steps.studio --generator results/runs/&lt;run&gt;/generator.pt</code>"
                    ".</p>",
                    _grids_section(list(directions)),
                ]
                if directions
                else []
            ),
            "<h2>Cleaning classifiers</h2>",
            _classifiers_section(classifiers, label_counts),
            "<h2>Dataset yields</h2>",
            _datasets_section(datasets),
            *(["<h2>Filters against the ground truth</h2>", gt] if gt else []),
            *(["<h2>Label queue</h2>", queue] if queue else []),
            "</body></html>",
            "",
        ]
    )


# ----------------------------------------------------------------------------------------------------------------------
# stage


def run_report(
    *,
    run_metrics: list[Path],
    classifier_metrics: list[Path],
    dataset_summaries: list[Path],
    sample_grids: list[Path],
    out: Path,
    title: str,
    removed_grids: list[Path] = (),
    groundtruth: Path | None = None,
    label_counts: list[Path] = (),
    label_queues: list[Path] = (),
    groups: dict[str, str] | None = None,
    data_fid: list[Path] = (),
    directions: list[Path] = (),
    studies: dict[str, str] | None = None,
    study_groups: dict[str, str] | None = None,
) -> ReportSummary:
    """Read every input (failing on the first missing one), then write index.html, metrics.csv, report_summary.json.

    ``groups``: run -> config run name (the seeds of one run share it); ``data_fid``: data-FID JSON files;
    ``studies``: run matrix -> its reference (``train`` or a dataset); ``study_groups``: config run -> its matrix."""
    runs = [read_run(Path(p)) for p in run_metrics]
    for r in runs:
        r["group"] = (groups or {}).get(r["run"], r["run"])
    study_specs = {
        study: {"reference": ref, "groups": [g for g, s in (study_groups or {}).items() if s == study]}
        for study, ref in (studies or {}).items()
    }
    tables = comparison.study_tables(comparison.aggregate(runs), study_specs)
    data_rows = [read_data_fid(Path(p)) for p in data_fid]
    direction_figs = [(Path(p).parent.name, png_data_uri(Path(p), "--directions")) for p in directions]
    curves = []
    for p in run_metrics:
        c = comparison.read_curves(Path(p).parent)
        png = comparison.curve_png(Path(p).parent.name, c)
        if png is not None:
            uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
            curves.append((Path(p).parent.name, uri, comparison.best_snapshot(c)))
    classifiers = [read_classifier(Path(p)) for p in classifier_metrics]
    datasets = [read_dataset(Path(p)) for p in dataset_summaries]
    grids = [(Path(p).parent.name, png_data_uri(Path(p), "--sample-grids")) for p in sample_grids]
    n_removed = attach_removed_grids(datasets, list(removed_grids))
    gt = _read_json(Path(groundtruth), "--groundtruth") if groundtruth else None
    counts = {c["task"]: c for c in (read_label_counts(Path(p)) for p in label_counts)}
    queues = [read_label_queue(Path(p)) for p in label_queues]

    out = Path(out)
    page = render_html(
        title,
        runs,
        classifiers,
        datasets,
        grids,
        label_counts=counts,
        groundtruth=gt,
        queues=queues,
        data_fid=data_rows,
        curves=curves,
        directions=direction_figs,
        studies=tables,
    )
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=RUN_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if r[k] is None else r[k]) for k in RUN_COLUMNS} for r in runs)
    spaces = sorted({r["feature_space"] for r in runs})
    summary = ReportSummary(
        out,
        out / "index.html",
        out / "metrics.csv",
        len(runs),
        len(classifiers),
        len(datasets),
        len(grids),
        spaces,
        n_removed,
        gt is not None,
    )
    write_text(out / "index.html", page)
    write_text(out / "metrics.csv", buf.getvalue())
    write_json(
        out / "report_summary.json",
        {
            "title": title,
            "runs": runs,
            "groups": comparison.aggregate(runs),
            "verdicts": comparison.verdicts(comparison.aggregate(runs)),
            "data_fid": data_rows,
            "studies": tables,
            "best_snapshots": {run: best for run, _, best in curves},
            "classifiers": [{k: v for k, v in c.items() if k != "images"} for c in classifiers],
            "datasets": [{k: v for k, v in d.items() if k != "removed_grids"} for d in datasets],
            "removed_grids": [str(p) for p in removed_grids],
            "groundtruth": gt,
            "label_counts": counts,
            "label_queues": queues,
            "sample_grids": [str(p) for p in sample_grids],
            "feature_spaces": spaces,
            "comparable": len(spaces) <= 1,
            "any_fid": any(r["is_fid"] for r in runs),
        },
    )
    log.info(
        "report: %d runs, %d classifiers, %d datasets, %d grids → %s",
        *(len(x) for x in (runs, classifiers, datasets, grids)),
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
    p.add_argument("--title", default="ganime report", help="page title")
    p.add_argument(
        "--out", type=Path, required=True, help="output folder: index.html, metrics.csv, report_summary.json"
    )
    return p


def _assignments(items: list[str], flag: str = "--groups", example: str = "RUN=GROUP, e.g. dcgan_A_s1=dcgan_A"):
    pairs = [item.partition("=") for item in items]
    bad = [item for item, (k, sep, v) in zip(items, pairs, strict=True) if not (k and sep and v)]
    if bad:
        raise GanimeError(f"{flag} {bad[0]!r}: expected {example}")
    return {k: v for k, _, v in pairs}


def main(argv: list[str] | None = None) -> int:
    return run_cli(
        build_parser(),
        lambda a: run_report(
            run_metrics=a.run_metrics,
            classifier_metrics=a.classifier_metrics,
            dataset_summaries=a.dataset_summaries,
            sample_grids=a.sample_grids,
            out=a.out,
            title=a.title,
            removed_grids=a.removed_grids,
            groundtruth=a.groundtruth,
            label_counts=a.label_counts,
            label_queues=a.label_queues,
            groups=_assignments(a.groups),
            data_fid=a.data_fid,
            directions=a.directions,
            studies=_assignments(a.studies, "--studies", "STUDY=REFERENCE, e.g. faces=train"),
            study_groups=_assignments(a.study_groups, "--study-groups", "GROUP=STUDY, e.g. dragan_faces=faces"),
        ),
        argv,
    )


if __name__ == "__main__":
    raise SystemExit(main())
