"""Data-parallel set-up without a second process: torch.distributed faked in this one (a rank of a pretend world),
so what every rank does around rank 0's work shows as the calls it makes. Batch schedules checked only where the run
trains (StyleGAN's published table at 64 px on 8 GPUs), the barrier after each checkpoint, the process group
destroyed at exit (also after a set-up error), the snapshot metric built on rank 0 alone and on its own GPU, and
StyleGAN's noise and mixing draws per rank (each rank's rows of one process's global draw)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from conftest import tiny_train_config, train_tiny, write_disc_dataset

from ganime_steps import train
from ganime_steps.common import GanimeError
from ganime_steps.gan.loop import RunSettings, Trainer
from ganime_steps.gan.losses import STYLEGAN_BATCH_SCHEDULE, data_parallel_shard
from ganime_steps.gan.networks import NetConfig, build_networks
from ganime_steps.gan.parallel import check_data_parallel_batches, scale_batch_schedule
from ganime_steps.gan.progressive import GrowthSchedule, parse_batch_schedule

torch.set_num_threads(1)


class FakeDist:
    """torch.distributed as one rank of ``world`` sees it: collectives leave tensors as they are and are recorded
    (``events``) with the barrier, the group's init and destroy and whatever a test records beside them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, rank: int, world: int) -> None:
        self.events: list[str] = []
        self.initialized = False
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(world))
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        for name in ("is_initialized", "init_process_group", "barrier", "destroy_process_group", "all_reduce"):
            monkeypatch.setattr(dist, name, getattr(self, name))

    def is_initialized(self) -> bool:
        return self.initialized

    def init_process_group(self, backend: str, **kw) -> None:
        self.events.append(f"init {backend} timeout={kw.get('timeout')}")
        self.initialized = True

    def barrier(self, **kw) -> None:
        assert self.initialized
        self.events.append("barrier")

    def destroy_process_group(self) -> None:
        assert self.initialized
        self.events.append("destroy")
        self.initialized = False

    def all_reduce(self, tensor: torch.Tensor, op=None) -> None:
        assert self.initialized
        self.events.append("all_reduce")


@pytest.fixture(scope="module")
def data16(tmp_path_factory) -> Path:
    return write_disc_dataset(tmp_path_factory.mktemp("data") / "train_16.npy", 16)


# -- batch schedules ------------------------------------------------------------------------------------------------


def _schedule(resolution: int, table: str, start: int = 8, batch_size: int = 64) -> GrowthSchedule:
    return GrowthSchedule(
        resolution=resolution,
        start_resolution=start,
        stable_kimg=600,
        fade_kimg=600,
        batch_size=batch_size,
        batch_schedule=parse_batch_schedule(table),
    )


def test_published_stylegan_table_at_64_px_on_8_gpus_is_accepted() -> None:
    """Its 256:8 and 512:4 entries are above the run's resolution: never used, so never checked."""
    check_data_parallel_batches(_schedule(64, STYLEGAN_BATCH_SCHEDULE), 8)
    # nor entries below the start resolution (4:6 with start 8), nor batch_size where the table covers every size
    check_data_parallel_batches(_schedule(32, "4:6,8:16,16:16,32:8,64:3", batch_size=5), 8)


@pytest.mark.parametrize(
    ("schedule", "world", "flag", "fix"),
    [
        (_schedule(64, "8:128,16:60,32:64,64:32"), 8, "--batch-schedule", "'8:128,16:64,32:64,64:32'"),
        (_schedule(512, STYLEGAN_BATCH_SCHEDULE), 8, "--batch-schedule", ",512:8'"),
        (_schedule(32, "8:16", batch_size=60), 8, "--batch-size", "--batch-size 64"),  # 16, 32 px: batch_size
        (_schedule(16, "", start=16, batch_size=12), 8, "--batch-size", "--batch-size 16"),  # non-progressive
    ],
)
def test_a_batch_that_does_not_split_is_refused_in_one_line(schedule, world, flag, fix) -> None:
    with pytest.raises(GanimeError) as err:
        check_data_parallel_batches(schedule, world)
    message = str(err.value)
    assert "\n" not in message and message.startswith(flag), message
    assert f"not a multiple of the {world} GPUs" in message and fix in message and "run key gpus" in message


def test_published_table_rounded_up_where_the_run_trains() -> None:
    assert scale_batch_schedule(STYLEGAN_BATCH_SCHEDULE, 8, 64) == STYLEGAN_BATCH_SCHEDULE  # 4..64 px split by 8
    assert scale_batch_schedule(STYLEGAN_BATCH_SCHEDULE, 8, 512).endswith("256:8,512:8")
    assert scale_batch_schedule(STYLEGAN_BATCH_SCHEDULE, 16, 128).endswith("128:16,256:8,512:4")  # above: as published
    assert scale_batch_schedule(STYLEGAN_BATCH_SCHEDULE, 1, 512) == STYLEGAN_BATCH_SCHEDULE


