"""Ground-truth check (synthetic source only): each dataset filter's precision and recall against the true flags.

The synthetic booru knows what every post really shows (``results/synthetic/truth.parquet``: chibi, multiple, busy,
standing). For every dataset manifest written by ``clean filter`` this stage compares each filter's own verdict
(``hit:<filter>``, independent of the order filters apply in) with the truth column it is meant to catch:

- classifier filters through ``--truth-column TASK=COLUMN`` (default: chibi=chibi, multi=multiple, aesthetic=busy);
- tag rules through a fixed table (``require:solo`` catches ``multiple``, ``require:standing`` catches not
  ``standing``, ``exclude:chibi`` catches ``chibi``, ...). Filters with no truth column are listed without numbers.

It also reports, per dataset, how often each flaw occurs among all candidates and among the kept posts (what
cleaning achieved). Writes ``groundtruth.json`` and ``groundtruth.csv`` (one row per dataset and filter).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ganime_steps.common import GanimeError, parse_assignments, read_parquet, run_cli, write_json, write_text

log = logging.getLogger(__name__)

TRUTH_COLUMNS = ("source", "post_id", "chibi", "multiple", "busy", "standing")
# The synthetic generator's flags each hand-label task asks about (synthetic.LABEL_TRUTH_COLUMN).
DEFAULT_TASK_TRUTH = {"chibi": "chibi", "multi": "multiple", "aesthetic": "busy"}
# Tag rules and the flaw they are meant to remove; "~col" = the post does NOT have col.
TAG_TRUTH = {
    "require:solo": "multiple",
    "require:1girl": "multiple",
    "exclude:multiple_girls": "multiple",
    "exclude:2girls": "multiple",
    "exclude:chibi": "chibi",
    "require:standing": "~standing",
    "exclude:sitting": "~standing",
    "require:white_background": "busy",
    "require:simple_background": "busy",
}
FLAWS = {"chibi": "chibi", "multiple": "multiple", "busy": "busy", "not standing": "~standing"}
CSV_COLUMNS = ["dataset", "filter", "truth", "flagged", "removed", "tp", "fp", "fn", "tn", "precision", "recall", "f1"]


@dataclass
class GroundTruthSummary:
    n_datasets: int
    n_filters_checked: int
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)


def truth_flags(truth: pd.DataFrame, expr: str) -> np.ndarray:
    """The boolean truth column named by ``expr`` (``col`` or ``~col``)."""
    negate, col = expr.startswith("~"), expr.lstrip("~")
    if col not in truth:
        raise GanimeError(f"truth table: no column {col!r}; columns are {', '.join(truth.columns)}")
    values = truth[col].to_numpy(dtype=bool)
    return ~values if negate else values


def precision_recall(flagged: np.ndarray, actual: np.ndarray) -> dict[str, Any]:
    tp = int(np.sum(flagged & actual))
    fp = int(np.sum(flagged & ~actual))
    fn = int(np.sum(~flagged & actual))
    tn = int(np.sum(~flagged & ~actual))
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "precision": tp / (tp + fp) if tp + fp else None,  # None: the filter flagged nothing
        "recall": tp / (tp + fn) if tp + fn else None,  # None: the flaw never occurs
        "f1": 2 * tp / (2 * tp + fp + fn) if tp else (0.0 if fp + fn else None),
    }


def check_dataset(manifest: Path, truth: pd.DataFrame, task_truth: dict[str, str]) -> dict[str, Any]:
    """Per-filter precision/recall and flaw rates before/after cleaning for one dataset manifest."""
    table = read_parquet(manifest, ["source", "post_id", "kept", "removed_by"])
    name = Path(manifest).parent.name
    joined = table.merge(truth, on=["source", "post_id"], how="left", indicator=True)
    unknown = int((joined["_merge"] == "left_only").sum())
    if unknown == len(joined):
        raise GanimeError(
            f"{manifest}: none of its {len(joined)} posts are in the truth table; "
            "the ground-truth check needs a synthetic scrape (scrape.kind: synthetic)"
        )
    if unknown:
        log.warning("%s: %d post(s) missing from the truth table are left out", manifest, unknown)
        joined = joined[joined["_merge"] == "both"].reset_index(drop=True)
    joined[list(TRUTH_COLUMNS[2:])] = joined[list(TRUTH_COLUMNS[2:])].astype(bool)
    filters: dict[str, dict[str, Any]] = {}
    for col in [c for c in joined.columns if c.startswith("hit:")]:
        filt = col.removeprefix("hit:")
        expr = task_truth.get(filt) or TAG_TRUTH.get(filt)
        flagged = joined[col].to_numpy(dtype=bool)
        entry: dict[str, Any] = {
            "truth": expr,
            "flagged": int(flagged.sum()),
            "removed": int((joined["removed_by"] == filt).sum()),
        }
        if expr is not None:
            entry.update(precision_recall(flagged, truth_flags(joined, expr)))
        filters[filt] = entry
    kept = joined["kept"].to_numpy(dtype=bool)
    flaws = {}
    for label, expr in FLAWS.items():
        actual = truth_flags(joined, expr)
        flaws[label] = {
            "all": float(actual.mean()) if len(actual) else None,
            "kept": float(actual[kept].mean()) if kept.any() else None,
        }
    return {"dataset": name, "n_total": len(joined), "n_kept": int(kept.sum()), "filters": filters, "flaws": flaws}


def run_groundtruth(*, truth: Path, manifests: list[Path], out: Path, task_truth: dict[str, str] | None = None):
    """Check every manifest against ``truth``; write ``out/groundtruth.json`` and ``out/groundtruth.csv``."""
    task_truth = {**DEFAULT_TASK_TRUTH, **(task_truth or {})}
    if not manifests:
        raise GanimeError(
            "groundtruth: no dataset manifest given; pass --manifests results/datasets/*/manifest.parquet"
        )
    table = read_parquet(truth, TRUTH_COLUMNS)
    table = table[list(TRUTH_COLUMNS)].drop_duplicates(["source", "post_id"])
    for expr in task_truth.values():
        truth_flags(table, expr)  # an unknown column fails here, before any work
    datasets = {}
    rows = []
    for manifest in manifests:
        result = check_dataset(Path(manifest), table, task_truth)
        datasets[result["dataset"]] = result
        for filt, entry in result["filters"].items():
            rows.append({"dataset": result["dataset"], "filter": filt, **{k: entry.get(k) for k in CSV_COLUMNS[2:]}})
    out = Path(out)
    summary = GroundTruthSummary(len(datasets), sum(1 for r in rows if r["truth"] is not None), datasets)
    write_json(out / "groundtruth.json", summary)
    frame = pd.DataFrame(rows, columns=CSV_COLUMNS)
    write_text(out / "groundtruth.csv", frame.to_csv(index=False, float_format="%.4f", lineterminator="\n"))
    for r in rows:
        if r["truth"] is not None:
            log.info(
                "%s / %s vs %s: precision %s, recall %s",
                r["dataset"],
                r["filter"],
                r["truth"],
                "—" if r["precision"] is None else f"{r['precision']:.3f}",
                "—" if r["recall"] is None else f"{r['recall']:.3f}",
            )
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ganime_steps.groundtruth", description=__doc__.split("\n\n")[0])
    p.add_argument("--truth", type=Path, required=True, help="results/synthetic/truth.parquet")
    p.add_argument("--manifests", type=Path, nargs="+", required=True, help="results/datasets/<name>/manifest.parquet")
    p.add_argument(
        "--truth-column",
        nargs="*",
        default=[],
        help="TASK=COLUMN pairs (default chibi=chibi multi=multiple aesthetic=busy); ~COLUMN negates",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder: groundtruth.json, groundtruth.csv")
    return p


def _handle(a: argparse.Namespace):
    task_truth = parse_assignments(a.truth_column, "--truth-column", "TASK=COLUMN, e.g. multi=multiple")
    return run_groundtruth(truth=a.truth, manifests=a.manifests, out=a.out, task_truth=task_truth)


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), _handle, argv)


if __name__ == "__main__":
    raise SystemExit(main())
