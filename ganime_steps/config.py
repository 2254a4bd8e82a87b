"""Config validation for the workflow: JSON schema with defaults, then cross-references between sections.

Every error is one line naming the offending key, e.g. ``config key runs.dcgan_A.kimg: -1 is less than 0``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, validators

from ganime_steps.common import GanimeError

SCHEMA = Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml"


def _with_defaults(cls):
    """A validator that fills in ``default`` values while it validates (the jsonschema FAQ recipe)."""
    validate_properties = cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            _fill(instance, properties)
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(cls, {"properties": set_defaults})


def _fill(instance: dict, properties: dict) -> None:
    for name, sub in properties.items():
        if "default" in sub and name not in instance:
            instance[name] = copy.deepcopy(sub["default"])


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def validate_config(
    config: dict[str, Any], *, schema_path: Path = SCHEMA, families: tuple[str, ...] | None = None
) -> list[str]:
    """Validate ``config`` in place (filling defaults). Returns warnings; raises GanimeError on the first error.

    ``families``: the GAN families this version implements; runs of other families are dropped with a warning.
    """
    schema = yaml.safe_load(schema_path.read_text())
    validator = _with_defaults(Draft202012Validator)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        raise GanimeError(f"config key {_key(err.absolute_path)}: {err.message}")
    return _cross_check(config, families)


def _cross_check(config: dict, families: tuple[str, ...] | None) -> list[str]:
    warnings = []
    datasets, classifiers, labels = config["datasets"], config["classifiers"], config["labels"]
    for task in classifiers:
        if task not in labels:
            raise GanimeError(f"config key classifiers.{task}: no labels.{task} entry lists its hand-label CSVs")
    for name, ds in datasets.items():
        for task in ds["drop"]:
            if task not in classifiers:
                raise GanimeError(
                    f"config key datasets.{name}.drop.{task}: no classifier named {task!r} in classifiers"
                )
    evaluation = config["evaluation"]
    for name, run in list(config["runs"].items()):
        if run["dataset"] not in datasets:
            raise GanimeError(f"config key runs.{name}.dataset: {run['dataset']!r} is not a dataset in datasets")
        ref = run["reference"] or evaluation["reference"] or run["dataset"]
        if ref not in datasets:
            raise GanimeError(f"config key runs.{name}.reference: {ref!r} is not a dataset in datasets")
        if families is not None and run["family"] not in families:
            warnings.append(
                f"run {name!r}: family {run['family']!r} is not available in this version "
                f"(available: {', '.join(families)}); it is skipped"
            )
            del config["runs"][name]
    if evaluation["reference"] is not None and evaluation["reference"] not in datasets:
        raise GanimeError(f"config key evaluation.reference: {evaluation['reference']!r} is not a dataset")
    fallback = evaluation["fallback_classifier"]
    if fallback is not None and fallback not in classifiers:
        raise GanimeError(f"config key evaluation.fallback_classifier: {fallback!r} is not a classifier")
    if config["runs"] and not evaluation["inception_weights"] and fallback is None:
        raise GanimeError(
            "config key evaluation: set inception_weights (a local Inception-v3 weights file for FID) or "
            "fallback_classifier (a classifier whose features give a labelled non-FID Fréchet distance)"
        )
    return warnings
