"""The reference file format: a ``.npz`` of the features of (a seeded subset of) a packed dataset, with mu, sigma,
the feature space and the extractor's identity, and the sha256 of the pack it was built from.

Built once (``evaluate reference``, :func:`write_reference`) and shared by every run that is compared. Nothing
stale: a reference whose pack changed since is refused (:func:`check_reference_pack`); training snapshots record its
content hash (:func:`reference_content_hash`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ganime_steps.common import GanimeError, atomic_path, file_digest
from ganime_steps.metrics.distances import feature_stats

if TYPE_CHECKING:
    from ganime_steps.metrics.features import FeatureSpec

log = logging.getLogger(__name__)


def write_reference(
    out: Path,
    features: np.ndarray,
    *,
    indices: np.ndarray,
    spec: FeatureSpec,
    data: Path,
    data_shape: tuple[int, ...],
    seed: int,
    dataset: str | None = None,
) -> None:
    """Write ``features`` (rows ``indices`` of the pack ``data``, in the space of ``spec``) as a reference .npz, with
    their mean and covariance, the pack's sha256 and the name of its dataset (``dataset``; "" when not given)."""
    mu, sigma = feature_stats(features)
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                mu=mu,
                sigma=sigma,
                features=features,
                indices=indices,
                feature_space=np.array(spec.space),
                is_fid=np.array(spec.is_fid),
                extractor_sha256=np.array(spec.file_sha256),
                extractor_id=np.array(spec.identity),
                extractor_content_hash=np.array(spec.content_hash),
                extractor_origin=np.array(spec.origin),
                extractor_path=np.array(str(spec.path)),
                n=np.array(len(features)),
                seed=np.array(seed),
                data=np.array(str(data)),
                dataset=np.array(dataset or ""),  # the report names references by it
                data_shape=np.array(data_shape, dtype=np.int64),
                # the pack's content: a reference from a pack that changed since is refused (load_reference)
                data_sha256=np.array(file_digest(data, "sha256")),
            )


REFERENCE_KEYS = (
    *("mu", "sigma", "features", "feature_space", "is_fid", "extractor_sha256", "extractor_id", "n"),
    *("data", "data_shape", "data_sha256"),
)


def load_reference(path: Path, flag: str = "--reference", *, check_data: bool = True) -> dict[str, Any]:
    """Read a reference .npz written by :func:`write_reference`; plain Python values for the scalar fields
    (``dataset`` None when not named), and ``content_sha256`` (:func:`reference_content_hash`). ``check_data``:
    refuse it if its pack changed since (:func:`check_reference_pack`)."""
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
    text = ("feature_space", "extractor_sha256", "data", "extractor_id", "extractor_origin", "extractor_path")
    for key in (*text, "data_sha256", "dataset"):
        if key in ref:
            ref[key] = str(ref[key])
    ref["dataset"] = ref.get("dataset") or None  # not named when built
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


def check_reference_for(ref: Mapping[str, Any], spec: FeatureSpec, flag: str = "--reference") -> None:
    """Refuse a reference built in another space, or with other weights, than the features ``spec`` resolves to."""
    check_same_space(
        ref,
        spec.space,
        spec.identity,
        f"{flag} {ref['path']}",
        "pass the same --inception-weights/--classifier-model as the reference, or rebuild it",
    )
