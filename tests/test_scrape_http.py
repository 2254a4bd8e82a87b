"""Scrape stage against a local fake booru (no network): DAPI JSON/XML, Gelbooru, Danbooru, faults, integrity, safety.

``FakeBooru`` is also used by tests/test_scrape_resume.py and benchmarks/bench_scrape.py.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import logging
import os
import socket
import struct
import threading
import time
import zlib
from collections import defaultdict
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest
from conftest import png_bytes

from ganime_steps import USER_AGENT, scrape
from ganime_steps.common import GanimeError
from ganime_steps.sources import http as booru_http

# ------------------------------------------------------------------------------------------------ the fake booru


@dataclass
class FakePost:
    id: int
    body: bytes
    md5: str | None = None  # what the booru reports; default: the body's md5
    image: str | None = None  # DAPI image name; default f"{md5}.png"
    directory: str = "ab"
    file_url: str | None = None  # DAPI: absent unless set; Danbooru: default /data/<md5>.<ext>
    ext: str = "png"
    width: int = 48
    height: int = 64
    tags: str = "1girl solo"
    rating: str = "general"
    content_type: str = "image/png"
    hidden: bool = False  # Danbooru: listed without file_url / md5

    def __post_init__(self) -> None:
        self.md5 = self.md5 or hashlib.md5(self.body).hexdigest()
        self.image = self.image if self.image is not None else f"{hashlib.md5(self.body).hexdigest()}.{self.ext}"


def make_posts(n: int, **kw) -> list[FakePost]:
    return [FakePost(i, png_bytes(i), **kw) for i in range(1, n + 1)]


@dataclass
class Request:
    t: float
    path: str
    query: dict
    agent: str


@dataclass
class FakeBooru:
    """A booru on 127.0.0.1. ``mode``: safebooru (JSON array), gelbooru (JSON object), xml, danbooru.

    ``faults[path]`` is a list of actions used up one per request to that path (``/index.php`` or ``/posts.json`` for
    listings): an HTTP status, ``(status, {headers})``, ``"reset"`` (connection reset), ``"truncate"`` (half the
    body), ``("sleep", s)``, ``("redirect", url)``. ``always[path]`` is one action applied to every request.
    """

    posts: list[FakePost]
    mode: str = "safebooru"
    latency: float = 0.0
    credentials: dict | None = None  # required query parameters (Gelbooru api_key/user_id, Danbooru login/api_key)
    repeat_newest: bool = False  # every page after the first also lists the newest post (a duplicate)
    faults: dict = field(default_factory=lambda: defaultdict(list))
    always: dict = field(default_factory=dict)
    requests: list = field(default_factory=list)
    on_request: object = None  # callable(Request) run before answering (tests use it to kill a client)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.by_id = {p.id: p for p in self.posts}
        booru = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                booru._handle(self)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def image_path(self, post: FakePost) -> str:
        if self.mode == "danbooru":
            return f"/data/{post.md5}.{post.ext}"
        return f"/images/{post.directory}/{post.image}"

    # -- request log views
    def image_requests(self) -> list[str]:
        return [r.path for r in self.requests if r.path not in ("/index.php", "/posts.json")]

    def listing_requests(self) -> list[Request]:
        return [r for r in self.requests if r.path in ("/index.php", "/posts.json")]

    # -- serving
    def _handle(self, h: http.server.BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        req = Request(time.monotonic(), parts.path, query, h.headers.get("User-Agent", ""))
        with self._lock:
            self.requests.append(req)
            action = self.faults[parts.path].pop(0) if self.faults.get(parts.path) else self.always.get(parts.path)
        if self.on_request is not None:
            self.on_request(req)
        if self.latency:
            time.sleep(self.latency)
        if isinstance(action, tuple) and action[0] == "sleep":
            time.sleep(action[1])
            action = None
        if action == "reset":
            return _reset(h)
        if isinstance(action, tuple) and action[0] == "redirect":
            return _send(h, 302, b"", "text/plain", {"Location": action[1]})
        if isinstance(action, int) or (isinstance(action, tuple) and isinstance(action[0], int)):
            status, headers = (action, {}) if isinstance(action, int) else action
            return _send(h, status, b"<html>busy</html>", "text/html", headers)
        listing = parts.path in ("/index.php", "/posts.json")
        if listing and self.credentials and any(query.get(k) != v for k, v in self.credentials.items()):
            return _send(h, 401, b'{"error": "missing authentication"}', "application/json")
        if parts.path == "/index.php":
            body, ctype = self._dapi(query)
        elif parts.path == "/posts.json":
            body, ctype = self._danbooru(query)
        else:
            post = next((p for p in self.posts if self.image_path(p) == parts.path), None)
            if post is None:
                return _send(h, 404, b"not found", "text/plain")
            body, ctype = post.body, post.content_type
        if action == "truncate":
            return _send(h, 200, body, ctype, truncate=True)
        _send(h, 200, body, ctype)

    def _page(self, before: int | None, limit: int) -> list[FakePost]:
        ids = sorted((i for i in self.by_id if before is None or i < before), reverse=True)[:limit]
        page = [self.by_id[i] for i in ids]
        if self.repeat_newest and before is not None and page:
            page.append(self.by_id[max(self.by_id)])
        return page

    def _dapi(self, query: dict) -> tuple[bytes, str]:
        tags = query.get("tags", "").split()
        before = next((int(t[4:]) for t in tags if t.startswith("id:<")), None)
        page = self._page(before, int(query.get("limit", 100)))
        records = []
        for p in page:
            # FakePost's fields are named after DAPI's; DAPI pads the tags with spaces
            rec = {k: getattr(p, k) for k in ("id", "md5", "image", "directory", "width", "height")}
            rec.update(tags=f" {p.tags} ", rating=p.rating, score=p.id % 7)
            if p.file_url:
                rec["file_url"] = p.file_url
            records.append(rec)
        if self.mode == "xml":
            attrs = lambda r: " ".join(f'{k}="{v}"' for k, v in r.items())  # noqa: E731
            posts = "".join(f"<post {attrs(r)}/>" for r in records)
            return (
                f'<?xml version="1.0" encoding="UTF-8"?><posts count="99" offset="0">{posts}</posts>'.encode(),
                "text/xml",
            )
        if self.mode == "gelbooru":
            data: dict = {"@attributes": {"limit": 100, "offset": 0, "count": len(records)}}
            if records:
                data["post"] = records[0] if len(records) == 1 else records
            return json.dumps(data).encode(), "application/json"
        return (json.dumps(records).encode() if records else b""), "application/json"  # Safebooru: empty at the end

    def _danbooru(self, query: dict) -> tuple[bytes, str]:
        page_arg = query.get("page", "")
        before = int(page_arg[1:]) if page_arg.startswith("b") else None
        page = self._page(before, min(200, int(query.get("limit", 20))))
        records = []
        for p in page:
            rec = {
                "id": p.id,
                "image_width": p.width,
                "image_height": p.height,
                "tag_string": p.tags,
                "rating": p.rating[:1],
                "score": p.id % 5,
                "file_ext": p.ext,
            }
            if not p.hidden:
                rec["md5"] = p.md5
                rec["file_url"] = p.file_url or f"{self.url}{self.image_path(p)}"
            records.append(rec)
        return json.dumps(records).encode(), "application/json"


def _send(h, status: int, body: bytes, ctype: str, headers: dict | None = None, truncate: bool = False) -> None:
    h.send_response(status)
    h.send_header("Content-Type", ctype)
    h.send_header("Content-Length", str(len(body)))
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.end_headers()
    if truncate:
        h.wfile.write(body[: len(body) // 2])
        h.wfile.flush()
        return _reset(h)
    h.wfile.write(body)


def _reset(h) -> None:
    """Abort the connection with a TCP reset (SO_LINGER 0), as a crashing proxy does."""
    h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    h.close_connection = True
    h.connection.close()


def png_header_bomb(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression-bomb shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


FAST = {"rate": 500.0, "workers": 3, "retries": 3, "backoff": 0.001, "max_backoff": 0.01, "timeout": 5.0}


SCRAPE_SETTINGS = {f.name for f in fields(scrape.ScrapeSettings)}


def scrape_booru(booru: FakeBooru, out: Path, *, limit: int = 100, page_size: int = 3, **kw) -> scrape.ScrapeSummary:
    """A scrape of ``booru`` into ``out`` at FAST; ``kw``: settings by field name over those, or ``run_scrape``'s
    keywords (verify, time_scale, ...)."""
    kind = "danbooru" if booru.mode == "danbooru" else "dapi"
    given = {**FAST, **kw}
    settings = scrape.ScrapeSettings(
        kind=kind, name="booru", base_url=booru.url, tags="1girl solo", limit=limit, page_size=page_size,
        **{k: v for k, v in given.items() if k in SCRAPE_SETTINGS},
    )  # fmt: skip
    return scrape.run_scrape(settings, out=out, **{k: v for k, v in given.items() if k not in SCRAPE_SETTINGS})


@pytest.fixture
def booru_factory():
    made: list[FakeBooru] = []

    def make(posts, **kw) -> FakeBooru:
        made.append(FakeBooru(posts, **kw))
        return made[-1]

    yield make
    for b in made:
        b.close()


def stored(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "posts.parquet")


def failures(out: Path) -> dict[int, str]:
    df = pd.read_parquet(out / "failures.parquet")
    return dict(zip(df["post_id"], df["reason"], strict=True))


def assert_store_matches(out: Path) -> None:
    """Every stored file is named by its own md5 and every posts row points at one; no temporary files remain."""
    posts = stored(out)
    files = sorted(p.relative_to(out).as_posix() for p in (out / "images").rglob("*") if p.is_file())
    assert files == sorted(posts["file"])
    for row in posts.itertuples():
        assert hashlib.md5((out / row.file).read_bytes()).hexdigest() == row.md5
    assert not [p for p in (out / scrape.TMP_DIR).glob("*")] if (out / scrape.TMP_DIR).exists() else True


# ----------------------------------------------------------------------------------------------------- listings


@pytest.mark.parametrize("mode", ["safebooru", "xml", "gelbooru"])
def test_dapi_listing_formats_page_by_id(booru_factory, tmp_path, mode):
    booru = booru_factory(make_posts(7), mode=mode)
    summary = scrape_booru(booru, tmp_path, limit=100, page_size=3)
    assert (summary.listed, summary.downloaded, summary.failed_total) == (7, 7, 0)
    posts = stored(tmp_path)
    assert list(posts["post_id"]) == [7, 6, 5, 4, 3, 2, 1]  # listing order, newest first
    assert set(posts["tags"]) == {"1girl solo"}
    listing = booru.listing_requests()
    assert [r.query["tags"] for r in listing] == [
        "1girl solo",
        "1girl solo id:<5",
        "1girl solo id:<2",
        "1girl solo id:<1",
    ]
    assert all(r.query["json"] == "1" and r.query["limit"] == "3" for r in listing)
    assert {r.agent for r in booru.requests} == {USER_AGENT}
    assert summary.listing_complete and summary.listing_pages == 4
    assert_store_matches(tmp_path)


def test_gelbooru_single_object_and_credentials_never_leak(booru_factory, tmp_path, monkeypatch, caplog):
    secret_key, secret_uid = "s3cr3t-KEY-abc", "424242"
    monkeypatch.setenv("GB_KEY", secret_key)
    monkeypatch.setenv("GB_UID", secret_uid)
    booru = booru_factory(make_posts(3), mode="gelbooru", credentials={"api_key": secret_key, "user_id": secret_uid})
    booru.faults["/index.php"] = [503]  # a retried listing logs its URL: the key must not appear
    caplog.set_level(logging.DEBUG)
    summary = scrape_booru(booru, tmp_path, page_size=1, api_key_env="GB_KEY", user_env="GB_UID")
    assert summary.downloaded == 3  # one post per page: Gelbooru's single-object answer, three times
    texts = [caplog.text] + [p.read_text(errors="replace") for p in tmp_path.glob("*.json*")]
    texts.append(pd.read_parquet(tmp_path / "failures.parquet").to_csv())
    assert not [t for t in texts if secret_key in t], "the API key leaked into logs or outputs"

    monkeypatch.delenv("GB_KEY")
    with pytest.raises(GanimeError, match="GB_UID and GB_KEY"):
        scrape_booru(booru, tmp_path / "again", api_key_env="GB_KEY", user_env="GB_UID")


def test_safebooru_empty_body_ends_listing(booru_factory, tmp_path):
    booru = booru_factory(make_posts(4))
    scrape_booru(booru, tmp_path, page_size=4)
    last = booru.listing_requests()[-1]
    assert last.query["tags"].endswith("id:<1")  # answered with an empty body: the end, not an error
    assert booru_http.parse_dapi("") == [] and booru_http.parse_dapi("[]") == []


def test_danbooru_paging_hidden_posts_and_page_cap(booru_factory, tmp_path):
    posts = make_posts(12)
    for p in posts:
        p.hidden = p.id in (9, 8, 3)  # 9 and 8 make a whole page hidden at page size 2
    booru = booru_factory(posts, mode="danbooru")
    summary = scrape_booru(booru, tmp_path, page_size=2)
    assert (summary.downloaded, summary.hidden) == (9, 3)
    assert list(stored(tmp_path)["post_id"]) == [12, 11, 10, 7, 6, 5, 4, 2, 1]
    pages = [r.query.get("page") for r in booru.listing_requests()]
    assert pages == [None, "b11", "b9", "b7", "b5", "b3", "b1"]
    assert_store_matches(tmp_path)

    src = booru_http.DanbooruSource("d", booru.url, 1000.0)
    src.list_page("1girl", None, 500)
    assert booru.listing_requests()[-1].query["limit"] == "200"


def test_danbooru_cli(booru_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("DB_LOGIN", "me")
    monkeypatch.setenv("DB_KEY", "k3y-danbooru")
    booru = booru_factory(make_posts(5), mode="danbooru", credentials={"login": "me", "api_key": "k3y-danbooru"})
    args = ["--kind", "danbooru", "--base-url", booru.url, "--tags", "1girl", "--limit", "4", "--rate", "500"]
    args += ["--user-env", "DB_LOGIN", "--api-key-env", "DB_KEY", "--out", str(tmp_path)]
    assert scrape.main(args) == 0
    summary = json.loads((tmp_path / "scrape_summary.json").read_text())
    assert (summary["listed"], summary["downloaded"], summary["failed"]) == (4, 4, {})
    assert summary["requests"] == 5 and summary["request_rate"] > 0
    assert list(stored(tmp_path)["post_id"]) == [5, 4, 3, 2]


# ------------------------------------------------------------------------------------------------------ faults


def test_429_retry_after_is_honoured_for_the_host(booru_factory, tmp_path):
    posts = make_posts(2)
    booru = booru_factory(posts)
    path = booru.image_path(posts[1])
    booru.faults[path] = [(429, {"Retry-After": "2"})]
    # backoff 0: the only pause is the server's Retry-After (2 s, scaled by 0.05 = 0.1 s)
    summary = scrape_booru(booru, tmp_path, workers=1, backoff=0.0, time_scale=0.05)
    assert summary.downloaded == 2 and summary.retries == 1
    hits = [r.t for r in booru.requests if r.path == path]
    assert len(hits) == 2 and hits[1] - hits[0] >= 0.1

    too_long = booru_factory(make_posts(2))
    too_long.always[too_long.image_path(too_long.posts[0])] = (503, {"Retry-After": "3600"})
    summary = scrape_booru(too_long, tmp_path / "b", max_retry_after=60)
    assert failures(tmp_path / "b") == {1: "http_503"}
    assert too_long.image_requests().count(too_long.image_path(too_long.posts[0])) == 1  # no retry, no waiting


def test_bursts_of_5xx_and_connection_resets_recover(booru_factory, tmp_path):
    posts = make_posts(6)
    booru = booru_factory(posts)
    booru.faults["/index.php"] = [503, "reset", 500]
    for p in posts[:4]:
        booru.faults[booru.image_path(p)] = [502, "reset", 504]
    summary = scrape_booru(booru, tmp_path, retries=3)
    assert (summary.downloaded, summary.failed_total) == (6, 0)
    assert summary.retries == 3 + 4 * 3
    assert_store_matches(tmp_path)


def test_exhausted_retries_are_recorded_and_retried_next_run(booru_factory, tmp_path):
    posts = make_posts(4)
    booru = booru_factory(posts)
    broken = booru.image_path(posts[2])
    booru.always[broken] = 503
    summary = scrape_booru(booru, tmp_path, retries=2)
    assert summary.failed == {"http_503": 1}
    assert failures(tmp_path) == {3: "http_503"}
    assert booru.image_requests().count(broken) == 3  # first try + 2 retries, then given up

    del booru.always[broken]
    booru.requests.clear()
    summary = scrape_booru(booru, tmp_path, retries=2)
    assert (summary.downloaded, summary.already_present, summary.failed_total) == (1, 3, 0)
    assert booru.image_requests() == [broken]  # only the failed post is fetched again
    assert not booru.listing_requests()  # the listing had ended: the journal answers
    assert failures(tmp_path) == {}


def test_truncated_bodies_are_retried_then_recorded(booru_factory, tmp_path):
    posts = make_posts(3)
    booru = booru_factory(posts)
    booru.faults[booru.image_path(posts[0])] = ["truncate"]
    booru.always[booru.image_path(posts[1])] = "truncate"
    summary = scrape_booru(booru, tmp_path, retries=2)
    assert failures(tmp_path) == {2: "truncated"}
    assert summary.downloaded == 2
    assert_store_matches(tmp_path)


def test_timeouts_are_retried(booru_factory, tmp_path):
    posts = make_posts(2)
    booru = booru_factory(posts)
    booru.faults[booru.image_path(posts[0])] = [("sleep", 0.5)]
    summary = scrape_booru(booru, tmp_path, timeout=0.2, retries=2)
    assert (summary.downloaded, summary.retries) == (2, 1)


# --------------------------------------------------------------------------------------------------- integrity


def test_integrity_checks(booru_factory, tmp_path):
    big = png_bytes(5, size=(120, 100))
    posts = [
        FakePost(1, png_bytes(1)),
        FakePost(2, png_bytes(2), md5=hashlib.md5(b"something else").hexdigest()),  # wrong md5
        FakePost(3, b"<!DOCTYPE html><html>captcha</html>", content_type="text/html"),  # HTML, md5 matches
        FakePost(4, b"GIF89a but not really an image"),  # md5 matches, does not decode
        FakePost(5, big),  # 12000 pixels > --max-pixels 10000
        FakePost(6, png_header_bomb(30000, 30000)),  # a decompression bomb claiming 900 Mpx, booru says 48x64
        FakePost(7, png_bytes(7), width=100000, height=100000),  # the booru itself says it is huge: not fetched
        FakePost(8, png_bytes(8), ext="webm", image="x.webm"),  # not an image type
        FakePost(9, png_bytes(9, size=(200, 190))),  # larger than --max-bytes by Content-Length
    ]
    booru = booru_factory(posts)
    summary = scrape_booru(booru, tmp_path, max_pixels=10_000, max_bytes=len(big) + 100)
    assert failures(tmp_path) == {
        2: "md5_mismatch",
        3: "html_instead_of_image",
        4: "not_an_image",
        5: "oversize",
        6: "oversize",
        7: "oversize",
        8: "unsupported_type",
        9: "oversize",
    }
    assert summary.failed_total == 8 and list(stored(tmp_path)["post_id"]) == [1]
    fetched = booru.image_requests()
    assert booru.image_path(posts[6]) not in fetched and booru.image_path(posts[7]) not in fetched
    assert_store_matches(tmp_path)
    detail = pd.read_parquet(tmp_path / "failures.parquet").set_index("post_id")["detail"]
    assert "30000x30000" in detail[6] or "pixels" in detail[6]


def test_duplicates_by_id_and_md5_are_stored_once(booru_factory, tmp_path):
    posts = make_posts(8)
    posts.append(FakePost(9, png_bytes(4)))  # same image as post 4 under another id
    booru = booru_factory(posts, repeat_newest=True)  # every later page repeats post 9
    summary = scrape_booru(booru, tmp_path, page_size=3)
    df = stored(tmp_path)
    assert df["post_id"].is_unique and df["md5"].is_unique
    assert list(df["post_id"]) == [9, 8, 7, 6, 5, 3, 2, 1]  # post 4 is post 9's image again
    assert summary.duplicates == 1 + 2  # post 4, and post 9 repeated on the two later non-empty pages
    assert len(booru.image_requests()) == 8
    assert_store_matches(tmp_path)


@pytest.mark.parametrize(
    ("directory", "image"),
    [
        ("ab", "../../../etc/passwd.png"),
        ("../..", "x.png"),
        ("/etc", "x.png"),
        ("ab", "/abs/x.png"),
        ("ab", "..%2f..%2fx.png"),
        ("ab", "http://evil.example/x.png"),
    ],
)
def test_unsafe_image_paths_are_refused(booru_factory, tmp_path, directory, image):
    posts = make_posts(2)
    posts[1].directory, posts[1].image = directory, image
    booru = booru_factory(posts)
    scrape_booru(booru, tmp_path / "out")
    assert failures(tmp_path / "out") == {2: "unsafe_path"}
    assert booru.image_requests() == [booru.image_path(posts[0])]  # nothing else was fetched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_off_host_urls_and_redirects_are_refused(booru_factory, tmp_path):
    posts = make_posts(3)
    booru = booru_factory(posts)
    port = booru.url.rsplit(":", 1)[1]
    posts[0].file_url = f"http://localhost:{port}/images/ab/{posts[0].image}"  # same server, other host name
    posts[1].file_url = f"{booru.url}/images/ab/{posts[1].image}"  # on the booru's host: fine
    booru.always[booru.image_path(posts[2])] = ("redirect", f"http://localhost:{port}{booru.image_path(posts[2])}")
    scrape_booru(booru, tmp_path)
    assert failures(tmp_path) == {1: "off_host", 3: "off_host"}
    assert list(stored(tmp_path)["post_id"]) == [2]
    fetched = sorted(booru.image_requests())
    assert fetched == sorted([booru.image_path(posts[1]), booru.image_path(posts[2])])  # never the off-host one

    ok = booru_http.HttpClient(booru.url, 1.0, extra_hosts=("cdn.example.org",))
    assert ok.url_problem("https://img3.cdn.example.org/a.png") is None
    assert ok.url_problem("https://cdn.example.org.evil.com/a.png")[0] == "off_host"
    assert ok.url_problem("ftp://127.0.0.1/a.png")[0] == "bad_url"


def test_blacklist_and_rating_filters(booru_factory, tmp_path):
    posts = make_posts(6)
    posts[0].tags += " comic"
    posts[1].rating = "questionable"
    booru = booru_factory(posts)
    summary = scrape_booru(booru, tmp_path, limit=3, blacklist=["comic"], ratings=["g", "s"])
    assert list(stored(tmp_path)["post_id"]) == [6, 5, 4]
    assert summary.filtered == 0  # the first three listed pass
    summary = scrape_booru(booru, tmp_path, limit=10, blacklist=["comic"], ratings=["general"])
    assert list(stored(tmp_path)["post_id"]) == [6, 5, 4, 3]
    assert summary.filtered == 2 and summary.already_present == 3


# ------------------------------------------------------------------------------------------------ rate limiting


def test_token_bucket_schedule():
    now = [0.0]
    bucket = booru_http.RateLimiter(2.0, burst=1, clock=lambda: now[0])
    assert [round(bucket._reserve(), 6) for _ in range(3)] == [0.0, 0.5, 1.0]
    now[0] = 10.0  # idle: the bucket refills, but only to its size
    assert [round(bucket._reserve(), 6) for _ in range(2)] == [0.0, 0.5]
    burst = booru_http.RateLimiter(4.0, burst=3, clock=lambda: now[0])
    assert [round(burst._reserve(), 6) for _ in range(5)] == [0.0, 0.0, 0.0, 0.25, 0.5]
    burst.pause(5.0)
    assert burst._reserve() == pytest.approx(5.0)
    with pytest.raises(GanimeError, match="scrape.rate"):
        booru_http.RateLimiter(0)


def test_parallel_downloads_stay_under_the_rate(booru_factory, tmp_path):
    """The limiter's promise, checked in a way machine load cannot break: request k is sent no earlier than
    k / rate after the first asked, so n requests span at least (n - 1) / rate from before the scrape began
    to the server's last arrival. Load only makes the span longer; the lower bound (a quarter of the rate, 18
    local requests in 1.7 s) catches a limiter that sleeps far too long without depending on load."""
    booru = booru_factory(make_posts(16))
    began = time.monotonic()
    summary = scrape_booru(booru, tmp_path, page_size=20, rate=40.0, workers=4)
    times = [r.t for r in booru.requests]
    assert len(times) == summary.requests == 18  # 2 listing pages + 16 images
    assert (len(times) - 1) / (times[-1] - began) <= 40.0 * 1.001  # 1e-3: float rounding of the sleeps only
    assert 40.0 / 4 <= summary.request_rate <= 40.0 * 1.001  # gaps, not requests: at the limit it reads 40


def test_request_rate_counts_gaps_not_requests():
    """n requests exactly 1/rate apart read as the rate itself (n/(n-1) too high was the old figure's flaw)."""
    clock = iter([10.0, 10.0, 10.5, 11.0, 11.5, 12.0])  # the first asks, then five sends 0.5 s apart
    stats = booru_http.HttpStats(clock=lambda: next(clock))
    assert stats.request_rate() == 0.0
    stats.asking()
    for _ in range(5):
        stats.count("image")
    assert stats.request_rate() == pytest.approx(4 / 2.0)  # 4 gaps over 2 s, not 5 requests over 2 s


# ------------------------------------------------------------------------------ hashes that are not md5, --verify


def test_posts_whose_booru_hash_is_not_md5_are_kept(booru_factory, tmp_path):
    sha1 = lambda body: hashlib.sha1(body).hexdigest()  # noqa: E731 - old Safebooru posts carry 40-hex hashes
    posts = [
        FakePost(1, png_bytes(2), md5="e" * 40),  # post 2's image again under another hash: stored once
        FakePost(2, png_bytes(2), md5=sha1(png_bytes(2))),
        FakePost(3, b"GIF89a but not really an image", md5="f" * 40),  # no md5 to check: the decode refuses it
        FakePost(4, png_bytes(4), md5=sha1(png_bytes(4))),  # always truncated: the size check refuses it
        FakePost(5, png_bytes(5)),
        FakePost(6, png_bytes(6), md5="../../x"),  # a hash that is no hash at all
    ]
    booru = booru_factory(posts)
    booru.always[booru.image_path(posts[3])] = "truncate"
    summary = scrape_booru(booru, tmp_path, retries=1)
    assert failures(tmp_path) == {3: "not_an_image", 4: "truncated", 6: "bad_metadata"}
    df = stored(tmp_path).set_index("post_id")
    assert list(df.index) == [5, 2]
    md5_2 = hashlib.md5(png_bytes(2)).hexdigest()
    assert df.loc[2, "md5"] == md5_2 and df.loc[2, "booru_hash"] == sha1(png_bytes(2))
    assert df.loc[2, "file"] == f"images/{md5_2[:2]}/{md5_2}.png"
    assert df.loc[5, "booru_hash"] == df.loc[5, "md5"]
    assert summary.duplicates == 1  # post 1
    assert_store_matches(tmp_path)

    # A rerun finds post 2 by its booru hash in the store index and fetches it no more.
    del booru.always[booru.image_path(posts[3])]
    booru.requests.clear()
    scrape_booru(booru, tmp_path, retries=1)
    assert booru.image_path(posts[1]) not in booru.image_requests()
    assert booru.image_path(posts[3]) in booru.image_requests()
    assert list(stored(tmp_path)["post_id"]) == [5, 4, 2]
    assert_store_matches(tmp_path)


def _corrupt_keeping_size_and_mtime(path: Path) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_verify_rehashes_the_store_and_the_table_agrees(booru_factory, tmp_path):
    posts = make_posts(4)
    booru = booru_factory(posts)
    scrape_booru(booru, tmp_path)
    reference = stored(tmp_path).drop(columns=["fetched_at"])
    damaged = tmp_path / reference.set_index("post_id").loc[2, "file"]
    _corrupt_keeping_size_and_mtime(damaged)

    booru.requests.clear()
    summary = scrape_booru(booru, tmp_path)  # size and mtime match: the index vouches for it
    assert (summary.already_present, booru.image_requests()) == (4, [])

    summary = scrape_booru(booru, tmp_path, verify=True)
    assert booru.image_requests() == [booru.image_path(posts[1])]
    assert (summary.downloaded, summary.already_present) == (1, 3)
    pd.testing.assert_frame_equal(stored(tmp_path).drop(columns=["fetched_at"]), reference)
    assert_store_matches(tmp_path)

    # Damaged again and gone from the booru: listed as a failure, removed from the store and the table.
    _corrupt_keeping_size_and_mtime(damaged)
    booru.always[booru.image_path(posts[1])] = 404
    assert scrape.main(
        ["--kind", "dapi", "--name", "booru", "--base-url", booru.url, "--tags", "1girl solo", "--limit", "100",
         "--rate", "500", "--retries", "0", "--verify", "--out", str(tmp_path)]
    ) == 0  # fmt: skip
    assert failures(tmp_path) == {2: "http_404"}
    assert not damaged.exists() and sorted(stored(tmp_path)["post_id"]) == [1, 3, 4]
    assert_store_matches(tmp_path)
