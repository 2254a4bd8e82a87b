"""Threshold rules and binary metrics: pure functions on numpy score and label arrays."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

# parse_threshold_rule: re-exported, the classifier package's name for it
from ganime_steps.thresholds import parse_threshold_rule as parse_threshold_rule
from ganime_steps.thresholds import threshold_at

log = logging.getLogger(__name__)


def pr_points(scores: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall and F1 at every distinct score used as threshold (``predicted = score >= t``).

    Thresholds come out in descending order. Precision is 1 by convention where nothing is predicted positive
    (cannot happen here: every threshold is an observed score, so at least one post is predicted positive).
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).astype(np.int64).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} differ in length")
    if scores.size == 0:
        empty = np.zeros(0)
        return {"thresholds": empty, "precision": empty, "recall": empty, "f1": empty, "tp": empty, "fp": empty}
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    tp_all, fp_all = np.cumsum(y), np.cumsum(1 - y)
    # last position of each run of equal scores: all posts at that score are predicted positive together
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tp, fp = tp_all[last].astype(np.float64), fp_all[last].astype(np.float64)
    n_pos = float(y.sum())
    precision = tp / (tp + fp)
    recall = tp / n_pos if n_pos > 0 else np.zeros_like(tp)
    f1 = 2 * tp / (tp + fp + n_pos) if n_pos > 0 else np.zeros_like(tp)  # 2tp / (2tp + fp + fn)
    return {"thresholds": s[last], "precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp}


def select_threshold(scores: np.ndarray, labels: np.ndarray, rule: str) -> tuple[float, bool]:
    """The threshold ``rule`` picks on validation scores, and whether the rule itself was met (False: fallback):
    :func:`ganime_steps.thresholds.threshold_at` on their :func:`pr_points`."""
    return threshold_at(pr_points(scores, labels), rule)


def choose_threshold(scores: np.ndarray, labels: np.ndarray, rule: str) -> float:
    """:func:`select_threshold`, logging a warning when the rule could not be met and a fallback was used."""
    threshold, met = select_threshold(scores, labels, rule)
    if not met:
        if not np.asarray(labels).any():
            log.warning("threshold_rule %s: no positive validation labels; using threshold 0.5", rule)
        else:
            log.warning(
                "threshold_rule %s: no threshold reaches that precision on validation data; "
                "falling back to best F1 (threshold %.4f)",
                rule,
                threshold,
            )
    return threshold


def binary_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, Any]:
    """Precision, recall, F1, ROC AUC (None with one class) and confusion [[tn, fp], [fn, tp]] at ``threshold``."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).astype(np.int64).ravel()
    pred = scores >= threshold
    tp = int(np.sum(pred & (labels == 1)))
    fp = int(np.sum(pred & (labels == 0)))
    fn = int(np.sum(~pred & (labels == 1)))
    tn = int(np.sum(~pred & (labels == 0)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "roc_auc": roc_auc(scores, labels),
        "confusion": [[tn, fp], [fn, tp]],
    }


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve via the rank-sum (Mann-Whitney) statistic; ties count half. None with one class."""
    from scipy.stats import rankdata

    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).astype(np.int64).ravel()
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(scores)
    return float((ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(pts: dict[str, np.ndarray]) -> float | None:
    """Step-wise area under the PR curve (sum over thresholds of recall gain x precision)."""
    if pts["recall"].size == 0 or pts["recall"][-1] == 0:
        return None
    recall = np.r_[0.0, pts["recall"]]
    return float(np.sum(np.diff(recall) * pts["precision"]))


def split_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, Any]:
    """One split's block in metrics.json: size, class counts, :func:`binary_metrics`, average precision, PR curve."""
    labels = np.asarray(labels).astype(np.int64).ravel()
    pts = pr_points(scores, labels)
    return {
        "n": int(labels.size),
        "counts": counts(labels),
        **binary_metrics(scores, labels, threshold),
        "average_precision": average_precision(pts),
        "pr_curve": {
            "thresholds": pts["thresholds"].tolist(),
            "precision": pts["precision"].tolist(),
            "recall": pts["recall"].tolist(),
        },
    }


def counts(labels: np.ndarray) -> dict[str, int]:
    """Posts per class, keyed "0" and "1" as in metrics.json."""
    return {"0": int(np.sum(labels == 0)), "1": int(np.sum(labels == 1))}
