"""Does training work, and can its numbers be trusted: the families learn a toy distribution, G_ema's batch-norm
statistics are its own (G_ema no worse than G, the old copied statistics worse), and the metrics-over-training hook
(metrics.jsonl, the best snapshot, exact resume with a metric that draws random numbers).

Learning means beating every trivial baseline (all white, the mean image repeated, one training image repeated, one
fixed disk, four training images in turn), computed here with the same metric: the samples' 8 x 8 pixel FD at most
0.7x the best baseline's (the mean image, 8.25), and their structure (one disk of one palette colour per sample, at
least two colours, spread-out centres), which no baseline but the four repeated images meets. Measured: dcgan FD
1.93-2.23 (seeds 0-2), dragan 4.54-4.70 (0-1), sngan 2.98-3.55 (0-1), each with 2-4 colours and 53-87 % disks;
wgan-gp, progan and stylegan fail it (strict xfail, see NOT_YET). The guard: DCGAN with G's loss negated, G never
stepped or G_ema frozen fails it (FD 62.86, 39.20, 39.20; no disk). The details and the other figures are at
LEARN and FD_MARGIN.

The toy: 16 px coloured disks on white. The metric: a Fréchet distance on 8 x 8 (learning) or 4 x 4 pixels
(:mod:`ganime_steps.gan.pixel_metrics`), cheap enough for CPU tests; never called FID.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_train_config

from ganime_steps.common import GanimeError, save_npy
from ganime_steps.gan import FAMILIES, generate_images, load_generator
from ganime_steps.gan import loop as gan_loop
from ganime_steps.gan.loop import TrainConfig, Trainer
from ganime_steps.gan.networks import batch_norm_layers, recalibrate_batch_norm
from ganime_steps.gan.pixel_metrics import pixel_fd
from ganime_steps.gan.snapshots import BEST_FILE, BN_SEED_STREAM, METRICS_FILE

torch.set_num_threads(1)

RES = 16
COLOURS = np.array([[220, 40, 40], [40, 190, 60], [50, 70, 220], [235, 200, 40]], dtype=np.uint8)
CPU = torch.device("cpu")


def disks(n: int, seed: int) -> np.ndarray:
    """n images: a disk of radius 4 in one of four colours at a random place on white."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:RES, :RES]
    imgs = np.full((n, RES, RES, 3), 255, dtype=np.uint8)
    for i, img in enumerate(imgs):
        cy, cx = rng.integers(4, RES - 4, 2)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= 16] = COLOURS[i % len(COLOURS)]
    return imgs


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("toy") / "disks_16.npy"
    save_npy(path, disks(64, seed=0))
    return path


@pytest.fixture(scope="module")
def held_out() -> np.ndarray:
    """The metric's reference: fresh draws of the same distribution (not the training images themselves)."""
    return disks(512, seed=1)


# A toy run of 4 kimg at RES px, batch 16; otherwise TINY_RUN's settings (conftest)
TOY_RUN = {"resolution": RES, "kimg": 4.0, "batch_size": 16, "seed": 0, "ema_kimg": 0.1, "checkpoint_every": 100.0}


def _cfg(family: str, **kw) -> TrainConfig:
    return tiny_train_config(family, **{**TOY_RUN, **kw})


# --- every family learns ------------------------------------------------------------------------------------------

