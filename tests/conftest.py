"""Shared fixtures: tiny posts tables with real image files, a local HTTP server."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parent.parent
ASSETS = REPO.parent / "shared" / "assets"


def png_bytes(seed: int, size: tuple[int, int] = (48, 64)) -> bytes:
    """A small distinct PNG: a coloured disk whose colour and place depend on the seed."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    x, y = rng.integers(4, size[0] - 20), rng.integers(4, size[1] - 20)
    draw.ellipse((x, y, x + 16, y + 16), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def write_posts(folder: Path, n: int, source: str = "test") -> Path:
    """A posts.parquet (scrape stage layout) with n stored images; returns its path."""
    rows = []
    for i in range(1, n + 1):
        data = png_bytes(i)
        md5 = hashlib.md5(data).hexdigest()
        rel = f"images/{md5[:2]}/{md5}.png"
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
        rows.append(
            {
                "post_id": i,
                "source": source,
                "md5": md5,
                "file": rel,
                "width": 48,
                "height": 64,
                "tags": "1girl solo" + (" chibi" if i % 3 == 0 else ""),
                "rating": "general",
                "score": i,
                "source_url": f"http://booru/{i}",
                "fetched_at": "2026-01-01T00:00:00+00:00",
                "face_boxes": json.dumps([[10, 10, 20, 20]]),
            }
        )
    path = folder / "posts.parquet"
    pd.DataFrame(rows).to_parquet(path, index=False)
    return path


@pytest.fixture
def posts(tmp_path: Path) -> Path:
    return write_posts(tmp_path / "scrape", 12)
