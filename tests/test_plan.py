"""python -m ganime_steps.plan: images per epoch, kimg and GPU hours per run, and the disk, before anything runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO

from ganime_steps import plan as plan_module
from ganime_steps.common import save_npy
from ganime_steps.config import FAMILY_NAMES, validate_config

CONFIG = REPO / "config.yaml"
GETCHU = REPO / "configs" / "face_study_getchu.yaml"
GPU = "NVIDIA H100 80GB HBM3"


@pytest.fixture(autouse=True)
def no_local_gpu(monkeypatch):
    """The GPU the hours are for comes from --gpu or the benchmark file here, not from whatever GPU runs the tests."""
    monkeypatch.setattr(plan_module, "local_gpu", lambda: None)


def _files(folder: Path, sizes: list[int], suffix: str = ".png") -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for i, size in enumerate(sizes):
        (folder / f"{i}{suffix}").write_bytes(b"x" * size)
    return [f"{folder.name}/{i}{suffix}" for i in range(len(sizes))]


def test_plan_of_config_yaml_prints_every_run_and_says_what_is_estimated(tmp_path, capsys):
    assert plan_module.main(["--directory", str(tmp_path), "--bench", str(tmp_path / "gpu.json")]) == 0
    out = capsys.readouterr().out
    config = yaml.safe_load(CONFIG.read_text())
    validate_config(config, families=FAMILY_NAMES)
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    assert set(config["runs"]) <= set(rows)  # every run, seeds and matrix cells expanded
    # faces: nothing scraped, so the scrape limit with one face a post; 350 epochs of 60,000 faces are 21,000 kimg
    assert "| faces   | 60,000 | at most: 1 face a post assumed x safebooru_faces's scrape limit 60,000" in out
    for family in ("dcgan", "dragan", "sngan"):
        cells = [c.strip() for c in rows[f"{family}_faces_s2"].split("|")[1:-1]]
        assert cells == [f"{family}_faces_s2", "faces", "64", "350 epochs", "60,000", "350.0", "21,000", "not measured"]
    assert "GPU hours: not measured (no " in out and "run `python -m benchmarks gpu` on the GPU" in out
    assert re.search(r"\| images safebooru_faces +\| 60,000 \| 1\.0 MB +\| 60\.0 GB +\| assumed \(--image-mb 1\)", out)
    # a pack is exact for its images: 60,000 x 64 x 64 x 3 bytes and the .npy header
    assert re.search(r"\| pack faces 64 px +\| 60,000 \| 12\.3 kB +\| 737\.3 MB", out)
    assert "Disk in all:" in out


def test_measured_sizes_replace_the_estimates(tmp_path):
    """A pack, stored posts, face crops and a folder source's files on disk are counted and measured, not assumed."""
    results = tmp_path / "results"
    save_npy(results / "datasets" / "faces" / "pack_64.npy", np.zeros((50, 64, 64, 3), np.uint8))
    scrape = results / "scrape" / "safebooru"
    files = _files(scrape / "images", [1000, 2000, 3000], ".jpg")
    pd.DataFrame({"md5": ["a", "b", "c"], "file": files}).to_parquet(scrape / "posts.parquet")
    crops = results / "faces_safebooru_faces"
    pd.DataFrame({"file": _files(crops / "crops", [500, 700])}).to_parquet(crops / "faces.parquet")
    _files(tmp_path / "data" / "getchu", [4000, 6000, 8000, 10000])
    (tmp_path / "data" / "getchu" / "notes.txt").write_text("not an image")

    plan = plan_module.make_plan(configfiles=[CONFIG, GETCHU], directory=tmp_path, bench=tmp_path / "none.json")
    faces, getchu = plan.datasets["faces"], plan.datasets["faces_getchu"]
    assert (faces.n, faces.measured) == (50, True) and "pack_64.npy (measured)" in faces.how
    assert plan.datasets["A"].n == 3 and "posts.parquet (measured)" in plan.datasets["A"].how
    assert getchu.n == 4 and "4 images in data/getchu" in getchu.how  # one face a post assumed: none cropped yet
    runs = {r.run: r for r in plan.runs}
    assert runs["sngan_faces_s0"].kimg == pytest.approx(350 * 50 / 1000)  # 350 epochs of the 50 packed faces
    assert runs["sngan_faces_getchu_s1"].kimg == pytest.approx(350 * 4 / 1000)
    assert runs["dcgan_A_s0"].epochs == pytest.approx(runs["dcgan_A_s0"].kimg * 1000 / 3)
    disk = {d.what: d for d in plan.disk}
    assert (disk["images safebooru"].images, disk["images safebooru"].bytes_per_image) == (3, 2000)
    assert (disk["images getchu"].images, disk["images getchu"].bytes_per_image) == (4, 7000)
    assert (
        disk["face crops safebooru_faces"].bytes_per_image == 600
        and "measured" in disk["face crops safebooru_faces"].how
    )
    assert disk["pack faces 64 px"].total == 50 * 64 * 64 * 3 + plan_module.NPY_HEADER
    # the crawl not there yet: the plan still plans it from the limit, and says the folder is missing
    (tmp_path / "data" / "getchu").rename(tmp_path / "elsewhere")
    plan = plan_module.make_plan(configfiles=[CONFIG, GETCHU], directory=tmp_path, bench=tmp_path / "none.json")
    assert plan.datasets["faces_getchu"].n == 25000 and "data/getchu is missing" in plan.datasets["faces_getchu"].how


