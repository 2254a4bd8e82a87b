"""Scrape resume: SIGKILL mid-run and rerun to the same manifest; journals; reruns that fetch nothing."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO
from test_scrape_http import FAST, FakeBooru, make_posts, scrape_booru

from ganime_steps import scrape
from ganime_steps.common import GanimeError


@pytest.fixture
def booru():
    b = FakeBooru(make_posts(40))
    yield b
    b.close()


def manifest(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "posts.parquet").drop(columns=["fetched_at"])


def store_files(out: Path) -> set[str]:
    return {p.relative_to(out).as_posix() for p in (out / "images").rglob("*") if p.is_file()}


def cli(booru: FakeBooru, out: Path, limit: int = 40) -> list[str]:
    return [
        sys.executable, "-m", "ganime_steps.scrape", "--kind", "dapi", "--name", "booru", "--base-url", booru.url,
        "--tags", "1girl solo", "--limit", str(limit), "--page-size", "4", "--rate", "100", "--workers", "2",
        "--retries", "2", "--backoff", "0.001", "--out", str(out),
    ]  # fmt: skip


def test_kill_mid_download_then_rerun_reaches_the_same_manifest(booru, tmp_path):
    # Reference: one uninterrupted run.
    reference = tmp_path / "reference"
    scrape_booru(booru, reference, limit=40, page_size=4)
    booru.requests.clear()

    # A CLI run that is SIGKILLed at its third listing request, once several images have been requested:
    # listing and downloads are both mid-way.
    booru.latency = 0.03
    out = tmp_path / "killed"
    killed = threading.Event()
    holder: dict = {}

    def maybe_kill(req) -> None:
        listing = booru.listing_requests()
        if len(listing) >= 3 and len(booru.image_requests()) >= 8 and not killed.is_set():
            killed.set()
            os.kill(holder["proc"].pid, signal.SIGKILL)

    booru.on_request = maybe_kill
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder["proc"] = subprocess.Popen(cli(booru, out), cwd=REPO, env=env, stderr=subprocess.PIPE)
    _, err = holder["proc"].communicate(timeout=60)
    assert killed.is_set(), f"the run finished before it could be killed: {err.decode()[-2000:]}"
    assert holder["proc"].returncode == -signal.SIGKILL
    assert not (out / "posts.parquet").exists()

    stored_before = store_files(out)
    journal = [json.loads(line) for line in (out / scrape.LISTING_JOURNAL).read_text().splitlines()]
    pages = [rec for rec in journal if rec["type"] == "page"]
    assert stored_before and pages, "the kill should leave verified images and journaled pages"
    last_id = min(p["post_id"] for rec in pages for p in rec["posts"])

    # Rerun to completion.
    booru.on_request, booru.latency = None, 0.0
    booru.requests.clear()
    done = subprocess.run(cli(booru, out), cwd=REPO, env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert not set(booru.image_requests()) & {f"/images/ab/{Path(f).name}" for f in stored_before}
    listing = booru.listing_requests()
    assert listing and listing[0].query["tags"] == f"1girl solo id:<{last_id}"  # not the first page again
    assert all("id:<" in r.query["tags"] for r in listing)

    pd.testing.assert_frame_equal(manifest(out), manifest(reference))
    assert store_files(out) == store_files(reference)
    assert pd.read_parquet(out / "failures.parquet").empty
    assert not list((out / scrape.TMP_DIR).glob("*"))

    # A rerun after completion sends no request at all.
    booru.requests.clear()
    summary = scrape_booru(booru, out, limit=40, page_size=4)
    assert booru.requests == []
    assert (summary.downloaded, summary.already_present, summary.requests) == (0, 40, 0)
    pd.testing.assert_frame_equal(manifest(out), manifest(reference))


def test_higher_limit_continues_listing_where_it_stopped(booru, tmp_path):
    first = scrape_booru(booru, tmp_path, limit=6, page_size=4)
    assert first.listing_complete and [r.query["tags"] for r in booru.listing_requests()] == [
        "1girl solo",
        "1girl solo id:<37",
    ]
    booru.requests.clear()
    second = scrape_booru(booru, tmp_path, limit=10, page_size=4)
    assert [r.query["tags"] for r in booru.listing_requests()] == ["1girl solo id:<35"]  # page 2 listed 36 and 35
    assert (second.downloaded, second.already_present, second.listing_resumed) == (4, 6, True)
    assert list(pd.read_parquet(tmp_path / "posts.parquet")["post_id"]) == list(range(40, 30, -1))

    booru.requests.clear()
    third = scrape_booru(booru, tmp_path, limit=3, page_size=4)  # a lower limit: a prefix of the same listing
    assert booru.requests == [] and third.already_present == 3
    assert list(pd.read_parquet(tmp_path / "posts.parquet")["post_id"]) == [40, 39, 38]


def test_changed_query_starts_a_new_listing(booru, tmp_path):
    scrape_booru(booru, tmp_path, limit=4, page_size=4)
    booru.requests.clear()
    settings = scrape.ScrapeSettings(
        kind="dapi", name="booru", base_url=booru.url, tags="1girl", limit=4, page_size=4, **FAST
    )
    summary = scrape.run_scrape(settings, out=tmp_path)
    assert [r.query["tags"] for r in booru.listing_requests()] == ["1girl"]
    assert summary.already_present == 4 and summary.downloaded == 0  # the store is shared: nothing refetched
    assert (tmp_path / (scrape.LISTING_JOURNAL + ".old")).exists()


def test_torn_journal_line_and_damaged_store_file(booru, tmp_path):
    scrape_booru(booru, tmp_path, limit=8, page_size=4)
    reference = manifest(tmp_path)
    with open(tmp_path / scrape.LISTING_JOURNAL, "a") as fh:
        fh.write('{"type": "page", "before": 33, "posts": [{"post_')  # a write cut short by a kill
    damaged = tmp_path / reference["file"][2]
    damaged.write_bytes(damaged.read_bytes()[:-10] + b"0123456789")  # same size, new mtime: hashed, refetched
    booru.requests.clear()
    summary = scrape_booru(booru, tmp_path, limit=8, page_size=4)
    assert booru.image_requests() == [f"/images/ab/{damaged.name}"]
    assert (summary.downloaded, summary.already_present) == (1, 7)
    assert hashlib.md5(damaged.read_bytes()).hexdigest() == reference["md5"][2]
    pd.testing.assert_frame_equal(manifest(tmp_path), reference)
    assert (tmp_path / scrape.LISTING_JOURNAL).read_text().endswith("\n")


def test_listing_failure_keeps_progress_and_says_rerun(booru, tmp_path):
    booru.faults["/index.php"] = [None, 503, 503, 503]  # page 1 fine, then page 2 fails through all retries
    with pytest.raises(GanimeError, match="rerun to continue"):
        scrape_booru(booru, tmp_path, limit=8, page_size=4, retries=2)
    assert len(pd.read_parquet(tmp_path / "posts.parquet")) == 4  # what was listed is stored and written
    booru.requests.clear()
    summary = scrape_booru(booru, tmp_path, limit=8, page_size=4)
    assert [r.query["tags"] for r in booru.listing_requests()] == ["1girl solo id:<37"]
    assert (summary.downloaded, summary.already_present) == (4, 4)


def test_one_scrape_per_output_folder(booru, tmp_path):
    lock = scrape._OutLock(tmp_path)
    try:
        with pytest.raises(GanimeError, match="another scrape"):
            scrape_booru(booru, tmp_path, limit=2)
    finally:
        lock.release()
    assert scrape_booru(booru, tmp_path, limit=2).downloaded == 2
