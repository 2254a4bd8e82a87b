"""One source of truth for a run's settings: the schema's ``runs.*`` defaults are RunSettings', the CLI's and
TrainConfig's; every key reaches the train stage (as a setting) or the workflow (listed with where it goes)."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from ganime_steps import train
from ganime_steps.common import GanimeError
from ganime_steps.config import SCHEMA, WORKFLOW_RUN_KEYS, run_settings, validate_config
from ganime_steps.gan import available_families
from ganime_steps.gan.loop import RunSettings, TrainConfig

FIELDS = {f.name: f for f in dataclasses.fields(RunSettings)}
# RunSettings fields the schema does not offer (a person's CLI only): they keep their default in every workflow run
CLI_ONLY = {"ema_rampup", "log_every"}
# TrainConfig fields that hold a resolved value, whose None or "" means something else than the setting's
RESOLVED = {"lr_schedule", "lr_decay_kimg", "batch_schedule"}


def schema_runs() -> dict:
    schema = yaml.safe_load(SCHEMA.read_text())
    return schema["properties"]["runs"]["additionalProperties"]


def test_every_runs_key_is_a_setting_or_consumed_by_the_workflow():
    props = schema_runs()["properties"]
    settings = set(props) - set(WORKFLOW_RUN_KEYS)
    assert set(WORKFLOW_RUN_KEYS) <= set(props), "a workflow key the schema does not have"
    assert settings == set(FIELDS) - CLI_ONLY, "a runs.* key neither a RunSettings field nor in WORKFLOW_RUN_KEYS"
    assert not CLI_ONLY & set(props)


def test_schema_defaults_are_the_settings_defaults():
    runs = schema_runs()
    for name, prop in runs["properties"].items():
        if name in WORKFLOW_RUN_KEYS:
            continue
        if name in runs["required"]:  # family: the schema requires it; the CLI's default is the dataclass's
            assert "default" not in prop, name
            continue
        default = FIELDS[name].default
        assert prop["default"] == default and type(prop["default"]) in (type(default), int), (name, prop, default)


def test_trainconfig_defaults_are_the_settings_defaults():
    """TrainConfig's defaults for what is a setting too are RunSettings' (resolved schedules and decay aside)."""
    for f in dataclasses.fields(TrainConfig):
        if f.name in FIELDS and f.name not in RESOLVED and f.default is not dataclasses.MISSING:
            assert f.default == FIELDS[f.name].default, f.name


def test_cli_defaults_are_the_settings_defaults():
    args = train.build_parser().parse_args(["--data", "x.npy", "--out", "o"])
    assert train.settings_from_args(args) == RunSettings()
    assert not any(hasattr(args, name) for name in FIELDS)  # no flag writes a default of its own


# the runtime keys of a run (how it runs, not what it trains): the train job's flag of each, with the schema's default
RUNTIME_FLAGS = {"device": ("device", "auto"), "tf32": ("tf32", "off"), "compile": ("compile", False)}


def test_runtime_keys_are_flags_with_the_schema_defaults():
    props = schema_runs()["properties"]
    args = train.build_parser().parse_args(["--data", "x.npy", "--out", "o"])
    for key, (dest, cli_default) in RUNTIME_FLAGS.items():
        assert key in WORKFLOW_RUN_KEYS and key not in FIELDS, key
        assert getattr(args, dest) == cli_default, key
        schema_default = props[key]["default"]
        assert schema_default == cli_default or {False: "off", True: "on"}.get(schema_default) == cli_default, key
        assert getattr(TrainConfig, key, schema_default) in (schema_default, False), key


def _flag_value(name: str, value):
    if isinstance(value, bool):
        return [f"--{name.replace('_', '-')}" if value else f"--no-{name.replace('_', '-')}"]
    return [f"--{name.replace('_', '-')}", str(value)]


# one non-default value per setting (each accepted by the schema and the stage)
OTHER = {
    "family": "sngan",
    "resolution": 32,
    "kimg": 12.5,
    "epochs": None,
    "batch_size": 16,
    "lr": 0.001,
    "channels": 16,
    "z_dim": 64,
    "seed": 7,
    "ema_kimg": 2.0,
    "ema_rampup": 0.1,
    "checkpoint_every": 2.5,
    "log_every": 0.5,
    "metrics_every": 5.0,
    "diffaug": True,
    "feature_resolution": 96,
    "start_resolution": 8,
    "stable_kimg": 1.0,
    "fade_kimg": 2.0,
    "batch_schedule": "8:32",
    "lr_schedule": "16:0.002",
    "lr_decay_kimg": 3.0,
    "resume_other_code": True,
}


def test_every_setting_has_a_flag():
    assert set(OTHER) == set(FIELDS)
    argv = ["--data", "x.npy", "--out", "o"]
    for name, value in OTHER.items():
        argv += _flag_value(name, value) if value is not None else []
    args = train.build_parser().parse_args(argv)
    assert train.settings_from_args(args) == RunSettings(**OTHER)


def test_flags_override_a_config_file(tmp_path: Path):
    path = tmp_path / "run_config.json"
    path.write_text(json.dumps(RunSettings(**OTHER).to_json()))
    argv = ["--data", "x.npy", "--out", "o", "--config", str(path), "--seed", "9", "--no-diffaug", "--epochs", "2"]
    settings = train.settings_from_args(train.build_parser().parse_args(argv))
    # --epochs over a kimg run: the length is the flag's (no kimg left)
    assert settings == RunSettings(**{**OTHER, "seed": 9, "diffaug": False, "epochs": 2.0, "kimg": None})


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"kimgg": 1}', "--settings: unknown setting 'kimgg'"),
        ('{"kimg": "long"}', "--settings: setting kimg: 'long' is not float or None"),
        ('{"diffaug": 1}', "--settings: setting diffaug: 1 is not bool"),
        ("[1]", "--settings: expected a JSON object"),
        ("{", "--settings: not a JSON object"),
    ],
)
def test_bad_settings_are_one_line(text: str, message: str):
    args = train.build_parser().parse_args(["--data", "x.npy", "--out", "o", "--settings", text])
    with pytest.raises(GanimeError, match=message.replace("(", r"\(").replace("[", r"\[")):
        train.settings_from_args(args)


def _validated(run: dict) -> dict:
    config = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    config["runs"] = {"r": {"dataset": "A", **run}}
    config["matrix"] = {}
    validate_config(config, families=tuple(available_families()))
    return config["runs"]["r"]


def _stage_settings(run: dict) -> RunSettings:
    """What the train job reads: the rule's --settings JSON (common.smk's run_settings_json)."""
    return RunSettings.from_json(json.loads(json.dumps(run_settings(run), sort_keys=True)), "--settings")


def test_a_run_left_to_the_schema_reaches_the_stage_with_the_defaults():
    assert _stage_settings(_validated({"family": "dcgan"})) == RunSettings(family="dcgan")


def test_every_setting_of_a_run_reaches_the_stage():
    """Each runs.* setting set in the config arrives at the stage with its value (and into its TrainConfig)."""
    schema_keys = set(schema_runs()["properties"]) - set(WORKFLOW_RUN_KEYS)
    run = {k: v for k, v in OTHER.items() if k in schema_keys}
    run.update(family="progan", resolution=32, kimg=12.5, start_resolution=8, batch_schedule="8:32,16:16,32:16")
    run.update(metrics_every=5.0, checkpoint_every=2.5, lr_schedule="16:0.002")
    settings = _stage_settings(_validated(copy.deepcopy(run)))
    assert {k: getattr(settings, k) for k in run} == run
    cfg = train.train_config(settings, data=Path("unused.npy"))  # a kimg run reads no data here
    for name in set(run) & {f.name for f in dataclasses.fields(TrainConfig)}:
        assert getattr(cfg, name) == run[name], name


def test_a_length_given_replaces_the_other_one():
    assert train.override(RunSettings(), {"epochs": 2}) == RunSettings(kimg=None, epochs=2.0)
    assert train.override(RunSettings(kimg=None, epochs=2), {"kimg": 5}) == RunSettings(kimg=5.0)
    both = train.override(RunSettings(), {"kimg": 5, "epochs": 2})  # given twice: train.resolve_kimg refuses it
    assert (both.kimg, both.epochs) == (5.0, 2.0)
    with pytest.raises(GanimeError, match="give the run length once"):
        train.train_config(both, data=Path("unused.npy"))
