"""GPU code paths, checked on CPU with faked torch.cuda functions: the checkpoint's CUDA RNG state resumes on any GPU
count; the run's TF32 choice; --device cuda without a usable GPU fails in one line; the train rule passes the run's
device and its threads scale with its GPUs; the config's device reaches the classifier, evaluate and studio jobs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, snakemake, tiny_train_config, train_tiny, write_disc_dataset

from ganime_steps import common, train
from ganime_steps.common import GanimeError
from ganime_steps.gan.checkpoint import own_cuda_rng_state
from ganime_steps.gan.loop import Trainer

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data16(tmp_path_factory) -> Path:
    return write_disc_dataset(tmp_path_factory.mktemp("data") / "train_16.npy", 16)


def _fake_state(i: int) -> torch.Tensor:
    return torch.full((16,), i, dtype=torch.uint8)


class FakeCuda:
    """torch.cuda's RNG functions on a machine with ``gpus`` GPUs: one state per device, as torch keeps them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, gpus: int) -> None:
        self.states = {i: _fake_state(100 + i) for i in range(gpus)}
        for name in ("get_rng_state", "set_rng_state", "get_rng_state_all", "set_rng_state_all", "device_count"):
            monkeypatch.setattr(torch.cuda, name, getattr(self, name))

    def _index(self, device) -> int:
        index = torch.device(device).index or 0  # no index: the current GPU, cuda:0
        if index not in self.states:
            raise IndexError(f"no GPU {index}")  # what torch raises for a device it does not have
        return index

    def device_count(self) -> int:
        return len(self.states)

    def get_rng_state(self, device="cuda") -> torch.Tensor:
        return self.states[self._index(device)].clone()

    def set_rng_state(self, state: torch.Tensor, device="cuda") -> None:
        self.states[self._index(device)] = state.clone()

    def get_rng_state_all(self) -> list[torch.Tensor]:
        return [self.states[i].clone() for i in sorted(self.states)]

    def set_rng_state_all(self, states: list[torch.Tensor]) -> None:
        for i, state in enumerate(states):
            self.set_rng_state(state, f"cuda:{i}")


def _trainer_as_if_on_cuda(data: Path, out: Path) -> Trainer:
    """A CPU Trainer over a finished tiny run whose CUDA code paths are switched on (its tensors stay on the CPU;
    FakeCuda takes its device, which has no index, for the current GPU, cuda:0, as torch does for ``cuda``)."""
    trainer = Trainer(tiny_train_config(), data=data, out=out, device=torch.device("cpu"))
    trainer.cuda = True
    return trainer


def test_checkpoint_of_eight_gpus_resumes_on_one(data16: Path, tmp_path: Path, monkeypatch) -> None:
    """An old checkpoint (one CUDA state per GPU of an 8-GPU node) restores rank 0's state into the single GPU."""
    train_tiny(data16, tmp_path)
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    ck["rng"].pop("cuda_device", None)
    ck["rng"]["cuda"] = [_fake_state(i) for i in range(8)]
    cuda = FakeCuda(monkeypatch, gpus=1)
    trainer = _trainer_as_if_on_cuda(data16, tmp_path)
    trainer._resume(ck)
    assert torch.equal(cuda.states[0], _fake_state(0))


def test_checkpoint_holds_this_process_device_state_and_resumes_on_any_count(
    data16: Path, tmp_path: Path, monkeypatch
) -> None:
    train_tiny(data16, tmp_path)
    cuda = FakeCuda(monkeypatch, gpus=8)
    writer = _trainer_as_if_on_cuda(data16, tmp_path)
    rng = writer._state()["rng"]
    assert torch.equal(rng["cuda_device"], _fake_state(100))  # cuda:0's, not a list over the node's 8 GPUs
    assert "cuda" not in rng
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    ck["rng"] = rng
    for gpus in (1, 2):
        cuda = FakeCuda(monkeypatch, gpus=gpus)
        _trainer_as_if_on_cuda(data16, tmp_path)._resume(ck)
        assert torch.equal(cuda.states[0], _fake_state(100))
        assert all(torch.equal(cuda.states[i], _fake_state(100 + i)) for i in range(1, gpus))  # others untouched


