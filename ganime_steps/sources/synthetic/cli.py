"""``python -m ganime_steps.sources.synthetic``: the synthetic booru's truth table and simulated hand labels."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from ganime_steps.common import call_with_args, run_cli
from ganime_steps.sources.synthetic.labels import SyntheticSummary, render_sheet, run_synthetic_labels
from ganime_steps.sources.synthetic.palette import STYLE_RATES, Rates
from ganime_steps.sources.synthetic.source import SOURCE_NAME


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a probability in [0, 1]")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ganime_steps.sources.synthetic",
        description="Build the synthetic booru's ground truth (truth.parquet) and simulated hand-label CSVs.",
    )
    p.add_argument("--n-posts", type=int, required=True, help="number of posts (ids 1..N), at least 1")
    p.add_argument(
        "--seed", type=int, required=True, help="booru seed: every image is a pure function of (seed, post id)"
    )
    p.add_argument(
        "--label-fraction", type=float, default=0.5, help="fraction of posts hand-labelled per task (default 0.5)"
    )
    p.add_argument(
        "--label-error-rate", type=float, default=0.03, help="fraction of hand labels flipped (default 0.03)"
    )
    p.add_argument("--style", choices=list(STYLE_RATES), default="booru", help="the booru's look (default booru)")
    p.add_argument("--name", default=SOURCE_NAME, help=f"source name in the tables (default {SOURCE_NAME})")
    defaults = {k: f"{v:g}" for k, v in asdict(Rates()).items()}
    tachie = {k: f"{v:g}" for k, v in asdict(STYLE_RATES["tachie"]).items()}
    for rate, what in (
        ("chibi", "chibi posts"),
        ("multiple", "posts with 2-3 characters"),
        ("busy", "busy/unwanted-background posts"),
        ("nonstanding", "sitting/kneeling/lying posts"),
    ):
        p.add_argument(
            f"--{rate}",
            type=_probability,
            default=None,
            help=f"rate of {what} (default: booru {defaults[rate]}, tachie {tachie[rate]})",
        )
    p.add_argument("--posts", type=Path, default=None, help="label only the posts of this scraped posts.parquet")
    p.add_argument("--sheet", type=Path, default=None, help="also write a 4x4 contact sheet of posts 1..16 to this PNG")
    p.add_argument("--out", type=Path, required=True, help="output folder: truth.parquet + synthetic_hand_labels_*.csv")
    return p


def main(argv: list[str] | None = None) -> int:
    def _handle(args: argparse.Namespace) -> SyntheticSummary:
        rates = {"chibi": args.chibi, "multiple": args.multiple, "busy": args.busy, "nonstanding": args.nonstanding}
        summary = call_with_args(run_synthetic_labels, args)
        if args.sheet is not None:
            given = {k: v for k, v in rates.items() if v is not None}
            pages = range(1, min(16, args.n_posts) + 1)
            render_sheet(args.sheet, seed=args.seed, post_ids=pages, style=args.style, **given)
        return summary

    return run_cli(build_parser(), _handle, argv)
