"""Time to quality: how soon each group of runs (a family's seeds) reaches a FID, in training time and in images.

Pure functions over what training writes into each run folder, used by :mod:`ganime_steps.report`: ``metrics.jsonl``
(one row per snapshot: ``kimg``, the metric, ``seconds``, the reference's hash and sample counts) and ``log.csv``
(``kimg`` and ``seconds`` per log row: the time of snapshot rows that carry none, and how far a run trained).

Definitions (the report prints them beside the numbers):

- **time**: the trainer's own clock, ``seconds``: time spent training, checkpoints and snapshot metrics excluded,
  summed over resumes (a requeued job's waiting time is not in it). Times compare only runs on the same kind of GPU.
- **a group's curve**: at every kimg that all its seeds measured, the mean over seeds of the snapshot metric (with the
  seeds' standard deviation) and of their training seconds. Its **best** is the lowest point of that curve.
- **comparable groups**: same dataset, metric, reference content and sample counts (so the same resolution): only
  their values measure the same thing.
- **time to quality of a pair**: the target is the worse of the two bests, a quality both groups reached; each
  group's time to quality is the time and kimg of the first point of its curve at or below the target. The better
  group's own best is then one the other never reached within what it trained; the sentence says that too.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ganime_steps.comparison import as_float, mean_std, metric_key, png_of

KIMG_DIGITS = 3  # kimg is images/1000: snapshots of seeds of one run agree to the image
IDENTITY_KEYS = ("reference_sha256", "n_fake", "n_real")  # what makes two snapshot values comparable


@dataclass
class Point:
    """One point of a curve: kimg, the metric (a seed's, or the mean over seeds with their spread) and the training
    seconds there (None where neither metrics.jsonl nor log.csv recorded them)."""

    kimg: float
    value: float
    seconds: float | None = None
    std: float | None = None


@dataclass
class RunCurve:
    """One run's snapshots and how far it trained (the last log.csv row, else the last snapshot)."""

    run: str
    key: str | None
    identity: tuple
    points: list[Point]
    trained_kimg: float | None = None
    trained_seconds: float | None = None


@dataclass
class GroupCurve:
    """A group's mean curve over the seeds with snapshots of one kind, its best point, how far its seeds trained."""

    group: str
    family: str | None
    dataset: str | None
    resolution: int | None
    n_runs: int  # the group's runs, with snapshots of this kind or not
    key: str
    identity: tuple
    seeds: list[RunCurve]
    points: list[Point]
    best: Point
    trained_kimg: float | None
    trained_seconds: float | None


@dataclass
class Reach:
    """When one group first reached a target: on its mean curve, and per seed (None: a seed that never did)."""

    group: str
    kimg: float
    seconds: float | None
    seed_seconds: list[float | None] = field(default_factory=list)
    seed_kimg: list[float | None] = field(default_factory=list)


@dataclass
class Pair:
    """Two comparable groups: the target (the worse best), when each reached it, and the sentence."""

    better: str
    worse: str
    target: float
    better_best: float
    reaches: dict[str, Reach]
    sentence: str
    seed_notes: list[str]  # per group: how many of its seeds reached the target on their own curves, and when


def _interpolated_seconds(kimg: float, log_rows: list[dict[str, Any]]) -> float | None:
    """Training seconds at ``kimg`` read off log.csv (linear between rows; 0 at kimg 0); None beyond its last row."""
    pts = [(as_float(r.get("kimg")), as_float(r.get("seconds"))) for r in log_rows]
    pts = sorted((k, s) for k, s in pts if k is not None and s is not None)
    if kimg <= 0:
        return 0.0
    if not pts or kimg > pts[-1][0] + 1e-9:
        return None
    xs, ys = [0.0, *(k for k, _ in pts)], [0.0, *(s for _, s in pts)]
    return float(np.interp(kimg, xs, ys))


def run_curve(run: str, curves: dict[str, list[dict[str, Any]]]) -> RunCurve:
    """A run's snapshot points from :func:`ganime_steps.comparison.read_curves` (its metrics.jsonl and log.csv rows):
    the metric at each kimg, with the row's own training seconds, else those read off log.csv."""
    rows, log_rows = curves["metrics"], curves["losses"]
    key = metric_key(rows)
    points = []
    for row in rows:
        value = as_float(row.get(key)) if key else None
        if value is None:
            continue
        kimg = float(row["kimg"])
        seconds = as_float(row.get("seconds"))
        points.append(Point(kimg, value, seconds if seconds is not None else _interpolated_seconds(kimg, log_rows)))
    points.sort(key=lambda p: p.kimg)
    identity = tuple(rows[-1].get(k) for k in IDENTITY_KEYS) if rows else ()
    # how far it trained: the later of log.csv's last row and the last snapshot (either may be missing)
    ends = [(float(r["kimg"]), as_float(r.get("seconds"))) for r in log_rows] + [(p.kimg, p.seconds) for p in points]
    trained_kimg, trained_seconds = max(ends, key=lambda e: e[0], default=(None, None))
    return RunCurve(run, key, identity, points, trained_kimg, trained_seconds)


def _mean_or_none(values: list[float | None]) -> float | None:
    return None if not values or any(v is None for v in values) else float(np.mean(values))


def group_curve(group: str, about: dict[str, Any], runs: list[RunCurve]) -> GroupCurve | None:
    """The mean curve of a group's seeds: at each kimg every seed measured, the mean metric ± the seeds' std and the
    mean training seconds (None unless every seed has them). Seeds measured another way than the first (another
    reference or sample count) are left out. None without any snapshot. ``about``: the group's family, dataset and
    resolution (one of its report rows)."""
    seeds = [s for s in runs if s.points and s.key]
    if not seeds:
        return None
    kind = (seeds[0].key, seeds[0].identity)
    seeds = [s for s in seeds if (s.key, s.identity) == kind]
    by_seed = [{round(p.kimg, KIMG_DIGITS): p for p in s.points} for s in seeds]
    common = sorted(set.intersection(*(set(b) for b in by_seed)))
    points = []
    for kimg in common:
        at = [b[kimg] for b in by_seed]
        mean, std = mean_std([p.value for p in at])
        points.append(Point(kimg, mean, _mean_or_none([p.seconds for p in at]), std))
    if not points:
        return None
    return GroupCurve(
        group,
        about.get("family"),
        about.get("dataset"),
        about.get("resolution"),
        len(runs),
        kind[0],
        kind[1],
        seeds,
        points,
        min(points, key=lambda p: p.value),  # the first of equal lowest values: the earliest
        _mean_or_none([s.trained_kimg for s in seeds]),
        _mean_or_none([s.trained_seconds for s in seeds]),
    )


def first_reach(points: list[Point], target: float) -> Point | None:
    """The first point at or below ``target`` (a relative 1e-9 keeps a curve's own best within reach)."""
    return next((p for p in points if p.value <= target + 1e-9 * max(1.0, abs(target))), None)


def _reach(g: GroupCurve, target: float) -> Reach:
    point = first_reach(g.points, target)
    assert point is not None  # target >= the group's best, which is one of its points
    per_seed = [first_reach(s.points, target) for s in g.seeds]
    return Reach(
        g.group,
        point.kimg,
        point.seconds,
        [None if p is None else p.seconds for p in per_seed],
        [None if p is None else p.kimg for p in per_seed],
    )


def duration(seconds: float | None) -> str:
    """'3.2 h', '12.5 min' or '48 s'; 'time not recorded' for None."""
    if seconds is None:
        return "time not recorded"
    if seconds >= 7200:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 120:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s"


def _at(reach: Reach) -> str:
    return f"{duration(reach.seconds)} ({reach.kimg:g} kimg)"


def _sooner(rb: Reach, rw: Reach, what: str) -> tuple[str, str] | None:
    """Who reached the target first and by what factor, in training time or in images: (group or '', words); None
    where not measurable."""
    at_better, at_worse = (rb.seconds, rw.seconds) if what == "training time" else (rb.kimg, rw.kimg)
    if not at_better or not at_worse:  # not recorded, or at kimg 0: no factor
        return None
    if abs(at_worse - at_better) <= 1e-9 * max(at_worse, at_better):
        return "", f"both at the same {what}"
    first, factor = (rb.group, at_worse / at_better) if at_better < at_worse else (rw.group, at_better / at_worse)
    return first, f"{factor:.2g}× sooner in {what}"


def _factors(rb: Reach, rw: Reach) -> str:
    """'stylegan_A 5× sooner in training time and 2.5× sooner in images' (each clause names its group once)."""
    parts = [f for f in (_sooner(rb, rw, "training time"), _sooner(rb, rw, "images")) if f]
    words, last = [], None
    for group, text in parts:
        words.append(text if group == last or not group else f"{group} {text}")
        last = group or last
    return " and ".join(words)


def _span(values: list[float], fmt) -> str:
    low, high = fmt(min(values)), fmt(max(values))
    return low if low == high else f"{low}–{high}"


def _seeds_note(reach: Reach) -> str | None:
    """'progan_A: 2 of 3 seeds reached it on their own curves, at 8.9–11.1 h' (kimg where a time is missing)."""
    n, hit = len(reach.seed_kimg), [k for k in reach.seed_kimg if k is not None]
    if n < 2:
        return None
    secs = [s for s in reach.seed_seconds if s is not None]
    when = (
        _span(secs, duration) if secs and len(secs) == len(hit) else _span(hit, lambda k: f"{k:g} kimg") if hit else ""
    )
    return f"{reach.group}: {len(hit)} of {n} seeds reached it on their own curves" + (f", at {when}" if when else "")


def compare(a: GroupCurve, b: GroupCurve, metric: str) -> Pair:
    """Two comparable groups: the target is the worse of their bests; when each first reached it; the sentence."""
    better, worse = sorted((a, b), key=lambda g: (g.best.value, g.group))
    target = worse.best.value
    rb, rw = _reach(better, target), _reach(worse, target)
    sentence = (
        f"{better.group} reached {worse.group}'s best {metric} ({target:.2f}) at {_at(rb)}; {worse.group} at {_at(rw)}"
    )
    factors = _factors(rb, rw)
    if factors:
        sentence += f": {factors}"
    if better.best.value < target:
        sentence += (
            f". {worse.group} never reached {better.group}'s best ({better.best.value:.2f}) in the "
            f"{_fmt_kimg(worse.trained_kimg)} kimg ({duration(worse.trained_seconds)}) it trained"
        )
    else:
        sentence += f". Their best {metric}s are equal"
    notes = [n for n in (_seeds_note(rb), _seeds_note(rw)) if n]
    return Pair(
        better.group, worse.group, target, better.best.value, {rb.group: rb, rw.group: rw}, sentence + ".", notes
    )


def _fmt_kimg(kimg: float | None) -> str:
    return "?" if kimg is None else f"{kimg:g}"


def comparable_sets(groups: list[GroupCurve]) -> list[list[GroupCurve]]:
    """Groups whose snapshot values measure the same thing (dataset, metric, reference content and sample counts),
    in the order their first group came."""
    sets: dict[tuple, list[GroupCurve]] = {}
    for g in groups:
        sets.setdefault((g.dataset, g.key, g.identity), []).append(g)
    return list(sets.values())


def summary(view: dict[str, Any]) -> dict[str, Any]:
    """The view's numbers for report_summary.json: per set each group's mean curve and best, and every pair."""
    sets = []
    for st in view["sets"]:
        groups = [
            {
                **{k: getattr(g, k) for k in ("group", "family", "dataset", "resolution", "n_runs", "key")},
                "identity": dict(zip(IDENTITY_KEYS, g.identity, strict=False)),
                "seeds": [s.run for s in g.seeds],
                "best": g.best,
                "trained_kimg": g.trained_kimg,
                "trained_seconds": g.trained_seconds,
                "curve": g.points,
            }
            for g in st["groups"]
        ]
        sets.append({"metric": st["metric"], "dataset": st["dataset"], "groups": groups, "pairs": st["pairs"]})
    return {"sets": sets, "without_snapshots": view["without_snapshots"]}


def metric_name(key: str) -> str:
    return "FID" if key == "fid" else key


def build(runs: list[dict[str, Any]], curves: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """The time-to-quality view: per comparable set its groups (mean curves, bests), every pair and its sentence;
    and the runs with no snapshot at all. ``runs``: the report's run rows (run, group, family, dataset);
    ``curves``: run -> :func:`ganime_steps.comparison.read_curves` of its folder."""
    members: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        members.setdefault(r["group"], []).append(r)
    groups, without = [], []
    for name, rows in members.items():
        seeds = [run_curve(r["run"], curves.get(r["run"], {"metrics": [], "losses": []})) for r in rows]
        g = group_curve(name, rows[0], seeds)
        if g is None:
            without += [r["run"] for r in rows]
        else:
            groups.append(g)
            without += [s.run for s in seeds if s.run not in {m.run for m in g.seeds}]
    sets = []
    for members_of_set in comparable_sets(groups):
        metric = metric_name(members_of_set[0].key)
        pairs = [compare(a, b, metric) for a, b in itertools.combinations(members_of_set, 2)]
        sets.append({"metric": metric, "dataset": members_of_set[0].dataset, "groups": members_of_set, "pairs": pairs})
    return {"sets": sets, "without_snapshots": sorted(without)}


def figure_png(groups: list[GroupCurve], metric: str, title: str, targets: list[float] = ()) -> bytes:
    """Two panels in the style of the training curves: the metric against training time and against kimg, one line
    per group (mean over seeds, ± std band where there are several), each group's best ringed, each pair's target
    dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    longest = max((p.seconds or 0.0) for g in groups for p in g.points)
    scale, unit = (3600.0, "h") if longest >= 7200 else (60.0, "min") if longest >= 120 else (1.0, "s")
    fig, (ax_t, ax_k) = plt.subplots(1, 2, figsize=(9, 3.2), dpi=90)
    for g in groups:
        label = f"{g.group} ({len(g.seeds)} seed{'s' * (len(g.seeds) != 1)})"
        mean = np.array([p.value for p in g.points])
        std = np.array([p.std or 0.0 for p in g.points])
        timed = [i for i, p in enumerate(g.points) if p.seconds is not None]
        panels = [(ax_k, np.array([p.kimg for p in g.points]), list(range(len(g.points))))]
        if timed:
            panels.append((ax_t, np.array([g.points[i].seconds / scale for i in timed]), timed))
        for ax, xs, idx in panels:
            (line,) = ax.plot(xs, mean[idx], marker="o", markersize=3, linewidth=1, label=label)
            if len(g.seeds) > 1:
                ax.fill_between(xs, mean[idx] - std[idx], mean[idx] + std[idx], color=line.get_color(), alpha=0.15)
            best = g.points.index(g.best)
            if best in idx:
                x = xs[idx.index(best)]
                ax.scatter([x], [g.best.value], s=140, facecolors="none", edgecolors=line.get_color())
    for ax in (ax_t, ax_k):
        for target in sorted(set(targets)):
            ax.axhline(target, color="grey", linestyle="--", linewidth=0.8)
    ax_t.set(xlabel=f"training time ({unit})", ylabel=metric, title=f"{title}: {metric} vs training time")
    ax_k.set(xlabel="kimg", ylabel=metric, title=f"{metric} vs kimg (best ringed)")
    for ax in (ax_t, ax_k):
        if ax.lines:
            ax.legend(fontsize=8)
    return png_of(fig)
