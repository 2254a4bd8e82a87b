"""`faces crop --workers N` against one worker: wall time, ratio, identical crops.

Posts are copies of the upstream example image (../shared/assets/anime_faces_sample.png, 17 faces; each copy with a
few pixels changed so every post has its own md5), cropped with the vendored lbpcascade_animeface.xml through
:func:`ganime_steps.faces.run`, whole call (process start-up included). Without the example image, synthetic
drawings with source face boxes are cropped instead (the detector then costs nothing, so the ratio is lower)."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ganime_steps.faces import run as crop_faces

SAMPLE = Path(__file__).resolve().parent.parent.parent / "shared" / "assets" / "anime_faces_sample.png"


def _posts(folder: Path, n: int) -> tuple[Path, str]:
    have_sample = SAMPLE.is_file()
    base = np.asarray(Image.open(SAMPLE).convert("RGB")) if have_sample else None
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        img = base.copy() if have_sample else rng.integers(0, 256, (512, 384, 3), dtype=np.uint8)
        img[0, :4] = (i % 256, i // 256, 7)  # a distinct md5 per post
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        data = buf.getvalue()
        md5 = hashlib.md5(data).hexdigest()
        (folder / f"{md5}.png").write_bytes(data)
        boxes = "[]" if have_sample else "[[40, 40, 96, 96], [200, 150, 80, 80]]"
        rows.append({"source": "bench", "post_id": i + 1, "md5": md5, "file": f"{md5}.png", "face_boxes": boxes})
    pd.DataFrame(rows).to_parquet(folder / "posts.parquet")
    return folder / "posts.parquet", "lbpcascade" if have_sample else "annotations"


def run(quick: bool) -> list[dict]:
    n = 8 if quick else 40
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        posts, detector = _posts(Path(tmp), n)
        times, crops = {}, {}
        for workers in sorted({1, min(2, cores), cores}):
            out = Path(tmp) / f"out{workers}"
            t0 = time.perf_counter()
            summary = crop_faces(posts=posts, out=out, detector=detector, workers=workers)
            times[workers] = time.perf_counter() - t0
            crops[workers] = {p.name: p.read_bytes() for p in sorted(out.rglob("*.png"))}
        return [
            {
                "detector": detector,
                "posts": n,
                "faces": summary.faces,
                "workers": w,
                "seconds": round(t, 2),
                "ratio_vs_1": round(times[1] / t, 2),
                "identical_crops": crops[w] == crops[1],
            }
            for w, t in times.items()
        ]
