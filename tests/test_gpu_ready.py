"""GPU-ready training, checked on CPU: penalties under fp16 loss scaling, the precision choice, one D forward fewer
with R1, the foreach EMA, the family schedules (SNGAN decay and G batch, DRAGAN Adam, StyleGAN lr/batch tables),
penalties at full resolution, the on-device dataset and the --compile option with its fallback."""

from __future__ import annotations

import dataclasses
import inspect
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_train_config, train_tiny, write_disc_dataset
from torch import nn

from ganime_steps import train
from ganime_steps.common import GanimeError
from ganime_steps.gan.data import DeviceDataset, load_dataset, sample_real
from ganime_steps.gan.loop import TrainConfig, Trainer, resolve_amp
from ganime_steps.gan.losses import (
    FAMILIES,
    STYLEGAN_BATCH_SCHEDULE,
    STYLEGAN_LR_SCHEDULE,
    gradient_norm_penalty,
    r1_from_logits,
    r1_penalty,
    wgan_gp_penalty,
)
from ganime_steps.gan.progressive import GrowthSchedule, parse_batch_schedule, parse_lr_schedule

torch.set_num_threads(1)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data16(tmp_path_factory) -> Path:
    return write_disc_dataset(tmp_path_factory.mktemp("data") / "train_16.npy", 16)


@pytest.fixture(scope="module")
def data32(tmp_path_factory) -> Path:
    return write_disc_dataset(tmp_path_factory.mktemp("data") / "train_32.npy", 32)


def _cfg(family: str, **kw) -> TrainConfig:
    """TINY_RUN's settings for a Trainer: z_dim 8, no checkpoint inside the run, progressive families 4 channels."""
    channels = 4 if FAMILIES[family].progressive else 8
    return tiny_train_config(family, **{"channels": channels, "z_dim": 8, "checkpoint_every": 1.0, **kw})


# --- 1. penalties under fp16 loss scaling ----------------------------------------------------------------------


def _fp16_critic(x: torch.Tensor) -> torch.Tensor:
    """A critic whose backward runs through fp16 (as under CUDA autocast): a gradient above 65504 becomes inf."""
    h = (x.flatten(1) * 3.0).half()
    return (h * 100.0).float().sum(1)


def test_penalties_stay_finite_and_unscaled_at_a_huge_loss_scale() -> None:
    """The old code took the inner gradient of scale * D(x): at GradScaler's scale 2**24 the fp16 gradient
    (2**24 * 300) overflowed to inf, tripping the NaN guard. Now the scale is never applied: finite, and equal to
    the penalty at scale 1."""
    x = torch.rand(4, 3, 4, 4)
    points = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad((_fp16_critic(points).float().sum() * 2.0**24), points)
    assert not torch.isfinite(g).all()  # the failure mode, reproduced
    huge = torch.tensor(2.0**24)
    for pen in (
        lambda s: r1_penalty(_fp16_critic, x, x, 10.0, s),
        lambda s: wgan_gp_penalty(_fp16_critic, x, x, 10.0, s),
        lambda s: gradient_norm_penalty(_fp16_critic, x, 10.0, s),
    ):
        torch.manual_seed(0)
        at_one = pen(1.0)
        torch.manual_seed(0)
        at_huge = pen(huge)
        torch.manual_seed(0)
        at_huge_float = pen(2.0**24)
        assert torch.isfinite(at_huge) and at_huge.item() > 0
        assert at_huge.item() == at_one.item() == at_huge_float.item()
    # the value is the exact one: grad = 300 everywhere, R1 = 5 * sum(300^2)
    assert r1_penalty(_fp16_critic, x, x, 10.0, huge).item() == pytest.approx(5.0 * 48 * 300.0**2, rel=1e-6)


