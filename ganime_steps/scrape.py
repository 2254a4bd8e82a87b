"""Stage 1, scrape: list booru posts by tags, store verified images content-addressed, write ``posts.parquet``.

Layout under ``--out``:

- ``images/<md5[:2]>/<md5>.<ext>``: the content-addressed store; names come from the md5, never from the server.
- ``posts.parquet`` (stored posts, in listing order), ``failures.parquet`` (post, reason, detail),
  ``scrape_summary.json`` (listed, downloaded, already present, failed by reason, bytes, seconds, request rate).
- ``scrape_config.json``: the settings of the last run (:class:`ScrapeSettings`; ``--config`` of it repeats it).
- ``listing.jsonl``: the append-only listing journal (the query, then one line per page listed). A rerun continues
  listing after the last page instead of starting again; a changed query starts a new journal.
- ``store.jsonl``: the append-only store index (md5, size, mtime, booru hash) so a rerun trusts verified files
  without re-hashing them; a file whose size or mtime changed is hashed again, and ``--verify`` hashes every one.

Posts whose booru hash is not an md5 (old Safebooru posts carry 40-hex hashes) are verified by size (against
Content-Length) and full decode, stored under the md5 of their bytes, and keep the booru's hash in ``booru_hash``.

Every image is downloaded to ``.tmp/``, checked (size against Content-Length, not HTML, booru md5, pixel count,
full decode) and only then renamed into the store, so a kill at any moment loses at most the downloads in flight.
Posts that fail are recorded with a reason in ``failures.parquet`` and tried again on the next run.

What is scraped is one :class:`ScrapeSettings` (its defaults are the workflow schema's ``$defs.source`` defaults,
written there once), saved beside the outputs as ``scrape_config.json``: the workflow's scrape rule passes a
source's settings as one JSON object (``--settings``), a person as a file (``--config``, e.g. a scrape folder's
scrape_config.json) or as flags over the defaults. ``--fresh-listing``, ``--verify``, ``--time-scale`` and ``--out``
are how this run goes, not settings.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import fcntl
import hashlib
import io
import json
import logging
import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from ganime_steps.common import (
    GanimeError,
    Options,
    Settings,
    add_settings_options,
    file_digest,
    run_cli,
    write_json,
    write_parquet,
    write_text,
)
from ganime_steps.imaging import MAX_PIXELS, decode_image
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
    "booru_hash",  # the hash the booru reported: the md5 itself, or e.g. a 40-hex hash of an old Safebooru post
]
FAILURE_COLUMNS = ["post_id", "source", "md5", "file_url", "reason", "detail"]
SOURCE_KINDS = ("synthetic", "dapi", "danbooru", "folder")
IMAGE_EXTS = frozenset({"png", "jpg", "jpeg", "gif", "webp", "bmp"})
MAX_BYTES = 100 * 1024 * 1024
LISTING_JOURNAL = "listing.jsonl"
STORE_INDEX = "store.jsonl"
TMP_DIR = ".tmp"
SETTINGS_FILE = "scrape_config.json"  # the settings of the last run, beside its outputs
REFUSED = "refused:"  # same marker as sources.http.REFUSED (kept here so the synthetic path needs no HTTP import)
_MD5 = re.compile(r"^[0-9a-f]{32}$")
_BOORU_HASH = re.compile(r"^[0-9a-z]{1,128}$")  # any other hash a booru reports: kept, never used in a path
_EXT = re.compile(r"^[a-z0-9]{1,5}$")


@dataclass
class ScrapeSummary:
    source: str
    listed: int = 0  # posts selected for this run (after dedup and filters, at most --limit)
    downloaded: int = 0
    already_present: int = 0
    failed: dict[str, int] = field(default_factory=dict)  # by reason
    failed_total: int = 0
    filtered: int = 0  # blacklisted tag or rating not wanted
    hidden: int = 0  # listed without a file URL (Danbooru: not visible to this account)
    duplicates: int = 0  # same post id or md5 listed again
    bytes: int = 0
    seconds: float = 0.0
    requests: int = 0
    listing_requests: int = 0
    image_requests: int = 0
    retries: int = 0
    request_rate: float = 0.0  # achieved HTTP requests per second: (requests - 1) / their span
    rate_limit: float | None = None
    listing_pages: int = 0  # pages in the listing journal
    listing_resumed: bool = False  # continued from a journal of an earlier run
    listing_complete: bool = False  # reached --limit or the end of the booru's results


@dataclass(frozen=True)
class ScrapeSettings(Settings):
    """What a scrape lists and stores, as a person or the workflow gives it (``scrape_config.json``, ``scrape
    --config``): every default here is the workflow schema's ``$defs.source`` default, written once
    (``tests/test_scrape_settings.py`` checks the schema against it; the CLI's flags have no defaults of their own).
    The schema's ``synthetic.n_posts/seed/style`` are ``n_posts``, ``seed`` and ``style`` here; the keys the workflow
    consumes itself are ``config.WORKFLOW_SOURCE_KEYS``. How a run goes (``fresh_listing``, ``verify``,
    ``time_scale``) and where it writes are :func:`run_scrape`'s keywords and runtime flags, never settings."""

    kind: str = "synthetic"  # the schema requires it; the CLI's default: the offline synthetic booru
    name: str | None = None  # tables' and journals' source name (the workflow: the source's); None: the kind
    tags: str = ""  # space-separated booru tags, all required
    limit: int = 1000  # most posts to store
    page_size: int = 100  # posts per listing request (Danbooru: at most 200)
    base_url: str | None = None  # dapi/danbooru: the booru's address
    path: str | None = None  # folder: a directory, .zip or .tar(.gz) of images
    rate: float = 1.0  # requests per second per host
    burst: int = 1  # token-bucket size: requests allowed back to back
    workers: int = 4  # parallel downloads, all under rate
    retries: int = 5  # retries per request after the first try
    backoff: float = 1.0  # first backoff delay (s), doubling, jittered
    max_backoff: float = 60.0  # longest backoff delay (s); not a schema key (CLI only)
    timeout: float = 30.0  # connect/read timeout per request (s)
    max_retry_after: float = 600.0  # a longer Retry-After fails the request instead; not a schema key (CLI only)
    blacklist: tuple[str, ...] = ()  # posts carrying any of these tags are skipped
    ratings: tuple[str, ...] = ()  # ratings to keep, by first letter; () keeps all
    image_hosts: tuple[str, ...] = ()  # extra hosts images may come from
    user_env: str | None = None  # environment variable holding the user id (DAPI) or login (Danbooru)
    api_key_env: str | None = None  # environment variable holding the API key (never logged)
    max_pixels: int = MAX_PIXELS  # decompression-bomb guard: largest w*h (64000000)
    max_bytes: int = MAX_BYTES  # largest image file in bytes (104857600)
    n_posts: int = 300  # synthetic: posts the synthetic booru holds (schema: synthetic.n_posts)
    seed: int = 0  # synthetic: generator seed (schema: synthetic.seed)
    style: str = "booru"  # synthetic: booru or tachie (schema: synthetic.style)

    what = "scrape settings"
    accepts_paths = True  # a folder's path may be a Path


@dataclass(frozen=True)
class StoreOptions:
    out: Path
    max_pixels: int = MAX_PIXELS
    max_bytes: int = MAX_BYTES
    verify: bool = False  # re-hash stored files even when the index vouches for them


class StoreFailed(GanimeError):
    """A post whose image could not be stored; ``reason`` is a short code for failures.parquet and the summary."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# ------------------------------------------------------------------------------------------------------- sources


def make_source(
    kind: str,
    *,
    name: str,
    base_url: str | None = None,
    rate: float = 1.0,
    n_posts: int = 300,
    seed: int = 0,
    style: str = "booru",
    path: str | Path | None = None,
    max_bytes: int = MAX_BYTES,
    **http: Any,
) -> Source:
    """Build the source named by ``kind`` in the config (``scrape.kind``); ``http``: see make_http_source."""
    if kind == "folder":
        if not path:
            raise GanimeError("scrape.path is required for kind 'folder': a folder, .zip or .tar(.gz) of images")
        from ganime_steps.sources.folder import FolderSource

        return FolderSource(path, name=name, max_bytes=max_bytes)
    if kind == "synthetic":
        from ganime_steps.sources.synthetic import SyntheticSource

        return SyntheticSource(n_posts=n_posts, seed=seed, style=style, name=name)
    if kind in ("dapi", "danbooru"):
        if not base_url:
            raise GanimeError(f"scrape.base_url is required for kind {kind!r} (e.g. https://safebooru.org)")
        from ganime_steps.sources.http import make_http_source

        return make_http_source(kind, name=name, base_url=base_url, rate=rate, **http)
    raise GanimeError(f"scrape.kind {kind!r} is unknown; use one of {', '.join(SOURCE_KINDS)}")


def image_relpath(md5: str, ext: str) -> str:
    """Content-addressed location; names come from the md5, never from the server."""
    if not _MD5.match(md5) or not _EXT.match(ext):
        raise ValueError(f"refusing to store md5={md5!r} ext={ext!r}")
    return f"images/{md5[:2]}/{md5}.{ext}"


# ------------------------------------------------------------------------------------------------------ journals


def _post_to_json(post: PostMeta) -> dict:
    return dataclasses.asdict(post)


def _post_from_json(d: dict) -> PostMeta:
    d = dict(d)
    d["face_boxes"] = tuple(tuple(int(v) for v in box) for box in d.get("face_boxes", ()))
    return PostMeta(**d)


def _read_jsonl(path: Path) -> list[dict]:
    """The complete lines of an append-only JSONL file; a torn last line (killed mid-write) is cut off."""
    if not path.exists():
        return []
    data = path.read_bytes()
    good = data.rfind(b"\n") + 1
    if good < len(data):
        log.warning("%s: dropping a torn last line (%d bytes) left by an interrupted run", path, len(data) - good)
        with open(path, "r+b") as fh:
            fh.truncate(good)
    records = []
    for number, line in enumerate(data[:good].splitlines(), 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise GanimeError(f"{path}:{number}: not JSON ({exc}); delete the file to start it afresh") from exc
    return records


class _Appender:
    """Append whole lines to a JSONL file, flushed to the OS at once (a killed process loses no written line)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def append(self, record: dict, *, sync: bool = False) -> None:
        self._fh.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._fh.flush()
        if sync:
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()


class ListingJournal:
    """``listing.jsonl``: the query, then one line per page (``before``, posts); ``ended`` once a page is empty."""

    def __init__(self, path: Path, query: dict, *, fresh: bool = False) -> None:
        self.path = path
        self.pages: list[list[PostMeta]] = []
        self.ended = False
        self.resumed = False
        records = [] if fresh else _read_jsonl(path)
        if records and records[0].get("type") == "query" and records[0].get("query") == query:
            for rec in records[1:]:
                if rec.get("type") == "page":
                    self.pages.append([_post_from_json(p) for p in rec["posts"]])
                    self.ended = self.ended or not rec["posts"]
            self.resumed = True
        else:
            if records:
                log.info("%s: the query changed (or --fresh-listing); starting a new listing", path)
                os.replace(path, path.with_name(path.name + ".old"))
            write_text(path, json.dumps({"type": "query", "query": query}, sort_keys=True) + "\n")
        self._out = _Appender(path)

    @property
    def before(self) -> int | None:
        """The next page lists posts with id below this (None: start from the newest)."""
        ids = [p.post_id for page in self.pages for p in page]
        return min(ids) if ids else None

    def append(self, before: int | None, posts: list[PostMeta]) -> None:
        self._out.append(
            {"type": "page", "before": before, "posts": [_post_to_json(p) for p in posts], "at": _now()}, sync=True
        )
        self.pages.append(posts)
        self.ended = self.ended or not posts

    def close(self) -> None:
        self._out.close()


class StoreIndex:
    """``store.jsonl``: md5 -> (file, size, mtime_ns, fetched_at) of verified files, so reruns need not re-hash."""

    def __init__(self, out: Path, *, verify: bool = False) -> None:
        self.out = out
        self.verify = verify
        self.records: dict[str, dict] = {}
        self.by_booru_hash: dict[str, dict] = {}  # posts whose booru hash is not an md5: booru hash -> record
        for rec in _read_jsonl(out / STORE_INDEX):
            if "md5" in rec:
                self._remember(rec)
        self._out = _Appender(out / STORE_INDEX)

    def _remember(self, rec: dict) -> None:
        self.records[rec["md5"]] = rec
        if rec.get("booru_hash") and rec["booru_hash"] != rec["md5"]:
            self.by_booru_hash[rec["booru_hash"]] = rec

    def verified(self, rel: str, md5: str) -> dict | None:
        """The record of a stored, verified ``rel``; hashes the file when the index does not vouch for it."""
        return _stored_record(self.out, rel, md5, None if self.verify else self.records.get(md5))

    def verified_by_booru_hash(self, booru_hash: str) -> dict | None:
        """The record stored for a post whose booru hash is not an md5, if that file is still there and verified."""
        rec = self.by_booru_hash.get(booru_hash)
        if rec is None:
            return None
        found = _stored_record(self.out, rec["file"], rec["md5"], None if self.verify else rec)
        return None if found is None else {**found, "booru_hash": booru_hash}

    def add(self, rec: dict) -> None:
        booru_hash = rec.get("booru_hash")
        known = self.by_booru_hash.get(booru_hash) if booru_hash else self.records.get(rec["md5"])
        if known != rec:
            self._remember(rec)
            self._out.append(rec)

    def close(self) -> None:
        self._out.close()


def _stored_record(out: Path, rel: str, md5: str, rec: dict | None) -> dict | None:
    """The index record of ``out/rel`` if it is stored and verified (trusting ``rec`` when size and mtime match)."""
    path = out / rel
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    if rec and rec["file"] == rel and rec["size"] == st.st_size and rec["mtime_ns"] == st.st_mtime_ns:
        return rec
    if file_digest(path, "md5") != md5:
        log.warning("%s: stored file does not match its md5; removed, it will be downloaded again", path)
        path.unlink(missing_ok=True)  # a damaged file never stays in the store under a name it does not match
        return None
    fetched = datetime.fromtimestamp(st.st_mtime, UTC).isoformat(timespec="seconds")
    return {"md5": md5, "file": rel, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "fetched_at": fetched}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------------------------------- selection


class Selector:
    """Turns listed pages into the posts to store: drops hidden posts, duplicates (id or md5) and filtered ones."""

    def __init__(self, limit: int, blacklist: Iterable[str] = (), ratings: Iterable[str] = ()) -> None:
        self.limit = limit
        self.blacklist = {t.lower() for t in blacklist}
        self.ratings = {r.strip().lower()[:1] for r in ratings if r.strip()}
        self.selected: list[PostMeta] = []
        self.seen_ids: set[int] = set()
        self.seen_md5: set[str] = set()
        self.filtered = self.hidden = self.duplicates = 0

    @property
    def full(self) -> bool:
        return len(self.selected) >= self.limit

    def add(self, page: list[PostMeta]) -> list[PostMeta]:
        new = []
        for post in page:
            if self.full:
                break
            if post.post_id in self.seen_ids or post.md5 in self.seen_md5:
                self.duplicates += 1
                continue
            self.seen_ids.add(post.post_id)
            if post.md5:
                self.seen_md5.add(post.md5)
            if not post.file_url:
                self.hidden += 1
                continue
            if self.blacklist & set(post.tags.lower().split()) or (
                self.ratings and post.rating.lower()[:1] not in self.ratings
            ):
                self.filtered += 1
                continue
            self.selected.append(post)
            new.append(post)
        return new


# --------------------------------------------------------------------------------------------------------- store


@dataclass(frozen=True)
class Outcome:
    status: str  # downloaded / present
    record: dict  # store index record


def _looks_like_html(head: bytes, content_type: str) -> bool:
    if content_type.split(";")[0].strip().lower() in ("text/html", "application/xhtml+xml"):
        return True
    start = head.lstrip()[:512].lower()
    return start.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<?xml")) or b"<html" in start


def verify_image(data: bytes, post: PostMeta, *, content_type: str = "", max_pixels: int = MAX_PIXELS) -> None:
    """Raise StoreFailed unless ``data`` is the image the booru described: not HTML, md5, pixel guard, decodes.

    A post whose booru hash is not an md5 cannot be checked by hash: size (checked by the download) and the
    full decode below are what vouch for it.
    """
    if not data:
        raise StoreFailed("empty_body", f"{post.file_url}: the server sent no bytes")
    if _looks_like_html(data[:1024], content_type):
        raise StoreFailed("html_instead_of_image", f"{post.file_url}: got {content_type or 'HTML'}: {data[:60]!r}")
    got = hashlib.md5(data).hexdigest()
    if _MD5.match(post.md5) and got != post.md5:
        raise StoreFailed("md5_mismatch", f"booru says {post.md5}, body has {got} ({len(data)} bytes)")
    try:
        with Image.open(io.BytesIO(data)) as probe:  # reads the header only: cheap, before any decoding
            w, h = probe.size
    except Image.DecompressionBombError as exc:
        raise StoreFailed("oversize", f"{post.file_url}: {exc}") from exc
    except Exception as exc:  # Pillow raises many types for non-images
        raise StoreFailed("not_an_image", f"{post.file_url}: {type(exc).__name__}: {exc}") from exc
    if w * h > max_pixels:
        raise StoreFailed("oversize", f"{post.file_url}: {w}x{h} exceeds the {max_pixels}-pixel limit")
    try:
        decode_image(data, what=post.file_url, max_pixels=max_pixels)
    except GanimeError as exc:
        raise StoreFailed("not_an_image", str(exc)) from exc


def _check_metadata(post: PostMeta, opts: StoreOptions) -> None:
    """Refuse a post before fetching it: refused by its source, a bad hash or extension, or too many pixels."""
    if post.file_url.startswith(REFUSED):
        reason, _, detail = post.file_url[len(REFUSED) :].partition(":")
        raise StoreFailed(reason or "refused", detail or post.file_url)
    if not _MD5.match(post.md5) and not _BOORU_HASH.match(post.md5):
        raise StoreFailed("bad_metadata", f"refusing to store a post whose booru hash is {post.md5!r}")
    if not _EXT.match(post.ext):
        raise StoreFailed("bad_metadata", f"refusing to store md5={post.md5!r} ext={post.ext!r}")
    if post.ext not in IMAGE_EXTS:
        raise StoreFailed("unsupported_type", f"{post.file_url}: .{post.ext} is not an image type we store")
    if post.width * post.height > opts.max_pixels:
        raise StoreFailed("oversize", f"booru says {post.width}x{post.height} > the {opts.max_pixels}-pixel limit")


def _already_stored(post: PostMeta, opts: StoreOptions, index: StoreIndex | None) -> dict | None:
    """The store record of the post's image when it is stored and verified already."""
    if not _MD5.match(post.md5):  # where it lies is known only once its bytes were hashed: the index remembers it
        return index.verified_by_booru_hash(post.md5) if index is not None else None
    rel = image_relpath(post.md5, post.ext)
    if index is not None:
        return index.verified(rel, post.md5)
    return _stored_record(opts.out, rel, post.md5, None)


def _fetch(source: Source, post: PostMeta, tmp: Path, opts: StoreOptions) -> tuple[bytes, str]:
    """The post's bytes, written to ``tmp``, and the server's Content-Type ('' for sources that send none)."""
    download = getattr(source, "download", None)
    if download is None:
        try:
            data = source.fetch(post.file_url)
        except GanimeError as exc:
            raise StoreFailed("fetch_failed", str(exc)) from exc
        if len(data) > opts.max_bytes:
            raise StoreFailed("oversize", f"{post.file_url}: {len(data)} bytes > the {opts.max_bytes}-byte limit")
        tmp.write_bytes(data)
        return data, ""
    from ganime_steps.sources.http import FetchError

    try:
        got = download(post.file_url, tmp, opts.max_bytes)
    except FetchError as exc:
        raise StoreFailed(exc.reason, exc.detail) from exc
    if not _MD5.match(post.md5) and got.declared_size is None:
        raise StoreFailed(
            "unverifiable",
            f"{post.file_url}: the booru hash {post.md5!r} is not an md5 and the server sent no "
            "Content-Length, so neither hash nor size can vouch for the body",
        )
    return tmp.read_bytes(), got.content_type


def store_post(source: Source, post: PostMeta, opts: StoreOptions, index: StoreIndex | None = None) -> Outcome:
    """Fetch to a temporary file, verify, rename into the store. Thread-safe for distinct md5s."""
    _check_metadata(post, opts)
    rec = _already_stored(post, opts, index)
    if rec is not None:
        return Outcome("present", rec)
    has_md5 = bool(_MD5.match(post.md5))
    tmp = opts.out / TMP_DIR / f"{uuid.uuid4().hex}.part"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        data, content_type = _fetch(source, post, tmp, opts)
        verify_image(data, post, content_type=content_type, max_pixels=opts.max_pixels)
        md5 = post.md5 if has_md5 else hashlib.md5(data).hexdigest()
        rel = image_relpath(md5, post.ext)
        dest = opts.out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)
        st = dest.stat()
        rec = {"md5": md5, "file": rel, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "fetched_at": _now()}
        if not has_md5:
            rec["booru_hash"] = post.md5
        return Outcome("downloaded", rec)
    finally:
        tmp.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------------ progress


