"""Tests of ganime_steps.metrics on feature arrays and records, no extractor: the distances against torch-fidelity,
the bootstrap intervals and FID∞, the one result record and its file formats, the one .npy image reader, and what
each module may import (the evaluate stage's own tests, through its CLI, are tests/test_evaluate.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ganime_steps import codedeps
from ganime_steps.common import GanimeError
from ganime_steps.metrics.defaults import BOOTSTRAP_RESAMPLES, BOOTSTRAP_RESAMPLES_LARGE, BOOTSTRAP_STREAM, PR_K
from ganime_steps.metrics.distances import (
    feature_metrics,
    feature_stats,
    frechet_distance,
    frechet_distance_features,
    kernel_inception_distance,
    precision_recall,
)
from ganime_steps.metrics.features import fd_key, fd_label
from ganime_steps.metrics.images import ImageSet, load_packed
from ganime_steps.metrics.result import MetricResult, Scores, Side, Weights
from ganime_steps.metrics.uncertainty import (
    FrechetParts,
    bootstrap_intervals,
    frechet_distance_inf,
    kid_weighted,
    resample_weights,
)

torch.set_num_threads(1)


# ----------------------------------------------------------------------------------------------------------------------
# ----------------------------------------------------------------------------------------------------------------------
# metric maths


def test_frechet_identical_gaussians_is_zero():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 6))
    sigma = a @ a.T + np.eye(6)
    mu = rng.normal(size=6)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-6)


def test_frechet_known_value_diagonal_and_rotated():
    """Diagonal covariances: |mu1 - mu2|^2 + sum (sqrt s1 - sqrt s2)^2 = (1 + 0 + 6.25) + (4 + 1 + 0) = 12.25 by hand;
    the distance is invariant when both Gaussians are rotated (full, non-diagonal covariances)."""
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    s1, s2 = np.diag([1.0, 4.0, 0.25]), np.diag([9.0, 1.0, 0.25])
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(12.25, rel=1e-9)
    rot, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))
    r1, r2 = rot @ s1 @ rot.T, rot @ s2 @ rot.T
    assert abs(r1[0, 1]) > 0.01  # really not diagonal
    assert frechet_distance(rot @ mu1, r1, rot @ mu2, r2) == pytest.approx(12.25, rel=1e-6)


def test_frechet_matches_torch_fidelity_and_survives_singular_covariances():
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(50, 8)), rng.normal(loc=0.3, scale=1.5, size=(60, 8))
    (m1, s1), (m2, s2) = feature_stats(x), feature_stats(y)
    ref = fid_statistics_to_metric({"mu": m1, "sigma": s1}, {"mu": m2, "sigma": s2}, False)
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(ref["frechet_inception_distance"], rel=1e-6)
    # Fewer samples than dimensions: rank-deficient covariances must still give a finite, non-negative value.
    (m1, s1), (m2, s2) = feature_stats(x[:5]), feature_stats(y[:5])
    d = frechet_distance(m1, s1, m2, s2)
    assert np.isfinite(d) and d > 0


def test_kid_zero_for_same_distribution_positive_for_shifted_and_matches_torch_fidelity():
    from torch_fidelity.metric_kid import kid_features_to_metric

    rng = np.random.default_rng(2)
    real = rng.normal(size=(200, 16))
    same = rng.normal(size=(200, 16))
    shifted = rng.normal(loc=1.0, size=(200, 16))
    kid_same, std_same, size = kernel_inception_distance(same, real, subsets=20, subset_size=100, seed=3)
    kid_shift, _, _ = kernel_inception_distance(shifted, real, subsets=20, subset_size=100, seed=3)
    assert size == 100
    assert abs(kid_same) < 0.02 and std_same >= 0
    assert kid_shift > 0.5 and kid_shift > 20 * abs(kid_same)
    tf = kid_features_to_metric(
        torch.from_numpy(shifted), torch.from_numpy(real), kid_subsets=20, kid_subset_size=100, rng_seed=3
    )
    assert kid_shift == pytest.approx(tf["kernel_inception_distance_mean"], rel=1e-6)
    # Sets smaller than the subset size use half the smaller set, so the std over subsets is a real spread.
    small_mean, small_std, small_size = kernel_inception_distance(shifted[:30], real, subsets=20, seed=0)
    assert small_size == 15 and small_std > 0 and small_mean > 0.5


def test_precision_recall_identical_disjoint_and_matches_torch_fidelity():
    from torch_fidelity.metric_prc import prc_features_to_metric

    rng = np.random.default_rng(4)
    real = rng.normal(size=(80, 8)).astype(np.float32)
    assert precision_recall(real.copy(), real) == (1.0, 1.0)
    far = real + 100.0
    assert precision_recall(far, real) == (0.0, 0.0)
    # A generator that covers only half of the real modes: high precision, lower recall.
    half = rng.normal(size=(80, 8)).astype(np.float32) * 0.3 + 0.5
    p, r = precision_recall(half, real)
    tf = prc_features_to_metric(torch.from_numpy(half), torch.from_numpy(real), prc_neighborhood=3, prc_batch_size=64)
    assert (p, r) == pytest.approx((tf["precision"], tf["recall"]))
    assert p > r


def test_space_names():
    assert fd_key("inception") == "fid" and fd_label("inception") == "FID"
    assert fd_key("classifier:chibi:resnet34") == "fd_classifier_chibi_resnet34"
    assert "FID" not in fd_label("classifier:chibi:resnet34")


def test_frechet_from_features_matches_torch_fidelity_when_singular_and_full_rank():
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    rng = np.random.default_rng(5)
    for n1, n2, d in [(30, 45, 200), (300, 250, 16)]:  # fewer samples than dimensions (exact low-rank path), and more
        a = rng.normal(size=(n1, d))
        b = rng.normal(loc=0.2, scale=1.3, size=(n2, d))
        (m1, s1), (m2, s2) = feature_stats(a), feature_stats(b)
        ref = fid_statistics_to_metric({"mu": m1, "sigma": s1}, {"mu": m2, "sigma": s2}, False)
        got = frechet_distance_features(a, b)
        assert got == pytest.approx(ref["frechet_inception_distance"], rel=1e-6)
        assert frechet_distance(m1, s1, m2, s2) == pytest.approx(got, rel=1e-6)
    assert frechet_distance_features(a, a.copy()) == pytest.approx(0.0, abs=1e-9)


# ----------------------------------------------------------------------------------------------------------------------
# uncertainty within a run: bootstrap intervals, FID∞


def _two_gaussians(rng: np.random.Generator, d: int):
    """Sampler of two different d-dimensional Gaussians, and their true Fréchet distance."""
    a = rng.normal(size=(d, d)) / np.sqrt(d)
    mu2 = rng.normal(size=d) * 0.3

    def draw(r: np.random.Generator, n1: int, n2: int):
        return r.normal(size=(n1, d)), r.normal(size=(n2, d)) @ a.T * 1.2 + mu2

    return draw, frechet_distance(np.zeros(d), np.eye(d), mu2, 1.44 * a @ a.T)


@pytest.mark.parametrize("n1, n2, d", [(30, 45, 200), (50, 20, 64), (120, 100, 64), (300, 250, 16)])
def test_weighted_frechet_matches_frechet_distance_on_both_routes(n1, n2, d):
    """FrechetParts (Gram route when a set is smaller than d: the nuclear norm of the centred cross-product; else the
    d×d route) against torch-fidelity's formula on statistics, for the whole sets and for resamples written out."""
    rng = np.random.default_rng(n1 + d)
    x, y = rng.normal(size=(n1, d)) + 3, rng.normal(loc=0.2, scale=1.3, size=(n2, d)) + 3
    parts = FrechetParts(x, y)
    assert parts.gram == (min(n1, n2) < d)
    idx = [(rng.integers(0, n1, n1), rng.integers(0, n2, n2)) for _ in range(3)]
    w1 = np.stack([np.ones(n1)] + [np.bincount(i, minlength=n1) for i, _ in idx], axis=1)
    w2 = np.stack([np.ones(n2)] + [np.bincount(j, minlength=n2) for _, j in idx], axis=1)
    expected = [frechet_distance(*feature_stats(x), *feature_stats(y))]
    expected += [frechet_distance(*feature_stats(x[i]), *feature_stats(y[j])) for i, j in idx]
    np.testing.assert_allclose(parts.fd(w1, w2), expected, rtol=1e-6)