# The learning check, on N_SAMPLES images (seed 5) of the exported generator.pt; both parts are required.
#
# 1. Pixel FD (8 x 8, against the held-out draws) at most FD_MARGIN x the best trivial baseline's. The baselines
#    (N_SAMPLES images each; `test_trivial_baselines_fail_the_learning_check`) score: all white 12.43, the
#    training set's mean image repeated 8.25, one training image repeated 17.19, one fixed disk 14.44, four
#    training images (one per colour) in turn 9.25; fresh draws of the toy 0.25. The best baseline, the mean
#    image, sits 1 / FD_MARGIN = 1.43x above the mark (5.78), the worst learning run (dragan, 4.70) 1.23x below.
# 2. The structure (:func:`disk_census`): at least DISKS_MIN of the samples are one compact disk-sized blob of one
#    palette colour on white; among those disks at least COLOURS_MIN colours have a share of >= COLOUR_SHARE, and
#    the disks' centres spread (std, the smaller of y and x) at least SPREAD_MIN px. Blank, mean-image and
#    washed-out generators draw no disk; a repeated image or a fixed disk has one colour and no spread (the four
#    repeated training images pass this part and fail part 1). Fresh draws: 100 % disks, 4 colours, spread 2.29.
#
# The old mark (FD under half of the untrained G_ema's, 40-74) let all the baselines pass, and so did every family:
# their old 3-8 kimg runs at 8 channels drew grey or washed-out blobs (seeds 0-3: no family above 2 % disks except
# one dcgan seed's yellow-only 16 %; FD 5.3-24.6, most above the mean image's 8.25).
FD_MARGIN = 0.7
DISKS_MIN = 0.25
COLOURS_MIN = 2
COLOUR_SHARE = 0.1
SPREAD_MIN = 1.0
N_SAMPLES = 256
INK_TOLERANCE = 80.0  # RGB distance to a palette colour: half that of the closest two disk colours (160)
PALETTE = np.vstack([[[255, 255, 255]], COLOURS]).astype(np.float64)  # the white ground, then the disk colours


