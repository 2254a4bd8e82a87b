"""Generated images → features → metrics, shared by ``evaluate run`` and training: :func:`generated_features`
(generate once, in seeded chunks, features at every reference size), :func:`generator_metrics` (an in-memory
generator against a loaded reference) and :class:`SnapshotMetric` (the training-time metric: extractor and reference
loaded once, then called on G at every checkpoint). The same ``n`` and ``seed`` give the numbers of ``evaluate run``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ganime_steps.common import GanimeError, progress
from ganime_steps.metrics.defaults import GEN_CHUNK, KID_SUBSET_SIZE, KID_SUBSETS, MIN_SAMPLES
from ganime_steps.metrics.distances import feature_metrics
from ganime_steps.metrics.features import (
    FeatureExtractor,
    extract_features,
    fd_key,
    full_precision_matmul,
    load_extractor,
    resolve_features,
)
from ganime_steps.metrics.images import resize_images
from ganime_steps.metrics.reference import check_reference_for, load_reference
from ganime_steps.metrics.result import MetricResult, Side

log = logging.getLogger(__name__)


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


def measure_reference(
    fake: np.ndarray,
    ref: Mapping[str, Any],
    *,
    kind: str,
    is_fid: bool,
    seed: int,
    device: str,
    pr: bool = True,
    **options,
) -> MetricResult:
    """``fake`` features against a loaded reference (:func:`load_reference`): a result of ``kind`` whose real side
    is the reference. ``options``: :func:`feature_metrics`'s KID, bootstrap and FID∞ settings."""
    real = ref["features"]
    if fake.shape[1] != real.shape[1]:
        raise GanimeError(
            f"--reference {ref['path']}: {real.shape[1]}-d features, but the extractor gives {fake.shape[1]}"
        )
    scores = feature_metrics(fake, real, seed=seed, device=device, pr=pr, **options)
    return MetricResult(
        kind=kind,
        feature_space=ref["feature_space"],
        is_fid=is_fid,
        scores=scores,
        real=Side.of_reference(ref),
        seed=seed,
    )


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
) -> MetricResult:
    """Metrics of an in-memory generator against a loaded reference (:func:`load_reference`), for training.

    G is used as given (the caller picks G_ema and its mode). The same ``n`` and ``seed`` give the same numbers as
    ``evaluate run``. A ``snapshot`` result, whose JSON is a metrics.jsonl row's metric columns; the bootstrap
    intervals and FID∞ only when asked for (see :func:`feature_metrics`: off by default, snapshots are compared
    along one run).
    """
    if n < MIN_SAMPLES:
        raise GanimeError(f"metric samples {n}: need at least {MIN_SAMPLES} generated images")
    check_reference_for(reference, extractor.spec)
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
    device = str(extractor.device)
    return measure_reference(
        fake, reference, kind="snapshot", is_fid=extractor.is_fid, seed=seed, device=device, pr=pr, **options
    )


class SnapshotMetric:
    """Training-time metric: load the reference and the extractor once, then ``metric(G) -> dict`` per checkpoint (the
    JSON of :func:`generator_metrics`' result: a metrics.jsonl row's metric columns).

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
        check_reference_for(self.reference, spec, flag="--metric-reference")
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
        return generator_metrics(G, self.reference, self.extractor, truncation=truncation, **self.options).to_json()
