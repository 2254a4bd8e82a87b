"""The gold reference set: posts known clean on every task, from hand labels or the synthetic truth."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import write_posts

from ganime_steps import gold
from ganime_steps.common import GanimeError


@pytest.fixture
def posts(tmp_path):
    return write_posts(tmp_path / "scrape", 8)


def _labels(tmp_path, task, labels: dict[int, int]):
    path = tmp_path / f"{task}.parquet"
    pd.DataFrame(
        {"source": "test", "post_id": list(labels), "md5": "x", "label": list(labels.values()), "origin": "t"}
    ).to_parquet(path)
    return path


def test_gold_from_labels_needs_a_negative_label_on_every_task(tmp_path, posts):
    chibi = _labels(tmp_path, "chibi", {1: 0, 2: 0, 3: 1, 4: 0, 5: 0, 6: 0, 7: 0})
    multi = _labels(tmp_path, "multi", {1: 0, 2: 1, 3: 0, 4: 0, 5: 0, 6: 0})  # 7 and 8 unlabelled
    s = gold.run_gold(posts=posts, out=tmp_path / "gold", labels={"chibi": chibi, "multi": multi})
    manifest = pd.read_parquet(tmp_path / "gold" / "manifest.parquet")
    assert sorted(manifest.loc[manifest["kept"], "post_id"]) == [1, 4, 5, 6]
    why = dict(zip(manifest["post_id"], manifest["removed_by"], strict=True))
    assert why[2] == "labelled:multi" and why[3] == "labelled:chibi"
    assert why[7] == "unlabelled:multi" and why[8] == "unlabelled:chibi"
    assert s.n_kept == 4 and s.basis == "hand labels"
    assert all(Path(f).is_file() for f in manifest["file"])


def test_gold_from_truth_and_its_faces(tmp_path, posts):
    truth = tmp_path / "truth.parquet"
    flags = {"chibi": [False] * 8, "multiple": [False] * 8, "busy": [False] * 8, "standing": [True] * 8}
    flags["chibi"][0] = flags["busy"][1] = True
    flags["standing"][2] = False
    pd.DataFrame({"source": "test", "post_id": range(1, 9), **flags}).to_parquet(truth)
    s = gold.run_gold(posts=posts, out=tmp_path / "gold", truth=truth)
    manifest = pd.read_parquet(tmp_path / "gold" / "manifest.parquet")
    assert sorted(manifest.loc[manifest["kept"], "post_id"]) == [4, 5, 6, 7, 8]
    assert set(manifest.loc[~manifest["kept"], "removed_by"]) == {"truth:chibi", "truth:busy", "truth:not standing"}
    assert s.n_kept == 5

    faces = tmp_path / "scrape" / "faces.parquet"
    posts_df = pd.read_parquet(posts)
    pd.DataFrame(
        {"source": "test", "post_id": [1, 4, 4, 5, 6, 7], "md5": "m", "file": posts_df["file"].iloc[:6].tolist()}
    ).to_parquet(faces)
    f = gold.run_gold(posts=posts, out=tmp_path / "gold_faces", truth=truth, faces=faces)
    fm = pd.read_parquet(tmp_path / "gold_faces" / "manifest.parquet")
    assert fm["kept"].tolist() == [False, True, True, True, True, True] and f.unit == "face" and f.n_kept == 5


def test_too_few_gold_posts_is_one_clear_error(tmp_path, posts):
    chibi = _labels(tmp_path, "chibi", {1: 0, 2: 1})
    with pytest.raises(GanimeError, match=r"only 1 posts .* at least 4: label more posts negative"):
        gold.run_gold(posts=posts, out=tmp_path / "gold", labels={"chibi": chibi})
    assert not (tmp_path / "gold" / "manifest.parquet").exists()


def test_cli(tmp_path, posts, capsys):
    chibi = _labels(tmp_path, "chibi", dict.fromkeys(range(1, 9), 0))
    assert gold.main(["--posts", str(posts), "--labels", f"chibi={chibi}", "--out", str(tmp_path / "g")]) == 0
    assert gold.main(["--posts", str(posts), "--out", str(tmp_path / "g")]) == 2
    assert "either --truth" in capsys.readouterr().err


def test_only_posts_of_the_uniform_sample_are_gold(tmp_path, posts):
    """Posts labelled clean outside the gold draw (e.g. queued near a threshold) never enter gold."""
    chibi = _labels(tmp_path, "chibi", dict.fromkeys(range(1, 9), 0))
    sample = tmp_path / "sample.csv"
    pd.DataFrame({"source": "test", "post_id": [2, 3, 5, 7, 8], "md5": "x", "file": "f"}).to_csv(sample, index=False)
    s = gold.run_gold(posts=posts, out=tmp_path / "gold", labels={"chibi": chibi}, sample=sample)
    manifest = pd.read_parquet(tmp_path / "gold" / "manifest.parquet")
    assert sorted(manifest.loc[manifest["kept"], "post_id"]) == [2, 3, 5, 7, 8] and s.n_kept == 5
    assert set(manifest.loc[~manifest["kept"], "removed_by"]) == {"not in the gold sample"}
    pd.DataFrame({"post_id": [1]}).to_csv(sample, index=False)
    with pytest.raises(GanimeError, match="not a gold sample table .* rerun rule gold_queue"):
        gold.run_gold(posts=posts, out=tmp_path / "gold2", labels={"chibi": chibi}, sample=sample)
    few = tmp_path / "few.csv"
    pd.DataFrame({"source": "test", "post_id": [2, 3]}).to_csv(few, index=False)
    with pytest.raises(GanimeError, match="label every post of the gold queue"):
        gold.run_gold(posts=posts, out=tmp_path / "gold3", labels={"chibi": chibi}, sample=few)
