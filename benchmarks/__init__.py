"""Throughput benchmarks, run by `make bench` (never by the test suite).

Each ``bench_<name>.py`` module exposes ``run(quick: bool) -> list[dict]``: rows of measurements, each with a
``baseline`` and a ``ratio`` where the benchmark compares an optimised path against a baseline in the same run.
"""
