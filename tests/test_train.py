"""Train stage: every family trains, exact resume, NaN guard, finished runs, export, CLI and bad input."""

from __future__ import annotations

import dataclasses
import json
import math
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_RUN, read_log, train_tiny, write_disc_dataset

from ganime_steps import train
from ganime_steps.common import GanimeError, save_npy
from ganime_steps.gan import FAMILIES, available_families, generate_images, load_generator
from ganime_steps.gan.data import load_dataset, sample_real
from ganime_steps.gan.loop import RunSettings, Trainer
from ganime_steps.gan.networks import images_to_uint8
from ganime_steps.gan.snapshots import LOG_COLUMNS, snapshot_name
from ganime_steps.train_record import TrainSummary

torch.set_num_threads(1)

RES = TINY_RUN["resolution"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_disc_dataset(tmp_path_factory.mktemp("data") / "train_16.npy", RES)


def _error_lines(capsys) -> list[str]:
    """The user-facing error lines (stderr also carries log records)."""
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("ganime error:")]


@pytest.mark.parametrize("family", available_families())
def test_each_family_trains(data: Path, tmp_path: Path, family: str) -> None:
    n_critic = FAMILIES[family].n_critic
    s = train_tiny(data, tmp_path, family=family, kimg=0.008 * n_critic * 2, diffaug=family == "dcgan")
    assert s.step == 2 and s.images_seen == 16 * n_critic
    for name in ("checkpoint.pt", "generator.pt", "samples.png", "log.csv", "train_summary.json"):
        assert (tmp_path / name).is_file(), name
    rows = read_log(tmp_path)
    assert list(rows[0]) == list(LOG_COLUMNS) and len(rows) == 2
    for row in rows:
        for col in ("loss_g", "loss_d", "penalty", "img_per_s"):
            assert math.isfinite(float(row[col])), (col, row)
    has_penalty = FAMILIES[family].penalty is not None
    assert (float(rows[-1]["penalty"]) > 0) == has_penalty
    G = load_generator(tmp_path / "generator.pt")
    imgs = generate_images(G, 3, seed=0)
    assert imgs.shape == (3, RES, RES, 3) and imgs.dtype == np.uint8
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    assert summary["family"] == family and summary["n_critic"] == n_critic and summary["lr"] == FAMILIES[family].lr
    fam = FAMILIES[family]  # progressive families stay at their first resolution for the default 600 kimg
    assert summary["current_resolution"] == (fam.start_resolution if fam.progressive else RES)
    assert [r["resolution"] for r in rows] == [str(summary["current_resolution"])] * 2


@pytest.mark.parametrize("family", ["dcgan", "sngan", "projected"])
def test_resume_is_exact(data: Path, tmp_path: Path, family: str) -> None:
    n = FAMILIES[family].n_critic
    full = tmp_path / "full"
    part = tmp_path / "part"
    # no lr decay (sngan's reference decays to the run's kimg, which the first part sets shorter)
    same = dict(family=family, checkpoint_every=1.0, diffaug=True, lr_decay_kimg="none")
    train_tiny(data, full, kimg=0.048 * n, **same)
    first = train_tiny(data, part, kimg=0.024 * n, **same)
    assert not first.resumed
    second = train_tiny(data, part, kimg=0.048 * n, **same)
    assert second.resumed and second.images_this_run == 24 * n
    a = torch.load(full / "checkpoint.pt", weights_only=True)
    b = torch.load(part / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == 6 and a["images_seen"] == b["images_seen"]
    for net in ("G_ema", "G", "D"):
        for key, ta in a[net].items():
            assert torch.equal(ta, b[net][key]), f"{net}.{key} differs after resume"
    ra, rb = read_log(full), read_log(part)
    assert [r["loss_g"] for r in ra] == [r["loss_g"] for r in rb]


def test_resume_writes_the_grid_a_kill_took_after_the_checkpoint(data: Path, tmp_path: Path, monkeypatch) -> None:
    """A kill between a checkpoint and its snapshot grid (the last write of a checkpoint event; found by kill -9
    under load) leaves the resumed run without that grid and with the killed writer's temporary file: the resume
    writes the same grid again and the temporary file goes."""
    full, part = tmp_path / "full", tmp_path / "part"
    train_tiny(data, full, kimg=0.048, checkpoint_every=0.024)

    class Killed(Exception):
        pass

    def killed(self, snapshot: bool) -> None:
        raise Killed

    with monkeypatch.context() as m:
        m.setattr(Trainer, "write_samples", killed)
        with pytest.raises(Killed):
            train_tiny(data, part, kimg=0.048, checkpoint_every=0.024)
    grid = snapshot_name(24)
    assert (part / "checkpoint.pt").exists() and not (part / grid).exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])  # the killed writer: a process that no longer runs
    dead.wait()
    orphan = part / f".{grid}.{socket.gethostname().replace('.', '-')}-{dead.pid}.0123456789ab.tmp.png"
    orphan.write_bytes(b"half a png")
    assert train_tiny(data, part, kimg=0.048, checkpoint_every=0.024).resumed
    assert (part / grid).read_bytes() == (full / grid).read_bytes()
    assert not orphan.exists()


