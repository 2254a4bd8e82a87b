"""A character's body as primitives: proportions, legs per pose, arms, back hair, clothes, then the head.

Primitives are appended back to front (a sitting character's stool first, the head last); see
:mod:`~ganime_steps.sources.synthetic.shapes` for the coordinate system.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from ganime_steps.sources.synthetic.head import build_head
from ganime_steps.sources.synthetic.palette import (
    CLOTH_COLORS,
    HAIR_COLORS,
    SHOE_COLORS,
    SKIN_LINE,
    dark,
    line_for,
)
from ganime_steps.sources.synthetic.plan import CharacterSpec
from ganime_steps.sources.synthetic.shapes import Point, Prim, along, bow, hull, limb_poly, polar

Joints = tuple[Point, Point, Point]  # hip, knee, ankle or shoulder, elbow, wrist
Shoe = tuple[float, float, float, float]  # cx, cy, rx, ry
Legs = tuple[list[Joints], list[Shoe], list[Prim]]  # the legs, their shoes, what they sit on


@dataclass(frozen=True)
class Body:
    """Proportions in body units (standing height T = 1); ``u`` is the head's share, ``b`` the rest."""

    u: float
    b: float
    chibi: bool
    facing: int
    sw: float  # shoulder half-width
    ww: float  # waist half-width
    hw: float  # hip half-width
    arm_w: float
    thigh_w: float
    shin_w: float
    fh: float  # shoe height
    y_sh: float  # shoulders
    y_w: float  # waist
    y_h: float  # hips
    hip_x: float
    ankle_y: float
    upper_arm: float
    fore_arm: float
    hand_r: float

    @property
    def leg_len(self) -> float:
        return self.ankle_y - self.y_h

    @property
    def hair_end(self) -> float:
        """Where long hair and tails end."""
        return self.y_h - 0.05 * self.b if self.chibi else self.y_w + 0.45 * (self.y_h - self.y_w)


def proportions(c: CharacterSpec) -> Body:
    """Chibi bodies are short and stubby relative to the head."""
    u = c.head_ratio
    b = 1.0 - u
    chibi = u > 0.3
    thigh_w, shin_w = (0.24, 0.2) if chibi else (0.36, 0.22)
    thigh_w, shin_w = thigh_w * u, shin_w * u
    fh = (0.07 if chibi else 0.035) * b
    upper_arm, fore_arm = (0.20 * b, 0.18 * b) if not chibi else (0.22 * b, 0.20 * b)
    return Body(
        u=u,
        b=b,
        chibi=chibi,
        facing=c.facing,
        sw=(0.36 if chibi else 0.52) * u,
        ww=(0.30 if chibi else 0.30) * u,
        hw=(0.36 if chibi else 0.44) * u,
        arm_w=(0.16 if chibi else 0.2) * u,
        thigh_w=thigh_w,
        shin_w=shin_w,
        fh=fh,
        y_sh=u + (0.04 if chibi else 0.038) * b,
        y_w=u + 0.30 * b,
        y_h=u + 0.42 * b,
        hip_x=(0.15 if chibi else 0.19) * u,
        ankle_y=1.0 - max(fh * 0.6, shin_w / 2),
        upper_arm=upper_arm,
        fore_arm=fore_arm,
        hand_r=(0.10 if chibi else 0.085) * u,
    )


# ------------------------------------------------------------------------------------------------- legs per pose


def _legs_straight(d: Body) -> Legs:
    """Standing (and lying: a standing body turned on its side)."""
    u, fh = d.u, d.fh
    legs, shoes = [], []
    spread = 0.06 * u
    for s in (-1, 1):
        hip = (s * d.hip_x, d.y_h)
        ankle = (s * (d.hip_x + spread), d.ankle_y)
        knee = ((hip[0] + ankle[0]) / 2, (hip[1] + ankle[1]) / 2)
        legs.append((hip, knee, ankle))
        shoes.append((ankle[0] + s * 0.03 * u, 1.0 - fh / 2, (0.14 if d.chibi else 0.13) * u, fh / 2))
    return legs, shoes, []


