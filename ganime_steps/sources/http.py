"""Real booru clients over HTTP: Gelbooru 0.2 DAPI (Safebooru, Gelbooru) and Danbooru.

Polite by construction: one token bucket per host shared by every thread, an identifying User-Agent,
``Retry-After`` honoured on 429/503 (and the whole host paused for it), exponential backoff with jitter on 5xx,
timeouts, connection errors and truncated bodies, bounded retries. Safe by construction: only the booru's own host,
its subdomains and its known image hosts are fetched (redirects included), credentials come from environment
variables and are redacted from every message, and downloads are size-capped and streamed to a temporary file.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import os
import random
import re
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import requests

from ganime_steps import USER_AGENT
from ganime_steps.common import GanimeError
from ganime_steps.sources import PostMeta

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
# A source marks a post it cannot safely fetch with a file_url of this form; the scrape stage records the reason.
REFUSED = "refused:"
# Image hosts a booru is known to serve from, beyond its own host and subdomains.
KNOWN_IMAGE_HOSTS = {"danbooru.donmai.us": ("cdn.donmai.us",), "safebooru.donmai.us": ("cdn.donmai.us",)}
MAX_REDIRECTS = 5
MAX_LISTING_BYTES = 64 * 1024 * 1024
_SAFE_DIRECTORY = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")
_SAFE_IMAGE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")


class _RedactSecrets(logging.Filter):
    """Masks registered credentials in records of the HTTP libraries (urllib3 logs full URLs at DEBUG)."""

    secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            masked = message
            for secret in self.secrets:
                masked = masked.replace(secret, "***")
            if masked != message:
                record.msg, record.args = masked, None
        return True


_REDACT = _RedactSecrets()
for _name in ("urllib3.connectionpool", "urllib3.connection", "urllib3.response", "urllib3.util.retry", "requests"):
    logging.getLogger(_name).addFilter(_REDACT)


class FetchError(GanimeError):
    """A request that failed for good: ``reason`` is a short code (http_404, timeout, off_host, oversize, ...)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class _Retry(Exception):
    """A transient failure inside one attempt (raised while reading a body): retried with backoff."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class _Failed:
    """One attempt that failed in a way a retry may mend; ``delay``: the pause the server asked for (scaled)."""

    reason: str
    detail: str
    delay: float | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """Retries and timing. ``time_scale`` multiplies every backoff and Retry-After sleep (a test/advanced knob)."""

    retries: int = 5
    backoff: float = 1.0  # first backoff delay in seconds; doubles per attempt, with jitter
    max_backoff: float = 60.0
    timeout: float = 30.0  # connect and read timeout per request, seconds
    max_retry_after: float = 600.0  # a server asking for a longer pause than this makes the request fail now
    time_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise GanimeError(f"scrape.retries {self.retries}: must be >= 0")
        if self.backoff < 0 or self.max_backoff < 0 or self.time_scale < 0:
            raise GanimeError("scrape.backoff / max_backoff / time_scale: must be >= 0 seconds")
        if self.timeout <= 0:
            raise GanimeError(f"scrape.timeout {self.timeout}: must be > 0 seconds")

    def backoff_delay(self, attempt: int) -> float:
        """Exponential backoff with "equal jitter": half fixed, half random, so parallel clients spread out."""
        base = min(self.max_backoff, self.backoff * 2**attempt)
        return (base / 2 + random.random() * base / 2) * self.time_scale


class RateLimiter:
    """Token bucket: on average at most ``rate`` requests per second, bursts of at most ``burst``. Thread-safe."""

    def __init__(self, rate: float, burst: int = 1, clock: Callable[[], float] = time.monotonic) -> None:
        if not rate > 0:
            raise GanimeError(f"scrape.rate {rate}: must be > 0 requests per second")
        if burst < 1:
            raise GanimeError(f"scrape.burst {burst}: must be at least 1")
        self.rate, self.burst, self._clock = float(rate), int(burst), clock
        self._tokens = float(burst)
        self._stamp = clock()
        self._paused_until = 0.0
        self._lock = threading.Lock()

    def _reserve(self) -> float:
        """Take one token (possibly going into debt); return how long the caller must wait before using it."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= 1.0
            wait = 0.0 if self._tokens >= 0 else -self._tokens / self.rate
            return max(wait, self._paused_until - now)

    def wait(self) -> None:
        delay = self._reserve()
        if delay > 0:
            time.sleep(delay)

    def pause(self, seconds: float) -> None:
        """The host asked us to back off (Retry-After): no request to it for ``seconds`` from any thread."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)


@dataclass
class HttpStats:
    """Request counters (thread-safe) and the span they were sent over: the achieved request rate."""

    requests: int = 0
    listing_requests: int = 0
    image_requests: int = 0
    retries: int = 0
    first_asked: float | None = None  # monotonic time the first request asked its rate limiter
    last_sent: float | None = None  # monotonic time the last request was sent (after its limiter wait)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def asking(self) -> None:
        """A request is about to wait for its rate limiter: the achieved rate's span starts at the first one."""
        with self._lock:
            if self.first_asked is None:
                self.first_asked = self.clock()

    def count(self, kind: str) -> None:
        with self._lock:
            self.last_sent = self.clock()
            self.requests += 1
            if kind == "listing":
                self.listing_requests += 1
            else:
                self.image_requests += 1

    def retried(self) -> None:
        with self._lock:
            self.retries += 1

    def request_rate(self) -> float:
        """Requests per second over the gaps between them: (n - 1) / span. A limiter at its limit gives exactly
        the limit (n requests over n - 1 gaps), never more: the span starts when the first request asked the
        limiter, so a late first send cannot shorten it. Fewer than two requests: 0."""
        if self.requests < 2 or self.first_asked is None or self.last_sent is None:
            return 0.0
        span = self.last_sent - self.first_asked
        return (self.requests - 1) / span if span > 0 else 0.0