def test_sample_real_reads_flips_and_scales(data: Path) -> None:
    images = load_dataset(data, RES)
    assert isinstance(images, np.memmap)  # memory-mapped, not loaded
    batch = sample_real(images, np.random.default_rng(5), 8, torch.device("cpu"), channels_last=False)
    assert batch.shape == (8, 3, RES, RES) and batch.dtype == torch.float32
    assert batch.min() >= -1 and batch.max() <= 1
    rng = np.random.default_rng(5)  # replay the same draws: indices, then flips
    idx = np.sort(rng.choice(len(images), size=8, replace=False))
    flip = rng.random(8) < 0.5
    expected = np.array(images[idx])
    expected[flip] = expected[flip, :, ::-1]
    assert flip.any() and np.array_equal(images_to_uint8(batch), expected)


def test_config_mismatch_refuses_to_resume(data: Path, tmp_path: Path) -> None:
    train_tiny(data, tmp_path)
    with pytest.raises(GanimeError, match="channels 8 -> 16.*delete"):
        train_tiny(data, tmp_path, channels=16, kimg=0.064)
    with pytest.raises(GanimeError, match="family 'dcgan' -> 'dragan'"):
        train_tiny(data, tmp_path, family="dragan", kimg=0.064)


def test_changed_data_starts_over_instead_of_resuming(data: Path, tmp_path: Path) -> None:
    """Model B: new cleaning settings repack the data; the old model must not be continued (or kept as final)."""
    first = train_tiny(data, tmp_path / "run")
    assert first.images_seen > 0
    changed = tmp_path / "changed_16.npy"
    save_npy(changed, np.load(data)[:-4])
    again = train_tiny(changed, tmp_path / "run")
    assert not again.resumed and again.images_this_run == again.images_seen > 0
    assert (tmp_path / "run" / "checkpoint.previous-data.pt").is_file()
    resumed = train_tiny(changed, tmp_path / "run", kimg=0.048)
    assert resumed.resumed  # same data again: resumes as usual


def test_changed_training_code_starts_over_instead_of_resuming(data: Path, tmp_path: Path, monkeypatch) -> None:
    """Snakemake reruns train when a module it imports changes (the rule's code inputs); a finished run must then
    train again with the new code, not re-export the old model."""
    from ganime_steps.gan import loop

    first = train_tiny(data, tmp_path / "run")
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["code"] == loop.training_code_fingerprint()
    monkeypatch.setattr(train, "training_code_fingerprint", lambda: "edited")  # train.run passes it to the Trainer
    again = train_tiny(data, tmp_path / "run")
    assert not again.resumed and again.images_this_run == again.images_seen == first.images_seen > 0
    assert (tmp_path / "run" / "checkpoint.previous-code.pt").is_file()
    assert train_tiny(data, tmp_path / "run", kimg=0.048).resumed  # the same code again: resumes as usual
    # asked to (the run's resume_other_code: a long run continued after a deliberate edit), it resumes
    monkeypatch.setattr(train, "training_code_fingerprint", lambda: "edited again")
    kept = train_tiny(data, tmp_path / "run", kimg=0.064, resume_other_code=True)
    assert kept.resumed and kept.images_this_run < kept.images_seen


