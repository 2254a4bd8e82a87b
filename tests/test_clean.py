"""Clean stage: filters with audit manifest and yields, and the packed uint8 arrays."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
from conftest import write_posts
from PIL import Image

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
    assert "--drop chibi=high: use a score threshold in [0, 1], auto" in capsys.readouterr().err
    assert not (tmp_path / "A" / "manifest.parquet").exists()
    assert (
        clean.main(["pack", "--manifest", str(tmp_path / "nope.parquet"), "--resolution", "12", "--out", "x.npy"]) == 2
    )


def test_audit_removed_csv_hits_and_thresholds(posts, tmp_path):
    scores = write_scores(tmp_path / "chibi.parquet", posts, np.linspace(0, 1, 12), threshold=0.5)
    table = pd.read_parquet(scores)
    table["threshold"] = 0.5
    table.to_parquet(scores)
    summary = clean.run_filter(
        dataset="B",
        out=tmp_path / "B",
        posts=posts,
        scores={"chibi": scores},
        drop={"chibi": None},
        exclude_tags=["chibi"],
    )
    manifest = pd.read_parquet(tmp_path / "B" / "manifest.parquet")
    # every filter's own verdict, whatever the order: post 12 is removed by the tag rule but chibi flags it too
    assert manifest["hit:exclude:chibi"].tolist() == [i % 3 == 0 for i in range(1, 13)]
    assert manifest["hit:chibi"].tolist() == [i >= 7 for i in range(1, 13)]
    assert np.allclose(manifest["score:chibi"], np.linspace(0, 1, 12))
    assert summary.flagged_by == {"exclude:chibi": 4, "chibi": 6} and summary.removed_by == {
        "exclude:chibi": 4,
        "chibi": 4,
    }
    assert summary.thresholds == {"chibi": 0.5}
    removed = pd.read_csv(tmp_path / "B" / "removed.csv")
    assert list(removed.columns) == clean.REMOVED_COLUMNS
    assert len(removed) == 8 and set(removed["post_id"]) == {3, 6, 9, 12, 7, 8, 10, 11}
    by_chibi = removed[removed["removed_by"] == "chibi"]
    assert by_chibi["removed_score"].tolist() == sorted(by_chibi["removed_score"], reverse=True)  # worst first
    assert removed.loc[removed["removed_by"] == "exclude:chibi", "removed_score"].isna().all()


# A classifier's validation split (scores, labels) whose operating points differ: best F1 is at 0.6 (F1 0.75), and the
# lowest threshold with precision >= 0.4 is 0.05 (4 positives of 10 predicted); at 0.02 precision falls to 4/11.
VAL_SCORES = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.02]
VAL_LABELS = [1, 1, 0, 1, 0, 0, 1, 0, 0, 0, 0]
POST_SCORES = [0.01, 0.03, 0.04, 0.06, 0.1, 0.2, 0.3, 0.5, 0.55, 0.65, 0.7, 0.9]  # posts 1..12


def write_classifier_metrics(path, *, test=True):
    """A classifier's metrics.json as classifier train writes it: the val (and test) blocks with their PR curves, at
    the best-F1 threshold the classifier chose for itself."""
    from ganime_steps.classifier.metrics import split_metrics

    metrics = {"task": "aesthetic", "threshold": 0.6, "threshold_rule": "best_f1"}
    metrics["val"] = split_metrics(np.array(VAL_SCORES), np.array(VAL_LABELS), 0.6)
    test_scores, test_labels = [0.95, 0.5, 0.3, 0.07, 0.04], [1, 0, 1, 0, 1]
    metrics["test"] = split_metrics(np.array(test_scores), np.array(test_labels), 0.6) if test else None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics))
    return path


def test_drop_at_an_operating_point_reads_the_classifiers_validation_curve(posts, tmp_path):
    """drop aesthetic: precision:0.4 (the study's weak filter) cuts at the lowest validation threshold with precision
    >= 0.4, far below the classifier's own best-F1 threshold: it removes more."""
    from ganime_steps.classifier.metrics import select_threshold

    scores = write_scores(tmp_path / "aesthetic.parquet", posts, POST_SCORES, threshold=0.6)
    metrics = write_classifier_metrics(tmp_path / "classifiers" / "aesthetic" / "metrics.json")
    kept = {}
    for name, drop in (("A", None), ("B", "precision:0.4")):
        summary = clean.run_filter(
            dataset=name,
            out=tmp_path / name,
            posts=posts,
            scores={"aesthetic": scores},
            drop={"aesthetic": drop},
            classifier_metrics={"aesthetic": metrics},
        )
        manifest = pd.read_parquet(tmp_path / name / "manifest.parquet")
        kept[name] = set(manifest.loc[manifest["kept"], "post_id"])
    assert kept["A"] == set(range(1, 10))  # the classifier's own cut (predicted: score >= 0.6) removes 10, 11, 12
    assert kept["B"] == {1, 2, 3}  # score >= 0.05 removes posts 4..12
    assert summary.thresholds == {"aesthetic": 0.05}
    assert select_threshold(np.array(VAL_SCORES), np.array(VAL_LABELS), "precision:0.4") == (0.05, True)
    point = summary.operating_points["aesthetic"]
    assert point["rule"] == "precision:0.4" and point["met"] and point["threshold"] == 0.05
    assert point["val_precision"] == 0.4 and point["val_recall"] == 1.0
    # test split at >= 0.05: 0.95, 0.5, 0.3, 0.07 predicted, 2 of them positive, of 3 positives
    assert point["test_precision"] == 0.5 and abs(point["test_recall"] - 2 / 3) < 1e-12
    assert summary.filters["aesthetic"] == "precision:0.4 on validation (>= 0.0500)"
    written = json.loads((tmp_path / "B" / "summary.json").read_text())
    assert written["operating_points"]["aesthetic"]["threshold"] == 0.05


def test_operating_point_not_reached_falls_back_to_best_f1_and_says_so(posts, tmp_path):
    scores = write_scores(tmp_path / "aesthetic.parquet", posts, POST_SCORES)
    metrics = write_classifier_metrics(tmp_path / "metrics.json", test=False)
    summary = clean.run_filter(
        dataset="B",
        out=tmp_path / "B",
        posts=posts,
        scores={"aesthetic": scores},
        drop={"aesthetic": "precision:1"},  # val precision 1 holds down to 0.8; p=1 is reached there
        classifier_metrics={"aesthetic": metrics},
    )
    assert summary.thresholds == {"aesthetic": 0.8} and summary.operating_points["aesthetic"]["met"]
    assert summary.operating_points["aesthetic"]["test_precision"] is None  # no test split in this metrics.json
    metrics.write_text(json.dumps({**json.loads(metrics.read_text()), "val": {"pr_curve": {"thresholds": []}}}))
    with_empty_curve = clean.run_filter(
        dataset="B",
        out=tmp_path / "B",
        posts=posts,
        scores={"aesthetic": scores},
        drop={"aesthetic": "precision:0.99"},
        classifier_metrics={"aesthetic": metrics},
    )
    assert not with_empty_curve.operating_points["aesthetic"]["met"]
    assert "not reached: best F1" in with_empty_curve.filters["aesthetic"]


def test_cli_drop_at_an_operating_point_and_its_errors(posts, tmp_path, capsys):
    scores = write_scores(tmp_path / "aesthetic.parquet", posts, POST_SCORES)
    metrics = write_classifier_metrics(tmp_path / "metrics.json")
    base = ["filter", "--dataset", "B", "--posts", str(posts), "--scores", f"aesthetic={scores}"]
    out = ["--out", str(tmp_path / "B")]
    assert (
        clean.main([*base, "--drop", "aesthetic=precision:0.4", "--classifier-metrics", f"aesthetic={metrics}", *out])
        == 0
    )
    assert json.loads((tmp_path / "B" / "summary.json").read_text())["n_kept"] == 3
    assert clean.main([*base, "--drop", "aesthetic=precision:0.4", *out]) == 2
    assert "--drop aesthetic=precision:0.4: needs the aesthetic classifier's metrics.json" in capsys.readouterr().err
    for bad in ("precision:4", "precision:0", "recall:0.4", "1.5"):
        assert clean.main([*base, "--drop", f"aesthetic={bad}", *out]) == 2
        err = capsys.readouterr().err
        assert f"--drop aesthetic={bad}: use a score threshold in [0, 1]" in err and "precision:<p>" in err, err
    (tmp_path / "broken.json").write_text(json.dumps({"task": "aesthetic", "val": {"f1": 0.5}}))
    flags = ["--drop", "aesthetic=precision:0.4", "--classifier-metrics", f"aesthetic={tmp_path / 'broken.json'}"]
    assert clean.main([*base, *flags, *out]) == 2
    assert "no validation PR curve" in capsys.readouterr().err


def test_removed_grid_per_filter(posts, tmp_path):
    scores = write_scores(tmp_path / "chibi.parquet", posts, np.linspace(0, 1, 12))
    clean.run_filter(dataset="B", out=tmp_path / "B", posts=posts, scores={"chibi": scores}, drop={"chibi": 0.5})
    manifest = tmp_path / "B" / "manifest.parquet"
    out = tmp_path / "B" / "removed_chibi.png"
    summary = clean.run_removed_grid(manifest=manifest, filter_name="chibi", out=out, n=4, tile=32, ncol=2)
    assert (summary.n_removed, summary.n_shown) == (6, 4)
    grid = np.asarray(Image.open(out))
    assert grid.shape == (2 + 2 * (32 + 14 + 2), 2 + 2 * (32 + 2), 3)
    assert (grid < 200).any()  # images and captions, not a blank page
    empty = clean.run_removed_grid(manifest=manifest, filter_name="multi", out=tmp_path / "B" / "removed_multi.png")
    assert empty.n_removed == 0 and (tmp_path / "B" / "removed_multi.png").exists()
    argv = ["removed-grid", "--manifest", str(manifest), "--filter", "chibi", "--n", "2", "--out", str(out)]
    assert clean.main(argv) == 0


def test_filter_names_and_slugs():
    spec = {"require_tags": ["full_body"], "exclude_tags": ["^_^"], "drop": {"chibi": "auto", "multi": 0.4}}
    assert clean.filter_names(spec) == ["require:full_body", "exclude:^_^", "chibi", "multi"]
    assert clean.filter_slug("chibi") == "chibi"
    assert clean.filter_slug("require:full_body") == "require-full_body"
    odd = [clean.filter_slug("exclude:^_^"), clean.filter_slug("exclude:@_@")]
    assert odd[0] != odd[1] and all(re.fullmatch(r"[A-Za-z0-9_-]+", s) for s in odd)


def test_pack_with_workers_writes_identical_bytes(posts, tmp_path):
    clean.run_filter(dataset="A", out=tmp_path / "A", posts=posts)
    manifest = tmp_path / "A" / "manifest.parquet"
    one = clean.run_pack(manifest=manifest, resolution=16, out=tmp_path / "one.npy", preview=tmp_path / "one.png")
    two = clean.run_pack(
        manifest=manifest, resolution=16, out=tmp_path / "two.npy", preview=tmp_path / "two.png", workers=2
    )
    assert one.n_images == two.n_images == 12
    assert (tmp_path / "one.npy").read_bytes() == (tmp_path / "two.npy").read_bytes()
    assert (tmp_path / "one.png").read_bytes() == (tmp_path / "two.png").read_bytes()
    assert np.load(tmp_path / "two.npy").any()  # the workers' rows, not the zeroed file
    assert not list(tmp_path.glob("*.tmp*"))
    assert (
        clean.main(["pack", "--manifest", str(manifest), "--resolution", "16", "--out", "x.npy", "--workers", "0"]) == 2
    )


def test_the_gold_sample_is_held_out_of_a_dataset(tmp_path):
    """Every post of the uniform gold draw leaves the dataset, clean or not, before any other filter."""
    posts = write_posts(tmp_path / "scrape", 8)
    sample = tmp_path / "sample.csv"
    pd.DataFrame({"source": "test", "post_id": [2, 5], "md5": "x", "file": "f"}).to_csv(sample, index=False)
    s = clean.run_filter(dataset="A", out=tmp_path / "A", posts=posts, holdout=sample)
    manifest = pd.read_parquet(tmp_path / "A" / "manifest.parquet")
    assert sorted(manifest.loc[~manifest["kept"], "post_id"]) == [2, 5]
    assert s.removed_by == {clean.HOLDOUT_FILTER: 2} and s.n_kept == 6
