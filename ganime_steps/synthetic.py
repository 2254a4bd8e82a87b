"""The synthetic booru: procedurally drawn full-body anime girls with known attributes (the offline demo source).

Every post is a pure function of ``(seed, post_id, rates)``. A post is first *planned* (flags, characters, colours,
pose, tags; cheap, no drawing) and then *rendered* with Pillow at 2x and downscaled with Lanczos. The plan gives the
ground truth for the cleaning classifiers (``chibi``, ``multiple``, ``busy``, ``standing``) and noisy booru tags that,
like a real booru, still carry the study query tags on most flawed posts, so the cleaning stage has work to do.

Stage CLI: ``python -m ganime_steps.synthetic --n-posts N --seed S --out DIR`` writes ``DIR/truth.parquet`` and three
simulated hand-label CSVs (``synthetic_hand_labels_{chibi,multi,aesthetic}.csv``).
"""

from __future__ import annotations

import argparse
import colorsys
import functools
import hashlib
import io
import logging
import math
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ganime_steps.common import GanimeError, progress, read_parquet, run_cli, write_parquet, write_text
from ganime_steps.sources import PostMeta

log = logging.getLogger(__name__)

SOURCE_NAME = "synthetic"
STUDY_TAGS = ("1girl", "solo", "full_body", "standing", "white_background")
SUPERSAMPLE = 2
LABEL_FILES = {
    "chibi": "synthetic_hand_labels_chibi.csv",
    "multi": "synthetic_hand_labels_multi.csv",
    "aesthetic": "synthetic_hand_labels_aesthetic.csv",
}
# Which truth column a hand-label task asks about (positive = 1).
LABEL_TRUTH_COLUMN = {"chibi": "chibi", "multi": "multiple", "aesthetic": "busy"}
TRUTH_COLUMNS = ("source", "post_id", "chibi", "multiple", "busy", "standing", "n_characters")

RGB = tuple[int, int, int]
Box = tuple[int, int, int, int]

HAIR_COLORS: dict[str, RGB] = {
    "black": (46, 40, 56),
    "brown": (124, 78, 46),
    "blonde": (246, 214, 112),
    "red": (206, 48, 56),
    "blue": (62, 104, 214),
    "pink": (246, 150, 192),
    "purple": (146, 84, 196),
    "green": (72, 164, 92),
    "silver": (196, 200, 214),
    "orange": (242, 142, 52),
    "aqua": (82, 202, 212),
}
EYE_COLORS: dict[str, RGB] = {
    "blue": (50, 110, 230),
    "red": (214, 40, 50),
    "green": (40, 170, 80),
    "brown": (140, 84, 40),
    "purple": (150, 70, 210),
    "yellow": (236, 190, 30),
    "aqua": (40, 196, 210),
    "pink": (236, 100, 170),
}
CLOTH_COLORS: dict[str, RGB] = {
    "red": (214, 52, 60),
    "blue": (60, 110, 216),
    "black": (52, 50, 60),
    "white": (246, 246, 250),
    "pink": (244, 152, 190),
    "green": (66, 160, 90),
    "yellow": (244, 212, 70),
    "purple": (140, 86, 196),
    "orange": (242, 146, 54),
    "grey": (140, 142, 152),
    "brown": (128, 86, 56),
    "aqua": (76, 196, 206),
}
SKIN_TONES: tuple[RGB, ...] = ((255, 232, 214), (252, 222, 200), (244, 208, 184), (232, 190, 160), (196, 146, 112))
SHOE_COLORS: dict[str, RGB] = {
    "black": (44, 40, 48),
    "brown": (118, 72, 42),
    "red": (196, 44, 52),
    "white": (240, 240, 244),
}
HAIR_STYLES = ("short", "long", "twintails", "ponytail", "bob")
NONSTANDING_POSES = ("sitting_chair", "sitting_floor", "kneeling", "lying")
POSE_TAG = {"sitting_chair": "sitting", "sitting_floor": "sitting", "kneeling": "kneeling", "lying": "lying"}
LINE_ART: RGB = (58, 40, 44)
SKIN_LINE: RGB = (176, 116, 104)
WHITE: RGB = (255, 255, 255)


@dataclass(frozen=True)
class Rates:
    """Probability of each (independent) flaw per post."""

    chibi: float = 0.2
    multiple: float = 0.15
    busy: float = 0.2
    nonstanding: float = 0.1

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise GanimeError(f"synthetic rate --{name} = {value!r}: must be a probability in [0, 1]")


# The look of a synthetic source, each with its own default flaw rates: "booru" (mixed posts with the study's flaws)
# or "tachie" (white-background standing portraits in a pastel palette, as character-art sites publish them): a
# second source for the dataset study, different enough that FID tells the two apart.
STYLE_RATES = {"booru": Rates(), "tachie": Rates(chibi=0.1, multiple=0.05, busy=0.0, nonstanding=0.0)}
TACHIE_PASTEL = 0.3  # share of white blended into a tachie's colours (white stays white)


@dataclass(frozen=True)
class CharacterSpec:
    """Everything needed to draw one character; drawn from the post's own RNG."""

    head_ratio: float  # head height / standing body height
    hair_style: str
    hair: str  # colour names (keys of the palettes) so they double as tags
    eyes: str
    skin: RGB
    outfit: str  # dress / shirt_skirt / shirt_pants
    top: str
    bottom: str
    sleeves: str  # short / long
    legwear: str  # bare / black_thighhighs / white_thighhighs
    shoes: str
    pose: str  # standing or one of NONSTANDING_POSES
    arms: str  # down / wave / hips
    mouth: str  # smile / open / flat
    blush: bool
    accessory: str  # none / hair_ribbon / hairband
    accent: str  # ribbon / bow colour name
    facing: int  # -1 or 1: side the legs point to when sitting/kneeling, head side when lying
    size: float  # relative size among characters of one post (1.0 for the tallest)


@dataclass(frozen=True)
class PostPlan:
    """A post before drawing: flags, canvas, characters, background and the booru's (noisy) metadata."""

    seed: int
    post_id: int
    width: int
    height: int
    chibi: bool
    multiple: bool
    busy: bool
    standing: bool
    characters: tuple[CharacterSpec, ...]
    background: str  # white / solid / gradient
    bg_colors: tuple[RGB, RGB]
    shadow: bool  # soft floor shadow under clean posts
    tags: str
    rating: str
    score: int
    style: str = "booru"

    @property
    def n_characters(self) -> int:
        return len(self.characters)


@dataclass(frozen=True)
class SyntheticTruth:
    """Ground truth of one rendered post, in output-image pixel coordinates."""

    post_id: int
    width: int
    height: int
    chibi: bool
    multiple: bool
    busy: bool
    standing: bool
    n_characters: int
    face_boxes: tuple[Box, ...]  # (x, y, w, h), square around each head, clipped to the image
    char_boxes: tuple[Box, ...]  # (x, y, w, h), everything drawn for each character
    body_heights: tuple[float, ...]  # standing-equivalent height (hair top to sole) in pixels
    head_ratios: tuple[float, ...]  # unclipped head-box height / body height, measured after layout
    poses: tuple[str, ...]


@dataclass
class SyntheticSummary:
    n_posts: int
    seed: int
    rates: dict[str, float]
    positives: dict[str, int]
    study_query_matches: int
    label_rows: dict[str, int]
    truth: Path


