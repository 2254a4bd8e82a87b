"""Stage gold: the gold reference set, the posts known to be clean on every cleaning task.

Every run is measured against three references (its own training set, the shared reference and this gold set),
and every dataset is measured against gold with no GAN at all ("data FID"), which shows what the cleaning alone
did. Known clean means:

- real pipeline: hand-labelled negative (label 0) on every cleaning task (``--labels TASK=labels.parquet``), so a
  post labelled on only some tasks is not gold;
- synthetic booru: the generator's true flags are all clean (``--truth truth.parquet``: not chibi, not multiple,
  not busy, standing), whatever the (noisy) hand labels say.

Gold must be a random sample of the clean posts, not every post that happens to be labelled: later label queues pick
posts near a classifier's threshold, so "all posts labelled clean" over-represents the hard cases. With ``--sample``
(the uniform draw of ``label_queue gold``, ``results/label_queue/gold/sample.csv``) only posts of that draw can be gold.

Writes ``manifest.parquet`` in the dataset manifest format (``kept`` marks gold rows, ``removed_by`` says why a post
is not gold) and ``summary.json``; ``clean pack`` packs it like any dataset. With ``--faces`` it writes the gold face
set instead: the face crops of gold posts, the reference for face runs.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ganime_steps.clean import MANIFEST_COLUMNS, in_sample
from ganime_steps.common import (
    GanimeError,
    call_with_args,
    parse_assignments,
    read_parquet,
    run_cli,
    write_json,
    write_parquet,
)

log = logging.getLogger(__name__)

MIN_GOLD = 4  # fewest images the evaluate stage can take statistics and k-NN radii of
# Synthetic truth: the flaw each column marks ("~col": the post is flawed when col is False).
TRUTH_FLAWS = {"chibi": "chibi", "multiple": "multiple", "busy": "busy", "not standing": "~standing"}


@dataclass
class GoldSummary:
    dataset: str
    unit: str  # "post" or "face"
    basis: str  # "hand labels" or "synthetic truth"
    tasks: list[str]
    n_total: int
    n_kept: int
    not_gold: dict[str, int] = field(default_factory=dict)  # reason -> count


def _from_labels(posts: pd.DataFrame, labels: dict[str, Path]) -> pd.Series:
    """Why each post is not gold ('' = gold) from hand labels: unlabelled on a task, or labelled positive."""
    reason = pd.Series([""] * len(posts), index=posts.index, dtype=object)
    keys = posts[["source", "post_id"]]
    for task, path in labels.items():
        table = read_parquet(path, ["source", "post_id", "label"]).drop_duplicates(["source", "post_id"])
        joined = keys.merge(table[["source", "post_id", "label"]], on=["source", "post_id"], how="left")
        label = joined["label"].to_numpy()
        unlabelled = pd.isna(label)
        positive = ~unlabelled & (np.nan_to_num(label.astype(float)) > 0)
        fresh = reason.to_numpy() == ""
        reason[fresh & unlabelled] = f"unlabelled:{task}"
        reason[fresh & positive] = f"labelled:{task}"
    return reason


def _from_truth(posts: pd.DataFrame, truth: Path) -> pd.Series:
    """Why each post is not gold ('' = gold) from the synthetic generator's true flags."""
    cols = sorted({c.lstrip("~") for c in TRUTH_FLAWS.values()})
    table = read_parquet(truth, ["source", "post_id", *cols]).drop_duplicates(["source", "post_id"])
    joined = posts[["source", "post_id"]].merge(table, on=["source", "post_id"], how="left", indicator=True)
    reason = pd.Series([""] * len(posts), index=posts.index, dtype=object)
    reason[(joined["_merge"] == "left_only").to_numpy()] = "not in truth table"
    for flaw, expr in TRUTH_FLAWS.items():
        values = joined[expr.lstrip("~")].fillna(expr.startswith("~")).to_numpy(dtype=bool)
        flawed = ~values if expr.startswith("~") else values
        reason[(reason.to_numpy() == "") & flawed] = f"truth:{flaw}"
    return reason


def _outside_sample(posts: pd.DataFrame, sample: Path, reason: pd.Series) -> pd.Series:
    """Posts not in the uniform gold draw are not gold, whatever their labels say."""
    reason = reason.copy()
    reason[~in_sample(posts, sample)] = "not in the gold sample"
    return reason