def _package_copy(tmp_path: Path, monkeypatch) -> Path:
    """A copy of ganime_steps whose files the code fingerprint reads (the real files stay untouched)."""
    import shutil

    from ganime_steps import codedeps

    package = tmp_path / "ganime_steps"
    shutil.copytree(codedeps.PACKAGE_DIR, package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    monkeypatch.setattr(codedeps, "PACKAGE_DIR", package)
    return package


def _edit_a_loss(path: Path) -> None:
    """Change the code of the first function of losses.py (one statement more)."""
    import ast

    tree = ast.parse(path.read_text())
    function = next(node for node in tree.body if isinstance(node, ast.FunctionDef))
    function.body.insert(len(function.body) - 1, ast.parse("_edited = None").body[0])
    path.write_text(ast.unparse(tree))


def test_training_code_fingerprint_follows_training_code_only(tmp_path: Path, monkeypatch) -> None:
    """Code a run executes changes it; metric and classifier code, comments, docstrings and formatting do not."""
    from ganime_steps.gan import loop

    package = _package_copy(tmp_path, monkeypatch)
    before = loop.training_code_fingerprint()
    for name in ("classifier/plots.py", "classifier/model.py", "report.py", "evaluate.py"):
        path = package / name
        path.write_text(path.read_text() + "\n_EDITED = 1  # not training code\n")
    trainer = package / "gan" / "loop.py"
    text = trainer.read_text()
    trainer.write_text(text.replace('"""One training loop', '"""Reworded. One training loop', 1) + "\n# a comment\n\n")
    assert trainer.read_text() != text and loop.training_code_fingerprint() == before
    _edit_a_loss(package / "gan" / "losses.py")
    assert loop.training_code_fingerprint() != before


def test_only_training_code_edits_start_a_run_over(data: Path, tmp_path: Path, monkeypatch) -> None:
    """A classifier or report edit (or a comment) keeps the checkpoint resumable; an edited loss starts over."""
    package = _package_copy(tmp_path, monkeypatch)
    run = tmp_path / "run"
    assert not train_tiny(data, run).resumed
    (package / "classifier" / "plots.py").write_text((package / "classifier" / "plots.py").read_text() + "\nX = 1\n")
    (package / "report.py").write_text((package / "report.py").read_text() + "\n# edited\n")
    (package / "gan" / "networks.py").write_text((package / "gan" / "networks.py").read_text() + "\n# edited\n")
    assert train_tiny(data, run, kimg=0.048).resumed
    _edit_a_loss(package / "gan" / "losses.py")
    again = train_tiny(data, run, kimg=0.048)
    assert not again.resumed and (run / "checkpoint.previous-code.pt").is_file()


def test_finished_run_only_rewrites_artifacts(data: Path, tmp_path: Path) -> None:
    train_tiny(data, tmp_path)
    ckpt = (tmp_path / "checkpoint.pt").read_bytes()
    (tmp_path / "generator.pt").unlink()
    (tmp_path / "samples.png").unlink()
    s = train_tiny(data, tmp_path)
    assert s.resumed and s.images_this_run == 0 and s.images_seen == 32
    assert (tmp_path / "checkpoint.pt").read_bytes() == ckpt
    assert (tmp_path / "generator.pt").is_file() and (tmp_path / "samples.png").is_file()
    assert len(read_log(tmp_path)) == 4


def test_checkpoint_snapshots(data: Path, tmp_path: Path) -> None:
    train_tiny(data, tmp_path)
    snaps = sorted(p.name for p in tmp_path.glob("samples_*kimg.png"))
    assert snaps == ["samples_000000.016kimg.png", "samples_000000.032kimg.png"]


def test_nan_guard_keeps_last_good_checkpoint(data: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    train_tiny(data, tmp_path)
    good = (tmp_path / "checkpoint.pt").read_bytes()

    def nan_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return real_logits.mean() * float("nan")

    monkeypatch.setitem(FAMILIES, "dcgan", dataclasses.replace(FAMILIES["dcgan"], d_loss=nan_loss))
    with pytest.raises(GanimeError, match=r"non-finite loss at step 5; last good checkpoint kept at .*checkpoint\.pt"):
        train_tiny(data, tmp_path, kimg=0.064)
    assert (tmp_path / "checkpoint.pt").read_bytes() == good
    # the CLI turns it into exit status 2 and one line
    argv = ["--data", str(data), "--out", str(tmp_path), "--resolution", "16", "--kimg", "0.064", "--batch-size", "8"]
    argv += ["--channels", "8", "--z-dim", "16", "--seed", "1", "--ema-kimg", "0.05", "--checkpoint-every", "0.016"]
    assert train.main(argv + ["--device", "cpu"]) == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and "lower --lr" in err[0]
    assert (tmp_path / "checkpoint.pt").read_bytes() == good


def test_nan_guard_without_checkpoint(data: Path, tmp_path: Path) -> None:
    with pytest.raises(GanimeError, match="non-finite loss at step 1; no checkpoint was written yet"):
        train_tiny(data, tmp_path, lr=float("inf"))
    assert not (tmp_path / "checkpoint.pt").exists()


def test_cli_trains(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["--data", str(data), "--out", str(out), "--family", "wgan-gp", "--resolution", "16", "--kimg", "0.04"]
    argv += ["--batch-size", "8", "--channels", "8", "--z-dim", "8", "--device", "cpu", "--diffaug", "--lr", "5e-5"]
    assert train.main(argv) == 0
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["step"] == 1 and summary["lr"] == 5e-5 and summary["diffaug"] is True
    assert (out / "generator.pt").is_file() and (out / "samples.png").is_file()


@pytest.mark.parametrize("n", [24, 40])
def test_epochs_resolve_to_kimg_from_the_dataset_size_and_are_recorded(tmp_path: Path, n: int) -> None:
    """epochs x the packed set's images / 1000 is the run's kimg: the same 2 epochs are 48 images of a 24-image set
    and 80 of a 40-image one; train_summary.json records the epochs, the set's size and the kimg it gave."""
    data = write_disc_dataset(tmp_path / f"set_{n}.npy", RES, n=n)
    s = train_tiny(data, tmp_path / "run", kimg=None, epochs=2)
    assert s.kimg_target == pytest.approx(2 * n / 1000) and s.images_seen == 2 * n
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert (summary["epochs"], summary["images_per_epoch"]) == (2, n)
    assert summary["kimg_target"] == pytest.approx(2 * n / 1000)
    # a run given in kimg records its set's size and no epochs
    train_tiny(data, tmp_path / "k")
    k = json.loads((tmp_path / "k" / "train_summary.json").read_text())
    assert (k["epochs"], k["images_per_epoch"], k["kimg_target"]) == (None, n, TINY_RUN["kimg"])


def test_cli_saves_the_run_config_and_reruns_from_it(data: Path, tmp_path: Path) -> None:
    """run_config.json holds the run's settings as asked for; `--config` of it (flags over it) is the same run."""
    out = tmp_path / "run"
    argv = ["--data", str(data), "--out", str(out), "--resolution", "16", "--kimg", "0.016", "--batch-size", "8"]
    assert train.main(argv + ["--channels", "8", "--z-dim", "8", "--seed", "3", "--device", "cpu"]) == 0
    saved = json.loads((out / "run_config.json").read_text())
    asked = {"resolution": 16, "kimg": 0.016, "batch_size": 8, "channels": 8, "z_dim": 8, "seed": 3}
    assert saved == {**RunSettings().to_json(), **asked}
    first = torch.load(out / "checkpoint.pt", weights_only=True)
    again = tmp_path / "again"
    rerun = ["--data", str(data), "--out", str(again), "--config", str(out / "run_config.json"), "--device", "cpu"]
    assert train.main(rerun) == 0
    second = torch.load(again / "checkpoint.pt", weights_only=True)
    for key, tensor in first["G_ema"].items():
        assert torch.equal(tensor, second["G_ema"][key]), key
    # flags over the file: a longer run of the same settings resumes it
    assert train.main(rerun + ["--kimg", "0.032"]) == 0
    assert json.loads((again / "run_config.json").read_text()) == {**saved, "kimg": 0.032}
    assert json.loads((again / "train_summary.json").read_text())["resumed"] is True


def test_cli_epochs_and_kimg_together_are_refused(data: Path, tmp_path: Path, capsys) -> None:
    argv = ["--data", str(data), "--resolution", "16", "--batch-size", "8", "--channels", "8", "--device", "cpu"]
    assert train.main(argv + ["--out", str(tmp_path / "both"), "--kimg", "0.016", "--epochs", "1"]) == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and "--kimg 0.016 and --epochs 1: give the run length once" in err[0], err
    assert not (tmp_path / "both" / "checkpoint.pt").exists()
    # --epochs alone through the CLI: one pass over the 24 images
    assert train.main(argv + ["--out", str(tmp_path / "one"), "--epochs", "1"]) == 0
    summary = json.loads((tmp_path / "one" / "train_summary.json").read_text())
    assert (summary["epochs"], summary["images_per_epoch"], summary["images_seen"]) == (1, 24, 24)


@pytest.fixture
def base_argv(data: Path, tmp_path: Path) -> list[str]:
    return ["--out", str(tmp_path / "o"), "--kimg", "0.008", "--batch-size", "8", "--channels", "8", "--device", "cpu"]


def test_cli_unknown_family(data: Path, base_argv, capsys) -> None:
    assert train.main(base_argv + ["--data", str(data), "--resolution", "16", "--family", "biggan"]) == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and "available: dcgan, dragan, progan, projected, sngan, stylegan, wgan-gp" in err[0]


def test_cli_wrong_resolution(data: Path, base_argv, capsys) -> None:
    assert train.main(base_argv + ["--data", str(data), "--resolution", "32"]) == 2
    err = capsys.readouterr().err
    assert "train_16.npy" in err and "--resolution 16" in err


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "not found"),
        (b"garbage", "not a readable .npy"),
        (np.zeros((2, 16, 16, 3), dtype=np.float32), "expected a non-empty uint8 array"),
        (np.zeros((2, 16, 16), dtype=np.uint8), "expected a non-empty uint8 array"),
        (np.zeros((2, 16, 8, 3), dtype=np.uint8), "not square"),
        (np.zeros((0, 16, 16, 3), dtype=np.uint8), "empty"),
    ],
)
def test_cli_bad_data(tmp_path: Path, base_argv, capsys, content, message: str) -> None:
    path = tmp_path / "bad.npy"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        save_npy(path, content)
    assert train.main(base_argv + ["--data", str(path), "--resolution", "16"]) == 2
    err = capsys.readouterr().err
    assert "bad.npy" in err and message in err


