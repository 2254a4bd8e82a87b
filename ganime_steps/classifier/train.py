"""``train``: fit one binary classifier on the labelled posts, pick its epoch and threshold on validation data, then
report the held-out test split; writes model.pt, metrics.json, pr_curve.png, confusion.png and the settings
(:class:`~ganime_steps.classifier.settings.ClassifierSettings`) as classifier_config.json."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ganime_steps.classifier.data import (
    Split,
    check_workers,
    labelled_posts,
    load_images,
    resolve_paths,
    split_by_post,
    train_loader,
)
from ganime_steps.classifier.metrics import (
    binary_metrics,
    choose_threshold,
    counts,
    select_threshold,
    split_metrics,
)
from ganime_steps.classifier.model import (
    autocast,
    class_names,
    norm_stats,
    predict_scores,
    pretrained_model,
    save_classifier,
    to_input,
)
from ganime_steps.classifier.plots import plot_confusion, plot_pr
from ganime_steps.classifier.settings import SETTINGS_FILE, ClassifierSettings
from ganime_steps.common import GanimeError, JsonRecord, progress, seed_everything, torch_device, write_json

log = logging.getLogger(__name__)

VAL_SPLIT_NAME = "validation (used for epoch and threshold)"
TEST_SPLIT_NAME = "test (held out)"
_SETTINGS_IN_METRICS = (  # metrics.json's settings besides the task and pretrained (normalised)
    "arch",
    "image_size",
    "seed",
    "val_fraction",
    "test_fraction",
    "lr",
    "backbone_lr_scale",
)


@dataclass
class TrainSummary:
    task: str
    arch: str
    pretrained: str
    pretrained_origin: str
    n_train: int
    n_val: int
    n_test: int
    epochs_run: int
    best_epoch: int
    threshold: float
    val_f1: float  # on the split that chose the epoch and the threshold: optimistic
    test_precision: float | None  # None: no test split (see metrics.json test_note)
    test_recall: float | None
    test_f1: float | None
    test_roc_auc: float | None
    seconds_per_epoch: float
    out: Path


@dataclass
class SplitMetrics(JsonRecord):
    """One split's block of ``metrics.json`` (:func:`~ganime_steps.classifier.metrics.split_metrics`): its name and
    size, class counts, the numbers at the chosen threshold, confusion [[tn, fp], [fn, tp]] and the PR curve."""

    split: str
    n: int
    counts: dict[str, int]
    precision: float
    recall: float
    f1: float
    roc_auc: float | None  # None with one class in the split
    confusion: list[list[int]]
    average_precision: float
    pr_curve: dict[str, list[float]]


@dataclass
class ClassifierMetrics(JsonRecord):
    """``metrics.json``: the record ``train`` writes beside model.pt, read by the report, clean's operating points and
    export. ``val`` chose the epoch and the threshold; ``test`` (None without a test split: ``test_note`` says why)
    is the held-out split that gives the reported numbers."""

    task: str
    arch: str
    pretrained: str
    image_size: int
    seed: int
    val_fraction: float
    test_fraction: float
    lr: float
    backbone_lr_scale: float
    pretrained_origin: str  # where the weights started: "none: random initialisation", "offline: ...", a hub or path
    n_train: int
    n_val: int
    n_test: int
    counts: dict[str, dict[str, int]]  # posts per class ("0", "1") in all, train, val, test
    class_balance: str
    pos_weight: float
    epochs_run: int
    best_epoch: int
    threshold: float
    threshold_rule: str
    threshold_rule_met: bool
    test: SplitMetrics | None
    test_note: str | None
    val: SplitMetrics
    history: list[dict[str, Any]]  # one row per epoch
    seconds_per_epoch: float
    device: str

    @property
    def classes(self) -> list[str]:
        """The class names, negative first (model.pt's ``classes``)."""
        return class_names(self.task)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ClassifierMetrics:
        """The record back from :meth:`to_json`'s object, its split blocks as :class:`SplitMetrics`."""
        values = cls.field_values(obj)
        test = values["test"]
        return cls(
            **{
                **values,
                "test": None if test is None else SplitMetrics.from_json(test),
                "val": SplitMetrics.from_json(values["val"]),
            }
        )


@dataclass(frozen=True)
class _Job:
    """One training job: its task, its settings and how it runs (see :func:`run_train`)."""

    task: str
    settings: ClassifierSettings
    workers: int
    backbone_weights: str | Path | None

    def check(self) -> None:
        """The task's name, every setting, the worker count and the weights file, before any work."""
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.task or ""):
            raise GanimeError(f"task {self.task!r}: use letters, digits, _ . - only (e.g. chibi, multi, aesthetic)")
        if self.backbone_weights and self.settings.weights != "offline":
            raise GanimeError(f"backbone_weights {self.backbone_weights}: only for pretrained offline")
        check_workers(self.workers)
        self.settings.check()


