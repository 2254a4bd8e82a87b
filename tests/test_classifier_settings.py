"""One source of truth for a classifier's settings: the schema's ``classifiers.*`` defaults are ClassifierSettings' and
the CLI's; every key reaches the classifier stage (as a setting) or the workflow (the label queue's)."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO
from PIL import Image

from ganime_steps import classifier
from ganime_steps.classifier import SETTINGS_FILE, ClassifierSettings
from ganime_steps.classifier.cli import build_parser, settings_from_args
from ganime_steps.common import GanimeError
from ganime_steps.config import SCHEMA, WORKFLOW_CLASSIFIER_KEYS, classifier_settings, validate_config
from ganime_steps.gan import available_families

FIELDS = {f.name: f for f in dataclasses.fields(ClassifierSettings)}
RUNTIME_ARGS = ["train", "--posts", "p.parquet", "--labels", "l.parquet", "--task", "chibi", "--out", "o"]


def schema_classifier() -> dict:
    return yaml.safe_load(SCHEMA.read_text())["properties"]["classifiers"]["additionalProperties"]


def test_every_classifiers_key_is_a_setting_or_consumed_by_the_workflow():
    props = schema_classifier()["properties"]
    assert set(WORKFLOW_CLASSIFIER_KEYS) <= set(props), "a workflow key the schema does not have"
    assert set(props) - set(WORKFLOW_CLASSIFIER_KEYS) == set(FIELDS), "a classifiers.* key neither setting nor queue"


def test_schema_defaults_are_the_settings_defaults():
    for name, prop in schema_classifier()["properties"].items():
        if name in WORKFLOW_CLASSIFIER_KEYS:
            continue
        default = FIELDS[name].default
        assert prop["default"] == default and type(prop["default"]) in (type(default), int), (name, prop, default)


def test_cli_defaults_are_the_settings_defaults():
    args = build_parser().parse_args(RUNTIME_ARGS)
    assert settings_from_args(args) == ClassifierSettings()
    assert not any(hasattr(args, name) for name in FIELDS)  # no flag writes a default of its own
    assert (args.device, args.workers, args.backbone_weights) == ("auto", 0, None)  # runtime, not settings


# one non-default value per setting (each accepted by the schema and the stage)
OTHER = {
    "arch": "tf_efficientnet_lite0",
    "image_size": 96,
    "epochs": 7,
    "batch_size": 16,
    "lr": 0.002,
    "pretrained": "offline",
    "backbone_lr_scale": 0.5,
    "seed": 3,
    "val_fraction": 0.25,
    "test_fraction": 0.1,
    "patience": 2,
    "threshold_rule": "precision:0.9",
}


def _flags(settings: dict) -> list[str]:
    return [word for name, value in settings.items() for word in (f"--{name.replace('_', '-')}", str(value))]


def test_every_setting_has_a_flag():
    assert set(OTHER) == set(FIELDS)
    assert settings_from_args(build_parser().parse_args([*RUNTIME_ARGS, *_flags(OTHER)])) == ClassifierSettings(**OTHER)


def test_flags_override_a_config_file(tmp_path: Path):
    path = tmp_path / SETTINGS_FILE
    path.write_text(json.dumps(ClassifierSettings(**OTHER).to_json()))
    argv = [*RUNTIME_ARGS, "--config", str(path), "--epochs", "9", "--pretrained", "none"]
    settings = settings_from_args(build_parser().parse_args(argv))
    assert settings == ClassifierSettings(**{**OTHER, "epochs": 9, "pretrained": "none"})


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"epoch": 1}', "--settings: unknown setting 'epoch'"),
        ('{"queue": {"size": 5}}', "--settings: unknown setting 'queue'"),  # the label queue's, not a setting
        ('{"epochs": 2.5}', "--settings: setting epochs: 2.5 is not int"),
        ('{"lr": "fast"}', "--settings: setting lr: 'fast' is not float"),
        ('{"pretrained": 1}', "--settings: setting pretrained: 1 is not str or bool"),
        ("[1]", "--settings: expected a JSON object"),
        ("{", "--settings: not a JSON object"),
    ],
)
def test_bad_settings_are_one_line(text: str, message: str):
    args = build_parser().parse_args([*RUNTIME_ARGS, "--settings", text])
    with pytest.raises(GanimeError, match=message) as info:
        settings_from_args(args)
    assert "\n" not in str(info.value)


def test_a_bad_config_file_is_one_line_of_the_cli(tmp_path: Path, capsys):
    path = tmp_path / SETTINGS_FILE
    path.write_text('{"arch": "resnet18", "batch_size": "many"}')
    assert classifier.main([*RUNTIME_ARGS, "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"ganime error: --config {path}: setting batch_size: 'many' is not int"]


def test_run_train_takes_its_settings_as_one_object(tmp_path: Path):
    with pytest.raises(TypeError):  # the stage takes its settings as a ClassifierSettings only
        classifier.run_train(posts=tmp_path / "p", labels=tmp_path / "l", out=tmp_path, task="t", epochs=2)  # type: ignore[call-arg]
    assert ClassifierSettings(lr=1, backbone_lr_scale=1).lr == 1.0  # a JSON integer where a float is meant


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """24 labelled posts: a big red disk (1) or a small blue one (0) on white."""
    root = tmp_path_factory.mktemp("posts")
    rng = np.random.default_rng(0)
    rows, labels = [], []
    for i in range(24):
        md5, positive = f"{i:032x}", i % 2 == 0
        img = np.full((32, 32, 3), 255, np.uint8)
        cy, cx, r = 16 + int(rng.integers(-2, 3)), 16 + int(rng.integers(-2, 3)), 11 if positive else 4
        yy, xx = np.ogrid[:32, :32]
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = (220, 30, 30) if positive else (30, 30, 220)
        (root / "images").mkdir(exist_ok=True)
        Image.fromarray(img).save(root / "images" / f"{md5}.png")
        rows.append({"source": "s", "post_id": i, "md5": md5, "file": f"images/{md5}.png", "width": 32, "height": 32})
        labels.append({"source": "s", "post_id": i, "md5": md5, "label": int(positive)})
    pd.DataFrame(rows).to_parquet(root / "posts.parquet", index=False)
    pd.DataFrame(labels).to_parquet(root / "labels.parquet", index=False)
    return {"posts": root / "posts.parquet", "labels": root / "labels.parquet"}


def test_the_stage_saves_its_settings_and_config_repeats_them(data, tmp_path: Path):
    torch.set_num_threads(1)
    given = ClassifierSettings(arch="resnet18", image_size=32, epochs=2, batch_size=8, seed=1, val_fraction=0.25)
    runtime = ["--posts", str(data["posts"]), "--labels", str(data["labels"]), "--task", "chibi", "--device", "cpu"]
    settings = json.dumps(given.to_json())
    assert classifier.main(["train", *runtime, "--settings", settings, "--out", str(tmp_path / "a")]) == 0
    saved = json.loads((tmp_path / "a" / SETTINGS_FILE).read_text())
    assert ClassifierSettings.from_json(saved, "saved") == given
    assert (
        classifier.main(
            ["train", *runtime, "--config", str(tmp_path / "a" / SETTINGS_FILE), "--out", str(tmp_path / "b")]
        )
        == 0
    )
    assert json.loads((tmp_path / "b" / SETTINGS_FILE).read_text()) == saved
    a, b = (torch.load(tmp_path / run / "model.pt", map_location="cpu", weights_only=True) for run in "ab")
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])  # the same classifier
    assert a["threshold"] == b["threshold"]


def _validated(config: dict) -> dict:
    validate_config(config, families=tuple(available_families()))
    return config


def _stage_settings(spec: dict) -> ClassifierSettings:
    """What the classifier_train job reads: the rule's --settings JSON (common.smk's classifier_settings_json)."""
    text = json.dumps(classifier_settings(spec), sort_keys=True, separators=(",", ":"))
    return settings_from_args(build_parser().parse_args([*RUNTIME_ARGS, "--settings", text]))


@pytest.mark.parametrize("configfile", ["config.yaml", "configs/demo.yaml"])
def test_every_setting_of_a_config_reaches_the_stage(configfile: str):
    classifiers = _validated(yaml.safe_load((REPO / configfile).read_text()))["classifiers"]
    assert classifiers
    for task, spec in classifiers.items():
        expected = {k: v for k, v in spec.items() if k not in WORKFLOW_CLASSIFIER_KEYS}
        assert set(expected) == set(FIELDS), task
        assert _stage_settings(spec).to_json() == expected, task


def test_every_setting_set_in_a_config_reaches_the_stage():
    """Each classifiers.* setting given a non-default value in the config arrives at the stage with it; the label
    queue's keys do not."""
    config = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    config["classifiers"]["chibi"] = {**copy.deepcopy(OTHER), "queue": {"size": 7}}
    spec = _validated(config)["classifiers"]["chibi"]
    assert _stage_settings(spec) == ClassifierSettings(**OTHER)


def test_the_rule_passes_the_settings_as_one_json_object():
    rules = (REPO / "workflow" / "rules" / "classifiers.smk").read_text()
    train = rules[rules.index("rule classifier_train:") : rules.index("rule classifier_score:")]
    assert '" --settings {params.settings:q}"' in train and "classifier_settings_json(wildcards.task)" in train
    assert not any(f"--{name.replace('_', '-')} " in train for name in FIELDS)  # no setting of its own
    assert '"results/classifiers/{task}/classifier_config.json"' in train
