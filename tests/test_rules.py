"""Rule declarations: every rule whose stage can use CUDA claims the `gpu` resource or is pinned to the CPU, and
every rule's code inputs are the files its stage runs.

The README promises that profiles/default (global `gpu: 1`) keeps two GPU jobs from sharing one GPU; that holds only
if every such rule claims `gpu`. A code edit reruns exactly the stages that use it only if every rule lists its
stage's module and imports (`code("<stage>")`, ganime_steps/codedeps.py). The rules are read as Snakemake sees them
(its API, in a subprocess), and the jobs of dry runs are checked as well.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, snakemake, with_face_study

from ganime_steps.codedeps import metric_files, stage_files, training_files

# Stages that run torch; `uses_torch` must find at least these (it also finds any new one).
KNOWN_TORCH_STAGES = {"train", "classifier", "evaluate", "inception"}
STAGE = re.compile(r"-m ganime_steps\.([\w.]+)")  # `python -m ...`, or `{params.launcher} -m ...` (torchrun)

DUMP_RULES = r"""
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

repo, configfile, workdir = (Path(a) for a in sys.argv[1:4])
with SnakemakeApi(OutputSettings(quiet=None)) as api:
    wf = api.workflow(
        resource_settings=ResourceSettings(),
        config_settings=ConfigSettings(configfiles=[configfile]),
        snakefile=repo / "workflow" / "Snakefile",
        workdir=workdir,
    )
    rules = {}
    for rule in wf._workflow.rules:
        gpu = rule.resources.get("gpu")
        if gpu is not None and not isinstance(gpu, (int, str)):  # a snakemake Resource
            gpu = gpu.value if not gpu.is_evaluable() else "callable"
        rules[rule.name] = {"shell": rule.shellcmd, "gpu": gpu}
