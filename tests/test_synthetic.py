"""The synthetic booru: determinism, listing semantics, ground truth that matches the pixels, hand labels, CLI."""

from __future__ import annotations

import hashlib
import io
import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ganime_steps.common import GanimeError
from ganime_steps.sources import PostMeta, synthetic
from ganime_steps.sources.synthetic import (
    LABEL_FILES,
    STUDY_TAGS,
    SyntheticSource,
    plan_post,
    render_post,
    truth_table,
    write_hand_labels,
)

NO_FLAWS = {"chibi": 0.0, "multiple": 0.0, "busy": 0.0, "nonstanding": 0.0}


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_rendering_is_a_pure_function_of_seed_and_post():
    src = SyntheticSource(n_posts=5, seed=3)
    meta = {m.post_id: m for m in src.list_page("", None, 5)}
    first = src.fetch(meta[2].file_url)
    synthetic.render.rendered.cache_clear()  # force a fresh render: bytes must not depend on the cache
    again = SyntheticSource(n_posts=5, seed=3).fetch(meta[2].file_url)
    assert first == again
    assert hashlib.md5(again).hexdigest() == meta[2].md5
    img_a, truth_a = render_post(3, 2)
    img_b, truth_b = render_post(3, 2)
    assert truth_a == truth_b and img_a.tobytes() == img_b.tobytes()
    assert src.fetch(meta[3].file_url) != first  # another post
    assert SyntheticSource(n_posts=5, seed=4).fetch("synthetic://4/2.png") != first  # another booru


def test_listed_md5_matches_fetched_bytes_and_metadata():
    src = SyntheticSource(n_posts=12, seed=1)
    posts = src.list_page("", None, 12)
    assert len(posts) == 12
    for m in posts:
        assert isinstance(m, PostMeta)
        data = src.fetch(m.file_url)
        assert hashlib.md5(data).hexdigest() == m.md5
        assert data.startswith(b"\x89PNG")
        pixels = _decode(data)
        assert pixels.shape == (m.height, m.width, 3)
        assert 128 <= m.width <= 256 and 128 <= m.height <= 256
        assert m.ext == "png" and m.file_url == f"synthetic://1/{m.post_id}.png"
        assert m.source_url == f"synthetic://1/posts/{m.post_id}"
        assert m.rating in ("general", "sensitive") and isinstance(m.score, int) and 0 <= m.score <= 100
        assert len(m.face_boxes) == plan_post(1, m.post_id).n_characters
    # Deterministic PNG encoding: no metadata chunks besides the image itself.
    chunks = _png_chunk_types(src.fetch(posts[0].file_url))
    assert chunks == ["IHDR"] + ["IDAT"] * (len(chunks) - 2) + ["IEND"]


def _png_chunk_types(data: bytes) -> list[str]:
    pos, out = 8, []
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        out.append(data[pos + 4 : pos + 8].decode())
        pos += 12 + length
    return out


def test_paging_newest_first_with_before_id_and_tag_filter():
    src = SyntheticSource(n_posts=40, seed=2)
    page = src.list_page("", None, 7)
    assert [m.post_id for m in page] == list(range(40, 33, -1))
    page = src.list_page("", 10, 4)
    assert [m.post_id for m in page] == [9, 8, 7, 6]
    assert [m.post_id for m in src.list_page("", 3, 10)] == [2, 1]
    assert src.list_page("", 1, 10) == []  # past the end
    assert src.list_page("", 1000, 1)[0].post_id == 40
    assert src.list_page("no_such_tag", None, 10) == []

    query = "1girl blonde_hair"
    expected = [i for i in range(40, 0, -1) if set(query.split()) <= set(plan_post(2, i).tags.split())]
    assert expected, "the seed should give at least one blonde post"
    seen, before = [], None
    while True:  # walk pages like the scraper does
        page = src.list_page(query, before, 3)
        if not page:
            break
        assert len(page) <= 3
        seen += [m.post_id for m in page]
        before = page[-1].post_id
    assert seen == expected
    for i in seen:
        assert {"1girl", "blonde_hair"} <= set(plan_post(2, i).tags.split())
    excluded = [m.post_id for m in src.list_page("-blonde_hair", None, 40)]
    assert sorted(set(excluded) | set(expected)) == list(range(1, 41)) and not set(excluded) & set(expected)
    with pytest.raises(GanimeError, match="limit"):
        src.list_page("", None, 0)