@pytest.mark.parametrize(
    ("index", "world", "expected"),
    [(0, 1, 0), (3, 1, 3), (9, 1, 0), (3, 4, 0), (None, 1, 0)],
)
def test_own_state_from_an_old_per_gpu_list(index, world, expected) -> None:
    """Under data parallel every rank takes rank 0's (cuda:0's) entry; one process on cuda:N its own, if listed."""
    rng = {"cuda": [_fake_state(i) for i in range(8)]}
    device = torch.device("cuda", index) if index is not None else torch.device("cuda")
    assert torch.equal(own_cuda_rng_state(rng, device, world), _fake_state(expected))
    assert own_cuda_rng_state({"cuda": []}, device, world) is None  # a CPU run's checkpoint
    assert own_cuda_rng_state({"cuda_device": _fake_state(42)}, device, world).eq(42).all()


@pytest.fixture
def tf32_flags():
    """The process-wide TF32 flags, restored after the test."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _tf32() -> tuple[bool, bool]:
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


@pytest.mark.parametrize("tf32", [True, False])
def test_tf32_flags_follow_the_run_setting_on_cuda_only(data16: Path, tmp_path: Path, tf32_flags, tf32: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = (not tf32, not tf32)
    trainer = Trainer(tiny_train_config(tf32=tf32, amp="off"), data=data16, out=tmp_path, device=torch.device("cpu"))
    assert _tf32() == (not tf32, not tf32)  # a CPU run leaves the flags alone
    trainer._setup_device(torch.device("cuda"))  # the set-up step a CUDA run takes (amp off: no CUDA call)
    assert _tf32() == (tf32, tf32)


def test_tf32_defaults_off_and_the_cli_choice_reaches_the_summary(data16: Path, tmp_path: Path) -> None:
    assert tiny_train_config().tf32 is False
    argv = ["--data", str(data16), "--resolution", "16", "--kimg", "0.008", "--batch-size", "8", "--channels", "8"]
    for choice, expected in (([], False), (["--tf32", "on"], True)):
        out = tmp_path / f"tf32_{expected}"
        assert train.main([*argv, "--device", "cpu", "--out", str(out), *choice]) == 0
        assert json.loads((out / "train_summary.json").read_text())["tf32"] is expected


@pytest.fixture
def no_gpu(monkeypatch):
    """A machine where torch sees no GPU (also on a GPU machine)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("driver", ["535.104.05", None])
