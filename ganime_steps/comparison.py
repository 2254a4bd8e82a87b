"""The report's answer to the study's question: does stricter cleaning (Model B) make a better GAN than Model A?

Pure functions over what the evaluate and train stages wrote, used by :mod:`ganime_steps.report`:

- :func:`aggregate`: runs grouped by their config name (the seeds of one run), per reference (shared, own training
  set, gold) the seeds' Fréchet distances and KIDs, their mean ± std, and each run's within-run uncertainty
  (bootstrap intervals, FID extrapolated to infinite N) where evaluate recorded it;
- :func:`verdicts`: every pair of groups with the same family, resolution, feature space and N but different datasets,
  compared against each reference by Welch's t-test over seeds (:func:`welch`), Holm-corrected over every comparison
  of the report (:func:`holm`); own-training-set comparisons across datasets get numbers only, never a verdict;
- :func:`study_tables`: the dataset study of each run matrix, datasets as rows and families as columns;
- :func:`read_curves` / :func:`curve_png`: metric-vs-kimg (``metrics.jsonl``) and loss-vs-kimg (``log.csv``) per run,
  with the best snapshot marked.

Also a CLI for numbers from anywhere (no torch): ``python -m ganime_steps.comparison --a 312.1 298.4 305.0 --b 290.2
301.7 288.9`` prints one JSON object: mean(b) - mean(a), its interval, Welch's p and the verdict (lower is better).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ganime_steps.common import GanimeError, run_cli

REFERENCE_ORDER = ("shared", "train", "gold")
REFERENCE_TITLES = {"shared": "shared reference", "train": "own training set", "gold": "gold (known clean)"}
ALPHA = 0.05  # two-sided level of every verdict, after Holm over the report's comparisons
POWER = 0.8  # the power at which the "seeds per side" suggestion detects the observed difference
MAX_SEEDS = 50  # beyond this the suggestion says "more than" (no one trains 200 seeds)
METRICS = {"fd": "Fréchet distance", "kid": "KID"}


def as_float(v: Any) -> float | None:
    """A finite float, or None (missing, non-numeric, NaN or inf)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def interval(v: Any) -> tuple[float, float] | None:
    """A ``[low, high]`` pair of finite floats as a tuple, or None (missing or malformed: older files)."""
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        return None
    low, high = as_float(v[0]), as_float(v[1])
    return None if low is None or high is None else (low, high)


