"""Checkpoints with exact resume, and the fingerprints that decide whether a checkpoint may be resumed.

``checkpoint.pt`` holds G, D, G_ema, both optimisers and grad scalers, the step, images seen and phase, the log and
metric rows, the best snapshot, and every RNG state (torch, this process's CUDA device, the numpy Generator before
any read-ahead draw, Python's): a run killed and resumed passes through exactly the iterations of one that was not
(CPU). A checkpoint made from other data (the packed set's sha256) or by other training code (the code fingerprint of
the modules training runs) is set aside and the run starts over; one with another network setup is an error.

:class:`Checkpointing` is the :class:`~ganime_steps.gan.loop.Trainer`'s part that writes and restores it.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import torch

from ganime_steps.checkpoints import load_torch_file
from ganime_steps.codedeps import code_fingerprint, training_files
from ganime_steps.common import GanimeError, file_digest, torch_save
from ganime_steps.gan.networks import CHECKPOINT_FORMAT, NetConfig

log = logging.getLogger(__name__)

# Settings that define the networks: a checkpoint is only resumed when all of these match.
ARCH_KEYS = ("family", "resolution", "channels", "z_dim")
# Settings a resume may change (with a warning): they apply from the checkpoint on.
WARN_KEYS = (
    "batch_size",
    "lr",
    "lr_schedule",
    "lr_decay_kimg",
    "ema_kimg",
    "diffaug",
    "seed",
    "start_resolution",
    "stable_kimg",
    "fade_kimg",
    "batch_schedule",
)


def dataset_fingerprint(path: Path) -> str:
    """sha256 of the packed array file: identifies the exact training data a checkpoint was made from."""
    return file_digest(path, "sha256")


def training_code_fingerprint() -> str:
    """Identifies the training code a checkpoint was made by: the modules a training run executes
    (:func:`ganime_steps.codedeps.training_files`, the train rule's code inputs), as parsed. Comments, docstrings,
    formatting and the metric and classifier code leave it unchanged: such edits keep a checkpoint resumable."""
    return code_fingerprint(training_files())


def own_cuda_rng_state(rng: dict[str, Any], device: torch.device, world: int) -> torch.Tensor | None:
    """The CUDA RNG state a resuming process restores into its one device: the checkpoint's ``cuda_device``; from
    older checkpoints (``cuda``: one state per GPU the writer could see) the writer's own, i.e. rank 0's (cuda:0)
    under data parallel, else this device's entry when the writer had it (its first otherwise)."""
    if rng.get("cuda_device") is not None:
        return rng["cuda_device"]
    states = rng.get("cuda") or []
    if not states:
        return None
    index = device.index if device.index is not None and world == 1 else 0
    return states[index] if index < len(states) else states[0]


def _as_tuple(state: Any) -> Any:
    """random.setstate needs tuples; a checkpoint round-trip may hand back lists."""
    if isinstance(state, list):
        return tuple(_as_tuple(s) for s in state)
    if isinstance(state, tuple):
        return tuple(_as_tuple(s) for s in state)
    return state


class Checkpointing:
    """The Trainer's checkpoint: its state dict, saving, and resuming from the run folder's ``checkpoint.pt``.
    Uses the Trainer's networks, optimisers, scalers, run state, RNGs (``rng``, ``reals``) and metric rows
    (:meth:`~ganime_steps.gan.snapshots.Snapshots._resume_metrics`)."""

    def _resume_or_start(self) -> None:
        """Resume from the run folder's checkpoint when there is one made from the same data; else start over."""
        if self.ckpt_path.exists():
            ck = self._load_checkpoint()
            if self._same_data_and_code(ck):
                self._resume(ck)

    def _state(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.cfg.to_dict(),
            "data": self.data_id,
            "code": self.code_id,
            "net": self.net_cfg.to_dict(),
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "G_ema": self.G_ema.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "scaler_g": self.scaler_g.state_dict(),
            "scaler_d": self.scaler_d.state_dict(),
            "step": self.step,
            "images_seen": self.images_seen,
            "phase": self.phase.to_dict(),  # where training is (resolution, alpha, lod): for people and tools
            "phase_key": self.phase_key,
            "elapsed_s": self.elapsed_s,
            "log_rows": self.log_rows,
            "metric_rows": self.metric_rows,
            "metric_identity": self.metric_identity,
            "best": self.best,
            "rng": {
                "torch": torch.get_rng_state(),
                # this process's own GPU only (every rank's equals rank 0's by design: see the class), so the
                # checkpoint resumes on any number of GPUs
                "cuda_device": torch.cuda.get_rng_state(self.device) if self.cuda else None,
                # before any read-ahead draw: a resumed run redraws that batch
                "numpy": self.reals.rng_state(self.rng),
                "python": random.getstate(),
            },
        }

    def save_checkpoint(self) -> None:
        torch_save(self.ckpt_path, self._state())
        self.saved_at = self.images_seen
        log.info("checkpoint at %.3f kimg (step %d): %s", self.images_seen / 1000, self.step, self.ckpt_path)

    def _load_checkpoint(self) -> dict[str, Any]:
        path = self.ckpt_path
        ck = load_torch_file(path, what="GAN checkpoint", made_by="the train stage to start the run over")
        if ck.get("format") != CHECKPOINT_FORMAT:
            raise GanimeError(f"{path}: not a ganime GAN checkpoint; delete it or use a new run folder")
        return ck

    def _same_data_and_code(self, ck: dict[str, Any]) -> bool:
        """A checkpoint trained on other data (e.g. the dataset's cleaning settings changed) or by other training
        code (a module the train stage imports was edited) is set aside, not resumed: Snakemake reruns the job
        because an input changed, and continuing (or, for a finished run, re-exporting) the old model would be
        wrong. Checkpoints written before a field existed are taken as matching it."""
        changed = [
            key for key, now in (("data", self.data_id), ("code", self.code_id)) if ck.get(key) not in (None, now)
        ]
        if changed == ["code"] and self.cfg.resume_other_code:
            log.warning(
                "%s was written by other training code; resuming it as asked (resume_other_code)", self.ckpt_path
            )
            return True
        if not changed:
            return True
        if not self.main:  # data parallel: rank 0 sets the old checkpoint aside; every rank starts over
            return False
        stale = self.ckpt_path.with_name(f"checkpoint.previous-{changed[0]}.pt")
        os.replace(self.ckpt_path, stale)
        log.warning(
            "%s changed since %s; starting over (old checkpoint kept as %s)",
            " and ".join(f"training {key}" for key in changed),
            self.ckpt_path,
            stale,
        )
        return False

    def _resume(self, ck: dict[str, Any]) -> None:
        path = self.ckpt_path
        old, new = ck["config"], self.cfg.to_dict()
        diffs = [f"{k} {old.get(k)!r} -> {new[k]!r}" for k in ARCH_KEYS if old.get(k) != new[k]]
        if not diffs and NetConfig.from_dict(ck["net"]) != self.net_cfg:
            diffs.append(f"network {ck['net']} -> {self.net_cfg.to_dict()}")
        if diffs:
            raise GanimeError(
                f"{path}: existing run has a different setup ({'; '.join(diffs)}); "
                f"delete {self.out} to start over or use a new run name"
            )
        for k in WARN_KEYS:
            if old.get(k) != new[k]:
                log.warning("resuming %s with %s changed from %r to %r", path, k, old.get(k), new[k])
        self.G.load_state_dict(ck["G"])
        self.D.load_state_dict(ck["D"])
        self.G_ema.load_state_dict(ck["G_ema"])
        self.opt_g.load_state_dict(ck["opt_g"])
        self.opt_d.load_state_dict(ck["opt_d"])
        for opt in (self.opt_g, self.opt_d):  # a changed --lr applies from here on
            for group in opt.param_groups:
                group["lr"] = self.cfg.lr
        self.scaler_g.load_state_dict(ck["scaler_g"])
        self.scaler_d.load_state_dict(ck["scaler_d"])
        self.step = int(ck["step"])
        self.images_seen = int(ck["images_seen"])
        self.phase_key = ck.get("phase_key")
        self._set_phase(self.schedule.at(self.images_seen))
        self.elapsed_s = float(ck["elapsed_s"])
        self.log_rows = list(ck["log_rows"])
        self._resume_metrics(ck)
        rng = ck["rng"]
        torch.set_rng_state(rng["torch"])
        if self.cuda and (state := own_cuda_rng_state(rng, self.device, self.world)) is not None:
            torch.cuda.set_rng_state(state, self.device)
        self.rng.bit_generator.state = rng["numpy"]
        random.setstate(_as_tuple(rng["python"]))
        self.grid_z = self._grid_latents(int(old.get("seed", self.cfg.seed)))  # keep samples comparable
        self._grid_cache = None
        self.resumed = True
        self.saved_at = self.images_seen
        log.info("resumed %s at %.3f kimg (step %d)", path, self.images_seen / 1000, self.step)
