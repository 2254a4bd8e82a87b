"""Stage evaluate: Fréchet distance, KID and precision/recall of a generator against cached reference features.

Two subcommands:

- ``reference``: features of (a seeded subset of) a packed dataset → ``.npz`` with mu, sigma, the features and the
  feature space. Built once and shared by every run that is compared (DESIGN §5).
- ``run``: generate images with a trained generator, extract features in the *same* space, write metrics JSON.

Feature spaces:

- ``inception``: the standard FID Inception-v3 (torch-fidelity's port of the TF graph, pool3 2048-d). Only this
  space yields a number called FID (``is_fid: true``).
- ``classifier:<task>:<arch>``: pooled penultimate features of a ganime classifier checkpoint, used when no Inception
  weights are available offline. Its Fréchet distance is reported as ``fd_<slug>`` and never called FID.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ganime_steps.common import GanimeError, atomic_path, progress, run_cli, torch_device, write_json

log = logging.getLogger(__name__)

INCEPTION_SPACE = "inception"
INCEPTION_DIM = 2048
# KID and precision/recall settings follow torch-fidelity's defaults so numbers are comparable with published ones.
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
PR_K = 3
MIN_SAMPLES = PR_K + 1  # k-NN radii need k other points; covariance needs >= 2
GEN_CHUNK = 500  # images generated per call: bounds memory independently of --n and --batch-size
CLASSIFIER_KEYS = ("arch", "image_size", "state_dict", "task")


# ----------------------------------------------------------------------------------------------------------------------
# metrics on feature arrays


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (float64) of (N, D) features."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need at least 2 feature rows of shape (N, D), got {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), numerically stable as in pytorch-fid.

    d² = |mu1 - mu2|² + Tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2)).
    """
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"shape mismatch: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    with warnings.catch_warnings():
        # scipy warns on singular products (fewer samples than dimensions); the checks below handle that case.
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all() or _large_imag(covmean):
            # Regularise both covariances, as pytorch-fid does.
            log.warning("Fréchet distance: sqrtm unstable; adding %g to the covariance diagonals", eps)
            offset = np.eye(len(mu1)) * eps
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if _large_imag(covmean):
            # pytorch-fid raises here; after a long generation a warning and the real part is the more useful outcome.
            log.warning("Fréchet distance: imaginary component %.3g kept out", float(np.max(np.abs(covmean.imag))))
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def _large_imag(m: np.ndarray) -> bool:
    return bool(np.iscomplexobj(m) and not np.allclose(np.diagonal(m).imag, 0, atol=1e-3))


def _mmd2_unbiased(x, y) -> float:
    """Unbiased MMD² with the cubic polynomial kernel k(a, b) = (a·b / d + 1)³ (Bińkowski et al. 2018).

    ``x``, ``y``: float64 torch tensors (m, d) of equal size.
    """
    d = x.shape[1]
    m = len(x)
    k_xx = (x @ x.T / d + 1.0) ** 3
    k_yy = (y @ y.T / d + 1.0) ** 3
    k_xy = (x @ y.T / d + 1.0) ** 3
    sum_xx = k_xx.sum() - k_xx.diagonal().sum()
    sum_yy = k_yy.sum() - k_yy.diagonal().sum()
    return float((sum_xx + sum_yy) / (m * (m - 1)) - 2.0 * k_xy.sum() / (m * m))


def kernel_inception_distance(
    fake: np.ndarray,
    real: np.ndarray,
    *,
    subsets: int = KID_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
    seed: int = 0,
    device: str = "cpu",
) -> tuple[float, float, int]:
    """KID as mean ± std of unbiased MMD² over random subsets (torch-fidelity's sampling order).

    ``subset_size`` is capped by both set sizes; returns (mean, std, subset_size used). Kernels run in float64 on
    ``device`` (a GPU makes the 100 x 1000² kernels cheap).
    """
    import torch

    size = min(subset_size, len(fake), len(real))
    if size < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(fake)} fake and {len(real)} real")
    f = torch.as_tensor(np.asarray(fake, dtype=np.float64), device=device)
    r = torch.as_tensor(np.asarray(real, dtype=np.float64), device=device)
    rng = np.random.RandomState(seed)
    mmds = np.empty(subsets)
    for i in range(subsets):
        fi = torch.as_tensor(rng.choice(len(fake), size, replace=False), device=device)
        ri = torch.as_tensor(rng.choice(len(real), size, replace=False), device=device)
        mmds[i] = _mmd2_unbiased(f[fi], r[ri])
    return float(mmds.mean()), float(mmds.std()), size


