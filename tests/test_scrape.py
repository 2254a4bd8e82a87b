"""Scrape stage: storing, verification, paging and resume, against an in-process source and a local HTTP server."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading

import pandas as pd
import pytest
from conftest import png_bytes

from ganime_steps import USER_AGENT, scrape
from ganime_steps.sources import PostMeta


class FakeSource:
    """An in-memory booru with ids 1..n; ``bad`` maps post id -> a wrong body."""

    name = "fake"

    def __init__(self, n: int, bad: dict[int, bytes] | None = None, duplicate_page: bool = False) -> None:
        self.bodies = {i: png_bytes(i) for i in range(1, n + 1)}
        self.bad = bad or {}
        self.fetches: list[str] = []
        self.duplicate_page = duplicate_page

    def list_page(self, tags, before_id, limit):
        ids = sorted((i for i in self.bodies if before_id is None or i < before_id), reverse=True)[:limit]
        page = [self._meta(i) for i in ids]
        if self.duplicate_page and page:
            page.append(self._meta(max(self.bodies)))  # the newest post again, as boorus do when posts shift
        return page

    def _meta(self, i):
        md5 = hashlib.md5(self.bodies[i]).hexdigest()
        return PostMeta(
            i, md5, f"mem://{i}", "png", 48, 64, "1girl solo", "general", i, f"mem://post/{i}", ((1, 2, 3, 4),)
        )

    def fetch(self, url):
        self.fetches.append(url)
        i = int(url.rsplit("/", 1)[1])
        return self.bad.get(i, self.bodies[i])


def run_fake(monkeypatch, tmp_path, source, limit=10, page_size=4):
    monkeypatch.setattr(scrape, "make_source", lambda *a, **k: source)
    settings = scrape.ScrapeSettings(kind="synthetic", name="fake", tags="1girl", limit=limit, page_size=page_size)
    return scrape.run_scrape(settings, out=tmp_path)


def test_stores_content_addressed_and_writes_tables(monkeypatch, tmp_path):
    src = FakeSource(10)
    summary = run_fake(monkeypatch, tmp_path, src)
    assert (summary.listed, summary.downloaded, summary.already_present) == (10, 10, 0)
    posts = pd.read_parquet(tmp_path / "posts.parquet")
    assert list(posts.columns) == scrape.POST_COLUMNS
    assert sorted(posts["post_id"]) == list(range(1, 11))
    for row in posts.itertuples():
        data = (tmp_path / row.file).read_bytes()
        assert hashlib.md5(data).hexdigest() == row.md5
        assert row.file == f"images/{row.md5[:2]}/{row.md5}.png"
    assert json.loads(posts["face_boxes"][0]) == [[1, 2, 3, 4]]
    assert json.loads((tmp_path / "scrape_summary.json").read_text())["downloaded"] == 10


def test_rerun_downloads_nothing(monkeypatch, tmp_path):
    run_fake(monkeypatch, tmp_path, FakeSource(10))
    again = FakeSource(10)
    summary = run_fake(monkeypatch, tmp_path, again)
    assert (summary.downloaded, summary.already_present, again.fetches) == (0, 10, [])


def test_bad_bodies_are_recorded_not_stored(monkeypatch, tmp_path):
    src = FakeSource(6, bad={2: b"<html>blocked</html>", 5: png_bytes(99)})
    summary = run_fake(monkeypatch, tmp_path, src, limit=6)
    assert summary.failed == {"html_instead_of_image": 1, "md5_mismatch": 1}
    failures = pd.read_parquet(tmp_path / "failures.parquet")
    assert dict(zip(failures["post_id"], failures["reason"], strict=True)) == {
        2: "html_instead_of_image",
        5: "md5_mismatch",
    }
    assert not list((tmp_path / ".tmp").glob("*")), "rejected bodies leave no temporary file"
    assert sorted(pd.read_parquet(tmp_path / "posts.parquet")["post_id"]) == [1, 3, 4, 6]


def test_undecodable_body_with_matching_md5_is_rejected(monkeypatch, tmp_path):
    src = FakeSource(3)
    src.bodies[2] = b"GIF89a-not-really"
    summary = run_fake(monkeypatch, tmp_path, src, limit=3)
    assert summary.failed == {"not_an_image": 1}


def test_duplicates_across_pages_stored_once(monkeypatch, tmp_path):
    summary = run_fake(monkeypatch, tmp_path, FakeSource(9, duplicate_page=True), limit=20, page_size=3)
    assert summary.listed == 9
    assert pd.read_parquet(tmp_path / "posts.parquet")["post_id"].is_unique


def test_unsafe_names_are_refused():
    with pytest.raises(ValueError):
        scrape.image_relpath("../../etc/passwd", "png")
    with pytest.raises(ValueError):
        scrape.image_relpath("d41d8cd98f00b204e9800998ecf8427e", "png/../x")


class DapiHandler(http.server.BaseHTTPRequestHandler):
    """A minimal Safebooru: bare JSON array, ``id:<N`` paging, empty body past the end."""

    n = 7
    seen_agents: list[str] = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        DapiHandler.seen_agents.append(self.headers.get("User-Agent", ""))
        if self.path.startswith("/images/"):
            i = int(self.path.rsplit("/", 1)[1].split(".")[0])
            return self._send(png_bytes(i), "image/png")
        from urllib.parse import parse_qs, urlsplit

        q = parse_qs(urlsplit(self.path).query)
        tags = q.get("tags", [""])[0].split()
        before = next((int(t[4:]) for t in tags if t.startswith("id:<")), self.n + 1)
        limit = int(q["limit"][0])
        ids = [i for i in range(self.n, 0, -1) if i < before][:limit]
        body = (
            json.dumps(
                [
                    {
                        "id": i,
                        "md5": hashlib.md5(png_bytes(i)).hexdigest(),
                        "image": f"{i}.png",
                        "directory": "1",
                        "width": 48,
                        "height": 64,
                        "tags": " 1girl  solo ",
                        "rating": "general",
                        "score": 3,
                    }
                    for i in ids
                ]
            )
            if ids
            else ""
        )
        self._send(body.encode(), "application/json")

    def _send(self, body: bytes, ctype: str):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def dapi_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), DapiHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_cli_dapi_against_local_server(dapi_server, tmp_path):
    out = tmp_path / "safebooru"
    code = scrape.main(
        [
            "--kind",
            "dapi",
            "--name",
            "safebooru",
            "--base-url",
            dapi_server,
            "--tags",
            "1girl solo",
            "--limit",
            "10",
            "--page-size",
            "3",
            "--rate",
            "200",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    posts = pd.read_parquet(out / "posts.parquet")
    assert sorted(posts["post_id"]) == list(range(1, 8))
    assert set(posts["tags"]) == {"1girl solo"}
    assert set(DapiHandler.seen_agents) == {USER_AGENT}


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    assert scrape.main(["--kind", "dapi", "--limit", "5", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["ganime error: scrape.base_url is required for kind 'dapi' (e.g. https://safebooru.org)"]
    assert scrape.main(["--kind", "synthetic", "--limit", "0", "--out", str(tmp_path)]) == 2


def test_parse_dapi_variants():
    from ganime_steps.sources.http import parse_dapi

    assert parse_dapi("") == [] and parse_dapi("[]") == []
    assert parse_dapi('{"@attributes": {"count": 1}, "post": {"id": 5}}') == [{"id": 5}]
    assert parse_dapi('{"@attributes": {"count": 0}}') == []
    assert parse_dapi('<posts count="2"><post id="1" md5="a"/><post id="2" md5="b"/></posts>') == [
        {"id": "1", "md5": "a"},
        {"id": "2", "md5": "b"},
    ]


def test_synthetic_source_runs_through_the_same_journaled_path(tmp_path):
    def synthetic(limit: int, seed: int) -> scrape.ScrapeSettings:
        return scrape.ScrapeSettings(kind="synthetic", tags="1girl", limit=limit, page_size=3, n_posts=12, seed=seed)

    first = scrape.run_scrape(synthetic(5, seed=1), out=tmp_path)
    assert (first.listed, first.downloaded, first.requests) == (5, 5, 0)
    journal = [json.loads(line) for line in (tmp_path / scrape.LISTING_JOURNAL).read_text().splitlines()]
    assert journal[0]["query"] == {
        "kind": "synthetic", "source": "synthetic", "base_url": "", "tags": "1girl", "n_posts": 12, "seed": 1,
    }  # fmt: skip
    more = scrape.run_scrape(synthetic(7, seed=1), out=tmp_path)
    assert (more.already_present, more.downloaded, more.listing_resumed) == (5, 2, True)
    other = scrape.run_scrape(synthetic(2, seed=2), out=tmp_path)
    assert not other.listing_resumed  # another synthetic booru: a new listing
    posts = pd.read_parquet(tmp_path / "posts.parquet")
    for file, md5 in zip(posts["file"], posts["md5"], strict=True):
        assert hashlib.md5((tmp_path / file).read_bytes()).hexdigest() == md5


def _closed_port() -> int:
    """A local port nothing listens on: connecting to it is refused at once."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_cli_unreachable_host_writes_nothing(tmp_path, capsys):
    out = tmp_path / "booru"
    args = ["--kind", "dapi", "--base-url", f"http://127.0.0.1:{_closed_port()}", "--limit", "5", "--rate", "100",
            "--retries", "1", "--backoff", "0.001", "--timeout", "2", "--out", str(out)]  # fmt: skip
    assert scrape.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()  # log lines (retries) come first; the error is one line
    assert [line for line in err if "ganime error" in line] == err[-1:], err
    assert err[-1].startswith("ganime error: source dapi:") and "nothing was listed" in err[-1], err
    assert not (out / "posts.parquet").exists() and not (out / "failures.parquet").exists()

    previous = b"an earlier run's table"
    (out / "posts.parquet").write_bytes(previous)
    assert scrape.main(args) == 2
    assert (out / "posts.parquet").read_bytes() == previous  # untouched


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--max-pixels", "0"), ("--max-pixels", "-5"), ("--max-bytes", "0"), ("--max-bytes", "-1"),
     ("--rate", "0"), ("--rate", "-2.5"), ("--rate", "inf"), ("--burst", "0"), ("--timeout", "0"),
     ("--workers", "0"), ("--page-size", "-1"), ("--retries", "-1")],
)  # fmt: skip
def test_cli_refuses_nonsense_limits_naming_the_flag(tmp_path, capsys, flag, value):
    out = tmp_path / "out"
    code = scrape.main(["--kind", "synthetic", "--limit", "5", f"{flag}={value}", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith(f"ganime error: {flag} "), err
    assert not out.exists()  # refused before anything was written


@pytest.mark.parametrize("declared", [None, "size"])
def test_post_without_md5_needs_a_size_to_vouch_for_it(tmp_path, declared):
    from ganime_steps.sources.http import Download

    body = png_bytes(1)

    class Source:
        name = "x"

        def download(self, url, dest, max_bytes):
            dest.write_bytes(body)
            size = len(body) if declared else None
            return Download(dest, len(body), hashlib.md5(body).hexdigest(), "image/png", size)

    post = PostMeta(1, "a" * 40, "http://x/1.png", "png", 48, 64, "", "g", 0, "")
    opts = scrape.StoreOptions(out=tmp_path)
    if declared is None:  # neither the hash nor the size can be checked: refused, nothing stored
        with pytest.raises(scrape.StoreFailed) as failed:
            scrape.store_post(Source(), post, opts)
        assert failed.value.reason == "unverifiable" and not list(tmp_path.rglob("*.png"))
    else:
        outcome = scrape.store_post(Source(), post, opts)
        md5 = hashlib.md5(body).hexdigest()
        assert outcome.record["md5"] == md5 and outcome.record["booru_hash"] == "a" * 40
        assert (tmp_path / f"images/{md5[:2]}/{md5}.png").read_bytes() == body
    assert not list((tmp_path / scrape.TMP_DIR).glob("*"))
