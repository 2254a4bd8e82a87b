"""Faces stage: the upstream lbpcascade recipe on the real example image, and crops from source annotations."""

from __future__ import annotations

import hashlib
import json
import shutil

import pandas as pd
import pytest
from conftest import ASSETS
from PIL import Image

from ganime_steps import faces


@pytest.fixture
def sample_posts(tmp_path):
    """A posts table holding the upstream example image (17 faces)."""
    data = (ASSETS / "anime_faces_sample.png").read_bytes()
    md5 = hashlib.md5(data).hexdigest()
    rel = f"images/{md5[:2]}/{md5}.png"
    (tmp_path / rel).parent.mkdir(parents=True)
    shutil.copyfile(ASSETS / "anime_faces_sample.png", tmp_path / rel)
    row = {"source": "s", "post_id": 1, "md5": md5, "file": rel, "face_boxes": "[]"}
    pd.DataFrame([row]).to_parquet(tmp_path / "posts.parquet")
    return tmp_path / "posts.parquet"


def test_lbpcascade_finds_the_faces_of_the_example(sample_posts, tmp_path):
    summary = faces.run(posts=sample_posts, out=tmp_path / "faces", cascade=ASSETS / "lbpcascade_animeface.xml")
    assert summary.faces >= 15  # the upstream recipe finds 17
    table = pd.read_parquet(tmp_path / "faces" / "faces.parquet")
    assert list(table.columns) == faces.FACE_COLUMNS
    for row in table.itertuples():
        assert Image.open(tmp_path / "faces" / row.file).size == (64, 64)


def test_annotations_detector_crops_source_boxes(posts, tmp_path):
    summary = faces.run(posts=posts, out=tmp_path / "f", detector="annotations", size=32)
    assert (summary.posts, summary.faces) == (12, 12)
    table = pd.read_parquet(tmp_path / "f" / "faces.parquet")
    assert (table[["x", "y", "w", "h"]].to_numpy() == [10, 10, 20, 20]).all()
    assert Image.open(tmp_path / "f" / table["file"][0]).size == (32, 32)


def test_crop_is_square_and_clamped():
    img = Image.new("RGB", (100, 50), "white")
    assert faces.crop_face(img, (90, 40, 20, 20), 16, margin=0.5).size == (16, 16)


def test_cli_missing_cascade_is_one_clear_line(posts, tmp_path, capsys):
    code = faces.main(["crop", "--posts", str(posts), "--cascade", str(tmp_path / "nope.xml"), "--out", str(tmp_path)])
    assert code == 2
    assert "faces.cascade" in capsys.readouterr().err


def test_cli_annotations(posts, tmp_path):
    assert faces.main(["crop", "--posts", str(posts), "--detector", "annotations", "--out", str(tmp_path / "o")]) == 0
    assert len(pd.read_parquet(tmp_path / "o" / "faces.parquet")) == 12


def test_no_faces_is_an_error(posts, tmp_path, capsys):
    table = pd.read_parquet(posts).assign(face_boxes=json.dumps([]))
    table.to_parquet(posts)
    assert faces.main(["crop", "--posts", str(posts), "--detector", "annotations", "--out", str(tmp_path / "o")]) == 2
    assert "no face found" in capsys.readouterr().err


def test_fetch_cascade_verifies_sha256(tmp_path, monkeypatch):
    import requests

    class Resp:
        content = b"not the cascade"

        def raise_for_status(self):
            pass

    monkeypatch.setattr(requests, "get", lambda *a, **k: Resp())
    assert faces.main(["fetch-cascade", "--out", str(tmp_path / "c.xml")]) == 2
    assert not (tmp_path / "c.xml").exists()
    Resp.content = (ASSETS / "lbpcascade_animeface.xml").read_bytes()
    assert faces.main(["fetch-cascade", "--out", str(tmp_path / "c.xml")]) == 0
    assert (tmp_path / "c.xml").read_bytes() == Resp.content