def precision_recall(
    fake: np.ndarray, real: np.ndarray, *, k: int = PR_K, device: str = "cpu", chunk: int = 2048
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN balls in feature space.

    precision: share of fake samples inside the k-NN ball of at least one real sample;
    recall: share of real samples inside the k-NN ball of at least one fake sample.
    """
    import torch

    if len(fake) < k + 1 or len(real) < k + 1:
        raise ValueError(f"precision/recall with k={k} needs more than {k} samples per set")
    f = torch.as_tensor(np.asarray(fake, dtype=np.float32), device=device)
    r = torch.as_tensor(np.asarray(real, dtype=np.float32), device=device)

    def radii(x: torch.Tensor) -> torch.Tensor:
        # k+1-th smallest distance: the nearest one is the point itself (distance 0).
        return torch.cat([torch.cdist(c, x).kthvalue(k + 1, dim=1).values for c in x.split(chunk)])

    def coverage(queries: torch.Tensor, centres: torch.Tensor, centre_radii: torch.Tensor) -> float:
        inside = [(torch.cdist(c, centres) <= centre_radii[None, :]).any(dim=1) for c in queries.split(chunk)]
        return torch.cat(inside).float().mean().item()

    return coverage(f, r, radii(r)), coverage(r, f, radii(f))


# ----------------------------------------------------------------------------------------------------------------------
# feature extractors


def space_slug(space: str) -> str:
    """'classifier:chibi:resnet34' → 'classifier_chibi_resnet34' (for metric keys)."""
    return re.sub(r"[^a-z0-9]+", "_", space.lower()).strip("_")


def fd_key(space: str) -> str:
    return "fid" if space == INCEPTION_SPACE else f"fd_{space_slug(space)}"


def fd_label(space: str) -> str:
    return "FID" if space == INCEPTION_SPACE else f"Fréchet distance in {space} feature space"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_classifier_checkpoint(path: Path) -> dict[str, Any]:
    """Load and validate a ganime classifier ``model.pt`` (dict with arch, image_size, state_dict, task, ...)."""
    import torch

    if not path.is_file():
        raise GanimeError(f"--classifier-model {path}: file not found; run the classifier stage first")
    try:
        # Our own artifact; it may hold plain Python objects besides tensors.
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        msg = f"--classifier-model {path}: not a readable torch file ({exc}); rerun the classifier stage"
        raise GanimeError(msg) from exc
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in CLASSIFIER_KEYS):
        have = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise GanimeError(
            f"--classifier-model {path}: expected a dict with keys {', '.join(CLASSIFIER_KEYS)}, got {have}; "
            "rerun the classifier stage"
        )
    return ckpt


def requested_space(inception_weights: Path | None, classifier_model: Path | None) -> tuple[str, dict | None]:
    """The feature space the flags ask for (Inception wins when given) and the classifier checkpoint if used."""
    if inception_weights is not None:
        if not Path(inception_weights).is_file():
            raise GanimeError(
                f"--inception-weights {inception_weights}: file not found; point it at torch-fidelity's "
                "weights-inception-2015-12-05-6726825d.pth, or omit it and pass --classifier-model for a "
                "classifier-space Fréchet distance"
            )
        return INCEPTION_SPACE, None
    if classifier_model is not None:
        ckpt = read_classifier_checkpoint(Path(classifier_model))
        return f"classifier:{ckpt['task']}:{ckpt['arch']}", ckpt
    raise GanimeError(
        "no feature space: pass --inception-weights PATH (standard FID) or --classifier-model model.pt "
        "(Fréchet distance in the classifier's feature space)"
    )


class FeatureExtractor:
    """uint8 (B, H, W, 3) images → float32 (B, D) features in one named space."""

    def __init__(self, space: str, model, device, weights_sha256: str, kind: str, image_size: int | None = None):
        self.space = space
        self.is_fid = space == INCEPTION_SPACE
        self.model = model
        self.device = device
        self.weights_sha256 = weights_sha256
        self.kind = kind
        self.image_size = image_size
        self._mean = self._std = None
        if kind == "classifier":
            import torch

            cfg = getattr(model, "pretrained_cfg", None) or {}
            self._mean = torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406)), device=device).view(1, 3, 1, 1)
            self._std = torch.tensor(cfg.get("std", (0.229, 0.224, 0.225)), device=device).view(1, 3, 1, 1)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8)).to(self.device)
        x = x.permute(0, 3, 1, 2).contiguous()
        with torch.inference_mode():
            if self.kind == "inception":
                feats = self.model(x)[0]  # torch-fidelity takes uint8 NCHW and resizes to 299 itself
            else:
                x = x.float() / 255.0
                if x.shape[-2:] != (self.image_size, self.image_size):
                    x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True)
                x = (x - self._mean) / self._std
                feats = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
                feats = feats.flatten(1)
        return feats.float().cpu().numpy()


def load_extractor(
    inception_weights: Path | None, classifier_model: Path | None, device: str = "auto"
) -> FeatureExtractor:
    """Build the feature extractor the flags ask for; never downloads anything."""
    space, ckpt = requested_space(inception_weights, classifier_model)
    dev = torch_device(device)
    if space == INCEPTION_SPACE:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        path = Path(inception_weights)
        try:
            model = FeatureExtractorInceptionV3(
                "inception-v3-compat", [str(INCEPTION_DIM)], feature_extractor_weights_path=str(path)
            )
        except Exception as exc:  # wrong file: pickle errors, missing/unexpected keys
            raise GanimeError(
                f"--inception-weights {path}: not torch-fidelity Inception-v3 weights ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200]}); use weights-inception-2015-12-05-6726825d.pth"
            ) from exc
        return FeatureExtractor(space, model.to(dev).eval(), dev, _sha256(path), "inception")

    import timm

    path = Path(classifier_model)
    try:
        model = timm.create_model(ckpt["arch"], pretrained=False, num_classes=1)
        model.load_state_dict(ckpt["state_dict"])
    except Exception as exc:
        raise GanimeError(
            f"--classifier-model {path}: cannot rebuild timm '{ckpt['arch']}' from its state_dict "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); rerun the classifier stage"
        ) from exc
    # Normalisation stored by the classifier stage wins over the architecture's defaults.
    if "mean" in ckpt and "std" in ckpt:
        model.pretrained_cfg = {**(model.pretrained_cfg or {}), "mean": tuple(ckpt["mean"]), "std": tuple(ckpt["std"])}
    return FeatureExtractor(
        space, model.to(dev).eval(), dev, _sha256(path), "classifier", image_size=int(ckpt["image_size"])
    )


def extract_features(
    extractor: FeatureExtractor,
    images: np.ndarray,
    *,
    batch_size: int,
    indices: np.ndarray | None = None,
    desc: str = "",
) -> np.ndarray:
    """Features of ``images[indices]`` in batches (works on memory-mapped arrays)."""
    idx = np.arange(len(images)) if indices is None else np.asarray(indices)
    batches = [idx[i : i + batch_size] for i in range(0, len(idx), batch_size)]
    if desc:  # no inner progress when the caller already reports progress per chunk
        batches = progress(batches, total=len(batches), desc=desc)
    out = [extractor(images[b]) for b in batches]
    return np.concatenate(out).astype(np.float32, copy=False)


def resize_images(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Lanczos-resize uint8 (N, H, W, 3) images to (N, size[0], size[1], 3), like the dataset packer."""
    from PIL import Image

    h, w = size
    if images.shape[1:3] == (h, w):
        return images
    out = np.empty((len(images), h, w, 3), dtype=np.uint8)
    for i, im in enumerate(images):
        out[i] = np.asarray(Image.fromarray(im).resize((w, h), Image.Resampling.LANCZOS))
    return out


# ----------------------------------------------------------------------------------------------------------------------
# reference


@dataclass
class ReferenceSummary:
    out: Path
    data: Path
    feature_space: str
    is_fid: bool
    n: int
    n_available: int
    dim: int


def load_packed(path: Path) -> np.ndarray:
    """Memory-map a packed dataset, checking it is uint8 (N, H, W, 3)."""
    if not path.is_file():
        raise GanimeError(f"--data {path}: file not found; run the pack stage for this dataset first")
    try:
        arr = np.load(path, mmap_mode="r")
    except Exception as exc:
        raise GanimeError(f"--data {path}: not a readable .npy array ({exc}); rerun the pack stage") from exc
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3 or len(arr) == 0:
        raise GanimeError(
            f"--data {path}: expected a non-empty uint8 array (N, H, W, 3), got {arr.dtype} {arr.shape}; "
            "rerun the pack stage"
        )
    return arr


def run_reference(
    *,
    data: Path,
    out: Path,
    n: int,
    inception_weights: Path | None = None,
    classifier_model: Path | None = None,
    seed: int = 0,
    batch_size: int = 64,
    device: str = "auto",
) -> ReferenceSummary:
    """Features of up to ``n`` images of the packed dataset (seeded random subset) → ``out`` .npz."""
    if n < MIN_SAMPLES:
        raise GanimeError(f"--n {n}: need at least {MIN_SAMPLES} reference images for statistics and k-NN radii")
    if batch_size < 1:
        raise GanimeError(f"--batch-size {batch_size}: must be at least 1")
    images = load_packed(Path(data))
    if len(images) < MIN_SAMPLES:
        raise GanimeError(f"--data {data}: only {len(images)} images; need at least {MIN_SAMPLES}")
    extractor = load_extractor(inception_weights, classifier_model, device)
    take = min(n, len(images))
    if take < n:
        log.warning("%s holds %d images, fewer than --n %d; using all of them", data, len(images), n)
    # Sorted indices keep memory-mapped reads sequential.
    indices = np.sort(np.random.default_rng(seed).choice(len(images), size=take, replace=False))
    feats = extract_features(extractor, images, batch_size=batch_size, indices=indices, desc="reference features")
    mu, sigma = feature_stats(feats)
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                mu=mu,
                sigma=sigma,
                features=feats,
                indices=indices,
                feature_space=np.array(extractor.space),
                is_fid=np.array(extractor.is_fid),
                extractor_sha256=np.array(extractor.weights_sha256),
                n=np.array(take),
                seed=np.array(seed),
                data=np.array(str(data)),
                data_shape=np.array(images.shape, dtype=np.int64),
            )
    log.info("reference: %d images of %s in %s space → %s", take, data, extractor.space, out)
    return ReferenceSummary(Path(out), Path(data), extractor.space, extractor.is_fid, take, len(images), feats.shape[1])