# --------------------------------------------------------------------------------------------------------- planning


def _rng(seed: int, post_id: int, stream: str) -> random.Random:
    """An independent, platform-stable RNG per (seed, post, purpose): changing one rate never reshuffles colours."""
    digest = hashlib.blake2b(f"{seed}/{post_id}/{stream}".encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


def _hsv(h: float, s: float, v: float) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return (round(r * 255), round(g * 255), round(b * 255))


def _character(rng: random.Random, *, chibi: bool, pose: str, size: float) -> CharacterSpec:
    outfit = rng.choice(("dress", "dress", "shirt_skirt", "shirt_skirt", "shirt_pants"))
    top = rng.choice(list(CLOTH_COLORS))
    bottom = rng.choice([c for c in CLOTH_COLORS if c != top])
    legwear = "bare"
    if outfit != "shirt_pants":
        legwear = rng.choice(("bare", "bare", "black_thighhighs", "white_thighhighs"))
    arms = (
        "down" if pose in ("lying", "sitting_chair", "sitting_floor") else rng.choice(("down", "down", "wave", "hips"))
    )
    return CharacterSpec(
        head_ratio=rng.uniform(0.37, 0.45) if chibi else rng.uniform(1 / 7.5, 1 / 6.0),
        hair_style=rng.choice(HAIR_STYLES),
        hair=rng.choice(list(HAIR_COLORS)),
        eyes=rng.choice(list(EYE_COLORS)),
        skin=SKIN_TONES[min(int(rng.expovariate(1.2)), len(SKIN_TONES) - 1)],
        outfit=outfit,
        top=top,
        bottom=bottom,
        sleeves=rng.choice(("short", "long")),
        legwear=legwear,
        shoes=rng.choice(list(SHOE_COLORS)),
        pose=pose,
        arms=arms,
        mouth=rng.choice(("smile", "smile", "open", "flat")),
        blush=rng.random() < 0.4,
        accessory=rng.choice(("none", "none", "hair_ribbon", "hairband")),
        accent=rng.choice(("red", "pink", "blue", "yellow", "white", "black")),
        facing=rng.choice((-1, 1)),
        size=size,
    )


def _canvas_size(rng: random.Random, n: int, poses: list[str]) -> tuple[int, int]:
    if n >= 3:
        return rng.randint(208, 256), rng.randint(160, 240)
    if n == 2:
        return rng.randint(176, 256), rng.randint(176, 256)
    if poses[0] == "lying":
        return rng.randint(192, 256), rng.randint(128, 176)
    if poses[0] != "standing":
        return rng.randint(144, 224), rng.randint(160, 240)
    w = rng.randint(128, 192)
    return w, rng.randint(max(w + 24, 176), 256)


def _tags(rng: random.Random, plan_flags: dict, chars: tuple[CharacterSpec, ...], background: str, bg_name: str) -> str:
    """Booru-style tags, noisy like real ones: flawed posts mostly keep the study tags."""
    n = len(chars)
    tags: set[str] = set()
    multi_tagged = plan_flags["multiple"] and rng.random() < 0.5
    keep = {t: 0.995 for t in STUDY_TAGS}
    if multi_tagged:
        keep["1girl"], keep["solo"] = 0.85, 0.6
        tags.update(("multiple_girls", f"{n}girls"))
    if not plan_flags["standing"]:
        keep["standing"] = 0.85
        keep["full_body"] = 0.95
    if plan_flags["busy"]:
        keep["white_background"] = 0.7
    for tag in STUDY_TAGS:
        if rng.random() < keep[tag]:
            tags.add(tag)
    if plan_flags["chibi"] and rng.random() < 0.6:
        tags.add("chibi")
    if not plan_flags["standing"] and rng.random() < 0.6:
        tags.update(POSE_TAG[c.pose] for c in chars if c.pose in POSE_TAG)
    if plan_flags["busy"]:
        if rng.random() < 0.5:
            tags.add(f"{bg_name}_background" if background == "solid" else "gradient_background")
        if rng.random() < 0.5:
            tags.add("sparkle")
    elif rng.random() < 0.7:
        tags.add("simple_background")
    for c in chars:
        # Attribute tags are mostly, not always, present (taggers miss things).
        attrs = [f"{c.hair}_hair", f"{c.eyes}_eyes", "looking_at_viewer"]
        attrs += {
            "short": ["short_hair"],
            "bob": ["short_hair", "bob_cut"],
            "long": ["long_hair"],
            "twintails": ["twintails", "long_hair"],
            "ponytail": ["ponytail"],
        }[c.hair_style]
        if c.outfit == "dress":
            attrs += ["dress", f"{c.top}_dress"]
        elif c.outfit == "shirt_skirt":
            attrs += ["shirt", "skirt", f"{c.top}_shirt", f"{c.bottom}_skirt"]
        else:
            attrs += ["shirt", "pants", f"{c.top}_shirt", f"{c.bottom}_pants"]
        if c.legwear != "bare":
            attrs += ["thighhighs", c.legwear]
        attrs += {"smile": ["smile"], "open": ["open_mouth", "smile"], "flat": []}[c.mouth]
        attrs += ["blush"] if c.blush else []
        attrs += [] if c.accessory == "none" else [c.accessory]
        attrs += {"wave": ["waving", "arm_up"], "hips": ["hand_on_own_hip"], "down": []}[c.arms]
        attrs += ["short_sleeves" if c.sleeves == "short" else "long_sleeves"]
        tags.update(a for a in attrs if rng.random() < 0.9)
    for extra, p in (("original", 0.5), ("highres", 0.3), ("absurdres", 0.05), ("commentary_request", 0.2)):
        if rng.random() < p:
            tags.add(extra)
    return " ".join(sorted(tags))


@functools.lru_cache(maxsize=16384)
def _plan_cached(seed: int, post_id: int, rates: Rates, style: str = "booru") -> PostPlan:
    flag_rng = _rng(seed, post_id, "flags")
    # Four uniforms drawn in a fixed order; a flag is set when its uniform falls below its rate (independent flags).
    u_chibi, u_multi, u_busy, u_pose = (flag_rng.random() for _ in range(4))
    chibi, multiple, busy, standing = (
        u_chibi < rates.chibi,
        u_multi < rates.multiple,
        u_busy < rates.busy,
        not (u_pose < rates.nonstanding),
    )
    rng = _rng(seed, post_id, "characters")
    n = rng.choice((2, 2, 3)) if multiple else 1
    poses = ["standing"] * n if standing else [rng.choice(NONSTANDING_POSES) for _ in range(n)]
    sizes = [1.0] + [rng.uniform(0.85, 1.0) for _ in range(n - 1)]
    rng.shuffle(sizes)
    chars = tuple(_character(rng, chibi=chibi, pose=p, size=s) for p, s in zip(poses, sizes, strict=True))
    width, height = _canvas_size(rng, n, poses)
    if style == "tachie" and n == 1 and standing:  # a tall portrait the character fills
        width, height = rng.randint(112, 144), rng.randint(232, 256)
    bg_rng = _rng(seed, post_id, "background")
    background, bg_colors, bg_name = "white", (WHITE, WHITE), "white"
    if busy:
        background = bg_rng.choice(("solid", "gradient", "gradient"))
        hue = bg_rng.random()
        # Saturated enough and dark enough that "not a white background" is obvious even at 64 px.
        c1 = _hsv(hue, bg_rng.uniform(0.35, 0.85), bg_rng.uniform(0.55, 0.92))
        c2 = _hsv(hue + bg_rng.uniform(0.1, 0.4), bg_rng.uniform(0.3, 0.8), bg_rng.uniform(0.5, 0.95))
        bg_colors = (c1, c2)
        bg_name = _color_name(hue)
    shadow = not busy and bg_rng.random() < 0.5 and style == "booru"
    tag_rng = _rng(seed, post_id, "tags")
    flags = {"chibi": chibi, "multiple": multiple, "busy": busy, "standing": standing}
    tags = _tags(tag_rng, flags, chars, background, bg_name)
    rating = "general" if tag_rng.random() < 0.9 else "sensitive"
    score = min(100, int(tag_rng.gammavariate(2.0, 8.0)))
    return PostPlan(
        seed=seed,
        post_id=post_id,
        width=width,
        height=height,
        chibi=chibi,
        multiple=multiple,
        busy=busy,
        standing=standing,
        characters=chars,
        background=background,
        bg_colors=bg_colors,
        shadow=shadow,
        tags=tags,
        rating=rating,
        score=score,
        style=style,
    )


def _color_name(hue: float) -> str:
    names = ("red", "orange", "yellow", "green", "green", "aqua", "blue", "blue", "purple", "pink", "pink", "red")
    return names[int((hue % 1.0) * 12) % 12]


def plan_post(seed: int, post_id: int, style: str = "booru", **rates: float) -> PostPlan:
    """The post's attributes without drawing it (cheap; used for listing, tags and truth tables)."""
    style = _check_style(style)
    return _plan_cached(int(seed), int(post_id), Rates(**{**asdict(STYLE_RATES[style]), **rates}), style)


def _check_style(style: str) -> str:
    if style not in STYLE_RATES:
        raise GanimeError(f"synthetic style {style!r}: unknown; use one of {', '.join(STYLE_RATES)}")
    return style


# ---------------------------------------------------------------------------------------------------------- drawing
# A character is built as primitives in normalised coordinates: standing body height T = 1, x = 0 at the body's centre,
# y = 0 at the top of the hair, y grows downwards. Layout then scales and translates them into the supersampled canvas.
# ("P", points, fill, outline) polygon; ("E", cx, cy, rx, ry, fill, outline) ellipse;
# ("L", points, width, fill, outline) round-capped thick polyline (limbs).
Prim = tuple


def _dark(c: RGB, f: float = 0.58) -> RGB:
    return (int(c[0] * f), int(c[1] * f), int(c[2] * f))


def _line_for(c: RGB) -> RGB:
    """Line-art colour for a fill: a darker shade, but never invisible on white fills."""
    return (116, 116, 136) if min(c) > 220 else _dark(c)


def _ellipse_pts(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int) -> list[tuple[float, float]]:
    return [
        (cx + rx * math.cos(math.radians(a)), cy + ry * math.sin(math.radians(a)))
        for a in (a0 + (a1 - a0) * i / (n - 1) for i in range(n))
    ]


def _hull(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
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


def _limb_poly(pts: list[tuple[float, float]], widths: list[float], caps: bool = False) -> list[tuple[float, float]]:
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

    def cap(center, normal, half, sign):
        # Half circle from the right edge around the end to the left edge.
        cx, cy = center
        nx, ny = normal
        tx, ty = -ny * sign, nx * sign  # pointing out of the limb
        return [
            (cx + half * (-nx * math.cos(a) + tx * math.sin(a)), cy + half * (-ny * math.cos(a) + ty * math.sin(a)))
            for a in (math.pi * j / 4 for j in range(1, 4))
        ]

    end = cap(pts[-1], normals[-1], widths[-1] / 2, -1)
    start = cap(pts[0], normals[0], widths[0] / 2, 1)
    return left + end[::-1] + right[::-1] + start


def _polar(origin: tuple[float, float], length: float, angle_deg: float, side: int) -> tuple[float, float]:
    """Point at ``length`` from ``origin``; angle 0 = straight down, positive = away from the body on ``side``."""
    a = math.radians(angle_deg)
    return (origin[0] + side * length * math.sin(a), origin[1] + length * math.cos(a))


def _build_character(c: CharacterSpec) -> list[Prim]:
    u = c.head_ratio
    b = 1.0 - u
    chibi = u > 0.3
    f = c.facing
    hair, hair_line = HAIR_COLORS[c.hair], _dark(HAIR_COLORS[c.hair], 0.55)
    skin = c.skin
    top, bottom = CLOTH_COLORS[c.top], CLOTH_COLORS[c.bottom]
    shoe = SHOE_COLORS[c.shoes]
    prims: list[Prim] = []

    # Body proportions (in T units). Chibi bodies are short and stubby relative to the head.
    sw = (0.36 if chibi else 0.52) * u  # shoulder half-width
    ww = (0.30 if chibi else 0.30) * u  # waist half-width
    hw = (0.36 if chibi else 0.44) * u  # hip half-width
    arm_w = (0.16 if chibi else 0.2) * u
    thigh_w, shin_w = (0.24, 0.2) if chibi else (0.36, 0.22)
    thigh_w, shin_w = thigh_w * u, shin_w * u
    fh = (0.07 if chibi else 0.035) * b  # shoe height
    y_sh = u + (0.04 if chibi else 0.038) * b
    y_w = u + 0.30 * b
    y_h = u + 0.42 * b
    hip_x = (0.15 if chibi else 0.19) * u
    ankle_y = 1.0 - max(fh * 0.6, shin_w / 2)
    leg_len = ankle_y - y_h
    upper_arm, fore_arm = (0.20 * b, 0.18 * b) if not chibi else (0.22 * b, 0.20 * b)
    hand_r = (0.10 if chibi else 0.085) * u

    # --- legs: (hip, knee, ankle) per side, and where the shoe sits
    legs: list[tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = []
    shoes: list[tuple[float, float, float, float]] = []  # cx, cy, rx, ry
    ground = 1.0
    if c.pose in ("standing", "lying"):
        spread = 0.06 * u
        for s in (-1, 1):
            hip = (s * hip_x, y_h)
            ankle = (s * (hip_x + spread), ankle_y)
            knee = ((hip[0] + ankle[0]) / 2, (hip[1] + ankle[1]) / 2)
            legs.append((hip, knee, ankle))
            shoes.append((ankle[0] + s * 0.03 * u, 1.0 - fh / 2, (0.14 if chibi else 0.13) * u, fh / 2))
    elif c.pose == "sitting_chair":
        lt = leg_len * 0.5
        for k, s in enumerate((-f, f)):  # back leg first
            dx = 0.05 * u * (1 if k else -1)
            hip = (s * hip_x * 0.3 + dx, y_h)
            knee = (hip[0] * 0.3 + f * lt + dx, y_h)
            ankle = (knee[0], y_h + lt)
            legs.append((hip, knee, ankle))
            shoes.append((ankle[0] + f * 0.06 * u, ankle[1] + fh * 0.3, 0.17 * u, fh / 2 + 0.02 * u))
        ground = y_h + lt + fh * 0.3 + fh / 2 + 0.02 * u
        seat = (0.45 if chibi else 0.4) * u
        stool = (128, 88, 58) if c.facing > 0 else (150, 150, 160)
        sx0, sx1 = (-hw * 1.3, hw * 1.3)
        prims.append(
            ("P", [(sx0, y_h + seat * 0.3), (sx1, y_h + seat * 0.3), (sx1, ground), (sx0, ground)], stool, _dark(stool))
        )
    elif c.pose == "sitting_floor":
        lt = leg_len * 0.5
        ground = y_h + thigh_w * 0.6
        for k, s in enumerate((-f, f)):
            dy = -0.04 * u * (1 if k else 0)
            hip = (s * hip_x * 0.3, y_h + dy)
            knee = (hip[0] + f * lt * 0.92, y_h - lt * 0.32 + dy)
            ankle = (knee[0] + f * lt * 0.92, ground - shin_w / 2)
            legs.append((hip, knee, ankle))
            shoes.append((ankle[0] + f * 0.05 * u, ankle[1] - 0.06 * u, fh * 0.6 + 0.03 * u, 0.13 * u))
    elif c.pose == "kneeling":
        # On one knee, seen from the side: back thigh down to the knee on the ground, shin flat behind;
        # front thigh forward, shin straight down to a flat foot.
        lt = leg_len * 0.5
        ground = y_h + lt + shin_w * 0.5
        hip = (-f * hip_x * 0.4, y_h)
        knee = (hip[0] + f * 0.08 * u, y_h + lt)
        ankle = (knee[0] - f * lt * 0.9, knee[1])
        legs.append((hip, knee, ankle))
        shoes.append((ankle[0] - f * 0.04 * u, ankle[1] - 0.02 * u, 0.07 * u + fh * 0.5, 0.09 * u + fh * 0.3))
        hip = (f * hip_x * 0.4, y_h)
        knee = (hip[0] + f * lt * 0.9, y_h + 0.1 * lt)
        ankle = (knee[0], ground - fh)
        legs.append((hip, knee, ankle))
        shoes.append((ankle[0] + f * 0.07 * u, ground - fh / 2, (0.14 if chibi else 0.13) * u + 0.03 * u, fh / 2))

    # --- arms: (shoulder, elbow, wrist) per side
    arms: list[tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = []
    for s in (-1, 1):
        shoulder = (s * (sw - arm_w * 0.45), y_sh + arm_w * 0.5)
        if c.pose in ("sitting_chair", "sitting_floor"):
            elbow = _polar(shoulder, upper_arm, 8, s)
            wrist = (elbow[0] + f * fore_arm * 0.8, elbow[1] + fore_arm * 0.45)
        elif c.arms == "wave" and s == f:
            elbow = _polar(shoulder, upper_arm, 125, s)
            wrist = _polar(elbow, fore_arm, 168, s)
        elif c.arms == "hips":
            elbow = _polar(shoulder, upper_arm, 42 if not chibi else 30, s)
            wrist = (s * (ww + hand_r * 0.6), y_w)
        else:
            elbow = _polar(shoulder, upper_arm, 14, s)
            wrist = _polar(elbow, fore_arm, 8, s)
        arms.append((shoulder, elbow, wrist))

    # --- back hair (behind everything of the body)
    hair_end = y_h - 0.05 * b if chibi else y_w + 0.45 * (y_h - y_w)
    if c.hair_style == "long":
        top_y, mid = 0.3 * u, (0.3 * u + hair_end) / 2
        prims.append(
            (
                "P",
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
                ],
                hair,
                hair_line,
            )
        )
    elif c.hair_style == "bob":
        prims.append(
            (
                "P",
                [
                    (-0.5 * u, 0.3 * u),
                    (0.5 * u, 0.3 * u),
                    (0.6 * u, 0.8 * u),
                    (0.55 * u, 1.08 * u),
                    (-0.55 * u, 1.08 * u),
                    (-0.6 * u, 0.8 * u),
                ],
                hair,
                hair_line,
            )
        )
    elif c.hair_style == "twintails":
        tail_end = hair_end
        for s in (-1, 1):
            prims.append(
                (
                    "P",
                    [
                        (s * 0.4 * u, 0.22 * u),
                        (s * 0.78 * u, 0.3 * u),
                        (s * 0.92 * u, 0.8 * u),
                        (s * 0.86 * u, (0.8 * u + tail_end) / 2),
                        (s * 0.7 * u, tail_end),
                        (s * 0.64 * u, (0.8 * u + tail_end) / 2),
                        (s * 0.56 * u, 0.62 * u),
                    ],
                    hair,
                    hair_line,
                )
            )
    elif c.hair_style == "ponytail":
        s = -f
        tip = min(1.9 * u, hair_end)
        prims.append(
            (
                "P",
                [
                    (s * 0.25 * u, 0.08 * u),
                    (s * 0.72 * u, 0.06 * u),
                    (s * 0.95 * u, 0.4 * u),
                    (s * 0.9 * u, (0.4 * u + tip) / 2),
                    (s * 0.72 * u, tip),
                    (s * 0.66 * u, (0.4 * u + tip) / 2),
                    (s * 0.5 * u, 0.4 * u),
                ],
                hair,
                hair_line,
            )
        )

    # --- legs, legwear, shoes
    pants = c.outfit == "shirt_pants"
    leg_fill = bottom if pants else skin
    leg_line = _line_for(bottom) if pants else SKIN_LINE
    for hip, knee, ankle in legs:
        prims.append(
            ("P", _limb_poly([hip, knee, ankle], [thigh_w, (thigh_w + shin_w) / 2, shin_w]), leg_fill, leg_line)
        )
        if c.legwear != "bare":
            sock = CLOTH_COLORS["black" if c.legwear.startswith("black") else "white"]
            above = (hip[0] + (knee[0] - hip[0]) * 0.55, hip[1] + (knee[1] - hip[1]) * 0.55)
            widths = [thigh_w * 0.92 + shin_w * 0.08, (thigh_w + shin_w) / 2 + 0.01 * u, shin_w + 0.01 * u]
            prims.append(("P", _limb_poly([above, knee, ankle], widths), sock, _line_for(sock)))
    for cx, cy, rx, ry in shoes:
        prims.append(("E", cx, cy, rx, ry, shoe, _line_for(shoe)))

    # --- neck, skirt / hips, torso
    nw = (0.13 if chibi else 0.09) * u
    prims.append(("P", [(-nw, 0.8 * u), (nw, 0.8 * u), (nw, y_sh + 0.04 * u), (-nw, y_sh + 0.04 * u)], skin, SKIN_LINE))
    lower = top if c.outfit == "dress" else bottom
    if pants:
        pts = [(-ww, y_w - 0.05 * u), (ww, y_w - 0.05 * u)]
        for hip, knee, _ in legs:
            d = math.dist(hip, knee) or 1.0
            nx, ny = -(knee[1] - hip[1]) / d, (knee[0] - hip[0]) / d
            for sgn in (-1, 1):
                pts.append((hip[0] + sgn * nx * thigh_w * 0.55, hip[1] + sgn * ny * thigh_w * 0.55))
        prims.append(("P", _hull(pts), lower, _line_for(lower)))
    else:
        frac = 0.8 if c.outfit == "dress" else 0.5
        if chibi:
            frac = min(1.0, frac + 0.25)
        flare = (0.26 if chibi else 0.34) * u
        if c.pose in ("sitting_chair", "sitting_floor", "kneeling"):
            # A lap, not a bell: the skirt drapes along the bent thighs and shows the knees.
            frac, flare = min(frac, 0.6), 0.22 * u
        pts = [(-ww, y_w - 0.02 * u), (ww, y_w - 0.02 * u), (-hw, y_h - 0.05 * b), (hw, y_h - 0.05 * b)]
        for hip, knee, _ in legs:
            d = math.dist(hip, knee) or 1.0
            nx, ny = -(knee[1] - hip[1]) / d, (knee[0] - hip[0]) / d
            hem = (hip[0] + (knee[0] - hip[0]) * frac, hip[1] + (knee[1] - hip[1]) * frac)
            for sgn in (-1, 1):
                pts.append((hem[0] + sgn * nx * flare, hem[1] + sgn * ny * flare))
        prims.append(("P", _hull(pts), lower, _line_for(lower)))
    r = 0.09 * u
    torso_bottom = y_w + (0.06 * u if pants else 0.0)
    torso = [(-sw, y_sh + r), (-sw + r, y_sh), (sw - r, y_sh), (sw, y_sh + r), (ww, torso_bottom), (-ww, torso_bottom)]
    prims.append(("P", torso, top, _line_for(top)))
    # Collar bow: a small accent that makes the torso read as clothing.
    accent = CLOTH_COLORS[c.accent] if c.accent != c.top else CLOTH_COLORS["red" if c.top != "red" else "blue"]
    bw = 0.1 * u
    by = y_sh + 0.05 * u
    prims.append(("P", [(0, by), (-bw, by - bw * 0.6), (-bw, by + bw * 0.6)], accent, _line_for(accent)))
    prims.append(("P", [(0, by), (bw, by - bw * 0.6), (bw, by + bw * 0.6)], accent, _line_for(accent)))
    if c.outfit != "shirt_pants":
        prims.append(
            (
                "P",
                [(-ww, y_w - 0.05 * u), (ww, y_w - 0.05 * u), (ww, y_w + 0.03 * u), (-ww, y_w + 0.03 * u)],
                accent if c.outfit == "dress" else lower,
                _line_for(accent if c.outfit == "dress" else lower),
            )
        )

    # --- arms (skin, then sleeves, then hands)
    for shoulder, elbow, wrist in arms:
        arm = _limb_poly([shoulder, elbow, wrist], [arm_w * 1.1, arm_w, arm_w * 0.8], caps=True)
        prims.append(("P", arm, skin, SKIN_LINE))
        if c.sleeves == "long":
            prims.append(("L", [shoulder, elbow, wrist], arm_w * 1.15, top, _line_for(top)))
        else:
            cuff = (shoulder[0] + (elbow[0] - shoulder[0]) * 0.5, shoulder[1] + (elbow[1] - shoulder[1]) * 0.5)
            prims.append(("L", [shoulder, cuff], arm_w * 1.3, top, _line_for(top)))
        prims.append(("E", wrist[0], wrist[1], hand_r, hand_r, skin, SKIN_LINE))

    prims += _head(c, u)
    return prims


def _head(c: CharacterSpec, u: float) -> list[Prim]:
    """Hair cap, face, big eyes, mouth, bangs, side locks and hair accessories; the head box is [-u/2, u/2] x [0, u]."""
    hair, hair_line = HAIR_COLORS[c.hair], _dark(HAIR_COLORS[c.hair], 0.55)
    iris = EYE_COLORS[c.eyes]
    skin = c.skin
    p: list[Prim] = []
    cap_cy, cap_rx, cap_ry = 0.48 * u, 0.5 * u, 0.48 * u
    p.append(("E", 0.0, cap_cy, cap_rx, cap_ry, hair, hair_line))
    face = _ellipse_pts(0.0, 0.55 * u, 0.41 * u, 0.37 * u, 180, 360, 9)
    face += [(0.39 * u, 0.7 * u), (0.22 * u, 0.9 * u), (0.0, 1.0 * u), (-0.22 * u, 0.9 * u), (-0.39 * u, 0.7 * u)]
    p.append(("P", face, skin, SKIN_LINE))
    if c.blush:
        for s in (-1, 1):
            p.append(("E", s * 0.25 * u, 0.78 * u, 0.08 * u, 0.035 * u, (246, 170, 170), None))
    ye = 0.64 * u
    for s in (-1, 1):
        ex = s * 0.17 * u
        p.append(("E", ex, ye, 0.1 * u, 0.11 * u, WHITE, None))
        p.append(("E", ex, ye + 0.015 * u, 0.08 * u, 0.105 * u, iris, _dark(iris, 0.45)))
        p.append(("E", ex, ye + 0.035 * u, 0.04 * u, 0.055 * u, _dark(iris, 0.35), None))
        p.append(("E", ex - s * 0.03 * u, ye - 0.03 * u, 0.03 * u, 0.03 * u, WHITE, None))
        lash = [
            (ex - s * 0.06 * u, ye - 0.1 * u),
            (ex + s * 0.1 * u, ye - 0.095 * u),
            (ex + s * 0.14 * u, ye - 0.04 * u),
            (ex + s * 0.09 * u, ye - 0.07 * u),
            (ex - s * 0.11 * u, ye - 0.06 * u),
        ]
        p.append(("P", lash, LINE_ART, None))
    mouth_y = 0.87 * u
    if c.mouth == "open":
        p.append(
            (
                "P",
                [(-0.06 * u, mouth_y - 0.015 * u), (0.06 * u, mouth_y - 0.015 * u), (0.0, mouth_y + 0.05 * u)],
                (206, 72, 84),
                (120, 40, 48),
            )
        )
    elif c.mouth == "smile":
        p.append(
            (
                "L",
                [(-0.06 * u, mouth_y - 0.01 * u), (0.0, mouth_y + 0.015 * u), (0.06 * u, mouth_y - 0.01 * u)],
                0.018 * u,
                (150, 60, 60),
                None,
            )
        )
    else:
        p.append(("L", [(-0.04 * u, mouth_y), (0.04 * u, mouth_y)], 0.018 * u, (150, 60, 60), None))
    # Bangs: the top of the hair cap down to a zigzag fringe that stops above the eyes.
    bangs = _ellipse_pts(0.0, cap_cy, cap_rx, cap_ry, 180, 360, 11)
    n_tips = 5
    fringe = []
    for i in range(n_tips * 2 + 1):
        x = 0.5 * u - i * (1.0 * u / (n_tips * 2))
        fringe.append((x, (0.44 if i % 2 else 0.3) * u))
    bangs += [(0.5 * u, 0.5 * u)] + fringe + [(-0.5 * u, 0.5 * u)]
    p.append(("P", bangs, hair, hair_line))
    lock_end = {"short": 0.72, "bob": 1.0, "long": 1.05, "twintails": 0.95, "ponytail": 0.9}[c.hair_style] * u
    for s in (-1, 1):
        p.append(
            (
                "P",
                [
                    (s * 0.5 * u, 0.4 * u),
                    (s * 0.36 * u, 0.45 * u),
                    (s * 0.38 * u, lock_end - 0.12 * u),
                    (s * 0.44 * u, lock_end),
                    (s * 0.53 * u, 0.7 * u),
                ],
                hair,
                hair_line,
            )
        )
    accent = CLOTH_COLORS[c.accent]
    if c.hair_style == "twintails":
        for s in (-1, 1):
            p.append(("E", s * 0.47 * u, 0.24 * u, 0.07 * u, 0.07 * u, accent, _line_for(accent)))
    if c.hair_style == "ponytail":
        p.append(("E", -c.facing * 0.5 * u, 0.16 * u, 0.06 * u, 0.06 * u, accent, _line_for(accent)))
    if c.accessory == "hairband":
        p.append(
            (
                "L",
                _ellipse_pts(0.0, cap_cy, cap_rx * 0.92, cap_ry * 0.8, 200, 340, 7),
                0.07 * u,
                accent,
                _line_for(accent),
            )
        )
    elif c.accessory == "hair_ribbon":
        bx, by, r = c.facing * 0.3 * u, 0.14 * u, 0.13 * u
        p.append(("P", [(bx, by), (bx - r, by - r * 0.7), (bx - r, by + r * 0.7)], accent, _line_for(accent)))
        p.append(("P", [(bx, by), (bx + r, by - r * 0.7), (bx + r, by + r * 0.7)], accent, _line_for(accent)))
        p.append(("E", bx, by, r * 0.3, r * 0.3, accent, _line_for(accent)))
    return p


def _rotate(prims: list[Prim], d: int) -> list[Prim]:
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


def _bbox(prims: list[Prim]) -> tuple[float, float, float, float]:
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


def _draw_prims(draw: ImageDraw.ImageDraw, prims: list[Prim], k: float, ox: float, oy: float, ow: int) -> None:
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


def _background(plan: PostPlan, size: tuple[int, int], rng: random.Random) -> Image.Image:
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


def _clutter(draw: ImageDraw.ImageDraw, size: tuple[int, int], rng: random.Random, *, front: bool) -> None:
    """Busy-image decoration: shapes behind the characters, sparkles and effect lines in front."""
    w, h = size
    s = min(w, h)
    if not front:
        if rng.random() < 0.4:  # radial speed lines
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            col = _hsv(rng.random(), 0.3, 1.0)
            for _ in range(rng.randint(16, 32)):
                a = rng.uniform(0, 2 * math.pi)
                r0 = rng.uniform(0.45, 0.7) * s
                draw.line(
                    [
                        (cx + r0 * math.cos(a), cy + r0 * math.sin(a)),
                        (cx + 2 * s * math.cos(a), cy + 2 * s * math.sin(a)),
                    ],
                    fill=col,
                    width=max(2, round(s * rng.uniform(0.006, 0.02))),
                )
        for _ in range(rng.randint(5, 16)):
            col = _hsv(rng.random(), rng.uniform(0.4, 0.9), rng.uniform(0.6, 1.0))
            cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.03, 0.12) * s
            kind = rng.choice(("circle", "square", "triangle", "star"))
            if kind == "circle":
                draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=col, outline=_dark(col), width=2)
            else:
                n = {"square": 4, "triangle": 3, "star": 10}[kind]
                a0 = rng.uniform(0, 2 * math.pi)
                pts = [
                    (cx + rr * math.cos(a0 + 2 * math.pi * i / n), cy + rr * math.sin(a0 + 2 * math.pi * i / n))
                    for i in range(n)
                    for rr in [r if kind != "star" or i % 2 == 0 else r * 0.45]
                ]
                draw.polygon(pts, fill=col, outline=_dark(col), width=2)
        return
    for _ in range(rng.randint(4, 12)):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.02, 0.06) * s
        col = rng.choice(((255, 255, 255), (255, 246, 160), (255, 220, 240)))
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


