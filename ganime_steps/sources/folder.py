"""A local folder, ``.zip`` or ``.tar(.gz)`` of images as a source: a dataset already on disk (a Kaggle download, a
Getchu crawl, your own art) goes through the same content-addressed store, ``posts.parquet`` and cleaning as a scrape.

- Posts are the image files in sorted path order, ids 1..N (listed newest first, like a booru). ``source_url`` holds
  the original path (``archive.zip:dir/a.png`` for a member).
- Tags come from a caption file beside each image, ``<name>.txt`` (the danbooru-style layout: ``1girl, long hair``
  becomes ``1girl long_hair``), or from a sidecar ``metadata.csv`` / ``metadata.json`` at the root (a ``file_name``,
  ``file`` or ``path`` column, and ``tags``). ``tags`` in the scrape config then filter as on a booru.
- Archive members are read, never extracted: members with absolute or ``..`` paths, links and special files are
  refused (``unsafe_path``), members larger than the byte limit are refused before they are read (``oversize``);
  the store then checks every image's pixel count and decodes it fully, so an unreadable file lands in
  ``failures.parquet`` with its reason, and duplicates are stored once (content addressing by md5).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ganime_steps.common import GanimeError
from ganime_steps.sources import PostMeta

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp"})
SIDECARS = ("metadata.csv", "metadata.json")
REFUSED = "refused:"  # the store turns a file_url with this prefix into a failure with the given reason
DEFAULT_MAX_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class _Entry:
    name: str  # path inside the folder or archive, '/'-separated
    md5: str
    size: int
    width: int
    height: int
    refused: str = ""  # "reason:detail" when the entry must not be read


def caption_tags(text: str) -> str:
    """A caption file's tags as booru tags: comma-separated phrases become underscore-joined tokens."""
    text = text.strip()
    if "," not in text:
        return " ".join(text.split())
    return " ".join("_".join(part.split()) for part in text.split(",") if part.strip())


def _unsafe(name: str) -> bool:
    """An archive member name that would escape a folder if extracted: absolute, '..', a drive or backslash root."""
    p = PurePosixPath(name.replace("\\", "/"))
    return not p.parts or p.is_absolute() or ".." in p.parts or ":" in p.parts[0]


