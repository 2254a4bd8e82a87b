"""Label queue: the unlabelled posts closest to the threshold, exported for Label Studio, and read back."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

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
    summary = label_queue.run(
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
    label_queue.run(posts=posts, scores=scored["scores"], out=out, task="chibi", n=3, url_prefix="http://ls:8080/")
    tasks = json.loads(out.with_suffix(".json").read_text())
    export = []
    for i, t in enumerate(tasks):  # what Label Studio exports after a person accepts or corrects each guess
        choice = "chibi" if i == 0 else "not_chibi"
        result = [{"from_name": "choice", "to_name": "image", "type": "choices", "value": {"choices": [choice]}}]
        export.append({"id": i + 1, "data": t["data"], "annotations": [{"id": i + 10, "result": result}]})
    path = tmp_path / "project-1-at-2026.json"
    path.write_text(json.dumps(export))
    summary = labels.run(posts=posts, sources=[str(path)], task="chibi", out=tmp_path / "chibi.parquet")
    table = pd.read_parquet(tmp_path / "chibi.parquet")
    assert table["post_id"].tolist() == [7, 6, 8] and table["label"].tolist() == [1, 0, 0]
    assert summary.classes == {"chibi": 1, "not_chibi": 2}
    # images only (no post_id in the data, e.g. tasks made by hand) resolve through the URL's file name
    for task in export:
        task["data"] = {"image": task["data"]["image"]}
    path.write_text(json.dumps(export))
    labels.run(posts=posts, sources=[str(path)], task="chibi", out=tmp_path / "again.parquet")
    assert pd.read_parquet(tmp_path / "again.parquet")["post_id"].tolist() == [7, 6, 8]


def test_errors_and_cli(posts, scored, tmp_path, capsys):
    with pytest.raises(GanimeError, match="must be >= 1"):
        label_queue.run(posts=posts, scores=scored["scores"], out=tmp_path / "q", task="chibi", n=0)
    old = pd.read_parquet(scored["scores"]).drop(columns="threshold")
    old.to_parquet(tmp_path / "old.parquet")
    with pytest.raises(GanimeError, match="no threshold column"):
        label_queue.run(posts=posts, scores=tmp_path / "old.parquet", out=tmp_path / "q", task="chibi")
    argv = ["--posts", str(posts), "--scores", str(tmp_path / "old.parquet"), "--task", "chibi", "--n", "2"]
    assert label_queue.main([*argv, "--threshold", "0.9", "--out", str(tmp_path / "q")]) == 0
    assert pd.read_csv(tmp_path / "q.csv")["post_id"].tolist() == [12, 11]
    assert label_queue.main([*argv, "--threshold", "1.5", "--out", str(tmp_path / "r")]) == 2
    assert "must be in [0, 1]" in capsys.readouterr().err