def _render(plan: PostPlan) -> tuple[Image.Image, SyntheticTruth]:
    ss = SUPERSAMPLE
    W, H = plan.width * ss, plan.height * ss
    draw_rng = _rng(plan.seed, plan.post_id, "draw")
    canvas = _background(plan, (W, H), draw_rng)
    draw = ImageDraw.Draw(canvas)
    if plan.busy:
        _clutter(draw, (W, H), draw_rng, front=False)

    built = []
    for c in plan.characters:
        prims = _build_character(c)
        head = (0.0, c.head_ratio / 2)
        if c.pose == "lying":
            prims = _rotate(prims, c.facing)
            head = (head[1], 0.0) if c.facing == 1 else (-head[1], 0.0)
        built.append((c, prims, _bbox(prims), head))

    # Layout: scale everyone by one factor so that they fit side by side, feet on a shared baseline.
    margin_x = draw_rng.uniform(0.04, 0.08) * W
    margin_top = draw_rng.uniform(0.03, 0.07) * H
    margin_bottom = draw_rng.uniform(0.03, 0.07) * H
    gap = 0.03 * W
    widths = [(bb[2] - bb[0]) * c.size for c, _, bb, _ in built]
    heights = [(bb[3] - bb[1]) * c.size for c, _, bb, _ in built]
    avail_w = W - 2 * margin_x - gap * (len(built) - 1)
    avail_h = H - margin_top - margin_bottom
    k = min(avail_w / sum(widths), avail_h / max(heights)) * draw_rng.uniform(0.86, 1.0)
    total_w = sum(widths) * k + gap * (len(built) - 1)
    x = (W - total_w) / 2 + draw_rng.uniform(-1, 1) * max(0.0, (W - total_w) / 2 - margin_x)
    baseline = H - margin_bottom - draw_rng.uniform(0, 1) * max(0.0, avail_h - max(heights) * k) * 0.5
    ow = 2 if k < 500 else 3

    face_boxes: list[Box] = []
    char_boxes: list[Box] = []
    body_heights: list[float] = []
    head_ratios: list[float] = []
    for (c, prims, bb, head), wi, hi in zip(built, widths, heights, strict=True):
        kc = k * c.size
        ox, oy = x - bb[0] * kc, baseline - hi * k - bb[1] * kc
        if plan.shadow:
            gx0, gx1, gy = x + 0.1 * wi * k, x + 0.9 * wi * k, baseline
            draw.ellipse((gx0, gy - 0.012 * H, gx1, gy + 0.012 * H), fill=(236, 236, 238))
        _draw_prims(draw, prims, kc, ox, oy, ow)
        # Truth in output pixels (canvas / ss).
        body_h = kc / ss
        side = c.head_ratio * kc / ss
        hx, hy = (ox + head[0] * kc) / ss, (oy + head[1] * kc) / ss
        fx, fy = round(hx - side / 2), round(hy - side / 2)
        fs = round(side)
        head_ratios.append(fs / body_h)
        body_heights.append(body_h)
        face_boxes.append(_clip_box(fx, fy, fs, fs, plan.width, plan.height))
        cx0, cy0 = (ox + bb[0] * kc - ow) / ss, (oy + bb[1] * kc - ow) / ss
        cx1, cy1 = (ox + bb[2] * kc + ow) / ss, (oy + bb[3] * kc + ow) / ss
        char_boxes.append(
            _clip_box(
                math.floor(cx0),
                math.floor(cy0),
                math.ceil(cx1) - math.floor(cx0),
                math.ceil(cy1) - math.floor(cy0),
                plan.width,
                plan.height,
            )
        )
        x += wi * k + gap
    if plan.busy:
        _clutter(draw, (W, H), draw_rng, front=True)

    image = canvas.resize((plan.width, plan.height), Image.Resampling.LANCZOS)
    if plan.style == "tachie":
        image = Image.blend(image, Image.new("RGB", image.size, WHITE), TACHIE_PASTEL)
    truth = SyntheticTruth(
        post_id=plan.post_id,
        width=plan.width,
        height=plan.height,
        chibi=plan.chibi,
        multiple=plan.multiple,
        busy=plan.busy,
        standing=plan.standing,
        n_characters=plan.n_characters,
        face_boxes=tuple(face_boxes),
        char_boxes=tuple(char_boxes),
        body_heights=tuple(body_heights),
        head_ratios=tuple(head_ratios),
        poses=tuple(c.pose for c in plan.characters),
    )
    return image, truth


