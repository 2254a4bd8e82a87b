"""Export stage: a cleaned dataset published in the Hugging Face imagefolder layout, with its dataset card.

The export is read back by ``load_imagefolder`` below, which follows the layout the ``datasets`` library documents for
its ``imagefolder`` loader (https://huggingface.co/docs/datasets/image_dataset#imagefolder): a split folder (``train/``)
of images, a ``metadata.jsonl`` in it whose ``file_name`` names each image relative to that file, one row per image,
the same columns in every row (they become the features), and a zip of the same tree as ``data_files``. The library
itself is not a test dependency: it pulls in huggingface-hub, xxhash, multiprocess, dill and an HTTP stack (about 15
packages) for a loader this reader stands in for; the export was checked once with ``datasets`` 5.2.0's
``load_dataset("imagefolder", data_dir=...)``, ``load_dataset(folder)`` and ``data_files=<zip>`` (289 rows, every
column typed).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, planned_jobs, snakemake, write_posts
from PIL import Image

from ganime_steps import clean, export
from ganime_steps.common import GanimeError

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp"}
TASKS = ["chibi", "multi", "aesthetic"]


def load_imagefolder(root: Path, split: str = "train") -> list[dict]:
    """Rows of an imagefolder dataset at ``root`` (a folder, or a .zip of one) as the documented layout defines them:
    each row is its metadata plus the decoded ``image``."""
    if root.suffix == ".zip":
        with zipfile.ZipFile(root) as archive:
            files = {name: archive.read(name) for name in archive.namelist() if not name.endswith("/")}
    else:
        files = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    images = {name for name in files if name.startswith(f"{split}/") and Path(name).suffix.lower() in IMAGE_EXTENSIONS}
    lines = files[f"{split}/metadata.jsonl"].decode("utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    columns = list(rows[0])
    assert columns[0] == "file_name" and all(list(row) == columns for row in rows), "columns differ between rows"
    for column in columns:  # one JSON type per column (null allowed): the loader infers one feature per column
        kinds = {type(row[column]).__name__ for row in rows if row[column] is not None}
        assert len(kinds) <= 1 or kinds == {"int", "float"}, (column, kinds)
    named = [f"{split}/{row['file_name']}" for row in rows]
    assert len(set(named)) == len(named), "an image is named twice"
    assert set(named) == images, f"images without metadata or metadata without image: {set(named) ^ images}"
    for row, name in zip(rows, named, strict=True):
        row["image"] = Image.open(io.BytesIO(files[name]))
        row["image_bytes"] = files[name]
    return rows


def _scores(path: Path, posts: Path, values, threshold: float) -> Path:
    table = pd.read_parquet(posts)[["source", "post_id", "md5"]].assign(score=np.asarray(values, dtype=float))
    table["predicted"] = table["score"] >= threshold
    table["threshold"] = threshold
    table.to_parquet(path)
    return path


def _metrics(path: Path, task: str, threshold: float, precision: float) -> Path:
    path.write_text(
        json.dumps(
            {
                "task": task,
                "arch": "resnet34",
                "threshold": threshold,
                "threshold_rule": "best_f1",
                "counts": {"all": {"0": 90, "1": 30}},
                "val": {"f1": 0.8125, "precision": 0.9, "recall": 0.75},
                "test": {"precision": precision, "recall": 0.625, "f1": 0.7, "roc_auc": 0.9375, "n": 24},
            }
        )
    )
    return path


@pytest.fixture
def results(tmp_path, monkeypatch):
    """A results/ folder as the pipeline leaves it for dataset B (12 posts; tag rule, two classifier filters, and an
    aesthetic classifier B does not filter on), with the working directory at its parent like a workflow job."""
    monkeypatch.chdir(tmp_path)
    scrape = Path("results/scrape/test")
    scrape.mkdir(parents=True)
    posts = write_posts(scrape, 12)
    query = {"kind": "dapi", "base_url": "https://booru.example", "tags": "full_body solo", "source": "test"}
    (scrape / "listing.jsonl").write_text(json.dumps({"type": "query", "query": query}) + "\n")
    values = {
        "chibi": np.linspace(0, 1, 12),  # posts 7..12 above 0.5
        "multi": [0.9 if i == 1 else 0.1 for i in range(1, 13)],
        "aesthetic": np.linspace(0.95, 0.05, 12),
    }
    thresholds = {"chibi": 0.5, "multi": 0.8, "aesthetic": 0.4}
    scores = {}
    for task in TASKS:
        folder = Path("results/classifiers") / task
        folder.mkdir(parents=True)
        scores[task] = _scores(folder / "scores.parquet", posts, values[task], thresholds[task])
        _metrics(folder / "metrics.json", task, thresholds[task], precision={"chibi": 0.875}.get(task, 0.5))
    clean.run_filter(
        dataset="B",
        out=Path("results/datasets/B"),
        posts=posts,
        scores={"chibi": scores["chibi"], "multi": scores["multi"]},
        drop={"chibi": None, "multi": 0.8},
        exclude_tags=["chibi"],
    )
    return {"posts": posts, "scores": scores, "values": values}


def _run(out: Path, **kw) -> export.ExportSummary:
    base = Path("results/classifiers")
    args = {
        "dataset": "B",
        "manifest": Path("results/datasets/B/manifest.parquet"),
        "summary": Path("results/datasets/B/summary.json"),
        "posts": Path("results/scrape/test/posts.parquet"),
        "scores": {t: base / t / "scores.parquet" for t in TASKS},
        "metrics": {t: base / t / "metrics.json" for t in TASKS},
        "source": export.SourceInfo("test", "dapi", "https://booru.example", "full_body solo"),
    }
    return export.run_export(out=out, **{**args, **kw})


def test_export_reads_back_as_imagefolder_with_every_field(results):
    summary = _run(Path("results/export/B"))
    manifest = pd.read_parquet("results/datasets/B/manifest.parquet")
    kept = manifest[manifest["kept"]]
    rows = load_imagefolder(Path("results/export/B"))
    # post 1 (multi), 3, 6, 9, 12 (tag chibi), 7, 8, 10, 11 (chibi classifier) removed: 2, 4, 5 kept, in manifest order
    assert [row["post_id"] for row in rows] == kept["post_id"].tolist() == [2, 4, 5]
    assert summary.n_images == 3 and summary.classifiers == TASKS
    posts = pd.read_parquet(results["posts"]).set_index("post_id")
    for row in rows:
        post = posts.loc[row["post_id"]]
        # the original file byte for byte: its md5 is the booru's md5, and the name is the stored one
        assert hashlib.md5(row["image_bytes"]).hexdigest() == row["md5"] == post["md5"]
        assert row["file_name"] == Path(post["file"]).name
        assert (row["source"], row["post_url"], row["tags"], row["rating"]) == (
            "test",
            post["source_url"],
            post["tags"],
            post["rating"],
        )
        assert row["booru_score"] == post["score"] and (row["width"], row["height"]) == row["image"].size == (48, 64)
        for task in TASKS:  # every classifier's score, aesthetic included although B does not filter on it
            assert row[f"score_{task}"] == pytest.approx(results["values"][task][row["post_id"] - 1], abs=1e-6)


def test_dataset_card_says_where_how_and_how_well(results):
    _run(Path("results/export/B"))
    card = Path("results/export/B/README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["license"] == "other" and front["size_categories"] == ["n<1K"]
    assert "`full_body solo`" in card and "https://booru.example" in card and "test (dapi" in card
    # counts per filter, in the order they applied, then what was kept
    table = [line for line in card.splitlines() if line.startswith(("| exclude:chibi", "| chibi |", "| multi |"))]
    assert [line.split(" | ")[0] for line in table[:3]] == ["| exclude:chibi", "| chibi", "| multi"], table
    assert "| exclude:chibi | tag rule | 4 | 4 |" in card and "| chibi | classifier threshold | 6 | 4 |" in card
    assert "| multi | >= 0.8 | 1 | 1 |" in card and "| kept | | | 3 |" in card
    # each classifier's threshold beside the metrics that chose it; aesthetic listed as scores only
    chibi = next(line for line in table if line.startswith("| chibi | yes"))
    assert "| 0.500 | best_f1 | resnet34 | 30 / 90 | 0.812 | 0.875 | 0.625 | 0.700 | 0.938 | 24 |" in chibi
    assert "| multi | yes | 0.800 | >= 0.8 |" in card and "| aesthetic | no (scores only) | 0.400 |" in card
    assert "The images as scraped, byte for byte" in card
    assert "## Licence" in card and "copyright stays with their artists" in card
    assert 'load_dataset("imagefolder"' in card


def test_card_gives_the_test_numbers_at_the_operating_point_the_dataset_cut_at(results):
    """A dataset cut at precision:0.4 (not at the classifier's own best-F1 threshold, 0.4 here): the card's rule is the
    operating point and its held-out test precision/recall/F1 are those at the dataset's cut (from the test curve)."""
    from ganime_steps.classifier.metrics import split_metrics

    folder = Path("results/classifiers/aesthetic")
    val = split_metrics(
        np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]), np.array([1, 1, 0, 1, 0, 0, 1, 0, 0]), 0.4
    )
    test = split_metrics(np.array([0.95, 0.5, 0.3, 0.07, 0.04]), np.array([1, 0, 1, 0, 1]), 0.4)
    metrics = {**json.loads((folder / "metrics.json").read_text()), "val": val, "test": test}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    clean.run_filter(
        dataset="C",
        out=Path("results/datasets/C"),
        posts=results["posts"],
        scores={"aesthetic": results["scores"]["aesthetic"]},
        drop={"aesthetic": "precision:0.4"},  # the lowest val threshold with precision >= 0.4: 0.1 (4/9)
        classifier_metrics={"aesthetic": folder / "metrics.json"},
    )
    _run(
        Path("results/export/C"),
        dataset="C",
        manifest=Path("results/datasets/C/manifest.parquet"),
        summary=Path("results/datasets/C/summary.json"),
    )
    card = Path("results/export/C/README.md").read_text()
    row = next(line for line in card.splitlines() if line.startswith("| aesthetic | yes"))
    # test at >= 0.1: 0.95, 0.5, 0.3 predicted, 2 positive of 3: precision, recall, F1 all 2/3 (at 0.4: 0.5, 1/3)
    assert "| 0.100 | precision:0.4 on validation (>= 0.1000) | resnet34 |" in row, row
    assert "| 0.615 | 0.667 | 0.667 | 0.667 |" in row, row  # val F1 at 0.1: precision 4/9, recall 1


