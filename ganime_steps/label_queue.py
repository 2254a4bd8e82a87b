"""Label queue (active learning): the unlabelled posts a classifier is least sure about, ready for Label Studio.

For one classifier, ranks every post that has no hand label yet by how close its score is to the chosen decision
threshold (the posts where one more label moves the decision most) and exports the ``n`` closest as

- ``<out>.json``: Label Studio tasks (``data.image`` = ``url_prefix`` + the image path, plus post_id, source, md5
  and score; the model's guess as a pre-annotation), importable in the Label Studio UI or API;
- ``<out>.csv``: source, post_id, md5, file, score, threshold, distance;
- ``<out>.xml``: the matching Label Studio labelling config (one Choices control named ``choice``).

Label Studio's JSON, JSON-MIN and CSV exports of those tasks are read back by the labels stage.

The gold sample (``python -m ganime_steps.label_queue gold --posts posts.parquet --tasks chibi multi aesthetic --n 600
--seed 1 --out results/label_queue/gold``) draws ``n`` posts uniformly at random, never near a threshold, and exports
the same posts for every task (``<task>.json/.csv/.xml``) plus ``sample.csv``, the draw itself: the gold reference
is the posts of that sample labelled clean on every task, a random sample of the clean posts.

The first round has no classifier yet: ``python -m ganime_steps.label_queue first-round --posts posts.parquet
--task chibi --n 200 --seed 0 --out results/label_queue/first/chibi`` exports ``n`` scraped posts drawn at random
(reproducibly from ``--seed``; one task per image) in the same three files, without scores or guesses.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ganime_steps.common import GanimeError, call_with_args, read_parquet, run_cli, write_text

log = logging.getLogger(__name__)

CSV_COLUMNS = ["source", "post_id", "md5", "file", "score", "threshold", "distance"]
DEFAULT_URL_PREFIX = "/data/local-files/?d="  # Label Studio local file serving (LOCAL_FILES_DOCUMENT_ROOT)


@dataclass
class QueueSummary:
    task: str
    n_unlabelled: int
    n_queued: int
    threshold: float
    max_distance: float | None
    json: Path
    csv: Path


def labelling_config(task: str, *, scored: bool = True) -> str:
    header = f"{task}? (score $score)" if scored else f"{task}?"
    return (
        "<View>\n"
        '  <Image name="image" value="$image"/>\n'
        f'  <Header value="{header}"/>\n'
        '  <Choices name="choice" toName="image" choice="single" showInLine="true">\n'
        f'    <Choice value="{task}"/>\n'
        f'    <Choice value="not_{task}"/>\n'
        "  </Choices>\n"
        "</View>\n"
    )


def select(candidates: pd.DataFrame, threshold: float, n: int) -> pd.DataFrame:
    """The ``n`` rows whose score is closest to ``threshold``; ties go to the lower post id (stable, reproducible)."""
    # rounded: float32 scores make equal distances differ in the last bits, and ties should go by post id
    ranked = candidates.assign(distance=(candidates["score"].astype(float) - threshold).abs().round(6))
    ranked = ranked.sort_values(["distance", "source", "post_id"], kind="mergesort")
    return ranked.head(n).reset_index(drop=True)


def run_label_queue(
    *,
    posts: Path,
    scores: Path,
    out: Path,
    task: str,
    n: int = 100,
    labels: list[Path] = (),
    threshold: float | None = None,
    url_prefix: str = DEFAULT_URL_PREFIX,
) -> QueueSummary:
    """Write ``out`` with suffixes .json, .csv and .xml (see the module doc)."""
    if n < 1:
        raise GanimeError(f"label queue size {n}: must be >= 1")
    posts, scores, out = Path(posts), Path(scores), Path(out)
    post_table = read_parquet(posts, ["source", "post_id", "md5", "file"])
    score_table = read_parquet(scores, ["source", "post_id", "score"])
    if threshold is None:
        if "threshold" not in score_table or score_table["threshold"].isna().all():
            raise GanimeError(f"{scores}: no threshold column; rescore with this version or pass --threshold")
        threshold = float(score_table["threshold"].dropna().iloc[0])
    if not 0.0 <= threshold <= 1.0:
        raise GanimeError(f"threshold {threshold}: must be in [0, 1]")
    table = score_table[["source", "post_id", "score"]].merge(
        post_table[["source", "post_id", "md5", "file"]], on=["source", "post_id"], how="inner"
    )
    if len(table) < len(score_table):
        log.warning("%s: %d scored post(s) are not in %s; left out", scores, len(score_table) - len(table), posts)
    labelled: set[str] = set()
    for path in labels:
        labelled |= set(read_parquet(path, ["md5"])["md5"].astype(str))
    # one task per image: the same image under two post ids needs one label
    candidates = table[~table["md5"].astype(str).isin(labelled)].drop_duplicates("md5")
    queue = select(candidates, threshold, n)
    # paths as the workflow sees them (relative to the working directory, which is Label Studio's document root)
    queue["file"] = [str(posts.parent / f) for f in queue["file"]]
    queue["threshold"] = threshold

    tasks = []
    for row in queue.itertuples(index=False):
        guess = task if row.score >= threshold else f"not_{task}"
        tasks.append(
            {
                "data": {
                    "image": f"{url_prefix}{row.file}",
                    "post_id": int(row.post_id),
                    "source": str(row.source),
                    "md5": str(row.md5),
                    "score": round(float(row.score), 4),
                },
                "predictions": [
                    {
                        "model_version": f"ganime-{task}",
                        "score": float(abs(row.score - threshold)),
                        "result": [
                            {
                                "from_name": "choice",
                                "to_name": "image",
                                "type": "choices",
                                "value": {"choices": [guess]},
                            }
                        ],
                    }
                ],
            }
        )
    json_path, csv_path, xml_path = out.with_suffix(".json"), out.with_suffix(".csv"), out.with_suffix(".xml")
    write_text(json_path, json.dumps(tasks, indent=1) + "\n")
    write_text(csv_path, queue[CSV_COLUMNS].to_csv(index=False, float_format="%.6f", lineterminator="\n"))
    write_text(xml_path, labelling_config(task))
    max_distance = float(queue["distance"].max()) if len(queue) else None
    log.info(
        "%s: %d of %d unlabelled posts queued (|score - %.3f| <= %s)",
        task,
        len(queue),
        len(candidates),
        threshold,
        "—" if max_distance is None else f"{max_distance:.3f}",
    )
    return QueueSummary(task, len(candidates), len(queue), threshold, max_distance, json_path, csv_path)


def first_round(
    *,
    posts: Path,
    out: Path,
    task: str,
    n: int = 200,
    seed: int = 0,
    labels: list[Path] = (),
    url_prefix: str = DEFAULT_URL_PREFIX,
) -> QueueSummary:
    """The first labelling round: ``n`` random scraped posts (no labels or classifier needed), as .json/.csv/.xml.

    The draw depends only on the set of posts and ``seed`` (posts are put in (source, post_id) order first), so a
    rerun on the same scrape exports the same tasks. Posts whose image is in a ``labels`` table are left out.
    """
    if n < 1:
        raise GanimeError(f"first-round size {n}: must be >= 1")
    posts, out = Path(posts), Path(out)
    table = read_parquet(posts, ["source", "post_id", "md5", "file"])
    labelled: set[str] = set()
    for path in labels:
        labelled |= set(read_parquet(path, ["md5"])["md5"].astype(str))
    candidates = table.sort_values(["source", "post_id"], kind="mergesort").drop_duplicates("md5")
    candidates = candidates[~candidates["md5"].astype(str).isin(labelled)].reset_index(drop=True)
    if candidates.empty:
        raise GanimeError(f"{posts}: no unlabelled post to queue for {task}; scrape first (or all are labelled)")
    if n > len(candidates):
        log.warning("%s: asked for %d posts, only %d unlabelled; queueing them all", task, n, len(candidates))
    pick = np.random.default_rng(seed).permutation(len(candidates))[: min(n, len(candidates))]
    queue = candidates.iloc[pick].reset_index(drop=True)
    queue["file"] = [str(posts.parent / f) for f in queue["file"]]
    for column in ("score", "threshold", "distance"):
        queue[column] = float("nan")
    tasks = [
        {
            "data": {
                "image": f"{url_prefix}{row.file}",
                "post_id": int(row.post_id),
                "source": str(row.source),
                "md5": str(row.md5),
            }
        }
        for row in queue.itertuples(index=False)
    ]
    json_path, csv_path, xml_path = out.with_suffix(".json"), out.with_suffix(".csv"), out.with_suffix(".xml")
    write_text(json_path, json.dumps(tasks, indent=1) + "\n")
    write_text(csv_path, queue[CSV_COLUMNS].to_csv(index=False, float_format="%.6f", lineterminator="\n"))
    write_text(xml_path, labelling_config(task, scored=False))
    log.info("%s: first round of %d random posts (of %d unlabelled, seed %d)", task, len(queue), len(candidates), seed)
    return QueueSummary(task, len(candidates), len(queue), float("nan"), None, json_path, csv_path)


SAMPLE_COLUMNS = ["source", "post_id", "md5", "file"]


@dataclass
class GoldQueueSummary:
    tasks: list[str]
    n_posts: int
    n_drawn: int
    seed: int
    sample: Path


def gold_queue(
    *,
    posts: Path,
    out: Path,
    tasks: list[str],
    n: int = 600,
    seed: int = 1,
    url_prefix: str = DEFAULT_URL_PREFIX,
) -> GoldQueueSummary:
    """The gold sample: ``n`` posts drawn uniformly (the first round's draw, ignoring existing labels so the sample
    does not depend on what was labelled before), exported for labelling on every task, and ``sample.csv``."""
    if not tasks:
        raise GanimeError("gold queue: no --tasks; the gold sample is labelled on every cleaning task")
    out = Path(out)
    queues = [
        first_round(posts=posts, out=out / task, task=task, n=n, seed=seed, url_prefix=url_prefix) for task in tasks
    ]
    drawn = pd.read_csv(queues[0].csv)[SAMPLE_COLUMNS]
    sample = out / "sample.csv"
    write_text(sample, drawn.to_csv(index=False, lineterminator="\n"))
    log.info("gold sample: %d of %d posts drawn uniformly (seed %d), queued on %s", len(drawn), queues[0].n_unlabelled,
             seed, ", ".join(tasks))  # fmt: skip
    return GoldQueueSummary(list(tasks), queues[0].n_unlabelled, len(drawn), seed, sample)


def _add_url_prefix_and_out(
    p: argparse.ArgumentParser, out_help: str = "output path without suffix: writes .json, .csv, .xml"
) -> argparse.ArgumentParser:
    """The last two flags of every command."""
    p.add_argument(
        "--url-prefix",
        default=DEFAULT_URL_PREFIX,
        help="prepended to each image path in the Label Studio tasks (default: %(default)s, local file serving)",
    )
    p.add_argument("--out", type=Path, required=True, help=out_help)
    return p


def build_first_round_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ganime_steps.label_queue first-round",
        description="The first labelling round: N random scraped posts as Label Studio tasks (no classifier needed).",
    )
    p.add_argument("--posts", type=Path, required=True, help="posts.parquet (image paths relative to its folder)")
    p.add_argument("--task", required=True, help="task name, e.g. chibi")
    p.add_argument("--n", type=int, default=200, help="posts to queue (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random draw seed (default: %(default)s)")
    p.add_argument("--labels", type=Path, nargs="*", default=[], help="label tables whose posts are left out")
    return _add_url_prefix_and_out(p)


def build_gold_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ganime_steps.label_queue gold",
        description="The gold sample: N posts drawn uniformly, as Label Studio tasks for every task, and sample.csv.",
    )
    p.add_argument("--posts", type=Path, required=True, help="posts.parquet (image paths relative to its folder)")
    p.add_argument("--tasks", nargs="+", required=True, help="every cleaning task, e.g. chibi multi aesthetic")
    p.add_argument("--n", type=int, default=600, help="posts to draw (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1, help="random draw seed (default: %(default)s)")
    return _add_url_prefix_and_out(p, "folder: sample.csv and <task>.json/.csv/.xml")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ganime_steps.label_queue",
        description=__doc__.split("\n\n")[0],
        epilog="The first round (no classifier yet): python -m ganime_steps.label_queue first-round --help; the gold "
        "sample: python -m ganime_steps.label_queue gold --help",
    )
    p.add_argument("--posts", type=Path, required=True, help="posts.parquet (image paths relative to its folder)")
    p.add_argument("--scores", type=Path, required=True, help="scores.parquet of the classifier")
    p.add_argument("--labels", type=Path, nargs="*", default=[], help="label tables whose posts are already labelled")
    p.add_argument("--task", required=True, help="task name, e.g. chibi")
    p.add_argument("--n", type=int, default=100, help="posts to queue (default: %(default)s)")
    p.add_argument("--threshold", type=float, help="decision threshold (default: the scores table's own)")
    return _add_url_prefix_and_out(p)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["first-round"]:
        return run_cli(build_first_round_parser(), lambda a: call_with_args(first_round, a), argv[1:])
    if argv[:1] == ["gold"]:
        return run_cli(build_gold_parser(), lambda a: call_with_args(gold_queue, a), argv[1:])
    return run_cli(build_parser(), lambda a: call_with_args(run_label_queue, a), argv)


if __name__ == "__main__":
    raise SystemExit(main())