def test_weighted_kid_is_the_unbiased_estimate_without_copies_of_one_sample():
    from torch_fidelity.metric_kid import kernel_mmd

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 16)), rng.normal(loc=0.3, size=(60, 16))
    opts = dict(kid_kernel="poly", kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None, kid_kernel_poly_coef0=1)
    whole = kid_weighted(x, y[:50], np.ones((50, 1)), np.ones((50, 1)))[0]
    assert whole == pytest.approx(kernel_mmd(x, y[:50], **opts), rel=1e-9)  # torch-fidelity's (equal sizes)
    i, j = rng.integers(0, 50, 50), rng.integers(0, 60, 60)
    got = kid_weighted(x, y, np.bincount(i, minlength=50)[:, None], np.bincount(j, minlength=60)[:, None])[0]
    k = lambda a, b: (a @ b.T / 16 + 1) ** 3  # noqa: E731
    xx = k(x[i], x[i])[i[:, None] != i[None, :]].mean()  # pairs of two different samples only
    yy = k(y[j], y[j])[j[:, None] != j[None, :]].mean()
    assert got == pytest.approx(xx + yy - 2 * k(x[i], y[j]).mean(), rel=1e-9)


def _coverage(draw, n1: int, n2: int, reps: int, resamples: int, seed: int):
    """How often the intervals hold the mean of the estimator at these N (FD and KID), and how often the plain
    percentile interval of the FD replicates does."""
    rng = np.random.default_rng(seed)
    ones1, ones2 = np.ones((n1, 1)), np.ones((n2, 1))
    pop = [
        (FrechetParts(f, r).fd(ones1, ones2)[0], kid_weighted(f, r, ones1, ones2)[0])
        for f, r in (draw(rng, n1, n2) for _ in range(300))
    ]
    fd_pop, kid_pop = np.mean(pop, axis=0)
    hits = {"fd": 0, "kid": 0, "fd_percentile": 0}
    for s in range(reps):
        f, r = draw(rng, n1, n2)
        fd, kid = FrechetParts(f, r).fd(ones1, ones2)[0], kid_weighted(f, r, ones1, ones2)[0]
        ci = bootstrap_intervals(f, r, fd=fd, kid=kid, resamples=resamples, seed=s)
        hits["fd"] += ci["fd_ci"][0] <= fd_pop <= ci["fd_ci"][1]
        hits["kid"] += ci["kid_ci"][0] <= kid_pop <= ci["kid_ci"][1]
        # the percentile interval of the same replicates (what the centring corrects)
        same = np.random.default_rng([s, BOOTSTRAP_STREAM])
        w1, w2 = resample_weights(same, n1, resamples), resample_weights(same, n2, resamples)
        lo, hi = np.quantile(FrechetParts(f, r).fd(w1, w2), [0.025, 0.975])
        hits["fd_percentile"] += lo <= fd_pop <= hi
    return hits