def one_disk(colour: int = 0) -> np.ndarray:
    """A disk of radius 4 in COLOURS[colour] at the centre."""
    yy, xx = np.mgrid[:RES, :RES]
    img = np.full((RES, RES, 3), 255, dtype=np.uint8)
    img[(yy - RES // 2) ** 2 + (xx - RES // 2) ** 2 <= 16] = COLOURS[colour]
    return img


def trivial_baselines(train: np.ndarray, n: int = N_SAMPLES) -> dict[str, np.ndarray]:
    """n images each from generators that learned nothing, or only one corner of the toy."""
    return {
        "all white": np.full((n, RES, RES, 3), 255, dtype=np.uint8),
        "mean image": np.repeat(train.mean(0).round().astype(np.uint8)[None], n, axis=0),
        "one training image": np.repeat(train[:1], n, axis=0),
        "one fixed disk": np.repeat(one_disk()[None], n, axis=0),
        "four training images": train[np.arange(n) % len(COLOURS)],  # disks(): image i has colour i % 4
    }


def disk_census(images: np.ndarray) -> dict[str, float]:
    """Pixels within INK_TOLERANCE of a palette colour are that colour's ink; an image's dominant colour's ink is
    its blob. The image is a disk when its blob has 12-90 px (a radius-4 disk 49; trained generators' soft edges
    fall outside the tolerance), at least 70 % of the image's ink and an RMS radius of at most 3.5 px (a disk's is
    2.8; specks scattered over the image are wider), and at least half the image is white. Returns the share of
    disks, the number of colours with >= COLOUR_SHARE of the disks and the spread of the disks' centres (px)."""
    x = images.astype(np.float64)
    dist = np.linalg.norm(x[..., None, :] - PALETTE, axis=-1)  # (N, H, W, 1 + colours)
    near, close = dist.argmin(-1), dist.min(-1) < INK_TOLERANCE
    counts = np.stack([(close & (near == k)).sum((1, 2)) for k in range(1, len(PALETTE))], axis=1)
    dominant, area = counts.argmax(1), counts.max(1)
    purity = area / np.maximum(counts.sum(1), 1)
    blob = close & (near == dominant[:, None, None] + 1)
    yy, xx = np.mgrid[: x.shape[1], : x.shape[2]]
    size = np.maximum(area, 1)
    cy, cx = (blob * yy).sum((1, 2)) / size, (blob * xx).sum((1, 2)) / size
    r2 = (yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2
    rms = np.sqrt((blob * r2).sum((1, 2)) / size)
    white = (close & (near == 0)).sum((1, 2))
    disk = (area >= 12) & (area <= 90) & (purity >= 0.7) & (rms <= 3.5) & (white >= x.shape[1] * x.shape[2] / 2)
    shares = np.bincount(dominant[disk], minlength=len(COLOURS)) / max(int(disk.sum()), 1)
    spread = float(min(cy[disk].std(), cx[disk].std())) if disk.sum() > 1 else 0.0
    return {"disks": float(disk.mean()), "colours": int((shares >= COLOUR_SHARE).sum()), "spread": spread}


def learning_check(images: np.ndarray, held_out: np.ndarray, baseline_fd: float) -> tuple[dict, list[str]]:
    """(scores, the parts that failed): no failure means the samples beat every trivial baseline."""
    s = {"pixel_fd": pixel_fd(held_out, images, size=8), **disk_census(images)}
    checks = [
        (s["pixel_fd"] <= FD_MARGIN * baseline_fd, f"pixel FD {s['pixel_fd']:.2f} > {FD_MARGIN} x {baseline_fd:.2f}"),
        (s["disks"] >= DISKS_MIN, f"disks {s['disks']:.3f} < {DISKS_MIN}"),
        (s["colours"] >= COLOURS_MIN, f"colours {s['colours']} < {COLOURS_MIN}"),
        (s["spread"] >= SPREAD_MIN, f"spread {s['spread']:.2f} px < {SPREAD_MIN}"),
    ]
    return s, [why for ok, why in checks if not ok]


@pytest.fixture(scope="module")
def baseline_fd(held_out: np.ndarray) -> float:
    """The best (lowest) pixel FD of the trivial baselines, from the training images themselves."""
    return min(pixel_fd(held_out, imgs, size=8) for imgs in trivial_baselines(disks(64, seed=0)).values())


def test_trivial_baselines_fail_the_learning_check(held_out: np.ndarray, baseline_fd: float) -> None:
    """Every baseline fails the FD part (by construction, FD_MARGIN < 1, it is measured against the best of them)
    and all but the four repeated training images fail the structure part too; fresh draws of the toy pass."""
    for name, imgs in trivial_baselines(disks(64, seed=0)).items():
        scores, failed = learning_check(imgs, held_out, baseline_fd)
        assert any(f.startswith("pixel FD") for f in failed), (name, scores)
        if name != "four training images":
            assert any(not f.startswith("pixel FD") for f in failed), (name, scores)
    scores, failed = learning_check(disks(N_SAMPLES, seed=7), held_out, baseline_fd)
    assert not failed, scores


# Short CPU schedules at 16 channels (TINY_RUN's 8 learn no colour in any run this test can afford). Measured
# (this test uses seed 0), pixel FD / disks / colours / spread:
#   dcgan   8 kimg, lr 1e-3:  seeds 0-2  FD 1.93-2.23, disks 0.54-0.62, 4 colours, spread 1.36-1.64
#   dragan 12 kimg, lr 5e-4:  seeds 0-1  FD 4.54-4.70, disks 0.77-0.78, 2 colours, spread 1.50-1.61 (at 8 kimg
#                             seed 1 collapses onto one colour at FD 6.26)
#   sngan  16 kimg, lr 1e-3:  seeds 0-1  FD 2.98-3.55, disks 0.53-0.79, 2 colours, spread 1.73-1.83
# The other three fail the check in every run tried (seed 0), so their test is a strict xfail: it fails today and
# goes red when the family starts passing. They run the old cheap schedules (8 channels; FD, disks):
# wgan-gp 8 kimg lr 1e-3 5.25, 0; progan 3 kimg 13.08, 0; stylegan 3 kimg 15.55, 0.008. The best runs tried:
# wgan-gp 16 kimg at 16 channels FD 2.78, disks 0.36, one colour, spread 0.98; progan 6 kimg at 16 channels 4.43,
# 0.30, one colour; stylegan 6 kimg at 16 channels 7.19, 0.05 (24-29 s of CPU each, for progan and stylegan).
GROW = dict(start_resolution=8, stable_kimg=0.25, fade_kimg=0.25)
LEARN = {
    "dcgan": dict(kimg=8.0, lr=1e-3, channels=16),
    "wgan-gp": dict(kimg=8.0, lr=1e-3),
    "dragan": dict(kimg=12.0, lr=5e-4, channels=16),
    "sngan": dict(kimg=16.0, lr=1e-3, channels=16),
    "progan": dict(kimg=3.0, **GROW),
    "stylegan": dict(kimg=3.0, **GROW),
    "projected": dict(kimg=4.0, channels=8),
}
NOT_YET = {  # family -> why its learning test is a strict xfail (measured, seed 0)
    "wgan-gp": "draws grey blobs: pixel FD 5.25, no disk (16 kimg at 16 channels: one colour)",
    "progan": "draws washed-out blobs: pixel FD 13.08, no disk (6 kimg at 16 channels: one colour)",
    "stylegan": "draws washed-out blobs: pixel FD 15.55, disks 0.008 (6 kimg at 16 channels: disks 0.05)",
    # D judges patches of ImageNet features of the 16 px toy (resized to 64): it learns disks and some colours, but
    # not both colours and places at once. Measured, seed 0, with the official cutout (0.2): 4 kimg 8 channels FD 35.46,
    # disks 0.20, 3 colours, spread 1.35; 8 kimg 8 channels FD 14.02, disks 0.50, one colour, spread 0.42; 8 kimg 16
    # channels FD 7.86, disks 0.42, one colour, spread 0.56 (with the paper's 1/2: FD 8.86, disks 0.51, 2 colours,
    # spread 0.93; 16 kimg 8 channels FD 8.43, disks 0.73, 2 colours, spread 0.35)
    "projected": "few disks at 4 kimg: pixel FD 35.46, disks 0.20; longer runs collapse onto one colour or the centre",
}
SABOTAGES = ("g_loss_sign_flipped", "g_never_stepped", "ema_frozen")


def trained_samples(toy: Path, out: Path, family: str, sabotage: str | None = None, monkeypatch=None) -> np.ndarray:
    """N_SAMPLES images of the generator.pt that a LEARN run exports, optionally with training broken (the sabotage
    is checked to have taken effect)."""
    if sabotage == "g_loss_sign_flipped":  # the loop reads its losses from the family table
        fam = FAMILIES[family]
        monkeypatch.setitem(FAMILIES, family, dataclasses.replace(fam, g_loss=lambda logits: -fam.g_loss(logits)))
    elif sabotage == "ema_frozen":
        monkeypatch.setattr(gan_loop, "update_ema", lambda ema, model, beta: None)
    trainer = Trainer(_cfg(family, **LEARN[family]), data=toy, out=out, device=CPU)
    init = {k: v.clone() for k, v in trainer.G.state_dict().items()}
    init_ema = {k: p.clone() for k, p in trainer.G_ema.named_parameters()}
    if sabotage == "g_never_stepped":
        monkeypatch.setattr(trainer.opt_g, "step", lambda *args, **kwargs: None)
    trainer.train()
    if sabotage == "g_never_stepped":
        assert all(torch.equal(p, init[k]) for k, p in trainer.G.named_parameters())
    if sabotage == "ema_frozen":
        assert all(torch.equal(p, init_ema[k]) for k, p in trainer.G_ema.named_parameters())
    if sabotage == "g_loss_sign_flipped":
        assert all(row["loss_g"] < 0 for row in trainer.log_rows)  # -softplus(-D(G(z))): the flipped sign
    return generate_images(load_generator(out / "generator.pt"), N_SAMPLES, seed=5)


def test_learning_covers_every_family() -> None:
    assert sorted(LEARN) == sorted(FAMILIES) and set(NOT_YET) <= set(LEARN)


@pytest.mark.parametrize(
    "family",
    [pytest.param(f, marks=pytest.mark.xfail(strict=True, reason=NOT_YET[f])) if f in NOT_YET else f for f in LEARN],
)
def test_family_learns_the_toy(toy: Path, tmp_path: Path, held_out: np.ndarray, baseline_fd: float, family) -> None:
    scores, failed = learning_check(trained_samples(toy, tmp_path, family), held_out, baseline_fd)
    print(f"LEARN {family} {scores}")
    assert not failed, f"{family}: {failed} ({scores})"


@pytest.mark.parametrize("sabotage", SABOTAGES)
def test_sabotaged_training_fails_the_learning_check(
    toy: Path, tmp_path: Path, held_out: np.ndarray, baseline_fd: float, monkeypatch, sabotage: str
) -> None:
    """The learning check can fail: DCGAN (it passes at 8 kimg, seeds 0-2) with G's loss negated, G's optimiser
    never stepping, or G_ema never updated fails every part of it. Measured (seed 0): G's loss negated pixel FD
    62.86, G never stepped and G_ema frozen 39.20 (G_ema stays at its initialisation); no disk in any of them."""
    scores, failed = learning_check(
        trained_samples(toy, tmp_path, "dcgan", sabotage, monkeypatch), held_out, baseline_fd
    )
    print(f"SABOTAGE {sabotage} {scores}")
    assert failed, scores


# --- G_ema's batch-norm statistics --------------------------------------------------------------------------------


def test_ema_with_recalibrated_batch_norm_is_no_worse_than_g(toy: Path, tmp_path: Path, held_out) -> None:
    """A DCGAN whose G keeps moving (lr 5e-3) under a 1 kimg EMA, 10 kimg: at every snapshot from 4 kimg on, render
    G (eval mode, its own running statistics), G_ema as exported (BN statistics re-estimated for its weights) and
    G_ema with G's statistics copied in (the old behaviour). Averaged over the snapshots, G_ema is no worse than G,
    and the copied statistics make it worse. Measured (8 px pixel FD, seeds 0-4, DCGAN's G step on the D step's
    fakes, channels_last): G_ema / G 0.61-0.99, old / G_ema 1.05-1.24; seed 2 (this test): G 3.93, G_ema 2.99,
    old 3.47. Without the re-estimation "ema" is "ema_old_stats" and the test fails. (Contiguous tensors gave old /
    G_ema 0.94-1.14 with the G step on the D step's fakes, 1.07-1.57 with fresh latents.) The gap is a property of
    the average, not of every snapshot: it comes from the snapshots where G still moves fast (4-6 kimg here)."""
    box: dict[str, Trainer] = {}

    def three_ways(G_ema: torch.nn.Module) -> dict[str, float]:
        G = copy.deepcopy(box["trainer"].G).eval()
        old = copy.deepcopy(G_ema)
        for b_old, b in zip(old.buffers(), G.buffers(), strict=True):
            b_old.copy_(b)
        gens = {"ema": G_ema, "ema_old_stats": old, "g": G}
        return {k: pixel_fd(held_out, generate_images(g, 512, seed=3), size=8) for k, g in gens.items()}

    cfg = _cfg("dcgan", kimg=10.0, lr=5e-3, ema_kimg=1.0, ema_rampup=None, checkpoint_every=1.0, seed=2)
    trainer = Trainer(cfg, data=toy, out=tmp_path, device=CPU, snapshot_metric=three_ways, metric_key="ema")
    box["trainer"] = trainer
    trainer.train()
    rows = [r for r in trainer.metric_rows if r["kimg"] >= 4.0]
    assert len(rows) == 7
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("ema", "ema_old_stats", "g")}
    assert mean["ema"] <= mean["g"], mean
    assert mean["ema_old_stats"] > 1.05 * mean["ema"], mean


def test_exported_generator_carries_recalibrated_statistics(toy: Path, tmp_path: Path) -> None:
    Trainer(_small(), data=toy, out=tmp_path, device=CPU).train()
    exported = load_generator(tmp_path / "generator.pt")
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    for key, t in exported.state_dict().items():
        assert torch.equal(t, ck["G_ema"][key]), key  # the checkpoint's G_ema is the exported one
    again = copy.deepcopy(exported)
    recalibrate_batch_norm(again, seed=_small().seed + BN_SEED_STREAM)
    for a, b in zip(exported.buffers(), again.buffers(), strict=True):  # the trainer ran channels_last, this copy
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)  # contiguous: the sums round differently
    bn = batch_norm_layers(exported)[0]
    g_var = ck["G"]["net.1.running_var"]
    assert bn.running_var.shape == g_var.shape and not torch.equal(bn.running_var, g_var)  # not G's statistics


# --- metrics over training ----------------------------------------------------------------------------------------


class ScriptedMetric:
    """Returns the next value of a script as "fid" (plus a pixel FD), and draws from every global RNG as a real
    metric might (Inception on random crops, KID subsets): the loop must shield training from that."""

    def __init__(self, values: list[float], real: np.ndarray) -> None:
        self.values = list(values)
        self.calls: list[bool] = []
        self.real = real

    def __call__(self, G: torch.nn.Module) -> dict[str, float]:
        self.calls.append(G.training)
        torch.randn(100)
        np.random.rand(10)
        random.random()
        fake = generate_images(G, 64, seed=0)
        return {"fid": self.values[len(self.calls) - 1], "pixel_fd": pixel_fd(self.real, fake)}


def _small(**kw) -> TrainConfig:
    args = dict(kimg=0.064, batch_size=8, ema_kimg=0.05, checkpoint_every=0.016)
    args.update(kw)
    return _cfg("dcgan", **args)


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / METRICS_FILE).read_text().splitlines()]