def test_resolution_exports_the_training_pixels(results):
    summary = _run(Path("results/export/B16"), resolution=16)
    pack = Path("results/datasets/B/pack_16.npy")
    clean.run_pack(manifest=Path("results/datasets/B/manifest.parquet"), resolution=16, out=pack)
    rows = load_imagefolder(Path("results/export/B16"))
    assert summary.resolution == 16 and all(row["file_name"].endswith(".png") for row in rows)
    exported = np.stack([np.asarray(row["image"].convert("RGB")) for row in rows])
    np.testing.assert_array_equal(exported, np.load(pack))  # the rows of pack_16.npy, pixel for pixel
    assert all((row["width"], row["height"]) == (16, 16) for row in rows)
    assert "16×16 PNG" in Path("results/export/B16/README.md").read_text()


def test_zip_holds_the_same_tree_and_the_same_bytes_twice(results):
    summary = _run(Path("results/export/B"), make_zip=True)
    archive = Path("results/export/B.zip")
    assert summary.zip == archive
    folder = Path("results/export/B")
    tree = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    with zipfile.ZipFile(archive) as z:
        assert {n: z.read(n) for n in z.namelist()} == tree
    assert [row["post_id"] for row in load_imagefolder(archive)] == [2, 4, 5]
    first = archive.read_bytes()
    _run(Path("results/export/B"), make_zip=True)
    assert archive.read_bytes() == first  # fixed member order and times: a rerun publishes the same archive
    _run(Path("results/export/B"))  # without --zip an older archive would disagree with the folder: removed
    assert not archive.exists()


