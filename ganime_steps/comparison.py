"""The report's answer to the study's question: does stricter cleaning (Model B) make a better GAN than Model A?

Pure functions over what the evaluate and train stages wrote, used by :mod:`ganime_steps.report`:

- :func:`aggregate`: runs grouped by their config name (the seeds of one run), mean ± std over seeds of the
  Fréchet distance and KID against every reference (shared, own training set, gold);
- :func:`study_tables`: the dataset study of each run matrix, datasets as rows and families as columns;
- :func:`verdicts`: every pair of groups with the same family, resolution and feature space but different datasets,
  compared against each reference, saying plainly whether the difference exceeds the spread between seeds;
- :func:`read_curves` / :func:`curve_png`: metric-vs-kimg (``metrics.jsonl``) and loss-vs-kimg (``log.csv``) per run,
  with the best snapshot marked.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

REFERENCE_ORDER = ("shared", "train", "gold")
REFERENCE_TITLES = {"shared": "shared reference", "train": "own training set", "gold": "gold (known clean)"}


def as_float(v: Any) -> float | None:
    """A finite float, or None (missing, non-numeric, NaN or inf)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def metric_values(metrics: dict[str, Any], fd: Any) -> dict[str, float | None]:
    """fd (given: files name it differently), kid_mean, kid_std, precision and recall as finite floats or None."""
    return {"fd": as_float(fd), **{k: as_float(metrics.get(k)) for k in ("kid_mean", "kid_std", "precision", "recall")}}


def run_references(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """NAME -> {fd, kid_mean, kid_std, precision, recall, dataset} from a run's metrics.json (older files: one)."""
    refs = metrics.get("references")
    if not isinstance(refs, dict) or not refs:
        refs = {"shared": metrics}
    out = {}
    for name, m in refs.items():
        if not isinstance(m, dict):
            continue
        fd = m.get("fd", m.get("fid", m.get(m.get("fd_key", ""))))
        data = m.get("reference_data") or ""
        out[name] = {
            **metric_values(m, fd),
            "n_real": m.get("n_real"),
            # results/datasets/<dataset>/pack_<res>.npy -> <dataset>
            "dataset": Path(str(data)).parent.name if data else m.get("dataset"),
        }
    return out


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None with fewer than two values)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per group (config run name): its runs, and per reference the mean ± std over seeds."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r.get("group") or r["run"], []).append(r)
    out = []
    for name, members in groups.items():
        first = members[0]
        refs = {}
        names = [n for n in REFERENCE_ORDER if any(n in m["references"] for m in members)]
        names += sorted({n for m in members for n in m["references"]} - set(names))
        for ref in names:
            per = [m["references"][ref] for m in members if ref in m["references"]]
            fd_mean, fd_std = mean_std([p["fd"] for p in per])
            kid_mean, kid_std = mean_std([p["kid_mean"] for p in per])
            refs[ref] = {
                "fd_mean": fd_mean,
                "fd_std": fd_std,
                "kid_mean": kid_mean,
                "kid_std_seeds": kid_std,
                "kid_std_subsets": per[0]["kid_std"] if len(per) == 1 else None,
                "dataset": per[0]["dataset"],
                "n": len(per),
            }
        out.append(
            {
                "group": name,
                "runs": [m["run"] for m in members],
                "n_seeds": len(members),
                "family": first.get("family"),
                "dataset": first.get("dataset"),
                "resolution": first.get("resolution"),
                "feature_space": first.get("feature_space"),
                "is_fid": all(m.get("is_fid") for m in members),
                "references": refs,
            }
        )
    return out


