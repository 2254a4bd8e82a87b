"""One source of truth for a scrape's settings: the schema's ``$defs.source`` defaults are ScrapeSettings' and the
CLI's; every key reaches the scrape stage (as a setting) or the workflow (listed with where it goes)."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO

from ganime_steps import scrape
from ganime_steps.common import GanimeError
from ganime_steps.config import SCHEMA, WORKFLOW_SOURCE_KEYS, all_sources, source_settings, validate_config
from ganime_steps.gan import available_families
from ganime_steps.scrape import ScrapeSettings

FIELDS = {f.name: f for f in dataclasses.fields(ScrapeSettings)}
# ScrapeSettings fields the schema does not offer: the retry policy's caps (a person's CLI only: every workflow scrape
# keeps their default), and the name, which the workflow sets from the source's name (scrape.source or its key)
CLI_ONLY = {"max_backoff", "max_retry_after"}
FROM_THE_NAME = {"name"}


def schema_source() -> dict:
    return yaml.safe_load(SCHEMA.read_text())["$defs"]["source"]


def schema_keys() -> dict[str, dict]:
    """Each $defs.source key (the synthetic booru's as synthetic.<key>) -> its schema."""
    props = dict(schema_source()["properties"])
    synthetic = props.pop("synthetic")
    return {**props, **{f"synthetic.{k}": v for k, v in synthetic["properties"].items()}}


def field_of(key: str) -> str:
    return key.removeprefix("synthetic.")


def test_every_source_key_is_a_setting_or_consumed_by_the_workflow():
    keys = schema_keys()
    assert set(WORKFLOW_SOURCE_KEYS) <= set(keys), "a workflow key the schema does not have"
    settings = {field_of(k) for k in set(keys) - set(WORKFLOW_SOURCE_KEYS)}
    assert settings == set(FIELDS) - CLI_ONLY - FROM_THE_NAME, "a source key neither a setting nor a workflow key"
    assert not (CLI_ONLY | FROM_THE_NAME) & {field_of(k) for k in keys}


def test_schema_defaults_are_the_settings_defaults():
    for key, prop in schema_keys().items():
        if key in WORKFLOW_SOURCE_KEYS:
            continue
        default = FIELDS[field_of(key)].default
        if key == "kind":  # the schema requires it; the CLI's default is the dataclass's
            assert "default" not in prop and default in prop["enum"]
            continue
        want = tuple(prop["default"]) if isinstance(prop["default"], list) else prop["default"]
        assert want == default and type(want) in (type(default), int), (key, prop, default)


def test_cli_defaults_are_the_settings_defaults():
    args = scrape.build_parser().parse_args(["--out", "o"])
    assert scrape.settings_from_args(args) == ScrapeSettings()
    assert not any(hasattr(args, name) for name in FIELDS)  # no flag writes a default of its own
    assert (args.fresh_listing, args.verify, args.time_scale) == (False, False, 1.0)  # runtime, not settings


# one non-default value per setting (each accepted by the schema and the stage)
OTHER = {
    "kind": "dapi",
    "name": "booru",
    "tags": "1girl solo",
    "limit": 7,
    "page_size": 3,
    "base_url": "https://booru.example",
    "path": "somewhere",
    "rate": 2.5,
    "burst": 2,
    "workers": 3,
    "retries": 1,
    "backoff": 0.5,
    "max_backoff": 4.0,
    "timeout": 9.0,
    "max_retry_after": 30.0,
    "blacklist": ("comic", "text"),
    "ratings": ("g", "s"),
    "image_hosts": ("img.booru.example",),
    "user_env": "BOORU_USER",
    "api_key_env": "BOORU_KEY",
    "max_pixels": 1000,
    "max_bytes": 2000,
    "n_posts": 12,
    "seed": 3,
    "style": "tachie",
}


def _flags(settings: dict) -> list[str]:
    argv = []
    for name, value in settings.items():
        argv += [f"--{name.replace('_', '-')}", " ".join(value) if isinstance(value, tuple) else str(value)]
    return argv


def test_every_setting_has_a_flag():
    assert set(OTHER) == set(FIELDS)
    args = scrape.build_parser().parse_args(["--out", "o", *_flags(OTHER)])
    assert scrape.settings_from_args(args) == ScrapeSettings(**OTHER)


def test_flags_override_a_config_file(tmp_path: Path):
    path = tmp_path / "scrape_config.json"
    path.write_text(json.dumps(ScrapeSettings(**OTHER).to_json()))
    argv = ["--out", "o", "--config", str(path), "--limit", "9", "--ratings", "e", "--base-url", "https://b.example"]
    settings = scrape.settings_from_args(scrape.build_parser().parse_args(argv))
    assert settings == ScrapeSettings(**{**OTHER, "limit": 9, "ratings": ("e",), "base_url": "https://b.example"})


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"limitt": 1}', "--settings: unknown setting 'limitt'"),
        ('{"limit": "many"}', "--settings: setting limit: 'many' is not int"),
        ('{"rate": true}', "--settings: setting rate: True is not float"),
        ('{"blacklist": "comic"}', r"--settings: setting blacklist: 'comic' is not tuple\[str, ...\]"),
        ("[1]", "--settings: expected a JSON object"),
        ("{", "--settings: not a JSON object"),
    ],
)
def test_bad_settings_are_one_line(text: str, message: str):
    args = scrape.build_parser().parse_args(["--out", "o", "--settings", text])
    with pytest.raises(GanimeError, match=message) as info:
        scrape.settings_from_args(args)
    assert "\n" not in str(info.value)