def test_bootstrap_intervals_cover_the_estimators_mean():
    """Simulation on Gaussians: the 95% intervals hold the mean of the estimator at the run's N (what a rerun with
    fresh samples would scatter around) in most of 30 repetitions, on both routes; the plain percentile interval of the
    FD replicates does not (resampling shifts a small-N FID up). Measured: Gram route (40 vs 40, 64-d, 200 resamples)
    FD 30/30, KID 30/30, percentile 0/30; d×d route (80 vs 60, 8-d, 20 resamples, normal interval) FD 30/30,
    KID 27/30."""
    draw, _ = _two_gaussians(np.random.default_rng(7), 64)
    hits = _coverage(draw, 40, 40, reps=30, resamples=200, seed=1)
    assert hits["fd"] >= 24 and hits["kid"] >= 24, hits
    assert hits["fd_percentile"] <= 10, hits
    draw, _ = _two_gaussians(np.random.default_rng(8), 8)
    hits = _coverage(draw, 80, 60, reps=30, resamples=BOOTSTRAP_RESAMPLES_LARGE, seed=2)
    assert hits["fd"] >= 24 and hits["kid"] >= 24, hits


def test_bootstrap_and_fd_inf_are_deterministic():
    draw, _ = _two_gaussians(np.random.default_rng(0), 32)
    f, r = draw(np.random.default_rng(1), 20, 30)
    a = feature_metrics(f.astype(np.float32), r.astype(np.float32), seed=3, kid_subset_size=10)
    b = feature_metrics(f.astype(np.float32), r.astype(np.float32), seed=3, kid_subset_size=10)
    assert a == b and a.bootstrap_resamples == BOOTSTRAP_RESAMPLES and (a.n_fake, a.n_real) == (20, 30)
    assert a.fd_ci[0] < a.fd < a.fd_ci[1] and a.kid_ci[0] < a.kid_mean < a.kid_ci[1]
    assert a.fd_inf_sizes == [[10, 15], [12, 18], [14, 21], [16, 24], [18, 27], [20, 30]]
    c = feature_metrics(f.astype(np.float32), r.astype(np.float32), seed=4, kid_subset_size=10)
    assert c.fd == a.fd and c.fd_ci != a.fd_ci and c.fd_inf != a.fd_inf  # the seed is used
    # more samples than dimensions: fewer resamples (the d×d route), no FID∞ unless asked for
    big = feature_metrics(*draw(np.random.default_rng(2), 40, 40), pr=False)
    assert big.bootstrap_resamples == BOOTSTRAP_RESAMPLES_LARGE and big.fd_inf is None
    assert "fd_ci" not in feature_metrics(f, r, bootstrap=0, fd_inf=False, pr=False).to_json()


