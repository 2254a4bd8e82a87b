"""Label queue: the unlabelled posts closest to the threshold, exported for Label Studio, and read back."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, planned_jobs, snakemake, tiny_config

from ganime_steps import label_queue, labels
from ganime_steps.common import GanimeError

# scores of posts 1..12; threshold 0.4: distances .35 .30 .25 .20 .10 .05 .0 .05 .10 .20 .30 .55
SCORES = [0.05, 0.10, 0.15, 0.20, 0.30, 0.35, 0.40, 0.45, 0.50, 0.60, 0.70, 0.95]


@pytest.fixture
def scored(posts, tmp_path):
    table = pd.read_parquet(posts)[["source", "post_id", "md5"]]
    table["score"] = np.array(SCORES, dtype=np.float32)
    table["predicted"] = table["score"] >= 0.4
    table["threshold"] = 0.4
    table.to_parquet(tmp_path / "scores.parquet")
    already = table.loc[table["post_id"].isin([7, 6]), ["source", "post_id", "md5"]].assign(label=1, origin="x")
    already.to_parquet(tmp_path / "labelled.parquet")
    return {"scores": tmp_path / "scores.parquet", "labels": tmp_path / "labelled.parquet"}


def test_queue_picks_most_uncertain_unlabelled(posts, scored, tmp_path):
    out = tmp_path / "queue" / "chibi"
    summary = label_queue.run_label_queue(
        posts=posts, scores=scored["scores"], labels=[scored["labels"]], out=out, task="chibi", n=4
    )
    queue = pd.read_csv(out.with_suffix(".csv"))
    # 7 (distance 0) and 6 are labelled already; next closest: 8 (.05), then 5 and 9 (.10, tie -> lower id), then 4/10
    assert queue["post_id"].tolist() == [8, 5, 9, 4]
    assert list(queue.columns) == label_queue.CSV_COLUMNS
    assert summary.n_unlabelled == 10 and summary.n_queued == 4 and summary.threshold == pytest.approx(0.4)
    assert all((posts.parent / "images").as_posix() in f for f in queue["file"])
    tasks = json.loads(out.with_suffix(".json").read_text())
    first = tasks[0]
    assert first["data"]["image"] == "/data/local-files/?d=" + queue["file"][0]
    assert first["data"]["post_id"] == 8 and first["data"]["md5"] == queue["md5"][0]
    assert first["predictions"][0]["result"][0]["value"]["choices"] == ["chibi"]  # 0.45 >= 0.4
    assert tasks[1]["predictions"][0]["result"][0]["value"]["choices"] == ["not_chibi"]
    assert '<Choice value="not_chibi"/>' in out.with_suffix(".xml").read_text()


def test_round_trip_label_studio_export_back_to_labels(posts, scored, tmp_path):
    """The documented loop: queue -> label in Label Studio -> its JSON export -> the labels stage."""
    out = tmp_path / "queue" / "chibi"
    label_queue.run_label_queue(
        posts=posts, scores=scored["scores"], out=out, task="chibi", n=3, url_prefix="http://ls:8080/"
    )
    tasks = json.loads(out.with_suffix(".json").read_text())
    export = []
    for i, t in enumerate(tasks):  # what Label Studio exports after a person accepts or corrects each guess
        choice = "chibi" if i == 0 else "not_chibi"
        result = [{"from_name": "choice", "to_name": "image", "type": "choices", "value": {"choices": [choice]}}]
        export.append({"id": i + 1, "data": t["data"], "annotations": [{"id": i + 10, "result": result}]})
    path = tmp_path / "project-1-at-2026.json"
    path.write_text(json.dumps(export))
    summary = labels.run_labels(posts=posts, label_files=[str(path)], task="chibi", out=tmp_path / "chibi.parquet")
    table = pd.read_parquet(tmp_path / "chibi.parquet")
    assert table["post_id"].tolist() == [7, 6, 8] and table["label"].tolist() == [1, 0, 0]
    assert summary.classes == {"chibi": 1, "not_chibi": 2}
    # images only (no post_id in the data, e.g. tasks made by hand) resolve through the URL's file name
    for task in export:
        task["data"] = {"image": task["data"]["image"]}
    path.write_text(json.dumps(export))
    labels.run_labels(posts=posts, label_files=[str(path)], task="chibi", out=tmp_path / "again.parquet")
    assert pd.read_parquet(tmp_path / "again.parquet")["post_id"].tolist() == [7, 6, 8]


def test_errors_and_cli(posts, scored, tmp_path, capsys):
    with pytest.raises(GanimeError, match="must be >= 1"):
        label_queue.run_label_queue(posts=posts, scores=scored["scores"], out=tmp_path / "q", task="chibi", n=0)
    old = pd.read_parquet(scored["scores"]).drop(columns="threshold")
    old.to_parquet(tmp_path / "old.parquet")
    with pytest.raises(GanimeError, match="no threshold column"):
        label_queue.run_label_queue(posts=posts, scores=tmp_path / "old.parquet", out=tmp_path / "q", task="chibi")
    argv = ["--posts", str(posts), "--scores", str(tmp_path / "old.parquet"), "--task", "chibi", "--n", "2"]
    assert label_queue.main([*argv, "--threshold", "0.9", "--out", str(tmp_path / "q")]) == 0
    assert pd.read_csv(tmp_path / "q.csv")["post_id"].tolist() == [12, 11]
    assert label_queue.main([*argv, "--threshold", "1.5", "--out", str(tmp_path / "r")]) == 2
    assert "must be in [0, 1]" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- first round (no classifier)


def test_first_round_draws_random_posts_reproducibly(posts, tmp_path):
    out = tmp_path / "first" / "chibi"
    summary = label_queue.first_round(posts=posts, out=out, task="chibi", n=5, seed=0)
    queue = pd.read_csv(out.with_suffix(".csv"))
    assert list(queue.columns) == label_queue.CSV_COLUMNS and queue["score"].isna().all()
    assert (summary.n_queued, summary.n_unlabelled) == (5, 12) and queue["md5"].is_unique
    tasks = json.loads(out.with_suffix(".json").read_text())
    assert [t["data"]["post_id"] for t in tasks] == queue["post_id"].tolist()
    assert all("predictions" not in t for t in tasks)  # no model yet: no guesses
    assert tasks[0]["data"]["image"] == "/data/local-files/?d=" + queue["file"][0]
    config = out.with_suffix(".xml").read_text()
    assert '<Choice value="not_chibi"/>' in config and "$score" not in config
    chosen = queue["post_id"].tolist()

    # Same posts (in any row order) and seed: the same draw; another seed: another draw.
    shuffled = tmp_path / "scrape" / "shuffled.parquet"
    pd.read_parquet(posts).sample(frac=1.0, random_state=3).to_parquet(shuffled)
    label_queue.first_round(posts=shuffled, out=tmp_path / "again", task="chibi", n=5, seed=0)
    assert pd.read_csv(tmp_path / "again.csv")["post_id"].tolist() == chosen
    label_queue.first_round(posts=posts, out=tmp_path / "other", task="chibi", n=5, seed=1)
    assert pd.read_csv(tmp_path / "other.csv")["post_id"].tolist() != chosen

    # Labelled images are left out; asking for more than there are queues them all.
    done = pd.read_parquet(posts).head(4)[["source", "post_id", "md5"]].assign(label=1, origin="x")
    done.to_parquet(tmp_path / "done.parquet")
    summary = label_queue.first_round(
        posts=posts, out=tmp_path / "rest", task="chibi", n=50, labels=[tmp_path / "done.parquet"]
    )
    rest = pd.read_csv(tmp_path / "rest.csv")
    assert summary.n_queued == 8 and sorted(rest["post_id"]) == list(range(5, 13))


def test_first_round_export_reads_back_and_cli(posts, tmp_path, capsys):
    out = tmp_path / "first" / "chibi"
    argv = ["first-round", "--posts", str(posts), "--task", "chibi", "--n", "3", "--seed", "7", "--out", str(out)]
    assert label_queue.main(argv) == 0
    tasks = json.loads(out.with_suffix(".json").read_text())
    export = [
        {"id": i, "data": t["data"], "annotations": [{"id": i, "result": [
            {"from_name": "choice", "to_name": "image", "type": "choices", "value": {"choices": [choice]}}]}]}
        for i, (t, choice) in enumerate(zip(tasks, ["chibi", "not_chibi", "chibi"], strict=True))
    ]  # fmt: skip
    (tmp_path / "export.json").write_text(json.dumps(export))
    labels.run_labels(
        posts=posts, label_files=[str(tmp_path / "export.json")], task="chibi", out=tmp_path / "chibi.parquet"
    )
    table = pd.read_parquet(tmp_path / "chibi.parquet")
    assert table["post_id"].tolist() == [t["data"]["post_id"] for t in tasks] and table["label"].tolist() == [1, 0, 1]

    assert label_queue.main([*argv[:-4], "--n", "0", "--out", str(out)]) == 2
    assert "first-round size 0: must be >= 1" in capsys.readouterr().err
    empty = tmp_path / "empty.parquet"
    pd.read_parquet(posts).head(0).to_parquet(empty)
    assert label_queue.main(["first-round", "--posts", str(empty), "--task", "chibi", "--out", str(out)]) == 2
    assert "no unlabelled post" in capsys.readouterr().err


def test_first_label_queues_target_needs_no_labels(tmp_path):
    """A new user has no labels yet: the first-round target plans (and runs) without them."""
    dry = snakemake("-n", "first_label_queues", "--configfile", str(REPO / "config.yaml"), "--directory", str(tmp_path))
    assert dry.returncode == 0, dry.stdout + dry.stderr
    jobs = planned_jobs(dry)
    assert jobs == {"scrape": 1, "first_labels": 3, "first_label_queues": 1}, jobs

    work = tmp_path / "tiny"
    work.mkdir()
    config = tiny_config(work)
    done = snakemake("--cores", "1", "first_label_queues", "--configfile", str(config), "--directory", str(work))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for task in ("chibi", "multi", "aesthetic"):
        tasks = json.loads((work / "results" / "label_queue" / "first" / f"{task}.json").read_text())
        assert tasks and all(t["data"]["image"].startswith("/data/local-files/?d=results/scrape/") for t in tasks)
        assert (work / "results" / "label_queue" / "first" / f"{task}.xml").is_file()
    assert not (work / "results" / "labels").exists() and not (work / "results" / "classifiers").exists()


def test_gold_queue_draws_one_uniform_sample_for_every_task(posts, tmp_path):
    """The same posts for every task, drawn without regard to labels or scores, and sample.csv is that draw."""
    out = tmp_path / "gold"
    summary = label_queue.gold_queue(posts=posts, out=out, tasks=["chibi", "multi"], n=5, seed=3)
    sample = pd.read_csv(out / "sample.csv")
    assert summary.n_drawn == len(sample) == 5 and list(sample.columns) == label_queue.SAMPLE_COLUMNS
    for task in ("chibi", "multi"):
        queued = pd.read_csv(out / f"{task}.csv")
        assert list(queued["post_id"]) == list(sample["post_id"])
        assert (out / f"{task}.json").is_file() and task in (out / f"{task}.xml").read_text()
    again = label_queue.gold_queue(posts=posts, out=tmp_path / "again", tasks=["chibi"], n=5, seed=3)
    assert list(pd.read_csv(again.sample)["post_id"]) == list(sample["post_id"])  # reproducible
    other = label_queue.gold_queue(posts=posts, out=tmp_path / "other", tasks=["chibi"], n=5, seed=4)
    assert list(pd.read_csv(other.sample)["post_id"]) != list(sample["post_id"])
    assert label_queue.main(["gold", "--posts", str(posts), "--tasks", "chibi", "--n", "2", "--out", str(out)]) == 0
