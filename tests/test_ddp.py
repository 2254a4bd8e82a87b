"""Data-parallel training (torchrun / DDP) on CPU: two gloo processes, spawned here, train one ProGAN run and one
StyleGAN run on the same global batch as one process; the result matches the single process to a stated tolerance
(summation order of the gradient all-reduce only; StyleGAN's noise maps and mixing latents are each rank's rows of
the global draw), rank 0 alone writes files, every rank leaves the process group at exit, and a 2-process run
resumes exactly."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from conftest import write_disc_dataset

from ganime_steps.gan.loop import TrainConfig, Trainer

RES = 16
# ProGAN at one resolution: no batch norm, pixel norm per sample, minibatch-stddev groups of 4 that a global batch
# of 8 split rank::2 keeps whole; WGAN-GP interpolation weights are drawn globally. Measured max |difference| of
# any G/D/G_ema weight after 4 iterations: 2.83e-07 (gradient summation order only).
# StyleGAN at one resolution: noise, mixing latents and R1 per sample (the mixing decision and crossover once per
# global batch, as one process draws them); instance norm per sample; D is ProGAN's. Measured: 7.63e-06 (mapping
# layers), against 9.6e-03 with the noise and mixing latents drawn alike on every rank.
TOLERANCE = {"progan": 1e-5, "stylegan": 5e-5}  # measured here: 2.83e-07, 7.63e-06
NOT_COMPARED = (
    "w_avg",  # StyleGAN's tracked mean W: each rank's own batch mean (rank 0's is saved), as in StyleGAN2-ADA
    # The first StyleGAN layer's bias acts on a spatially constant map at init (const = ones, noise strength 0), which
    # instance norm removes: its gradient is round-off, which Adam scales to +-lr steps whatever the summation order.
    # It stays without effect on the output while the map before instance norm is constant up to a linear lrelu.
    "epi4.0.bias",
)


def _cfg(kimg: float, family: str = "progan") -> TrainConfig:
    return TrainConfig(
        family=family,
        resolution=RES,
        kimg=kimg,
        batch_size=8,
        lr=1e-3,
        channels=4,
        z_dim=8,
        seed=3,
        ema_kimg=0.05,
        checkpoint_every=1.0,
        start_resolution=RES,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, data: str, out: str, kimg: float, report: str, family: str) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    import torch.distributed as dist

    try:
        local = []
        with Trainer(_cfg(kimg, family), data=Path(data), out=Path(out), device=torch.device("cpu")) as tr:
            handle = tr.D.register_forward_hook(lambda m, i, o: local.append(i[0].shape[0]))
            res = tr.train()
            handle.remove()
        # leaving the block destroyed the group the Trainer joined (as the train CLI does at exit)
        left = not dist.is_initialized()
        Path(report, f"rank{rank}.json").write_text(
            json.dumps(
                {"local_batches": sorted(set(local)), "images_seen": res.images_seen, "step": res.step, "left": left}
            )
        )
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _spawn(data: Path, out: Path, kimg: float, report: Path, family: str = "progan") -> None:
    report.mkdir(parents=True, exist_ok=True)
    mp.spawn(_worker, args=(2, _free_port(), str(data), str(out), kimg, str(report), family), nprocs=2, join=True)


def _weights(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    ck = torch.load(path / "checkpoint.pt", weights_only=True)
    return {net: ck[net] for net in ("G", "D", "G_ema")} | {"meta": {"step": ck["step"], "seen": ck["images_seen"]}}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_disc_dataset(tmp_path_factory.mktemp("data") / "train_16.npy", RES)


@pytest.mark.parametrize("family", ["progan", "stylegan"])
def test_two_processes_match_one(data: Path, tmp_path: Path, family: str) -> None:
    torch.set_num_threads(1)
    single = Trainer(_cfg(0.032, family), data=data, out=tmp_path / "one", device=torch.device("cpu")).train()
    _spawn(data, tmp_path / "two", 0.032, tmp_path / "report", family)
    reports = [json.loads((tmp_path / "report" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["left"] for r in reports] == [True, True]  # every rank destroyed its process group
    # same global batch: 8 images per step, 4 on each rank, same images seen and steps as one process
    assert [r["local_batches"] for r in reports] == [[4], [4]]
    assert [r["images_seen"] for r in reports] == [single.images_seen] * 2 == [32, 32]
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert a["meta"] == b["meta"] == {"step": 4, "seen": 32}
    worst = max(
        (ta.float() - b[net][key].float()).abs().max().item()
        for net in ("G", "D", "G_ema")
        for key, ta in a[net].items()
        if not key.endswith(NOT_COMPARED)
    )
    print(f"{family}: max |weight difference| 2 processes vs 1: {worst:.3g}")
    assert worst < TOLERANCE[family]
    # rank 0 alone wrote the run's files
    assert (tmp_path / "two" / "generator.pt").is_file() and (tmp_path / "two" / "samples.png").is_file()
    rows = [line.split(",") for line in (tmp_path / "two" / "log.csv").read_text().splitlines()[1:]]
    rows_one = [line.split(",") for line in (tmp_path / "one" / "log.csv").read_text().splitlines()[1:]]
    assert [r[0] for r in rows] == [r[0] for r in rows_one] == ["1", "2", "3", "4"]
    # the logged losses are the means over both ranks: those of the global batch
    for r, r1 in zip(rows, rows_one, strict=True):
        assert [float(v) for v in r[6:9]] == pytest.approx([float(v) for v in r1[6:9]], abs=1e-4)


def test_two_process_run_resumes_exactly(data: Path, tmp_path: Path) -> None:
    _spawn(data, tmp_path / "full", 0.032, tmp_path / "r1")
    _spawn(data, tmp_path / "part", 0.016, tmp_path / "r2")
    _spawn(data, tmp_path / "part", 0.032, tmp_path / "r3")
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "part")
    assert a["meta"] == b["meta"]
    for net in ("G", "D", "G_ema"):
        for key, ta in a[net].items():
            assert torch.equal(ta, b[net][key]), f"{net}.{key} differs after a 2-process resume"