def _stable(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ("seconds", "metric_seconds", "timestamp")}


def test_metrics_rows_best_snapshot_and_untouched_training(toy: Path, tmp_path: Path, held_out) -> None:
    plain = Trainer(_small(), data=toy, out=tmp_path / "plain", device=CPU)
    plain.train()
    assert not (tmp_path / "plain" / METRICS_FILE).exists() and not (tmp_path / "plain" / BEST_FILE).exists()

    metric = ScriptedMetric([1.0, 3.0], held_out)
    out = tmp_path / "metrics"
    trainer = Trainer(_small(), data=toy, out=out, device=CPU, snapshot_metric=metric, metrics_every=0.032)
    res = trainer.train()
    assert metric.calls == [False, False]  # at 32 and 64 images, G_ema in eval mode
    rows = _rows(out)
    assert [r["images_seen"] for r in rows] == [32, 64] and [r["kimg"] for r in rows] == [0.032, 0.064]
    for key in ("step", "phase", "resolution", "loss_g", "loss_d", "penalty", "fid", "pixel_fd", "metric_key"):
        assert key in rows[0], key
    assert rows[0]["step"] == 4 and rows[0]["metric_key"] == "fid" and rows[0]["seconds"] > 0
    assert (res.best_kimg, res.best_metric, res.metric_key, res.metric_rows) == (0.032, 1.0, "fid", 2)
    # the metric drew from every global RNG, yet training is bit-identical to the run without it
    a = torch.load(tmp_path / "plain" / "checkpoint.pt", weights_only=True)
    b = torch.load(out / "checkpoint.pt", weights_only=True)
    for net in ("G", "D", "G_ema"):
        for key, t in a[net].items():
            assert torch.equal(t, b[net][key]), f"{net}.{key}"
    # generator_best.pt: generator.pt's format, from the 32-image snapshot (fid 1.0, the final one has 3.0)
    best = torch.load(out / BEST_FILE, weights_only=True)
    assert best["images_seen"] == 32 and best["kimg"] == 0.032 and best["metric_key"] == "fid"
    assert best["metric"] == 1.0 and best["metrics"]["fid"] == 1.0
    G = load_generator(out / BEST_FILE)
    assert generate_images(G, 2, seed=0).shape == (2, RES, RES, 3)