def test_a_failed_export_leaves_the_existing_one_intact(results):
    out = Path("results/export/B")
    _run(out)
    before = {p.as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    stale = Path(f"results/export/.B.tmp.{2**22 + 12345}")  # a killed export's folder (no such process)
    stale.mkdir()
    # a kept image is gone: the rerun fails part-way, after writing some images into its temporary folder
    manifest = pd.read_parquet("results/datasets/B/manifest.parquet")
    os.remove(manifest.loc[manifest["kept"], "file"].iloc[-1])
    with pytest.raises(GanimeError, match="cannot copy the image"):
        _run(out, make_zip=True)
    assert {p.as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in Path("results/export").iterdir()) == ["B"]  # no temporary folder, no zip


def test_cli_finds_the_inputs_under_results(results, capsys):
    assert export.main(["--dataset", "B", "--out", "pub/B", "--resolution", "8", "--zip"]) == 0
    rows = load_imagefolder(Path("pub/B.zip"))
    assert [row["post_id"] for row in rows] == [2, 4, 5]
    assert sorted(k for k in rows[0] if k.startswith("score_")) == [f"score_{t}" for t in sorted(TASKS)]
    card = Path("pub/B/README.md").read_text()
    assert "`full_body solo`" in card and "https://booru.example" in card  # the query from the scrape's listing
    assert "| chibi | yes | 0.500 | best_f1 |" in card  # metrics.json found beside each scores file
    assert export.main(["--dataset", "nope", "--out", "pub/nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ganime error: results/datasets/nope/manifest.parquet: file not found"), err


def test_missing_score_is_one_clear_error(results):
    short = pd.read_parquet(results["scores"]["aesthetic"]).query("post_id != 4")
    short.to_parquet("results/classifiers/aesthetic/scores.parquet")
    with pytest.raises(
        GanimeError, match=r"scores.parquet: no score for posts \[4\] of dataset B; rerun the aesthetic scoring"
    ):
        _run(Path("results/export/B"))
    assert not Path("results/export/B").exists()


def test_a_face_dataset_exports_its_crops(results):
    """A ``from: faces`` dataset: the crops under their stored names, each row with its post's fields."""
    posts = pd.read_parquet(results["posts"])
    crops = Path("results/faces/crops")
    rows = []
    for post in posts.head(3).itertuples():
        for i in range(2):  # two faces per post
            rel = f"crops/{post.md5[:2]}/{post.md5}_{i}.png"
            (Path("results/faces") / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (40 * i, 80, 120)).save(Path("results/faces") / rel)
            rows.append({"source": "test", "post_id": post.post_id, "md5": post.md5, "face_index": i, "file": rel})
    assert crops.exists()
    pd.DataFrame(rows).assign(x=0, y=0, w=8, h=8).to_parquet("results/faces/faces.parquet")
    clean.run_filter(dataset="faces", out=Path("results/datasets/faces"), faces=Path("results/faces/faces.parquet"))
    summary = _run(
        Path("results/export/faces"),
        dataset="faces",
        manifest=Path("results/datasets/faces/manifest.parquet"),
        summary=Path("results/datasets/faces/summary.json"),
    )
    exported = load_imagefolder(Path("results/export/faces"))
    assert summary.unit == "face" and len(exported) == 6
    assert [row["file_name"] for row in exported] == [Path(r["file"]).name for r in rows]
    by_id = posts.set_index("post_id")
    assert all(row["post_url"] == by_id.loc[row["post_id"], "source_url"] for row in exported)
    assert all(row["md5"] == by_id.loc[row["post_id"], "md5"] for row in exported)
    assert "6 face crops kept of 6 candidates" in Path("results/export/faces/README.md").read_text()


def test_workflow_exports_every_classifier_score_and_only_on_request(tmp_path):
    config = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    config["export"] = {"datasets": ["A"], "zip": True, "resolution": 32}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    result = snakemake("-n", "-p", "export", "--configfile", str(tmp_path / "run.yaml"), "--directory", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert planned_jobs(result).get("export_dataset") == 1
    job = result.stdout.split("rule export_dataset:")[1].split("\n\n")[0]
    assert "output: results/export/A, results/export/A.zip" in job
    # A filters on chibi and multi only; the export carries the aesthetic scores too
    assert all(f"{t}=results/classifiers/{t}/scores.parquet" in job for t in TASKS), job
    assert "--query '1girl solo full_body standing white_background' --kind synthetic --resolution 32 --zip" in job
    # `all` does not export
    plain = snakemake("-n", "--configfile", str(REPO / "configs" / "demo.yaml"), "--directory", str(tmp_path))
    assert plain.returncode == 0 and "export_dataset" not in plain.stdout
    # an export of a dataset the config does not have: one line naming the key
    config["export"]["datasets"] = ["C"]
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    bad = snakemake("-n", "export", "--configfile", str(tmp_path / "run.yaml"), "--directory", str(tmp_path))
    assert bad.returncode != 0 and "config key export.datasets: 'C' is not a dataset" in bad.stderr + bad.stdout