def test_fd_inf_is_closer_to_the_true_distance_than_fid_at_small_n():
    """N = 100 per set in 64-d (truth 31.7): the plain Fréchet distance is biased up by 15-22; FID∞ from subsets of
    the same features lands within 1.3-4.4 (these 4 draws; measured error ratio FID∞ / plain 0.07-0.22)."""
    draw, truth = _two_gaussians(np.random.default_rng(3), 64)
    rng = np.random.default_rng(4)
    errors = []
    for s in range(4):
        f, r = draw(rng, 100, 100)
        fd_inf, sizes = frechet_distance_inf(f, r, seed=s)
        errors.append((abs(frechet_distance_features(f, r) - truth), abs(fd_inf - truth)))
    assert sizes[0] == [50, 50] and sizes[-1] == [100, 100]
    plain, inf = np.array(errors).T
    assert plain.min() > 10 and (inf < 0.35 * plain).all() and inf.mean() < 0.2 * plain.mean(), errors


# ----------------------------------------------------------------------------------------------------------------------
# the result record: one type in Python, each producer's keys on disk


def _scores(**extra) -> Scores:
    return Scores(
        fd=2.5, kid_mean=0.01, kid_std=0.002, kid_subsets=100, kid_subset_size=8, n_fake=16, n_real=20, **extra
    )


def test_scores_json_keeps_the_written_order_and_leaves_out_what_was_not_computed():
    bare = _scores()
    assert list(bare.to_json()) == ["fd", "kid_mean", "kid_std", "kid_subsets", "kid_subset_size", "n_fake", "n_real"]
    full = _scores(precision=1.0, recall=0.5, pr_k=PR_K, fd_ci=[2.0, 3.0], kid_ci=[0.0, 0.02], bootstrap_resamples=200)
    assert list(full.to_json())[5:] == [
        "precision",
        "recall",
        "pr_k",
        "n_fake",
        "n_real",
        "fd_ci",
        "kid_ci",
        "bootstrap_resamples",
    ]


