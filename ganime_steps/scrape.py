"""Stage 1, scrape: list booru posts by tags, store verified images content-addressed, write ``posts.parquet``.

Layout under ``--out`` (DESIGN §4): ``images/<md5[:2]>/<md5>.<ext>``, ``posts.parquet``, ``failures.parquet``,
``scrape_summary.json``. A stored image is never fetched again once its md5 verifies, so reruns are cheap.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from ganime_steps.common import GanimeError, progress, run_cli, write_bytes, write_json, write_parquet
from ganime_steps.imaging import decode_image
from ganime_steps.sources import PostMeta, Source

log = logging.getLogger(__name__)

POST_COLUMNS = [
    "post_id",
    "source",
    "md5",
    "file",
    "width",
    "height",
    "tags",
    "rating",
    "score",
    "source_url",
    "fetched_at",
    "face_boxes",
]
FAILURE_COLUMNS = ["post_id", "source", "md5", "file_url", "reason"]
SOURCE_KINDS = ("synthetic", "dapi", "danbooru")
_MD5 = re.compile(r"^[0-9a-f]{32}$")
_EXT = re.compile(r"^[a-z0-9]{1,5}$")


@dataclass
class ScrapeSummary:
    source: str
    listed: int = 0
    downloaded: int = 0
    already_present: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    bytes: int = 0
    seconds: float = 0.0


def make_source(
    kind: str, *, name: str, base_url: str | None = None, rate: float = 1.0, n_posts: int = 300, seed: int = 0
) -> Source:
    """Build the source named by ``kind`` in the config (``scrape.kind``)."""
    if kind == "synthetic":
        from ganime_steps.synthetic import SyntheticSource

        return SyntheticSource(n_posts=n_posts, seed=seed)
    if kind in ("dapi", "danbooru"):
        if not base_url:
            raise GanimeError(f"scrape.base_url is required for kind {kind!r} (e.g. https://safebooru.org)")
        from ganime_steps.sources.http import make_http_source

        return make_http_source(kind, name=name, base_url=base_url, rate=rate)
    raise GanimeError(f"scrape.kind {kind!r} is unknown; use one of {', '.join(SOURCE_KINDS)}")


def image_relpath(md5: str, ext: str) -> str:
    """Content-addressed location; names come from the md5, never from the server."""
    if not _MD5.match(md5) or not _EXT.match(ext):
        raise ValueError(f"refusing to store md5={md5!r} ext={ext!r}")
    return f"images/{md5[:2]}/{md5}.{ext}"


def list_posts(source: Source, tags: str, limit: int, page_size: int) -> list[PostMeta]:
    """Page by id (newest first) so no deep-pagination cap stops us; duplicates (id or md5) are kept once."""
    posts: list[PostMeta] = []
    seen_ids: set[int] = set()
    seen_md5: set[str] = set()
    before: int | None = None
    while len(posts) < limit:
        page = source.list_page(tags, before, min(page_size, limit - len(posts)))
        if not page:
            break
        for post in page:
            if post.post_id in seen_ids or post.md5 in seen_md5:
                continue
            seen_ids.add(post.post_id)
            seen_md5.add(post.md5)
            posts.append(post)
        lowest = min(p.post_id for p in page)
        if before is not None and lowest >= before:
            raise GanimeError(
                f"source {source.name}: listing did not advance past id {before}; the server ignores paging"
            )
        before = lowest
    return posts[:limit]


class StoreFailed(GanimeError):
    """A post whose image could not be stored; ``reason`` is a short code for failures.parquet and the summary."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def _verified(path: Path, md5: str) -> bool:
    return path.exists() and hashlib.md5(path.read_bytes()).hexdigest() == md5


def store_post(source: Source, post: PostMeta, out: Path) -> tuple[str, int]:
    """Fetch, verify md5 and decodability, then rename into the store. Returns (status, bytes)."""
    try:
        rel = image_relpath(post.md5, post.ext)
    except ValueError as exc:
        raise StoreFailed("bad_metadata", str(exc)) from exc
    if _verified(out / rel, post.md5):
        return "present", 0
    try:
        data = source.fetch(post.file_url)
    except GanimeError as exc:
        raise StoreFailed("fetch_failed", str(exc)) from exc
    got = hashlib.md5(data).hexdigest()
    if got != post.md5:
        raise StoreFailed("md5_mismatch", f"booru says {post.md5}, body has {got} ({len(data)} bytes)")
    try:
        decode_image(data, what=post.file_url)
    except GanimeError as exc:
        raise StoreFailed("not_an_image", str(exc)) from exc
    write_bytes(out / rel, data)
    return "downloaded", len(data)