def _only(values: list[Any]) -> Any:
    """The one value all seeds agree on, else None (none recorded, or they differ)."""
    known = {v for v in values if v is not None}
    return known.pop() if len(known) == 1 else None


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
    """One entry per group (config run name): its runs, and per reference the seeds' values and mean ± std, FID∞ over
    seeds, and (one seed) that run's bootstrap intervals."""
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
            fd_values = [p["fd"] for p in per if p["fd"] is not None]
            kid_values = [p["kid_mean"] for p in per if p["kid_mean"] is not None]
            fd_mean, fd_std = mean_std(fd_values)
            kid_mean, kid_std = mean_std(kid_values)
            fd_inf_mean, fd_inf_std = mean_std([p.get("fd_inf") for p in per])
            refs[ref] = {
                "fd_values": fd_values,
                "kid_values": kid_values,
                "fd_mean": fd_mean,
                "fd_std": fd_std,
                "kid_mean": kid_mean,
                "kid_std_seeds": kid_std,
                "kid_std_subsets": per[0]["kid_std"] if len(per) == 1 else None,
                # one seed: its bootstrap intervals are the only uncertainty there is to show
                "fd_ci": per[0].get("fd_ci") if len(per) == 1 else None,
                "kid_ci": per[0].get("kid_ci") if len(per) == 1 else None,
                "fd_inf_mean": fd_inf_mean,
                "fd_inf_std": fd_inf_std,
                "n_fake": _only([p.get("n_fake") for p in per]),
                "n_real": _only([p.get("n_real") for p in per]),
                "reference_sha256": _only([p.get("reference_sha256") for p in per]),
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


TRAIN_NOTE = "no verdict: own training sets differ (numbers only: they mix dataset difficulty with GAN quality)"


def _status(ref: str, ra: dict[str, Any], rb: dict[str, Any], gold_min: int, gold_size: int | None) -> tuple[str, str]:
    """Whether a pair's numbers against one reference may give a verdict: ('tested', '') or (why not, the note)."""
    if ref == "train":
        return "no_verdict", TRAIN_NOTE
    sha = (ra.get("reference_sha256"), rb.get("reference_sha256"))
    if None not in sha and sha[0] != sha[1]:
        return "not_comparable", "not comparable: measured against different reference files (rerun evaluate)"
    n = (ra.get("n_fake"), rb.get("n_fake"))
    if None not in n and n[0] != n[1]:
        return "not_comparable", f"not comparable: N differs ({n[0]} vs {n[1]} generated images), and so FID's bias"
    if ref == "gold" and gold_min > 0:
        if gold_size is None:
            return "gold_too_small", "gold size unknown (no n_real recorded; rerun evaluate): not judged"
        if gold_size < gold_min:
            return "gold_too_small", f"gold too small to judge (n = {gold_size}, need ≥ {gold_min})"
    return "tested", ""


def verdicts(
    groups: list[dict[str, Any]],
    *,
    alpha: float = ALPHA,
    gold_min: int = 0,
) -> list[dict[str, Any]]:
    """Each pair of groups differing only in dataset, per reference: FD and KID over seeds compared by Welch's t-test
    (:func:`compare`), Holm-corrected over every test in the list, each with a sentence (:func:`judge`).

    ``status`` says whether a pair could get a verdict: 'tested'; 'no_verdict' (own training sets: each run measured
    against a different set); 'not_comparable' (different reference files or N); 'gold_too_small' (fewer than
    ``gold_min`` gold images: the reference's ``n_real``). ``better``/``worse`` order the
    pair by observed mean FD, whatever the verdict; ``significant`` is the FD verdict's."""
    rows = []
    for i, a in enumerate(groups):
        for b in groups[i + 1 :]:
            same = all(a[k] == b[k] for k in ("family", "resolution", "feature_space"))
            if not same or a["dataset"] == b["dataset"]:
                continue
            names = [n for n in REFERENCE_ORDER if n in a["references"] and n in b["references"]]
            names += sorted((set(a["references"]) & set(b["references"])) - set(names))
            for ref in names:
                ra, rb = a["references"][ref], b["references"][ref]
                if ra["fd_mean"] is None or rb["fd_mean"] is None:
                    continue
                if ref != "train" and ra["dataset"] != rb["dataset"]:
                    continue  # measured against different sets: not comparable
                gold_size = _only([ra.get("n_real"), rb.get("n_real")])
                status, note = _status(ref, ra, rb, gold_min, gold_size)
                better, worse = (a, b) if ra["fd_mean"] <= rb["fd_mean"] else (b, a)
                rows.append(
                    {
                        "family": a["family"],
                        "feature_space": a["feature_space"],
                        "is_fid": bool(a["is_fid"] and b["is_fid"]),
                        "reference": ref,
                        "reference_dataset": ra["dataset"] if ref != "train" else None,
                        "a": a["group"],
                        "a_dataset": a["dataset"],
                        "b": b["group"],
                        "b_dataset": b["dataset"],
                        "better": better["group"],
                        "better_dataset": better["dataset"],
                        "worse": worse["group"],
                        "worse_dataset": worse["dataset"],
                        "difference": abs(ra["fd_mean"] - rb["fd_mean"]),
                        "gold_size": gold_size if ref == "gold" else None,
                        "status": status,
                        "note": note,
                        **{m: compare(ra[f"{m}_values"], rb[f"{m}_values"], alpha=alpha) for m in METRICS},
                    }
                )
    tests = [(r, m) for r in rows if r["status"] == "tested" for m in METRICS if r[m]["testable"]]
    adjusted = dict(zip(((id(r), m) for r, m in tests), holm([r[m]["p_value"] for r, m in tests]), strict=True))
    for r in rows:
        names = (str(r["a_dataset"]), str(r["b_dataset"]))
        for m in METRICS:
            if r["status"] != "tested":
                r[m] = {**r[m], "verdict": None, "p_adjusted": None, "sentence": r["note"]}
                continue
            fmt = _fmt_kid if m == "kid" else _fmt_fd
            p = adjusted.get((id(r), m))
            r[m] = judge(r[m], p_adjusted=p, n_tests=max(len(tests), 1), alpha=alpha, names=names, fmt=fmt)
        r["verdict"] = r["fd"]["verdict"]
        r["significant"] = r["verdict"] in ("a_better", "b_better")
        r["meaning"] = r["fd"]["sentence"]
    return rows


def _fmt_fd(v: float) -> str:
    return f"{v:.2f}"


def _fmt_kid(v: float) -> str:
    return f"{v * 1e3:.2f}×10⁻³"


def study_tables(
    groups: list[dict[str, Any]], studies: dict[str, dict[str, Any]], verdict_rows: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """A table per run matrix (``studies``: name -> {reference, groups}): rows are datasets, columns families, each
    cell the mean ± std over seeds of FID and KID against the study's reference (``train``: each run's own training
    set; else a dataset, the runs' shared reference), plus the comparisons between the datasets of each family, taken
    from ``verdict_rows`` (the report's :func:`verdicts`, so Holm counts each test once; default: computed here).
    Against ``train`` they carry numbers only, never a verdict."""
    if verdict_rows is None:
        verdict_rows = verdicts(groups)
    by_name = {g["group"]: g for g in groups}
    tables = []
    for study, spec in studies.items():
        ref_key = "train" if spec["reference"] == "train" else "shared"
        members = [by_name[name] for name in spec["groups"] if name in by_name]
        names = {g["group"] for g in members}
        cells: dict[str, dict[str, dict[str, Any]]] = {}
        for g in members:
            x = g["references"].get(ref_key) or {}
            kid_std = x.get("kid_std_seeds") if x.get("kid_std_seeds") is not None else x.get("kid_std_subsets")
            cells.setdefault(g["dataset"], {})[g["family"]] = {
                "group": g["group"],
                **{k: x.get(k) for k in ("fd_mean", "fd_std", "kid_mean", "fd_ci", "kid_ci", "fd_inf_mean")},
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
                "verdicts": [
                    v for v in verdict_rows if v["reference"] == ref_key and v["a"] in names and v["b"] in names
                ],
                "missing": [name for name in spec["groups"] if name not in by_name],
            }
        )
    return tables


# ----------------------------------------------------------------------------------------------------------------------
# statistics of a verdict: the unit is the seed


def welch(a: Any, b: Any, *, alpha: float = ALPHA) -> dict[str, Any]:
    """Welch's t-test of ``mean(b) - mean(a)`` over the last axis (the seeds), with its ``1 - alpha`` interval.

    Why Welch and not Student's pooled test: at 2-5 seeds a side, and with seeds whose spread differs between datasets
    (a messier dataset often gives more erratic runs), the pooled test's error rate drifts away from alpha when the
    smaller or noisier side differs; Welch's Satterthwaite degrees of freedom hold it at or below alpha (simulated in
    tests/test_comparison.py at 2, 3 and 5 seeds, equal and unequal variances). It needs no equal variances and no
    normality beyond each side's mean over seeds being roughly normal. Vectorised over leading axes, so that the
    simulation tests run this very code; every side needs at least two values (fewer: see :func:`compare`).
    Returns arrays (or floats): difference, se, df, t, p_value, ci_low, ci_high; p is NaN when neither side varies.
    """
    from scipy import stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    na, nb = a.shape[-1], b.shape[-1]
    va, vb = a.var(axis=-1, ddof=1) / na, b.var(axis=-1, ddof=1) / nb
    diff = b.mean(axis=-1) - a.mean(axis=-1)
    se = np.sqrt(va + vb)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
        t = diff / se
        p = np.where(se > 0, 2 * stats.t.sf(np.abs(t), df), np.nan)
        half = np.where(se > 0, stats.t.ppf(1 - alpha / 2, df) * se, np.nan)
    return {"difference": diff, "se": se, "df": df, "t": t, "p_value": p, "ci_low": diff - half, "ci_high": diff + half}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the given order: the k-th smallest p times (m - k + 1), made
    non-decreasing, capped at 1. Rejecting where the adjusted p <= alpha keeps the chance of any false verdict among
    all m comparisons at most alpha, whatever their dependence (they share runs)."""
    m = len(p_values)
    adjusted, running = [1.0] * m, 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda j: p_values[j])):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def decide(difference: Any, p_value: Any, *, alpha: float = ALPHA, higher_is_better: bool = False) -> Any:
    """'a_better', 'b_better' or 'no_difference' (vectorised): a side wins only where p <= alpha."""
    diff = np.asarray(difference, dtype=float)
    significant = (np.nan_to_num(np.asarray(p_value, dtype=float), nan=1.0) <= alpha) & (diff != 0)
    b_wins = diff > 0 if higher_is_better else diff < 0
    out = np.where(significant, np.where(b_wins, "b_better", "a_better"), "no_difference")
    return str(out) if out.ndim == 0 else out


def seeds_for_power(difference: float, sd: float, *, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """Seeds per side at which a two-sided t-test at ``alpha`` detects a true difference ``difference`` between seeds
    with spread ``sd`` with probability ``power`` (noncentral t); None when more than :data:`MAX_SEEDS` are needed."""
    from scipy import stats

    n = np.arange(2, MAX_SEEDS + 1)
    dof = 2 * n - 2
    ncp = abs(difference) / sd * np.sqrt(n / 2)
    crit = stats.t.ppf(1 - alpha / 2, dof)
    reach = stats.nct.sf(crit, dof, ncp) + stats.nct.cdf(-crit, dof, ncp)
    hit = np.flatnonzero(reach >= power)
    return int(n[hit[0]]) if hit.size else None


def compare(a: Sequence[float], b: Sequence[float], *, alpha: float = ALPHA) -> dict[str, Any]:
    """The raw statistics of one comparison of seeds' values (no verdict yet: that needs every p of the report, see
    :func:`judge`). ``testable`` is False with one seed on a side, or when neither side varies."""
    a, b = [float(v) for v in a], [float(v) for v in b]
    (mean_a, sd_a), (mean_b, sd_b) = mean_std(a), mean_std(b)
    out: dict[str, Any] = {
        "n_a": len(a),
        "n_b": len(b),
        "mean_a": mean_a,
        "mean_b": mean_b,
        "sd_a": sd_a,
        "sd_b": sd_b,
        "difference": None if mean_a is None or mean_b is None else mean_b - mean_a,
        "ci_low": None,
        "ci_high": None,
        "p_value": None,
        "df": None,
        "se": None,
        "sd_pooled": None,
        "confidence": 1 - alpha,
        "testable": False,
    }
    if len(a) < 2 or len(b) < 2:
        return out
    w = welch(a, b, alpha=alpha)
    out["sd_pooled"] = math.sqrt(((len(a) - 1) * sd_a**2 + (len(b) - 1) * sd_b**2) / (len(a) + len(b) - 2))
    if not float(w["se"]) > 0:
        return out  # every seed gave the same number on both sides: nothing to test against
    out.update({k: float(w[k]) for k in ("se", "ci_low", "ci_high", "p_value", "df")}, testable=True)
    return out


def _g(v: float) -> str:
    return f"{v:.4g}"


def _fmt_for(se: float | None) -> Callable[[float], str]:
    """Numbers to two significant digits of their standard error (CLI input has no known unit)."""
    if not se:
        return _g
    decimals = max(0, 1 - math.floor(math.log10(se)))
    return lambda v: f"{v:.{decimals}f}"


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def judge(
    c: dict[str, Any],
    *,
    p_adjusted: float | None = None,
    n_tests: int = 1,
    alpha: float = ALPHA,
    higher_is_better: bool = False,
    names: tuple[str, str] = ("A", "B"),
    fmt: Callable[[float], str] | None = None,
) -> dict[str, Any]:
    """:func:`compare`'s statistics plus the verdict and its sentence. ``p_adjusted``: this comparison's p after Holm
    over the report's ``n_tests`` comparisons (default: its own p, one comparison). The seeds-for-power estimate uses
    alpha / n_tests (Holm's strictest step), the pooled seed spread and the observed difference."""
    name_a, name_b = names
    fmt = fmt or _fmt_for(c["se"])
    p = c["p_value"] if p_adjusted is None else p_adjusted
    seeds = f"n = {c['n_a']}+{c['n_b']} seeds"
    out = {**c, "p_adjusted": p, "n_tests": n_tests, "verdict": "no_difference", "power_seeds": None}
    if c["n_a"] < 2 or c["n_b"] < 2:
        return {**out, "sentence": f"one seed on a side: not a result ({seeds})"}
    diff = c["difference"]
    if not c["testable"]:
        return {**out, "sentence": f"no spread between seeds on either side ({seeds}): {name_b} − {name_a} = "
                f"{fmt(diff)} cannot be tested"}  # fmt: skip
    pct = f"{100 * c['confidence']:g}% CI"
    p_text = _p(p) + (f" after Holm over {n_tests} comparisons" if n_tests > 1 else "")
    verdict = decide(diff, p, alpha=alpha, higher_is_better=higher_is_better)
    out["verdict"] = verdict
    if verdict != "no_difference":
        better, worse = (name_b, name_a) if verdict == "b_better" else (name_a, name_b)
        s = 1.0 if diff > 0 else -1.0  # the gain as a positive number, its interval turned the same way
        lo, hi = sorted((s * c["ci_low"], s * c["ci_high"]))
        return {**out, "sentence": f"{better} better than {worse} by {fmt(abs(diff))} ({pct} {fmt(lo)} to {fmt(hi)}, "
                f"{p_text}, {seeds})"}  # fmt: skip
    if diff == 0:
        power = "the observed difference is exactly 0, so no number of seeds is suggested"
    else:
        k = seeds_for_power(diff, c["sd_pooled"], alpha=alpha / n_tests)
        out["power_seeds"] = k
        size = f"{100 * POWER:g}% power"
        power = (
            f"about {k} seeds per side would detect a difference of this size at {size}"
            if k is not None
            else f"more than {MAX_SEEDS} seeds per side would be needed to detect a difference this small at {size}"
        )
    sentence = (
        f"no difference detected at this many seeds ({name_b} − {name_a} = {fmt(diff)}; the {pct} spans "
        f"{fmt(c['ci_low'])} to {fmt(c['ci_high'])}, {p_text}, {seeds}; {power})"
    )
    return {**out, "sentence": sentence}


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
    return png_of(fig)


def png_of(fig) -> bytes:
    """A finished matplotlib figure as PNG bytes (tight layout), closed: the report's curves are made this way."""
    import matplotlib.pyplot as plt

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


# ----------------------------------------------------------------------------------------------------------------------
# CLI: numbers from anywhere (a paper's table, another tool's runs); imports no torch


def _values(raw: list[str] | None, flag: str) -> list[float]:
    if not raw:
        raise GanimeError(f"{flag}: give at least one value (one per seed), e.g. {flag} 312.1 298.4 305.0")
    values = [as_float(v) for v in raw]
    bad = [r for r, v in zip(raw, values, strict=True) if v is None]
    if bad:
        raise GanimeError(f"{flag} {bad[0]!r}: not a finite number; give one number per seed")
    return values  # type: ignore[return-value]


def run_compare(
    a: list[float], b: list[float], *, alpha: float = ALPHA, higher_is_better: bool = False
) -> dict[str, Any]:
    """One comparison of two sides' values per seed: :func:`compare` then :func:`judge` (one test, no Holm)."""
    if not 0 < alpha < 1:
        raise GanimeError(f"--alpha {alpha}: must be between 0 and 1, e.g. 0.05")
    result = judge(compare(a, b, alpha=alpha), alpha=alpha, higher_is_better=higher_is_better)
    return {**result, "alpha": alpha, "higher_is_better": higher_is_better}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ganime_steps.comparison",
        description="Compare one metric between two sides, one value per seed: Welch's t-test of mean(b) - mean(a), "
        "its confidence interval and the verdict, as one JSON object on stdout. Lower is better (FID, KID) unless "
        "--higher-is-better.",
    )
    # strings, checked in the handler: a bad value is one clear line, not argparse's usage block
    p.add_argument("--a", nargs="*", metavar="VALUE", help="side A's values, one per seed")
    p.add_argument("--b", nargs="*", metavar="VALUE", help="side B's values, one per seed")
    p.add_argument("--alpha", default=str(ALPHA), help=f"two-sided significance level (default {ALPHA})")
    p.add_argument("--higher-is-better", action="store_true", help="a larger value is better (e.g. precision)")
    return p


def _handle(args: argparse.Namespace) -> None:
    alpha = as_float(args.alpha)
    if alpha is None:
        raise GanimeError(f"--alpha {args.alpha!r}: not a number; e.g. --alpha 0.05")
    result = run_compare(
        _values(args.a, "--a"), _values(args.b, "--b"), alpha=alpha, higher_is_better=args.higher_is_better
    )
    print(json.dumps(result, sort_keys=True), file=sys.stdout, flush=True)


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), _handle, argv)


if __name__ == "__main__":
    raise SystemExit(main())
