"""``train_summary.json``'s record: :class:`TrainSummary`, what the train stage (:mod:`ganime_steps.train`) writes
for the report. Defined here, beside the stage and importing no torch, so the report reads it without the trainer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ganime_steps.common import JsonRecord


@dataclass
class TrainSummary(JsonRecord):
    family: str
    resolution: int
    data: str
    out: str
    kimg_target: float
    images_seen: int
    images_this_run: int
    step: int
    resumed: bool
    lr: float
    betas: tuple[float, float]
    n_critic: int
    device: str
    amp: str
    diffaug: bool
    seconds_total: float
    seconds_this_run: float
    img_per_s: float
    n_params_g: int
    n_params_d: int
    loss_g: float | None
    loss_d: float | None
    penalty: float | None
    phase: str = "stable"
    current_resolution: int = 0
    alpha: float = 1.0
    lod: float = 0.0
    best_kimg: float | None = None  # the snapshot exported as generator_best.pt (metrics over training only)
    best_metric: float | None = None
    metric_key: str | None = None
    tf32: bool = False  # TF32 matmuls/convolutions allowed (CUDA only)
    epochs: float | None = None  # the run length as asked for in epochs (None: asked in kimg); kimg_target from it
    images_per_epoch: int = 0  # images in the packed training set (what one epoch shows D)
    dataset: str | None = None  # the name of the dataset ``data`` was packed from (train --dataset; None: not named)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> TrainSummary:
        """The record back from :meth:`to_json`'s object (``betas`` a list there, a tuple here)."""
        values = cls.field_values(obj)
        return cls(**{**values, "betas": tuple(values["betas"])})