def test_stylegan_auto_at_64_px_on_8_gpus_starts(tmp_path: Path, monkeypatch) -> None:
    """train.run_train as rank 0 of 8: the published table is taken as it is, its 512:4 entry included (4 < 8 GPUs
    only matters at 512 px)."""
    fake = FakeDist(monkeypatch, rank=0, world=8)
    data = write_disc_dataset(tmp_path / "train_64.npy", 64, n=8)
    monkeypatch.setattr(Trainer, "train", lambda self: pytest.skip("set-up checked"), raising=True)
    seen = {}
    original = Trainer.__init__

    def init(self, cfg, **kw):
        seen["batch_schedule"] = cfg.batch_schedule
        original(self, cfg, **kw)
        seen["sizes"] = [self.schedule.at(0).batch_size]

    monkeypatch.setattr(Trainer, "__init__", init)
    with pytest.raises(pytest.skip.Exception):
        train.run_train(
            RunSettings(
                family="stylegan",
                resolution=64,
                kimg=1,
                batch_size=64,
                lr=None,
                channels=4,
                z_dim=8,
                seed=0,
                ema_kimg=1,
                checkpoint_every=1,
                batch_schedule="auto",
            ),
            data=data,
            out=tmp_path / "run",
            device="cpu",
        )
    assert seen == {"batch_schedule": STYLEGAN_BATCH_SCHEDULE, "sizes": [128]}
    assert fake.events[0].startswith("init gloo timeout=1:00:00")


# -- barrier and destroy ----------------------------------------------------------------------------------------------


def test_ranks_wait_in_a_barrier_after_rank_0_work_and_leave_the_group_at_exit(
    data16: Path, tmp_path: Path, monkeypatch
) -> None:
    fake = FakeDist(monkeypatch, rank=0, world=2)
    save = Trainer.save_checkpoint
    monkeypatch.setattr(Trainer, "save_checkpoint", lambda self: (fake.events.append("checkpoint"), save(self)))
    final = Trainer.write_final
    monkeypatch.setattr(Trainer, "write_final", lambda self: (fake.events.append("final"), final(self)))
    summary = train_tiny(data16, tmp_path / "run")  # 4 steps of 8 images, checkpoints at 16 and 32 images
    assert summary.images_seen == 32
    events = fake.events
    assert events[0].startswith("init gloo") and events[-1] == "destroy" and events.count("destroy") == 1
    assert events.count("checkpoint") == 2
    for i, event in enumerate(events):
        if event in ("checkpoint", "final"):  # rank 0's work: the others wait for it in a barrier, not a collective
            assert "barrier" in events[i + 1 :], events
            assert "all_reduce" not in events[i + 1 : events.index("barrier", i + 1)], events
    assert "barrier" in events[: events.index("all_reduce")]  # also before the first step (kimg-0 metric, files)


def test_a_set_up_error_leaves_no_process_group(data16: Path, tmp_path: Path, monkeypatch) -> None:
    fake = FakeDist(monkeypatch, rank=1, world=2)
    with pytest.raises(GanimeError, match="--batch-size 7 .*not a multiple of the 2 GPUs"):
        Trainer(tiny_train_config(batch_size=7), data=data16, out=tmp_path, device=torch.device("cpu"))
    assert fake.events[-1] == "destroy" and not fake.initialized


def test_a_training_error_leaves_no_process_group(data16: Path, tmp_path: Path, monkeypatch) -> None:
    fake = FakeDist(monkeypatch, rank=1, world=2)

    def boom(self):
        raise RuntimeError("boom")

    monkeypatch.setattr(Trainer, "_iteration", boom)
    with pytest.raises(RuntimeError, match="boom"):
        train_tiny(data16, tmp_path / "run")
    assert fake.events[-1] == "destroy" and not fake.initialized


def test_snapshot_metric_built_on_rank_0_only_on_its_own_gpu(data16: Path, tmp_path: Path, monkeypatch) -> None:
    """Rank 0 alone measures; its metric network goes on the GPU that rank trains on (LOCAL_RANK's)."""
    built = []
    monkeypatch.setattr(train, "make_snapshot_metric", lambda *args: built.append(args[-1]))
    monkeypatch.setattr(train, "torch_device", lambda name: torch.device("cuda"))  # as on a GPU node
    monkeypatch.setattr(Trainer, "__init__", lambda self, cfg, **kw: pytest.skip("metric checked"))
    run = dict(metric_reference=tmp_path / "ref.npz", metric_samples=16)
    for rank in (1, 0):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("LOCAL_RANK", str(rank + 2))  # rank 0 of this node's ranks on its third GPU
        monkeypatch.setenv("WORLD_SIZE", "2")
        with pytest.raises(pytest.skip.Exception):
            train_tiny(data16, tmp_path / "run", **run)
    assert built == ["cuda:2"]


# -- StyleGAN's per-rank draws ----------------------------------------------------------------------------------------


def _style_g(style_mixing: float, noise: bool) -> torch.nn.Module:
    cfg = NetConfig(resolution=16, z_dim=8, channels=8, g_norm="none", d_norm="none", arch="stylegan")
    G, _ = build_networks(cfg)
    G.style_mixing = style_mixing
    if noise:
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.data.fill_(1.0)
    return G.train()


@pytest.mark.parametrize(("style_mixing", "noise"), [(0.0, True), (1.0, False)], ids=["noise", "mixing"])
def test_stylegan_draws_are_each_ranks_rows_of_the_global_draw(style_mixing: float, noise: bool) -> None:
    G = _style_g(style_mixing, noise)
    z = torch.randn(8, 8, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(11)
    with torch.no_grad():
        one = G(z)  # one process, the global batch of 8
    after_one = torch.get_rng_state()
    same_z = {}
    for rank in (0, 1):
        torch.manual_seed(11)  # every rank holds the same RNG state
        with torch.no_grad(), data_parallel_shard(rank, 2):
            mine = G(z[rank::2])
            assert torch.equal(torch.get_rng_state(), after_one)  # the global batch's numbers were drawn
            torch.manual_seed(11)
            same_z[rank] = G(z[:4])  # the same latents on both ranks
        torch.testing.assert_close(mine, one[rank::2], rtol=1e-5, atol=1e-5)
    # with the same latents the ranks still differ: their noise maps / second latents are their own rows
    assert (same_z[0] - same_z[1]).abs().max() > 1e-3
