# Config validation, path helpers and wildcard constraints: the only Python of the workflow.
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

from ganime_steps.common import GanimeError
from ganime_steps.config import validate_config
from ganime_steps.gan import available_families

REPO = Path(workflow.basedir).parent
# Every stage runs as `python -m ganime_steps.<stage>`; PYTHONPATH makes this checkout's code the one used,
# also inside the per-rule conda environments.
shell.prefix(f"set -euo pipefail; export PYTHONPATH={shlex.quote(str(REPO))}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; ")

try:
    for _warning in validate_config(config, families=tuple(available_families())):
        print(f"ganime: {_warning}", file=sys.stderr)
except GanimeError as _exc:
    raise WorkflowError(f"ganime config error: {_exc}") from None


wildcard_constraints:
    task=r"[A-Za-z0-9_-]+",
    dataset=r"[A-Za-z0-9_-]+",
    run=r"[A-Za-z0-9_-]+",
    res=r"\d+",


SCRAPE = f"results/scrape/{config['scrape']['source']}"
POSTS = f"{SCRAPE}/posts.parquet"
FACES = "results/faces/faces.parquet"


def code(stage):
    """The stage's module file: an input, so that editing the code reruns the stage."""
    return str(REPO / "ganime_steps" / f"{stage}.py")


def is_synthetic():
    return config["scrape"]["kind"] == "synthetic"


def get_cascade():
    faces = config["faces"]
    if faces["detector"] != "lbpcascade":
        return []
    return faces["cascade"] or "resources/lbpcascade_animeface.xml"


def get_dataset(name):
    return config["datasets"][name]


def get_dataset_table(wildcards):
    return FACES if get_dataset(wildcards.dataset)["from"] == "faces" else POSTS


def get_dataset_scores(wildcards):
    return {task: f"results/classifiers/{task}/scores.parquet" for task in get_dataset(wildcards.dataset)["drop"]}


def get_run(name):
    return config["runs"][name]


def get_reference(run_name):
    run = get_run(run_name)
    dataset = run["reference"] or config["evaluation"]["reference"] or run["dataset"]
    return f"results/evaluation/reference_{dataset}_{run['resolution']}.npz"


def get_feature_inputs():
    """Inception weights for real FID, else the fallback classifier whose features are used (labelled, not FID)."""
    ev = config["evaluation"]
    if ev["inception_weights"]:
        return {"inception": ev["inception_weights"]}
    return {"classifier": f"results/classifiers/{ev['fallback_classifier']}/model.pt"}


def feature_flags(input):
    if "inception" in input.keys():
        return f"--inception-weights {input.inception}"
    return f"--classifier-model {input.classifier}"


def all_run_outputs(name):
    return [f"results/runs/{r}/{name}" for r in config["runs"]]