class _Reader:
    """Uniform access to a folder or an archive's regular members: names, sizes and bytes (size-limited)."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path, self.max_bytes = path, max_bytes
        self.kind = "folder" if path.is_dir() else "zip" if zipfile.is_zipfile(path) else "tar"
        if self.kind == "tar" and not (path.is_file() and tarfile.is_tarfile(path)):
            raise GanimeError(f"--path {path}: not a folder, .zip or .tar(.gz) of images; point it at one")
        self._zip = zipfile.ZipFile(path) if self.kind == "zip" else None
        self._tar = tarfile.open(path, "r:*") if self.kind == "tar" else None
        self._tar_members = {m.name: m for m in self._tar.getmembers()} if self._tar else {}

    def members(self) -> list[tuple[str, int, str]]:
        """(name, size, refused) of every file-like member, sorted by name."""
        out = []
        if self.kind == "folder":
            for p in sorted(self.path.rglob("*")):
                name = p.relative_to(self.path).as_posix()
                if p.is_symlink():
                    out.append((name, 0, "unsafe_path:a link is never followed"))
                elif p.is_file():
                    out.append((name, p.stat().st_size, ""))
        elif self._zip is not None:
            for info in self._zip.infolist():
                if not info.is_dir():
                    out.append((info.filename, info.file_size, "unsafe_path:" * _unsafe(info.filename)))
        else:
            for m in self._tar_members.values():
                if m.isdir():
                    continue
                bad = _unsafe(m.name) or not m.isreg()
                out.append((m.name, m.size if m.isreg() else 0, "unsafe_path:" * bad))
        return sorted(out)

    def read(self, name: str) -> bytes:
        if self.kind == "folder":
            with open(self.path / name, "rb") as fh:
                return fh.read(self.max_bytes + 1)
        if self._zip is not None:
            with self._zip.open(name) as fh:
                return fh.read(self.max_bytes + 1)
        fh = self._tar.extractfile(self._tar_members[name])
        return fh.read(self.max_bytes + 1) if fh else b""

    def original(self, name: str) -> str:
        return str(self.path / name) if self.kind == "folder" else f"{self.path}:{name}"


class FolderSource:
    """A folder or archive of images behind the :class:`~ganime_steps.sources.Source` interface."""

    def __init__(self, path: str | Path, *, name: str = "folder", max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.name = name
        self.path = Path(path)
        if not self.path.exists():
            raise GanimeError(f"--path {self.path}: not found; point it at a folder, .zip or .tar(.gz) of images")
        self.reader = _Reader(self.path, max_bytes)
        members = self.reader.members()
        by_name = {n: (size, refused) for n, size, refused in members}
        self.sidecar = self._sidecar_tags(by_name)
        self.entries = [self._entry(n, size, refused) for n, size, refused in members if self._is_image(n)]
        self.names = {e.name for e in self.entries}
        if not self.entries:
            raise GanimeError(f"--path {self.path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found in it")
        log.info("folder source %s: %d images", self.path, len(self.entries))

    @staticmethod
    def _is_image(name: str) -> bool:
        return PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES

    def _entry(self, name: str, size: int, refused: str) -> _Entry:
        if refused:
            return _Entry(name, "0" * 32, size, 0, 0, f"{refused}{name}")
        if size > self.reader.max_bytes:
            return _Entry(name, "0" * 32, size, 0, 0, f"oversize:{name}: {size} bytes > {self.reader.max_bytes}")
        data = self.reader.read(name)
        width = height = 0
        try:
            from PIL import Image

            with Image.open(io.BytesIO(data)) as im:  # the header only; the store decodes it fully
                width, height = im.size
        except Exception:
            pass  # unreadable: the store records why in failures.parquet
        return _Entry(name, hashlib.md5(data).hexdigest(), len(data), width, height)

    def _sidecar_tags(self, by_name: dict) -> dict[str, str]:
        for sidecar in SIDECARS:
            if sidecar not in by_name or by_name[sidecar][1]:
                continue
            text = self.reader.read(sidecar).decode("utf-8-sig", errors="replace")
            try:
                rows = json.loads(text) if sidecar.endswith(".json") else list(csv.DictReader(io.StringIO(text)))
            except json.JSONDecodeError as exc:
                raise GanimeError(f"{self.reader.original(sidecar)}: not valid JSON ({exc}); fix or remove it") from exc
            if isinstance(rows, dict):  # {"a.png": "tags", ...}
                return {str(k): caption_tags(str(v)) for k, v in rows.items()}
            tags = {}
            for row in rows if isinstance(rows, list) else []:
                key = next(
                    (row[k] for k in ("file_name", "file", "path") if isinstance(row, dict) and row.get(k)), None
                )
                if key is not None:
                    tags[str(key)] = caption_tags(str(row.get("tags", "")))
            return tags
        return {}

    def _tags(self, name: str) -> str:
        if name in self.sidecar:
            return self.sidecar[name]
        caption = str(PurePosixPath(name).with_suffix(".txt"))
        try:
            return caption_tags(self.reader.read(caption).decode("utf-8-sig", errors="replace"))
        except (OSError, KeyError):
            return ""

    def _post(self, post_id: int) -> PostMeta:
        e = self.entries[post_id - 1]
        ext = PurePosixPath(e.name).suffix.lower().lstrip(".").replace("jpeg", "jpg") or "bin"
        return PostMeta(
            post_id=post_id,
            md5=e.md5,
            file_url=f"{REFUSED}{e.refused}" if e.refused else e.name,
            ext=ext,
            width=e.width,
            height=e.height,
            tags=self._tags(e.name) if not e.refused else "",
            rating="",
            score=0,
            source_url=self.reader.original(e.name),
        )

    def list_page(self, tags: str, before_id: int | None, limit: int) -> list[PostMeta]:
        """Up to ``limit`` images with id < ``before_id`` carrying all ``tags`` (``-tag`` excludes), newest first."""
        want = [t for t in tags.split() if not t.startswith("-")]
        avoid = [t[1:] for t in tags.split() if t.startswith("-")]
        top = len(self.entries) if before_id is None else min(before_id - 1, len(self.entries))
        page = []
        for post_id in range(top, 0, -1):
            post = self._post(post_id)
            have = set(post.tags.split())
            if all(t in have for t in want) and not any(t in have for t in avoid):
                page.append(post)
                if len(page) >= limit:
                    break
        return page

    def fetch(self, url: str) -> bytes:
        """The bytes of one member (``url`` is its name inside the folder or archive)."""
        if url not in self.names:
            raise GanimeError(f"{self.path}: no image {url!r} in this folder source")
        return self.reader.read(url)