def _clip_box(x: int, y: int, w: int, h: int, width: int, height: int) -> Box:
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(width, x + w), min(height, y + h)
    return (x0, y0, max(0, x1 - x0), max(0, y1 - y0))


def render_post(seed: int, post_id: int, style: str = "booru", **rates: float) -> tuple[Image.Image, SyntheticTruth]:
    """Draw one post: a pure function of ``(seed, post_id, style, rates)`` (chibi, multiple, busy, nonstanding)."""
    return _render(plan_post(seed, post_id, style, **rates))


def encode_png(image: Image.Image) -> bytes:
    """Deterministic PNG bytes: fixed zlib level (3: fast, ~7 % larger than 6), no optimise pass, no metadata."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False, compress_level=3)
    return buf.getvalue()


@functools.lru_cache(maxsize=1024)
def _rendered(seed: int, post_id: int, rates: Rates, style: str) -> tuple[bytes, str, SyntheticTruth]:
    # Listing needs the md5 and fetching needs the bytes: render once, serve both from here.
    image, truth = _render(_plan_cached(seed, post_id, rates, style))
    data = encode_png(image)
    return data, hashlib.md5(data).hexdigest(), truth


# ----------------------------------------------------------------------------------------------------------- source


_URL_RE = re.compile(r"^synthetic://(-?\d+)/(\d+)\.png$")


class SyntheticSource:
    """An offline booru of ``n_posts`` procedurally drawn posts (ids 1..n_posts), implementing ``Source``."""

    def __init__(
        self,
        n_posts: int = 300,
        seed: int = 0,
        chibi: float | None = None,
        multiple: float | None = None,
        busy: float | None = None,
        nonstanding: float | None = None,
        *,
        style: str = "booru",
        name: str = SOURCE_NAME,
    ) -> None:
        """Rates left as None take the style's defaults (STYLE_RATES)."""
        if isinstance(n_posts, bool) or not isinstance(n_posts, int) or n_posts < 1:
            raise GanimeError(f"synthetic source n_posts = {n_posts!r}: must be a positive integer (e.g. 300)")
        self.n_posts = n_posts
        self.seed = int(seed)
        self.style = _check_style(style)
        self.name = name
        given = {"chibi": chibi, "multiple": multiple, "busy": busy, "nonstanding": nonstanding}
        self.rates = Rates(**{**asdict(STYLE_RATES[style]), **{k: v for k, v in given.items() if v is not None}})

    def __repr__(self) -> str:
        return f"SyntheticSource(n_posts={self.n_posts}, seed={self.seed}, style={self.style!r}, {self.rates})"

    def plan(self, post_id: int) -> PostPlan:
        self._check_id(post_id)
        return _plan_cached(self.seed, post_id, self.rates, self.style)

    def truth(self, post_id: int) -> SyntheticTruth:
        self._check_id(post_id)
        return _rendered(self.seed, post_id, self.rates, self.style)[2]

    def _check_id(self, post_id: int) -> None:
        if not 1 <= post_id <= self.n_posts:
            raise GanimeError(f"synthetic post {post_id}: no such post (this source has ids 1..{self.n_posts})")

    def list_page(self, tags: str, before_id: int | None, limit: int) -> list[PostMeta]:
        """Up to ``limit`` posts with id < ``before_id`` carrying all ``tags``, newest first.

        Like a booru, ``-tag`` excludes a tag and ``rating:g`` / ``rating:general`` filters by rating.
        """
        if limit < 1:
            raise GanimeError(f"synthetic list_page limit = {limit}: must be at least 1")
        include, exclude, ratings = _parse_query(tags)
        start = self.n_posts if before_id is None else min(self.n_posts, before_id - 1)
        out: list[PostMeta] = []
        for post_id in range(start, 0, -1):
            plan = _plan_cached(self.seed, post_id, self.rates, self.style)
            post_tags = set(plan.tags.split())
            if not include <= post_tags or exclude & post_tags:
                continue
            if ratings and not any(plan.rating.startswith(r) for r in ratings):
                continue
            out.append(self._meta(plan))
            if len(out) >= limit:
                break
        return out

    def _meta(self, plan: PostPlan) -> PostMeta:
        _, md5, truth = _rendered(self.seed, plan.post_id, self.rates, self.style)
        return PostMeta(
            post_id=plan.post_id,
            md5=md5,
            file_url=f"synthetic://{self.seed}/{plan.post_id}.png",
            ext="png",
            width=plan.width,
            height=plan.height,
            tags=plan.tags,
            rating=plan.rating,
            score=plan.score,
            source_url=f"synthetic://{self.seed}/posts/{plan.post_id}",
            face_boxes=truth.face_boxes,
        )

    def fetch(self, url: str) -> bytes:
        m = _URL_RE.match(url)
        if not m or int(m.group(1)) != self.seed or not 1 <= int(m.group(2)) <= self.n_posts:
            raise GanimeError(
                f"{url}: not a post of this synthetic booru (expected synthetic://{self.seed}/<1..{self.n_posts}>.png)"
            )
        return _rendered(self.seed, int(m.group(2)), self.rates, self.style)[0]