SPACE = "classifier:chibi:resnet18"
REF = Side("refs/shared.npz", "packs/A_32.npy", [32, 32], "c0ffee")
WEIGHTS = Weights("clf/model.pt", "5ha", "5ha", "ganime classifier")


def test_each_producer_writes_its_file_format():
    """The keys files on disk have (metrics.json, the data-FID file, compare's stdout, metrics.jsonl rows) are
    unchanged: report.py and comparison.py read them. Sizes are scores.n_fake/n_real in Python, whatever the keys."""
    s = _scores(precision=1.0, recall=0.5, pr_k=PR_K)
    key = fd_key(SPACE)
    block = MetricResult(kind="run", feature_space=SPACE, is_fid=False, scores=s, real=REF, seed=1)
    gold = MetricResult(
        kind="run", feature_space=SPACE, is_fid=False, scores=s, real=Side("g.npz", "g.npy", [32, 32], "b")
    )
    run = MetricResult(
        kind="run",
        feature_space=SPACE,
        is_fid=False,
        scores=s,
        real=REF,
        fake=Side("runs/r/generator.pt"),
        seed=1,
        weights=WEIGHTS,
        truncation=1.0,
        references={"shared": block, "gold": gold},
    )
    m = run.to_json()
    scores = set(s.to_json())
    reference = {key, *scores, "reference", "reference_sha256", "reference_data", "reference_dataset", "image_size"}
    assert set(m["references"]["shared"]) == reference and m["references"]["gold"]["reference"] == "g.npz"
    assert set(m) == reference | {
        "feature_space",
        "is_fid",
        "fd_key",
        "fd_label",
        "primary_reference",
        "reference_order",
        "references",
        "weights",
        "generator",
        "seed",
        "truncation",
    }
    assert (m["primary_reference"], m["reference_order"], m[key], m["image_size"]) == (
        "shared",
        ["shared", "gold"],
        2.5,
        [32, 32],
    )
    assert m["weights"] == {"path": "clf/model.pt", "sha256": "5ha", "identity": "5ha", "origin": "ganime classifier"}
    assert run.summary()["references"] == ["shared", "gold"] and run.summary()["n_fake"] == 16

    a = Side("refs/A.npz", "packs/A.npy", [32, 32], dataset="A")
    d = MetricResult(kind="distance", feature_space=SPACE, is_fid=False, scores=s, fake=a, real=REF, seed=0).to_json()
    assert set(d) == {key, *scores, "feature_space", "is_fid", "fd_key", "fd_label", "seed"} | {
        "n_a",
        "n_b",
        "a",
        "b",
        "a_data",
        "b_data",
        "a_dataset",
        "b_dataset",
        "image_size_a",
        "image_size_b",
    }
    assert (d["n_a"], d["n_b"], d["a_data"], d["b"]) == (16, 20, "packs/A.npy", "refs/shared.npz")
    assert d["a_dataset"] == "A"

    real, fake = Side("real.npy", image_size=[32, 32]), Side("fakes/", image_size=[64, 64])
    c = MetricResult(
        kind="compare", feature_space=SPACE, is_fid=False, scores=s, real=real, fake=fake, seed=0, weights=WEIGHTS
    )
    cj = c.to_json()
    assert set(cj) == {key, *scores, "fid", "feature_space", "is_fid", "fd_key", "fd_label", "seed"} | {
        "real",
        "fake",
        "real_image_size",
        "fake_image_size",
        "weights",
        "weights_origin",
    }
    assert cj["fid"] is None and cj["weights"] == "clf/model.pt" and cj["fake_image_size"] == [64, 64]
    c.is_fid, c.feature_space = True, "inception"
    assert c.to_json()["fid"] == 2.5 and fd_key("inception") == "fid"

    row = MetricResult(kind="snapshot", feature_space=SPACE, is_fid=False, scores=s, real=REF).to_json()
    assert list(row) == ["feature_space", "is_fid", "fd_key", key, *s.to_json(), "reference_sha256"]  # column order
    with pytest.raises(ValueError, match="kind"):
        MetricResult(kind="data", feature_space=SPACE, is_fid=False, scores=s, real=REF)


