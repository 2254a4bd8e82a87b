"""Ground-truth check: each filter's precision/recall against the synthetic generator's true flags."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ganime_steps import clean, groundtruth
from ganime_steps.common import GanimeError


def truth_table(n=12, source="test"):
    ids = np.arange(1, n + 1)
    return pd.DataFrame(
        {
            "source": source,
            "post_id": ids,
            "chibi": ids >= 9,  # posts 9..12 are truly chibi
            "multiple": ids == 1,
            "busy": ids == 2,
            "standing": ids != 5,
            "n_characters": np.where(ids == 1, 2, 1),
        }
    )


@pytest.fixture
def dataset(posts, tmp_path):
    scores = pd.read_parquet(posts)[["source", "post_id", "md5"]]
    scores["score"] = np.linspace(0, 1, 12)  # chibi flags posts 7..12 at 0.5: tp 4 (9..12), fp 2 (7, 8), fn 0
    scores["predicted"] = scores["score"] >= 0.5
    scores.to_parquet(tmp_path / "chibi.parquet")
    clean.run_filter(
        dataset="B",
        out=tmp_path / "B",
        posts=posts,
        scores={"chibi": tmp_path / "chibi.parquet"},
        drop={"chibi": None},
        exclude_tags=["chibi"],  # the fixture tags posts 3, 6, 9, 12 `chibi`: tp 2, fp 2, fn 2
    )
    truth = tmp_path / "truth.parquet"
    truth_table().to_parquet(truth)
    return {"manifest": tmp_path / "B" / "manifest.parquet", "truth": truth}


def test_precision_recall_per_filter_and_flaw_rates(dataset, tmp_path):
    summary = groundtruth.run_groundtruth(truth=dataset["truth"], manifests=[dataset["manifest"]], out=tmp_path / "gt")
    b = summary.datasets["B"]
    chibi = b["filters"]["chibi"]
    assert (chibi["tp"], chibi["fp"], chibi["fn"], chibi["tn"]) == (4, 2, 0, 6)
    assert chibi["precision"] == pytest.approx(4 / 6) and chibi["recall"] == 1.0 and chibi["truth"] == "chibi"
    assert chibi["flagged"] == 6 and chibi["removed"] == 4  # the tag rule removed 9 and 12 first
    tag = b["filters"]["exclude:chibi"]
    assert (tag["precision"], tag["recall"]) == (0.5, 0.5)
    # before cleaning 4/12 posts are chibi, after it none of the kept ones
    assert b["flaws"]["chibi"] == {"all": pytest.approx(4 / 12), "kept": 0.0}
    assert b["flaws"]["not standing"]["kept"] == pytest.approx(1 / 4)  # post 5 is kept (1, 2, 4, 5)
    rows = pd.read_csv(tmp_path / "gt" / "groundtruth.csv")
    assert rows[["dataset", "filter"]].values.tolist() == [["B", "exclude:chibi"], ["B", "chibi"]]
    assert json.loads((tmp_path / "gt" / "groundtruth.json").read_text())["n_filters_checked"] == 2


def test_task_mapping_and_filters_without_truth(dataset, tmp_path):
    summary = groundtruth.run_groundtruth(
        truth=dataset["truth"], manifests=[dataset["manifest"]], out=tmp_path / "gt", task_truth={"chibi": "~standing"}
    )
    chibi = summary.datasets["B"]["filters"]["chibi"]
    assert chibi["truth"] == "~standing" and chibi["recall"] == 0.0  # post 5 (not standing) has score 0.36
    manifest = pd.read_parquet(dataset["manifest"]).rename(columns={"hit:chibi": "hit:sharpness"})
    manifest.to_parquet(dataset["manifest"])
    summary = groundtruth.run_groundtruth(truth=dataset["truth"], manifests=[dataset["manifest"]], out=tmp_path / "gt")
    assert summary.datasets["B"]["filters"]["sharpness"] == {"truth": None, "flagged": 6, "removed": 0}


def test_errors(dataset, tmp_path, capsys):
    truth_table(source="elsewhere").to_parquet(tmp_path / "other.parquet")
    with pytest.raises(GanimeError, match="needs a synthetic scrape"):
        groundtruth.run_groundtruth(
            truth=tmp_path / "other.parquet", manifests=[dataset["manifest"]], out=tmp_path / "gt"
        )
    with pytest.raises(GanimeError, match="no column 'sparkle'"):
        groundtruth.run_groundtruth(
            truth=dataset["truth"], manifests=[dataset["manifest"]], out=tmp_path / "gt", task_truth={"x": "sparkle"}
        )
    argv = ["--truth", str(dataset["truth"]), "--manifests", str(dataset["manifest"]), "--out", str(tmp_path / "c")]
    assert groundtruth.main([*argv, "--truth-column", "multi"]) == 2
    assert "expected TASK=COLUMN" in capsys.readouterr().err
    assert groundtruth.main([*argv, "--truth-column", "multi=multiple"]) == 0
    assert (tmp_path / "c" / "groundtruth.csv").exists()