def test_cli_help_documents_every_flag(capsys) -> None:
    with pytest.raises(SystemExit):
        train.main(["--help"])
    text = capsys.readouterr().out
    for flag in (
        "--data",
        "--out",
        "--family",
        "--resolution",
        "--kimg",
        "--epochs",
        "--batch-size",
        "--lr",
        "--channels",
        "--z-dim",
        "--seed",
        "--ema-kimg",
        "--checkpoint-every",
        "--device",
        "--diffaug",
        "--start-resolution",
        "--stable-kimg",
        "--fade-kimg",
        "--batch-schedule",
    ):
        assert flag in text


# --- metrics over training through the train stage: kimg-0 row, reference identity --------------------------------


@pytest.fixture(scope="module")
def metric_refs(tmp_path_factory, data: Path) -> dict[str, Path]:
    """A small classifier as the feature space (fast on CPU) and two references of it: the training set (A) and
    another set (B, the same discs in another order and count)."""
    import timm

    from ganime_steps import evaluate

    folder = tmp_path_factory.mktemp("metric")
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=1)
    clf = folder / "model.pt"
    ckpt = {"arch": "resnet18", "image_size": 32, "state_dict": model.state_dict(), "threshold": 0.5}
    torch.save({**ckpt, "task": "chibi", "classes": ["other", "chibi"]}, clf)
    other = folder / "other_16.npy"
    save_npy(other, np.load(data)[::-1][:20].copy())
    refs = {"clf": clf}
    for name, pack in (("A", data), ("B", other)):
        refs[name] = folder / f"ref_{name}.npz"
        evaluate.run_reference(data=pack, out=refs[name], n=24, classifier_model=clf, device="cpu")
    return refs


