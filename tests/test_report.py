"""Tests of the report stage on tiny fake inputs laid out as the pipeline writes them."""

from __future__ import annotations

import base64
import csv
import dataclasses
import functools
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ganime_steps import report as rp
from ganime_steps.classifier.train import ClassifierMetrics, SplitMetrics
from ganime_steps.clean import CleanSummary
from ganime_steps.labels import LabelsSummary
from ganime_steps.metrics.result import MetricResult, Scores, Side, Weights
from ganime_steps.train_record import TrainSummary

AESTHETIC = "classifier:aesthetic:resnet34"  # the feature space of most runs here


def _png(path: Path, colour: tuple[int, int, int], size: int = 24) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), colour, dtype=np.uint8)).save(path)
    return path


def _json(path: Path, obj: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


# Every input file below is written through the record its stage writes (``to_json``): the report reads those keys
# and no others.


def _scores(fd, kid_mean, kid_std, precision=None, recall=None, *, n_real=8000, **more) -> Scores:
    """10000 generated images; ``more``: the intervals and FID∞."""
    pr = {"precision": precision, "recall": recall, "pr_k": 3} if precision is not None else {}
    return Scores(fd=fd, kid_mean=kid_mean, kid_std=kid_std, kid_subsets=100, kid_subset_size=1000, **pr,
                  n_fake=10000, n_real=n_real, **more)  # fmt: skip


def _reference(scores: Scores, data: str, *, space: str = AESTHETIC, res: int = 64) -> MetricResult:
    """One reference's result within a run: ``scores`` against the reference of dataset ``data``."""
    real = Side(f"results/evaluation/reference_{data}_{res}.npz", f"results/datasets/{data}/pack_{res}.npy",
                [res, res], f"sha256-of-{data}", data)  # fmt: skip
    return MetricResult(kind="run", feature_space=space, is_fid=space == "inception", scores=scores, real=real, seed=0)


def _run_json(path: Path, references: dict[str, MetricResult]) -> Path:
    """A run's metrics.json as ``evaluate run`` writes it; the first reference is the primary."""
    primary = next(iter(references.values()))  # the run's own record: the primary's, plus what only a run has
    weights = Weights("weights.pth", "sha256-of-weights", "identity", "test")
    fake = Side(str(path.parent / "generator.pt"))
    result = dataclasses.replace(primary, fake=fake, weights=weights, truncation=1.0, references=references)
    return _json(path, result.to_json())


def _run_metrics(
    path: Path, fd, kid_mean, kid_std, precision, recall, *, space=AESTHETIC, n_real=8000, data="A"
) -> Path:
    """A run measured against one reference (the shared one: dataset ``data``)."""
    scores = _scores(fd, kid_mean, kid_std, precision, recall, n_real=n_real)
    return _run_json(path, {"shared": _reference(scores, data, space=space)})


def _train_summary(path: Path, family: str, dataset: str, kimg: float, resolution: int = 64) -> Path:
    """train_summary.json of a run on ``dataset`` that trained ``kimg``."""
    summary = TrainSummary(
        family=family, resolution=resolution, data=f"results/datasets/{dataset}/pack_{resolution}.npy",
        out=str(path.parent), kimg_target=kimg, images_seen=int(kimg * 1000), images_this_run=int(kimg * 1000),
        step=100, resumed=False, lr=0.0002, betas=(0.5, 0.999), n_critic=1, device="cpu", amp="off", diffaug=False,
        seconds_total=60.0, seconds_this_run=60.0, img_per_s=100.0, n_params_g=1000, n_params_d=1000, loss_g=1.0,
        loss_d=0.5, penalty=None, dataset=dataset,
    )  # fmt: skip
    return _json(path, summary.to_json())


def _clf_block(split: str, n: int, p: float, r: float, f1: float, auc: float, confusion) -> SplitMetrics:
    (tn, fp), (fn, tp) = confusion
    return SplitMetrics(split=split, n=n, counts={"0": tn + fp, "1": fn + tp}, precision=p, recall=r, f1=f1,
                        roc_auc=auc, confusion=confusion, average_precision=p,
                        pr_curve={"thresholds": [0.5], "precision": [p], "recall": [r]})  # fmt: skip


def _classifier(path: Path, task: str, *, test, val, test_note=None, sizes=(120, 40, 40), **more) -> Path:
    """A classifier's metrics.json as ``classifier train`` writes it; ``more``: other fields (pretrained_origin)."""
    fields = dict(arch="resnet34", pretrained="none", image_size=128, seed=0, val_fraction=0.25, test_fraction=0.2,
                  lr=1e-3, backbone_lr_scale=0.1, pretrained_origin="none: random initialisation of resnet34",
                  class_balance="BCEWithLogitsLoss pos_weight = n_negative / n_positive (train)", pos_weight=1.0,
                  epochs_run=3, best_epoch=2, threshold=0.42, threshold_rule="best_f1", threshold_rule_met=True,
                  history=[], seconds_per_epoch=1.0, device="cpu")  # fmt: skip
    counts = {
        "all": {"0": 1, "1": 1},
        "train": {"0": 1, "1": 1},
        "val": val.counts,
        "test": test.counts if test else {},
    }
    n_train, n_val, n_test = sizes
    metrics = ClassifierMetrics(**{**fields, **more}, task=task, n_train=n_train, n_val=n_val, n_test=n_test,
                                counts=counts, test=test, test_note=test_note, val=val)  # fmt: skip
    return _json(path, metrics.to_json())


def _dataset(path: Path, name: str, n_total: int, n_kept: int, removed_by: dict, **more) -> Path:
    """A dataset's summary.json as ``clean filter`` writes it; ``more``: thresholds, operating_points."""
    filters = {f: "classifier threshold" for f in removed_by}
    summary = CleanSummary(name, "post", n_total, n_kept, removed_by, filters, dict(removed_by), **more)
    return _json(path, summary.to_json())


def _section(page: str, heading: str) -> str:
    """The markup between ``<h2>heading</h2>`` and the next ``<h2>``."""
    return page.split(f"<h2>{heading}</h2>", 1)[1].split("<h2>", 1)[0]


@pytest.fixture
def inputs(tmp_path) -> dict[str, list[Path]]:
    res = tmp_path / "results"
    run_a = res / "runs" / "model_a" / "metrics.json"
    _run_metrics(run_a, 41.2345, 0.03125, 0.0021, 0.654, 0.321)
    _train_summary(res / "runs" / "model_a" / "train_summary.json", "wgan_gp", "A", 1200.0)
    run_b = res / "runs" / "model_b" / "metrics.json"
    _run_metrics(run_b, 17.5, 0.0104, 0.0009, 0.712, 0.455)
    clf = _classifier(
        res / "classifiers" / "chibi" / "metrics.json",
        "chibi",
        test=_clf_block("test (held out)", 275, 0.9123, 0.8766, 0.894, 0.9712, [[180, 7], [11, 77]]),
        val=_clf_block(VAL, 40, 0.95, 0.9, 0.9243, 0.99, [[30, 1], [1, 8]]),
    )
    _png(res / "classifiers" / "chibi" / "pr_curve.png", (10, 10, 200))
    _png(res / "classifiers" / "chibi" / "confusion.png", (200, 10, 10))
    ds = _dataset(res / "datasets" / "A" / "summary.json", "A", 400, 300, {"chibi": 60, "multi": 40})
    grids = [
        _png(res / "runs" / "model_a" / "samples.png", (0, 255, 0)),
        _png(res / "runs" / "model_b" / "samples.png", (0, 0, 255)),
    ]
    return {
        "run_metrics": [run_a, run_b],
        "classifier_metrics": [clf],
        "dataset_summaries": [ds],
        "sample_grids": grids,
    }


def test_run_report_html_csv_summary(tmp_path, inputs):
    out = tmp_path / "report"
    s = rp.run_report(**inputs, out=out, title="Model A vs <B>")
    page = (out / "index.html").read_text(encoding="utf-8")
    assert (s.n_runs, s.n_classifiers, s.n_datasets, s.n_grids) == (2, 1, 1, 2)
    # run names, family/dataset from train_summary.json, and the numbers as formatted
    for text in (
        "model_a",
        "model_b",
        "wgan_gp",
        '<td class="t">A</td>',
        "1200.0",
        "41.23",
        "17.50",
        "0.03125 ± 0.00210",
        "0.654",
        "0.455",
    ):
        assert text in page, text
    # classifier table, confusion matrix with class names, dataset yield with kept % and per-filter share
    for text in (
        "0.912",
        "0.877",
        "0.894",
        "0.971",
        "0.420",
        "not_chibi",
        "<td>180</td>",
        "<td>77</td>",
        "75.0",
        "60 (15.0%)",
    ):
        assert text in page, text
    # Classifier feature space: labelled as such and never presented as FID.
    assert "not FID" in page and "classifier:aesthetic:resnet34" in page and ">FID<" not in page
    # Title escaped, no external resources, every image embedded: 2 grids + 2 classifier figures.
    assert "Model A vs &lt;B&gt;" in page and "<B>" not in page
    assert not re.search(r'(src|href)="(?!data:)', page) and "<script" not in page
    uris = re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)
    assert len(uris) == 4
    assert base64.b64decode(uris[0]).startswith(rp.PNG_MAGIC)
    # The better run in the shared space is highlighted.
    assert re.search(r'<tr class="best"><td class="t">model_b</td>', page)

    with open(out / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["run"] for r in rows] == ["model_a", "model_b"]
    assert list(rows[0]) == rp.RUN_COLUMNS
    assert (
        float(rows[1]["fd"]) == 17.5
        and rows[1]["family"] == ""
        and float(rows[0]["kimg"]) == 1200
        and rows[0]["dataset"] == "A"
    )

    summary = json.loads((out / "report_summary.json").read_text())
    assert summary["comparable"] is True and summary["any_fid"] is False
    assert summary["datasets"][0]["kept_pct"] == 75.0
    assert summary["classifiers"][0]["confusion"] == [[180, 7], [11, 77]]


