"""Booru sources behind one interface: list posts page by page (newest first, by id), fetch bytes.

The scrape stage only talks to :class:`Source`; the synthetic booru (offline demo) and the real
HTTP clients (dapi, danbooru) plug in behind it, so storing and verification code is shared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class PostMeta:
    """One post as the booru lists it, before its image is fetched."""

    post_id: int
    md5: str  # the hash the booru reports: an md5 verified after download, or another hash (kept as booru_hash)
    file_url: str
    ext: str  # file extension without dot, e.g. "png"
    width: int
    height: int
    tags: str  # space-separated booru tags
    rating: str  # general / sensitive / questionable / explicit (or s/q/e)
    score: int
    source_url: str  # the post's page on the booru
    face_boxes: tuple[tuple[int, int, int, int], ...] = field(default=())  # (x, y, w, h) where the source knows them


class Source(Protocol):
    name: str

    def list_page(self, tags: str, before_id: int | None, limit: int) -> list[PostMeta]:
        """Up to ``limit`` posts matching all ``tags`` with id < ``before_id`` (None: newest), newest first."""

    def fetch(self, url: str) -> bytes:
        """The bytes behind a post's ``file_url``."""
