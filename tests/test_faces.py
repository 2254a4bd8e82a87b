"""Faces stage: the upstream lbpcascade recipe on the real example image, and crops from source annotations.

The cascade is vendored (resources/); the example image is not: the tests that need it skip where it is absent
(and fail under CI=true).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from conftest import CASCADE, REPO, SAMPLE_IMAGE, requires
from PIL import Image

from ganime_steps import faces

needs_sample = requires(
    SAMPLE_IMAGE.is_file(),
    reason=f"external asset {SAMPLE_IMAGE} is absent (set GANIME_ASSETS to the folder holding anime_faces_sample.png)",
)


@pytest.fixture
def sample_posts(tmp_path):
    """A posts table holding the upstream example image (17 faces)."""
    data = SAMPLE_IMAGE.read_bytes()
    md5 = hashlib.md5(data).hexdigest()
    rel = f"images/{md5[:2]}/{md5}.png"
    (tmp_path / rel).parent.mkdir(parents=True)
    shutil.copyfile(SAMPLE_IMAGE, tmp_path / rel)
    row = {"source": "s", "post_id": 1, "md5": md5, "file": rel, "face_boxes": "[]"}
    pd.DataFrame([row]).to_parquet(tmp_path / "posts.parquet")
    return tmp_path / "posts.parquet"


@needs_sample
@pytest.mark.parametrize("cascade", [CASCADE, None], ids=["explicit", "default"])
def test_lbpcascade_finds_the_faces_of_the_example(sample_posts, tmp_path, cascade):
    """The upstream recipe, with the vendored cascade given explicitly and as the default (cascade None)."""
    summary = faces.run_faces(posts=sample_posts, out=tmp_path / "faces", cascade=cascade)
    assert summary.faces >= 15  # the upstream recipe finds 17
    table = pd.read_parquet(tmp_path / "faces" / "faces.parquet")
    assert list(table.columns) == faces.FACE_COLUMNS
    for row in table.itertuples():
        assert Image.open(tmp_path / "faces" / row.file).size == (64, 64)


def test_vendored_cascade_is_the_pinned_file_with_its_license():
    assert faces.VENDORED_CASCADE == CASCADE
    assert hashlib.sha256(CASCADE.read_bytes()).hexdigest() == faces.CASCADE_SHA256
    license_text = CASCADE.with_suffix(".LICENSE").read_text()
    assert "The MIT License" in license_text and "nagadomi" in license_text


def test_vendored_cascade_is_tracked_and_generated_resources_are_not(tmp_path):
    """.gitignore keeps resources/ untracked except the vendored cascade and its license."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    shutil.copyfile(REPO / ".gitignore", tmp_path / ".gitignore")
    paths = {
        "resources/lbpcascade_animeface.xml": False,
        "resources/lbpcascade_animeface.LICENSE": False,
        "resources/inception-2015-12-05-fidhelper.pth": True,
        "resources/download/lbpcascade_animeface.xml": True,
    }
    for path, ignored in paths.items():
        result = subprocess.run(["git", "-C", str(tmp_path), "check-ignore", "-q", "--no-index", path])
        assert result.returncode == (0 if ignored else 1), (path, ignored)


def test_default_cascade_loads_without_any_asset(posts, tmp_path):
    """detector lbpcascade without --cascade uses the vendored file: it loads and runs (no drawn face in the discs)."""
    assert not faces.CascadeDetector(faces.default_cascade()).cascade.empty()
    with pytest.raises(faces.GanimeError, match="no face found"):
        faces.run_faces(posts=posts, out=tmp_path / "o")


