"""Scrape politeness and rerun cost against a local fake booru that adds 50 ms of latency to every request.

Rows:
- ``rate_limit``: achieved request rate at the configured limit (5 req/s, 4 workers); target >= 90 % of the limit.
  ``baseline`` is the configured limit and ``ratio`` the achieved fraction of it (measured at the server, from the
  first request to the last; ``client_rps`` is requests / the stage's whole wall time).
- ``workers``: why downloads run in a pool: at 40 req/s with 50 ms latency one worker cannot reach the limit.
  ``baseline`` is the achieved rate with 1 worker, ``ratio`` the 4-worker rate over it.
- ``rerun``: a rerun after completion; target: zero image requests (and, with the listing journal, zero listing).
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LATENCY = 0.05


def _booru(n: int):
    sys.path.insert(0, str(REPO / "tests"))  # the fake booru lives with the tests that check it
    from test_scrape_http import FakeBooru, make_posts

    return FakeBooru(make_posts(n), latency=LATENCY)


def _scrape(booru, out: Path, *, limit: int, rate: float, workers: int):
    from ganime_steps import scrape

    settings = scrape.ScrapeSettings(
        kind="dapi", name="bench", base_url=booru.url, tags="1girl solo", limit=limit, page_size=1000,
        rate=rate, workers=workers, retries=2, backoff=0.01,
    )  # fmt: skip
    return scrape.run_scrape(settings, out=out)


def _server_rps(booru) -> float:
    times = [r.t for r in booru.requests]
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0


def run(quick: bool = False) -> list[dict]:
    logging.getLogger("ganime_steps").setLevel(logging.WARNING)
    rows = []
    n_images = 19 if quick else 59  # + 1 listing request: 20 / 60 requests
    with tempfile.TemporaryDirectory() as tmp:
        booru = _booru(n_images)
        try:
            out = Path(tmp) / "rate"
            summary = _scrape(booru, out, limit=n_images, rate=5.0, workers=4)
            achieved = _server_rps(booru)
            rows.append(
                {
                    "case": "rate_limit",
                    "limit_rps": 5.0,
                    "workers": 4,
                    "requests": len(booru.requests),
                    "achieved_rps": round(achieved, 3),
                    "client_rps": summary.request_rate,
                    "baseline": 5.0,
                    "ratio": round(achieved / 5.0, 3),
                    "target": ">= 0.9",
                    "ok": 0.9 <= achieved / 5.0 <= 1.02,
                }
            )

            booru.requests.clear()
            started = time.monotonic()
            again = _scrape(booru, out, limit=n_images, rate=5.0, workers=4)
            rows.append(
                {
                    "case": "rerun",
                    "limit_rps": 5.0,
                    "workers": 4,
                    "requests": len(booru.requests),
                    "image_requests": len(booru.image_requests()),
                    "already_present": again.already_present,
                    "seconds": round(time.monotonic() - started, 3),
                    "target": "0 image requests",
                    "ok": not booru.image_requests(),
                }
            )
        finally:
            booru.close()

        n_fast = 29 if quick else 79
        achieved = {}
        for workers in (1, 4):
            booru = _booru(n_fast)
            try:
                _scrape(booru, Path(tmp) / f"w{workers}", limit=n_fast, rate=40.0, workers=workers)
                achieved[workers] = _server_rps(booru)
            finally:
                booru.close()
        rows.append(
            {
                "case": "workers",
                "limit_rps": 40.0,
                "workers": 4,
                "requests": n_fast + 1,
                "achieved_rps": round(achieved[4], 3),
                "baseline": round(achieved[1], 3),
                "ratio": round(achieved[4] / achieved[1], 3),
                "target": "4 workers >= 0.9 x limit",
                "ok": achieved[4] >= 0.9 * 40.0,
            }
        )
    return rows


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
