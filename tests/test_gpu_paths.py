"""GPU code paths, checked on CPU with faked torch.cuda functions: the checkpoint's CUDA RNG state resumes on any GPU
count."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny_train_config, train_tiny, write_disc_dataset

from ganime_steps.gan.loop import Trainer, own_cuda_rng_state

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
