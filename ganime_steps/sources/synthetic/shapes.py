"""Drawing primitives and the geometry that builds them.

A character is built as primitives in normalised coordinates: standing body height T = 1, x = 0 at the body's
centre, y = 0 at the top of the hair, y grows downwards. Layout then scales and translates them into the
supersampled canvas. A primitive is one of:

- ``("P", points, fill, outline)``: a polygon;
- ``("E", cx, cy, rx, ry, fill, outline)``: an ellipse;
- ``("L", points, width, fill, outline)``: a round-capped thick polyline (limbs, sleeves, mouths).
"""

from __future__ import annotations

import math

from PIL import ImageDraw

from ganime_steps.sources.synthetic.palette import RGB, line_for

Prim = tuple
Point = tuple[float, float]


def ellipse_pts(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int) -> list[Point]:
    return [
        (cx + rx * math.cos(math.radians(a)), cy + ry * math.sin(math.radians(a)))
        for a in (a0 + (a1 - a0) * i / (n - 1) for i in range(n))
    ]


def hull(points: list[Point]) -> list[Point]:
    """Convex hull (monotone chain); skirts are the hull of the waist and hem points, so they follow any pose."""
    pts = sorted(set(points))
    if len(pts) <= 2:
        return pts

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list = []
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return lower[:-1] + upper[:-1]


def _limb_cap(center: Point, normal: Point, half: float, sign: int) -> list[Point]:
    """Half circle from the right edge of a limb's end around to its left edge."""
    cx, cy = center
    nx, ny = normal
    tx, ty = -ny * sign, nx * sign  # pointing out of the limb
    return [
        (cx + half * (-nx * math.cos(a) + tx * math.sin(a)), cy + half * (-ny * math.cos(a) + ty * math.sin(a)))
        for a in (math.pi * j / 4 for j in range(1, 4))
    ]


def limb_poly(pts: list[Point], widths: list[float], caps: bool = False) -> list[Point]:
    """A tapered limb as one polygon (no seams at the joints): mitred offsets, optional rounded ends."""
    n = len(pts)
    normals = []
    for i in range(n - 1):
        dx, dy = pts[i + 1][0] - pts[i][0], pts[i + 1][1] - pts[i][1]
        d = math.hypot(dx, dy) or 1.0
        normals.append((-dy / d, dx / d))
    left, right = [], []
    for i, (x, y) in enumerate(pts):
        if i == 0 or i == n - 1:
            nx, ny = normals[0] if i == 0 else normals[-1]
            scale = 1.0
        else:
            (ax, ay), (bx, by) = normals[i - 1], normals[i]
            nx, ny = ax + bx, ay + by
            d = math.hypot(nx, ny) or 1.0
            nx, ny = nx / d, ny / d
            scale = 1.0 / max(0.5, nx * ax + ny * ay)  # miter length, capped at 2x for sharp bends
        h = widths[i] / 2 * scale
        left.append((x + nx * h, y + ny * h))
        right.append((x - nx * h, y - ny * h))
    if not caps:
        return left + right[::-1]
    end = _limb_cap(pts[-1], normals[-1], widths[-1] / 2, -1)
    start = _limb_cap(pts[0], normals[0], widths[0] / 2, 1)
    return left + end[::-1] + right[::-1] + start


def polar(origin: Point, length: float, angle_deg: float, side: int) -> Point:
    """Point at ``length`` from ``origin``; angle 0 = straight down, positive = away from the body on ``side``."""
    a = math.radians(angle_deg)
    return (origin[0] + side * length * math.sin(a), origin[1] + length * math.cos(a))


def along(a: Point, b: Point, t: float) -> Point:
    """The point at fraction ``t`` of the way from ``a`` to ``b``."""
    return (a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t)


def bow(x: float, y: float, r: float, spread: float, fill: RGB) -> list[Prim]:
    """Two triangles meeting at ``(x, y)``: a bow ``2 r`` wide, ``2 r spread`` tall."""
    return [
        ("P", [(x, y), (x - r, y - r * spread), (x - r, y + r * spread)], fill, line_for(fill)),
        ("P", [(x, y), (x + r, y - r * spread), (x + r, y + r * spread)], fill, line_for(fill)),
    ]


def rotate(prims: list[Prim], d: int) -> list[Prim]:
    """Rotate by 90 degrees (d=1: head to the left, d=-1: head to the right); ellipses swap their radii."""

    def rot(pt):
        x, y = pt
        return (y, -x) if d == 1 else (-y, x)

    out: list[Prim] = []
    for pr in prims:
        if pr[0] == "E":
            cx, cy = rot((pr[1], pr[2]))
            out.append(("E", cx, cy, pr[4], pr[3], pr[5], pr[6]))
        elif pr[0] == "P":
            out.append(("P", [rot(q) for q in pr[1]], pr[2], pr[3]))
        else:
            out.append(("L", [rot(q) for q in pr[1]], pr[2], pr[3], pr[4]))
    return out


def bbox(prims: list[Prim]) -> tuple[float, float, float, float]:
    x0 = y0 = math.inf
    x1 = y1 = -math.inf
    for pr in prims:
        if pr[0] == "E":
            _, cx, cy, rx, ry = pr[:5]
            x0, y0, x1, y1 = min(x0, cx - rx), min(y0, cy - ry), max(x1, cx + rx), max(y1, cy + ry)
        else:
            pad = pr[2] / 2 if pr[0] == "L" else 0.0
            for x, y in pr[1]:
                x0, y0, x1, y1 = min(x0, x - pad), min(y0, y - pad), max(x1, x + pad), max(y1, y + pad)
    return x0, y0, x1, y1


def draw_prims(draw: ImageDraw.ImageDraw, prims: list[Prim], k: float, ox: float, oy: float, ow: int) -> None:
    """Draw primitives mapped by (x, y) -> (ox + k x, oy + k y); ``ow`` is the line-art width in canvas pixels."""
    for pr in prims:
        kind = pr[0]
        if kind == "P":
            pts = [(ox + k * x, oy + k * y) for x, y in pr[1]]
            draw.polygon(pts, fill=pr[2], outline=pr[3], width=ow if pr[3] else 1)
        elif kind == "E":
            cx, cy, rx, ry = ox + k * pr[1], oy + k * pr[2], k * pr[3], k * pr[4]
            draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=pr[5], outline=pr[6], width=ow if pr[6] else 1)
        else:
            pts = [(ox + k * x, oy + k * y) for x, y in pr[1]]
            w = max(1.0, k * pr[2])
            for width, color in ((w + 2 * ow, pr[4]), (w, pr[3])) if pr[4] else ((w, pr[3]),):
                draw.line(pts, fill=color, width=max(1, round(width)), joint="curve")
                rr = width / 2
                for x, y in (pts[0], pts[-1]):
                    draw.ellipse((x - rr, y - rr, x + rr, y + rr), fill=color)