def test_flag_rates_follow_the_configuration_and_tags_are_noisy():
    n = 240
    src = SyntheticSource(n_posts=n, seed=5)
    truth = truth_table(src)
    assert list(truth.columns) == ["source", "post_id", "chibi", "multiple", "busy", "standing", "n_characters"]
    assert (truth["source"] == "synthetic").all() and truth["post_id"].tolist() == list(range(1, n + 1))
    for column, rate in (("chibi", 0.2), ("multiple", 0.15), ("busy", 0.2)):
        tolerance = 4 * math.sqrt(rate * (1 - rate) / n)
        assert abs(truth[column].mean() - rate) < tolerance, column
    assert abs((~truth["standing"]).mean() - 0.1) < 4 * math.sqrt(0.09 / n)
    assert ((truth["n_characters"] > 1) == truth["multiple"]).all()
    assert truth.loc[truth["multiple"], "n_characters"].isin([2, 3]).all()

    # The study query returns most posts, flawed ones included, as a real booru would.
    study = set(STUDY_TAGS)
    matched = [i for i in range(1, n + 1) if study <= set(src.plan(i).tags.split())]
    assert 0.8 <= len(matched) / n <= 0.97
    matched_truth = truth.set_index("post_id").loc[matched]
    assert matched_truth["chibi"].sum() > 0 and matched_truth["multiple"].sum() > 0 and matched_truth["busy"].sum() > 0
    chibi_ids = truth.loc[truth["chibi"], "post_id"]
    tagged = np.mean(["chibi" in src.plan(i).tags.split() for i in chibi_ids])
    assert 0.35 < tagged < 0.85  # only some chibi posts are tagged chibi

    none = truth_table(SyntheticSource(n_posts=30, seed=5, **NO_FLAWS))
    assert not none[["chibi", "multiple", "busy"]].any().any() and none["standing"].all()
    every = truth_table(SyntheticSource(n_posts=30, seed=5, chibi=1, multiple=1, busy=1, nonstanding=1))
    assert every[["chibi", "multiple", "busy"]].all().all() and not every["standing"].any()


def test_face_boxes_and_head_ratios_match_the_drawing():
    src = SyntheticSource(n_posts=60, seed=7, chibi=0.4, multiple=0.3, busy=0.2, nonstanding=0.2)
    checked_chibi = checked_normal = 0
    for i in range(1, 61):
        plan = src.plan(i)
        img, truth = render_post(7, i, chibi=0.4, multiple=0.3, busy=0.2, nonstanding=0.2)
        pixels = np.asarray(img).astype(int)
        assert (truth.width, truth.height) == img.size
        assert len(truth.face_boxes) == truth.n_characters == plan.n_characters
        for (x, y, w, h), ratio, char in zip(truth.face_boxes, truth.head_ratios, plan.characters, strict=True):
            assert 0 <= x and 0 <= y and w > 4 and h > 4 and x + w <= img.width and y + h <= img.height
            assert abs(w - h) <= 1 or x == 0 or y == 0 or x + w == img.width or y + h == img.height  # square-ish
            if plan.chibi:
                assert 1 / 3 <= ratio <= 1 / 2
                checked_chibi += 1
            else:
                assert ratio < 1 / 5
                checked_normal += 1
            if not plan.busy:  # sparkles may cover a busy face
                cy, cx = y + h // 2, x + w // 2
                assert np.abs(pixels[cy, cx] - np.array(char.skin)).max() < 30, "face box centre should be skin"
        # Standing, arms-down characters on white: the drawn height is the standing body height.
        if not plan.busy and plan.n_characters == 1 and plan.standing and plan.characters[0].arms != "wave":
            rows = np.nonzero((pixels < 200).any(axis=(1, 2)))[0]
            assert abs((rows[-1] - rows[0] + 1) - truth.body_heights[0]) <= 3
    assert checked_chibi >= 10 and checked_normal >= 10


def test_busy_background_is_visibly_not_white():
    for i in range(1, 25):
        img, truth = render_post(11, i, chibi=0.2, multiple=0.2, busy=0.5, nonstanding=0.1)
        px = np.asarray(img).astype(int)
        border = np.concatenate([px[0], px[-1], px[:, 0], px[:, -1]])
        distance = (255 - border).mean()
        if truth.busy:
            assert distance > 30
        else:
            assert distance < 2  # white (a soft floor shadow never reaches the frame)


