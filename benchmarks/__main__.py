"""`python -m benchmarks [NAME ...] [--quick]`: run the benchmark modules, print a table, save JSON results.

A module whose ``run`` takes ``rows_path`` appends each row to ``<out>/<name>.jsonl`` as it is measured (kept if
the run dies); ``<out>/<name>.json`` is the summary written at the end."""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def available() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all of {', '.join(available())})")
    parser.add_argument("--quick", "--smoke", action="store_true", help="fewer repetitions (smoke run)")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for <name>.json results")
    args = parser.parse_args(argv)
    names = args.names or available()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(available())}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    for name in names:
        module = importlib.import_module(f"benchmarks.bench_{name}")
        started = time.monotonic()
        kwargs = {"quick": args.quick}
        if "rows_path" in inspect.signature(module.run).parameters:  # rows kept as measured: <name>.jsonl
            kwargs["rows_path"] = args.out / f"{name}.jsonl"
        rows = module.run(**kwargs)
        record = {
            "benchmark": name,
            "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": _cpus()},
            "seconds": round(time.monotonic() - started, 1),
            "rows": rows,
        }
        (args.out / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
        print(f"\n## {name} ({record['seconds']} s)")
        _print_table(rows)
    return 0


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


def _print_table(rows: list[dict]) -> None:
    if not rows:
        return
    cols = list(dict.fromkeys(k for row in rows for k in row))
    fmt = [max(len(c), *(len(_cell(r.get(c))) for r in rows)) for c in cols]
    print("| " + " | ".join(c.ljust(w) for c, w in zip(cols, fmt, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in fmt) + "|")
    for r in rows:
        print("| " + " | ".join(_cell(r.get(c)).ljust(w) for c, w in zip(cols, fmt, strict=True)) + " |")


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return "" if value is None else str(value)


if __name__ == "__main__":
    raise SystemExit(main())
