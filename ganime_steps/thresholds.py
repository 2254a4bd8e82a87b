"""Operating points of a binary classifier: threshold rules read off a precision/recall curve.

One module for the classifier stage (which picks its own threshold on validation scores) and the clean stage (where a
dataset's ``drop`` may name another operating point, e.g. ``precision:0.4``, read off the curve the classifier stored
in its metrics.json). Numpy only, so the clean stage's environment needs no torch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from ganime_steps.common import GanimeError

RULE_HELP = "best_f1 or precision:<p> with 0 < p <= 1 (e.g. precision:0.9)"


def parse_threshold_rule(rule: str) -> tuple[str, float | None]:
    """``"best_f1"`` -> ("best_f1", None); ``"precision:0.9"`` -> ("precision", 0.9). Anything else: GanimeError."""
    rule = str(rule).strip()
    if rule == "best_f1":
        return "best_f1", None
    m = re.fullmatch(r"precision:([0-9]*\.?[0-9]+)", rule)
    if m:
        target = float(m.group(1))
        if 0.0 < target <= 1.0:
            return "precision", target
    raise GanimeError(f"threshold_rule {rule!r}: not understood; use {RULE_HELP}")


def _arrays(curve: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple(np.asarray(curve.get(k, []), dtype=np.float64).ravel() for k in ("thresholds", "precision", "recall"))


def threshold_at(curve: Mapping[str, Any], rule: str) -> tuple[float, bool]:
    """The threshold ``rule`` picks on a PR curve (thresholds in descending order, with precision and recall at each,
    as :func:`ganime_steps.classifier.metrics.pr_points` makes and metrics.json stores), and whether the rule itself
    was met (False: a fallback).

    best_f1: the threshold with the highest F1; ties go to the highest such threshold (fewest positives).
    precision:p: the lowest threshold whose precision is >= p (the most recall at that precision); when no threshold
    reaches p, fall back to best_f1. Without any positive label (recall 0 everywhere), F1 means nothing: 0.5.
    """
    kind, target = parse_threshold_rule(rule)
    thresholds, precision, recall = _arrays(curve)
    if thresholds.size == 0 or not recall.any():
        return 0.5, False
    if kind == "precision":
        ok = np.nonzero(precision >= target - 1e-12)[0]
        if ok.size:
            return float(thresholds[ok[-1]]), True  # descending order: last index = lowest threshold
    # pr_points' curve carries F1; a curve stored in metrics.json does not
    f1 = np.asarray(curve["f1"], dtype=np.float64) if "f1" in curve else f1_of(precision, recall)
    best = int(np.argmax(f1))  # first maximum in descending order = highest threshold among ties
    return float(thresholds[best]), kind == "best_f1"


def f1_of(precision: Any, recall: Any) -> np.ndarray:
    """F1 from precision and recall (arrays or numbers): 0 where both are 0."""
    precision, recall = np.asarray(precision, dtype=np.float64), np.asarray(recall, dtype=np.float64)
    total = precision + recall
    return np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)


def precision_recall_at(curve: Mapping[str, Any], threshold: float) -> tuple[float | None, float]:
    """Precision and recall of ``score >= threshold`` on a stored curve's split; precision None where nothing is
    predicted positive (the threshold is above every score of that split)."""
    thresholds, precision, recall = _arrays(curve)
    at_or_above = np.nonzero(thresholds >= threshold)[0]
    if not at_or_above.size:
        return None, 0.0
    i = at_or_above[-1]  # the lowest curve threshold still >= threshold predicts exactly the same posts
    return float(precision[i]), float(recall[i])
