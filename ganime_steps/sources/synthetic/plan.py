"""Planning a post: its flags, characters, canvas, background and booru tags, drawn from the post's own RNGs.

A plan is cheap (nothing is drawn): listing, tags and truth tables come from plans alone.
"""

from __future__ import annotations

import functools
import hashlib
import random
from dataclasses import dataclass

from ganime_steps.sources.synthetic.palette import (
    CLOTH_COLORS,
    EYE_COLORS,
    HAIR_COLORS,
    HAIR_STYLES,
    NONSTANDING_POSES,
    POSE_TAG,
    RGB,
    SHOE_COLORS,
    SKIN_TONES,
    WHITE,
    Rates,
    check_style,
    color_name,
    hsv,
    style_rates,
)

STUDY_TAGS = ("1girl", "solo", "full_body", "standing", "white_background")


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
class PostFlags:
    """What a post is, shared by its plan and its truth: id, canvas size and the flags the cleaning tasks judge."""

    post_id: int
    width: int
    height: int
    chibi: bool
    multiple: bool
    busy: bool
    standing: bool


@dataclass(frozen=True)
class PostPlan(PostFlags):
    """A post before drawing: flags, canvas, characters, background and the booru's (noisy) metadata."""

    seed: int
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


def post_rng(seed: int, post_id: int, stream: str) -> random.Random:
    """An independent, platform-stable RNG per (seed, post, purpose): changing one rate never reshuffles colours."""
    digest = hashlib.blake2b(f"{seed}/{post_id}/{stream}".encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


# ------------------------------------------------------------------------------------------------------ characters


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


def _characters(rng: random.Random, *, chibi: bool, multiple: bool, standing: bool) -> tuple[CharacterSpec, ...]:
    n = rng.choice((2, 2, 3)) if multiple else 1
    poses = ["standing"] * n if standing else [rng.choice(NONSTANDING_POSES) for _ in range(n)]
    sizes = [1.0] + [rng.uniform(0.85, 1.0) for _ in range(n - 1)]
    rng.shuffle(sizes)
    return tuple(_character(rng, chibi=chibi, pose=p, size=s) for p, s in zip(poses, sizes, strict=True))


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


# ------------------------------------------------------------------------------------------------------------ tags

HAIR_STYLE_TAGS = {
    "short": ["short_hair"],
    "bob": ["short_hair", "bob_cut"],
    "long": ["long_hair"],
    "twintails": ["twintails", "long_hair"],
    "ponytail": ["ponytail"],
}
MOUTH_TAGS = {"smile": ["smile"], "open": ["open_mouth", "smile"], "flat": []}
ARM_TAGS = {"wave": ["waving", "arm_up"], "hips": ["hand_on_own_hip"], "down": []}


def _attribute_tags(c: CharacterSpec) -> list[str]:
    """Every tag that describes what a character looks like (a tagger then misses some of them)."""
    attrs = [f"{c.hair}_hair", f"{c.eyes}_eyes", "looking_at_viewer"]
    attrs += HAIR_STYLE_TAGS[c.hair_style]
    if c.outfit == "dress":
        attrs += ["dress", f"{c.top}_dress"]
    elif c.outfit == "shirt_skirt":
        attrs += ["shirt", "skirt", f"{c.top}_shirt", f"{c.bottom}_skirt"]
    else:
        attrs += ["shirt", "pants", f"{c.top}_shirt", f"{c.bottom}_pants"]
    if c.legwear != "bare":
        attrs += ["thighhighs", c.legwear]
    attrs += MOUTH_TAGS[c.mouth]
    attrs += ["blush"] if c.blush else []
    attrs += [] if c.accessory == "none" else [c.accessory]
    attrs += ARM_TAGS[c.arms]
    attrs += ["short_sleeves" if c.sleeves == "short" else "long_sleeves"]
    return attrs


def _study_tags(rng: random.Random, plan_flags: dict, n: int, tags: set[str]) -> None:
    """The study query's tags: kept on most posts, flawed ones too (as on a real booru)."""
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


def _tags(rng: random.Random, plan_flags: dict, chars: tuple[CharacterSpec, ...], background: str, bg_name: str) -> str:
    """Booru-style tags, noisy like real ones: flawed posts mostly keep the study tags."""
    tags: set[str] = set()
    _study_tags(rng, plan_flags, len(chars), tags)
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
        tags.update(a for a in _attribute_tags(c) if rng.random() < 0.9)
    for extra, p in (("original", 0.5), ("highres", 0.3), ("absurdres", 0.05), ("commentary_request", 0.2)):
        if rng.random() < p:
            tags.add(extra)
    return " ".join(sorted(tags))


# ------------------------------------------------------------------------------------------------------------ posts


def _flags(seed: int, post_id: int, rates: Rates) -> dict[str, bool]:
    flag_rng = post_rng(seed, post_id, "flags")
    # Four uniforms drawn in a fixed order; a flag is set when its uniform falls below its rate (independent flags).
    u_chibi, u_multi, u_busy, u_pose = (flag_rng.random() for _ in range(4))
    return {
        "chibi": u_chibi < rates.chibi,
        "multiple": u_multi < rates.multiple,
        "busy": u_busy < rates.busy,
        "standing": not (u_pose < rates.nonstanding),
    }


def _background(seed: int, post_id: int, busy: bool, style: str) -> tuple[str, tuple[RGB, RGB], str, bool]:
    """(background kind, its two colours, its colour's tag name, floor shadow)."""
    bg_rng = post_rng(seed, post_id, "background")
    background, bg_colors, bg_name = "white", (WHITE, WHITE), "white"
    if busy:
        background = bg_rng.choice(("solid", "gradient", "gradient"))
        hue = bg_rng.random()
        # Saturated enough and dark enough that "not a white background" is obvious even at 64 px.
        c1 = hsv(hue, bg_rng.uniform(0.35, 0.85), bg_rng.uniform(0.55, 0.92))
        c2 = hsv(hue + bg_rng.uniform(0.1, 0.4), bg_rng.uniform(0.3, 0.8), bg_rng.uniform(0.5, 0.95))
        bg_colors = (c1, c2)
        bg_name = color_name(hue)
    shadow = not busy and bg_rng.random() < 0.5 and style == "booru"
    return background, bg_colors, bg_name, shadow


@functools.lru_cache(maxsize=16384)
def plan_cached(seed: int, post_id: int, rates: Rates, style: str = "booru") -> PostPlan:
    flags = _flags(seed, post_id, rates)
    rng = post_rng(seed, post_id, "characters")
    chars = _characters(rng, chibi=flags["chibi"], multiple=flags["multiple"], standing=flags["standing"])
    width, height = _canvas_size(rng, len(chars), [c.pose for c in chars])
    if style == "tachie" and len(chars) == 1 and flags["standing"]:  # a tall portrait the character fills
        width, height = rng.randint(112, 144), rng.randint(232, 256)
    background, bg_colors, bg_name, shadow = _background(seed, post_id, flags["busy"], style)
    tag_rng = post_rng(seed, post_id, "tags")
    tags = _tags(tag_rng, flags, chars, background, bg_name)
    rating = "general" if tag_rng.random() < 0.9 else "sensitive"
    score = min(100, int(tag_rng.gammavariate(2.0, 8.0)))
    return PostPlan(
        seed=seed,
        post_id=post_id,
        width=width,
        height=height,
        **flags,
        characters=chars,
        background=background,
        bg_colors=bg_colors,
        shadow=shadow,
        tags=tags,
        rating=rating,
        score=score,
        style=style,
    )


def plan_post(seed: int, post_id: int, style: str = "booru", **rates: float) -> PostPlan:
    """The post's attributes without drawing it (cheap; used for listing, tags and truth tables)."""
    style = check_style(style)
    return plan_cached(int(seed), int(post_id), style_rates(style, **rates), style)
