"""Backgrounds (white, solid or a gradient) and the clutter of busy posts: shapes behind, sparkles in front."""

from __future__ import annotations

import math
import random

import numpy as np
from PIL import Image, ImageDraw

from ganime_steps.sources.synthetic.palette import WHITE, dark, hsv
from ganime_steps.sources.synthetic.plan import PostPlan

SHAPE_CORNERS = {"square": 4, "triangle": 3, "star": 10}
SPARKLE_COLORS = ((255, 255, 255), (255, 246, 160), (255, 220, 240))


def background(plan: PostPlan, size: tuple[int, int], rng: random.Random) -> Image.Image:
    if plan.background == "white":
        return Image.new("RGB", size, WHITE)
    c1, c2 = (np.array(c, dtype=np.float32) for c in plan.bg_colors)
    if plan.background == "solid":
        return Image.new("RGB", size, plan.bg_colors[0])
    # A small gradient upsampled (cheap) in a random direction.
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:16, 0:16].astype(np.float32) / 15.0
    t = (xx - 0.5) * math.cos(angle) + (yy - 0.5) * math.sin(angle)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    small = (c1 * (1 - t[..., None]) + c2 * t[..., None]).round().astype(np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BILINEAR)


def _speed_lines(draw: ImageDraw.ImageDraw, w: int, h: int, s: int, rng: random.Random) -> None:
    """Radial lines from a random centre."""
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    col = hsv(rng.random(), 0.3, 1.0)
    for _ in range(rng.randint(16, 32)):
        a = rng.uniform(0, 2 * math.pi)
        r0 = rng.uniform(0.45, 0.7) * s
        draw.line(
            [(cx + r0 * math.cos(a), cy + r0 * math.sin(a)), (cx + 2 * s * math.cos(a), cy + 2 * s * math.sin(a))],
            fill=col,
            width=max(2, round(s * rng.uniform(0.006, 0.02))),
        )


def _shapes(draw: ImageDraw.ImageDraw, w: int, h: int, s: int, rng: random.Random) -> None:
    """Circles, squares, triangles and stars in random colours."""
    for _ in range(rng.randint(5, 16)):
        col = hsv(rng.random(), rng.uniform(0.4, 0.9), rng.uniform(0.6, 1.0))
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.03, 0.12) * s
        kind = rng.choice(("circle", "square", "triangle", "star"))
        if kind == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=col, outline=dark(col), width=2)
            continue
        n = SHAPE_CORNERS[kind]
        a0 = rng.uniform(0, 2 * math.pi)
        pts = [
            (cx + rr * math.cos(a0 + 2 * math.pi * i / n), cy + rr * math.sin(a0 + 2 * math.pi * i / n))
            for i in range(n)
            for rr in [r if kind != "star" or i % 2 == 0 else r * 0.45]
        ]
        draw.polygon(pts, fill=col, outline=dark(col), width=2)


def _sparkles(draw: ImageDraw.ImageDraw, w: int, h: int, s: int, rng: random.Random) -> None:
    """Four-pointed sparkles."""
    for _ in range(rng.randint(4, 12)):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.02, 0.06) * s
        col = rng.choice(SPARKLE_COLORS)
        q = r * 0.22
        pts = [
            (cx, cy - r),
            (cx + q, cy - q),
            (cx + r, cy),
            (cx + q, cy + q),
            (cx, cy + r),
            (cx - q, cy + q),
            (cx - r, cy),
            (cx - q, cy - q),
        ]
        draw.polygon(pts, fill=col)


def clutter(draw: ImageDraw.ImageDraw, size: tuple[int, int], rng: random.Random, *, front: bool) -> None:
    """Busy-image decoration: shapes behind the characters, sparkles and effect lines in front."""
    w, h = size
    s = min(w, h)
    if front:
        _sparkles(draw, w, h, s, rng)
        return
    if rng.random() < 0.4:
        _speed_lines(draw, w, h, s, rng)
    _shapes(draw, w, h, s, rng)