def test_metrics_every_must_be_a_multiple_of_checkpoint_every(toy: Path, tmp_path: Path) -> None:
    with pytest.raises(GanimeError, match="--metrics-every 0.024: must be a positive multiple of --checkpoint-every"):
        Trainer(_small(), data=toy, out=tmp_path, device=CPU, snapshot_metric=lambda G: {}, metrics_every=0.024)


def test_metric_without_the_key_is_a_clear_error(toy: Path, tmp_path: Path) -> None:
    trainer = Trainer(_small(), data=toy, out=tmp_path, device=CPU, snapshot_metric=lambda G: {"kid": 0.1})
    with pytest.raises(GanimeError, match="without 'fid'.*--metric-key"):
        trainer.train()


def test_resume_keeps_exactly_the_rows_up_to_the_checkpoint(toy: Path, tmp_path: Path, held_out) -> None:
    full, part = tmp_path / "full", tmp_path / "part"
    values = [5.0, 4.0, 1.0, 2.0]
    Trainer(_small(), data=toy, out=full, device=CPU, snapshot_metric=ScriptedMetric(values, held_out)).train()
    Trainer(
        _small(kimg=0.032), data=toy, out=part, device=CPU, snapshot_metric=ScriptedMetric(values, held_out)
    ).train()
    assert [r["images_seen"] for r in _rows(part)] == [16, 32]
    # a killed run had written a row (and a best generator) past its last checkpoint
    with open(part / METRICS_FILE, "a") as fh:
        fh.write(json.dumps({"kimg": 0.048, "images_seen": 48, "fid": 0.5}) + "\n")
    (part / BEST_FILE).unlink()
    resumed = Trainer(_small(), data=toy, out=part, device=CPU, snapshot_metric=ScriptedMetric(values[2:], held_out))
    assert [r["images_seen"] for r in _rows(part)] == [16, 32, 48]  # nothing rewritten before training ...
    res = resumed.train()
    assert res.resumed and res.best_kimg == 0.048 and res.best_metric == 1.0
    a, b = _rows(full), _rows(part)
    assert [r["images_seen"] for r in b] == [16, 32, 48, 64]  # ... then the orphan is gone, no duplicates
    assert [_stable(r) for r in a] == [_stable(r) for r in b]  # identical to the uninterrupted run's rows
    assert torch.load(part / BEST_FILE, weights_only=True)["images_seen"] == 48
    ca = torch.load(full / "checkpoint.pt", weights_only=True)
    cb = torch.load(part / "checkpoint.pt", weights_only=True)
    for net in ("G", "D", "G_ema"):
        for key, t in ca[net].items():
            assert torch.equal(t, cb[net][key]), f"{net}.{key}"