def test_penalty_forward_runs_in_fp32_under_fp16_and_no_scale_is_read(data16: Path, tmp_path: Path) -> None:
    tr = Trainer(_cfg("wgan-gp"), data=data16, out=tmp_path, device=CPU)
    tr.amp = "fp16"  # as on a GPU without native bf16
    ctx = tr._penalty_autocast()
    assert isinstance(ctx, torch.autocast) and ctx.device == "cuda" and not ctx._enabled
    # get_scale() copies the scale to the host (a sync every D step): the step never reads it
    from ganime_steps.gan import steps

    for code in (Trainer._iteration, Trainer._iteration_body, Trainer._optimise, steps):
        assert "get_scale" not in inspect.getsource(code), code
    tr.amp = "off"
    losses = torch.stack(tr._iteration())
    assert torch.isfinite(losses).all() and losses[2] > 0


# --- 2. precision choice ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "fp16")])
def test_amp_auto_picks_bf16_only_on_native_bf16(monkeypatch, native: bool, expected: str) -> None:
    calls = []

    def fake_supported(including_emulation: bool = True) -> bool:
        calls.append(including_emulation)
        return native or including_emulation  # a V100/T4: "supported" only when emulation counts

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", fake_supported)
    assert resolve_amp("auto", torch.device("cuda")) == expected
    assert calls == [False]
    assert resolve_amp("fp16", torch.device("cuda")) == "fp16"
    assert resolve_amp("auto", CPU) == "off"


# --- 3. R1 without an extra D forward -------------------------------------------------------------------------


def test_r1_d_step_has_two_d_forwards_and_the_same_penalty(data32: Path, tmp_path: Path) -> None:
    cfg = _cfg("stylegan", resolution=32, start_resolution=32, kimg=0.016)
    tr = Trainer(cfg, data=data32, out=tmp_path, device=CPU)
    calls = []
    handle = tr.D.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    tr._iteration()  # n_critic 1: one D step (reals, fakes) + the G step
    handle.remove()
    assert len(calls) == 3, calls  # was 4: R1 ran its own forward on the reals
    # the fused R1 equals the standalone penalty on the same reals
    real = torch.rand(4, 3, 32, 32) * 2 - 1
    points = real.clone().requires_grad_(True)
    tr.G.eval(), tr.D.eval()
    fused = r1_from_logits(tr.D(points), points, 10.0)
    alone = r1_penalty(tr.D, real, real, 10.0)
    assert fused.item() == pytest.approx(alone.item(), rel=1e-6)


def _g_forwards_and_grads(family: str, data: Path, out: Path) -> tuple[int, bool]:
    """(G forwards in one iteration, whether G got gradients from its G step)."""
    tr = Trainer(_cfg(family, resolution=16, kimg=0.016), data=data, out=out, device=CPU)
    calls = []
    handle = tr.G.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    before = [p.detach().clone() for p in tr.G.parameters()]
    tr._iteration()
    handle.remove()
    moved = any(not torch.equal(a, p) for a, p in zip(before, tr.G.parameters(), strict=True))
    return len(calls), moved


def test_dcgan_g_step_reuses_the_d_steps_fakes(data16: Path, tmp_path: Path) -> None:
    """DCGAN's reference loop: one G forward per iteration (its graph kept from the D step for the G step); the
    other one-critic-step families draw fresh latents for the G step (two forwards)."""
    assert _g_forwards_and_grads("dcgan", data16, tmp_path / "dcgan") == (1, True)
    assert _g_forwards_and_grads("dragan", data16, tmp_path / "dragan") == (2, True)
    assert [f for f in FAMILIES if FAMILIES[f].g_step_reuses_fakes] == ["dcgan"]
    with pytest.raises(ValueError, match="n_critic 1"):
        dataclasses.replace(FAMILIES["dcgan"], n_critic=2)


# --- 4. foreach EMA -----------------------------------------------------------------------------------------------


