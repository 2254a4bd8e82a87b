"""The head: hair cap, face, big eyes, mouth, bangs, side locks and hair accessories.

The head box is ``[-u/2, u/2] x [0, u]`` in body units (``u`` = the head's share of the body height).
"""

from __future__ import annotations

from ganime_steps.sources.synthetic.palette import (
    CLOTH_COLORS,
    EYE_COLORS,
    HAIR_COLORS,
    LINE_ART,
    SKIN_LINE,
    WHITE,
    dark,
    line_for,
)
from ganime_steps.sources.synthetic.plan import CharacterSpec
from ganime_steps.sources.synthetic.shapes import Prim, bow, ellipse_pts

# The hair cap: an ellipse (centre y, x radius, y radius), in head units.
CAP = (0.48, 0.5, 0.48)
# How far down the side locks reach, in head units.
LOCK_END = {"short": 0.72, "bob": 1.0, "long": 1.05, "twintails": 0.95, "ponytail": 0.9}
MOUTH_COLOR = (150, 60, 60)


def _cap(u: float) -> tuple[float, float, float]:
    return CAP[0] * u, CAP[1] * u, CAP[2] * u


def _face(c: CharacterSpec, u: float) -> list[Prim]:
    """The hair cap behind, the face in front of it, blushing cheeks."""
    hair, hair_line = HAIR_COLORS[c.hair], dark(HAIR_COLORS[c.hair], 0.55)
    cap_cy, cap_rx, cap_ry = _cap(u)
    p: list[Prim] = [("E", 0.0, cap_cy, cap_rx, cap_ry, hair, hair_line)]
    face = ellipse_pts(0.0, 0.55 * u, 0.41 * u, 0.37 * u, 180, 360, 9)
    face += [(0.39 * u, 0.7 * u), (0.22 * u, 0.9 * u), (0.0, 1.0 * u), (-0.22 * u, 0.9 * u), (-0.39 * u, 0.7 * u)]
    p.append(("P", face, c.skin, SKIN_LINE))
    if c.blush:
        for s in (-1, 1):
            p.append(("E", s * 0.25 * u, 0.78 * u, 0.08 * u, 0.035 * u, (246, 170, 170), None))
    return p


def _eyes(c: CharacterSpec, u: float) -> list[Prim]:
    """White, iris, pupil, highlight and a lash polygon over each eye."""
    iris = EYE_COLORS[c.eyes]
    ye = 0.64 * u
    p: list[Prim] = []
    for s in (-1, 1):
        ex = s * 0.17 * u
        p.append(("E", ex, ye, 0.1 * u, 0.11 * u, WHITE, None))
        p.append(("E", ex, ye + 0.015 * u, 0.08 * u, 0.105 * u, iris, dark(iris, 0.45)))
        p.append(("E", ex, ye + 0.035 * u, 0.04 * u, 0.055 * u, dark(iris, 0.35), None))
        p.append(("E", ex - s * 0.03 * u, ye - 0.03 * u, 0.03 * u, 0.03 * u, WHITE, None))
        lash = [
            (ex - s * 0.06 * u, ye - 0.1 * u),
            (ex + s * 0.1 * u, ye - 0.095 * u),
            (ex + s * 0.14 * u, ye - 0.04 * u),
            (ex + s * 0.09 * u, ye - 0.07 * u),
            (ex - s * 0.11 * u, ye - 0.06 * u),
        ]
        p.append(("P", lash, LINE_ART, None))
    return p


def _mouth(c: CharacterSpec, u: float) -> Prim:
    mouth_y = 0.87 * u
    if c.mouth == "open":
        lips = [(-0.06 * u, mouth_y - 0.015 * u), (0.06 * u, mouth_y - 0.015 * u), (0.0, mouth_y + 0.05 * u)]
        return ("P", lips, (206, 72, 84), (120, 40, 48))
    if c.mouth == "smile":
        smile = [(-0.06 * u, mouth_y - 0.01 * u), (0.0, mouth_y + 0.015 * u), (0.06 * u, mouth_y - 0.01 * u)]
        return ("L", smile, 0.018 * u, MOUTH_COLOR, None)
    return ("L", [(-0.04 * u, mouth_y), (0.04 * u, mouth_y)], 0.018 * u, MOUTH_COLOR, None)


def _front_hair(c: CharacterSpec, u: float) -> list[Prim]:
    """Bangs (the top of the hair cap down to a zigzag fringe above the eyes) and a side lock each side."""
    hair, hair_line = HAIR_COLORS[c.hair], dark(HAIR_COLORS[c.hair], 0.55)
    cap_cy, cap_rx, cap_ry = _cap(u)
    bangs = ellipse_pts(0.0, cap_cy, cap_rx, cap_ry, 180, 360, 11)
    n_tips = 5
    fringe = []
    for i in range(n_tips * 2 + 1):
        x = 0.5 * u - i * (1.0 * u / (n_tips * 2))
        fringe.append((x, (0.44 if i % 2 else 0.3) * u))
    bangs += [(0.5 * u, 0.5 * u)] + fringe + [(-0.5 * u, 0.5 * u)]
    p: list[Prim] = [("P", bangs, hair, hair_line)]
    lock_end = LOCK_END[c.hair_style] * u
    for s in (-1, 1):
        lock = [
            (s * 0.5 * u, 0.4 * u),
            (s * 0.36 * u, 0.45 * u),
            (s * 0.38 * u, lock_end - 0.12 * u),
            (s * 0.44 * u, lock_end),
            (s * 0.53 * u, 0.7 * u),
        ]
        p.append(("P", lock, hair, hair_line))
    return p


def _hair_accessories(c: CharacterSpec, u: float) -> list[Prim]:
    """Ties of twintails and ponytails, then a hairband or a hair ribbon, in the accent colour."""
    accent = CLOTH_COLORS[c.accent]
    p: list[Prim] = []
    if c.hair_style == "twintails":
        for s in (-1, 1):
            p.append(("E", s * 0.47 * u, 0.24 * u, 0.07 * u, 0.07 * u, accent, line_for(accent)))
    if c.hair_style == "ponytail":
        p.append(("E", -c.facing * 0.5 * u, 0.16 * u, 0.06 * u, 0.06 * u, accent, line_for(accent)))
    if c.accessory == "hairband":
        cap_cy, cap_rx, cap_ry = _cap(u)
        band = ellipse_pts(0.0, cap_cy, cap_rx * 0.92, cap_ry * 0.8, 200, 340, 7)
        p.append(("L", band, 0.07 * u, accent, line_for(accent)))
    elif c.accessory == "hair_ribbon":
        bx, by, r = c.facing * 0.3 * u, 0.14 * u, 0.13 * u
        p += bow(bx, by, r, 0.7, accent)
        p.append(("E", bx, by, r * 0.3, r * 0.3, accent, line_for(accent)))
    return p


def build_head(c: CharacterSpec, u: float) -> list[Prim]:
    """Everything of the head, back to front."""
    return [*_face(c, u), *_eyes(c, u), _mouth(c, u), *_front_hair(c, u), *_hair_accessories(c, u)]
