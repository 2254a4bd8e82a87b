"""The folder source: a directory, .zip or .tar.gz of images behind the booru Source interface."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile

import pytest
from conftest import png_bytes

from ganime_steps.common import GanimeError
from ganime_steps.sources.folder import FolderSource, caption_tags


def _folder(tmp_path):
    root = tmp_path / "art"
    (root / "sub").mkdir(parents=True)
    (root / "a.png").write_bytes(png_bytes(1))
    (root / "a.txt").write_text("1girl, long hair, solo\n")
    (root / "sub" / "b.png").write_bytes(png_bytes(2))
    (root / "sub" / "b.txt").write_text("2girls smile")
    (root / "sub" / "dup.png").write_bytes(png_bytes(1))  # the same image as a.png
    (root / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (root / "notes.md").write_text("not an image")
    return root


def test_caption_tags_danbooru_style():
    assert caption_tags("1girl, long hair, solo\n") == "1girl long_hair solo"
    assert caption_tags("2girls smile") == "2girls smile"


def test_folder_lists_images_with_tags_md5_and_original_path(tmp_path):
    root = _folder(tmp_path)
    src = FolderSource(root, name="art")
    posts = src.list_page("", None, 100)
    assert [p.post_id for p in posts] == [4, 3, 2, 1]  # sorted paths, newest (highest id) first
    by_name = {p.file_url: p for p in posts}
    assert set(by_name) == {"a.png", "broken.jpg", "sub/b.png", "sub/dup.png"}
    a = by_name["a.png"]
    assert a.tags == "1girl long_hair solo" and (a.width, a.height) == (48, 64)
    assert a.md5 == hashlib.md5(png_bytes(1)).hexdigest() == by_name["sub/dup.png"].md5
    assert a.source_url == str(root / "a.png") and src.fetch("a.png") == png_bytes(1)
    assert by_name["broken.jpg"].width == 0  # unreadable: the store's full decode records why
    assert [p.file_url for p in src.list_page("1girl", None, 10)] == ["a.png"]
    assert [p.file_url for p in src.list_page("-1girl smile", None, 10)] == ["sub/b.png"]
    assert [p.post_id for p in src.list_page("", 3, 1)] == [2]
    with pytest.raises(GanimeError, match="no image"):
        src.fetch("../etc/passwd")


def test_zip_members_are_read_safely(tmp_path):
    path = tmp_path / "set.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x/one.png", png_bytes(3))
        z.writestr("x/one.txt", "blue hair, smile")
        z.writestr("../evil.png", png_bytes(4))
        z.writestr("/abs.png", png_bytes(5))
        z.writestr("big.png", b"\0" * 2000)
    src = FolderSource(path, max_bytes=1000)
    posts = {p.source_url.rsplit(":", 1)[1]: p for p in src.list_page("", None, 10)}
    assert posts["x/one.png"].tags == "blue_hair smile" and src.fetch("x/one.png") == png_bytes(3)
    assert posts["../evil.png"].file_url.startswith("refused:unsafe_path:")
    assert posts["/abs.png"].file_url.startswith("refused:unsafe_path:")
    assert posts["big.png"].file_url.startswith("refused:oversize:")


def test_tar_with_sidecar_csv_and_a_link(tmp_path):
    path = tmp_path / "set.tar.gz"
    with tarfile.open(path, "w:gz") as t:
        for name, data in (("p/1.png", png_bytes(6)), ("metadata.csv", b'file_name,tags\np/1.png,"red eyes, smile"\n')):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("p/link.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        t.addfile(link)
    posts = {p.source_url.rsplit(":", 1)[1]: p for p in FolderSource(path).list_page("", None, 10)}
    assert posts["p/1.png"].tags == "red_eyes smile"
    assert posts["p/link.png"].file_url.startswith("refused:unsafe_path:")


def test_bad_paths_are_one_clear_error(tmp_path):
    with pytest.raises(GanimeError, match="not found"):
        FolderSource(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GanimeError, match="no images"):
        FolderSource(tmp_path / "empty")
    (tmp_path / "x.bin").write_bytes(b"junk")
    with pytest.raises(GanimeError, match="not a folder, .zip or .tar"):
        FolderSource(tmp_path / "x.bin")


def test_scrape_cli_kind_folder_stores_posts_and_failures(tmp_path):
    import pandas as pd

    from ganime_steps import scrape

    root = _folder(tmp_path)
    out = tmp_path / "scrape"
    argv = ["--kind", "folder", "--name", "art", "--path", str(root), "--limit", "10", "--out", str(out)]
    assert scrape.main(argv) == 0
    posts = pd.read_parquet(out / "posts.parquet")
    failures = pd.read_parquet(out / "failures.parquet")
    # a.png and sub/dup.png are the same image: stored once, under the newest post (the highest id, like a booru)
    assert sorted(posts["source_url"]) == [str(root / "sub" / "b.png"), str(root / "sub" / "dup.png")]
    assert posts.loc[posts["source_url"] == str(root / "sub" / "b.png"), "tags"].item() == "2girls smile"
    assert all((out / f).is_file() for f in posts["file"]) and (posts["source"] == "art").all()
    assert failures["file_url"].tolist() == ["broken.jpg"] and failures["reason"].item() == "not_an_image"
    assert scrape.main([*argv[:5], str(tmp_path / "nowhere"), *argv[6:]]) == 2