def test_foreach_ema_matches_the_per_parameter_loop() -> None:
    from ganime_steps.gan.loop import update_ema
    from ganime_steps.gan.networks import NetConfig, build_generator

    torch.manual_seed(0)
    G = build_generator(NetConfig(resolution=32, channels=8, z_dim=8, arch="stylegan"))
    ema_a = build_generator(NetConfig(resolution=32, channels=8, z_dim=8, arch="stylegan"))
    ema_b = build_generator(NetConfig(resolution=32, channels=8, z_dim=8, arch="stylegan"))
    ema_b.load_state_dict(ema_a.state_dict())
    for beta in (0.999, 0.5, 0.0):
        update_ema(ema_a, G, beta)
        with torch.no_grad():  # the reference: the old per-parameter loop
            for pe, p in zip(ema_b.parameters(), G.parameters(), strict=True):
                pe.lerp_(p, 1.0 - beta)
            for be, b in zip(ema_b.buffers(), G.buffers(), strict=True):
                be.copy_(b)
        for (k, a), b in zip(ema_a.state_dict().items(), ema_b.state_dict().values(), strict=True):
            assert (a.float() - b.float()).abs().max().item() <= 1e-7, k
    assert all(torch.equal(a, b) for a, b in zip(ema_a.state_dict().values(), ema_b.state_dict().values(), strict=True))


# --- 5. SNGAN and DRAGAN reference settings -----------------------------------------------------------------------


def test_sngan_and_dragan_reference_defaults() -> None:
    sn, dr = FAMILIES["sngan"], FAMILIES["dragan"]
    assert (sn.lr, sn.betas, sn.n_critic, sn.lr_decay, sn.g_batch_mul) == (2e-4, (0.0, 0.9), 5, True, 2)
    assert (dr.lr, dr.betas, dr.n_critic) == (1e-4, (0.5, 0.9), 1)
    assert all(FAMILIES[f].g_batch_mul == 1 and not FAMILIES[f].lr_decay for f in FAMILIES if f != "sngan")
    # the CLI's auto: SNGAN decays to 0 at --kimg, the others do not decay
    assert train.resolve_family_defaults("sngan", 50.0, "auto", "auto", "auto") == ("", "", 50.0)
    assert train.resolve_family_defaults("dcgan", 50.0, "auto", "auto", "auto") == ("", "", None)
    assert train.resolve_family_defaults("sngan", 50.0, "", "", "none")[2] is None
    assert train.resolve_family_defaults("sngan", 50.0, "", "", "20")[2] == 20.0
    with pytest.raises(GanimeError, match="--lr-decay-kimg"):
        train.resolve_family_defaults("sngan", 50.0, "", "", "soon")


def test_sngan_lr_decays_linearly_and_g_batch_is_doubled(data16: Path, tmp_path: Path) -> None:
    cfg = _cfg("sngan", kimg=0.08, lr_decay_kimg=0.08)
    tr = Trainer(cfg, data=data16, out=tmp_path, device=CPU)
    phase = tr.schedule.at(0)
    for images, expected in ((0, 2e-4), (20, 1.5e-4), (40, 1e-4), (80, 0.0), (120, 0.0)):
        assert tr.lr_at(phase, images) == pytest.approx(expected, abs=1e-12)
    g_batches = []
    handle = tr.G.register_forward_hook(lambda m, i, o: g_batches.append(i[0].shape[0]))
    tr._iteration()
    handle.remove()
    assert g_batches == [8] * 5 + [16]  # 5 critic steps (fakes of the D batch), then G on 2x the batch
    assert [g["lr"] for g in tr.opt_d.param_groups] == [pytest.approx(2e-4)]
    tr._iteration()  # second iteration starts at 40 images: half-way
    assert tr.opt_g.param_groups[0]["lr"] == pytest.approx(1e-4)