class _Progress:
    """listed / downloaded / present / failed: a tqdm bar on a terminal, a log line every ``every_s`` otherwise."""

    def __init__(self, total: int, desc: str, every_s: float = 10.0) -> None:
        self.desc, self.every_s, self._last = desc, every_s, time.monotonic()
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="post")

    def update(self, s: ScrapeSummary, force: bool = False) -> None:
        done = s.downloaded + s.already_present + s.failed_total
        if self.bar is not None:
            self.bar.n = done
            self.bar.set_postfix(
                listed=s.listed, downloaded=s.downloaded, present=s.already_present, failed=s.failed_total
            )
            return
        now = time.monotonic()
        if force or now - self._last >= self.every_s:
            self._last = now
            log.info(
                "%s: listed %d, downloaded %d, present %d, failed %d",
                self.desc,
                s.listed,
                s.downloaded,
                s.already_present,
                s.failed_total,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ----------------------------------------------------------------------------------------------------------- run


class _OutLock:
    """An exclusive lock on the output folder: two scrapes must not share journals and temporary files."""

    def __init__(self, out: Path) -> None:
        self._fh = open(out / ".scrape.lock", "w")  # noqa: SIM115 - closed in release()
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.close()
            raise GanimeError(f"{out}: another scrape is writing to this folder; wait for it to finish") from None

    def release(self) -> None:
        fcntl.flock(self._fh, fcntl.LOCK_UN)
        self._fh.close()


def run_scrape(
    settings: ScrapeSettings | None = None,
    *,
    out: Path,
    fresh_listing: bool = False,
    verify: bool = False,
    time_scale: float = 1.0,
) -> ScrapeSummary:
    """Scrape ``settings`` (default: :class:`ScrapeSettings`'s, the schema's) into ``out``, where they are saved as
    ``scrape_config.json`` (the name resolved): ``run_scrape(ScrapeSettings(kind="synthetic", limit=5), out=...)``.
    The keywords are how it runs, never settings. ``fresh_listing``: list again from the newest post (a new journal).
    ``verify``: re-hash every stored file of the selected posts instead of trusting the index (size and mtime);
    damaged files are removed and downloaded again, or listed in failures.parquet. ``time_scale``: multiply every
    backoff and Retry-After sleep (a test knob)."""
    s = settings or ScrapeSettings()
    s = replace(s, name=s.name or s.kind)
    check_limits(
        limit=s.limit,
        page_size=s.page_size,
        workers=s.workers,
        rate=s.rate,
        burst=s.burst,
        max_pixels=s.max_pixels,
        max_bytes=s.max_bytes,
        timeout=s.timeout,
        retries=s.retries,
    )
    name = s.name
    out = Path(out)
    http: dict[str, Any] = {}
    if s.kind in ("dapi", "danbooru"):
        http = _http_options(
            user_env=s.user_env,
            api_key_env=s.api_key_env,
            burst=s.burst,
            image_hosts=s.image_hosts,
            retries=s.retries,
            backoff=s.backoff,
            max_backoff=s.max_backoff,
            timeout=s.timeout,
            max_retry_after=s.max_retry_after,
            time_scale=time_scale,
        )
    local = {"n_posts": s.n_posts, "seed": s.seed, "style": s.style, "path": s.path, "max_bytes": s.max_bytes}
    source = make_source(s.kind, name=name, base_url=s.base_url, rate=s.rate, **local, **http)
    query = _listing_query(s.kind, name, s.base_url, s.tags, n_posts=s.n_posts, seed=s.seed, style=s.style, path=s.path)
    out.mkdir(parents=True, exist_ok=True)
    lock = _OutLock(out)
    try:
        write_json(out / SETTINGS_FILE, s.to_json())  # `scrape --config` of it is this scrape again
        for stale in (out / TMP_DIR).glob("*.part"):  # downloads a killed run left in flight
            stale.unlink(missing_ok=True)
        return _scrape(
            source,
            out=out,
            name=name,
            tags=s.tags,
            limit=s.limit,
            page_size=s.page_size,
            rate=s.rate if http else None,
            workers=s.workers,
            query=query,
            selector=Selector(s.limit, s.blacklist, s.ratings),
            opts=StoreOptions(out=out, max_pixels=s.max_pixels, max_bytes=s.max_bytes, verify=verify),
            fresh_listing=fresh_listing,
        )
    finally:
        lock.release()


def _http_options(
    *, user_env: str | None, api_key_env: str | None, burst: int, image_hosts: Iterable[str], **policy: Any
) -> dict[str, Any]:
    """The HTTP sources' options (see make_http_source); ``policy``: the RetryPolicy's fields."""
    from ganime_steps.sources.http import RetryPolicy

    return {
        "user_env": user_env,
        "api_key_env": api_key_env,
        "burst": burst,
        "extra_hosts": tuple(image_hosts),
        "policy": RetryPolicy(**policy),
    }


def _listing_query(
    kind: str, name: str, base_url: str | None, tags: str, *, n_posts: int, seed: int, style: str, path: Any
) -> dict:
    """What the listing journal is a listing of: another query starts a new journal."""
    query = {"kind": kind, "source": name, "base_url": (base_url or "").rstrip("/"), "tags": " ".join(tags.split())}
    if kind == "synthetic":
        query.update(n_posts=n_posts, seed=seed)
        if style != "booru":  # absent for the original look: journals of earlier scrapes stay valid
            query.update(style=style)
    if kind == "folder":
        query.update(path=str(Path(path).resolve()))
    return query


def check_limits(**values: float) -> None:
    """Refuse nonsense limits before anything is fetched or written, in one line naming the flag (and config key)."""
    at_least_one = ("limit", "page_size", "workers", "burst", "max_pixels", "max_bytes")
    positive = ("rate", "timeout")
    for key, value in values.items():
        flag = "--" + key.replace("_", "-")
        if key in at_least_one and not (isinstance(value, int) and value >= 1):
            raise GanimeError(f"{flag} {value!r} (config scrape.{key}): must be a whole number >= 1")
        if key in positive and not (isinstance(value, (int, float)) and value > 0 and value != float("inf")):
            raise GanimeError(f"{flag} {value!r} (config scrape.{key}): must be a finite number > 0")
        if key == "retries" and not (isinstance(value, int) and value >= 0):
            raise GanimeError(f"{flag} {value!r} (config scrape.{key}): must be a whole number >= 0")


class _Downloads:
    """The posts being stored on a thread pool: futures in flight, outcomes by listing position, summary counts."""

    def __init__(
        self,
        pool: cf.ThreadPoolExecutor,
        source: Source,
        opts: StoreOptions,
        index: StoreIndex,
        summary: ScrapeSummary,
        bar: _Progress,
    ) -> None:
        self.pool, self.source, self.opts, self.index, self.summary, self.bar = pool, source, opts, index, summary, bar
        self.results: dict[int, tuple[PostMeta, Outcome | StoreFailed]] = {}
        self.pending: dict[cf.Future, tuple[int, PostMeta]] = {}

    def submit(self, posts: list[PostMeta]) -> None:
        for post in posts:
            pos = self.summary.listed
            self.summary.listed += 1
            self.pending[self.pool.submit(store_post, self.source, post, self.opts, self.index)] = (pos, post)

    def _settle(self, fut: cf.Future) -> None:
        pos, post = self.pending.pop(fut)
        summary = self.summary
        try:
            outcome: Outcome | StoreFailed = fut.result()
        except StoreFailed as exc:
            outcome = exc
            summary.failed[exc.reason] = summary.failed.get(exc.reason, 0) + 1
            summary.failed_total += 1
            log.warning("post %s not stored: %s", post.post_id, exc)
        else:
            self.index.add(outcome.record)
            if outcome.status == "present":
                summary.already_present += 1
            else:
                summary.downloaded += 1
                summary.bytes += outcome.record["size"]
        self.results[pos] = (post, outcome)

    def drain(self, block: bool) -> None:
        """Settle the finished downloads (with ``block``: wait for at least one)."""
        if not self.pending:
            return
        done, _ = cf.wait(list(self.pending), timeout=None if block else 0, return_when=cf.FIRST_COMPLETED)
        for fut in done:
            self._settle(fut)
        self.bar.update(self.summary)

    def finish(self) -> None:
        while self.pending:
            self.drain(block=True)

    def cancel(self) -> None:
        for fut in self.pending:
            fut.cancel()


def _list_and_store(
    source: Source,
    journal: ListingJournal,
    selector: Selector,
    downloads: _Downloads,
    *,
    name: str,
    tags: str,
    limit: int,
    page_size: int,
) -> GanimeError | None:
    """Store the posts of the journal's pages, then list further pages until ``limit`` posts are selected or the
    listing ends, storing each page's posts while the next is listed. Returns the error that stopped the listing."""
    for page in journal.pages:
        downloads.submit(selector.add(page))
    if journal.pages:
        log.info(
            "%s: resuming from %d listed page(s), %d post(s) selected",
            journal.path,
            len(journal.pages),
            len(selector.selected),
        )
    while not selector.full and not journal.ended:
        before = journal.before
        want = page_size if (selector.blacklist or selector.ratings) else limit - len(selector.selected)
        try:
            page = source.list_page(tags, before, max(1, min(page_size, want)))
        except GanimeError as exc:
            log.error("listing stopped: %s", exc)
            return exc
        if page and before is not None and min(p.post_id for p in page) >= before:
            raise GanimeError(f"source {name}: listing did not advance past id {before}; the server ignores paging")
        journal.append(before, page)
        downloads.submit(selector.add(page))
        downloads.drain(block=False)
    return None


def _scrape(
    source: Source,
    *,
    out: Path,
    name: str,
    tags: str,
    limit: int,
    page_size: int,
    rate: float | None,
    workers: int,
    query: dict,
    selector: Selector,
    opts: StoreOptions,
    fresh_listing: bool,
) -> ScrapeSummary:
    started = time.monotonic()
    summary = ScrapeSummary(source=name, rate_limit=rate)
    journal = ListingJournal(out / LISTING_JOURNAL, query, fresh=fresh_listing)
    index = StoreIndex(out, verify=opts.verify)
    summary.listing_resumed = journal.resumed and bool(journal.pages)
    bar = _Progress(limit, f"scrape {name}")
    with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scrape") as pool:
        downloads = _Downloads(pool, source, opts, index, summary, bar)
        try:
            listing_error = _list_and_store(
                source, journal, selector, downloads, name=name, tags=tags, limit=limit, page_size=page_size
            )
            downloads.finish()
        except BaseException:
            downloads.cancel()
            raise
        finally:
            journal.close()
            index.close()
            bar.update(summary, force=True)
            bar.close()

    summary.filtered, summary.hidden, summary.duplicates = selector.filtered, selector.hidden, selector.duplicates
    if listing_error is not None and not downloads.results:
        raise GanimeError(f"source {name}: {_one_line(str(listing_error))}; nothing was listed, no table written")
    summary.listing_pages = len(journal.pages)
    summary.listing_complete = selector.full or journal.ended
    summary.seconds = round(time.monotonic() - started, 3)
    _count_requests(summary, source)
    _write_outputs(out, name, downloads.results, summary)
    _log_summary(name, summary)
    if listing_error is not None:
        raise GanimeError(f"source {name}: {listing_error}; stored what was listed; rerun to continue the listing")
    if summary.downloaded + summary.already_present == 0:
        raise GanimeError(
            f"source {name}: no post could be stored for tags {tags!r}; see {out}/failures.parquet "
            "(posts.parquet not written)"
        )
    return summary


def _count_requests(summary: ScrapeSummary, source: Source) -> None:
    """The HTTP client's request counters and the achieved request rate (sources without a client: none)."""
    client = getattr(source, "client", None)
    if client is None:
        return
    stats = client.stats
    summary.requests, summary.retries = stats.requests, stats.retries
    summary.listing_requests, summary.image_requests = stats.listing_requests, stats.image_requests
    summary.request_rate = round(stats.request_rate(), 3)


def _log_summary(name: str, summary: ScrapeSummary) -> None:
    log.info(
        "%s: listed %d, downloaded %d (%d bytes), already present %d, failed %s, filtered %d, hidden %d, "
        "duplicates %d; %d requests in %.1fs",
        name,
        summary.listed,
        summary.downloaded,
        summary.bytes,
        summary.already_present,
        summary.failed or 0,
        summary.filtered,
        summary.hidden,
        summary.duplicates,
        summary.requests,
        summary.seconds,
    )


def _write_outputs(out: Path, name: str, results: dict, summary: ScrapeSummary) -> None:
    """Write the tables. A run that stored no post leaves posts.parquet as it was (never a 0-row table)."""
    rows, failures = [], []
    seen_md5: set[str] = set()
    for pos in sorted(results):
        post, outcome = results[pos]
        if isinstance(outcome, StoreFailed):
            failures.append(
                {
                    "post_id": post.post_id,
                    "source": name,
                    "md5": post.md5,
                    "file_url": post.file_url,
                    "reason": outcome.reason,
                    "detail": outcome.detail,
                }
            )
            continue
        if outcome.record["md5"] in seen_md5:  # a post whose booru hash is not an md5, holding an image stored already
            summary.duplicates += 1
            continue
        seen_md5.add(outcome.record["md5"])
        rows.append(
            {
                "post_id": post.post_id,
                "source": name,
                "md5": outcome.record["md5"],
                "file": outcome.record["file"],
                "width": post.width,
                "height": post.height,
                "tags": post.tags,
                "rating": post.rating,
                "score": post.score,
                "source_url": post.source_url,
                "fetched_at": outcome.record["fetched_at"],
                "face_boxes": json.dumps([list(b) for b in post.face_boxes]),
                "booru_hash": post.md5,
            }
        )
    failed = pd.DataFrame(failures, columns=FAILURE_COLUMNS).astype({"post_id": "int64"})
    write_parquet(out / "failures.parquet", failed)
    if rows:
        write_parquet(out / "posts.parquet", pd.DataFrame(rows, columns=POST_COLUMNS).astype({"post_id": "int64"}))
    write_json(out / "scrape_summary.json", summary)


def _one_line(text: str) -> str:
    return " ".join(text.split())


# ----------------------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ganime_steps.scrape",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_settings_options(p, "scrape", "scrape_config.json", argument_groups())
    return p


def argument_groups() -> list[tuple[str | None, Options]]:
    """The CLI's options by --help section (None: the main options), each a table of flags. A setting's flag has
    no argparse default (a flag not given is left out of the namespace): the defaults are :class:`ScrapeSettings`'.
    """
    d = ScrapeSettings()

    def opt(help: str, type: Callable[[str], Any] | None = None, **kw: Any) -> dict[str, Any]:
        return {"default": argparse.SUPPRESS, "help": help, **({"type": type} if type else {}), **kw}

    words = str.split  # a space-separated list
    runtime = [
        ("--out", {"type": Path, "required": True, "help": "output folder (images/, posts.parquet, ...)"}),
        ("--fresh-listing", {"action": "store_true", "help": "list again from the newest post (new journal)"}),
        (
            "--verify",
            {
                "action": "store_true",
                "help": "re-hash every stored file of the listed posts instead of trusting size and mtime; damaged "
                "files are removed and downloaded again (or listed in failures.parquet)",
            },
        ),
        (
            "--time-scale",
            {
                "type": float,
                "default": 1.0,
                "help": "advanced/test knob: multiply every backoff and Retry-After sleep (tests use 0.001; default 1)",
            },
        ),
    ]
    what = [
        ("--kind", opt(f"source type (default {d.kind})", choices=SOURCE_KINDS)),
        ("--name", opt("source name used in tables and paths (default: the kind)")),
        ("--tags", opt("space-separated booru tags, all required")),
        ("--limit", opt(f"maximum number of posts to store (default {d.limit})", int)),
        ("--page-size", opt(f"posts per listing request (default {d.page_size}; Danbooru: at most 200)", int)),
    ]
    where = [
        ("--base-url", opt("booru address for dapi/danbooru, e.g. https://safebooru.org")),
        ("--path", opt("folder: a directory, .zip or .tar(.gz) of images")),
        ("--user-env", opt("environment variable holding the user id (DAPI) or login (Danbooru)")),
        ("--api-key-env", opt("environment variable holding the API key (never logged)")),
        ("--image-hosts", opt("space-separated extra hosts images may be fetched from", words)),
    ]
    polite = [
        ("--rate", opt(f"requests per second per host (default {d.rate:g})", float)),
        ("--burst", opt(f"token-bucket size: requests back to back (default {d.burst})", int)),
        ("--workers", opt(f"parallel downloads, all under --rate (default {d.workers})", int)),
        ("--retries", opt(f"retries per request after the first try (default {d.retries})", int)),
        ("--backoff", opt(f"first backoff delay in s, doubling (default {d.backoff:g})", float)),
        ("--max-backoff", opt(f"longest backoff delay in s (default {d.max_backoff:g})", float)),
        ("--timeout", opt(f"connect/read timeout per request in s (default {d.timeout:g})", float)),
        (
            "--max-retry-after",
            opt(
                "a Retry-After longer than this many seconds makes the request fail instead of waiting "
                f"(default {d.max_retry_after:g})",
                float,
            ),
        ),
    ]
    which = [
        ("--blacklist", opt("space-separated tags: posts carrying any of them are skipped", words)),
        (
            "--ratings",
            opt("space-separated ratings to keep, compared by first letter (e.g. 'g s'; default: all)", words),
        ),
        ("--max-pixels", opt(f"decompression-bomb guard: largest w*h (default {d.max_pixels})", int)),
        ("--max-bytes", opt(f"largest image file in bytes (default {d.max_bytes})", int)),
    ]
    synthetic = [
        ("--n-posts", opt(f"posts the synthetic booru holds (default {d.n_posts})", int)),
        ("--seed", opt(f"generator seed (default {d.seed})", int)),
        ("--style", opt(f"the booru's look, booru or tachie (default {d.style})")),
    ]
    return [
        (None, runtime),
        ("settings: what to fetch", what),
        ("settings: where from (booru address or folder, credentials)", where),
        ("settings: politeness, per host", polite),
        ("settings: which posts and images are kept", which),
        ("settings: the synthetic booru (kind synthetic)", synthetic),
    ]


def settings_from_args(args: argparse.Namespace) -> ScrapeSettings:
    """The settings: --config's file or --settings' JSON (else the defaults), then every setting flag given."""
    return ScrapeSettings.from_args(args)


def main(argv: list[str] | None = None) -> int:
    def _handle(a: argparse.Namespace) -> ScrapeSummary:
        return run_scrape(
            settings_from_args(a), out=a.out, fresh_listing=a.fresh_listing, verify=a.verify, time_scale=a.time_scale
        )

    return run_cli(build_parser(), _handle, argv)


if __name__ == "__main__":
    raise SystemExit(main())
