"""Distances between two feature sets: Fréchet distance, KID and precision/recall (torch-fidelity's own functions on
our feature arrays), and :func:`feature_metrics`, all of them at once with the uncertainty of :mod:`.uncertainty`.

When a set has fewer samples than feature dimensions the Fréchet distance is computed exactly from the features (the
trace of sqrt(S1 S2) equals the nuclear norm of the centred cross-product), which is fast and stable on singular
covariances; a test checks it against torch-fidelity to 1e-6 relative.
"""

from __future__ import annotations

import math

import numpy as np

from ganime_steps.metrics.defaults import KID_SUBSET_SIZE, KID_SUBSETS, PR_BATCH, PR_K, PR_SAVE_RAM_ABOVE
from ganime_steps.metrics.result import Scores
from ganime_steps.metrics.uncertainty import bootstrap_intervals, bootstrap_resamples_for, frechet_distance_inf


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
    big = max(len(f), len(r)) > PR_SAVE_RAM_ABOVE
    out = prc_features_to_metric(f, r, prc_neighborhood=k, prc_batch_size=PR_BATCH, save_cpu_ram=big, verbose=False)
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
) -> Scores:
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
    fd = frechet_distance_features(fake, real)
    out = dict(fd=fd, kid_mean=kid_mean, kid_std=kid_std, kid_subsets=kid_subsets, kid_subset_size=kid_size)
    if pr:
        out["precision"], out["recall"] = precision_recall(fake, real, device=device)
        out["pr_k"] = PR_K
    n1, n2, dim = len(fake), len(real), fake.shape[1]
    if bootstrap is None:
        bootstrap = bootstrap_resamples_for(n1, n2, dim)
    if bootstrap:
        out.update(bootstrap_intervals(fake, real, fd=fd, kid=kid_mean, resamples=bootstrap, seed=seed))
    if fd_inf if fd_inf is not None else min(n1, n2) < dim:
        out["fd_inf"], out["fd_inf_sizes"] = frechet_distance_inf(fake, real, seed=seed)
    return Scores(**out, n_fake=n1, n_real=n2)