@dataclass
class _Net:
    """The model being trained, where it runs and how its inputs are normalised."""

    model: Any
    device: Any
    mean: list[float]
    std: list[float]
    batch_size: int
    pretrained_origin: str

    @property
    def channels_last(self) -> bool:
        return self.device.type == "cuda"

    def scores(self, images) -> np.ndarray:
        return predict_scores(self.model, images, self.device, self.mean, self.std, self.batch_size)


@dataclass
class _Best:
    """The best epoch so far: its val F1 and loss, its val scores and a CPU copy of its weights."""

    epoch: int
    f1: float
    loss: float
    scores: np.ndarray
    state: dict


def run_train(
    settings: ClassifierSettings | None = None,  # what to train (None: the schema's defaults); classifier_config.json
    *,
    posts: Path,  # posts.parquet (images resolved relative to its folder)
    labels: Path,  # labels parquet: source, post_id, md5, label (0/1)
    out: Path,  # the output folder
    task: str,  # the task's name, stored in the model (chibi, multi, aesthetic)
    device: str = "auto",  # cpu, cuda, cuda:N; auto: CUDA if present
    workers: int = 0,  # DataLoader worker processes
    backbone_weights: str | Path | None = None,  # pretrained offline: the converted weights file
) -> TrainSummary:
    """Train one binary classifier of ``settings`` for ``task``
    (``run_train(ClassifierSettings(arch="resnet18", epochs=3), posts=..., labels=..., out=..., task="chibi")``);
    write model.pt, metrics.json, pr_curve.png, confusion.png and the settings as classifier_config.json into
    ``out``. The keywords are the task, the paths and where and how the job runs, never settings.

    ``pretrained`` other than none fine-tunes: the new head learns at ``lr``, the pretrained backbone at
    ``lr * backbone_lr_scale``. ``backbone_weights``: the converted file for ``pretrained`` offline (default: found by
    :func:`ganime_steps.backbones.weights_path`)."""
    s = settings or ClassifierSettings()
    posts, labels, out = Path(posts), Path(labels), Path(out)
    job = _Job(task, s, workers, backbone_weights)
    job.check()
    dev = torch_device(device)

    d = _prepare(posts, labels, job, dev)
    best, history = _fit(d.net, d.loader, d.val_images, d.y_val, job, d.pos_weight)

    # epoch and threshold are now fixed from validation data alone; only then score and read the test split
    threshold, rule_met, val_block = _validation_result(best, d.y_val, s.threshold_rule)
    test_block = _test_result(d.net, best, d.test_images, d.y_all[d.split.test], threshold, task, val_block)
    metrics = ClassifierMetrics(
        task=task,
        pretrained=s.weights,
        **{k: getattr(s, k) for k in _SETTINGS_IN_METRICS},
        pretrained_origin=d.net.pretrained_origin,
        **_split_counts(d.split, d.y_all),
        class_balance="BCEWithLogitsLoss pos_weight = n_negative / n_positive (train)",
        pos_weight=d.pos_weight,
        epochs_run=len(history),
        best_epoch=best.epoch,
        threshold=threshold,
        threshold_rule=s.threshold_rule,
        threshold_rule_met=rule_met,
        test=None if test_block is None else SplitMetrics.from_json(test_block),
        test_note=d.split.test_note,
        val=SplitMetrics.from_json(val_block),
        history=history,
        seconds_per_epoch=float(np.mean([h["seconds"] for h in history])),
        device=str(dev),
    )
    _write_outputs(out, d.net, best, metrics, s)
    return _summary(metrics, out)


# --------------------------------------------------------------------------------------------------------------
# Steps of run_train


@dataclass
class _Prepared:
    """Everything the training loop and the final scoring need: the network, the split, its images and labels."""

    net: _Net
    split: Split
    y_all: np.ndarray  # labels of every labelled post (the test ones are read only after training)
    loader: Any  # shuffled, augmented training batches
    val_images: Any
    test_images: Any
    pos_weight: float

    @property
    def y_val(self) -> np.ndarray:
        return self.y_all[self.split.val]