def run(
    *,
    out: Path,
    kind: str,
    tags: str,
    limit: int,
    name: str | None = None,
    page_size: int = 100,
    base_url: str | None = None,
    rate: float = 1.0,
    n_posts: int = 300,
    seed: int = 0,
) -> ScrapeSummary:
    if limit < 1:
        raise GanimeError(f"--limit {limit}: must be at least 1")
    name = name or kind
    source = make_source(kind, name=name, base_url=base_url, rate=rate, n_posts=n_posts, seed=seed)
    started = time.monotonic()
    summary = ScrapeSummary(source=name)
    posts = list_posts(source, tags, limit, page_size)
    summary.listed = len(posts)
    log.info("listed %d posts from %s for %r", len(posts), name, tags)

    rows, failures = [], []
    for post in progress(posts, total=len(posts), desc=f"scrape {name}"):
        try:
            status, nbytes = store_post(source, post, out)
        except StoreFailed as exc:
            summary.failed[exc.reason] = summary.failed.get(exc.reason, 0) + 1
            failures.append(
                {
                    "post_id": post.post_id,
                    "source": name,
                    "md5": post.md5,
                    "file_url": post.file_url,
                    "reason": str(exc),
                }
            )
            log.warning("post %s not stored: %s", post.post_id, exc)
            continue
        if status == "present":
            summary.already_present += 1
        else:
            summary.downloaded += 1
            summary.bytes += nbytes
        rows.append(
            {
                "post_id": post.post_id,
                "source": name,
                "md5": post.md5,
                "file": image_relpath(post.md5, post.ext),
                "width": post.width,
                "height": post.height,
                "tags": post.tags,
                "rating": post.rating,
                "score": post.score,
                "source_url": post.source_url,
                "fetched_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "face_boxes": json.dumps([list(b) for b in post.face_boxes]),
            }
        )
    if not rows:
        raise GanimeError(f"source {name}: no post could be stored for tags {tags!r}; see {out}/failures.parquet")
    write_parquet(out / "failures.parquet", pd.DataFrame(failures, columns=FAILURE_COLUMNS))
    write_parquet(out / "posts.parquet", pd.DataFrame(rows, columns=POST_COLUMNS).astype({"post_id": "int64"}))
    summary.seconds = round(time.monotonic() - started, 3)
    write_json(out / "scrape_summary.json", summary)
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ganime_steps.scrape", description=__doc__)
    p.add_argument("--kind", required=True, choices=SOURCE_KINDS, help="source type")
    p.add_argument("--name", help="source name used in tables and paths (default: the kind)")
    p.add_argument("--tags", default="", help="space-separated booru tags, all required")
    p.add_argument("--limit", type=int, required=True, help="maximum number of posts to store")
    p.add_argument("--page-size", type=int, default=100, help="posts per listing request")
    p.add_argument("--base-url", help="booru address for dapi/danbooru, e.g. https://safebooru.org")
    p.add_argument("--rate", type=float, default=1.0, help="requests per second per host")
    p.add_argument("--n-posts", type=int, default=300, help="synthetic: number of posts the synthetic booru holds")
    p.add_argument("--seed", type=int, default=0, help="synthetic: generator seed")
    p.add_argument("--out", type=Path, required=True, help="output folder (images/, posts.parquet, ...)")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_cli(
        build_parser(),
        lambda a: run(
            out=a.out,
            kind=a.kind,
            name=a.name,
            tags=a.tags,
            limit=a.limit,
            page_size=a.page_size,
            base_url=a.base_url,
            rate=a.rate,
            n_posts=a.n_posts,
            seed=a.seed,
        ),
        argv,
    )


if __name__ == "__main__":
    raise SystemExit(main())
