"""Feature spaces and extractors: which features the flags ask for (:func:`resolve_features`), the network that
computes them (:func:`load_extractor`), and features of an image array or set in batches (:func:`extract_features`).

Feature spaces are never mixed (a reference, a run and a distance must share the space and the weights):

- ``inception``: the standard FID Inception-v3 (TF 2015-12-05 graph, pool3 2048-d) through torch-fidelity. Only this
  space yields a number called FID (``is_fid: true``), and only for weights known to be standard
  (:mod:`ganime_steps.inception`). Without any flag the standard weights are used.
- ``inception-unverified:<hash8>``: any other file that loads as torch-fidelity Inception weights; its Fréchet
  distance is reported as ``fd_inception_unverified_<hash8>``.
- ``classifier:<task>:<arch>``: pooled penultimate features of a ganime classifier checkpoint (``--classifier-model``),
  the fallback when no Inception weights are installed. Reported as ``fd_<slug>``, never called FID.

Features are computed with TF32 off (:func:`full_precision_matmul`), so CUDA and CPU numbers agree.
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ganime_steps import inception
from ganime_steps.common import GanimeError, file_digest, progress, torch_device

log = logging.getLogger(__name__)

INCEPTION_SPACE = inception.STANDARD_SPACE


def space_slug(space: str) -> str:
    """'classifier:chibi:resnet34' → 'classifier_chibi_resnet34' (for metric keys)."""
    return re.sub(r"[^a-z0-9]+", "_", space.lower()).strip("_")


def fd_key(space: str) -> str:
    return "fid" if space == INCEPTION_SPACE else f"fd_{space_slug(space)}"


def fd_label(space: str) -> str:
    return "FID" if space == INCEPTION_SPACE else f"Fréchet distance in {space} feature space"


@dataclass
class FeatureSpec:
    """Which features the flags ask for, resolved without building the network."""

    kind: str  # "inception" | "classifier"
    path: Path
    space: str
    is_fid: bool
    identity: str  # equal identities give the same features (all standard Inception files share one)
    file_sha256: str
    content_hash: str = ""
    origin: str = ""  # where the weights come from
    ckpt: dict | None = field(default=None, repr=False)

    @property
    def flag(self) -> str:
        return "--inception-weights" if self.kind == "inception" else "--classifier-model"


def resolve_features(inception_weights: Path | None, classifier_model: Path | None) -> FeatureSpec:
    """The feature space the flags ask for: Inception wins when given; neither → the standard Inception weights."""
    if inception_weights is None and classifier_model is not None:
        from ganime_steps.classifier import read_classifier  # lazily: Inception-only runs never import it

        path = Path(classifier_model)
        ckpt = read_classifier(path)
        space = f"classifier:{ckpt['task']}:{ckpt['arch']}"
        sha = file_digest(path, "sha256")
        return FeatureSpec("classifier", path, space, False, sha, sha, origin="ganime classifier", ckpt=ckpt)
    path = inception.default_weights() if inception_weights is None else Path(inception_weights)
    info = inception.identify(path)
    if not info.is_fid:
        log.warning(
            "%s: not a known standard Inception file (content %s); features are labelled %s, not FID",
            path,
            info.content_hash[:8],
            info.feature_space,
        )
    return FeatureSpec(
        "inception",
        path,
        info.feature_space,
        info.is_fid,
        info.identity,
        info.file_sha256,
        info.content_hash,
        info.origin,
    )


@contextlib.contextmanager
def full_precision_matmul():
    """TF32 off for metric computation (torch.backends.cuda.matmul and cudnn), as stylegan2-ada's metrics do, so
    CUDA features match CPU ones to float32 rounding (TF32 keeps 10 mantissa bits); the previous flags come back
    after, so training keeps its own settings."""
    import torch

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


class FeatureExtractor:
    """uint8 (B, H, W, 3) images → float32 (B, D) features in one named space."""

    def __init__(self, spec: FeatureSpec, model, device, image_size: int | None = None):
        self.spec = spec
        self.space = spec.space
        self.is_fid = spec.is_fid
        self.identity = spec.identity
        self.weights_sha256 = spec.file_sha256
        self.kind = spec.kind
        self.model = model
        self.device = device
        self.image_size = image_size
        self._mean = self._std = None
        if self.kind == "classifier":
            import torch

            from ganime_steps.classifier import norm_stats

            mean, std = norm_stats(model)  # the classifier's own input normalisation
            self._mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
            self._std = torch.tensor(std, device=device).view(1, 3, 1, 1)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8)).to(self.device)
        x = x.permute(0, 3, 1, 2).contiguous()
        with torch.inference_mode(), full_precision_matmul():
            if self.kind == "inception":
                feats = self.model(x)[0]  # torch-fidelity takes uint8 NCHW and resizes to 299 itself (TF1 bilinear)
            else:
                x = x.float() / 255.0
                if x.shape[-2:] != (self.image_size, self.image_size):
                    x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True)
                x = (x - self._mean) / self._std
                feats = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
                feats = feats.flatten(1)
        return feats.float().cpu().numpy()


def load_extractor(
    inception_weights: Path | None,
    classifier_model: Path | None,
    device: str = "auto",
    *,
    spec: FeatureSpec | None = None,
) -> FeatureExtractor:
    """Build the feature extractor the flags (or an already resolved ``spec``) ask for; never downloads anything."""
    spec = spec or resolve_features(inception_weights, classifier_model)
    dev = torch_device(device)
    if spec.kind == "inception":
        try:
            model = inception.torch_fidelity_extractor(spec.path)
        except Exception as exc:  # wrong file: missing/unexpected keys, wrong shapes
            raise GanimeError(
                f"--inception-weights {spec.path}: not torch-fidelity Inception-v3 weights ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200]}); use {inception.OFFICIAL_NAMES[0]} or "
                "`python -m ganime_steps.inception convert`"
            ) from exc
        return FeatureExtractor(spec, model.to(dev).eval(), dev)

    from ganime_steps.classifier import classifier_from_checkpoint

    ckpt = spec.ckpt
    # the normalisation stored by the classifier stage is in the model's pretrained_cfg, which the extractor reads
    model = classifier_from_checkpoint(ckpt, spec.path)
    return FeatureExtractor(spec, model.to(dev).eval(), dev, image_size=int(ckpt["image_size"]))


def extract_features(
    extractor: FeatureExtractor,
    images,
    *,
    batch_size: int,
    indices: np.ndarray | None = None,
    desc: str = "",
) -> np.ndarray:
    """Features of ``images[indices]`` in batches (memory-mapped arrays and :class:`ImageSet` read lazily)."""
    idx = np.arange(len(images)) if indices is None else np.asarray(indices)
    batches = [idx[i : i + batch_size] for i in range(0, len(idx), batch_size)]
    if desc:  # no inner progress when the caller already reports progress per chunk
        batches = progress(batches, total=len(batches), desc=desc)
    out = [extractor(images[b]) for b in batches]
    return np.concatenate(out).astype(np.float32, copy=False)