def test_sngan_summary_reports_the_cli_default_decay(data16: Path, tmp_path: Path) -> None:
    assert (
        train.main(
            [
                "--data",
                str(data16),
                "--out",
                str(tmp_path),
                "--family",
                "sngan",
                "--resolution",
                "16",
                "--kimg",
                "0.08",
                "--batch-size",
                "8",
                "--channels",
                "8",
                "--z-dim",
                "8",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ck["config"]["lr_decay_kimg"] == 0.08
    assert ck["opt_g"]["param_groups"][0]["lr"] == pytest.approx(1e-4)  # last iteration started at 40 of 80


# --- 6. StyleGAN tables and penalties at full resolution ---------------------------------------------------------


def test_stylegan_official_tables() -> None:
    sg = FAMILIES["stylegan"]
    assert parse_lr_schedule(sg.lr_schedule) == {128: 0.0015, 256: 0.002, 512: 0.003, 1024: 0.003}
    assert parse_batch_schedule(sg.batch_schedule) == {
        4: 128,
        8: 128,
        16: 128,
        32: 64,
        64: 32,
        128: 16,
        256: 8,
        512: 4,
    }
    assert (sg.lr_schedule, sg.batch_schedule) == (STYLEGAN_LR_SCHEDULE, STYLEGAN_BATCH_SCHEDULE)
    assert train.resolve_family_defaults("stylegan", 1.0, "auto", "auto", "auto") == (
        STYLEGAN_BATCH_SCHEDULE,
        STYLEGAN_LR_SCHEDULE,
        None,
    )
    assert train.resolve_family_defaults("stylegan", 1.0, "8:16", "", "auto")[:2] == ("8:16", "")  # overridable
    s = GrowthSchedule(128, 8, 600, 600, 32, parse_batch_schedule(sg.batch_schedule))
    assert [s.at(k * 1_200_000).batch_size for k in range(5)] == [128, 128, 64, 32, 16]
    for bad in ("128", "128:x", "100:0.1", "128:0", "128:-1"):
        with pytest.raises(GanimeError, match="--lr-schedule"):
            parse_lr_schedule(bad)


def test_lr_table_applies_per_phase_resolution(data32: Path, tmp_path: Path) -> None:
    cfg = _cfg("stylegan", resolution=32, start_resolution=8, stable_kimg=0.016, fade_kimg=0.016)
    cfg = TrainConfig(**{**cfg.to_dict(), "lr_schedule": "16:0.002,32:0.003"})
    tr = Trainer(cfg, data=data32, out=tmp_path, device=CPU)
    lrs = {}
    for _ in range(12):
        tr._iteration()
        lrs[tr.phase.resolution] = tr.opt_d.param_groups[0]["lr"]
    assert lrs == {8: 1e-3, 16: 0.002, 32: 0.003}


def test_penalties_at_phase_resolution_equal_the_full_resolution_ones() -> None:
    """The official code takes R1 / the GP on full-resolution images (reals and fakes upsampled), where D first
    box-downsamples: our phase-resolution penalty with res_factor must equal that directly computed one."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)

    def d_low(x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(conv(x)).square().flatten(1).sum(1)

    def d_full(x: torch.Tensor) -> torch.Tensor:
        return d_low(F.avg_pool2d(x, 4))

    real, fake = torch.randn(3, 3, 8, 8), torch.randn(3, 3, 8, 8)
    up = lambda t: F.interpolate(t, scale_factor=4, mode="nearest")  # noqa: E731
    full = r1_penalty(d_full, up(real), None, 10.0)
    assert r1_penalty(d_low, real, None, 10.0, res_factor=4).item() == pytest.approx(full.item(), rel=1e-5)
    assert r1_penalty(d_low, real, None, 10.0).item() == pytest.approx(16 * full.item(), rel=1e-5)  # the old 4^lod
    torch.manual_seed(1)
    gp_full = wgan_gp_penalty(d_full, up(real), up(fake), 10.0)
    torch.manual_seed(1)
    gp_low = wgan_gp_penalty(d_low, real, fake, 10.0, res_factor=4)
    assert gp_low.item() == pytest.approx(gp_full.item(), rel=1e-5)


# --- 7. the dataset on the device ---------------------------------------------------------------------------------


def test_device_dataset_batches_equal_the_memmap_path(data16: Path) -> None:
    images = load_dataset(data16, 16)
    dd = DeviceDataset(images, CPU)
    assert isinstance(dd.images, torch.Tensor) and dd.images.dtype == torch.uint8 and len(dd) == len(images)
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    for bs in (8, 5, 64):  # 64 > N: with replacement, as sample_real
        assert torch.equal(dd.sample(a, bs, False), sample_real(images, b, bs, CPU, False))
    assert a.bit_generator.state == b.bit_generator.state  # same draws: checkpointed RNG resumes either path
    assert not DeviceDataset.fits(images, CPU)  # auto: on CUDA only


def test_training_on_device_data_is_identical_and_resumes_exactly(data16: Path, tmp_path: Path) -> None:
    base = {"z_dim": 8, "seed": 2, "checkpoint_every": 1.0, "diffaug": True}  # otherwise TINY_RUN
    train_tiny(data16, tmp_path / "memmap", kimg=0.048, data_on_device=False, **base)
    train_tiny(data16, tmp_path / "device", kimg=0.024, data_on_device=True, **base)
    second = train_tiny(data16, tmp_path / "device", kimg=0.048, data_on_device=True, **base)
    assert second.resumed
    a = torch.load(tmp_path / "memmap" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "device" / "checkpoint.pt", weights_only=True)
    for net in ("G", "D", "G_ema"):
        for key, ta in a[net].items():
            assert torch.equal(ta, b[net][key]), f"{net}.{key}"


# --- 8. torch.compile ---------------------------------------------------------------------------------------------


def test_compile_compiles_on_cpu_and_matches_eager(data16: Path, tmp_path: Path, caplog) -> None:
    """--compile really compiles here (inductor's C++ backend on CPU; the fallback has its own test below), and the
    compiled G and D compute what the eager ones do, as does a short compiled training run."""
    from torch._dynamo.utils import counters

    caplog.set_level(logging.INFO, logger="ganime_steps.gan.loop")
    graphs = counters["stats"]["unique_graphs"]
    cfg = _cfg("dcgan", kimg=0.016, compile=True)
    tr = Trainer(cfg, data=data16, out=tmp_path / "c", device=CPU)
    assert tr.compiled, [r.getMessage() for r in caplog.records if "compile" in r.getMessage()]
    assert counters["stats"]["unique_graphs"] >= graphs + 2  # dynamo captured G and D (not a disabled no-op wrapper)
    assert tr.g_fwd is not tr.G and tr.d_fwd is not tr.D and "G and D compiled" in caplog.text
    z = torch.randn(cfg.batch_size, cfg.z_dim, generator=torch.Generator().manual_seed(3))
    fake_c, fake_e = tr.g_fwd(z), tr.G(z)  # grad mode and batch as the warm-up: no recompile
    torch.testing.assert_close(fake_c, fake_e, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(tr.d_fwd(fake_e), tr.D(fake_e), rtol=1e-4, atol=1e-5)
    res = tr.train()
    ref = Trainer(_cfg("dcgan", kimg=0.016), data=data16, out=tmp_path / "eager", device=CPU).train()
    assert res.step == ref.step == 2
    for key in ("loss_d", "loss_g"):
        assert np.isfinite(res.last_log[key]) and res.last_log[key] == pytest.approx(ref.last_log[key], rel=1e-3), key


def test_compile_failure_falls_back_to_eager_with_one_warning(data16: Path, tmp_path: Path, monkeypatch, caplog):
    def broken(*a, **k):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    ref = Trainer(_cfg("dcgan", kimg=0.016), data=data16, out=tmp_path / "eager", device=CPU).train()
    caplog.set_level(logging.WARNING, logger="ganime_steps.gan.loop")
    tr = Trainer(_cfg("dcgan", kimg=0.016, compile=True), data=data16, out=tmp_path / "c", device=CPU)
    assert not tr.compiled and tr.g_fwd is tr.G
    assert sum("--compile failed" in r.getMessage() for r in caplog.records) == 1
    res = tr.train()
    assert res.last_log["loss_g"] == ref.last_log["loss_g"]  # the fallback is exactly the eager run
    # progressive families are not compiled (lod changes every fade-in step), with a warning
    caplog.clear()
    tr = Trainer(
        _cfg("progan", resolution=16, start_resolution=8, compile=True),
        data=write_disc_dataset(tmp_path / "d16.npy", 16),
        out=tmp_path / "p",
        device=CPU,
    )
    assert not tr.compiled and any("--compile ignored" in r.getMessage() for r in caplog.records)


# --- StyleGAN's instance norm keeps channels_last -----------------------------------------------------------------


def test_style_instance_norm_keeps_memory_format_and_matches_torch() -> None:
    from ganime_steps.gan.stylegan import instance_norm

    x = (torch.randn(3, 8, 16, 16) * 5 + 2).contiguous(memory_format=torch.channels_last)
    y = instance_norm(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert not F.instance_norm(x, eps=1e-8).is_contiguous(memory_format=torch.channels_last)  # the old cost
    assert torch.allclose(y, F.instance_norm(x.contiguous(), eps=1e-8), atol=1e-5)
    assert instance_norm(x.bfloat16()).dtype == torch.bfloat16


def test_prefetch_loader_draws_exactly_the_memmap_batches(data16: Path) -> None:
    from ganime_steps.gan.data import PrefetchLoader

    images = load_dataset(data16, 16)
    loader = PrefetchLoader(images, CPU)
    a, b = np.random.default_rng(7), np.random.default_rng(7)
    for bs in (8, 8, 8, 5, 5, 8):  # a batch-size change (new phase) rewinds the read-ahead draw
        state = loader.rng_state(a)
        assert state == b.bit_generator.state  # what a checkpoint stores: the state before any read-ahead
        assert torch.equal(loader.sample(a, bs, False), sample_real(images, b, bs, CPU, False))
    assert a.bit_generator.state != b.bit_generator.state  # one batch read ahead ...
    assert loader.rng_state(a) == b.bit_generator.state  # ... and not counted as drawn


def test_training_with_prefetch_is_identical_and_resumes_exactly(data16: Path, tmp_path: Path) -> None:
    from ganime_steps.gan.data import PrefetchLoader

    def run(out: Path, kimg: float, prefetch: bool) -> None:
        tr = Trainer(_cfg("dcgan", kimg=kimg, diffaug=True, seed=4), data=data16, out=out, device=CPU)
        if prefetch:  # the CUDA path for a set larger than the device, forced here
            tr.reals.prefetch = PrefetchLoader(tr.images, CPU)
        tr.train()

    run(tmp_path / "plain", 0.048, False)
    run(tmp_path / "pre", 0.024, True)
    run(tmp_path / "pre", 0.048, True)
    a = torch.load(tmp_path / "plain" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "pre" / "checkpoint.pt", weights_only=True)
    assert a["rng"]["numpy"] == b["rng"]["numpy"]
    for net in ("G", "D", "G_ema"):
        for key, ta in a[net].items():
            assert torch.equal(ta, b[net][key]), f"{net}.{key}"


# --- the device benchmark's smoke mode ---------------------------------------------------------------------------


def test_device_benchmark_smoke_runs_on_cpu(tmp_path: Path) -> None:
    """`python -m benchmarks gpu --smoke` (the repository root is not importable from the tests: a subprocess)."""
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "gpu", "--smoke", "--out", str(tmp_path)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((tmp_path / "gpu.json").read_text())["rows"]
    assert [r["family"] for r in rows] == ["stylegan", "dcgan"]
    for r in rows:
        assert r["img_per_s"] > 0 and r["s_per_kimg"] == pytest.approx(1000 / r["img_per_s"], rel=0.01)
        assert r["iterations"] == 2
