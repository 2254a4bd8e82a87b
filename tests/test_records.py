"""The records stages write for one another (issue #22 item 4): each JSON a stage writes for another is a dataclass in
the writing module with ``to_json``/``from_json``, and the report reads those. Per record: ``from_json(to_json(x))``
is ``x`` again and gives the same JSON, and the file the writer really writes parses into it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ganime_steps import clean, labels, report
from ganime_steps.classifier.train import ClassifierMetrics, SplitMetrics
from ganime_steps.clean import CleanSummary
from ganime_steps.common import write_json
from ganime_steps.labels import LabelsSummary
from ganime_steps.metrics.result import MetricResult, Scores, Side, Weights
from ganime_steps.train_record import TrainSummary


def _written(tmp_path, obj: dict) -> dict:
    """``obj`` as a stage writes it (write_json: sorted keys, indented) and read back."""
    write_json(tmp_path / "record.json", obj)
    return json.loads((tmp_path / "record.json").read_text(encoding="utf-8"))


def _round_trip(tmp_path, record, from_json) -> None:
    obj = record.to_json()
    back = from_json(_written(tmp_path, obj))
    assert back == record
    assert back.to_json() == obj


def _scores(fd: float, **more) -> Scores:
    return Scores(fd=fd, kid_mean=0.01, kid_std=0.001, kid_subsets=100, kid_subset_size=50, n_fake=100, n_real=90,
                  **more)  # fmt: skip


def _side(name: str) -> Side:
    return Side(f"results/evaluation/reference_{name}_32.npz", f"results/datasets/{name}/pack_32.npy", [32, 32], "ab")


FULL = {"precision": 0.5, "recall": 0.25, "pr_k": 3, "fd_ci": [9.0, 11.0], "kid_ci": [0.005, 0.015],
        "bootstrap_resamples": 200, "fd_inf": 8.5, "fd_inf_sizes": [[50, 45], [100, 90]]}  # fmt: skip


@pytest.mark.parametrize("space", ["inception", "classifier:chibi:resnet18"])
def test_metric_result_run_round_trip(tmp_path, space):
    """metrics.json (``evaluate run``): the primary reference first, each reference's scores and side, the weights."""
    refs = {
        name: MetricResult(
            kind="run",
            feature_space=space,
            is_fid=space == "inception",
            scores=_scores(fd, **more),
            real=_side(data),
            seed=3,
        )  # fmt: skip
        for name, data, fd, more in (("shared", "A", 10.0, FULL), ("train", "B", 12.0, {}), ("gold", "gold", 14.0, {}))
    }
    result = MetricResult(
        kind="run",
        feature_space=space,
        is_fid=space == "inception",
        scores=refs["shared"].scores,
        real=refs["shared"].real,
        fake=Side("results/runs/r/generator.pt"),
        seed=3,
        weights=Weights("w.pth", "cd", "id", "offline"),
        truncation=1.0,
        references=refs,
    )
    _round_trip(tmp_path, result, lambda obj: MetricResult.from_json(obj, "run"))
    assert list(MetricResult.from_json(result.to_json(), "run").references) == ["shared", "train", "gold"]


def test_metric_result_distance_and_snapshot_round_trip(tmp_path):
    """The data-FID file (``evaluate distance``: a against b) and a metrics.jsonl row's metric columns."""
    distance = MetricResult(kind="distance", feature_space="inception", is_fid=True, scores=_scores(7.0, **FULL),
                            real=Side(_side("gold").path, _side("gold").data, [32, 32]),
                            fake=Side(_side("A").path, _side("A").data, [32, 32]), seed=0)  # fmt: skip
    _round_trip(tmp_path, distance, lambda obj: MetricResult.from_json(obj, "distance"))
    snapshot = MetricResult(kind="snapshot", feature_space="inception", is_fid=True, scores=_scores(30.0),
                            real=Side(sha256="ab"))  # fmt: skip
    row = {"kimg": 4.0, "step": 10, **snapshot.to_json()}  # the row's other columns are the trainer's
    assert MetricResult.from_json(row, "snapshot") == snapshot
    with pytest.raises(ValueError, match="compare"):
        MetricResult.from_json(distance.to_json(), "compare")
    with pytest.raises(KeyError, match="kid_mean"):
        MetricResult.from_json({k: v for k, v in distance.to_json().items() if k != "kid_mean"}, "distance")


def test_train_summary_round_trip(tmp_path):
    summary = TrainSummary(
        family="dcgan", resolution=32, data="results/datasets/A/pack_32.npy", out="results/runs/r", kimg_target=80.0,
        images_seen=80000, images_this_run=40000, step=2500, resumed=True, lr=0.0005, betas=(0.5, 0.999), n_critic=1,
        device="cpu", amp="off", diffaug=False, seconds_total=147.4, seconds_this_run=70.0, img_per_s=542.8,
        n_params_g=427971, n_params_d=167841, loss_g=3.78, loss_d=0.52, penalty=None, best_kimg=80.0,
        best_metric=175.8, metric_key="fid", epochs=None, images_per_epoch=333,
    )  # fmt: skip
    _round_trip(tmp_path, summary, TrainSummary.from_json)
    assert summary.to_json()["betas"] == [0.5, 0.999]
    with pytest.raises(KeyError, match="images_per_epoch"):
        TrainSummary.from_json({k: v for k, v in summary.to_json().items() if k != "images_per_epoch"})