def test_mixed_spaces_warn_and_fid_is_named(tmp_path, inputs):
    fid_run = tmp_path / "results" / "runs" / "model_c" / "metrics.json"
    _run_metrics(fid_run, 12.0, 0.01, 0.001, 0.7, 0.5, space="inception", n_real=10000)
    out = tmp_path / "r"
    s = rp.run_report(**{**inputs, "run_metrics": [*inputs["run_metrics"], fid_run]}, out=out, title="t")
    page = (out / "index.html").read_text(encoding="utf-8")
    assert s.feature_spaces == ["classifier:aesthetic:resnet34", "inception"]
    assert "different feature spaces" in page and ">FID<" in page and "not FID" not in page
    assert json.loads((out / "report_summary.json").read_text())["comparable"] is False


def test_non_png_grid_is_converted(tmp_path):
    jpg = tmp_path / "runs" / "r" / "samples.png"
    jpg.parent.mkdir(parents=True)
    Image.new("RGB", (8, 8), (1, 2, 3)).save(jpg, format="JPEG")
    uri = rp.png_data_uri(jpg, "--sample-grids")
    assert base64.b64decode(uri.split(",", 1)[1]).startswith(rp.PNG_MAGIC)


def test_cli(tmp_path, inputs, capsys):
    out = tmp_path / "rep"
    argv = ["--title", "T", "--out", str(out)]
    for flag, key in [
        ("--run-metrics", "run_metrics"),
        ("--classifier-metrics", "classifier_metrics"),
        ("--dataset-summaries", "dataset_summaries"),
        ("--sample-grids", "sample_grids"),
    ]:
        argv += [flag, *map(str, inputs[key])]
    assert rp.main(argv) == 0
    assert {p.name for p in out.iterdir()} == {"index.html", "metrics.csv", "report_summary.json"}
    with open(out / "metrics.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 2
    # An empty report (nothing evaluated yet) still renders.
    assert rp.main(["--out", str(tmp_path / "empty")]) == 0
    assert "No runs evaluated" in (tmp_path / "empty" / "index.html").read_text()


def test_cli_missing_or_bad_inputs_exit_2(tmp_path, inputs, capsys):
    out = tmp_path / "rep"
    missing = tmp_path / "results" / "runs" / "ghost" / "metrics.json"
    assert rp.main(["--run-metrics", str(missing), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "--run-metrics" in err
    assert rp.main(["--sample-grids", str(tmp_path / "nope.png"), "--out", str(out)]) == 2
    assert "nope.png" in capsys.readouterr().err
    bad = _dataset(tmp_path / "datasets" / "B" / "summary.json", "B", 3, 2, {})
    bad.write_text(json.dumps({k: v for k, v in json.loads(bad.read_text()).items() if k != "n_kept"}))
    assert rp.main(["--dataset-summaries", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "missing key 'n_kept'; rerun the clean stage" in err and str(bad) in err
    broken = tmp_path / "classifiers" / "x" / "metrics.json"
    broken.parent.mkdir(parents=True)
    broken.write_text("{not json")
    assert rp.main(["--classifier-metrics", str(broken), "--out", str(out)]) == 2
    assert "not readable JSON" in capsys.readouterr().err
    assert not out.exists()


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit):
        rp.main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--run-metrics", "--classifier-metrics", "--dataset-summaries", "--sample-grids", "--title", "--out"):
        assert flag in text


def test_removed_grids_groundtruth_labels_and_queue(tmp_path, inputs):
    res = tmp_path / "results"
    ds = _dataset(
        res / "datasets" / "B" / "summary.json",
        "B",
        100,
        70,
        {"require:full_body": 10, "chibi": 20},
        thresholds={"chibi": 0.4125},
    )
    grids = [
        _png(res / "datasets" / "B" / "removed_require-full_body.png", (1, 2, 3)),
        _png(res / "datasets" / "B" / "removed_chibi.png", (4, 5, 6)),
    ]
    gt = _json(
        res / "groundtruth" / "groundtruth.json",
        {
            "datasets": {
                "B": {
                    "filters": {
                        "chibi": {
                            "truth": "chibi",
                            "flagged": 22,
                            "removed": 20,
                            "precision": 0.8636,
                            "recall": 0.7917,
                        },
                        "require:full_body": {"truth": None, "flagged": 10, "removed": 10},
                    },
                    "flaws": {"chibi": {"all": 0.24, "kept": 0.0714}},
                }
            }
        },
    )
    counts = _json(
        res / "labels" / "chibi_counts.json",
        LabelsSummary("chibi", 200, 31, 169, ["l.csv"], {"chibi": 31, "not_chibi": 169}, {"l.csv": {}}).to_json(),
    )
    queue = res / "label_queue" / "chibi.csv"
    queue.parent.mkdir(parents=True)
    queue.write_text(
        "source,post_id,md5,file,score,threshold,distance\ns,5,a,f,0.39,0.41,0.02\ns,9,b,g,0.45,0.41,0.04\n"
    )
    out = tmp_path / "rep"
    s = rp.run_report(
        **{**inputs, "dataset_summaries": [*inputs["dataset_summaries"], ds]},
        out=out,
        title="t",
        removed_grids=grids,
        groundtruth=gt,
        label_counts=[counts],
        label_queues=[queue],
    )
    page = (out / "index.html").read_text(encoding="utf-8")
    assert s.n_removed_grids == 2 and s.groundtruth
    for text in (
        "removed by chibi: 20 of 100, score ≥ 0.412",
        "removed by require:full_body: 10 of 100<",
        "Filters against the ground truth",
        "<td>0.864</td><td>0.792</td>",
        "24.0% → 7.1%",
        "<td>31 / 169</td>",
        "0.390 – 0.450",
        "label_queue/chibi.json",
    ):
        assert text in page, text
    uris = re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)
    assert len(uris) == 6  # 2 sample grids, 2 classifier figures, 2 removed grids
    # a grid for a filter the dataset does not have is an input mistake, named
    stray = _png(res / "datasets" / "B" / "removed_multi.png", (7, 8, 9))
    assert rp.main(["--dataset-summaries", str(ds), "--removed-grids", str(stray), "--out", str(tmp_path / "x")]) == 2


def test_dataset_yields_beside_the_studys_figures(tmp_path, capsys):
    """Each dataset's yield (kept of scraped) beside the study's own sizes given in the config (report.study), and the
    operating point a filter cut at in its removed-images caption."""
    res = tmp_path / "results" / "datasets"
    summaries = [
        _dataset(res / "A" / "summary.json", "A", 19000, 11640, {}),
        _dataset(
            res / "B" / "summary.json",
            "B",
            19000,
            5200,
            {"aesthetic": 6440},
            thresholds={"aesthetic": 0.1234},
            operating_points={"aesthetic": {"rule": "precision:0.4", "threshold": 0.1234, "met": True}},
        ),
        _dataset(res / "faces" / "summary.json", "faces", 900, 800, {}),
    ]
    grid = _png(res / "B" / "removed_aesthetic.png", (1, 2, 3))
    study = {"study_name": "full-body study", "study_scraped": 20000, "study_kept": {"A": "12000", "B": "5000"}}
    base = {"run_metrics": [], "classifier_metrics": [], "sample_grids": [], "title": "T"}
    rp.run_report(**base, dataset_summaries=summaries, removed_grids=[grid], out=tmp_path / "rep", **study)
    section = _section((tmp_path / "rep" / "index.html").read_text(encoding="utf-8"), "Dataset yields")
    assert "<th>full-body study: kept of scraped</th><th>kept here / full-body study</th>" in section
    assert "<td>11640</td><td>61.3</td><td>≈12000 of ≈20000 (60.0%)</td><td>0.97×</td>" in section
    assert "<td>5200</td><td>27.4</td><td>≈5000 of ≈20000 (25.0%)</td><td>1.04×</td>" in section
    assert "<td>800</td><td>88.9</td><td>—</td><td>—</td>" in section  # the study gives no size for faces
    assert "removed by aesthetic: 6440 of 19000, score ≥ 0.123 (precision:0.4 on validation)" in section
    summary = json.loads((tmp_path / "rep" / "report_summary.json").read_text())
    assert summary["study_yields"] == {"name": "full-body study", "scraped": 20000, "kept": {"A": 12000, "B": 5000}}
    # without the study's figures the table has no such columns
    rp.run_report(**base, dataset_summaries=summaries, out=tmp_path / "plain")
    assert "kept of scraped" not in (tmp_path / "plain" / "index.html").read_text(encoding="utf-8")
    # a bad figure at the shell is one line naming the config key
    flags = ["--dataset-summaries", str(summaries[0]), "--study-kept", "A=many", "--out", str(tmp_path / "bad")]
    assert rp.main(flags) == 2
    assert "--study-kept A=many: must be a count >= 1 (config key report.study.kept)" in capsys.readouterr().err


def test_best_run_is_chosen_per_reference_set(tmp_path, inputs):
    """A face run with a lower FD against the face set must not outrank runs measured against dataset A."""
    for run, ref, fd in (("a1", "A", 9.0), ("a2", "A", 7.0), ("f1", "faces", 1.0), ("f2", "faces", 3.0)):
        _run_metrics(tmp_path / "runs" / run / "metrics.json", fd, 0.01, 0.001, None, None, n_real=10, data=ref)
    inputs["run_metrics"] = [tmp_path / "runs" / r / "metrics.json" for r in ("a1", "a2", "f1", "f2")]
    rp.run_report(**inputs, out=tmp_path / "out", title="t")
    page = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    best = re.findall(r'<tr class="best"><td class="t">(\w+)</td>', page)
    assert best == ["a2", "f1"]
    with open(tmp_path / "out" / "metrics.csv", newline="") as fh:
        assert [r["reference"] for r in csv.DictReader(fh)] == ["A", "A", "faces", "faces"]


VAL = "validation (used for epoch and threshold)"
HEADLINE = "Does stricter cleaning make a better GAN?"


def test_classifier_headline_is_the_test_split(tmp_path):
    """Test numbers lead the table with the split sizes; validation F1 stays, labelled as what chose the threshold."""
    chibi = _classifier(
        tmp_path / "classifiers" / "chibi" / "metrics.json",
        "chibi",
        pretrained_origin="offline: tf_efficientnet_lite0 ImageNet weights from efficientnet-lite0 (content ab)",
        test=_clf_block("test (held out)", 40, 0.8111, 0.7222, 0.7641, 0.9012, [[28, 3], [5, 4]]),
        val=_clf_block(VAL, 40, 0.95, 0.9, 0.9243, 0.99, [[30, 1], [1, 8]]),
    )
    multi = _classifier(
        tmp_path / "classifiers" / "multi" / "metrics.json",
        "multi",
        sizes=(120, 40, 0),
        test=None,
        test_note="too few labels for a test split (class 1 has 2 distinct image(s))",
        val=_clf_block(VAL, 30, 0.5, 1.0, 0.6667, 0.75, [[27, 2], [0, 1]]),
    )
    items = [rp.read_classifier(chibi), rp.read_classifier(multi)]
    assert items[0]["headline"] == "test" and items[0]["f1"] == 0.7641 and items[0]["val"]["f1"] == 0.9243
    assert items[0]["confusion"] == [[28, 3], [5, 4]] and items[0]["sizes"] == {"train": 120, "val": 40, "test": 40}
    assert items[1]["headline"] == "validation" and items[1]["test"] is None and items[1]["f1"] == 0.6667
    page = _section(rp.render_html("t", [], items, [], []), "Cleaning classifiers")
    table = page.split("</table>")[0]
    chibi_row = re.search(r'<tr><td class="t">chibi</td>.*?</tr>', table).group(0)
    for text in ("120 / 40 / 40", "test (held out)", "0.811", "0.722", "0.764", "0.901", "0.420", "0.924"):
        assert text in chibi_row, text
    assert "offline: tf_efficientnet_lite0 ImageNet weights from efficientnet-lite0 (content ab)" in chibi_row
    assert "none: random initialisation of resnet34" in table  # multi's weights
    assert chibi_row.index("0.764") < chibi_row.index("0.924")  # validation F1 is the last column
    assert "validation F1 (used for epoch and threshold)" in table
    multi_row = re.search(r'<tr><td class="t">multi</td>.*?</tr>', table).group(0)
    assert "validation only: no test split" in multi_row and "120 / 40 / 0" in multi_row
    assert "multi: too few labels for a test split (class 1 has 2 distinct image(s))" in page
    # both confusion matrices, each named by its split
    assert "test (held out), n=40" in page and "validation (used for epoch and threshold), n=40" in page
    assert "<td>28</td>" in page and "<td>30</td>" in page


def test_a_file_that_is_not_its_stages_record_is_refused(tmp_path, capsys):
    """Each input is read through its writer's record: a file without the record's keys (a flat classifier file, a run
    without references, a data-FID file without its sides) is one line naming the first missing key and the fix."""
    flat = _json(
        tmp_path / "chibi" / "metrics.json",
        {"task": "chibi", "arch": "resnet34", "f1": 0.9, "precision": 0.8, "recall": 1.0, "threshold": 0.5},
    )
    run = _json(tmp_path / "runs" / "r" / "metrics.json", {"feature_space": "inception", "is_fid": True, "fd": 1.0})
    fid = _json(tmp_path / "evaluation" / "data_A_32.json", {"feature_space": "inception", "is_fid": True, "fd": 1.0})
    for flag, path, message in (
        ("--classifier-metrics", flat, "missing key 'pretrained'; rerun classifier train"),
        ("--run-metrics", run, "missing key 'kid_mean'; rerun `python -m ganime_steps.evaluate run`"),
        ("--data-fid", fid, "missing key 'kid_mean'; rerun `python -m ganime_steps.evaluate distance`"),
    ):
        assert rp.main([flag, str(path), "--out", str(tmp_path / "out")]) == 2
        assert f"{flag} {path}: {message}" in capsys.readouterr().err


def test_page_sections_escaping_and_inlined_css(tmp_path, inputs):
    """Every section whose input is given, under its heading; user-supplied names escaped; the CSS file inlined."""
    res = tmp_path / "results"
    evil = "evil<script>alert(1)"  # a run name is a folder name from the user's config
    train_ref = _reference(_scores(12.3456, 0.002, 0.0005), "B", space="inception")
    run = _run_json(res / "runs" / evil / "metrics.json", {"train": train_ref})
    _train_summary(res / "runs" / evil / "train_summary.json", "dcgan", "B", 2.0)
    (res / "runs" / evil / "metrics.jsonl").write_text('{"kimg": 1, "fid": 30.0}\n{"kimg": 2, "fid": 12.5}\n')
    grid = _png(res / "runs" / evil / "samples.png", (9, 9, 9))
    directions = _png(res / "runs" / evil / "directions.png", (8, 8, 8))
    gt = _json(
        res / "groundtruth" / "groundtruth.json",
        {"datasets": {"A": {"filters": {"chibi": {"truth": "chibi", "flagged": 61, "removed": 60, "precision": 0.95,
                                                  "recall": 0.8}}}}},
    )  # fmt: skip
    queue = res / "label_queue" / "chibi.csv"
    queue.parent.mkdir(parents=True)
    queue.write_text("source,post_id,md5,file,score,threshold,distance\ns,5,a,f,0.39,0.41,0.02\n")
    out = tmp_path / "rep"
    rp.run_report(
        **{**inputs, "run_metrics": [*inputs["run_metrics"], run], "sample_grids": [*inputs["sample_grids"], grid]},
        out=out,
        title="T",
        groundtruth=gt,
        label_queues=[queue],
        directions=[directions],
        groups={evil: "dcgan_B"},
        studies={"small": "train"},
        study_groups={"dcgan_B": "small"},
    )
    page = (out / "index.html").read_text(encoding="utf-8")
    assert re.findall(r"<h2>(.*?)</h2>", page) == [
        "Does stricter cleaning make a better GAN?",
        "Dataset study: small",
        "Generative models",
        "Training curves",
        "Time to quality",
        "Sample grids",
        "Latent directions (style studio)",
        "Cleaning classifiers",
        "Dataset yields",
        "Filters against the ground truth",
        "Label queue",
    ]
    # known numbers in their rows: the study cell (FD · KID×10³ over seeds), the runs table, yields, ground truth
    study = _section(page, "Dataset study: small")
    assert '<td title="dcgan_B">12.35 · 2.00 ± 0.50<br><small>1 seed(s)</small></td>' in study
    assert "each run against its own training set" in study
    assert re.search(r'<tr class="best"><td class="t">model_b</td>', _section(page, "Generative models"))
    assert "<td>60 (15.0%)</td>" in _section(page, "Dataset yields")
    assert '<td class="t">chibi</td>\n<td>61</td><td>60</td><td>0.950</td><td>0.800</td><td>—</td>' in page
    assert "<td>0.390 – 0.390</td>" in _section(page, "Label queue")
    # the run name is text everywhere it shows: table cells, alt text, captions
    assert "<script" not in page and "alert(1)" in page
    escaped = "evil&lt;script&gt;alert(1)"
    assert f'<td class="t">{escaped}</td>' in _section(page, "Generative models")
    assert f'alt="samples of {escaped}"' in _section(page, "Sample grids")
    assert f"<figcaption>{escaped}: best snapshot at 2 kimg (fid 12.50)</figcaption>" in page
    # one self-contained file: the style sheet inlined verbatim, every image a data: URI, nothing linked
    css = (Path(rp.__file__).parent / "templates" / "report.css").read_text(encoding="utf-8")
    assert re.search(r"<style>(.*?)</style>", page, re.S).group(1).strip() == css.strip()
    assert '"Segoe UI"' in page
    assert not re.search(r'(src|href)="(?!data:)', page) and "<link" not in page
    # 3 grids, 2 classifier figures, the curve, directions, time to quality (dcgan_B: the only group with snapshots)
    assert len(re.findall(r'<img src="data:image/png;base64,', page)) == 8
    assert "Only dcgan_B is measured against this reference" in _section(page, "Time to quality")


# ----------------------------------------------------------------------------------------------------------------------
# the study's answer: seeds, references, verdicts


def _ref_block(fd: float, data: str, kid: float, n_real: int = 8000, extras: bool = True) -> MetricResult:
    """One reference's result in a run's metrics.json; ``extras``: the within-run intervals and FID∞."""
    more = {"fd_ci": [fd - 1.5, fd + 1.25], "kid_ci": [kid - 0.001, kid + 0.001], "fd_inf": fd - 7} if extras else {}
    return _reference(_scores(fd, kid, 0.0005, n_real=n_real, **more), data, space="inception")


def _seed_runs(root: Path, *, gold_n: int = 500, extras: bool = True) -> list[Path]:
    """Three seeds of dcgan on A and on B, each measured against the shared set (A), its own set and gold. Gold: B
    lower by 10 (seed sd 1); shared: A lower by 10 (A is the shared set); own sets: B 20 higher, each its own set."""
    paths = []
    for dataset, shared, train, gold in (("A", 20.0, 30.0, 60.0), ("B", 30.0, 50.0, 50.0)):
        for seed, jitter in enumerate((-1.0, 0.0, 1.0)):
            run = root / "runs" / f"dcgan_{dataset}_s{seed}"
            block = functools.partial(_ref_block, extras=extras)
            refs = {
                "shared": block(shared + jitter, "A", 0.010 + jitter / 1000),
                "train": block(train + jitter, dataset, 0.020 + jitter / 1000),
                "gold": block(gold + jitter, "gold", 0.030 + jitter / 1000 - (dataset == "B") * 0.005, n_real=gold_n),
            }
            paths.append(_run_json(run / "metrics.json", refs))
            _train_summary(run / "train_summary.json", "dcgan", dataset, 1.0)
    return paths


def _groups(paths: list[Path]) -> dict[str, str]:
    return {p.parent.name: p.parent.name.rsplit("_s", 1)[0] for p in paths}


def test_headline_answers_against_gold_with_welch_and_holm(tmp_path):
    paths = _seed_runs(tmp_path)
    out = tmp_path / "rep"
    rp.run_report(run_metrics=paths, classifier_metrics=[], dataset_summaries=[], sample_grids=[], out=out,
                  title="t", groups=_groups(paths), gold_min=200)  # fmt: skip
    page = (out / "index.html").read_text(encoding="utf-8")
    study = _section(page, "Does stricter cleaning make a better GAN?")
    headline = re.search(r'<div class="note">(.*?)</div>', study, re.S).group(1)
    # gold, not the shared set (A itself, where A wins): B better, with its interval, Holm's p and the seeds
    assert "dcgan, A vs B against gold: B better than A by 10.00 (95% CI " in headline
    assert "after Holm over 4 comparisons, n = 3+3 seeds)" in headline and "A better" not in headline
    assert "shared reference is usually dataset A itself, so it favours A by construction" in study
    assert "FID: A better than B by 10.00" in study  # the shared set's own verdict, listed below the headline
    assert "KID: B better than A by 5.00×10⁻³" in study  # KID over seeds too (against gold)
    summary = json.loads((out / "report_summary.json").read_text())
    assert summary["gold_min"] == 200
    gold = next(v for v in summary["verdicts"] if v["reference"] == "gold")
    assert gold["fd"]["verdict"] == "b_better" and gold["fd"]["n_tests"] == 4 and gold["fd"]["p_adjusted"] < 0.05


def test_no_verdict_on_own_training_sets_across_datasets(tmp_path):
    """B is 20 worse on its own training set, far beyond the seeds' spread: the numbers show, a verdict never does."""
    paths = _seed_runs(tmp_path)
    out = tmp_path / "rep"
    rp.run_report(run_metrics=paths, classifier_metrics=[], dataset_summaries=[], sample_grids=[], out=out,
                  title="t", groups=_groups(paths), studies={"ab": "train"},
                  study_groups={"dcgan_A": "ab", "dcgan_B": "ab"})  # fmt: skip
    page = (out / "index.html").read_text(encoding="utf-8")
    train_items = re.findall(r"<li[^>]*>dcgan, each against its own training set.*?</ul></li>", page, re.S)
    assert len(train_items) == 2  # the study section's list and the dataset study's
    for item in train_items:
        assert "better than" not in item and "no difference detected" not in item
        assert "no verdict: own training sets differ" in item and "A 30.00 ± 1.00 (3 seeds), B 50.00 ± 1.00" in item
    assert "these comparisons carry no verdict" in _section(page, "Dataset study: ab")
    summary = json.loads((out / "report_summary.json").read_text())
    train = [v for v in summary["verdicts"] if v["reference"] == "train"]
    assert train and all(v["status"] == "no_verdict" and v["fd"]["verdict"] is None for v in train)
    (table,) = summary["studies"]
    assert [v["status"] for v in table["verdicts"]] == ["no_verdict"]


def test_gold_too_small_to_judge(tmp_path, capsys):
    paths = _seed_runs(tmp_path, gold_n=120)
    out = tmp_path / "rep"
    argv = ["--run-metrics", *map(str, paths), "--groups", *(f"{r}={g}" for r, g in _groups(paths).items())]
    assert rp.main([*argv, "--gold-min", "200", "--out", str(out)]) == 0
    study = _section((out / "index.html").read_text(encoding="utf-8"), "Does stricter cleaning make a better GAN?")
    headline = re.search(r'<div class="note">(.*?)</div>', study, re.S).group(1)
    assert "against gold: gold too small to judge (n = 120, need ≥ 200)" in headline and "better" not in headline
    assert rp.main([*argv, "--gold-min", "100", "--out", str(out)]) == 0  # enough gold: judged again
    assert "B better than A" in _section((out / "index.html").read_text(encoding="utf-8"), HEADLINE)
    assert rp.main([*argv, "--gold-min", "-1", "--out", str(tmp_path / "x")]) == 2
    assert "--gold-min -1: must be 0 or more" in capsys.readouterr().err


def test_within_run_intervals_and_fid_infinity_are_shown(tmp_path):
    paths = _seed_runs(tmp_path)
    out = tmp_path / "rep"
    one_seed = {p.parent.name: p.parent.name for p in paths}  # every run its own group: one seed each
    rp.run_report(run_metrics=paths, classifier_metrics=[], dataset_summaries=[], sample_grids=[], out=out,
                  title="t", groups=one_seed)  # fmt: skip
    page = (out / "index.html").read_text(encoding="utf-8")
    runs = _section(page, "Generative models")
    row = re.search(r'<td class="t">dcgan_A_s0</td>.*?</tr>', runs, re.S).group(0)
    assert "19.00 [17.50, 20.25] <small>FID</small></td>\n<td>12.00</td>" in row  # FID [interval], then FID∞
    assert "0.00900 ± 0.00050 [0.00800, 0.01000]" in row
    assert "FID at small N is mostly bias" in runs and "Chong &amp; Forsyth 2020" in runs
    # one seed a group: the study table shows that seed's interval, never a bare FID
    study = _section(page, "Does stricter cleaning make a better GAN?")
    assert '<td title="vs gold">59.00 [57.50, 60.25] · 29.00 ± 0.50<br><small>vs gold; ∞: 52.00</small></td>' in study
    assert "one seed on a side: not a result (n = 1+1 seeds)" in study
    with open(out / "metrics.csv", newline="") as fh:
        first = next(csv.DictReader(fh))
    assert (first["fd_ci_low"], first["fd_ci_high"], first["fd_inf"]) == ("17.5", "20.25", "12.0")
    # older metrics.json files (no intervals): the numbers alone, nothing breaks
    old = _seed_runs(tmp_path / "old", extras=False)
    rp.run_report(run_metrics=old, classifier_metrics=[], dataset_summaries=[], sample_grids=[], out=tmp_path / "o",
                  title="t", groups=_groups(old))  # fmt: skip
    old_runs = _section((tmp_path / "o" / "index.html").read_text(encoding="utf-8"), "Generative models")
    assert "19.00 <small>FID</small></td>\n<td>—</td>" in old_runs and "[95% interval]" not in old_runs
