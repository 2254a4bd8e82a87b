"""Throughput benchmarks, run by `make bench` (never by the test suite).

Each ``bench_<name>.py`` module exposes ``run(quick: bool) -> list[dict]``: rows of measurements, each with a
``baseline`` and a ``ratio`` where the benchmark compares an optimised path against a baseline in the same run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def env_list(name: str, default, cast=str) -> tuple:
    """A comma list from the environment variable ``name`` (each item through ``cast``), else ``default``: how the
    benchmarks take their narrowing settings (families, sizes, seeds, budgets ...)."""
    text = os.environ.get(name, "").strip()
    return tuple(cast(v) for v in text.split(",")) if text else default


def append_jsonl(path: str | Path, row: dict) -> None:
    """Append ``row`` to ``path`` as one JSON line, flushed and synced: rows measured so far survive a killed run."""
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())
