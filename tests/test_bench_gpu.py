"""The device benchmark (`python -m benchmarks gpu`) on the CPU with tiny configurations: every row in the JSONL file
the moment it is measured, a failing configuration (or phase) recorded as an error row while the others still
report, a minimum timed duration, progressive families timed per phase of their growth schedule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ganime_steps.gan.loop import Trainer
from ganime_steps.gan.progressive import GrowthSchedule

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
MIN_S = 0.05


@pytest.fixture
def bench_gpu(monkeypatch: pytest.MonkeyPatch):
    """benchmarks.bench_gpu (the repository root is not on the tests' import path)."""
    monkeypatch.syspath_prepend(str(REPO))
    import benchmarks.bench_gpu as module

    return module


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_schedule_phases_follow_the_growth_schedule(bench_gpu) -> None:
    """StyleGAN at 128 px from 8 px: stable 8, then fade-in and stable per resolution to 128, 600 kimg each; the
    first image of every phase is in that phase by the Trainer's own ``schedule.at``."""
    schedule = GrowthSchedule(128, 8, 600, 600, 32)
    phases = bench_gpu.schedule_phases(schedule)
    labels = [bench_gpu.phase_label(p) for p, _, _ in phases]
    assert labels == ["8 stable"] + [f"{r} {n}" for r in (16, 32, 64, 128) for n in ("fade", "stable")]
    assert [kimg for _, _, kimg in phases] == [600.0] * 9
    for phase, first, _ in phases:
        assert schedule.at(first).key == phase.key
    assert phases[-1][1] == schedule.full_resolution_at_kimg() * 1000  # full resolution from the last fade's end
    one = bench_gpu.schedule_phases(GrowthSchedule(64, 64, 600, 600, 32))  # non-progressive: one stable phase
    assert [(bench_gpu.phase_label(p), first) for p, first, _ in one] == [("64 stable", 0)]


def test_rows_kept_as_measured_errors_recorded_phases_timed(
    bench_gpu, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows_path = tmp_path / "gpu.jsonl"
    at_init: list[tuple[str, int]] = []  # (family, rows in the JSONL when its Trainer is built)
    trained_in: dict[str, set] = {}  # family -> the phases its Trainer actually ran iterations in
    init, iteration = Trainer.__init__, Trainer._iteration

    def spying_init(self, cfg, **kwargs):
        at_init.append((cfg.family, len(_lines(rows_path))))
        if cfg.family == "wgan-gp":  # a kill part-way through the run
            raise KeyboardInterrupt
        init(self, cfg, **kwargs)

    def failing_iteration(self):
        key = self.schedule.at(self.images_seen).key
        trained_in.setdefault(self.cfg.family, set()).add(key)
        if self.cfg.family == "sngan":
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\n(second line)")
        if self.cfg.family == "progan" and key == (16, "fade"):
            raise ValueError("unsupported dtype in the fade-in")
        return iteration(self)

    monkeypatch.setattr(Trainer, "__init__", spying_init)
    monkeypatch.setattr(Trainer, "_iteration", failing_iteration)
    tiny = dict(batch=4, channels=4, warmup=1, min_s=MIN_S, phase_s=MIN_S)
    grow = dict(stable_kimg=0.012, fade_kimg=0.012)  # 3 iterations a phase: timing wraps back to its first image
    plan = [
        ("train", dict(family="stylegan", resolution=16, start_resolution=8, **grow, **tiny)),
        ("train", dict(family="sngan", resolution=16, **tiny)),
        ("train", dict(family="progan", resolution=8, **tiny)),  # below ProGAN's smallest resolution: set-up fails
        ("train", dict(family="progan", resolution=16, start_resolution=8, **grow, **tiny)),
        ("train", dict(family="dcgan", resolution=16, **tiny)),
        ("train", dict(family="wgan-gp", resolution=16, **tiny)),
    ]
    with pytest.raises(KeyboardInterrupt):
        bench_gpu.run_plan(plan, CPU, rows_path)

    # (a) each configuration's rows were in the file before the next one started, and stay after the kill
    assert at_init == [("stylegan", 0), ("sngan", 4), ("progan", 5), ("progan", 6), ("dcgan", 10), ("wgan-gp", 11)]
    rows = _lines(rows_path)
    assert [(r["family"], r.get("phase")) for r in rows] == [
        ("stylegan", "8 stable"),
        ("stylegan", "16 fade"),
        ("stylegan", "16 stable"),
        ("stylegan", "total"),
        ("sngan", "16 stable"),
        ("progan", None),
        ("progan", "8 stable"),
        ("progan", "16 fade"),
        ("progan", "16 stable"),
        ("progan", "total"),
        ("dcgan", "16 stable"),
    ]
    by = {(r["family"], r.get("phase")): r for r in rows}

    # (b) the failures are rows with "<Type>: <first line>"; the configurations and phases after them still report
    assert by["sngan", "16 stable"]["error"] == "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert "img_per_s" not in by["sngan", "16 stable"]
    assert by["progan", None]["error"].startswith("GanimeError: --resolution 8: must be")
    assert by["progan", "16 fade"]["error"] == "ValueError: unsupported dtype in the fade-in"
    assert by["progan", "total"]["error"] == "1 of 3 phases failed: no total"
    measured = [r for r in rows if "error" not in r]
    assert {(r["family"], r["phase"]) for r in measured} == {
        ("stylegan", "8 stable"),
        ("stylegan", "16 fade"),
        ("stylegan", "16 stable"),
        ("stylegan", "total"),
        ("progan", "8 stable"),
        ("progan", "16 stable"),
        ("dcgan", "16 stable"),
    }
    for r in measured:
        assert r["img_per_s"] > 0 and r["s_per_kimg"] == pytest.approx(1000 / r["img_per_s"], rel=1e-3)
        assert r["device"] == "cpu" and r["kind"] == "train"
        if r["phase"] != "total":  # a minimum duration, not an iteration count
            assert r["timed_s"] >= MIN_S and r["iterations"] >= 2

    # (c) progressive families: one row per phase of the growth schedule, trained in that phase, and the total
    # weighted by the kimg a run spends in each phase
    assert trained_in["stylegan"] == {(8, "stable"), (16, "fade"), (16, "stable")}
    assert trained_in["progan"] == {(8, "stable"), (16, "fade"), (16, "stable")}
    assert trained_in["dcgan"] == {(16, "stable")}
    phases = [by["stylegan", p] for p in ("8 stable", "16 fade", "16 stable")]
    assert [r["phase_kimg"] for r in phases] == [0.012] * 3
    assert all(r["phase_batch"] == 4 for r in phases)
    total = by["stylegan", "total"]
    weighted = sum(r["phase_kimg"] * r["s_per_kimg"] for r in phases) / sum(r["phase_kimg"] for r in phases)
    assert total["s_per_kimg"] == pytest.approx(weighted, rel=1e-3)
    assert total["phase_kimg"] == pytest.approx(0.036)
    assert "phase_kimg" not in by["dcgan", "16 stable"]  # one phase: no weights, no total


def test_main_writes_the_rows_file_and_the_summary_from_it(
    bench_gpu, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`python -m benchmarks gpu --smoke`: gpu.jsonl holds the rows as measured, gpu.json's table is built from it."""
    from benchmarks.__main__ import main

    monkeypatch.setenv("GANIME_BENCH_GPU_MIN_SECONDS", str(MIN_S))
    assert main(["gpu", "--smoke", "--out", str(tmp_path)]) == 0
    rows = _lines(tmp_path / "gpu.jsonl")
    assert rows == json.loads((tmp_path / "gpu.json").read_text())["rows"]
    assert [(r["family"], r["phase"]) for r in rows] == [("stylegan", "16 stable"), ("dcgan", "16 stable")]
    assert all(r["timed_s"] >= MIN_S for r in rows)