def test_an_unknown_setting_name_is_one_line(tmp_path: Path):
    with pytest.raises(GanimeError, match="where: unknown setting 'limt'; the settings are kind, name,"):
        ScrapeSettings.from_json({"limt": 5}, "where")
    with pytest.raises(TypeError):  # the stage takes its settings as a ScrapeSettings only
        scrape.run_scrape(out=tmp_path, limit=5)  # type: ignore[call-arg]
    assert not tmp_path.joinpath(scrape.SETTINGS_FILE).exists()


def test_the_stage_saves_its_settings_and_config_repeats_them(tmp_path: Path):
    given = ScrapeSettings(kind="synthetic", tags="1girl", limit=3, page_size=2, n_posts=8, seed=1)
    scrape.run_scrape(given, out=tmp_path / "a")
    saved = json.loads((tmp_path / "a" / scrape.SETTINGS_FILE).read_text())
    assert ScrapeSettings.from_json(saved, "saved") == dataclasses.replace(given, name="synthetic")  # name resolved
    assert scrape.main(["--config", str(tmp_path / "a" / scrape.SETTINGS_FILE), "--out", str(tmp_path / "b")]) == 0
    assert json.loads((tmp_path / "b" / scrape.SETTINGS_FILE).read_text()) == saved
    a, b = (pd.read_parquet(tmp_path / run / "posts.parquet").drop(columns="fetched_at") for run in "ab")
    pd.testing.assert_frame_equal(a, b)  # the same scrape again


def _validated(path: Path) -> dict:
    return _validated_dict(yaml.safe_load(path.read_text()))


def _stage_settings(name: str, spec: dict) -> ScrapeSettings:
    """What the scrape job reads: the rule's --settings JSON (common.smk's scrape_settings_json)."""
    text = json.dumps(source_settings(name, spec), sort_keys=True, separators=(",", ":"))
    return scrape.settings_from_args(scrape.build_parser().parse_args(["--out", "o", "--settings", text]))


def _expected(name: str, spec: dict) -> dict:
    """Every setting of a validated source, as the config gives it (schema defaults filled in)."""
    flat = {**{k: v for k, v in spec.items() if k != "synthetic"}, **spec["synthetic"]}
    flat = {k: tuple(v) if isinstance(v, list) else v for k, v in flat.items() if k not in WORKFLOW_SOURCE_KEYS}
    flat = {k: v for k, v in flat.items() if f"synthetic.{k}" not in WORKFLOW_SOURCE_KEYS}
    return {**flat, "name": name}


@pytest.mark.parametrize("configfile", ["config.yaml", "configs/demo.yaml"])
def test_every_setting_of_a_config_reaches_the_stage(configfile: str):
    sources = all_sources(_validated(REPO / configfile))
    assert sources
    for name, spec in sources.items():
        settings = _stage_settings(name, spec)
        expected = _expected(name, spec)
        assert set(expected) == set(FIELDS) - CLI_ONLY, name
        assert {k: getattr(settings, k) for k in expected} == expected, name
        assert {k: getattr(settings, k) for k in CLI_ONLY} == {k: FIELDS[k].default for k in CLI_ONLY}


def test_every_setting_set_in_a_config_reaches_the_stage():
    """Each $defs.source setting given a non-default value in the config arrives at the stage with it."""
    config = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    spec = {k: list(v) if isinstance(v, tuple) else v for k, v in OTHER.items() if k not in CLI_ONLY | {"name"}}
    synthetic = {k: spec.pop(k) for k in ("n_posts", "seed", "style")}
    config["sources"] = {"booru": {**copy.deepcopy(spec), "synthetic": synthetic}}
    sources = all_sources(_validated_dict(config))
    settings = _stage_settings("booru", sources["booru"])
    assert settings == ScrapeSettings(**{**OTHER, **{k: FIELDS[k].default for k in CLI_ONLY}})


def _validated_dict(config: dict) -> dict:
    validate_config(config, families=tuple(available_families()))
    return config