REFERENCE_KEYS = ("mu", "sigma", "features", "feature_space", "is_fid", "extractor_sha256", "n", "data", "data_shape")


def load_reference(path: Path) -> dict[str, Any]:
    """Read a reference .npz written by :func:`run_reference`; plain Python values for the scalar fields."""
    rerun = "rebuild it with `python -m ganime_steps.evaluate reference`"
    if not path.is_file():
        raise GanimeError(f"--reference {path}: file not found; {rerun}")
    try:
        with np.load(path, allow_pickle=False) as z:
            ref = {k: z[k] for k in z.files}
    except Exception as exc:
        raise GanimeError(f"--reference {path}: not a readable .npz ({exc}); {rerun}") from exc
    missing = [k for k in REFERENCE_KEYS if k not in ref]
    if missing:
        raise GanimeError(f"--reference {path}: missing {', '.join(missing)}; {rerun}")
    for key in ("feature_space", "extractor_sha256", "data"):
        ref[key] = str(ref[key])
    ref["is_fid"] = bool(ref["is_fid"])
    ref["n"] = int(ref["n"])
    ref["data_shape"] = tuple(int(v) for v in ref["data_shape"])
    return ref


# ----------------------------------------------------------------------------------------------------------------------
# run


@dataclass
class EvaluateSummary:
    out: Path
    feature_space: str
    is_fid: bool
    fd: float
    kid_mean: float
    kid_std: float
    precision: float
    recall: float
    n_fake: int
    n_real: int


