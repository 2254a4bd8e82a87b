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


# Datasets the workflow makes itself: the gold reference sets (posts known clean on every task, and their faces).
GOLD_DATASETS = {"posts": "gold", "faces": "gold_faces"}


def expand_seeds(runs: dict[str, dict]) -> dict[str, dict]:
    """A run listing ``seeds`` becomes one run per seed, ``<run>_s<seed>``; every run gets ``group`` (its config
    name, shared by its seeds) so the report can show mean ± std over the seeds of one group."""
    expanded: dict[str, dict] = {}
    for name, run in runs.items():
        seeds = run.get("seeds")
        # expanded runs have seeds None: validating an already validated config changes nothing
        members = {f"{name}_s{seed}": {**run, "seed": seed, "seeds": None} for seed in seeds} if seeds else {name: run}
        for member, spec in members.items():
            if member in expanded or (member != name and member in runs):
                raise GanimeError(f"config key runs.{name}.seeds: run name {member!r} is taken by another run")
            expanded[member] = {"group": name, **spec}  # a run expanded before keeps its group
    return expanded


def _cross_check(config: dict, families: tuple[str, ...] | None) -> list[str]:
    warnings = []
    datasets, classifiers, labels = config["datasets"], config["classifiers"], config["labels"]
    for name in GOLD_DATASETS.values():
        if name in datasets:
            raise GanimeError(
                f"config key datasets.{name}: the name is reserved for the gold reference set; rename the dataset"
            )
    for name, run in config["runs"].items():
        every = run.get("metrics_every")
        if every is not None and abs(every / run["checkpoint_every"] - round(every / run["checkpoint_every"])) > 1e-9:
            raise GanimeError(
                f"config key runs.{name}.metrics_every: {every} is not a multiple of checkpoint_every "
                f"({run['checkpoint_every']}); metrics are taken at checkpoints"
            )
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
    config["runs"] = expand_seeds(config["runs"])  # after the checks, so that errors name the config's own keys
    return warnings
