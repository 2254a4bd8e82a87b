"""The classifier stage's settings: :class:`ClassifierSettings`, saved beside a trained model as
``classifier_config.json``."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ganime_steps.classifier.metrics import parse_threshold_rule
from ganime_steps.classifier.model import check_arch, normalise_pretrained
from ganime_steps.common import GanimeError, Settings

SETTINGS_FILE = "classifier_config.json"  # the settings of a trained classifier, beside its model.pt


@dataclass(frozen=True)
class ClassifierSettings(Settings):
    """What a classifier trains, as a person or the workflow gives it (``classifier_config.json``, ``classifier train
    --config``): every default here is the workflow schema's ``classifiers.*`` default, written once
    (``tests/test_classifier_settings.py`` checks the schema against it; the CLI's flags have no defaults of their
    own). The schema's ``queue`` is the label queue's (``config.classifier_settings`` leaves it out). The task's name
    (``--task``, the workflow's wildcard), the file paths and where and how fast it runs (device, DataLoader workers,
    the offline weights' file) are ``train.run_train``'s keywords and runtime flags, never settings."""

    arch: str = "resnet34"  # any timm model name
    image_size: int = 128  # square input size in px
    epochs: int = 20  # maximum epochs (early stopping may end sooner)
    batch_size: int = 32
    lr: float = 0.001  # AdamW peak learning rate, cosine decay (fine-tuning: the new head's)
    pretrained: str | bool = "none"  # none/false, offline, hub/true or a weights file (model.normalise_pretrained)
    backbone_lr_scale: float = 0.1  # fine-tuning: the pretrained backbone learns at lr times this
    seed: int = 0  # the split, the initialisation and the augmentation
    val_fraction: float = 0.2  # share of posts for validation: picks the epoch and the threshold
    test_fraction: float = 0.2  # share of posts held out for the reported metrics; 0: no test split
    patience: int = 5  # stop after this many epochs without a val F1 gain
    threshold_rule: str = "best_f1"  # best_f1, or precision:<p> (the lowest threshold with val precision >= p)

    what = "classifier settings"

    @property
    def weights(self) -> str:
        """Where the weights start from, in one spelling: none, offline, hub or a file path."""
        return normalise_pretrained(self.pretrained)

    @property
    def fine_tune(self) -> bool:
        return self.weights != "none"

    def check(self) -> None:
        """Every setting in its range, the threshold rule and the arch name, before any work."""
        if self.image_size < 16:
            raise GanimeError(f"image_size {self.image_size}: must be >= 16 (ResNets downsample 32x)")
        if self.epochs < 1:
            raise GanimeError(f"epochs {self.epochs}: must be >= 1")
        if self.batch_size < 2:
            raise GanimeError(f"batch_size {self.batch_size}: must be >= 2 (batch norm needs two samples per batch)")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise GanimeError(f"lr {self.lr}: must be a positive number such as 1e-3")
        if not 0.0 < self.backbone_lr_scale <= 1.0:
            raise GanimeError(f"backbone_lr_scale {self.backbone_lr_scale}: must be in (0, 1] (e.g. 0.1)")
        val, test = self.val_fraction, self.test_fraction
        if not 0.0 < val < 1.0:
            raise GanimeError(f"val_fraction {val}: must be between 0 and 1 (e.g. 0.2)")
        if not 0.0 <= test < 1.0:
            raise GanimeError(f"test_fraction {test}: must be >= 0 and below 1 (e.g. 0.2; 0 = no test split)")
        if val + test >= 1.0:
            raise GanimeError(f"val_fraction {val} + test_fraction {test}: must leave posts to train on (sum below 1)")
        if self.patience < 1:
            raise GanimeError(f"patience {self.patience}: must be >= 1 epoch")
        parse_threshold_rule(self.threshold_rule)
        check_arch(self.arch)