def run_evaluate(
    *,
    generator: Path,
    reference: Path,
    out: Path,
    n: int,
    seed: int = 0,
    batch_size: int = 64,
    device: str = "auto",
    inception_weights: Path | None = None,
    classifier_model: Path | None = None,
    truncation: float = 1.0,
) -> EvaluateSummary:
    """Generate ``n`` images, extract features in the reference's space, write metrics JSON to ``out``."""
    if n < MIN_SAMPLES:
        raise GanimeError(f"--n {n}: need at least {MIN_SAMPLES} generated images (10000 is the usual FID setting)")
    if batch_size < 1:
        raise GanimeError(f"--batch-size {batch_size}: must be at least 1")
    ref = load_reference(Path(reference))
    space, _ = requested_space(inception_weights, classifier_model)
    if space != ref["feature_space"]:
        raise GanimeError(
            f"--reference {reference}: built in feature space '{ref['feature_space']}' but this run asks for "
            f"'{space}'; pass the same --inception-weights/--classifier-model as the reference, or rebuild it"
        )
    extractor = load_extractor(inception_weights, classifier_model, device)
    if extractor.weights_sha256 != ref["extractor_sha256"]:
        flag = "--inception-weights" if extractor.is_fid else "--classifier-model"
        raise GanimeError(
            f"--reference {reference}: built with different {space} weights than {flag} gives "
            "(file contents differ); rebuild the reference so every run is compared in the same space"
        )
    if not Path(generator).is_file():
        raise GanimeError(f"--generator {generator}: file not found; run the train stage for this run first")

    from ganime_steps import gan

    G = gan.load_generator(Path(generator), device=str(extractor.device))
    ref_hw = tuple(ref["data_shape"][1:3])
    feats = []
    n_chunks = math.ceil(n / GEN_CHUNK)
    for i in progress(range(n_chunks), total=n_chunks, desc="generate + features"):
        count = min(GEN_CHUNK, n - i * GEN_CHUNK)
        # One seed per fixed-size chunk: samples depend on --seed and --n only, not on --batch-size.
        chunk_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
        images = gan.generate_images(G, count, chunk_seed, batch_size=batch_size, truncation=truncation)
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise GanimeError(f"--generator {generator}: produced {images.dtype} {images.shape}, not uint8 NHWC RGB")
        if i == 0 and images.shape[1:3] != ref_hw:
            log.info("resizing generated %s images to the reference size %s", images.shape[1:3], ref_hw)
        feats.append(extract_features(extractor, resize_images(images, ref_hw), batch_size=batch_size))
    fake = np.concatenate(feats)
    real = ref["features"]
    if fake.shape[1] != real.shape[1]:
        raise GanimeError(
            f"--reference {reference}: {real.shape[1]}-d features, but the extractor gives {fake.shape[1]}"
        )

    mu, sigma = feature_stats(fake)
    fd = frechet_distance(mu, sigma, ref["mu"], ref["sigma"])
    kid_mean, kid_std, kid_size = kernel_inception_distance(fake, real, seed=seed, device=str(extractor.device))
    precision, recall = precision_recall(fake, real, device=str(extractor.device))
    metrics = {
        "feature_space": space,
        "is_fid": extractor.is_fid,
        "fd": fd,
        fd_key(space): fd,
        "fd_key": fd_key(space),
        "fd_label": fd_label(space),
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        "kid_subsets": KID_SUBSETS,
        "kid_subset_size": kid_size,
        "precision": precision,
        "recall": recall,
        "pr_k": PR_K,
        "n_fake": len(fake),
        "n_real": len(real),
        "generator": str(generator),
        "reference": str(reference),
        "reference_data": ref["data"],
        "image_size": list(ref_hw),
        "seed": seed,
        "truncation": truncation,
    }
    write_json(out, metrics)
    log.info(
        "%s = %.4f, KID = %.5f ± %.5f, P = %.3f, R = %.3f", fd_label(space), fd, kid_mean, kid_std, precision, recall
    )
    return EvaluateSummary(
        Path(out), space, extractor.is_fid, fd, kid_mean, kid_std, precision, recall, len(fake), len(real)
    )


