"""Data parallel over N GPUs with torchrun (WORLD_SIZE > 1): the rank's device, batch sizes that split evenly over
the ranks, and the gradient average. How the Trainer keeps N ranks equal to one process: see
:class:`~ganime_steps.gan.loop.Trainer`."""

from __future__ import annotations

import datetime
import logging
import os

import torch

from ganime_steps.common import GanimeError
from ganime_steps.gan.progressive import GrowthSchedule, parse_batch_schedule

log = logging.getLogger(__name__)

# Data parallel: how long a rank waits in a collective. The other ranks wait in a barrier while rank 0 checkpoints
# and measures a snapshot (a 50k-sample FID can take longer than NCCL's default 10 minutes on a slow GPU).
DIST_TIMEOUT = datetime.timedelta(hours=1)


def rank_device(device: torch.device, local_rank: int, world: int) -> torch.device:
    """The device this process works on: under data parallel on CUDA, torchrun's ``LOCAL_RANK``-th GPU (each
    rank its own), else ``device``."""
    return torch.device("cuda", local_rank) if world > 1 and device.type == "cuda" else device


def run_batch_sizes(schedule: GrowthSchedule) -> dict[int, int]:
    """{resolution: global batch size} at every resolution the run trains at: from its start resolution up to its
    own (a non-progressive run: its one resolution). Entries of the table above the run's resolution are not used."""
    sizes, res = {}, schedule.start_resolution
    while res <= schedule.resolution:
        sizes[res] = schedule.batch_schedule.get(res, schedule.batch_size)
        res *= 2
    return sizes


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def scale_batch_schedule(text: str, world: int, resolution: int) -> str:
    """A published per-resolution batch table (``--batch-schedule auto``) for ``world`` data-parallel ranks: each
    entry at or below the run's resolution that is not a multiple of ``world`` is rounded up to one (the table's
    global batch is kept wherever it splits evenly, so the run trains as on one GPU); entries above the resolution
    are never used and stay as published. Logs the entries it changed."""
    if world <= 1:
        return text
    table = parse_batch_schedule(text)
    scaled = {r: round_up(b, world) if r <= resolution else b for r, b in table.items()}
    changed = [f"{r}:{table[r]}->{b}" for r, b in scaled.items() if b != table[r]]
    if changed:
        log.warning(
            "--batch-schedule auto on %d GPUs: %s rounded up to a multiple of the GPU count", world, ", ".join(changed)
        )
    return ",".join(f"{r}:{b}" for r, b in scaled.items())


def check_data_parallel_batches(schedule: GrowthSchedule, world: int) -> None:
    """Every global batch the run trains with must split evenly over the ``world`` ranks; one GanimeError line
    naming the flag and a fix otherwise. Only the resolutions the run reaches count (:func:`run_batch_sizes`)."""
    sizes = run_batch_sizes(schedule)
    bad = {r: b for r, b in sizes.items() if b % world}
    if world <= 1 or not bad:
        return
    res, batch = min(bad.items())
    where = f"batch {batch} at {res} px is not a multiple of the {world} GPUs (each takes an equal share)"
    if res in schedule.batch_schedule:
        table = ",".join(f"{r}:{round_up(b, world)}" for r, b in sizes.items())
        raise GanimeError(
            f"--batch-schedule (run key batch_schedule): {where}; use multiples of {world} from "
            f"{schedule.start_resolution} to {schedule.resolution} px, e.g. '{table}', or run on a GPU count "
            "that divides them (run key gpus)"
        )
    raise GanimeError(
        f"--batch-size {batch} (run key batch_size): {where}; use e.g. --batch-size {round_up(batch, world)}, "
        "or run on a GPU count that divides it (run key gpus)"
    )


def dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) in a plain process."""
    return (
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


def all_reduce_grads(module: torch.nn.Module, world: int) -> None:
    """Average the gradients over ranks: one flat all-reduce (no-op in a single process)."""
    if world == 1:
        return
    import torch.distributed as dist

    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    parts = [f.view_as(g) for f, g in zip(flat.split([g.numel() for g in grads]), grads, strict=True)]
    torch._foreach_copy_(grads, parts)