def _legs_on_chair(d: Body) -> Legs:
    """Thighs forward, shins down, on a stool (wooden or grey by the side the character faces)."""
    u, f, fh, y_h = d.u, d.facing, d.fh, d.y_h
    legs, shoes = [], []
    lt = d.leg_len * 0.5
    for k, s in enumerate((-f, f)):  # back leg first
        dx = 0.05 * u * (1 if k else -1)
        hip = (s * d.hip_x * 0.3 + dx, y_h)
        knee = (hip[0] * 0.3 + f * lt + dx, y_h)
        ankle = (knee[0], y_h + lt)
        legs.append((hip, knee, ankle))
        shoes.append((ankle[0] + f * 0.06 * u, ankle[1] + fh * 0.3, 0.17 * u, fh / 2 + 0.02 * u))
    ground = y_h + lt + fh * 0.3 + fh / 2 + 0.02 * u
    seat = (0.45 if d.chibi else 0.4) * u
    stool = (128, 88, 58) if f > 0 else (150, 150, 160)
    sx0, sx1 = (-d.hw * 1.3, d.hw * 1.3)
    seat_box = [(sx0, y_h + seat * 0.3), (sx1, y_h + seat * 0.3), (sx1, ground), (sx0, ground)]
    return legs, shoes, [("P", seat_box, stool, dark(stool))]


def _legs_on_floor(d: Body) -> Legs:
    """Knees up, feet forward on the ground."""
    u, f, y_h = d.u, d.facing, d.y_h
    legs, shoes = [], []
    lt = d.leg_len * 0.5
    ground = y_h + d.thigh_w * 0.6
    for k, s in enumerate((-f, f)):
        dy = -0.04 * u * (1 if k else 0)
        hip = (s * d.hip_x * 0.3, y_h + dy)
        knee = (hip[0] + f * lt * 0.92, y_h - lt * 0.32 + dy)
        ankle = (knee[0] + f * lt * 0.92, ground - d.shin_w / 2)
        legs.append((hip, knee, ankle))
        shoes.append((ankle[0] + f * 0.05 * u, ankle[1] - 0.06 * u, d.fh * 0.6 + 0.03 * u, 0.13 * u))
    return legs, shoes, []


def _legs_kneeling(d: Body) -> Legs:
    """On one knee, seen from the side: back thigh down to the knee on the ground, shin flat behind; front thigh
    forward, shin straight down to a flat foot."""
    u, f, fh, y_h = d.u, d.facing, d.fh, d.y_h
    lt = d.leg_len * 0.5
    ground = y_h + lt + d.shin_w * 0.5
    hip = (-f * d.hip_x * 0.4, y_h)
    knee = (hip[0] + f * 0.08 * u, y_h + lt)
    back = (hip, knee, (knee[0] - f * lt * 0.9, knee[1]))
    back_shoe = (back[2][0] - f * 0.04 * u, back[2][1] - 0.02 * u, 0.07 * u + fh * 0.5, 0.09 * u + fh * 0.3)
    hip = (f * d.hip_x * 0.4, y_h)
    knee = (hip[0] + f * lt * 0.9, y_h + 0.1 * lt)
    front = (hip, knee, (knee[0], ground - fh))
    front_shoe = (front[2][0] + f * 0.07 * u, ground - fh / 2, (0.14 if d.chibi else 0.13) * u + 0.03 * u, fh / 2)
    return [back, front], [back_shoe, front_shoe], []


LEGS: dict[str, Callable[[Body], Legs]] = {
    "standing": _legs_straight,
    "lying": _legs_straight,
    "sitting_chair": _legs_on_chair,
    "sitting_floor": _legs_on_floor,
    "kneeling": _legs_kneeling,
}


def _arm_joints(c: CharacterSpec, d: Body) -> list[Joints]:
    """(shoulder, elbow, wrist) per side: resting on the lap when sitting, else down, waving or on the hips."""
    f = d.facing
    arms = []
    for s in (-1, 1):
        shoulder = (s * (d.sw - d.arm_w * 0.45), d.y_sh + d.arm_w * 0.5)
        if c.pose in ("sitting_chair", "sitting_floor"):
            elbow = polar(shoulder, d.upper_arm, 8, s)
            wrist = (elbow[0] + f * d.fore_arm * 0.8, elbow[1] + d.fore_arm * 0.45)
        elif c.arms == "wave" and s == f:
            elbow = polar(shoulder, d.upper_arm, 125, s)
            wrist = polar(elbow, d.fore_arm, 168, s)
        elif c.arms == "hips":
            elbow = polar(shoulder, d.upper_arm, 42 if not d.chibi else 30, s)
            wrist = (s * (d.ww + d.hand_r * 0.6), d.y_w)
        else:
            elbow = polar(shoulder, d.upper_arm, 14, s)
            wrist = polar(elbow, d.fore_arm, 8, s)
        arms.append((shoulder, elbow, wrist))
    return arms


# ------------------------------------------------------------------------------------------------------ back hair