def _metric_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _best_is_lowest(out: Path, rows: list[dict]) -> dict:
    key = rows[0]["metric_key"]
    best = torch.load(out / "generator_best.pt", weights_only=True)
    lowest = min(rows, key=lambda r: r[key])
    assert best["images_seen"] == lowest["images_seen"] and best["metric"] == lowest[key]
    return best


def test_metrics_start_at_kimg_0_and_a_new_reference_drops_old_rows(data: Path, tmp_path: Path, metric_refs, caplog):
    from ganime_steps.metrics.reference import load_reference

    hashes = {name: load_reference(metric_refs[name])["content_sha256"] for name in ("A", "B")}
    metric = dict(metric_samples=8, classifier_model=metric_refs["clf"])
    s = train_tiny(data, tmp_path, metric_reference=metric_refs["A"], **metric)
    rows = _metric_rows(tmp_path)
    assert [r["images_seen"] for r in rows] == [0, 16, 32] and rows[0]["kimg"] == 0 and rows[0]["step"] == 0
    assert all((r["reference_sha256"], r["n_fake"], r["n_real"]) == (hashes["A"], 8, 24) for r in rows)
    best = _best_is_lowest(tmp_path, rows)  # the kimg-0 row may be the best of a tiny run: fine
    assert s.best_kimg == best["kimg"] and best["metric_identity"]["reference_sha256"] == hashes["A"]
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ck["metric_rows"] == rows and ck["metric_identity"]["reference_sha256"] == hashes["A"]

    # the same reference, more kimg: the rows are kept, no second start row
    train_tiny(data, tmp_path, kimg=0.048, metric_reference=metric_refs["A"], **metric)
    assert [r["images_seen"] for r in _metric_rows(tmp_path)] == [0, 16, 32, 48]

    # another reference: the old rows go (one line says why), the curve restarts at the checkpoint, best re-picked
    with caplog.at_level("WARNING", logger="ganime_steps.gan.snapshots"):
        s = train_tiny(data, tmp_path, kimg=0.08, metric_reference=metric_refs["B"], **metric)
    assert "4 metric rows were measured with another reference_sha256, n_real; dropped (0 kept)" in caplog.text
    rows = _metric_rows(tmp_path)
    assert s.resumed and [r["images_seen"] for r in rows] == [48, 64, 80]
    assert all((r["reference_sha256"], r["n_fake"], r["n_real"]) == (hashes["B"], 8, 20) for r in rows)
    best = _best_is_lowest(tmp_path, rows)
    assert s.best_kimg == best["kimg"] and best["metric_identity"]["reference_sha256"] == hashes["B"]
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["metric_rows"] == rows


