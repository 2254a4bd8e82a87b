"""What a run writes besides its checkpoint: metric snapshots, the best generator, sample grids, log.csv, the final
generator.

Metrics over training: an optional ``snapshot_metric(G_ema) -> dict`` runs at checkpoints (every ``metrics_every``
kimg, a multiple of ``checkpoint_every``; default every checkpoint, and always at the end) with G_ema in eval mode and
every global RNG state saved and restored around it (:func:`preserved_rng`). One JSON object per snapshot goes to
``metrics.jsonl`` (``kimg``, ``step``, ``images_seen``, the phase, the last log window's loss means, the metrics,
``seconds``, ``metric_seconds``, ``timestamp``); the rows are also in the checkpoint, so a resumed run rewrites the
file with exactly the rows up to its checkpoint. The snapshot with the lowest ``metric_key`` is exported as
``generator_best.pt`` (generator.pt's format plus ``kimg``, ``metric_key``, ``metric``, ``metrics``). With
``metric_at_start`` (the train stage's setting) a fresh run measures the untrained G_ema first: the curve starts with
a kimg-0 row. The metric's ``identity`` (``metrics.generated.SnapshotMetric``: the reference's content hash, n_fake,
n_real) goes into every row, the checkpoint and generator_best.pt; a resume with another identity drops the rows
measured otherwise (one log line), re-picks the best among those left (removing generator_best.pt if it belonged to a
dropped row), and, with no rows left, measures the checkpoint's G_ema before training on.

Batch norm and G_ema: before every use of G_ema (checkpoint, sample grid, metric, export) its BN statistics are
re-estimated on fresh latents (:meth:`Snapshots.calibrate_ema`, its own seeded generator: the training RNG streams
are untouched); the exported ``generator.pt`` carries them.

:class:`Snapshots` is the :class:`~ganime_steps.gan.loop.Trainer`'s part that does this.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ganime_steps.common import GanimeError, save_image, write_text
from ganime_steps.gan.networks import export_generator, images_to_uint8, recalibrate_batch_norm
from ganime_steps.imaging import make_grid

log = logging.getLogger(__name__)

LOG_COLUMNS = (
    "step",
    "kimg",
    "phase",
    "resolution",
    "alpha",
    "lod",
    "loss_g",
    "loss_d",
    "penalty",
    "seconds",
    "img_per_s",
    "max_mem_mb",
)
GRID_SIZE = 64  # fixed latents in samples.png (8 x 8)
METRICS_FILE = "metrics.jsonl"
BEST_FILE = "generator_best.pt"
BN_SEED_STREAM = 0x626E  # G_ema's BN recalibration latents: seed + this, never the training streams
SnapshotMetricFn = Callable[[torch.nn.Module], dict[str, Any]]


@contextlib.contextmanager
def preserved_rng(cuda: bool) -> Iterator[None]:
    """Restore the global torch (and CUDA), numpy and Python RNG states afterwards: whatever runs inside cannot
    shift the training streams (exact resume holds with or without it)."""
    torch_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if cuda else None
    np_state = np.random.get_state()
    py_state = random.getstate()
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
        np.random.set_state(np_state)
        random.setstate(py_state)


def _json_value(v: Any) -> Any:
    """Plain JSON: numpy/torch scalars as Python numbers, non-finite floats as null."""
    if isinstance(v, np.generic) or (isinstance(v, (np.ndarray, torch.Tensor)) and v.ndim == 0):
        v = v.item()
    elif isinstance(v, (np.ndarray, torch.Tensor)):
        v = v.tolist()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _json_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    return v


def metrics_jsonl_text(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def read_metrics_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a metrics.jsonl; unreadable lines (a file cut short by hand) are skipped with a warning."""
    rows = []
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("%s line %d: not JSON, dropped", path, i)
    return rows


def log_csv_text(rows: list[dict[str, float]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LOG_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row[k] for k in LOG_COLUMNS})
    return buf.getvalue()


def snapshot_name(images_seen: int) -> str:
    return f"samples_{images_seen / 1000:010.3f}kimg.png"