def test_cuda_without_a_usable_gpu_is_one_line_with_the_versions(no_gpu, tmp_path: Path, monkeypatch, driver) -> None:
    version_file = tmp_path / "version"
    if driver:  # what the loaded NVIDIA kernel module reports
        version_file.write_text(f"NVRM version: NVIDIA UNIX x86_64 Kernel Module  {driver}  Thu Aug 24 2023\nGCC ...\n")
    monkeypatch.setattr(common, "NVIDIA_DRIVER_FILE", version_file)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(GanimeError) as err:
        common.torch_device("cuda")
    message = str(err.value)
    assert "\n" not in message and message.startswith("--device cuda: no usable CUDA GPU")
    assert f"torch {torch.__version__}" in message
    assert (f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only") in message
    assert (f"NVIDIA driver {driver}" if driver else "no NVIDIA driver found") in message
    assert "--device cpu" in message  # the fix
    assert common.torch_device("auto") == torch.device("cpu")  # auto: the CPU, as asked for


def test_train_cli_with_cuda_and_no_gpu_fails_before_training(no_gpu, data16: Path, tmp_path: Path, capsys) -> None:
    argv = ["--data", str(data16), "--resolution", "16", "--kimg", "0.008", "--batch-size", "8", "--channels", "8"]
    assert train.main([*argv, "--device", "cuda", "--out", str(tmp_path / "run")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ganime error:")]
    assert len(errors) == 1 and "--device cuda: no usable CUDA GPU" in errors[0] and "driver" in errors[0]
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def _train_jobs(tmp_path: Path, **runs: dict) -> dict[str, str]:
    """Run -> its train job as a dry run prints it (resources, shell command): the demo's dcgan_A and dcgan_B (seed 0),
    each updated with the settings given under its name, and new runs like dcgan_B under any other name."""
    config = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    for run in config["runs"].values():
        run.pop("device", None)  # the schema's default (auto) unless a test sets one
    for name, settings in runs.items():
        config["runs"][name] = {**config["runs"].get(name, config["runs"]["dcgan_B"]), **settings}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    names = sorted({"dcgan_A", "dcgan_B", *runs})
    targets = [f"results/runs/{name}_s0/train_summary.json" for name in names]
    result = snakemake("-n", "-p", "--configfile", str(tmp_path / "run.yaml"), "--directory", str(tmp_path), *targets)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = [job for job in re.split(r"\n(?:local)?rule ", result.stdout) if job.startswith("train:")]
    return {name: next(job for job in jobs if f"--out results/runs/{name}_s0 " in job) for name in names}


def test_run_keys_device_and_tf32_reach_the_train_job(tmp_path: Path) -> None:
    """A run that says cuda gets --device cuda and its GPU; cpu claims none; the default (auto) keeps the claim."""
    jobs = _train_jobs(tmp_path, dcgan_A={"device": "cuda", "tf32": True}, dcgan_cpu={"device": "cpu"})
    assert "--tf32 on" in jobs["dcgan_A"] and "--tf32 off" in jobs["dcgan_B"]
    for name, device, gpus in (("dcgan_A", "cuda", 1), ("dcgan_B", "auto", 1), ("dcgan_cpu", "cpu", 0)):
        assert f" --device {device} " in jobs[name], name
        assert re.search(rf"resources: .*\bgpu={gpus}\b", jobs[name]), name


def _dry_run_jobs(tmp_path: Path, config: dict, *targets: str) -> dict[str, list[str]]:
    """Rule -> its jobs as a dry run prints them (resources, threads, shell command), with cores to spare (a local run
    caps a job's threads at --cores; a cluster job asks for them as --cpus-per-task)."""
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    args = ("-n", "-p", "--cores", "64", "--configfile", str(tmp_path / "run.yaml"), "--directory", str(tmp_path))
    result = snakemake(*args, *targets)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs: dict[str, list[str]] = {}
    for job in re.split(r"\n(?:local)?rule ", result.stdout):
        jobs.setdefault(job.split(":", 1)[0], []).append(job)
    return jobs


def test_train_threads_scale_with_the_gpus(tmp_path: Path) -> None:
    """threads = cpus_per_gpu (schema: 2) x gpus; each torchrun rank gets its share as OMP_NUM_THREADS."""
    config = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    base = {**config["runs"]["dcgan_B"], "device": "cuda"}
    config["runs"] = {
        "one": base,
        "eight": {**base, "gpus": 8, "batch_size": 64},
        "four_by_three": {**base, "gpus": 4, "batch_size": 64, "cpus_per_gpu": 3},
    }
    targets = [f"results/runs/{name}_s0/train_summary.json" for name in config["runs"]]
    jobs = _dry_run_jobs(tmp_path, config, *targets)["train"]
    for name, threads, gpus in (("one", 2, 1), ("eight", 16, 8), ("four_by_three", 12, 4)):
        job = next(job for job in jobs if f"--out results/runs/{name}_s0 " in job)
        assert re.search(rf"\bthreads: {threads}\b", job), job
        rank_threads = threads // gpus
        launcher = "python" if gpus == 1 else f"torchrun --standalone --nproc_per_node {gpus}"
        assert f"OMP_NUM_THREADS={rank_threads} {launcher} -m ganime_steps.train" in job, job


GPU_STAGE_RULES = ("classifier_train", "classifier_score", "evaluate_reference", "evaluate", "directions")


@pytest.mark.parametrize(("device", "gpus"), [(None, 1), ("cuda", 1), ("cpu", 0)])
def test_config_device_reaches_the_classifier_evaluate_and_studio_jobs(tmp_path: Path, device, gpus) -> None:
    """The top-level device key (schema: auto, as the demo runs on CPUs; config.yaml: cuda) is each GPU stage's
    --device; cpu claims no GPU, auto and cuda claim one."""
    config = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    config.pop("device", None)
    if device:
        config["device"] = device
    jobs = _dry_run_jobs(
        tmp_path, config, "results/runs/dcgan_A_s0/metrics.json", "results/runs/dcgan_A_s0/directions.npz"
    )
    for rule in GPU_STAGE_RULES:
        assert jobs.get(rule), f"no {rule} job planned"
        for job in jobs[rule]:
            assert f" --device {device or 'auto'} " in job, job
            assert re.search(rf"resources: .*\bgpu={gpus}\b", job), job
