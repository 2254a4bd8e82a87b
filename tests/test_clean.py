"""Clean stage: filters with audit manifest and yields, and the packed uint8 arrays."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from ganime_steps import clean


def write_scores(path, posts, scores, threshold=0.5):
    table = pd.read_parquet(posts)[["source", "post_id", "md5"]].assign(score=scores)
    table["predicted"] = table["score"] >= threshold
    table.to_parquet(path)
    return path


def test_filter_order_audit_and_yields(posts, tmp_path):
    n = 12
    chibi = write_scores(tmp_path / "chibi.parquet", posts, np.linspace(0, 1, n))  # posts 7..12 predicted chibi
    multi = write_scores(tmp_path / "multi.parquet", posts, [0.9 if i in (1, 12) else 0.1 for i in range(1, n + 1)])
    summary = clean.run_filter(
        dataset="B",
        out=tmp_path / "B",
        posts=posts,
        scores={"chibi": chibi, "multi": multi},
        drop={"chibi": None, "multi": 0.8},
        exclude_tags=["chibi"],
    )
    manifest = pd.read_parquet(tmp_path / "B" / "manifest.parquet")
    removed = dict(zip(manifest["post_id"], manifest["removed_by"], strict=True))
    # tag rule first (posts 3, 6, 9, 12 carry `chibi`), then the chibi classifier, then multi (post 1)
    assert [removed[i] for i in (3, 6, 9, 12)] == ["exclude:chibi"] * 4
    assert [removed[i] for i in (7, 8, 10, 11)] == ["chibi"] * 4
    assert removed[1] == "multi"
    assert summary.n_kept == 3 and manifest["kept"].sum() == 3
    assert summary.removed_by == {"exclude:chibi": 4, "chibi": 4, "multi": 1}
    assert json.loads((tmp_path / "B" / "summary.json").read_text())["n_total"] == 12
    assert manifest.loc[manifest["post_id"] == 1, "removed_score"].item() == 0.9


def test_pack_is_square_uint8_memmap(posts, tmp_path):
    clean.run_filter(dataset="A", out=tmp_path / "A", posts=posts)
    summary = clean.run_pack(
        manifest=tmp_path / "A" / "manifest.parquet",
        resolution=16,
        out=tmp_path / "A" / "pack_16.npy",
        preview=tmp_path / "A" / "preview.png",
    )
    array = np.load(tmp_path / "A" / "pack_16.npy", mmap_mode="r")
    assert array.shape == (12, 16, 16, 3) and array.dtype == np.uint8 and summary.n_images == 12
    # the 48x64 images are padded on white left and right: the corner columns stay white
    assert (array[:, :, 0] > 240).all()
    assert (tmp_path / "A" / "preview.png").exists()


def test_cli_filter_and_pack(posts, tmp_path):
    scores = write_scores(tmp_path / "s.parquet", posts, [0.0] * 12)
    assert (
        clean.main(
            [
                "filter",
                "--dataset",
                "A",
                "--posts",
                str(posts),
                "--scores",
                f"chibi={scores}",
                "--drop",
                "chibi=0.5",
                "--out",
                str(tmp_path / "A"),
            ]
        )
        == 0
    )
    assert (
        clean.main(
            [
                "pack",
                "--manifest",
                str(tmp_path / "A" / "manifest.parquet"),
                "--resolution",
                "8",
                "--out",
                str(tmp_path / "A" / "pack_8.npy"),
            ]
        )
        == 0
    )
    assert np.load(tmp_path / "A" / "pack_8.npy").shape == (12, 8, 8, 3)


def test_cli_errors(posts, tmp_path, capsys):
    scores = write_scores(tmp_path / "s.parquet", posts, [1.0] * 12)
    base = ["filter", "--dataset", "A", "--posts", str(posts), "--out", str(tmp_path / "A")]
    assert clean.main([*base, "--scores", f"chibi={scores}", "--drop", "chibi=0.5"]) == 2
    assert "every one of 12 images was removed" in capsys.readouterr().err
    assert clean.main([*base, "--drop", "multi=auto"]) == 2
    assert "datasets.A.drop.multi" in capsys.readouterr().err
    assert clean.main([*base, "--scores", f"chibi={scores}", "--drop", "chibi=high"]) == 2
    assert "threshold must be a number" in capsys.readouterr().err
    assert not (tmp_path / "A" / "manifest.parquet").exists()
    assert (
        clean.main(["pack", "--manifest", str(tmp_path / "nope.parquet"), "--resolution", "12", "--out", "x.npy"]) == 2
    )