def _parse_query(tags: str) -> tuple[set[str], set[str], list[str]]:
    include: set[str] = set()
    exclude: set[str] = set()
    ratings: list[str] = []
    for tag in tags.split():
        if tag.startswith("rating:"):
            ratings.append(tag.split(":", 1)[1][:1])
        elif tag.startswith("-") and len(tag) > 1:
            exclude.add(tag[1:])
        else:
            include.add(tag)
    return include, exclude, ratings


# ------------------------------------------------------------------------------------------------- truth and labels


def truth_table(source: SyntheticSource):
    """Ground truth per post, from the plans (nothing is drawn).

    Columns: source, post_id, chibi, multiple, busy, standing, n_characters.
    """
    import pandas as pd

    rows = []
    for post_id in range(1, source.n_posts + 1):
        plan = source.plan(post_id)
        rows.append((source.name, post_id, plan.chibi, plan.multiple, plan.busy, plan.standing, plan.n_characters))
    df = pd.DataFrame(rows, columns=list(TRUTH_COLUMNS))
    return df.astype(
        {"post_id": "int64", "chibi": bool, "multiple": bool, "busy": bool, "standing": bool, "n_characters": "int64"}
    )


def write_hand_labels(
    truth, out: Path, *, fraction: float = 0.5, error_rate: float = 0.03, seed: int = 0
) -> dict[str, int]:
    """Simulate a person labelling a random ``fraction`` of posts per task, with ``error_rate`` of labels flipped.

    Writes ``synthetic_hand_labels_{chibi,multi,aesthetic}.csv`` (``post_id,label``; 1 = chibi / more than one
    character / unwanted) into ``out``. Returns the number of rows per file name.
    """
    if not 0.0 < fraction <= 1.0:
        raise GanimeError(f"--label-fraction {fraction}: must be in (0, 1]")
    if not 0.0 <= error_rate < 0.5:
        raise GanimeError(f"--label-error-rate {error_rate}: must be in [0, 0.5)")
    missing = [c for c in ("post_id", *LABEL_TRUTH_COLUMN.values()) if c not in truth.columns]
    if missing:
        raise GanimeError(f"truth table: missing column(s) {', '.join(missing)}; build it with synthetic.truth_table")
    out = Path(out)
    ids = truth["post_id"].to_numpy(dtype=np.int64)
    rows: dict[str, int] = {}
    for task_index, (task, column) in enumerate(LABEL_TRUTH_COLUMN.items()):
        rng = np.random.default_rng([seed, task_index])
        m = int(round(fraction * len(ids)))
        if len(ids) and m == 0:
            m = 1
        chosen = np.sort(rng.choice(len(ids), size=m, replace=False))
        labels = truth[column].to_numpy(dtype=bool)[chosen].astype(np.int64)
        n_flip = int(round(error_rate * m))
        flip = rng.choice(m, size=n_flip, replace=False)
        labels[flip] = 1 - labels[flip]
        lines = ["post_id,label"] + [f"{pid},{lab}" for pid, lab in zip(ids[chosen], labels, strict=True)]
        name = LABEL_FILES[task]
        write_text(out / name, "\n".join(lines) + "\n")
        rows[name] = m
    return rows