def _split(split: str, auc: float | None) -> SplitMetrics:
    return SplitMetrics(split=split, n=10, counts={"0": 6, "1": 4}, precision=0.75, recall=0.75, f1=0.75, roc_auc=auc,
                        confusion=[[5, 1], [1, 3]], average_precision=0.8,
                        pr_curve={"thresholds": [0.2, 0.6], "precision": [0.5, 1.0], "recall": [1.0, 0.5]})  # fmt: skip


@pytest.mark.parametrize("with_test", [True, False])
def test_classifier_metrics_round_trip(tmp_path, with_test):
    metrics = ClassifierMetrics(
        task="chibi", arch="resnet18", pretrained="none", image_size=32, seed=0, val_fraction=0.25, test_fraction=0.2,
        lr=1e-3, backbone_lr_scale=0.1, pretrained_origin="none: random initialisation of resnet18", n_train=18,
        n_val=8, n_test=6 if with_test else 0, counts={"all": {"0": 16, "1": 16}}, class_balance="pos_weight",
        pos_weight=1.0, epochs_run=3, best_epoch=2, threshold=0.49, threshold_rule="best_f1", threshold_rule_met=True,
        test=_split("test (held out)", 1.0) if with_test else None,
        test_note=None if with_test else "too few labels for a test split", val=_split("validation", None),
        history=[{"epoch": 1, "seconds": 0.5, "train_loss": 0.7, "val_f1": 1.0, "val_loss": 0.6}],
        seconds_per_epoch=0.5, device="cpu",
    )  # fmt: skip
    _round_trip(tmp_path, metrics, ClassifierMetrics.from_json)
    assert metrics.classes == ["not_chibi", "chibi"]


def test_clean_summary_the_filter_writes_parses(posts, tmp_path):
    scores = pd.read_parquet(posts)[["source", "post_id", "md5"]].assign(score=np.linspace(0, 1, 12))
    scores["predicted"] = scores["score"] >= 0.5
    scores.to_parquet(tmp_path / "chibi.parquet")
    chibi = {"chibi": tmp_path / "chibi.parquet"}
    summary = clean.run_filter(dataset="B", out=tmp_path / "B", posts=posts, scores=chibi, drop={"chibi": None},
                               exclude_tags=["chibi"])  # fmt: skip
    written = json.loads((tmp_path / "B" / "summary.json").read_text(encoding="utf-8"))
    assert CleanSummary.from_json(written) == summary and summary.to_json() == written
    _round_trip(tmp_path, summary, CleanSummary.from_json)
    assert report.read_dataset(tmp_path / "B" / "summary.json")["n_kept"] == summary.n_kept


def test_labels_summary_the_stage_writes_parses(posts, tmp_path):
    (tmp_path / "a.csv").write_text("post_id,label\n1,1\n2,0\n3,chibi\n", encoding="utf-8")
    summary = labels.run_labels(
        posts=posts, csvs=[tmp_path / "a.csv"], task="chibi", out=tmp_path / "out" / "chibi.parquet"
    )
    counts = tmp_path / "out" / "chibi_counts.json"
    written = json.loads(counts.read_text(encoding="utf-8"))
    assert LabelsSummary.from_json(written) == summary and summary.to_json() == written
    _round_trip(tmp_path, summary, LabelsSummary.from_json)
    assert report.read_label_counts(counts) == {"task": "chibi", "positive": 2, "negative": 1, "label_files": 1}


def test_the_data_fid_file_evaluate_distance_writes_parses(tmp_path):
    """``evaluate distance`` (the data_fid rule) on two tiny references in a classifier space: its file is the
    distance record, and the report's data-FID row reads the datasets (as ``evaluate reference --dataset`` named them,
    not from where the packs lie) and resolution off the record's sides."""
    from test_evaluate import _classifier_ckpt, _packed

    from ganime_steps import evaluate

    clf = _classifier_ckpt(tmp_path / "model.pt")
    refs = {}
    for name, n, seed in (("A", 16, 0), ("gold", 14, 1)):
        (tmp_path / "packs").mkdir(exist_ok=True)  # not results/datasets/<name>/: the name is the record's
        pack = _packed(tmp_path / "packs" / f"{name}_32.npy", n=n, seed=seed)
        refs[name] = tmp_path / f"reference_{name}_32.npz"
        evaluate.run_reference(data=pack, out=refs[name], n=16, classifier_model=clf, device="cpu", dataset=name)
    out = tmp_path / "data_A_32.json"
    assert evaluate.main(["distance", "--a", str(refs["A"]), "--b", str(refs["gold"]), "--out", str(out)]) == 0
    written = json.loads(out.read_text(encoding="utf-8"))
    record = MetricResult.from_json(written, "distance")
    assert record.to_json() == written and (record.scores.n_fake, record.scores.n_real) == (16, 14)
    row = report.read_data_fid(out)
    assert (row["dataset"], row["gold"], row["resolution"], row["n_a"], row["n_b"]) == ("A", "gold", "32", 16, 14)