def _prepare(posts: Path, labels: Path, job: _Job, dev) -> _Prepared:
    """Labels joined to the posts, the split, a seeded new network, the images (decoded once) and the train loader;
    in this order, so that the seeded random state is used as it always was."""
    import torch

    s = job.settings
    data = labelled_posts(posts, labels)
    y_all = data["label"].to_numpy()
    split = _split(data, job)
    seed_everything(s.seed)
    net = _new_net(job, dev)
    paths = resolve_paths(posts, data["file"])
    images = load_images(paths, s.image_size, batch_size=s.batch_size, workers=job.workers, desc=f"{job.task} images")
    train_images, val_images, test_images = (images[torch.from_numpy(i)] for i in (split.train, split.val, split.test))
    loader = train_loader(
        train_images,
        y_all[split.train],
        image_size=s.image_size,
        batch_size=s.batch_size,
        workers=job.workers,
        seed=s.seed,
        device=dev,
    )
    return _Prepared(net, split, y_all, loader, val_images, test_images, _pos_weight(y_all[split.train]))


def _split(data, job: _Job) -> Split:
    """:func:`split_by_post` of the labelled posts, logged (train and val class counts; test only by size)."""
    s = job.settings
    split = split_by_post(data, seed=s.seed, val_fraction=s.val_fraction, test_fraction=s.test_fraction)
    y_all = data["label"].to_numpy()
    # test labels are read only after the epoch and the threshold are fixed (after the training loop)
    log.info(
        "%s: %d labelled posts -> train %s, val %s, test %d posts",
        job.task,
        len(data),
        counts(y_all[split.train]),
        counts(y_all[split.val]),
        len(split.test),
    )
    if split.test_note:
        log.warning("%s: %s", job.task, split.test_note)
    return split


def _new_net(job: _Job, dev) -> _Net:
    import torch

    s = job.settings
    model, origin = pretrained_model(s.arch, s.weights, job.backbone_weights)
    log.info("%s: %s weights: %s", job.task, s.arch, origin)
    model = model.to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    mean, std = norm_stats(model)  # the pretrained weights' own input normalisation (timm's pretrained_cfg)
    return _Net(model, dev, mean, std, s.batch_size, origin)


def _pos_weight(y_train: np.ndarray) -> float:
    """Class balance: positives weigh n_negative / n_positive, so each class contributes equally to the loss."""
    n_pos, n_neg = int(y_train.sum()), int(len(y_train) - y_train.sum())
    return n_neg / n_pos