def _manifest(table: pd.DataFrame, reason: pd.Series, base: Path) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "source": table["source"].to_numpy(),
            "post_id": table["post_id"].to_numpy(),
            "md5": table["md5"].to_numpy(),
            "file": [str(base / f) for f in table["file"]],  # usable from the working directory, like clean filter
            "kept": (reason == "").to_numpy(),
            "removed_by": reason.to_numpy(),
            "removed_score": np.nan,
        }
    )[MANIFEST_COLUMNS]


def run_gold(
    *,
    posts: Path,
    out: Path,
    labels: dict[str, Path] | None = None,
    truth: Path | None = None,
    faces: Path | None = None,
    sample: Path | None = None,
) -> GoldSummary:
    """Select the gold posts; write manifest.parquet + summary.json under ``out``. With ``faces``: the gold face
    set instead (the face crops of gold posts). With ``sample``: only posts of that uniform draw can be gold."""
    if (truth is None) == (not labels):
        raise GanimeError("gold: give either --truth truth.parquet (synthetic) or --labels TASK=labels.parquet ...")
    table = read_parquet(posts, ["source", "post_id", "md5", "file"])
    if truth is not None:
        basis, tasks, reason = "synthetic truth", list(TRUTH_FLAWS), _from_truth(table, Path(truth))
        how = "the synthetic booru needs more posts (scrape.synthetic.n_posts)"
    else:
        basis, tasks, reason = "hand labels", sorted(labels), _from_labels(table, labels)
        how = "label more posts negative on every task, or set evaluation.gold: false"
    if sample is not None:
        reason = _outside_sample(table, Path(sample), reason)
        if truth is None:
            how = (
                f"label every post of the gold queue (next to {sample}: one .json per task) on every task and list "
                "the exports under labels.<task>, draw more (evaluation.gold_queue.size), or set evaluation.gold: false"
            )
    manifest = _manifest(table, reason, Path(posts).parent)
    n_gold_posts = int(manifest["kept"].sum())
    unit = "post"
    if faces is not None:
        unit = "face"
        face_table = read_parquet(faces, ["source", "post_id", "md5", "file"])
        gold_keys = manifest.loc[manifest["kept"], ["source", "post_id"]].assign(_gold=True)
        joined = face_table.merge(gold_keys, on=["source", "post_id"], how="left")
        face_reason = pd.Series(np.where(joined["_gold"].fillna(False).astype(bool), "", "post not gold"))
        manifest = _manifest(face_table, face_reason, Path(faces).parent)
    n_kept = int(manifest["kept"].sum())
    if n_kept < MIN_GOLD:
        raise GanimeError(
            f"gold: only {n_kept} {unit}s ({n_gold_posts} posts of {posts}) are known clean on every task "
            f"({', '.join(tasks)}; basis: {basis}); the gold reference needs at least {MIN_GOLD}: {how}"
        )
    counts = manifest.loc[~manifest["kept"], "removed_by"].value_counts()
    summary = GoldSummary(
        Path(out).name, unit, basis, tasks, len(manifest), n_kept, {k: int(v) for k, v in counts.items()}
    )
    write_parquet(Path(out) / "manifest.parquet", manifest)
    write_json(Path(out) / "summary.json", summary)
    log.info("gold %ss (%s): %d of %d clean on every task", unit, basis, n_kept, len(manifest))
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ganime_steps.gold", description=__doc__.split("\n\n")[0])
    p.add_argument("--posts", type=Path, required=True, help="posts.parquet of the scrape")
    p.add_argument("--labels", nargs="*", default=[], help="TASK=results/labels/<task>.parquet for every cleaning task")
    p.add_argument("--truth", type=Path, help="results/synthetic/truth.parquet (synthetic source: the true flags)")
    p.add_argument("--faces", type=Path, help="faces.parquet: write the gold face set (the faces of gold posts)")
    p.add_argument("--sample", type=Path, help="sample.csv of label_queue gold: only posts of this uniform draw")
    p.add_argument("--out", type=Path, required=True, help="folder: manifest.parquet, summary.json")
    return p


def main(argv: list[str] | None = None) -> int:
    def _handle(a: argparse.Namespace) -> GoldSummary:
        labels = {k: Path(v) for k, v in parse_assignments(a.labels, "--labels").items()}
        return call_with_args(run_gold, a, labels=labels)

    return run_cli(build_parser(), _handle, argv)


if __name__ == "__main__":
    raise SystemExit(main())
