"""The result of a measurement: :class:`Scores` (what two feature sets give) inside :class:`MetricResult` (one
fake set against one real set in one feature space, with where both came from).

One record for every producer: ``evaluate run`` (``metrics.json``), ``evaluate distance`` (the data-FID file),
``evaluate compare`` (one JSON object on stdout) and the training snapshots (a ``metrics.jsonl`` row). In Python the
sizes are always ``scores.n_fake`` / ``scores.n_real`` and the extractor's weights a :class:`Weights`;
:meth:`MetricResult.to_json` writes each file's own keys (the distance file's ``n_a``/``a_data``/``a_dataset``,
compare's ``weights`` as a path); :meth:`MetricResult.from_json` reads a ``run``, ``distance`` or ``snapshot`` JSON
back into the record (the report reads ``metrics.json`` and the data-FID files through it, and names datasets by the
sides' ``dataset``, never by where a pack lies).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from ganime_steps.metrics.features import fd_key, fd_label


@dataclass(frozen=True, kw_only=True)
class Scores:
    """The metrics of ``fake`` against ``real`` features (:func:`ganime_steps.metrics.distances.feature_metrics`).

    Fields in the order their JSON keys have always been written (metrics.jsonl rows keep insertion order); the
    optional ones are None when not computed, and then absent from the JSON."""

    fd: float
    kid_mean: float
    kid_std: float
    kid_subsets: int
    kid_subset_size: int  # as used: capped by both set sizes
    precision: float | None = None
    recall: float | None = None
    pr_k: int | None = None
    n_fake: int
    n_real: int
    fd_ci: list[float] | None = None  # bootstrap intervals (uncertainty.bootstrap_intervals)
    kid_ci: list[float] | None = None
    bootstrap_resamples: int | None = None
    fd_inf: float | None = None  # FID∞ (uncertainty.frechet_distance_inf) and the subset sizes it was fitted on
    fd_inf_sizes: list[list[int]] | None = None

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Scores:
        """The scores among a file's keys (the other keys of the object are not the scores' business); a missing
        required one raises KeyError, a missing optional one is None."""
        return cls(**{f.name: obj[f.name] for f in fields(cls) if f.name in obj or f.default is MISSING})


@dataclass(frozen=True)
class Side:
    """One set of a measurement as its JSON records it: the file it came from (a generator, a reference .npz, an
    image set) and, for a reference, its pack, image size, content hash (``reference.reference_content_hash``) and
    the name of the dataset it was packed from (``evaluate reference --dataset``; None when not given)."""

    path: str | None = None
    data: str | None = None
    image_size: list[int] | None = None
    sha256: str | None = None
    dataset: str | None = None

    @classmethod
    def of_reference(cls, ref: Mapping[str, Any], path: str | Path | None = None) -> Side:
        """A loaded reference (``reference.load_reference``) as one side of a measurement; ``path``: how to name
        its file (default: as it was loaded)."""
        size = list(ref["data_shape"][1:3])
        return cls(str(path or ref["path"]), ref["data"], size, ref["content_sha256"], ref["dataset"])


@dataclass(frozen=True)
class Weights:
    """The feature extractor's file: path, sha256, identity (equal identities give equal features) and origin (where
    the weights come from)."""

    path: str
    sha256: str
    identity: str
    origin: str


KINDS = ("run", "distance", "compare", "snapshot")


@dataclass(kw_only=True)
class MetricResult:
    """``fake`` measured against ``real`` in ``feature_space``: what ``run``, ``distance``, ``compare`` and the
    training snapshots produce (``kind``), written by :meth:`to_json` in that producer's file format.

    ``run`` measures one generated set against several references: ``references`` holds one result per reference
    name (the primary first), and the run's own ``scores`` and ``real`` are the primary's."""

    kind: str
    feature_space: str
    is_fid: bool
    scores: Scores
    real: Side
    fake: Side = field(default_factory=Side)
    seed: int | None = None
    weights: Weights | None = None
    truncation: float | None = None  # run: the generator's truncation psi
    references: dict[str, MetricResult] = field(default_factory=dict)
    out: Path | None = None  # the file it was written to

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind {self.kind!r}: one of {', '.join(KINDS)}")

    @property
    def fd_key(self) -> str:
        return fd_key(self.feature_space)

    @property
    def fd_label(self) -> str:
        return fd_label(self.feature_space)

    @property
    def fd(self) -> float:
        return self.scores.fd

    def reference_block(self) -> dict[str, Any]:
        """A run's entry for one reference: the Fréchet distance under its key, the scores, the reference."""
        return {
            self.fd_key: self.scores.fd,
            **self.scores.to_json(),
            "reference": self.real.path,
            "reference_sha256": self.real.sha256,
            "reference_data": self.real.data,
            "reference_dataset": self.real.dataset,
            "image_size": self.real.image_size,
        }

    def to_json(self) -> dict[str, Any]:
        space = {"feature_space": self.feature_space, "is_fid": self.is_fid, "fd_key": self.fd_key}
        if self.kind == "snapshot":  # a metrics.jsonl row: insertion order is the file's column order
            return {**space, self.fd_key: self.scores.fd, **self.scores.to_json(), "reference_sha256": self.real.sha256}
        if self.kind == "run":
            w = self.weights
            return {
                **space,
                "fd_label": self.fd_label,
                **self.reference_block(),
                "primary_reference": next(iter(self.references)),
                "reference_order": list(self.references),  # the JSON's keys are sorted; this keeps the given order
                "references": {name: r.reference_block() for name, r in self.references.items()},
                "weights": {"path": w.path, "sha256": w.sha256, "identity": w.identity, "origin": w.origin},
                "generator": self.fake.path,
                "seed": self.seed,
                "truncation": self.truncation,
            }
        if self.kind == "distance":  # reference a in the role of the fake set, b of the real one
            return {
                **space,
                self.fd_key: self.scores.fd,
                "fd_label": self.fd_label,
                **self.scores.to_json(),
                "n_a": self.scores.n_fake,
                "n_b": self.scores.n_real,
                "a": self.fake.path,
                "b": self.real.path,
                "a_data": self.fake.data,
                "b_data": self.real.data,
                "a_dataset": self.fake.dataset,
                "b_dataset": self.real.dataset,
                "image_size_a": self.fake.image_size,
                "image_size_b": self.real.image_size,
                "seed": self.seed,
            }
        return {  # compare
            "fid": self.scores.fd if self.is_fid else None,
            **space,
            self.fd_key: self.scores.fd,
            "fd_label": self.fd_label,
            **self.scores.to_json(),
            "real": self.real.path,
            "fake": self.fake.path,
            "real_image_size": self.real.image_size,
            "fake_image_size": self.fake.image_size,
            "weights": self.weights.path,
            "weights_origin": self.weights.origin,
            "seed": self.seed,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any], kind: str) -> MetricResult:
        """The record back from the JSON :meth:`to_json` wrote for ``kind`` (``run``: a ``metrics.json``;
        ``distance``: a data-FID file; ``snapshot``: a ``metrics.jsonl`` row's metric columns). ``compare`` is not
        read back (its JSON keeps only the weights' path). A missing key raises KeyError, a wrong kind ValueError.

        ``to_json`` of the result is ``obj`` again (for a snapshot row: its metric columns); ``out`` is None."""
        space = {"feature_space": obj["feature_space"], "is_fid": obj["is_fid"], "scores": Scores.from_json(obj)}
        if kind == "snapshot":
            return cls(kind=kind, **space, real=Side(sha256=obj["reference_sha256"]))
        if kind == "distance":
            return cls(
                kind=kind,
                **space,
                real=Side(obj["b"], obj["b_data"], obj["image_size_b"], dataset=obj["b_dataset"]),
                fake=Side(obj["a"], obj["a_data"], obj["image_size_a"], dataset=obj["a_dataset"]),
                seed=obj["seed"],
            )
        if kind != "run":
            raise ValueError(f"kind {kind!r}: from_json reads run, distance or snapshot")

        def reference(block: dict[str, Any]) -> MetricResult:
            real = Side(
                block["reference"],
                block["reference_data"],
                block["image_size"],
                block["reference_sha256"],
                block["reference_dataset"],
            )
            return cls(kind=kind, **{**space, "scores": Scores.from_json(block)}, real=real, seed=obj["seed"])

        references = {name: reference(obj["references"][name]) for name in obj["reference_order"]}
        w = obj["weights"]
        return cls(
            kind=kind,
            **space,
            real=reference(obj).real,
            fake=Side(obj["generator"]),
            seed=obj["seed"],
            weights=Weights(w["path"], w["sha256"], w["identity"], w["origin"]),
            truncation=obj["truncation"],
            references=references,
        )

    def summary(self) -> dict[str, Any]:
        """What the CLI logs: a run's headline numbers and reference names; the whole JSON otherwise."""
        if self.kind != "run":
            return self.to_json()
        s = self.scores
        return {
            "out": self.out,
            "feature_space": self.feature_space,
            "is_fid": self.is_fid,
            "fd": s.fd,
            "kid_mean": s.kid_mean,
            "kid_std": s.kid_std,
            "precision": s.precision,
            "recall": s.recall,
            "n_fake": s.n_fake,
            "n_real": s.n_real,
            "references": list(self.references),
        }
