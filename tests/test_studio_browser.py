"""The studio page in a real browser: Debian's Chromium (installed by scripts/install-browser.sh, which `make test`
runs) driven by Playwright with that executable; Playwright's own browser download is never used. The app runs
under uvicorn on a free localhost port in a thread. Set STUDIO_SCREENSHOT=path to save a screenshot of the page
(README's docs/studio.png is made that way). Without Chromium or the playwright package the test skips, saying why;
under CI=true it fails instead (conftest.requires)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from conftest import requires

CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).is_file()), None)
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    requires(
        CHROMIUM is not None,
        "no Chromium at /usr/bin/chromium (scripts/install-browser.sh installs Debian's; it needs root and apt)",
    ),
    requires(importlib.util.find_spec("playwright") is not None, "the playwright package is not installed"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import uvicorn
    from test_studio import write_stylegan

    from ganime_steps.studio.app import create_app
    from ganime_steps.studio.render import Renderer

    gen = write_stylegan(tmp_path_factory.mktemp("browser"))
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(Renderer(gen)), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120  # generous: only a hang fails, never a slow start under load
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


def _pixels(page) -> str:
    """The displayed image's pixels, read back through a canvas (same origin, so not tainted)."""
    page.wait_for_function("document.getElementById('image').dataset.state === 'loaded'", timeout=15000)
    return page.evaluate(
        """() => { const img = document.getElementById('image');
                   const c = document.createElement('canvas');
                   c.width = img.naturalWidth; c.height = img.naturalHeight;
                   c.getContext('2d').drawImage(img, 0, 0);
                   return c.toDataURL('image/png'); }"""
    )


def test_truncation_slider_changes_the_image(server: str) -> None:
    from playwright import sync_api

    assert shutil.which(CHROMIUM)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 720})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(server + "/?seed=5", wait_until="load")
            before_src = page.get_attribute("#image", "src")
            assert before_src == "/api/generate?seed=5"
            before = _pixels(page)
            page.focus("#truncation")
            for _ in range(10):  # 1.00 -> 0.50 in steps of 0.05, as a user's arrow keys would
                page.keyboard.press("ArrowLeft")
            page.wait_for_function("document.getElementById('image').getAttribute('src').includes('truncation=0.5')")
            after = _pixels(page)
            assert after != before, "moving the truncation slider did not change the image"
            assert page.text_content("#truncation-value") == "0.50"
            assert "truncation=0.5" in page.url and "seed=5" in page.url  # the URL is the permalink
            assert page.get_attribute("#download", "href") == page.get_attribute("#image", "src")
            # the permalink restores the same state in a fresh page
            other = browser.new_page()
            other.goto(page.url, wait_until="load")
            assert _pixels(other) == after
            assert other.input_value("#truncation") == "0.5"
            # the random button picks a new seed and a new image
            page.click("#random")
            page.wait_for_function("!document.getElementById('image').getAttribute('src').includes('seed=5&')")
            assert _pixels(page) != after
            assert not errors, errors
            shot = os.environ.get("STUDIO_SCREENSHOT")
            if shot:
                page.goto(server + "/?seed=5&truncation=0.8&mix_seed=12&directions=pc0:1.5", wait_until="load")
                _pixels(page)
                page.screenshot(path=shot, full_page=True)
        finally:
            browser.close()