@pytest.fixture(scope="module")
def bench_file(tmp_path_factory) -> Path:
    """A `python -m benchmarks gpu` result: rows measured for real by its code (on the CPU, tiny), under a GPU's name,
    in the summary format `python -m benchmarks` writes."""
    import sys

    sys.path.insert(0, str(REPO))
    from benchmarks import bench_gpu

    tiny = dict(resolution=16, batch=8, channels=8, warmup=1, min_s=0.05, phase_s=0.05)
    measure = [
        ("train", dict(family="dcgan", **tiny)),
        ("train", dict(family="progan", start_resolution=8, stable_kimg=0.016, fade_kimg=0.016, **tiny)),
    ]
    torch.manual_seed(0)
    rows = bench_gpu.run_plan(measure, torch.device("cpu"))
    rows = [{**row, "device": GPU} for row in rows]
    # a precision variant measured after the default, as the full benchmark does (fp32: slower)
    rows.append({**rows[0], "amp": "off", "s_per_kimg": rows[0]["s_per_kimg"] * 3})
    path = tmp_path_factory.mktemp("bench") / "gpu.json"
    path.write_text(json.dumps({"benchmark": "gpu", "rows": rows}))
    return path


def _tiny_runs(tmp_path: Path) -> Path:
    extra = {
        "runs": {
            "dcgan_t": {"family": "dcgan", "dataset": "A", "resolution": 16, "batch_size": 8, "channels": 8,
                        "kimg": 90},
            "progan_t": {"family": "progan", "dataset": "A", "resolution": 16, "batch_size": 8, "channels": 8,
                         "start_resolution": 8, "kimg": 45},
            "sngan_t": {"family": "sngan", "dataset": "A", "resolution": 16, "kimg": 10},
        }
    }  # fmt: skip
    path = tmp_path / "tiny_runs.yaml"
    path.write_text(yaml.safe_dump(extra))
    return path


def test_gpu_hours_come_from_the_benchmark_rows_of_that_gpu(bench_file, tmp_path, capsys):
    rows = json.loads(bench_file.read_text())["rows"]
    dcgan = next(r for r in rows if r["family"] == "dcgan")["s_per_kimg"]
    progan = next(r for r in rows if r["family"] == "progan" and r["phase"] == "total")["s_per_kimg"]
    plan = plan_module.make_plan(configfiles=[CONFIG, _tiny_runs(tmp_path)], directory=tmp_path, bench=bench_file)
    assert plan.gpu == GPU
    runs = {r.run: r for r in plan.runs}
    assert runs["dcgan_t"].gpu_hours == pytest.approx(90 * dcgan / 3600)
    assert runs["progan_t"].gpu_hours == pytest.approx(45 * progan / 3600)  # the schedule-weighted total
    assert "schedule-weighted" in runs["progan_t"].timing
    assert runs["sngan_t"].gpu_hours is None and runs["stylegan_A_s0"].gpu_hours is None  # no rows for them
    text = plan_module.render(plan)
    assert f"measured on {GPU}" in text and f"{len(plan.runs) - 2} not measured" in text
    # another GPU named: its rows are not this one's
    other = plan_module.make_plan(configfiles=[CONFIG], directory=tmp_path, bench=bench_file, gpu="A100")
    assert other.gpu is None and all(r.gpu_hours is None for r in other.runs)
    assert f"not measured on this GPU ({other.bench} has {GPU}" in plan_module.render(other)
    assert plan_module.make_plan(configfiles=[CONFIG], directory=tmp_path, bench=bench_file, gpu="h100").gpu == GPU


def test_configfiles_merge_as_snakemake_merges_them_and_errors_are_one_line(tmp_path, capsys):
    """The Getchu file adds a source, a dataset and a matrix dataset to config.yaml's study (same families, seeds)."""
    plan = plan_module.make_plan(configfiles=[CONFIG, GETCHU], directory=tmp_path, bench=tmp_path / "none.json")
    face_runs = [r.run for r in plan.runs if r.dataset.startswith("faces")]
    assert len(face_runs) == 18 and "dragan_faces_getchu_s2" in face_runs
    assert {r.length for r in plan.runs if r.run in face_runs} == {"350 epochs"}
    assert plan_module.main(["--configfile", str(tmp_path / "nope.yaml")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ganime error:")]
    assert err == [f"ganime error: --configfile {tmp_path / 'nope.yaml'}: not found"]


def test_readme_shows_the_plan_of_config_yaml_as_it_prints(tmp_path, monkeypatch):
    """README's "A real run" pastes `python -m ganime_steps.plan` for config.yaml with nothing scraped and no GPU
    benchmark: the block is the command's output for the config as it is now (a config edit shows up here)."""
    readme = (REPO / "README.md").read_text()
    block = re.search(r"\(`\.venv/bin/python -m ganime_steps\.plan`\):\n\n```text\n(.*?)\n```", readme, re.S)
    assert block, "README's plan block is missing"
    monkeypatch.chdir(REPO)
    plan = plan_module.make_plan(configfiles=[CONFIG], directory=tmp_path, bench=tmp_path / "gpu.json")
    plan.bench = "benchmarks/results/gpu.json"  # the default file, absent where the README's output was made
    assert block.group(1) == plan_module.render(plan)
