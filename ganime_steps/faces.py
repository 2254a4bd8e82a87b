"""Stage 2, faces: crop square face images from every stored post.

Detectors: ``lbpcascade`` (OpenCV + nagadomi's ``lbpcascade_animeface.xml``, the upstream recipe) or
``annotations`` (face boxes the source supplied, e.g. the synthetic booru, whose drawn faces the cascade
does not find). Writes ``crops/<md5[:2]>/<md5>_<i>.png`` and ``faces.parquet`` under ``--out``. A post's crops are
all made in memory before any is written, and those written are removed again if writing one fails, so an image that
fails leaves no crop behind; after a run, ``crops/`` holds exactly the files ``faces.parquet`` lists.
The cascade is vendored as ``resources/lbpcascade_animeface.xml`` (MIT, its license beside it) and is the default;
subcommand ``fetch-cascade`` downloads it instead from its canonical address, pinned by sha256.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
from PIL import Image

from ganime_steps import USER_AGENT
from ganime_steps.common import (
    GanimeError,
    call_with_args,
    progress,
    read_parquet,
    run_cli,
    save_image,
    write_bytes,
    write_parquet,
)
from ganime_steps.imaging import load_rgb

log = logging.getLogger(__name__)

CASCADE_URL = "https://raw.githubusercontent.com/nagadomi/lbpcascade_animeface/master/lbpcascade_animeface.xml"
CASCADE_SHA256 = "9376d30ac38db6bda2a68b88b3b76bbd7e6aa33af47f7f5c76bc88ca75f1ce30"
# The same file (sha256 above), vendored in the repository with its MIT license; faces.cascade: null uses it.
VENDORED_CASCADE = Path(__file__).resolve().parent.parent / "resources" / "lbpcascade_animeface.xml"
DETECTORS = ("lbpcascade", "annotations")
FACE_COLUMNS = ["source", "post_id", "md5", "face_index", "x", "y", "w", "h", "file"]


@dataclass
class FacesSummary:
    posts: int
    posts_with_faces: int
    faces: int
    detector: str


class CascadeDetector:
    """The upstream recipe: grayscale, histogram equalisation, detectMultiScale(1.1, 5, 24x24)."""

    def __init__(self, path: Path, scale_factor: float = 1.1, min_neighbors: int = 5, min_size: int = 24) -> None:
        import cv2

        if not Path(path).is_file():
            raise GanimeError(
                f"faces.cascade: {path} not found; set it to a local lbpcascade_animeface.xml, or to null for the "
                f"copy vendored in the repository ({VENDORED_CASCADE})"
            )
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise GanimeError(f"faces.cascade: {path} is not a valid OpenCV cascade XML")
        self.scale_factor, self.min_neighbors, self.min_size = scale_factor, min_neighbors, min_size

    def detect(self, image: Image.Image) -> list[tuple[int, int, int, int]]:
        import cv2

        gray = cv2.equalizeHist(cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2GRAY))
        boxes = self.cascade.detectMultiScale(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(self.min_size,) * 2
        )
        return [tuple(int(v) for v in box) for box in boxes]


def crop_face(image: Image.Image, box: tuple[int, int, int, int], size: int, margin: float) -> Image.Image:
    """Square crop around the box, enlarged by ``margin`` (fraction of the side), resized with Lanczos. Near an edge
    the square moves inside the image (and shrinks to the image's shorter side if larger): cutting it at the edge
    instead would stretch a non-square region to a square face, and Pillow pads a crop that leaves the image."""
    x, y, w, h = box
    side = min(round(max(w, h) * (1 + margin)), image.width, image.height)
    cx, cy = x + w / 2, y + h / 2
    left = min(max(0, round(cx - side / 2)), image.width - side)
    top = min(max(0, round(cy - side / 2)), image.height - side)
    return image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)


def run_faces(
    *,
    posts: Path,
    out: Path,
    detector: str = "lbpcascade",
    cascade: Path | None = None,
    size: int = 64,
    margin: float = 0.0,
    min_size: int = 24,
    workers: int = 1,
) -> FacesSummary:
    """Crop every post's faces into ``out``; ``workers`` > 1 crops in that many processes (same output)."""
    if workers < 1:
        raise GanimeError(f"--workers {workers}: must be at least 1")
    if detector not in DETECTORS:
        raise GanimeError(f"faces.detector {detector!r} is unknown; use one of {', '.join(DETECTORS)}")
    table = read_parquet(posts, ["source", "post_id", "md5", "file", "face_boxes"])
    if detector == "lbpcascade" and cascade is None:
        cascade = default_cascade()
    settings = dict(
        cascade=cascade if detector == "lbpcascade" else None, min_size=min_size, root=Path(posts).parent,
        out=Path(out), size=size, margin=margin,
    )  # fmt: skip
    out = Path(out)
    records = [SimpleNamespace(**r) for r in table.to_dict("records")]  # picklable rows for the worker processes
    _init_worker(**settings)  # also checks the cascade here, before any process starts
    rows = []
    if workers == 1:
        per_post = map(_crop_in_worker, records)
    else:
        # processes, not threads: detection and PNG encoding hold the GIL; map keeps the posts' order
        pool = ProcessPoolExecutor(workers, initializer=_init_worker, initargs=tuple(settings.values()))
        per_post = pool.map(_crop_in_worker, records, chunksize=max(1, min(16, len(records) // (4 * workers))))
    try:
        for post_rows in progress(per_post, total=len(records), desc="faces"):
            rows.extend(post_rows)
    finally:
        if workers > 1:
            pool.shutdown(cancel_futures=True)
    faces = pd.DataFrame(rows, columns=FACE_COLUMNS)
    if faces.empty:
        raise GanimeError(f"faces: no face found in any of the {len(table)} posts of {posts} (detector {detector})")
    write_parquet(out / "faces.parquet", faces)
    _remove_unlisted_crops(out, set(faces["file"]))
    return FacesSummary(len(table), int(faces["md5"].nunique()), len(faces), detector)


_WORKER: dict = {}  # this process's detector and settings (set by _init_worker: cv2 cascades cannot be pickled)


def _init_worker(cascade: Path | None, min_size: int, root: Path, out: Path, size: int, margin: float) -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core already; OpenCV's own threads would oversubscribe
    detector = CascadeDetector(cascade, min_size=min_size) if cascade is not None else None
    _WORKER.update(detector=detector, root=root, out=out, size=size, margin=margin)


def _crop_in_worker(post) -> list[tuple]:
    w = _WORKER
    return _crop_post(post, w["root"], w["out"], w["detector"], w["size"], w["margin"])


def _crop_post(post, root: Path, out: Path, detector: CascadeDetector | None, size: int, margin: float) -> list[tuple]:
    """One post's face rows; its crops are written only once all are made, and none stays if one fails to write."""
    image = load_rgb(root / post.file)
    if detector is not None:
        boxes = detector.detect(image)
    else:
        boxes = [tuple(b) for b in json.loads(post.face_boxes or "[]")]
    crops = [crop_face(image, box, size, margin) for box in boxes]  # any failure here: nothing written yet
    rows, written = [], []
    try:
        for i, (box, crop) in enumerate(zip(boxes, crops, strict=True)):
            rel = f"crops/{post.md5[:2]}/{post.md5}_{i}.png"
            save_image(out / rel, crop)
            written.append(out / rel)
            rows.append((post.source, int(post.post_id), post.md5, i, *box, rel))
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return rows


def _remove_unlisted_crops(out: Path, listed: set[str]) -> None:
    """Crops no row lists (a post gone from the scrape, a face an earlier run found and this one did not)."""
    crops = out / "crops"
    if not crops.is_dir():
        return
    stale = [p for p in crops.rglob("*.png") if p.relative_to(out).as_posix() not in listed]
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        log.info("faces: removed %d crop(s) that faces.parquet no longer lists", len(stale))


def default_cascade() -> Path:
    """The vendored cascade; a one-line error naming the ways out when this checkout lacks it."""
    if not VENDORED_CASCADE.is_file():
        raise GanimeError(
            f"faces.cascade: null means the vendored {VENDORED_CASCADE}, which this checkout lacks; restore it from "
            "git, or run `python -m ganime_steps.faces fetch-cascade --out PATH` and set faces.cascade to PATH"
        )
    return VENDORED_CASCADE


def fetch_cascade(*, out: Path, url: str = CASCADE_URL, sha256: str = CASCADE_SHA256) -> dict:
    """Download the cascade once; the pinned sha256 guards against a changed or truncated file."""
    import requests

    try:
        resp = requests.get(url, headers={"User-Agent": USER_AGENT}, timeout=60)
        resp.raise_for_status()
    except requests.RequestException as exc:
        raise GanimeError(
            f"cannot download the cascade from {url} ({type(exc).__name__}); offline? download it by hand and "
            "set faces.cascade to its path"
        ) from exc
    digest = hashlib.sha256(resp.content).hexdigest()
    if digest != sha256:
        raise GanimeError(f"{url}: sha256 {digest} does not match the pinned {sha256}; not saved")
    write_bytes(out, resp.content)
    return {"path": str(out), "sha256": digest, "bytes": len(resp.content)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ganime_steps.faces", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    crop = sub.add_parser("crop", help="detect and crop faces from every post")
    crop.add_argument("--posts", type=Path, required=True, help="posts.parquet of the scrape stage")
    crop.add_argument("--detector", choices=DETECTORS, default="lbpcascade", help="where face boxes come from")
    crop.add_argument(
        "--cascade", type=Path, help="lbpcascade_animeface.xml for detector lbpcascade (default: the vendored copy)"
    )
    crop.add_argument("--size", type=int, default=64, help="side of the square crops in pixels")
    crop.add_argument("--margin", type=float, default=0.0, help="enlarge each box by this fraction of its side")
    crop.add_argument("--min-size", type=int, default=24, help="smallest face the cascade reports, in pixels")
    crop.add_argument("--workers", type=int, default=1, help="processes cropping in parallel (same output as 1)")
    crop.add_argument("--out", type=Path, required=True, help="output folder (crops/, faces.parquet)")
    fetch = sub.add_parser(
        "fetch-cascade", help="download lbpcascade_animeface.xml (sha256-pinned; the repository vendors the same file)"
    )
    fetch.add_argument("--url", default=CASCADE_URL, help="download address")
    fetch.add_argument("--out", type=Path, required=True, help="where to save the XML")
    return p


def _handle(a: argparse.Namespace):
    return call_with_args(fetch_cascade if a.command == "fetch-cascade" else run_faces, a)


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), _handle, argv)


if __name__ == "__main__":
    raise SystemExit(main())