# ----------------------------------------------------------------------------------------------------------------------
# the one .npy image reader


def test_load_packed_is_the_one_npy_reader(tmp_path):
    good = tmp_path / "pack.npy"
    np.save(good, np.zeros((3, 8, 8, 3), np.uint8))
    arr = load_packed(good)
    assert isinstance(arr, np.memmap) and arr.shape == (3, 8, 8, 3)
    np.save(tmp_path / "f.npy", np.zeros((3, 8, 8, 3), np.float32))
    np.save(tmp_path / "empty.npy", np.zeros((0, 8, 8, 3), np.uint8))
    (tmp_path / "junk.npy").write_bytes(b"not an array")
    np.savez(tmp_path / "z.npy", a=np.zeros(2))  # np.load gives an NpzFile for this: refused, not a crash
    (tmp_path / "z.npy.npz").rename(tmp_path / "z.npy")
    cases = [
        ("missing.npy", "file not found; run the pack stage for this dataset first"),
        ("junk.npy", "not a readable .npy array"),
        ("f.npy", "expected a non-empty uint8 array (N, H, W, 3), got float32 (3, 8, 8, 3); rerun the pack stage"),
        ("empty.npy", "got uint8 (0, 8, 8, 3); rerun the pack stage"),
        ("z.npy", "expected a non-empty uint8 array"),
    ]
    for name, message in cases:
        path = tmp_path / name
        with pytest.raises(GanimeError, match=f"^--data {path}: .*") as info:
            load_packed(path)
        assert message in str(info.value)
    # another flag, no flag, no fix: each caller's wording from the one reader
    with pytest.raises(GanimeError) as info:
        load_packed(tmp_path / "f.npy", None, fix="delete it")
    assert str(info.value).startswith(f"{tmp_path / 'f.npy'}: expected") and str(info.value).endswith("; delete it")
    with pytest.raises(GanimeError) as info:
        ImageSet(tmp_path / "f.npy", "--fake")
    assert (
        str(info.value)
        == f"--fake {tmp_path / 'f.npy'}: expected a non-empty uint8 array (N, H, W, 3), got float32 (3, 8, 8, 3)"
    )
    assert len(ImageSet(good, "--real")) == 3


# ----------------------------------------------------------------------------------------------------------------------
# the package's shape: what each module may import


def _imports(module: str) -> set[str]:
    return {str(Path(f).relative_to(codedeps.PACKAGE_DIR)) for f in codedeps.stage_files(module, lazy_within=None)}


def test_the_reader_and_the_defaults_import_no_torch_inception_or_evaluate():
    """Training's data code may read packs through metrics.images without running metric code at import (a
    training run's fingerprint covers what it imports): images needs common only, defaults nothing."""
    assert _imports("metrics.defaults") == {"__init__.py", "metrics/__init__.py", "metrics/defaults.py"}
    assert _imports("metrics.images") == {"__init__.py", "common.py", "metrics/__init__.py", "metrics/images.py"}
    snapshot = _imports("metrics.generated")  # what a training snapshot runs: no CLI, no classifier code
    assert "inception.py" in snapshot and "evaluate.py" not in snapshot
    assert not any(f.startswith("classifier/") for f in snapshot)
    assert {f"metrics/{m}.py" for m in ("distances", "features", "reference", "result")} <= _imports("evaluate")


def test_evaluate_is_the_stage_cli_only():
    from ganime_steps import evaluate

    own = {n for n, v in vars(evaluate).items() if callable(v) and getattr(v, "__module__", "") == evaluate.__name__}
    assert own == {
        "ReferenceSummary",
        "run_reference",
        "run_evaluate",
        "run_distance",
        "run_compare",
        "parse_references",
        "build_parser",
        "main",
        "_check_counts",
        "_subset",
        "_add_device",
        "_add_features",
        "_add_common",
        "_handle",
    }
