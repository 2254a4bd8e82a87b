"""Real booru clients over HTTP: Gelbooru 0.2 DAPI (Safebooru, Gelbooru) and Danbooru.

Polite by construction: one token bucket per host, an identifying User-Agent, Retry-After honoured,
exponential backoff with jitter on 5xx and connection errors, bounded retries.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
import xml.etree.ElementTree as ET
from urllib.parse import urljoin, urlsplit

import requests

from ganime_steps import USER_AGENT
from ganime_steps.common import GanimeError
from ganime_steps.sources import PostMeta

log = logging.getLogger(__name__)


class RateLimiter:
    """Token bucket: at most ``rate`` requests per second on average, bursts of one."""

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise GanimeError(f"scrape.rate {rate}: must be > 0 requests per second")
        self.interval = 1.0 / rate
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            time.sleep(slot - now)


class HttpClient:
    """GET with rate limit, retries and an allow-list of hosts (the booru and its image hosts)."""

    def __init__(
        self,
        base_url: str,
        rate: float,
        *,
        retries: int = 5,
        timeout: float = 30.0,
        backoff: float = 1.0,
        extra_hosts: tuple[str, ...] = (),
    ) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        host = urlsplit(self.base_url).hostname or ""
        self.allowed_hosts = {host, *extra_hosts}
        self.limiter = RateLimiter(rate)
        self.retries, self.timeout, self.backoff = retries, timeout, backoff
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT

    def _allowed(self, url: str) -> bool:
        parts = urlsplit(url)
        host = parts.hostname or ""
        # the booru itself or one of its subdomains (image CDNs such as img3.gelbooru.com)
        return parts.scheme in ("http", "https") and any(
            host == h or host.endswith("." + h) for h in self.allowed_hosts
        )

    def get(self, url: str, params: dict | None = None) -> requests.Response:
        if not self._allowed(url):
            raise GanimeError(f"refusing off-host URL {url}; allowed hosts: {', '.join(sorted(self.allowed_hosts))}")
        last = ""
        for attempt in range(self.retries + 1):
            self.limiter.wait()
            try:
                resp = self.session.get(url, params=params, timeout=self.timeout)
            except requests.RequestException as exc:
                last = f"{type(exc).__name__}: {exc}"
                delay = self.backoff * 2**attempt
            else:
                if resp.status_code < 400:
                    return resp
                last = f"HTTP {resp.status_code}"
                if resp.status_code not in (429, 500, 502, 503, 504):
                    raise GanimeError(f"{url}: {last}")
                delay = self.backoff * 2**attempt
                retry_after = resp.headers.get("Retry-After", "")
                if retry_after.isdigit():
                    delay = max(delay, float(retry_after))
            if attempt < self.retries:
                delay *= 1 + random.random() * 0.25  # jitter so parallel clients do not retry in lockstep
                log.warning("%s: %s; retry %d/%d in %.1fs", url, last, attempt + 1, self.retries, delay)
                time.sleep(delay)
        raise GanimeError(f"{url}: gave up after {self.retries} retries ({last})")


def _image_ext(name: str) -> str:
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


class DapiSource:
    """Gelbooru 0.2 ``index.php?page=dapi`` (Safebooru answers a bare JSON array, Gelbooru an object)."""

    def __init__(
        self, name: str, base_url: str, rate: float, api_key_env: str | None = None, user_id_env: str | None = None
    ) -> None:
        self.name = name
        self.client = HttpClient(base_url, rate)
        self.credentials = {}
        if api_key_env and user_id_env:
            key, uid = os.environ.get(api_key_env), os.environ.get(user_id_env)
            if not key or not uid:
                raise GanimeError(f"scrape: set environment variables {api_key_env} and {user_id_env} (credentials)")
            self.credentials = {"api_key": key, "user_id": uid}

    def list_page(self, tags: str, before_id: int | None, limit: int) -> list[PostMeta]:
        query = tags + (f" id:<{before_id}" if before_id is not None else "")
        params = {
            "page": "dapi",
            "s": "post",
            "q": "index",
            "json": "1",
            "limit": limit,
            "tags": query.strip(),
            **self.credentials,
        }
        resp = self.client.get(urljoin(self.client.base_url, "index.php"), params=params)
        return [p for p in (self._post(raw) for raw in parse_dapi(resp.text)) if p is not None]

    def _post(self, raw: dict) -> PostMeta | None:
        image, directory = str(raw.get("image", "")), str(raw.get("directory", ""))
        file_url = raw.get("file_url") or urljoin(self.client.base_url, f"images/{directory}/{image}")
        try:
            post_id = int(raw["id"])
            return PostMeta(
                post_id=post_id,
                md5=str(raw.get("md5") or raw.get("hash", "")).lower(),
                file_url=str(file_url),
                ext=_image_ext(image or str(file_url)),
                width=int(raw.get("width", 0)),
                height=int(raw.get("height", 0)),
                tags=" ".join(str(raw.get("tags", "")).split()),
                rating=str(raw.get("rating", "")),
                score=int(raw.get("score") or 0),
                source_url=urljoin(self.client.base_url, f"index.php?page=post&s=view&id={post_id}"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("%s: skipping malformed post record %r (%s)", self.name, raw.get("id"), exc)
            return None

    def fetch(self, url: str) -> bytes:
        return self.client.get(url).content


def parse_dapi(body: str) -> list[dict]:
    """DAPI answers: JSON array, ``{"post": [...]}`` (or a single object), empty body, or XML ``<posts>``."""
    body = body.strip()
    if not body:
        return []
    if body.startswith("<"):
        try:
            root = ET.fromstring(body)
        except ET.ParseError as exc:
            raise GanimeError(f"DAPI answered unparseable XML ({exc})") from exc
        return [dict(el.attrib) for el in root.iter("post")]
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        raise GanimeError(f"DAPI answered neither JSON nor XML ({exc}): {body[:80]!r}") from exc
    if isinstance(data, dict):
        data = data.get("post", [])
    if isinstance(data, dict):  # Gelbooru returns one object, not a list, when there is one result
        data = [data]
    return list(data)


class DanbooruSource:
    """Danbooru ``/posts.json``, paging with ``page=b<id>`` (no deep-pagination cap)."""

    def __init__(self, name: str, base_url: str, rate: float) -> None:
        self.name = name
        self.client = HttpClient(base_url, rate, extra_hosts=("cdn.donmai.us",))
        self.skipped_hidden = 0

    def list_page(self, tags: str, before_id: int | None, limit: int) -> list[PostMeta]:
        params = {"tags": tags, "limit": min(limit, 200)}
        if before_id is not None:
            params["page"] = f"b{before_id}"
        resp = self.client.get(urljoin(self.client.base_url, "posts.json"), params=params)
        posts = []
        for raw in resp.json():
            if not raw.get("file_url"):  # not visible to this account: counted, never silently lost
                self.skipped_hidden += 1
                continue
            posts.append(
                PostMeta(
                    post_id=int(raw["id"]),
                    md5=str(raw.get("md5", "")).lower(),
                    file_url=raw["file_url"],
                    ext=str(raw.get("file_ext", "")).lower(),
                    width=int(raw.get("image_width", 0)),
                    height=int(raw.get("image_height", 0)),
                    tags=str(raw.get("tag_string", "")),
                    rating=str(raw.get("rating", "")),
                    score=int(raw.get("score") or 0),
                    source_url=urljoin(self.client.base_url, f"posts/{raw['id']}"),
                )
            )
        return posts

    def fetch(self, url: str) -> bytes:
        return self.client.get(url).content


def make_http_source(kind: str, *, name: str, base_url: str, rate: float):
    if kind == "dapi":
        return DapiSource(name, base_url, rate)
    return DanbooruSource(name, base_url, rate)
