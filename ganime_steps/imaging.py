"""Image helpers shared by stages: safe decoding, square-pad on white + antialiased resize, grids."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image

from ganime_steps.common import GanimeError

# Decompression-bomb guard: a full-body booru image is rarely above 40 MP.
MAX_PIXELS = 64_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


def decode_image(data: bytes, *, what: str = "image", max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode bytes fully (verify + load) and return an RGB image; GanimeError names ``what`` on failure."""
    try:
        with Image.open(io.BytesIO(data)) as probe:
            w, h = probe.size
            if w * h > max_pixels:
                raise GanimeError(f"{what}: {w}x{h} exceeds the {max_pixels} pixel limit")
            probe.verify()
        img = Image.open(io.BytesIO(data))
        img.load()
    except GanimeError:
        raise
    except Exception as exc:
        raise GanimeError(f"{what}: not a decodable image ({type(exc).__name__}: {exc})") from exc
    return to_rgb(img)


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB with transparency flattened onto white (booru PNGs often have alpha)."""
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGB", rgba.size, (255, 255, 255))
        bg.paste(rgba, mask=rgba.split()[-1])
        return bg
    return img.convert("RGB")


def load_rgb(path: str | os.PathLike) -> Image.Image:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise GanimeError(f"{path}: cannot read image ({exc.strerror}); rerun the stage that stored it") from exc
    return decode_image(data, what=str(path))


def square_resize(img: Image.Image, size: int) -> np.ndarray:
    """Pad to a square on white (never crop a full body), then Lanczos-resize: uint8 (size, size, 3)."""
    img = to_rgb(img)
    w, h = img.size
    side = max(w, h)
    canvas = Image.new("RGB", (side, side), (255, 255, 255))
    canvas.paste(img, ((side - w) // 2, (side - h) // 2))
    return np.asarray(canvas.resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8)


def make_grid(images: np.ndarray, *, ncol: int | None = None, pad: int = 2) -> Image.Image:
    """Tile uint8 images (N, H, W, 3) into one white-padded grid."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) == 0:
        raise ValueError(f"make_grid expects (N, H, W, 3) with N > 0, got {images.shape}")
    n, h, w, _ = images.shape
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    grid = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        grid[y : y + h, x : x + w] = im
    return Image.fromarray(grid)