@dataclass(frozen=True)
class Download:
    """A body streamed to ``path``: its size, md5, the server's Content-Type and Content-Length (None: not sent).

    When Content-Length was sent, ``size`` equals it (a shorter body is retried as truncated).
    """

    path: Path
    size: int
    md5: str
    content_type: str
    declared_size: int | None = None


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class HttpClient:
    """GET with per-host rate limits, retries, redirects checked against an allow-list of hosts, and redaction."""

    def __init__(
        self,
        base_url: str,
        rate: float,
        *,
        policy: RetryPolicy | None = None,
        burst: int = 1,
        extra_hosts: tuple[str, ...] = (),
        secrets: tuple[str, ...] = (),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise GanimeError(f"scrape.base_url {base_url!r}: must be an http(s) address such as https://safebooru.org")
        self.base_url = base_url.rstrip("/") + "/"
        host = parts.hostname.lower()
        self.allowed_hosts = {host, *(h.lower() for h in extra_hosts), *KNOWN_IMAGE_HOSTS.get(host, ())}
        self.rate, self.burst = rate, burst
        RateLimiter(rate, burst)  # validate now, not on the first request
        self.policy = policy or RetryPolicy()
        self.secrets = tuple(s for s in secrets if s)
        _RedactSecrets.secrets.update(self.secrets)
        self.stats = HttpStats()
        self._sleep = sleep
        self._limiters: dict[str, RateLimiter] = {}
        self._limiters_lock = threading.Lock()
        self._local = threading.local()

    # -- plumbing
    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:  # requests.Session is not documented as thread-safe: one per thread
            session = self._local.session = requests.Session()
            session.headers["User-Agent"] = USER_AGENT
        return session

    def limiter(self, host: str) -> RateLimiter:
        with self._limiters_lock:
            if host not in self._limiters:
                self._limiters[host] = RateLimiter(self.rate, self.burst)
            return self._limiters[host]

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def url_problem(self, url: str) -> tuple[str, str] | None:
        """Why ``url`` must not be fetched, as (reason, detail); None when it is fine."""
        try:
            parts = urlsplit(url)
            host = (parts.hostname or "").lower()
        except ValueError as exc:
            return "bad_url", f"{url!r}: {exc}"
        if parts.scheme not in ("http", "https") or not host:
            return "bad_url", f"{url!r} is not an http(s) address"
        if not any(host == h or host.endswith("." + h) for h in self.allowed_hosts):
            return "off_host", f"{url} is not on {', '.join(sorted(self.allowed_hosts))}"
        if any(seg in (".", "..") for seg in unquote(parts.path).split("/")):
            return "unsafe_path", f"{url} has dot segments in its path"
        return None

    # -- requests
    def _request(self, url: str, params: dict | None, kind: str, consume: Callable[[requests.Response], Any]) -> Any:
        """One logical GET: rate limit, redirects (re-checked), retries with backoff; ``consume`` reads the body."""
        policy = self.policy
        failed = _Failed("", "")
        for attempt in range(policy.retries + 1):
            result = self._attempt(url, params, kind, consume)
            if not isinstance(result, _Failed):
                return result
            failed = result
            if attempt == policy.retries:
                break
            delay = max(failed.delay or 0.0, policy.backoff_delay(attempt))
            self.stats.retried()
            log.warning(
                "%s: %s; retry %d/%d in %.2fs",
                self.redact(url),
                failed.detail or failed.reason,
                attempt + 1,
                policy.retries,
                delay,
            )
            self._sleep(delay)
        raise FetchError(failed.reason, f"gave up after {policy.retries} retries: {failed.detail}")

    def _attempt(self, url: str, params: dict | None, kind: str, consume: Callable[[requests.Response], Any]) -> Any:
        """One try, following redirects (each target checked again): what ``consume`` returned, or ``_Failed``
        for a transient failure; a FetchError for one that retrying cannot mend."""
        target, query = url, params
        for _hop in range(MAX_REDIRECTS + 1):
            problem = self.url_problem(target)
            if problem:
                raise FetchError(*problem)
            host = urlsplit(target).hostname or ""
            self.stats.asking()
            self.limiter(host).wait()
            self.stats.count(kind)
            try:
                resp = self._session().get(
                    target,
                    params=query,
                    timeout=self.policy.timeout,
                    stream=True,
                    allow_redirects=False,
                    headers={"Accept-Encoding": "identity"} if kind == "image" else None,
                )
            except requests.Timeout as exc:
                return _Failed("timeout", self._describe(exc))
            except requests.RequestException as exc:
                return _Failed("connection", self._describe(exc))
            try:
                status = resp.status_code
                if 300 <= status < 400 and resp.headers.get("Location"):
                    target, query = urljoin(resp.url, resp.headers["Location"]), None
                    continue
                if status < 300:
                    return self._consume(resp, consume)
                return self._failed_status(resp, host)
            finally:
                resp.close()
        raise FetchError("redirect_loop", f"{url}: more than {MAX_REDIRECTS} redirects")

    def _consume(self, resp: requests.Response, consume: Callable[[requests.Response], Any]) -> Any:
        """Read a successful answer's body; a truncated or timed-out body is a transient failure."""
        try:
            return consume(resp)
        except _Retry as exc:
            return _Failed(exc.reason, self.redact(exc.detail))
        except requests.Timeout as exc:
            return _Failed("timeout", self._describe(exc))
        except (requests.exceptions.ChunkedEncodingError, requests.ConnectionError) as exc:
            return _Failed("truncated", self._describe(exc))

    def _failed_status(self, resp: requests.Response, host: str) -> _Failed:
        """An error status: retried when it may pass (429, 5xx), pausing the host as long as Retry-After asks."""
        status = resp.status_code
        reason = f"http_{status}"
        detail = self.redact(f"HTTP {status} {resp.reason or ''} {_snippet(resp)!r}")
        if status not in RETRYABLE_STATUS:
            raise FetchError(reason, detail)
        wanted = _retry_after(resp.headers.get("Retry-After")) if status in (429, 503) else None
        if wanted is None:
            return _Failed(reason, detail)
        if wanted > self.policy.max_retry_after:
            raise FetchError(reason, f"server asks to wait {wanted:.0f}s (> {self.policy.max_retry_after}s)")
        delay = wanted * self.policy.time_scale
        self.limiter(host).pause(delay)  # the whole host, every thread: that is what it asked
        return _Failed(reason, detail, delay)

    def _describe(self, exc: Exception) -> str:
        return self.redact(f"{type(exc).__name__}: {exc}")

    def get_text(self, url: str, params: dict | None = None) -> str:
        """A listing page's text; any failure is a GanimeError (redacted)."""

        def consume(resp: requests.Response) -> str:
            body = _read_capped(resp, MAX_LISTING_BYTES, None)
            return body.decode(resp.encoding or "utf-8", errors="replace")

        try:
            return self._request(url, params, "listing", consume)
        except FetchError as exc:
            raise GanimeError(f"listing {self.redact(url)} failed: {exc}") from None

    def get_bytes(self, url: str, max_bytes: int) -> bytes:
        return self._request(url, None, "image", lambda resp: _read_capped(resp, max_bytes, None))

    def download(self, url: str, dest: Path, max_bytes: int) -> Download:
        """Stream ``url`` into ``dest`` (md5 on the fly); truncated bodies are retried, oversize ones refused."""

        def consume(resp: requests.Response) -> Download:
            digest = hashlib.md5()
            with open(dest, "wb") as fh:
                _read_capped(resp, max_bytes, lambda chunk: (digest.update(chunk), fh.write(chunk)))
                fh.flush()
                os.fsync(fh.fileno())
            declared = resp.headers.get("Content-Length", "")
            return Download(
                dest,
                dest.stat().st_size,
                digest.hexdigest(),
                resp.headers.get("Content-Type", ""),
                int(declared) if declared.isdigit() else None,
            )

        return self._request(url, None, "image", consume)


def _snippet(resp: requests.Response) -> bytes:
    """The start of an error body, for the message; never fails."""
    try:
        return next(resp.iter_content(200), b"")[:200]
    except (requests.RequestException, OSError):
        return b""


def _read_capped(resp: requests.Response, max_bytes: int, sink: Callable[[bytes], Any] | None) -> bytes:
    """Read a body, refusing more than ``max_bytes`` and checking it against Content-Length."""
    declared = resp.headers.get("Content-Length")
    expected = int(declared) if declared and declared.isdigit() else None
    if expected is not None and expected > max_bytes:
        raise FetchError("oversize", f"{resp.url}: Content-Length {expected} exceeds the {max_bytes}-byte limit")
    chunks: list[bytes] = []
    got = 0
    for chunk in resp.iter_content(chunk_size=1 << 16):
        got += len(chunk)
        if got > max_bytes:
            raise FetchError("oversize", f"{resp.url}: body exceeds the {max_bytes}-byte limit")
        if sink is None:
            chunks.append(chunk)
        else:
            sink(chunk)
    if expected is not None and got != expected:
        raise _Retry("truncated", f"{resp.url}: received {got} of {expected} bytes")
    return b"".join(chunks)


# ------------------------------------------------------------------------------------------------------ sources


def _credentials(user_env: str | None, api_key_env: str | None, what: str) -> tuple[str, str] | None:
    """(user, key) from the environment variables the config names; None when none are configured."""
    if not user_env and not api_key_env:
        return None
    if not (user_env and api_key_env):
        raise GanimeError(f"scrape: {what} needs both scrape.user_env and scrape.api_key_env (or neither)")
    user, key = os.environ.get(user_env), os.environ.get(api_key_env)
    if not user or not key:
        raise GanimeError(f"scrape: set the environment variables {user_env} and {api_key_env} ({what} credentials)")
    return user, key


def _image_ext(name: str) -> str:
    name = urlsplit(name).path if "://" in name else name
    return name.rsplit(".", 1)[-1].lower() if "." in name.rsplit("/", 1)[-1] else ""


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


class HttpBooruSource:
    """What every HTTP booru shares: a name, optional credentials from the environment and a polite client.

    Subclasses name their API (``API``, for messages) and the query parameters the credentials travel in
    (``CREDENTIAL_PARAMS``: user, key), and implement ``list_page``.
    """

    API = "HTTP booru"
    CREDENTIAL_PARAMS = ("user", "api_key")

    def __init__(
        self,
        name: str,
        base_url: str,
        rate: float,
        *,
        user_env: str | None = None,
        api_key_env: str | None = None,
        **client_kwargs: Any,
    ) -> None:
        """``client_kwargs``: policy, burst, extra_hosts, sleep (see HttpClient)."""
        self.name = name
        creds = _credentials(user_env, api_key_env, self.API)
        self.credentials = dict(zip(self.CREDENTIAL_PARAMS, creds, strict=True)) if creds else {}
        self.client = HttpClient(base_url, rate, secrets=tuple(self.credentials.values()), **client_kwargs)

    def list_page(self, tags: str, before_id: int | None, limit: int) -> list[PostMeta]:
        raise NotImplementedError

    def fetch(self, url: str) -> bytes:
        return self.client.get_bytes(url, max_bytes=MAX_LISTING_BYTES)

    def download(self, url: str, dest: Path, max_bytes: int) -> Download:
        return self.client.download(url, dest, max_bytes)


class DapiSource(HttpBooruSource):
    """Gelbooru 0.2 ``index.php?page=dapi`` (Safebooru: bare JSON array; Gelbooru: object; either: XML)."""

    API = "Gelbooru DAPI"
    CREDENTIAL_PARAMS = ("user_id", "api_key")

    def list_page(self, tags: str, before_id: int | None, limit: int) -> list[PostMeta]:
        query = " ".join(tags.split() + ([f"id:<{before_id}"] if before_id is not None else []))
        params = {"page": "dapi", "s": "post", "q": "index", "json": "1", "limit": limit, "tags": query}
        text = self.client.get_text(urljoin(self.client.base_url, "index.php"), {**params, **self.credentials})
        posts = []
        for raw in parse_dapi(text):
            post = self._post(raw)
            if post is not None:
                posts.append(post)
        return posts

    def _post(self, raw: dict) -> PostMeta | None:
        post_id = _int(raw.get("id"), -1)
        if post_id < 0:
            log.warning("%s: skipping a post record without an id: %r", self.name, {k: raw[k] for k in list(raw)[:5]})
            return None
        image, directory = str(raw.get("image") or ""), str(raw.get("directory") or "")
        file_url = str(raw.get("file_url") or "")
        if not file_url:
            # Server-supplied path pieces are joined into a URL only when they cannot climb out of /images/.
            if not _SAFE_IMAGE.match(image) or not _SAFE_DIRECTORY.match(directory):
                file_url = f"{REFUSED}unsafe_path:directory={directory!r} image={image!r}"
            else:
                file_url = urljoin(self.client.base_url, f"images/{directory}/{image}")
        return PostMeta(
            post_id=post_id,
            md5=str(raw.get("md5") or raw.get("hash") or "").lower(),
            file_url=file_url,
            ext=_image_ext(image or file_url),
            width=_int(raw.get("width")),
            height=_int(raw.get("height")),
            tags=" ".join(str(raw.get("tags", "")).split()),
            rating=str(raw.get("rating", "")),
            score=_int(raw.get("score")),
            source_url=urljoin(self.client.base_url, f"index.php?page=post&s=view&id={post_id}"),
        )


def parse_dapi(body: str) -> list[dict]:
    """DAPI answers: JSON array, ``{"post": [...]}`` (or a single object), empty body, or XML ``<posts>``."""
    body = body.strip()
    if not body:
        return []
    if body.startswith("<"):
        try:
            root = ET.fromstring(body)
        except ET.ParseError as exc:
            raise GanimeError(f"DAPI answered unparseable XML ({exc}): {body[:80]!r}") from exc
        if root.tag not in ("posts", "post"):
            raise GanimeError(f"DAPI answered XML <{root.tag}>, not <posts>: {body[:80]!r}")
        return [dict(el.attrib) for el in root.iter("post")]
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        raise GanimeError(f"DAPI answered neither JSON nor XML ({exc}): {body[:80]!r}") from exc
    if isinstance(data, dict):
        data = data.get("post", [])
    if isinstance(data, dict):  # Gelbooru returns one object, not a list, when there is one result
        data = [data]
    if not isinstance(data, list):
        raise GanimeError(f"DAPI answered JSON that is not a post list: {body[:80]!r}")
    return [d for d in data if isinstance(d, dict)]


class DanbooruSource(HttpBooruSource):
    """Danbooru ``/posts.json``, paging with ``page=b<id>`` (no deep-pagination cap), at most 200 per page.

    Posts this account cannot see come back without ``file_url``: they are returned with an empty ``file_url``
    so the scrape stage counts them as hidden and pages past them.
    """

    API = "Danbooru"
    CREDENTIAL_PARAMS = ("login", "api_key")
    MAX_PAGE = 200

    def list_page(self, tags: str, before_id: int | None, limit: int) -> list[PostMeta]:
        params: dict[str, Any] = {"tags": " ".join(tags.split()), "limit": max(1, min(limit, self.MAX_PAGE))}
        if before_id is not None:
            params["page"] = f"b{before_id}"
        text = self.client.get_text(urljoin(self.client.base_url, "posts.json"), {**params, **self.credentials})
        try:
            data = json.loads(text) if text.strip() else []
        except json.JSONDecodeError as exc:
            raise GanimeError(f"Danbooru answered invalid JSON ({exc}): {text[:80]!r}") from exc
        if not isinstance(data, list):
            raise GanimeError(f"Danbooru answered {text[:120]!r} instead of a post list")
        posts = []
        for raw in data:
            post_id = _int(raw.get("id"), -1) if isinstance(raw, dict) else -1
            if post_id < 0:
                log.warning("%s: skipping a post record without an id", self.name)
                continue
            posts.append(
                PostMeta(
                    post_id=post_id,
                    md5=str(raw.get("md5") or "").lower(),
                    file_url=str(raw.get("file_url") or ""),
                    ext=str(raw.get("file_ext") or "").lower(),
                    width=_int(raw.get("image_width")),
                    height=_int(raw.get("image_height")),
                    tags=str(raw.get("tag_string", "")),
                    rating=str(raw.get("rating", "")),
                    score=_int(raw.get("score")),
                    source_url=urljoin(self.client.base_url, f"posts/{post_id}"),
                )
            )
        return posts


def make_http_source(kind: str, *, name: str, base_url: str, rate: float, **kwargs: Any):
    """``kwargs``: user_env, api_key_env, policy, burst, extra_hosts (see HttpClient)."""
    if kind == "dapi":
        return DapiSource(name, base_url, rate, **kwargs)
    if kind == "danbooru":
        return DanbooruSource(name, base_url, rate, **kwargs)
    raise GanimeError(f"scrape.kind {kind!r} is not an HTTP source (dapi, danbooru)")