# ----------------------------------------------------------------------------------------------------------------------
# CLI


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=int, required=True, help="number of images (reference: at most this many, sampled)")
    p.add_argument("--seed", type=int, default=0, help="seed for the reference subset / generated latents and KID")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    p.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--inception-weights",
        type=Path,
        help="torch-fidelity Inception-v3 weights (.pth); gives the standard FID. Never downloaded",
    )
    p.add_argument(
        "--classifier-model",
        type=Path,
        help="ganime classifier model.pt; used when no Inception weights are given (Fréchet distance, not FID)",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ganime_steps.evaluate", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="{reference,run}")
    r = sub.add_parser("reference", help="cache reference features of a packed dataset (.npz)")
    r.add_argument("--data", type=Path, required=True, help="packed dataset: uint8 .npy array (N, H, W, 3)")
    _add_common(r)
    r.add_argument("--out", type=Path, required=True, help="output .npz (mu, sigma, features, feature_space, ...)")
    e = sub.add_parser("run", help="evaluate a generator against a reference; writes metrics JSON")
    e.add_argument("--generator", type=Path, required=True, help="generator checkpoint written by the train stage")
    e.add_argument("--reference", type=Path, required=True, help="reference .npz from `evaluate reference`")
    _add_common(e)
    e.add_argument("--truncation", type=float, default=1.0, help="truncation psi for StyleGAN (1.0 = none, for FID)")
    e.add_argument("--out", type=Path, required=True, help="output metrics .json")
    for sp in (r, e):  # also accept -v after the subcommand; SUPPRESS keeps a top-level -v from being reset
        sp.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
    return p


def _handle(a: argparse.Namespace) -> ReferenceSummary | EvaluateSummary:
    common = dict(
        out=a.out,
        n=a.n,
        seed=a.seed,
        batch_size=a.batch_size,
        device=a.device,
        inception_weights=a.inception_weights,
        classifier_model=a.classifier_model,
    )
    if a.command == "reference":
        return run_reference(data=a.data, **common)
    return run_evaluate(generator=a.generator, reference=a.reference, truncation=a.truncation, **common)


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), _handle, argv)


if __name__ == "__main__":
    raise SystemExit(main())
