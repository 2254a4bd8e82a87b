"""The synthetic booru's colours and looks: palettes, line-art shades, styles and their default flaw rates."""

from __future__ import annotations

import colorsys
from dataclasses import asdict, dataclass

from ganime_steps.common import GanimeError

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


def check_style(style: str) -> str:
    if style not in STYLE_RATES:
        raise GanimeError(f"synthetic style {style!r}: unknown; use one of {', '.join(STYLE_RATES)}")
    return style


def style_rates(style: str, **rates: float) -> Rates:
    """The style's default rates with ``rates`` (chibi, multiple, busy, nonstanding) overriding them."""
    return Rates(**{**asdict(STYLE_RATES[style]), **rates})


def hsv(h: float, s: float, v: float) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return (round(r * 255), round(g * 255), round(b * 255))


def color_name(hue: float) -> str:
    names = ("red", "orange", "yellow", "green", "green", "aqua", "blue", "blue", "purple", "pink", "pink", "red")
    return names[int((hue % 1.0) * 12) % 12]


def dark(c: RGB, f: float = 0.58) -> RGB:
    return (int(c[0] * f), int(c[1] * f), int(c[2] * f))


def line_for(c: RGB) -> RGB:
    """Line-art colour for a fill: a darker shade, but never invisible on white fills."""
    return (116, 116, 136) if min(c) > 220 else dark(c)
