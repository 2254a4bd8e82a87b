"""GPU rules through a real single-node SLURM (loopback, fake GPU gres) with Snakemake's SLURM executor.

Run by `make test-slurm` (which `.ci/run` calls too), not by `make test`: it installs and starts SLURM daemons
as root (Debian's slurmctld/slurmd/munge via ../shared/cluster/start-local-slurm.sh) and stops them by PID.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, tiny_config

pytestmark = pytest.mark.slurm

START_SCRIPT = Path(os.environ.get("GANIME_SLURM_SCRIPT", REPO.parent / "shared" / "cluster" / "start-local-slurm.sh"))
SNAKEMAKE_TIMEOUT_S = 900  # Snakemake ignores SIGTERM while polling: stop it with SIGINT
PREEMPT_KIMG = 16  # the cancelled run: long enough (~15-60 s on CPU) to be caught mid-training


@pytest.fixture(scope="module")
def slurm_cluster():
    subprocess.run(["bash", str(START_SCRIPT), "start"], check=True, timeout=600)
    try:
        yield
    finally:
        subprocess.run(["bash", str(START_SCRIPT), "stop"], check=False, timeout=120)


def snakemake_cmd(config: Path, work: Path, *extra: str) -> list[str]:
    return ["timeout", "-s", "INT", str(SNAKEMAKE_TIMEOUT_S), sys.executable, "-m", "snakemake",
            "--workflow-profile", str(REPO / "profiles" / "slurm"), "--configfile", str(config),
            "--directory", str(work), "--local-cores", "1", "--max-threads", "1", *extra]  # fmt: skip


def env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


def slurm_jobs() -> list[tuple[str, str, str]]:
    """(job id, state, comment) of every job SLURM still knows about (finished ones for MinJobAge)."""
    out = subprocess.run(["squeue", "--states=all", "-h", "-o", "%i|%T|%k"], capture_output=True, text=True).stdout
    return [tuple(line.split("|", 2)) for line in out.splitlines() if line]


def test_gpu_rules_run_through_slurm_and_resume_after_scancel(slurm_cluster, tmp_path):
    config_path = tiny_config(tmp_path)
    config = yaml.safe_load(config_path.read_text())
    # A run long enough to be cancelled mid-training (~30 s on CPU), checkpointing often.
    # the demo's jobs say device: cpu (no GPU claimed); here the GPU rules must ask SLURM for their GPU: device auto
    config.pop("device", None)
    one_seed = {**config["runs"]["dcgan_A"], "seeds": None, "device": "auto"}  # one job per run name here
    config["runs"] = {
        "dcgan_A": one_seed,
        "preempt_A": {**one_seed, "kimg": PREEMPT_KIMG, "checkpoint_every": 1},
    }
    config_path.write_text(yaml.safe_dump(config))
    work = tmp_path / "work"
    # The CPU stages run locally first, so SLURM gets the GPU rules (train) and what follows them.
    prep = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", str(config_path),
                           "--directory", str(work), "--omit-from", "train", "evaluate_reference"],
                          env=env(), capture_output=True, text=True, timeout=SNAKEMAKE_TIMEOUT_S)  # fmt: skip
    assert prep.returncode == 0, prep.stderr[-3000:]
    before = {job for job, _, _ in slurm_jobs()}

    # 1. Start the whole tiny DAG through SLURM; cancel the long training job once it has a checkpoint.
    proc = subprocess.Popen(snakemake_cmd(config_path, work, "--retries", "0"), env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    ckpt = work / "results" / "runs" / "preempt_A" / "checkpoint.pt"
    deadline = time.monotonic() + SNAKEMAKE_TIMEOUT_S
    cancelled = None
    while time.monotonic() < deadline and proc.poll() is None:
        if ckpt.exists():
            running = [job for job, state, comment in slurm_jobs() if state == "RUNNING" and "rule_train" in comment]
            if running:
                subprocess.run(["scancel", *running], check=True)
                cancelled = running
                break
        time.sleep(1)
    output = proc.communicate(timeout=SNAKEMAKE_TIMEOUT_S)[0]
    assert cancelled, "the training job was never seen running with a checkpoint:\n" + output[-3000:]
    assert proc.returncode != 0, "snakemake should report the cancelled job"
    import torch

    at_cancel = torch.load(ckpt, map_location="cpu", weights_only=True)["images_seen"]
    assert 0 < at_cancel < PREEMPT_KIMG * 1000
    assert not (work / "results" / "runs" / "preempt_A" / "generator.pt").exists()

    # 2. Rerun: the cancelled run resumes from its checkpoint; everything finishes through SLURM.
    rerun = subprocess.run(snakemake_cmd(config_path, work), env=env(), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    summary = json.loads((work / "results" / "runs" / "preempt_A" / "train_summary.json").read_text())
    assert summary["resumed"] is True
    assert summary["images_seen"] >= PREEMPT_KIMG * 1000
    assert summary["images_this_run"] <= summary["images_seen"] - at_cancel  # continued, not restarted
    steps = [int(line.split(",")[0]) for line in
             (work / "results" / "runs" / "preempt_A" / "log.csv").read_text().splitlines()[1:]]  # fmt: skip
    assert steps == sorted(steps) and len(set(steps)) == len(steps)  # one continuous step count

    # Every non-local rule ran as a SLURM job; the GPU rules asked SLURM for the (fake) GPU.
    logs = work / ".snakemake" / "slurm_logs"
    for rule in ("train", "evaluate_reference", "evaluate"):
        assert list((logs / f"rule_{rule}").rglob("*.log")), f"no SLURM log for rule {rule}"
    new_jobs = [(job, state, comment) for job, state, comment in slurm_jobs() if job not in before]
    assert any("rule_train" in c and s == "CANCELLED" for _, s, c in new_jobs), new_jobs
    trained = [job for job, s, c in new_jobs if "rule_train" in c and s == "COMPLETED"]
    assert len(trained) >= len(config["runs"])
    for job in trained:  # `gpu: 1` in the rule reached SLURM as a GPU request
        assert "gpu:1" in subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    assert (work / "results" / "report" / "index.html").exists()