def _tail(
    s: int, u: float, root: tuple[Point, Point, Point], bulge: Point, tip_x: float, end: float, last: Point
) -> list[Point]:
    """A hanging tail of hair on side ``s``: three root points, out to ``bulge[0]``, the tip, back by ``bulge[1]``."""
    (x0, y0), (x1, y1), (x2, y2) = root
    mid = (y2 * u + end) / 2
    return [
        (s * x0 * u, y0 * u),
        (s * x1 * u, y1 * u),
        (s * x2 * u, y2 * u),
        (s * bulge[0] * u, mid),
        (s * tip_x * u, end),
        (s * bulge[1] * u, mid),
        (s * last[0] * u, last[1] * u),
    ]


def _back_hair(c: CharacterSpec, d: Body) -> list[list[Point]]:
    """The outlines of the hair that hangs behind the body (none for short hair)."""
    u, hair_end = d.u, d.hair_end
    if c.hair_style == "long":
        top_y, mid = 0.3 * u, (0.3 * u + hair_end) / 2
        return [
            [
                (-0.48 * u, top_y),
                (0.48 * u, top_y),
                (0.58 * u, mid),
                (0.64 * u, hair_end),
                (0.3 * u, hair_end - 0.12 * u),
                (0.0, hair_end),
                (-0.3 * u, hair_end - 0.12 * u),
                (-0.64 * u, hair_end),
                (-0.58 * u, mid),
            ]
        ]
    if c.hair_style == "bob":
        bob = [(-0.5, 0.3), (0.5, 0.3), (0.6, 0.8), (0.55, 1.08), (-0.55, 1.08), (-0.6, 0.8)]
        return [[(x * u, y * u) for x, y in bob]]
    if c.hair_style == "twintails":
        root = ((0.4, 0.22), (0.78, 0.3), (0.92, 0.8))
        return [_tail(s, u, root, (0.86, 0.64), 0.7, hair_end, (0.56, 0.62)) for s in (-1, 1)]
    if c.hair_style == "ponytail":
        root = ((0.25, 0.08), (0.72, 0.06), (0.95, 0.4))
        return [_tail(-d.facing, u, root, (0.9, 0.66), 0.72, min(1.9 * u, hair_end), (0.5, 0.4))]
    return []


# ---------------------------------------------------------------------------------------------------------- clothes


def _leg_prims(c: CharacterSpec, d: Body, legs: list[Joints], shoes: list[Shoe]) -> list[Prim]:
    """Bare legs or trousers, thighhighs over them, then the shoes."""
    u, thigh_w, shin_w = d.u, d.thigh_w, d.shin_w
    pants = c.outfit == "shirt_pants"
    bottom = CLOTH_COLORS[c.bottom]
    leg_fill = bottom if pants else c.skin
    leg_line = line_for(bottom) if pants else SKIN_LINE
    prims: list[Prim] = []
    for hip, knee, ankle in legs:
        prims.append(
            ("P", limb_poly([hip, knee, ankle], [thigh_w, (thigh_w + shin_w) / 2, shin_w]), leg_fill, leg_line)
        )
        if c.legwear != "bare":
            sock = CLOTH_COLORS["black" if c.legwear.startswith("black") else "white"]
            above = along(hip, knee, 0.55)
            widths = [thigh_w * 0.92 + shin_w * 0.08, (thigh_w + shin_w) / 2 + 0.01 * u, shin_w + 0.01 * u]
            prims.append(("P", limb_poly([above, knee, ankle], widths), sock, line_for(sock)))
    shoe = SHOE_COLORS[c.shoes]
    prims += [("E", cx, cy, rx, ry, shoe, line_for(shoe)) for cx, cy, rx, ry in shoes]
    return prims


def _thigh_normal(hip: Point, knee: Point) -> Point:
    dist = math.dist(hip, knee) or 1.0
    return -(knee[1] - hip[1]) / dist, (knee[0] - hip[0]) / dist


