"""Classifier stage: binary cleaning classifiers (chibi, multi, aesthetic) trained from hand labels; scores every post.

``train`` fits a timm model (``num_classes=1``, BCE with ``pos_weight`` for class balance) on the labelled posts,
split train/val/test by post (md5) with a fixed seed. Validation picks the best epoch (early stopping) and the decision
threshold; the held-out test split, seen by neither, gives the reported precision/recall/F1/ROC-AUC.
``score`` runs the saved model over every post and writes one probability per post.

Modules: ``data`` (labels joined to posts, the split, image datasets), ``model`` (timm models, pretrained weights,
model.pt and :func:`load_classifier`, the one reader of it), ``metrics`` (threshold rules, PR/ROC metrics),
``settings`` (:class:`ClassifierSettings`: what ``train`` trains, the workflow schema's ``classifiers.*`` with their
defaults, saved as classifier_config.json), ``train`` (:func:`run_train`; :class:`ClassifierMetrics`, the
metrics.json record), ``score`` (:func:`run_score`), ``plots`` (PR curve, confusion), ``cli`` (the command line;
``python -m ganime_steps.classifier train|score``).
"""

from __future__ import annotations

from ganime_steps.classifier.cli import main
from ganime_steps.classifier.data import (
    LABEL_COLUMNS,
    MIN_GROUPS_FOR_TEST,
    MIN_LABELS,
    MIN_PER_CLASS,
    POST_COLUMNS,
    Split,
    split_by_post,
)
from ganime_steps.classifier.metrics import (
    average_precision,
    binary_metrics,
    choose_threshold,
    parse_threshold_rule,
    pr_points,
    roc_auc,
    select_threshold,
    split_metrics,
)
from ganime_steps.classifier.model import (
    MODEL_KEYS,
    autocast,
    build_model,
    class_names,
    classifier_from_checkpoint,
    load_classifier,
    norm_stats,
    normalise_pretrained,
    pretrained_model,
    read_classifier,
    to_input,
)
from ganime_steps.classifier.score import ScoreSummary, run_score
from ganime_steps.classifier.settings import SETTINGS_FILE, ClassifierSettings
from ganime_steps.classifier.train import (
    TEST_SPLIT_NAME,
    VAL_SPLIT_NAME,
    ClassifierMetrics,
    SplitMetrics,
    TrainSummary,
    run_train,
)

__all__ = [
    "LABEL_COLUMNS",
    "MIN_GROUPS_FOR_TEST",
    "MIN_LABELS",
    "MIN_PER_CLASS",
    "MODEL_KEYS",
    "POST_COLUMNS",
    "SETTINGS_FILE",
    "TEST_SPLIT_NAME",
    "VAL_SPLIT_NAME",
    "ClassifierMetrics",
    "ClassifierSettings",
    "ScoreSummary",
    "Split",
    "SplitMetrics",
    "TrainSummary",
    "autocast",
    "average_precision",
    "binary_metrics",
    "build_model",
    "choose_threshold",
    "class_names",
    "classifier_from_checkpoint",
    "load_classifier",
    "main",
    "norm_stats",
    "normalise_pretrained",
    "parse_threshold_rule",
    "pr_points",
    "pretrained_model",
    "read_classifier",
    "roc_auc",
    "run_score",
    "run_train",
    "select_threshold",
    "split_by_post",
    "split_metrics",
    "to_input",
]