def test_hand_labels_format_subset_and_error_rate(tmp_path):
    truth = truth_table(SyntheticSource(n_posts=200, seed=9))
    rows = write_hand_labels(truth, tmp_path, fraction=0.5, error_rate=0.1, seed=4)
    assert rows == {name: 100 for name in LABEL_FILES.values()}
    by_id = truth.set_index("post_id")
    subsets = []
    for task, name in LABEL_FILES.items():
        text = (tmp_path / name).read_text()
        assert text.startswith("post_id,label\n")
        labels = pd.read_csv(tmp_path / name)
        assert list(labels.columns) == ["post_id", "label"]
        assert labels["label"].isin([0, 1]).all() and labels["post_id"].is_unique
        assert set(labels["post_id"]) <= set(truth["post_id"])
        column = synthetic.LABEL_TRUTH_COLUMN[task]
        wrong = (labels["label"].to_numpy() != by_id.loc[labels["post_id"], column].to_numpy().astype(int)).sum()
        assert wrong == 10  # exactly error_rate of the 100 labels
        subsets.append(frozenset(labels["post_id"]))
    assert len(set(subsets)) == 3  # each task labels its own random subset

    again = tmp_path / "again"
    write_hand_labels(truth, again, fraction=0.5, error_rate=0.1, seed=4)
    assert all((again / n).read_bytes() == (tmp_path / n).read_bytes() for n in LABEL_FILES.values())
    clean = tmp_path / "clean"
    write_hand_labels(truth, clean, fraction=0.25, error_rate=0.0, seed=4)
    chibi = pd.read_csv(clean / LABEL_FILES["chibi"])
    assert len(chibi) == 50
    assert (chibi["label"].to_numpy() == by_id.loc[chibi["post_id"], "chibi"].to_numpy().astype(int)).all()
    with pytest.raises(GanimeError, match="label-fraction"):
        write_hand_labels(truth, tmp_path, fraction=0.0)
    with pytest.raises(GanimeError, match="missing column"):
        write_hand_labels(truth.drop(columns=["busy"]), tmp_path)


@pytest.mark.parametrize(
    "url",
    [
        "synthetic://3/0.png",
        "synthetic://3/6.png",
        "synthetic://4/1.png",
        "synthetic://3/posts/1",
        "https://example.org/1.png",
        "synthetic://3/1.jpg",
    ],
)
def test_fetch_rejects_urls_that_are_not_posts(url):
    with pytest.raises(GanimeError, match="not a post"):
        SyntheticSource(n_posts=5, seed=3).fetch(url)


def test_constructor_validates_arguments():
    with pytest.raises(GanimeError, match="n_posts"):
        SyntheticSource(n_posts=0)
    with pytest.raises(GanimeError, match="chibi"):
        SyntheticSource(n_posts=5, chibi=1.5)


def test_run_writes_truth_and_labels(tmp_path):
    summary = synthetic.run_synthetic_labels(
        out=tmp_path, n_posts=40, seed=6, label_fraction=0.5, label_error_rate=0.05, busy=0.5
    )
    truth = pd.read_parquet(tmp_path / "truth.parquet")
    assert len(truth) == 40 and truth["chibi"].dtype == bool and truth["n_characters"].dtype == np.int64
    assert summary.positives["busy"] == int(truth["busy"].sum())
    assert summary.label_rows == {name: 20 for name in LABEL_FILES.values()}
    assert 0 < summary.study_query_matches <= 40
    assert all((tmp_path / name).exists() for name in LABEL_FILES.values())
    assert summary.rates == {"chibi": 0.2, "multiple": 0.15, "busy": 0.5, "nonstanding": 0.1}


def test_cli(tmp_path, capsys):
    out = tmp_path / "synthetic"
    sheet = tmp_path / "sheet.png"
    argv = ["--n-posts", "16", "--seed", "2", "--label-fraction", "0.5", "--chibi", "0.3", "--out", str(out)]
    assert synthetic.main([*argv, "--sheet", str(sheet)]) == 0
    assert (out / "truth.parquet").exists() and Image.open(sheet).size[0] > 4 * 128
    assert len(pd.read_csv(out / LABEL_FILES["multi"])) == 8
    for bad in ("0", "-3"):
        assert synthetic.main(["--n-posts", bad, "--seed", "0", "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert "--n-posts" in err and "at least 1 post" in err
    assert not (tmp_path / "x").exists()
    with pytest.raises(SystemExit):
        synthetic.main(["--n-posts", "5", "--seed", "0", "--busy", "2", "--out", str(out)])
    assert "probability" in capsys.readouterr().err


def test_hand_labels_cover_only_scraped_posts(tmp_path):
    posts = tmp_path / "posts.parquet"
    pd.DataFrame({"source": ["synthetic"] * 5, "post_id": [2, 4, 6, 8, 10]}).to_parquet(posts)
    assert (
        synthetic.main(
            [
                "--n-posts",
                "12",
                "--seed",
                "1",
                "--label-fraction",
                "1",
                "--label-error-rate",
                "0",
                "--posts",
                str(posts),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 0
    )
    labels = pd.read_csv(tmp_path / "o" / "synthetic_hand_labels_chibi.csv")
    assert sorted(labels["post_id"]) == [2, 4, 6, 8, 10]
    assert len(pd.read_parquet(tmp_path / "o" / "truth.parquet")) == 12
