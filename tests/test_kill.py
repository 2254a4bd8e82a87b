"""kill -9 at a random point, rerun, and get exactly what an uninterrupted run makes (faces, pack, classifier
training, GAN training). Scrape has its own kill test (test_scrape_resume.py)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, write_disc_dataset, write_posts

from ganime_steps import clean


def _cli(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", f"ganime_steps.{module}", *args]


def _kill_then_rerun(cmd: list[str], cwd: Path, ready, extra_delay: float = 0.0) -> bool:
    """Start ``cmd``; as soon as ``ready(stderr_so_far)`` holds (progress is visible), wait ``extra_delay`` s and
    SIGKILL it if still running; then run it again to completion. Returns whether the kill landed mid-run."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = cwd / f"kill-{time.monotonic_ns()}.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        while proc.poll() is None and not ready(log.read_text(errors="replace")):
            time.sleep(0.002)
        time.sleep(extra_delay)
        killed = proc.poll() is None
        if killed:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
    log.unlink()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True)
    return killed


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def many_posts(tmp_path_factory) -> Path:
    return write_posts(tmp_path_factory.mktemp("kill") / "scrape", 300)


def test_faces_killed_and_rerun_match_an_uninterrupted_run(many_posts, tmp_path):
    args = ["crop", "--posts", str(many_posts), "--detector", "annotations", "--size", "32"]
    subprocess.run(_cli("faces", *args, "--out", str(tmp_path / "ref")), check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    rng = random.Random(0)
    landed = 0
    for i in range(3):
        out = tmp_path / f"killed{i}"
        at = rng.randint(1, 150)  # kill once this many crops are on disk
        crops = lambda _log, out=out, at=at: len(list(out.rglob("*.png"))) >= at  # noqa: E731
        landed += _kill_then_rerun(_cli("faces", *args, "--out", str(out)), tmp_path, crops)
        assert _tree(out) == _tree(tmp_path / "ref")  # same table, same crops, no orphans or temp files
    assert landed >= 1, "no kill landed mid-run: the run got too fast for this test"


def test_pack_killed_and_rerun_match_an_uninterrupted_run(many_posts, tmp_path):
    clean.run_filter(dataset="A", out=tmp_path / "A", posts=many_posts)
    manifest = tmp_path / "A" / "manifest.parquet"
    args = ["pack", "--manifest", str(manifest), "--resolution", "64"]
    clean.run_pack(manifest=manifest, resolution=64, out=tmp_path / "ref.npy")
    rng = random.Random(1)
    landed = 0
    for i in range(3):
        out = tmp_path / f"killed{i}.npy"
        started = lambda _log: any(".tmp" in p.name for p in tmp_path.iterdir())  # noqa: E731
        landed += _kill_then_rerun(_cli("clean", *args, "--out", str(out)), tmp_path, started, rng.uniform(0, 0.1))
        assert out.read_bytes() == (tmp_path / "ref.npy").read_bytes()
    assert not list(tmp_path.glob(".*.tmp*")), "a killed run left a temporary file under a final-looking name"
    assert landed >= 1, "no kill landed mid-run: the run got too fast for this test"


def test_classifier_training_killed_and_rerun_matches(many_posts, tmp_path):
    labels = tmp_path / "chibi.parquet"
    table = pd.read_parquet(many_posts)
    pd.DataFrame(
        {"source": table["source"], "post_id": table["post_id"], "md5": table["md5"],
         "label": table["tags"].str.contains("chibi").astype(int), "origin": "t"}
    ).iloc[:90].to_parquet(labels)  # fmt: skip
    args = ["train", "--posts", str(many_posts), "--labels", str(labels), "--task", "chibi", "--arch", "resnet18",
            "--image-size", "32", "--epochs", "2", "--batch-size", "16"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run(_cli("classifier", *args, "--out", str(tmp_path / "ref")), check=True, capture_output=True, env=env)
    out = tmp_path / "killed"
    landed = _kill_then_rerun(_cli("classifier", *args, "--out", str(out)), tmp_path, lambda log: "epoch 1" in log)
    import torch

    ref = torch.load(tmp_path / "ref" / "model.pt", map_location="cpu", weights_only=False)
    got = torch.load(out / "model.pt", map_location="cpu", weights_only=False)
    assert ref["threshold"] == got["threshold"]
    assert all(torch.equal(ref["state_dict"][k], got["state_dict"][k]) for k in ref["state_dict"])
    import json

    keep = ("threshold", "best_epoch", "val", "test", "n_train", "n_val", "n_test")
    m_ref, m_got = (json.loads((d / "metrics.json").read_text()) for d in (tmp_path / "ref", out))
    assert {k: m_ref[k] for k in keep} == {k: m_got[k] for k in keep}  # timings aside, the same run
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    assert landed, "the kill did not land mid-training: raise the epochs"


# GAN training: killed after a checkpoint (dcgan, projected) or inside a fade-in (progan: 8 -> 16 px, the fade runs
# from 0.032 to 0.096 kimg and the kill waits for the 0.048 kimg checkpoint), then rerun to the end.
TRAIN_KILLS = {
    "dcgan": ([], "checkpoint at 0.032"),
    "progan": (["--start-resolution", "8", "--stable-kimg", "0.032", "--fade-kimg", "0.064"], "checkpoint at 0.048"),
    "projected": ([], "checkpoint at 0.032"),
}


@pytest.mark.parametrize("family", sorted(TRAIN_KILLS))
def test_gan_training_killed_and_rerun_matches_an_uninterrupted_run(tmp_path, family):
    import torch

    data = write_disc_dataset(tmp_path / "train_16.npy", 16)
    extra, ready = TRAIN_KILLS[family]
    args = ["--data", str(data), "--family", family, "--resolution", "16", "--kimg", "0.128", "--batch-size", "8",
            "--channels", "8", "--z-dim", "16", "--seed", "3", "--ema-kimg", "0.05", "--checkpoint-every", "0.016",
            "--device", "cpu", *extra]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    subprocess.run(_cli("train", *args, "--out", str(tmp_path / "ref")), check=True, capture_output=True, env=env)
    out = tmp_path / "killed"
    os.environ["OMP_NUM_THREADS"] = "1"  # _kill_then_rerun copies os.environ: both runs on one thread, as the reference
    try:
        landed = _kill_then_rerun(_cli("train", *args, "--out", str(out)), tmp_path, lambda log: ready in log, 0.05)
    finally:
        del os.environ["OMP_NUM_THREADS"]
    ref, got = (
        torch.load(d / "checkpoint.pt", map_location="cpu", weights_only=False) for d in (tmp_path / "ref", out)
    )
    assert got["step"] == ref["step"] and got["images_seen"] == ref["images_seen"] == 128

    def tensors(obj, prefix=""):
        """Every tensor in a nested checkpoint (weights, optimiser moments, RNG states), by path."""
        if isinstance(obj, torch.Tensor):
            yield prefix, obj
        elif isinstance(obj, dict):
            for k, v in obj.items():
                yield from tensors(v, f"{prefix}/{k}")
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                yield from tensors(v, f"{prefix}/{i}")

    want = dict(tensors(ref))
    have = dict(tensors(got))
    assert want.keys() == have.keys()
    assert len(want) > 20
    for key, tensor in want.items():
        assert torch.equal(tensor, have[key]), f"{family}: {key} differs after kill -9 and rerun"
    assert [r["loss_g"] for r in ref["log_rows"]] == [r["loss_g"] for r in got["log_rows"]]
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    assert landed, "the kill did not land mid-training: raise --kimg"
