"""The synthetic booru: procedurally drawn full-body anime girls with known attributes (the offline demo source).

Every post is a pure function of ``(seed, post_id, rates)``. A post is first *planned* (flags, characters, colours,
pose, tags; cheap, no drawing) and then *rendered* with Pillow at 2x and downscaled with Lanczos. The plan gives the
ground truth for the cleaning classifiers (``chibi``, ``multiple``, ``busy``, ``standing``) and noisy booru tags that,
like a real booru, still carry the study query tags on most flawed posts, so the cleaning stage has work to do.

Modules, in the order a post goes through them:

- :mod:`.palette`: colours, line-art shades, the styles (booru, tachie) and their flaw rates (:class:`Rates`);
- :mod:`.plan`: flags, character specs, canvas size, background and tags of a post (:class:`PostPlan`);
- :mod:`.shapes`: drawing primitives and their geometry (limbs, hulls, bows, rotation, drawing);
- :mod:`.body` and :mod:`.head`: one character as primitives, in named steps (legs per pose, arms, clothes, ...);
- :mod:`.clutter`: backgrounds and the clutter of busy posts;
- :mod:`.render`: layout, drawing and the truth of the drawing (:class:`SyntheticTruth`), PNG bytes;
- :mod:`.source`: :class:`SyntheticSource`, the booru behind the ``Source`` interface;
- :mod:`.labels`: the truth table, simulated hand labels and the stage's ``run``;
- :mod:`.cli` / ``__main__``: ``python -m ganime_steps.sources.synthetic --n-posts N --seed S --out DIR`` writes
  ``DIR/truth.parquet`` and three simulated hand-label CSVs (``synthetic_hand_labels_{chibi,multi,aesthetic}.csv``).
"""

from ganime_steps.sources.synthetic.cli import build_parser, main
from ganime_steps.sources.synthetic.labels import (
    LABEL_FILES,
    LABEL_TRUTH_COLUMN,
    TRUTH_COLUMNS,
    SyntheticSummary,
    render_sheet,
    run_synthetic_labels,
    study_query_matches,
    truth_table,
    write_hand_labels,
)
from ganime_steps.sources.synthetic.palette import STYLE_RATES, Rates
from ganime_steps.sources.synthetic.plan import STUDY_TAGS, CharacterSpec, PostPlan, plan_post
from ganime_steps.sources.synthetic.render import SUPERSAMPLE, SyntheticTruth, encode_png, render_post
from ganime_steps.sources.synthetic.source import SOURCE_NAME, SyntheticSource

__all__ = [
    "LABEL_FILES",
    "LABEL_TRUTH_COLUMN",
    "SOURCE_NAME",
    "STUDY_TAGS",
    "STYLE_RATES",
    "SUPERSAMPLE",
    "TRUTH_COLUMNS",
    "CharacterSpec",
    "PostPlan",
    "Rates",
    "SyntheticSource",
    "SyntheticSummary",
    "SyntheticTruth",
    "build_parser",
    "encode_png",
    "main",
    "plan_post",
    "render_post",
    "render_sheet",
    "run_synthetic_labels",
    "study_query_matches",
    "truth_table",
    "write_hand_labels",
]