def test_resume_trims_orphan_rows_and_restores_the_best_file(toy: Path, tmp_path: Path, held_out) -> None:
    """A finished run rerun (nothing to train) rewrites metrics.jsonl from its checkpoint and re-exports the best
    generator when the checkpoint is the best snapshot."""
    out = tmp_path / "run"
    Trainer(_small(), data=toy, out=out, device=CPU, snapshot_metric=ScriptedMetric([3, 2, 1, 0.5], held_out)).train()
    expected = (out / METRICS_FILE).read_text()
    with open(out / METRICS_FILE, "a") as fh:
        fh.write(json.dumps({"kimg": 0.08, "images_seen": 80, "fid": 0.1}) + "\n")
    (out / BEST_FILE).unlink()
    res = Trainer(_small(), data=toy, out=out, device=CPU, snapshot_metric=ScriptedMetric([], held_out)).train()
    assert res.images_this_run == 0 and res.best_kimg == 0.064
    assert (out / METRICS_FILE).read_text() == expected
    assert torch.load(out / BEST_FILE, weights_only=True)["images_seen"] == 64


def test_fresh_run_removes_another_runs_metrics(toy: Path, tmp_path: Path) -> None:
    (tmp_path / METRICS_FILE).write_text('{"kimg": 9}\n')
    (tmp_path / BEST_FILE).write_bytes(b"old")
    Trainer(_small(kimg=0.016), data=toy, out=tmp_path, device=CPU).train()
    assert not (tmp_path / METRICS_FILE).exists() and not (tmp_path / BEST_FILE).exists()