def test_resume_with_another_metric_sample_count_remeasures_a_finished_run(data: Path, tmp_path: Path, metric_refs):
    train_tiny(data, tmp_path, metric_reference=metric_refs["A"], metric_samples=8, classifier_model=metric_refs["clf"])
    s = train_tiny(
        data, tmp_path, metric_reference=metric_refs["A"], metric_samples=6, classifier_model=metric_refs["clf"]
    )
    rows = _metric_rows(tmp_path)
    assert s.images_this_run == 0 and [(r["images_seen"], r["n_fake"]) for r in rows] == [(32, 6)]
    assert _best_is_lowest(tmp_path, rows)["metric_identity"]["n_fake"] == 6 and s.best_kimg == 0.032
    # without a metric now: the rows and the best file stay as they are
    train_tiny(data, tmp_path)
    assert _metric_rows(tmp_path) == rows and (tmp_path / "generator_best.pt").is_file()


def test_cli_records_the_dataset_name(data: Path, tmp_path: Path) -> None:
    """``--dataset`` (the workflow passes the run's dataset) is the name the report shows; without it, none (never
    guessed from where the pack lies)."""
    tiny = ["--family", "dcgan", "--resolution", "16", "--kimg", "0.008", "--batch-size", "8", "--channels", "8"]
    tiny += ["--z-dim", "16", "--checkpoint-every", "0.008", "--device", "cpu", "--data", str(data)]
    assert train.main([*tiny, "--dataset", "A", "--out", str(tmp_path / "named")]) == 0
    assert train.main([*tiny, "--out", str(tmp_path / "unnamed")]) == 0
    named = TrainSummary.from_json(json.loads((tmp_path / "named" / "train_summary.json").read_text()))
    unnamed = TrainSummary.from_json(json.loads((tmp_path / "unnamed" / "train_summary.json").read_text()))
    assert (named.dataset, unnamed.dataset) == ("A", None)