print("RULES=" + json.dumps(rules))
"""


def stage_source(stage: str) -> str:
    """The code a stage (`python -m ganime_steps.<stage>`) runs: its module, or all of its subpackage."""
    path = REPO / "ganime_steps" / Path(*stage.split("."))
    if path.is_dir():
        files = sorted(path.glob("*.py"))
    elif "." in stage:  # a module of a subpackage (e.g. studio.directions) shares its subpackage's code
        files = sorted(path.parent.glob("*.py"))
    else:
        files = [path.with_suffix(".py")]
    assert files and all(f.is_file() for f in files), f"ganime_steps.{stage}: no module at {path}"
    return "\n".join(f.read_text() for f in files)


def uses_torch(stage: str) -> bool:
    return re.search(r"\btorch\b", stage_source(stage)) is not None


def cpu_only_by_construction(stage: str) -> bool:
    """A torch stage that can never pick CUDA: no device choice at all (e.g. inception convert loads on the CPU)."""
    return not re.search(r"cuda|torch_device|--device", stage_source(stage))


@pytest.fixture(scope="module")
def rules(tmp_path_factory) -> dict[str, dict]:
    work = tmp_path_factory.mktemp("rules")
    # the demo's jobs say device: cpu (they claim no GPU); the rules are checked at the schema's default, auto
    config = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    config.pop("device", None)
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-c", DUMP_RULES, str(REPO), str(work / "config.yaml"), str(work)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("RULES=")]
    return json.loads(line.removeprefix("RULES="))


def torch_rules(rules: dict[str, dict]) -> dict[str, str]:
    """rule -> the torch stage its shell runs."""
    out = {}
    for name, rule in rules.items():
        found = [s for s in STAGE.findall(rule["shell"] or "") if uses_torch(s)]
        if found:
            out[name] = found[0]
    return out


def test_torch_stages_are_found():
    assert all(uses_torch(stage) for stage in KNOWN_TORCH_STAGES)
    assert not uses_torch("faces") and not uses_torch("scrape")


def test_every_torch_rule_claims_the_gpu_or_is_pinned_to_the_cpu(rules):
    found = torch_rules(rules)
    # the rules that run torch today; a new one is checked the same way
    assert {"classifier_train", "classifier_score", "evaluate_reference", "evaluate", "data_fid", "train"} <= set(
        found
    ), found
    unclaimed = []
    for name, stage in sorted(found.items()):
        gpu, shell = rules[name]["gpu"], rules[name]["shell"]
        # a callable claim (train: the run's `gpus`) is checked by value in the dry-run test below
        claims = (isinstance(gpu, int) and gpu >= 1) or gpu == "callable"
        pinned = re.search(r"--device[ =]cpu\b", shell) is not None
        if claims and pinned:
            unclaimed.append(f"{name}: claims gpu but runs on the CPU")
        elif not (claims or pinned or cpu_only_by_construction(stage)):
            unclaimed.append(f"{name} (ganime_steps.{stage}): gpu={gpu!r}, no --device cpu")
    assert not unclaimed, "torch rules must declare `resources: gpu=1` or pass `--device cpu`: " + "; ".join(unclaimed)


def test_only_torch_rules_claim_the_gpu(rules):
    found = torch_rules(rules)
    claiming = {name for name, rule in rules.items() if rule["gpu"] not in (None, 0)}
    assert claiming <= set(found), claiming - set(found)
    assert {"train", "classifier_train", "classifier_score", "evaluate_reference", "evaluate"} <= claiming


def test_local_profile_runs_one_gpu_job_at_a_time():
    profile = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())
    assert profile["resources"]["gpu"] == 1


def test_dry_run_jobs_carry_the_gpu_claim(tmp_path):
    """The jobs Snakemake plans (demo config, profiles/default picked up) carry gpu=1 or --device cpu."""
    result = snakemake("-n", "-p", "--configfile", str(REPO / "configs" / "demo.yaml"), "--directory", str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "profiles/default" in result.stdout + result.stderr
    jobs = re.split(r"\n(?=(?:local)?rule \w+:)", result.stdout)
    seen = set()
    for job in jobs:
        m = re.match(r"(?:local)?rule (\w+):", job)
        stages = [s for s in STAGE.findall(job) if uses_torch(s)]
        if not m or not stages or cpu_only_by_construction(stages[0]):
            continue
        seen.add(m.group(1))
        resources = re.search(r"^\s+resources: (.*)$", job, re.M)
        claims = resources is not None and re.search(r"\bgpu=1\b", resources.group(1)) is not None
        pinned = "--device cpu" in job
        assert claims != pinned, (m.group(1), resources and resources.group(1))
    assert {"classifier_train", "classifier_score", "evaluate_reference", "evaluate", "data_fid", "train"} <= seen


def planned_jobs_code(stdout: str) -> list[tuple[str, str, set[str]]]:
    """(rule, shell command, the .py files under ganime_steps/ among its inputs) of each job of a dry run (-n -p)."""
    jobs = []
    for job in re.split(r"\n(?=(?:local)?rule \w+:)", stdout):
        m = re.match(r"(?:local)?rule (\w+):", job)
        if not m:
            continue
        inputs = re.search(r"^\s+input: (.*)$", job, re.M)
        shell = re.search(r"^Shell command: (.*)$", job, re.M)
        files = inputs.group(1).split(", ") if inputs else []
        code = {f for f in files if f.startswith(f"{REPO}/ganime_steps/") and f.endswith(".py")}
        jobs.append((m.group(1), shell.group(1) if shell else "", code))
    return jobs


def stage_code(stage: str, shell: str) -> set[str]:
    """The code a job running ``python -m ganime_steps.<stage>`` must list: codedeps' files of the stage. Train lists
    the narrower training files (the checkpoint fingerprint's) plus, where it takes metric snapshots, their code (the
    classifier package only in a classifier feature space)."""
    if stage != "train":
        return set(stage_files(stage))
    files = set(training_files())
    if "--metric-samples" in shell:
        files |= set(metric_files(classifier="--classifier-model" in shell))
    return files


def test_every_rule_lists_its_stages_code(rules, tmp_path):
    """Each job's code inputs are exactly its stage's module and imports (codedeps), for every rule that runs a
    ganime_steps stage: a hand-listed subset would let a code edit leave stale outputs, an extra file rerun a stage
    for nothing. The demo with a face study (a downloaded cascade for the second source's faces), an exported dataset
    and the first label queues plans a job of every such rule."""
    config = with_face_study(yaml.safe_load((REPO / "configs" / "demo.yaml").read_text()))
    config["sources"]["tachie"]["face_detector"] = "lbpcascade"
    config["faces"]["cascade"] = "resources/download/lbpcascade_animeface.xml"  # rule fetch_cascade
    config["export"] = {"datasets": ["A"]}
    (tmp_path / "code.yaml").write_text(yaml.safe_dump(config))
    targets = ("all", "export", "first_label_queues")
    result = snakemake("-n", "-p", "--configfile", str(tmp_path / "code.yaml"), "--directory", str(tmp_path), *targets)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    stage_rules = {name for name, rule in rules.items() if STAGE.search(rule["shell"] or "")}
    assert {"train", "directions", "fetch_inception", "scrape", "report"} <= stage_rules, stage_rules
    checked, wrong = set(), []
    for rule, shell, code in planned_jobs_code(result.stdout):
        stages = STAGE.findall(shell)
        if rule not in stage_rules or not stages:
            continue
        checked.add(rule)
        expected = stage_code(stages[0], shell)
        if code != expected:
            missing = sorted(Path(f).relative_to(REPO).as_posix() for f in expected - code)
            extra = sorted(Path(f).relative_to(REPO).as_posix() for f in code - expected)
            wrong.append(f"{rule} (ganime_steps.{stages[0]}): missing {missing}, extra {extra}")
    assert checked == stage_rules, f"rules with no planned job to check: {sorted(stage_rules - checked)}"
    assert not wrong, "code inputs must be code(<stage>) (train: training_code() + metric_code): " + "; ".join(
        sorted(set(wrong))
    )