def test_missing_vendored_cascade_is_one_clear_line(posts, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(faces, "VENDORED_CASCADE", tmp_path / "gone.xml")
    assert faces.main(["crop", "--posts", str(posts), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "faces.cascade" in err and "fetch-cascade" in err and len(err.strip().splitlines()) == 1


def test_annotations_detector_crops_source_boxes(posts, tmp_path):
    summary = faces.run_faces(posts=posts, out=tmp_path / "f", detector="annotations", size=32)
    assert (summary.posts, summary.faces) == (12, 12)
    table = pd.read_parquet(tmp_path / "f" / "faces.parquet")
    assert (table[["x", "y", "w", "h"]].to_numpy() == [10, 10, 20, 20]).all()
    assert Image.open(tmp_path / "f" / table["file"][0]).size == (32, 32)


def _numbered(width: int, height: int) -> Image.Image:
    """An image whose every pixel names its own place (R = x, G = y, B = 255): a crop's pixels give its box, and
    Pillow's padding outside the image (black, B = 0) shows."""
    yy, xx = np.mgrid[:height, :width]
    return Image.fromarray(np.dstack([xx, yy, np.full_like(xx, 255)]).astype(np.uint8))


@pytest.mark.parametrize(
    ("box", "margin", "expected"),
    [
        ((30, 10, 20, 20), 0.0, (30, 10, 50, 30)),  # inside: the box itself
        ((30, 10, 20, 10), 0.5, (25, 0, 55, 30)),  # the longer side, enlarged by half, centred
        ((90, 40, 20, 20), 0.5, (70, 20, 100, 50)),  # past the bottom-right corner: moved inside, still 30 px
        ((-5, -8, 20, 20), 0.0, (0, 0, 20, 20)),  # past the top-left corner
        ((40, 10, 40, 40), 1.0, (35, 0, 85, 50)),  # larger than the image: its height, centred on the box
    ],
)
def test_crop_is_square_and_clamped(box, margin, expected):
    """The crop is the expected square box inside the image: no padding and no stretched (non-square) region."""
    img = _numbered(100, 50)
    left, top, right, bottom = expected
    assert right - left == bottom - top
    crop = faces.crop_face(img, box, right - left, margin=margin)  # resize to its own size: the pixels themselves
    assert np.array_equal(np.asarray(crop), np.asarray(img)[top:bottom, left:right])
    small = faces.crop_face(img, box, 16, margin=margin)
    assert small.size == (16, 16)
    assert np.array_equal(np.asarray(small), np.asarray(img.crop(expected).resize((16, 16), Image.Resampling.LANCZOS)))


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
    Resp.content = CASCADE.read_bytes()
    assert faces.main(["fetch-cascade", "--out", str(tmp_path / "c.xml")]) == 0
    assert (tmp_path / "c.xml").read_bytes() == Resp.content


def _crop_files(out) -> set[str]:
    return {p.relative_to(out).as_posix() for p in (out / "crops").rglob("*") if p.is_file()}


def test_an_image_that_fails_leaves_no_orphan_crops(posts, tmp_path, monkeypatch):
    table = pd.read_parquet(posts).assign(face_boxes=json.dumps([[10, 10, 20, 20], [5, 5, 30, 30], [0, 0, 16, 16]]))
    table.to_parquet(posts)
    failing = table["md5"][4]
    real_save = faces.save_image

    def save_image(path, image):  # the disk fills up on the third crop of post 5
        if path.name == f"{failing}_2.png":
            raise OSError(28, "No space left on device")
        real_save(path, image)

    monkeypatch.setattr(faces, "save_image", save_image)
    out = tmp_path / "f"
    with pytest.raises(OSError, match="No space left"):
        faces.run_faces(posts=posts, out=out, detector="annotations")
    assert not [f for f in _crop_files(out) if failing in f]  # post 5's first two crops were removed again
    assert len(_crop_files(out)) == 4 * 3  # the posts before it are whole

    monkeypatch.setattr(faces, "save_image", real_save)
    faces.run_faces(posts=posts, out=out, detector="annotations")
    assert _crop_files(out) == set(pd.read_parquet(out / "faces.parquet")["file"])
    assert len(_crop_files(out)) == 12 * 3

    # A rerun that finds fewer faces (or fewer posts) leaves no crop the table does not list.
    table.assign(face_boxes=json.dumps([[10, 10, 20, 20]])).head(6).to_parquet(posts)
    faces.run_faces(posts=posts, out=out, detector="annotations")
    listed = set(pd.read_parquet(out / "faces.parquet")["file"])
    assert _crop_files(out) == listed and len(listed) == 6


def _crops(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


def test_workers_give_the_same_table_and_crops(posts, tmp_path):
    one = faces.run_faces(posts=posts, out=tmp_path / "one", detector="annotations", size=32)
    two = faces.run_faces(posts=posts, out=tmp_path / "two", detector="annotations", size=32, workers=2)
    assert one == two
    assert (tmp_path / "one" / "faces.parquet").read_bytes() == (tmp_path / "two" / "faces.parquet").read_bytes()
    assert _crops(tmp_path / "one") == _crops(tmp_path / "two") and len(_crops(tmp_path / "one")) == 12
    with pytest.raises(faces.GanimeError, match="--workers 0"):
        faces.run_faces(posts=posts, out=tmp_path / "zero", detector="annotations", workers=0)


@needs_sample
def test_workers_with_the_cascade_match_one_process(sample_posts, tmp_path):
    one = faces.run_faces(posts=sample_posts, out=tmp_path / "one")
    two = faces.run_faces(posts=sample_posts, out=tmp_path / "two", workers=2)
    assert one == two and one.faces >= 15 and _crops(tmp_path / "one") == _crops(tmp_path / "two")