def verdicts(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each pair of groups differing only in dataset, per reference: which is better, by how much, and whether the
    difference exceeds the seeds' spread (the larger of the two standard deviations)."""
    out = []
    for i, a in enumerate(groups):
        for b in groups[i + 1 :]:
            same = all(a[k] == b[k] for k in ("family", "resolution", "feature_space"))
            if not same or a["dataset"] == b["dataset"]:
                continue
            for ref in REFERENCE_ORDER:
                ra, rb = a["references"].get(ref), b["references"].get(ref)
                if not ra or not rb or ra["fd_mean"] is None or rb["fd_mean"] is None:
                    continue
                if ref != "train" and ra["dataset"] != rb["dataset"]:
                    continue  # measured against different sets: not comparable
                better, worse = (a, b) if ra["fd_mean"] <= rb["fd_mean"] else (b, a)
                diff = abs(ra["fd_mean"] - rb["fd_mean"])
                stds = [s for s in (ra["fd_std"], rb["fd_std"]) if s is not None]
                spread = max(stds) if len(stds) == 2 else None
                if spread is None:
                    meaning = "only one seed on a side: the spread between seeds is unknown, so this is not a result"
                elif diff > spread:
                    meaning = f"larger than the seeds' spread ({spread:.2f})"
                else:
                    meaning = f"within the seeds' spread ({spread:.2f}): no difference shown"
                out.append(
                    {
                        "family": a["family"],
                        "reference": ref,
                        "reference_dataset": ra["dataset"] if ref != "train" else None,
                        "better": better["group"],
                        "better_dataset": better["dataset"],
                        "worse": worse["group"],
                        "worse_dataset": worse["dataset"],
                        "difference": diff,
                        "spread": spread,
                        "significant": spread is not None and diff > spread,
                        "meaning": meaning,
                    }
                )
    return out


def study_tables(groups: list[dict[str, Any]], studies: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """A table per run matrix (``studies``: name -> {reference, groups}): rows are datasets, columns families, each
    cell the mean ± std over seeds of FID and KID against the study's reference (``train``: each run's own training
    set; else a dataset, the runs' shared reference), plus the verdicts between the datasets of each family."""
    by_name = {g["group"]: g for g in groups}
    tables = []
    for study, spec in studies.items():
        ref_key = "train" if spec["reference"] == "train" else "shared"
        members = [by_name[name] for name in spec["groups"] if name in by_name]
        cells: dict[str, dict[str, dict[str, Any]]] = {}
        for g in members:
            x = g["references"].get(ref_key) or {}
            kid_std = x.get("kid_std_seeds") if x.get("kid_std_seeds") is not None else x.get("kid_std_subsets")
            cells.setdefault(g["dataset"], {})[g["family"]] = {
                "group": g["group"],
                "fd_mean": x.get("fd_mean"),
                "fd_std": x.get("fd_std"),
                "kid_mean": x.get("kid_mean"),
                "kid_std": kid_std,
                "n_seeds": g["n_seeds"],
                "reference_dataset": x.get("dataset"),
            }
        tables.append(
            {
                "study": study,
                "reference": spec["reference"],
                "reference_key": ref_key,
                "datasets": list(dict.fromkeys(g["dataset"] for g in members)),
                "families": list(dict.fromkeys(g["family"] for g in members)),
                "cells": cells,
                "is_fid": bool(members) and all(g["is_fid"] for g in members),
                "verdicts": [v for v in verdicts(members) if v["reference"] == ref_key],
                "missing": [name for name in spec["groups"] if name not in by_name],
            }
        )
    return tables


def read_curves(run_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """``metrics.jsonl`` rows (one per snapshot) and ``log.csv`` rows of a run folder; empty lists when absent."""
    metrics, losses = [], []
    jsonl = Path(run_dir) / "metrics.jsonl"
    if jsonl.is_file():
        for line in jsonl.read_text(encoding="utf-8").splitlines():
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a killed job; the rest still draws
                if isinstance(row, dict) and as_float(row.get("kimg")) is not None:
                    metrics.append(row)
    log_csv = Path(run_dir) / "log.csv"
    if log_csv.is_file():
        rows = csv.DictReader(io.StringIO(log_csv.read_text(encoding="utf-8")))
        losses = [r for r in rows if as_float(r.get("kimg"))]
    return {"metrics": metrics, "losses": losses}


def metric_key(rows: list[dict[str, Any]]) -> str | None:
    """The Fréchet key the snapshots carry: 'fid', else the first 'fd_*' key."""
    for row in rows:
        if "fid" in row:
            return "fid"
        for k in row:
            if k.startswith("fd_") or k == "fd":
                return k
    return None


def curve_png(run: str, curves: dict[str, list[dict[str, Any]]]) -> bytes | None:
    """Two panels: the metric against kimg (best snapshot marked) and G/D losses against kimg; None with no data."""
    if not curves["metrics"] and not curves["losses"]:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_m, ax_l) = plt.subplots(1, 2, figsize=(9, 3.2), dpi=90)
    key = metric_key(curves["metrics"])
    if key:
        pts = [(float(r["kimg"]), as_float(r.get(key))) for r in curves["metrics"]]
        pts = [(k, v) for k, v in pts if v is not None]
        if pts:
            ax_m.plot(*zip(*pts, strict=True), marker="o", label=key.upper() if key == "fid" else key)
            best = min(pts, key=lambda p: p[1])
            ax_m.scatter([best[0]], [best[1]], s=140, facecolors="none", edgecolors="red", label="best snapshot")
            ax_m.legend(fontsize=8)
    ax_m.set(xlabel="kimg", ylabel=(key or "metric").upper(), title=f"{run}: metric over training")
    for col, label in (("loss_g", "G loss"), ("loss_d", "D loss")):
        pts = [(float(r["kimg"]), as_float(r.get(col))) for r in curves["losses"]]
        pts = [(k, v) for k, v in pts if v is not None]
        if pts:
            ax_l.plot(*zip(*pts, strict=True), label=label, linewidth=1)
    ax_l.set(xlabel="kimg", ylabel="loss", title="losses")
    if curves["losses"]:
        ax_l.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def best_snapshot(curves: dict[str, list[dict[str, Any]]]) -> dict[str, Any] | None:
    key = metric_key(curves["metrics"])
    scored = [r for r in curves["metrics"] if key and as_float(r.get(key)) is not None]
    if not scored:
        return None
    best = min(scored, key=lambda r: float(r[key]))
    return {"kimg": float(best["kimg"]), "metric": key, "value": float(best[key])}