def study_query_matches(source: SyntheticSource, query: str = " ".join(STUDY_TAGS)) -> int:
    """How many posts the study's tag query returns (flawed ones included)."""
    include, exclude, _ = _parse_query(query)
    n = 0
    for post_id in range(1, source.n_posts + 1):
        tags = set(source.plan(post_id).tags.split())
        n += include <= tags and not exclude & tags
    return n


# -------------------------------------------------------------------------------------------------------------- CLI


def run(
    *,
    out: Path,
    n_posts: int,
    seed: int,
    label_fraction: float = 0.5,
    label_error_rate: float = 0.03,
    chibi: float | None = None,
    multiple: float | None = None,
    busy: float | None = None,
    nonstanding: float | None = None,
    posts: Path | None = None,
    style: str = "booru",
    name: str = SOURCE_NAME,
) -> SyntheticSummary:
    """Write ``out/truth.parquet`` and the three synthetic hand-label CSVs for a synthetic booru.

    With ``posts`` (the scrape stage's table), labels cover only posts that were scraped: a person labels
    what they downloaded, and the labels stage rejects labels of unknown posts.
    """
    if n_posts < 1:
        raise GanimeError(f"--n-posts {n_posts}: the synthetic booru needs at least 1 post (e.g. --n-posts 300)")
    source = SyntheticSource(n_posts, seed, chibi, multiple, busy, nonstanding, style=style, name=name)
    out = Path(out)
    truth = truth_table(source)
    truth_path = out / "truth.parquet"
    write_parquet(truth_path, truth)
    labelled = truth
    if posts is not None:
        scraped = read_parquet(posts, ["source", "post_id"])
        labelled = truth[truth["post_id"].isin(scraped.loc[scraped["source"] == source.name, "post_id"])]
    label_rows = write_hand_labels(labelled, out, fraction=label_fraction, error_rate=label_error_rate, seed=seed)
    positives = {
        "chibi": int(truth["chibi"].sum()),
        "multiple": int(truth["multiple"].sum()),
        "busy": int(truth["busy"].sum()),
        "nonstanding": int((~truth["standing"]).sum()),
    }
    matches = study_query_matches(source)
    log.info("synthetic booru seed %d: %d posts, flaws %s, study query matches %d", seed, n_posts, positives, matches)
    return SyntheticSummary(
        n_posts=n_posts,
        seed=seed,
        rates=asdict(source.rates),
        positives=positives,
        study_query_matches=matches,
        label_rows=label_rows,
        truth=truth_path,
    )