def _fit(net: _Net, loader, val_images, y_val: np.ndarray, job: _Job, pos_weight: float):
    """AdamW with cosine decay over all steps; keeps the best epoch by val F1 and stops after ``patience`` epochs
    without a gain. Returns the best epoch (:class:`_Best`) and the per-epoch history."""
    import torch

    s, task = job.settings, job.task
    criterion = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, device=net.device))
    optimizer = torch.optim.AdamW(_param_groups(net.model, s), weight_decay=1e-2)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, s.epochs * len(loader)))
    best: _Best | None = None
    history: list[dict[str, Any]] = []
    for epoch in range(1, s.epochs + 1):
        t0 = time.perf_counter()
        desc = f"{task} epoch {epoch}/{s.epochs}"
        train_loss = _train_epoch(net, loader, criterion, optimizer, scheduler, desc=desc)
        val_scores = net.scores(val_images)
        val_loss = _val_loss(val_scores, y_val, pos_weight)
        thr, _ = select_threshold(val_scores, y_val, s.threshold_rule)
        val_f1 = binary_metrics(val_scores, y_val, thr)["f1"]
        seconds = time.perf_counter() - t0
        history.append(
            {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_f1": val_f1, "seconds": seconds}
        )
        log.info(
            "%s epoch %d: train loss %.4f, val loss %.4f, val F1 %.3f (%.1fs)",
            *(task, epoch, train_loss, val_loss, val_f1, seconds),
        )
        if _better(val_f1, val_loss, best):
            state = {k: v.detach().to("cpu", copy=True) for k, v in net.model.state_dict().items()}
            best = _Best(epoch, val_f1, val_loss, val_scores, state)
        elif epoch - best.epoch >= s.patience:
            log.info("%s: early stop after epoch %d (no val F1 gain for %d epochs)", task, epoch, s.patience)
            break
    assert best is not None
    return best, history


def _param_groups(model, s: ClassifierSettings) -> list[dict[str, Any]]:
    """Fine-tuning: the new head at ``lr``, the pretrained backbone at ``lr * backbone_lr_scale`` (a few hundred
    labels would otherwise wash out the ImageNet features in the first epochs). From scratch: one group at ``lr``."""
    if not s.fine_tune:
        return [{"params": list(model.parameters()), "lr": s.lr}]
    head_ids = {id(p) for p in model.get_classifier().parameters()}
    head = [p for p in model.parameters() if id(p) in head_ids]
    body = [p for p in model.parameters() if id(p) not in head_ids]
    return [{"params": head, "lr": s.lr}, {"params": body, "lr": s.lr * s.backbone_lr_scale}]


def _train_epoch(net: _Net, loader, criterion, optimizer, scheduler, *, desc: str) -> float:
    """One pass over the shuffled, augmented training batches; the mean training loss."""
    net.model.train()
    total, seen = 0.0, 0
    for x, y in progress(loader, total=len(loader), desc=desc):
        x = to_input(x, net.device, net.mean, net.std, net.channels_last)
        y = y.to(net.device, non_blocking=True)
        with autocast(net.device):
            logits = net.model(x).squeeze(1)
        loss = criterion(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total += loss.item() * len(y)
        seen += len(y)
    return total / max(seen, 1)


def _val_loss(scores: np.ndarray, labels: np.ndarray, pos_weight: float) -> float:
    """The training loss (class-weighted binary cross-entropy) of validation scores."""
    import torch

    y = torch.from_numpy(labels).float().double()
    p = torch.from_numpy(scores).double().clamp(1e-7, 1 - 1e-7)
    return float(torch.nn.functional.binary_cross_entropy(p, y, weight=1 + (pos_weight - 1) * y))


def _better(val_f1: float, val_loss: float, best: _Best | None) -> bool:
    """Best = highest val F1; equal F1 (common on small val sets) is broken by lower val loss."""
    if best is None or val_f1 > best.f1 + 1e-12:
        return True
    return abs(val_f1 - best.f1) <= 1e-12 and val_loss < best.loss


def _validation_result(best: _Best, y_val: np.ndarray, threshold_rule: str) -> tuple[float, bool, dict[str, Any]]:
    """The threshold the rule picks on the best epoch's val scores, whether the rule was met, and the val block."""
    threshold = choose_threshold(best.scores, y_val, threshold_rule)
    _, rule_met = select_threshold(best.scores, y_val, threshold_rule)
    return threshold, rule_met, {"split": VAL_SPLIT_NAME, **split_metrics(best.scores, y_val, threshold)}


def _test_result(net: _Net, best: _Best, test_images, y_test: np.ndarray, threshold: float, task: str, val_block):
    """The held-out test block of the best epoch at ``threshold`` (None without a test split)."""
    if not len(y_test):
        return None
    net.model.load_state_dict(best.state)
    test_block = {"split": TEST_SPLIT_NAME, **split_metrics(net.scores(test_images), y_test, threshold)}
    log.info(
        "%s: test (held out, %d posts) precision %.3f, recall %.3f, F1 %.3f; validation F1 %.3f",
        task,
        len(y_test),
        test_block["precision"],
        test_block["recall"],
        test_block["f1"],
        val_block["f1"],
    )
    return test_block


def _split_counts(split: Split, y_all: np.ndarray) -> dict[str, Any]:
    return {
        "n_train": len(split.train),
        "n_val": len(split.val),
        "n_test": len(split.test),
        "counts": {
            "all": counts(y_all),
            "train": counts(y_all[split.train]),
            "val": counts(y_all[split.val]),
            "test": counts(y_all[split.test]),
        },
    }


def _write_outputs(out: Path, net: _Net, best: _Best, metrics: ClassifierMetrics, settings: ClassifierSettings) -> None:
    """model.pt (the best epoch's weights), metrics.json, the two figures and the settings as asked for
    (classifier_config.json: ``classifier train --config`` of it trains the same classifier again)."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / SETTINGS_FILE, settings.to_json())
    save_classifier(
        out / "model.pt",
        best.state,
        arch=metrics.arch,
        image_size=metrics.image_size,
        threshold=metrics.threshold,
        task=metrics.task,
        mean=net.mean,
        std=net.std,
    )
    write_json(out / "metrics.json", metrics.to_json())
    blocks = [b.to_json() for b in (metrics.test, metrics.val) if b is not None]
    plot_pr(out / "pr_curve.png", blocks, metrics.threshold, metrics.task)
    plot_confusion(out / "confusion.png", blocks, metrics.task, metrics.threshold)


def _summary(metrics: ClassifierMetrics, out: Path) -> TrainSummary:
    test = metrics.test
    return TrainSummary(
        task=metrics.task,
        arch=metrics.arch,
        pretrained=metrics.pretrained,
        pretrained_origin=metrics.pretrained_origin,
        n_train=metrics.n_train,
        n_val=metrics.n_val,
        n_test=metrics.n_test,
        epochs_run=metrics.epochs_run,
        best_epoch=metrics.best_epoch,
        threshold=metrics.threshold,
        val_f1=metrics.val.f1,
        test_precision=None if test is None else test.precision,
        test_recall=None if test is None else test.recall,
        test_f1=None if test is None else test.f1,
        test_roc_auc=None if test is None else test.roc_auc,
        seconds_per_epoch=metrics.seconds_per_epoch,
        out=out,
    )
