"""Rendering a planned post: background, clutter, characters laid out side by side, and the truth of the drawing.

Posts are drawn at ``SUPERSAMPLE`` x the output size and downscaled with Lanczos; the truth (face and character
boxes, body heights, head ratios) is measured in output pixels from the same layout.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import random
from dataclasses import dataclass, fields
from typing import NamedTuple

from PIL import Image, ImageDraw

from ganime_steps.sources.synthetic.body import build_character
from ganime_steps.sources.synthetic.clutter import background, clutter
from ganime_steps.sources.synthetic.palette import TACHIE_PASTEL, WHITE, Box, Rates
from ganime_steps.sources.synthetic.plan import CharacterSpec, PostFlags, PostPlan, plan_cached, plan_post, post_rng
from ganime_steps.sources.synthetic.shapes import Point, Prim, bbox, draw_prims, rotate

SUPERSAMPLE = 2


@dataclass(frozen=True)
class SyntheticTruth(PostFlags):
    """Ground truth of one rendered post, in output-image pixel coordinates."""

    n_characters: int
    face_boxes: tuple[Box, ...]  # (x, y, w, h), square around each head, clipped to the image
    char_boxes: tuple[Box, ...]  # (x, y, w, h), everything drawn for each character
    body_heights: tuple[float, ...]  # standing-equivalent height (hair top to sole) in pixels
    head_ratios: tuple[float, ...]  # unclipped head-box height / body height, measured after layout
    poses: tuple[str, ...]


@dataclass(frozen=True)
class _Figure:
    """One character's primitives (turned on its side when lying), their bounding box and the head's centre."""

    spec: CharacterSpec
    prims: list[Prim]
    box: tuple[float, float, float, float]
    head: Point

    @property
    def width(self) -> float:
        return (self.box[2] - self.box[0]) * self.spec.size

    @property
    def height(self) -> float:
        return (self.box[3] - self.box[1]) * self.spec.size


class _Layout(NamedTuple):
    k: float  # canvas pixels per body unit (times each character's size)
    x: float  # left edge of the first character
    baseline: float  # where the feet stand
    gap: float  # between characters
    ow: int  # line-art width in canvas pixels


class _FigureTruth(NamedTuple):
    face_box: Box
    char_box: Box
    body_height: float
    head_ratio: float


def _figure(c: CharacterSpec) -> _Figure:
    prims = build_character(c)
    head = (0.0, c.head_ratio / 2)
    if c.pose == "lying":
        prims = rotate(prims, c.facing)
        head = (head[1], 0.0) if c.facing == 1 else (-head[1], 0.0)
    return _Figure(c, prims, bbox(prims), head)


def _layout(figures: list[_Figure], W: int, H: int, rng: random.Random) -> _Layout:
    """Scale everyone by one factor so that they fit side by side, feet on a shared baseline."""
    margin_x = rng.uniform(0.04, 0.08) * W
    margin_top = rng.uniform(0.03, 0.07) * H
    margin_bottom = rng.uniform(0.03, 0.07) * H
    gap = 0.03 * W
    widths = [f.width for f in figures]
    heights = [f.height for f in figures]
    avail_w = W - 2 * margin_x - gap * (len(figures) - 1)
    avail_h = H - margin_top - margin_bottom
    k = min(avail_w / sum(widths), avail_h / max(heights)) * rng.uniform(0.86, 1.0)
    total_w = sum(widths) * k + gap * (len(figures) - 1)
    x = (W - total_w) / 2 + rng.uniform(-1, 1) * max(0.0, (W - total_w) / 2 - margin_x)
    baseline = H - margin_bottom - rng.uniform(0, 1) * max(0.0, avail_h - max(heights) * k) * 0.5
    return _Layout(k=k, x=x, baseline=baseline, gap=gap, ow=2 if k < 500 else 3)


def _clip_box(x: int, y: int, w: int, h: int, width: int, height: int) -> Box:
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(width, x + w), min(height, y + h)
    return (x0, y0, max(0, x1 - x0), max(0, y1 - y0))


def _figure_truth(plan: PostPlan, fig: _Figure, kc: float, ox: float, oy: float, ow: int) -> _FigureTruth:
    """Head box, character box, body height and head ratio in output pixels (canvas / SUPERSAMPLE)."""
    ss, bb = SUPERSAMPLE, fig.box
    body_h = kc / ss
    side = fig.spec.head_ratio * kc / ss
    hx, hy = (ox + fig.head[0] * kc) / ss, (oy + fig.head[1] * kc) / ss
    fx, fy = round(hx - side / 2), round(hy - side / 2)
    fs = round(side)
    cx0, cy0 = (ox + bb[0] * kc - ow) / ss, (oy + bb[1] * kc - ow) / ss
    cx1, cy1 = (ox + bb[2] * kc + ow) / ss, (oy + bb[3] * kc + ow) / ss
    x0, y0 = math.floor(cx0), math.floor(cy0)
    return _FigureTruth(
        face_box=_clip_box(fx, fy, fs, fs, plan.width, plan.height),
        char_box=_clip_box(x0, y0, math.ceil(cx1) - x0, math.ceil(cy1) - y0, plan.width, plan.height),
        body_height=body_h,
        head_ratio=fs / body_h,
    )


def _draw_figure(draw: ImageDraw.ImageDraw, plan: PostPlan, fig: _Figure, x: float, lay: _Layout) -> _FigureTruth:
    """Draw one character with its left edge at ``x`` (and its floor shadow on clean posts)."""
    kc = lay.k * fig.spec.size
    ox, oy = x - fig.box[0] * kc, lay.baseline - fig.height * lay.k - fig.box[1] * kc
    if plan.shadow:
        H = plan.height * SUPERSAMPLE
        gx0, gx1, gy = x + 0.1 * fig.width * lay.k, x + 0.9 * fig.width * lay.k, lay.baseline
        draw.ellipse((gx0, gy - 0.012 * H, gx1, gy + 0.012 * H), fill=(236, 236, 238))
    draw_prims(draw, fig.prims, kc, ox, oy, lay.ow)
    return _figure_truth(plan, fig, kc, ox, oy, lay.ow)


def render_plan(plan: PostPlan) -> tuple[Image.Image, SyntheticTruth]:
    W, H = plan.width * SUPERSAMPLE, plan.height * SUPERSAMPLE
    draw_rng = post_rng(plan.seed, plan.post_id, "draw")
    canvas = background(plan, (W, H), draw_rng)
    draw = ImageDraw.Draw(canvas)
    if plan.busy:
        clutter(draw, (W, H), draw_rng, front=False)
    figures = [_figure(c) for c in plan.characters]
    lay = _layout(figures, W, H, draw_rng)
    x, truths = lay.x, []
    for fig in figures:
        truths.append(_draw_figure(draw, plan, fig, x, lay))
        x += fig.width * lay.k + lay.gap
    if plan.busy:
        clutter(draw, (W, H), draw_rng, front=True)
    image = canvas.resize((plan.width, plan.height), Image.Resampling.LANCZOS)
    if plan.style == "tachie":
        image = Image.blend(image, Image.new("RGB", image.size, WHITE), TACHIE_PASTEL)
    truth = SyntheticTruth(
        **{f.name: getattr(plan, f.name) for f in fields(PostFlags)},
        n_characters=plan.n_characters,
        face_boxes=tuple(t.face_box for t in truths),
        char_boxes=tuple(t.char_box for t in truths),
        body_heights=tuple(t.body_height for t in truths),
        head_ratios=tuple(t.head_ratio for t in truths),
        poses=tuple(c.pose for c in plan.characters),
    )
    return image, truth


def render_post(seed: int, post_id: int, style: str = "booru", **rates: float) -> tuple[Image.Image, SyntheticTruth]:
    """Draw one post: a pure function of ``(seed, post_id, style, rates)`` (chibi, multiple, busy, nonstanding)."""
    return render_plan(plan_post(seed, post_id, style, **rates))


def encode_png(image: Image.Image) -> bytes:
    """Deterministic PNG bytes: fixed zlib level (3: fast, ~7 % larger than 6), no optimise pass, no metadata."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False, compress_level=3)
    return buf.getvalue()


@functools.lru_cache(maxsize=1024)
def rendered(seed: int, post_id: int, rates: Rates, style: str) -> tuple[bytes, str, SyntheticTruth]:
    """(PNG bytes, their md5, truth): listing needs the md5 and fetching the bytes, so render once for both."""
    image, truth = render_plan(plan_cached(seed, post_id, rates, style))
    data = encode_png(image)
    return data, hashlib.md5(data).hexdigest(), truth