def _lower_garment(c: CharacterSpec, d: Body, legs: list[Joints]) -> Prim:
    """Trousers' seat, or a skirt (the dress's lower half): the hull of the waist and points around the thighs."""
    u, b, ww = d.u, d.b, d.ww
    lower = CLOTH_COLORS[c.top if c.outfit == "dress" else c.bottom]
    if c.outfit == "shirt_pants":
        pts = [(-ww, d.y_w - 0.05 * u), (ww, d.y_w - 0.05 * u)]
        for hip, knee, _ in legs:
            nx, ny = _thigh_normal(hip, knee)
            for sgn in (-1, 1):
                pts.append((hip[0] + sgn * nx * d.thigh_w * 0.55, hip[1] + sgn * ny * d.thigh_w * 0.55))
        return ("P", hull(pts), lower, line_for(lower))
    frac = 0.8 if c.outfit == "dress" else 0.5
    if d.chibi:
        frac = min(1.0, frac + 0.25)
    flare = (0.26 if d.chibi else 0.34) * u
    if c.pose in ("sitting_chair", "sitting_floor", "kneeling"):
        # A lap, not a bell: the skirt drapes along the bent thighs and shows the knees.
        frac, flare = min(frac, 0.6), 0.22 * u
    pts = [(-ww, d.y_w - 0.02 * u), (ww, d.y_w - 0.02 * u), (-d.hw, d.y_h - 0.05 * b), (d.hw, d.y_h - 0.05 * b)]
    for hip, knee, _ in legs:
        nx, ny = _thigh_normal(hip, knee)
        hem = along(hip, knee, frac)
        for sgn in (-1, 1):
            pts.append((hem[0] + sgn * nx * flare, hem[1] + sgn * ny * flare))
    return ("P", hull(pts), lower, line_for(lower))


def _neck(c: CharacterSpec, d: Body) -> Prim:
    u = d.u
    nw = (0.13 if d.chibi else 0.09) * u
    return ("P", [(-nw, 0.8 * u), (nw, 0.8 * u), (nw, d.y_sh + 0.04 * u), (-nw, d.y_sh + 0.04 * u)], c.skin, SKIN_LINE)


def _torso(c: CharacterSpec, d: Body) -> list[Prim]:
    """The top, a collar bow (an accent that makes it read as clothing) and a belt over skirts and dresses."""
    u, sw, ww, y_sh, y_w = d.u, d.sw, d.ww, d.y_sh, d.y_w
    top = CLOTH_COLORS[c.top]
    r = 0.09 * u
    torso_bottom = y_w + (0.06 * u if c.outfit == "shirt_pants" else 0.0)
    torso = [(-sw, y_sh + r), (-sw + r, y_sh), (sw - r, y_sh), (sw, y_sh + r), (ww, torso_bottom), (-ww, torso_bottom)]
    prims: list[Prim] = [("P", torso, top, line_for(top))]
    accent = CLOTH_COLORS[c.accent] if c.accent != c.top else CLOTH_COLORS["red" if c.top != "red" else "blue"]
    prims += bow(0, y_sh + 0.05 * u, 0.1 * u, 0.6, accent)
    if c.outfit != "shirt_pants":
        belt = accent if c.outfit == "dress" else CLOTH_COLORS[c.bottom]
        box = [(-ww, y_w - 0.05 * u), (ww, y_w - 0.05 * u), (ww, y_w + 0.03 * u), (-ww, y_w + 0.03 * u)]
        prims.append(("P", box, belt, line_for(belt)))
    return prims


def _arm_prims(c: CharacterSpec, d: Body, arms: list[Joints]) -> list[Prim]:
    """Skin, then a long sleeve or a short one, then the hand."""
    arm_w, hand_r = d.arm_w, d.hand_r
    top = CLOTH_COLORS[c.top]
    prims: list[Prim] = []
    for shoulder, elbow, wrist in arms:
        arm = limb_poly([shoulder, elbow, wrist], [arm_w * 1.1, arm_w, arm_w * 0.8], caps=True)
        prims.append(("P", arm, c.skin, SKIN_LINE))
        if c.sleeves == "long":
            prims.append(("L", [shoulder, elbow, wrist], arm_w * 1.15, top, line_for(top)))
        else:
            prims.append(("L", [shoulder, along(shoulder, elbow, 0.5)], arm_w * 1.3, top, line_for(top)))
        prims.append(("E", wrist[0], wrist[1], hand_r, hand_r, c.skin, SKIN_LINE))
    return prims


def build_character(c: CharacterSpec) -> list[Prim]:
    """Every primitive of one character, back to front."""
    d = proportions(c)
    legs, shoes, prims = LEGS[c.pose](d)
    hair, hair_line = HAIR_COLORS[c.hair], dark(HAIR_COLORS[c.hair], 0.55)
    prims += [("P", outline, hair, hair_line) for outline in _back_hair(c, d)]
    prims += _leg_prims(c, d, legs, shoes)
    prims.append(_neck(c, d))
    prims.append(_lower_garment(c, d, legs))
    prims += _torso(c, d)
    prims += _arm_prims(c, d, _arm_joints(c, d))
    prims += build_head(c, d.u)
    return prims