def render_sheet(
    path: Path, *, seed: int = 0, post_ids: range = range(1, 17), size: int = 128, style: str = "booru", **rates: float
) -> Path:
    """A contact sheet of posts (square-padded on white) for eyeballing the drawing."""
    from ganime_steps.common import save_image
    from ganime_steps.imaging import make_grid, square_resize

    tiles = [square_resize(render_post(seed, i, style, **rates)[0], size) for i in progress(post_ids, desc="sheet")]
    save_image(path, make_grid(np.stack(tiles)))
    return Path(path)


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a probability in [0, 1]")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ganime_steps.synthetic",
        description="Build the synthetic booru's ground truth (truth.parquet) and simulated hand-label CSVs.",
    )
    p.add_argument("--n-posts", type=int, required=True, help="number of posts (ids 1..N), at least 1")
    p.add_argument(
        "--seed", type=int, required=True, help="booru seed: every image is a pure function of (seed, post id)"
    )
    p.add_argument(
        "--label-fraction", type=float, default=0.5, help="fraction of posts hand-labelled per task (default 0.5)"
    )
    p.add_argument(
        "--label-error-rate", type=float, default=0.03, help="fraction of hand labels flipped (default 0.03)"
    )
    p.add_argument("--style", choices=list(STYLE_RATES), default="booru", help="the booru's look (default booru)")
    p.add_argument("--name", default=SOURCE_NAME, help=f"source name in the tables (default {SOURCE_NAME})")
    defaults = {k: f"{v:g}" for k, v in asdict(Rates()).items()}
    tachie = {k: f"{v:g}" for k, v in asdict(STYLE_RATES["tachie"]).items()}
    for rate, what in (
        ("chibi", "chibi posts"),
        ("multiple", "posts with 2-3 characters"),
        ("busy", "busy/unwanted-background posts"),
        ("nonstanding", "sitting/kneeling/lying posts"),
    ):
        p.add_argument(
            f"--{rate}",
            type=_probability,
            default=None,
            help=f"rate of {what} (default: booru {defaults[rate]}, tachie {tachie[rate]})",
        )
    p.add_argument("--posts", type=Path, default=None, help="label only the posts of this scraped posts.parquet")
    p.add_argument("--sheet", type=Path, default=None, help="also write a 4x4 contact sheet of posts 1..16 to this PNG")
    p.add_argument("--out", type=Path, required=True, help="output folder: truth.parquet + synthetic_hand_labels_*.csv")
    return p


def main(argv: list[str] | None = None) -> int:
    def handler(args: argparse.Namespace) -> SyntheticSummary:
        summary = run(
            out=args.out,
            n_posts=args.n_posts,
            seed=args.seed,
            label_fraction=args.label_fraction,
            label_error_rate=args.label_error_rate,
            chibi=args.chibi,
            multiple=args.multiple,
            busy=args.busy,
            nonstanding=args.nonstanding,
            posts=args.posts,
            style=args.style,
            name=args.name,
        )
        if args.sheet is not None:
            rates = {"chibi": args.chibi, "multiple": args.multiple, "busy": args.busy, "nonstanding": args.nonstanding}
            rates = {k: v for k, v in rates.items() if v is not None}
            pages = range(1, min(16, args.n_posts) + 1)
            render_sheet(args.sheet, seed=args.seed, post_ids=pages, style=args.style, **rates)
        return summary

    return run_cli(build_parser(), handler, argv)


if __name__ == "__main__":
    raise SystemExit(main())
