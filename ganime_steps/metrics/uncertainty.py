"""Uncertainty within a run, from the features already computed (no extra feature pass; seeded, so the same inputs
give the same numbers).

``fd_ci`` and ``kid_ci`` are 95% basic bootstrap intervals from resampling both feature sets
(:func:`bootstrap_resamples_for`: 200 when a set is smaller than the dimension, 20 otherwise, see
:class:`FrechetParts`); where a set is smaller than the dimension ``fd_inf`` is FID∞ (Chong & Forsyth 2020): the
Fréchet distance of random subsets of 50%, 60%, ..., 100% of both sets (``fd_inf_sizes``: [n_fake, n_real] each; 10
subsets per fraction), fitted linearly in 1/N and extrapolated to 1/N → 0.
"""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np

from ganime_steps.metrics.defaults import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_RESAMPLES_LARGE,
    BOOTSTRAP_STREAM,
    CI_LEVEL,
    FD_INF_DRAWS,
    FD_INF_FRACTIONS,
    FD_INF_STREAM,
    GRAM_CHUNK,
    KID_BLOCK,
    QUANTILE_MIN_RESAMPLES,
)


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
