"""``SyntheticSource``: the synthetic booru behind the :class:`~ganime_steps.sources.Source` interface."""

from __future__ import annotations

import re

from ganime_steps.common import GanimeError
from ganime_steps.sources import PostMeta
from ganime_steps.sources.synthetic.palette import check_style, style_rates
from ganime_steps.sources.synthetic.plan import PostPlan, plan_cached
from ganime_steps.sources.synthetic.render import SyntheticTruth, rendered

SOURCE_NAME = "synthetic"
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
        self.style = check_style(style)
        self.name = name
        given = {"chibi": chibi, "multiple": multiple, "busy": busy, "nonstanding": nonstanding}
        self.rates = style_rates(style, **{k: v for k, v in given.items() if v is not None})

    def __repr__(self) -> str:
        return f"SyntheticSource(n_posts={self.n_posts}, seed={self.seed}, style={self.style!r}, {self.rates})"

    def plan(self, post_id: int) -> PostPlan:
        self._check_id(post_id)
        return plan_cached(self.seed, post_id, self.rates, self.style)

    def truth(self, post_id: int) -> SyntheticTruth:
        self._check_id(post_id)
        return rendered(self.seed, post_id, self.rates, self.style)[2]

    def _check_id(self, post_id: int) -> None:
        if not 1 <= post_id <= self.n_posts:
            raise GanimeError(f"synthetic post {post_id}: no such post (this source has ids 1..{self.n_posts})")

    def list_page(self, tags: str, before_id: int | None, limit: int) -> list[PostMeta]:
        """Up to ``limit`` posts with id < ``before_id`` carrying all ``tags``, newest first.

        Like a booru, ``-tag`` excludes a tag and ``rating:g`` / ``rating:general`` filters by rating.
        """
        if limit < 1:
            raise GanimeError(f"synthetic list_page limit = {limit}: must be at least 1")
        include, exclude, ratings = parse_query(tags)
        start = self.n_posts if before_id is None else min(self.n_posts, before_id - 1)
        out: list[PostMeta] = []
        for post_id in range(start, 0, -1):
            plan = plan_cached(self.seed, post_id, self.rates, self.style)
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
        _, md5, truth = rendered(self.seed, plan.post_id, self.rates, self.style)
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
        return rendered(self.seed, int(m.group(2)), self.rates, self.style)[0]


def parse_query(tags: str) -> tuple[set[str], set[str], list[str]]:
    """A booru query as (tags required, tags excluded with ``-tag``, rating initials from ``rating:x``)."""
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
