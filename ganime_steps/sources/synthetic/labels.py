"""The synthetic booru's ground truth and simulated hand labels: the stage behind ``synthetic_labels``."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ganime_steps.common import GanimeError, progress, read_parquet, write_parquet, write_text
from ganime_steps.sources.synthetic.plan import STUDY_TAGS
from ganime_steps.sources.synthetic.render import render_post
from ganime_steps.sources.synthetic.source import SOURCE_NAME, SyntheticSource, parse_query

log = logging.getLogger(__name__)

LABEL_FILES = {
    "chibi": "synthetic_hand_labels_chibi.csv",
    "multi": "synthetic_hand_labels_multi.csv",
    "aesthetic": "synthetic_hand_labels_aesthetic.csv",
}
# Which truth column a hand-label task asks about (positive = 1).
LABEL_TRUTH_COLUMN = {"chibi": "chibi", "multi": "multiple", "aesthetic": "busy"}
TRUTH_COLUMNS = ("source", "post_id", "chibi", "multiple", "busy", "standing", "n_characters")


@dataclass
class SyntheticSummary:
    n_posts: int
    seed: int
    rates: dict[str, float]
    positives: dict[str, int]
    study_query_matches: int
    label_rows: dict[str, int]
    truth: Path


def truth_table(source: SyntheticSource):
    """Ground truth per post, from the plans (nothing is drawn).

    Columns: source, post_id, chibi, multiple, busy, standing, n_characters.
    """
    import pandas as pd

    rows = []
    for post_id in range(1, source.n_posts + 1):
        plan = source.plan(post_id)
        rows.append((source.name, post_id, plan.chibi, plan.multiple, plan.busy, plan.standing, plan.n_characters))
    df = pd.DataFrame(rows, columns=list(TRUTH_COLUMNS))
    return df.astype(
        {"post_id": "int64", "chibi": bool, "multiple": bool, "busy": bool, "standing": bool, "n_characters": "int64"}
    )


def write_hand_labels(
    truth, out: Path, *, fraction: float = 0.5, error_rate: float = 0.03, seed: int = 0
) -> dict[str, int]:
    """Simulate a person labelling a random ``fraction`` of posts per task, with ``error_rate`` of labels flipped.

    Writes ``synthetic_hand_labels_{chibi,multi,aesthetic}.csv`` (``post_id,label``; 1 = chibi / more than one
    character / unwanted) into ``out``. Returns the number of rows per file name.
    """
    if not 0.0 < fraction <= 1.0:
        raise GanimeError(f"--label-fraction {fraction}: must be in (0, 1]")
    if not 0.0 <= error_rate < 0.5:
        raise GanimeError(f"--label-error-rate {error_rate}: must be in [0, 0.5)")
    missing = [c for c in ("post_id", *LABEL_TRUTH_COLUMN.values()) if c not in truth.columns]
    if missing:
        raise GanimeError(f"truth table: missing column(s) {', '.join(missing)}; build it with synthetic.truth_table")
    out = Path(out)
    ids = truth["post_id"].to_numpy(dtype=np.int64)
    rows: dict[str, int] = {}
    for task_index, (task, column) in enumerate(LABEL_TRUTH_COLUMN.items()):
        rng = np.random.default_rng([seed, task_index])
        m = int(round(fraction * len(ids)))
        if len(ids) and m == 0:
            m = 1
        chosen = np.sort(rng.choice(len(ids), size=m, replace=False))
        labels = truth[column].to_numpy(dtype=bool)[chosen].astype(np.int64)
        n_flip = int(round(error_rate * m))
        flip = rng.choice(m, size=n_flip, replace=False)
        labels[flip] = 1 - labels[flip]
        lines = ["post_id,label"] + [f"{pid},{lab}" for pid, lab in zip(ids[chosen], labels, strict=True)]
        name = LABEL_FILES[task]
        write_text(out / name, "\n".join(lines) + "\n")
        rows[name] = m
    return rows


def study_query_matches(source: SyntheticSource, query: str = " ".join(STUDY_TAGS)) -> int:
    """How many posts the study's tag query returns (flawed ones included)."""
    include, exclude, _ = parse_query(query)
    n = 0
    for post_id in range(1, source.n_posts + 1):
        tags = set(source.plan(post_id).tags.split())
        n += include <= tags and not exclude & tags
    return n


def run_synthetic_labels(
    *,
    out: Path,
    n_posts: int,
    seed: int,
    label_fraction: float = 0.5,
    label_error_rate: float = 0.03,
    chibi: float | None = None,
    multiple: float | None = None,
    busy: float | None = None,
    nonstanding: float | None = None,
    posts: Path | None = None,
    style: str = "booru",
    name: str = SOURCE_NAME,
) -> SyntheticSummary:
    """Write ``out/truth.parquet`` and the three synthetic hand-label CSVs for a synthetic booru.

    With ``posts`` (the scrape stage's table), labels cover only posts that were scraped: a person labels
    what they downloaded, and the labels stage rejects labels of unknown posts.
    """
    if n_posts < 1:
        raise GanimeError(f"--n-posts {n_posts}: the synthetic booru needs at least 1 post (e.g. --n-posts 300)")
    source = SyntheticSource(n_posts, seed, chibi, multiple, busy, nonstanding, style=style, name=name)
    out = Path(out)
    truth = truth_table(source)
    truth_path = out / "truth.parquet"
    write_parquet(truth_path, truth)
    labelled = truth
    if posts is not None:
        scraped = read_parquet(posts, ["source", "post_id"])
        labelled = truth[truth["post_id"].isin(scraped.loc[scraped["source"] == source.name, "post_id"])]
    label_rows = write_hand_labels(labelled, out, fraction=label_fraction, error_rate=label_error_rate, seed=seed)
    positives = {
        "chibi": int(truth["chibi"].sum()),
        "multiple": int(truth["multiple"].sum()),
        "busy": int(truth["busy"].sum()),
        "nonstanding": int((~truth["standing"]).sum()),
    }
    matches = study_query_matches(source)
    log.info("synthetic booru seed %d: %d posts, flaws %s, study query matches %d", seed, n_posts, positives, matches)
    return SyntheticSummary(
        n_posts=n_posts,
        seed=seed,
        rates=asdict(source.rates),
        positives=positives,
        study_query_matches=matches,
        label_rows=label_rows,
        truth=truth_path,
    )


def render_sheet(
    path: Path, *, seed: int = 0, post_ids: range = range(1, 17), size: int = 128, style: str = "booru", **rates: float
) -> Path:
    """A contact sheet of posts (square-padded on white) for eyeballing the drawing."""
    from ganime_steps.common import save_image
    from ganime_steps.imaging import make_grid, square_resize

    tiles = [square_resize(render_post(seed, i, style, **rates)[0], size) for i in progress(post_ids, desc="sheet")]
    save_image(path, make_grid(np.stack(tiles)))
    return Path(path)