class Snapshots:
    """The Trainer's metric snapshots and files: metrics.jsonl, generator_best.pt, samples.png and the snapshot
    grids, log.csv and generator.pt. Uses the Trainer's G_ema, run state (``images_seen``, ``step``, ``phase``,
    ``log_rows``, ``elapsed_s``), ``out``, ``snapshot_metric``, ``metric_key``, ``metric_identity``."""

    def _grid_latents(self, seed: int) -> torch.Tensor:
        return torch.randn(GRID_SIZE, self.cfg.z_dim, generator=torch.Generator().manual_seed(seed)).to(self.device)

    def _resume_metrics(self, ck: dict[str, Any]) -> None:
        """Metric rows up to the checkpoint (from the checkpoint; from metrics.jsonl for checkpoints that predate
        them): rows a killed run wrote past its last checkpoint are dropped, as the resumed run redoes them."""
        path = self.out / METRICS_FILE
        if "metric_rows" in ck:
            self.metric_rows = [dict(r) for r in ck["metric_rows"]]
        elif path.is_file():
            rows = read_metrics_jsonl(path)
            self.metric_rows = [
                r for r in rows if isinstance(r.get("images_seen"), int) and r["images_seen"] <= ck["images_seen"]
            ]
        best = ck.get("best")
        if best is not None and best.get("metric_key") != self.metric_key and self.snapshot_metric is not None:
            log.warning(
                "%s: the best snapshot so far was chosen by %r, this run ranks by %r: best restarts from here",
                self.ckpt_path,
                best.get("metric_key"),
                self.metric_key,
            )
            best = None
        self.best = dict(best) if best is not None else None
        self._drop_rows_of_another_metric(ck.get("metric_identity") or {})

    def _drop_rows_of_another_metric(self, ck_identity: dict[str, Any]) -> None:
        """Rows measured against another reference or with other sample counts are not comparable with this run's:
        drop them and re-pick the best among the rest. A row without a key (written before it was recorded) is
        taken to have the checkpoint's value; with neither, it is kept."""
        if self.snapshot_metric is None or not self.metric_identity:
            return

        def differs(row: dict[str, Any]) -> list[str]:
            return [
                key
                for key, now in self.metric_identity.items()
                if row.get(key, ck_identity.get(key)) not in (None, now)
            ]

        stale = [differs(r) for r in self.metric_rows]
        if not any(stale):
            return
        keys = [k for k in self.metric_identity if any(k in keys for keys in stale)]
        kept = [r for r, keys in zip(self.metric_rows, stale, strict=True) if not keys]
        log.warning(
            "%s: %d metric rows were measured with another %s; dropped (%d kept), best snapshot re-picked",
            self.out / METRICS_FILE,
            len(self.metric_rows) - len(kept),
            ", ".join(keys),
            len(kept),
        )
        self.metric_rows = kept
        self._rows_dropped = True
        ranked = [r for r in kept if isinstance(r.get(self.metric_key), (int, float))]
        best = min(ranked, key=lambda r: r[self.metric_key], default=None)
        self.best = (
            None
            if best is None
            else {
                "images_seen": best["images_seen"],
                "kimg": best["kimg"],
                "step": best.get("step"),
                "metric_key": self.metric_key,
                "metric": float(best[self.metric_key]),
            }
        )

    def calibrate_ema(self) -> None:
        """Re-estimate G_ema's batch-norm statistics for its own weights (once per images_seen; no-op without BN)."""
        if self._calibrated_at == self.images_seen:
            return
        seed = (self.cfg.seed + BN_SEED_STREAM) % 2**63
        if recalibrate_batch_norm(self.G_ema, seed=seed):
            log.debug("G_ema batch-norm statistics re-estimated at %.3f kimg", self.images_seen / 1000)
        self.G_ema.eval()
        self._calibrated_at = self.images_seen

    def evaluate_snapshot(self) -> dict[str, Any]:
        """Run the snapshot metric on G_ema (BN re-estimated, eval mode, global RNG states restored afterwards),
        append its row and update the best snapshot. Returns the row."""
        assert self.snapshot_metric is not None
        self.calibrate_ema()
        t0 = time.perf_counter()
        try:
            with preserved_rng(self.cuda), torch.no_grad():
                metrics = self.snapshot_metric(self.G_ema)
        finally:
            self.G_ema.eval().requires_grad_(False)
        seconds = time.perf_counter() - t0
        if not isinstance(metrics, dict) or self.metric_key not in metrics:
            got = sorted(metrics) if isinstance(metrics, dict) else type(metrics).__name__
            raise GanimeError(
                f"snapshot metric returned {got}, without {self.metric_key!r}: pick --metric-key among its keys"
            )
        last = self.log_rows[-1] if self.log_rows else {}
        row: dict[str, Any] = {
            "kimg": self.images_seen / 1000,
            "step": self.step,
            "images_seen": self.images_seen,
            "phase": self.phase.name,
            "resolution": self.phase.resolution,
            "alpha": round(self.phase.alpha, 6),
            "loss_g": last.get("loss_g"),
            "loss_d": last.get("loss_d"),
            "penalty": last.get("penalty"),
        }
        for k, v in {**self.metric_identity, **metrics}.items():
            if k in row:
                log.warning("snapshot metric key %r clashes with a metrics.jsonl column; dropped", k)
            else:
                row[k] = v
        row.update(
            {
                "metric_key": self.metric_key,
                "seconds": round(self.elapsed_s, 3),
                "metric_seconds": round(seconds, 3),
                "timestamp": round(time.time(), 3),
            }
        )
        row = _json_value(row)
        self.metric_rows.append(row)
        value = row.get(self.metric_key)
        log.info("snapshot %.3f kimg: %s %s (%.1f s)", self.images_seen / 1000, self.metric_key, value, seconds)
        if isinstance(value, (int, float)) and (self.best is None or value < self.best["metric"]):
            self.best = {
                "images_seen": self.images_seen,
                "kimg": self.images_seen / 1000,
                "step": self.step,
                "metric_key": self.metric_key,
                "metric": float(value),
            }
            self._best_pending = True
        return row

    def write_metrics(self) -> None:
        """metrics.jsonl rewritten whole (atomically) from the rows: with a snapshot metric, or to trim a file."""
        path = self.out / METRICS_FILE
        if self.snapshot_metric is not None or path.exists():
            write_text(path, metrics_jsonl_text(self.metric_rows))

    def _export(self, path: Path, extra: dict[str, Any] | None = None) -> None:
        self.calibrate_ema()
        export_generator(
            path,
            self.G_ema,
            self.net_cfg,
            extra={
                "family": self.cfg.family,
                "images_seen": self.images_seen,
                "step": self.step,
                "phase": self.phase.to_dict(),
                **(extra or {}),
            },
        )

    def export_best(self) -> None:
        """generator_best.pt from the current G_ema, which must be the best snapshot."""
        best = self.best
        assert best is not None and best["images_seen"] == self.images_seen
        row = next((r for r in reversed(self.metric_rows) if r.get("images_seen") == self.images_seen), {})
        metrics = {k: v for k, v in row.items() if isinstance(v, (int, float, str, bool)) or v is None}
        self._export(
            self.out / BEST_FILE,
            extra={
                "kimg": best["kimg"],
                "metric_key": best["metric_key"],
                "metric": best["metric"],
                "metrics": metrics,
                "metric_identity": self.metric_identity,
            },
        )
        self._best_pending = False
        log.info(
            "best snapshot so far (%s %g) at %.3f kimg: %s",
            best["metric_key"],
            best["metric"],
            best["kimg"],
            self.out / BEST_FILE,
        )

    def _sync_best_file(self) -> None:
        """After a resume: re-export generator_best.pt if the checkpoint is the best snapshot and the file is not
        (a run killed between checkpoint and export); remove a file that is no longer the best of the rows kept
        (chosen with another metric identity, or its row was dropped); warn if an older best's file is missing."""
        best, path = self.best, self.out / BEST_FILE
        on_disk = None
        if path.is_file():
            with contextlib.suppress(Exception):
                on_disk = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(on_disk, dict):
            other = self._other_metric(on_disk.get("metric_identity"))
            dropped = self._rows_dropped and (best is None or on_disk.get("images_seen") != best["images_seen"])
            if other or dropped:
                why = f"chosen with another {other}" if other else "its snapshot's metric row was dropped"
                log.warning("%s: %s; removed", path, why)
                path.unlink()
                on_disk = None
        if best is None:
            return
        if isinstance(on_disk, dict) and on_disk.get("images_seen") == best["images_seen"]:
            return
        if best["images_seen"] == self.images_seen:
            self.export_best()
        else:
            log.warning(
                "%s: the best snapshot (%.3f kimg) has no matching %s; it is written again only by a better snapshot",
                self.out,
                best["kimg"],
                path.name,
            )

    def _other_metric(self, identity: Any) -> str:
        """The keys in which a recorded metric identity differs from this run's ('' if none or unknown)."""
        if self.snapshot_metric is None or not isinstance(identity, dict):
            return ""
        return ", ".join(k for k, v in self.metric_identity.items() if identity.get(k, v) != v)

    def _clear_stale_metrics(self) -> None:
        """A run that starts from scratch must not keep another run's metrics or best generator."""
        for name in (METRICS_FILE, BEST_FILE):
            path = self.out / name
            if path.exists():
                log.warning("%s: left from an earlier run; removed as this run starts over", path)
                path.unlink()

    @torch.no_grad()
    def write_samples(self, snapshot: bool) -> None:
        """samples.png (and the snapshot's file): G_ema on the fixed latents. The grid is rendered once per
        images_seen (the last checkpoint and the final artifacts share it; G_ema only changes with training)."""
        self.calibrate_ema()
        key = (self.images_seen, self.step)
        if self._grid_cache is not None and self._grid_cache[0] == key:
            grid = self._grid_cache[1]
        else:
            imgs = []
            for z in self.grid_z.split(16):
                imgs.append(images_to_uint8(self.G_ema(z)))
            grid = make_grid(np.concatenate(imgs), ncol=8)
            self._grid_cache = (key, grid)
        save_image(self.out / "samples.png", grid)
        if snapshot:
            save_image(self.out / snapshot_name(self.images_seen), grid)

    def _restore_snapshot_grid(self) -> None:
        """A checkpoint's sample grid is written after the checkpoint (checkpoint_event): a run killed in between
        resumes past that snapshot, so write the grid again from the restored G_ema (the same image; the killed
        writer's temporary file goes with it)."""
        if not (self.out / snapshot_name(self.images_seen)).exists():
            self.write_samples(snapshot=True)

    def write_final(self) -> None:
        self._export(self.out / "generator.pt")
        self.write_samples(snapshot=False)
        write_text(self.out / "log.csv", log_csv_text(self.log_rows))

    def checkpoint_event(self, evaluate: bool) -> None:
        """At a checkpoint: G_ema's BN statistics, the metric (if due), then the checkpoint (holding the metric
        rows and the best snapshot), metrics.jsonl, generator_best.pt (if this is the best) and the samples."""
        self.calibrate_ema()
        if evaluate and self.snapshot_metric is not None:
            self.evaluate_snapshot()
        self.save_checkpoint()
        self.write_metrics()
        if self._best_pending:
            self.export_best()
        self.write_samples(snapshot=True)

    def _prepare_metric_files(self) -> None:
        """metrics.jsonl and generator_best.pt as the run starts: a resume trims them to its checkpoint, a fresh
        start removes another run's."""
        if not self.main:
            return  # data parallel: rank 0 alone writes files
        if self.resumed:
            self.write_metrics()  # exactly the checkpoint's rows: drops any a killed run wrote after it
            self._sync_best_file()
            self._restore_snapshot_grid()
        else:
            self._clear_stale_metrics()

    def _metric_at_start(self) -> None:
        """With ``metric_at_start``, a run with no rows (fresh: kimg 0; resumed after its rows were dropped: the
        checkpoint's kimg) measures G_ema before training, so its curve starts where its training does. A resumed
        run saves its checkpoint again to keep the row (the same state otherwise: the metric leaves every RNG as it
        was)."""
        if not (self.main and self.metric_at_start and self.snapshot_metric is not None) or self.metric_rows:
            return
        self.calibrate_ema()
        self.evaluate_snapshot()
        if self.resumed:
            self.save_checkpoint()
        self.write_metrics()
        if self._best_pending:
            self.export_best()
