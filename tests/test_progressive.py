"""ProGAN / StyleGAN: growth schedule, fade-in transitions, layers, style mixing and truncation, training across
phases, exact resume inside a fade-in, export and the style-mixing grid."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import read_log, train_tiny, write_disc_dataset
from PIL import Image

from ganime_steps import generate, train
from ganime_steps.common import GanimeError
from ganime_steps.gan import NetConfig, generate_images, latents_for_seeds, load_generator, synthesize
from ganime_steps.gan.networks import build_networks, export_generator, noise_seeds_for
from ganime_steps.gan.progressive import (
    EqConv2d,
    GrowthSchedule,
    Phase,
    minibatch_stddev,
    parse_batch_schedule,
    pixel_norm,
    prog_widths,
    resize_reals,
)

torch.set_num_threads(1)

RES = 32


def _cfg(arch: str, resolution: int = 16, channels: int = 4, z_dim: int = 8) -> NetConfig:
    return NetConfig(resolution=resolution, z_dim=z_dim, channels=channels, arch=arch, g_norm="none", d_norm="none")


# --- schedule -----------------------------------------------------------------------------------------------------


def test_schedule_phases_alpha_lod_and_batch() -> None:
    s = GrowthSchedule(32, 8, stable_kimg=1.0, fade_kimg=2.0, batch_size=16, batch_schedule={8: 64})
    p = s.at(0)
    assert (p.name, p.resolution, p.alpha, p.lod, p.batch_size) == ("stable", 8, 1.0, 2.0, 64)
    assert s.at(999).key == (8, "stable")
    p = s.at(1500)  # a quarter into the fade-in to 16
    assert (p.name, p.resolution, p.lod, p.batch_size) == ("fade", 16, 1.75, 16)
    assert p.alpha == pytest.approx(0.25)
    assert s.at(3000).key == (16, "stable") and s.at(3000).lod == 1.0
    assert s.at(5000).key == (32, "fade") and s.at(5000).alpha == pytest.approx(0.5)
    assert s.at(6000).key == (32, "stable") and s.at(10**7).lod == 0.0  # the last resolution stays stable
    assert s.full_resolution_at_kimg() == 6.0
    # iterations: 0..999 at batch 64 (16 iterations reach 1024), then batch 16
    assert s.iterations(0, 1024) == 16 and s.iterations(0, 1040) == 17
    # a non-progressive run is one stable phase
    flat = GrowthSchedule(32, 32, 600, 600, batch_size=8)
    assert flat.at(123456).key == (32, "stable") and flat.iterations(0, 80) == 10


def test_schedule_errors() -> None:
    with pytest.raises(GanimeError, match="--start-resolution 12"):
        GrowthSchedule(32, 12, 1, 1, 8)
    with pytest.raises(GanimeError, match="--start-resolution 64"):
        GrowthSchedule(32, 64, 1, 1, 8)
    assert parse_batch_schedule("8:128, 16:64") == {8: 128, 16: 64} and parse_batch_schedule("") == {}
    for bad in ("8-128", "12:4", "8:0", "x"):
        with pytest.raises(GanimeError, match="--batch-schedule"):
            parse_batch_schedule(bad)


def test_resize_reals_downsamples_and_blends() -> None:
    x = torch.rand(2, 3, 32, 32)
    stable = resize_reals(x, Phase("stable", 16, 1.0, 1.0, 2))
    assert torch.allclose(stable, F.avg_pool2d(x, 2))
    start = resize_reals(x, Phase("fade", 32, 0.0, 1.0, 2))  # alpha 0: exactly the coarser images, upsampled
    assert torch.allclose(start, F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="nearest"))
    half = resize_reals(x, Phase("fade", 32, 0.5, 0.5, 2))
    assert torch.allclose(half, 0.5 * (start + x))


# --- layers -------------------------------------------------------------------------------------------------------


def test_equalized_lr_pixel_norm_and_minibatch_stddev() -> None:
    torch.manual_seed(0)
    conv = EqConv2d(64, 8, 3)
    assert conv.weight.std().item() == pytest.approx(1.0, abs=0.05)  # N(0, 1) storage ...
    assert conv.scale == pytest.approx(math.sqrt(2) / math.sqrt(64 * 9))  # ... He scale applied at runtime
    x = torch.randn(4, 16, 3, 3) * 7
    assert torch.allclose(pixel_norm(x).square().mean(1), torch.ones(4, 3, 3), atol=1e-4)
    y = minibatch_stddev(torch.arange(8.0).view(8, 1, 1, 1).expand(8, 2, 2, 2).contiguous(), group_size=4)
    assert y.shape == (8, 3, 2, 2)
    # groups hold samples (i, i+2, i+4, i+6): values i + {0, 2, 4, 6}: population std sqrt(5)
    assert torch.allclose(y[:, 2], torch.full((8, 2, 2), math.sqrt(5.0)), atol=1e-4)
    assert minibatch_stddev(torch.randn(6, 2, 2, 2)).shape == (6, 3, 2, 2)  # 6 is not a multiple of 4: groups of 3


def test_widths_double_toward_4x4_with_cap() -> None:
    assert prog_widths(128, 64) == {4: 512, 8: 512, 16: 512, 32: 256, 64: 128, 128: 64}
    assert prog_widths(16, 4) == {4: 16, 8: 8, 16: 4}


# --- networks and transitions -------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["progan", "stylegan"])
@pytest.mark.parametrize("resolution", [16, 32])
def test_shapes_at_every_lod(arch: str, resolution: int) -> None:
    torch.manual_seed(0)
    G, D = build_networks(_cfg(arch, resolution))
    z = torch.randn(4, 8)
    for lod in (2.0, 1.5, 1.0, 0.25, 0.0):
        G.set_lod(lod)
        D.set_lod(lod)
        cur = resolution >> math.floor(lod)
        x = G(z, native=True)
        assert x.shape == (4, 3, cur, cur)
        assert G(z).shape == (4, 3, resolution, resolution)  # always full size unless native
        out = D(x)
        assert out.shape == (4,) and torch.isfinite(out).all()
        out.sum().backward()


@pytest.mark.parametrize("arch", ["progan", "stylegan"])
def test_fade_in_starts_exactly_where_the_stable_phase_ended(arch: str) -> None:
    """alpha -> 0 at the start of a fade-in: G's new output equals the old one upsampled; D's score equals its
    score of the downsampled image. That is what makes the transition smooth."""
    torch.manual_seed(0)
    G, D = build_networks(_cfg(arch, 32))
    G.eval()  # StyleGAN: fixed noise, no style mixing
    z = torch.randn(3, 8)
    G.set_lod(1.0)  # stable at 16
    before = G(z)  # 16 px, upsampled to 32
    G.set_lod(1.0 - 1e-6)  # fade into 32, alpha = 1e-6
    after = G(z, native=True)
    assert after.shape == before.shape and torch.allclose(after, before, atol=1e-4)
    G.set_lod(0.5)
    assert (G(z) - before).abs().max() > 1e-3  # halfway, the new block shows

    x = torch.randn(4, 3, 32, 32)
    D.set_lod(1.0)
    d_before = D(F.avg_pool2d(x, 2))
    D.set_lod(1.0 - 1e-6)
    assert torch.allclose(D(x), d_before, atol=1e-4)


def test_stylegan_mapping_noise_mixing_truncation() -> None:
    torch.manual_seed(0)
    G, _ = build_networks(_cfg("stylegan", 16))
    assert G.num_layers == 6 and len(G.mapping.layers) == 8
    z = torch.randn(5, 8)
    G.train()
    G.style_mixing = 1.0
    ws = G.map(z)
    assert ws.shape == (5, 6, 8)
    assert not torch.equal(ws[:, 0], ws[:, -1])  # always mixed: the last layer comes from another latent
    assert G.w_avg.abs().sum() > 0  # tracked in training mode
    G.style_mixing = 0.0
    assert torch.equal(G.map(z)[:, 0], G.map(z)[:, -1])
    w_avg = G.w_avg.clone()
    G.eval()
    G.map(z)
    assert torch.equal(G.w_avg, w_avg)  # not in eval mode
    # eval: fixed noise -> deterministic; truncation psi 0 on all layers -> every image is the mean-W image
    assert torch.equal(G(z), G(z))
    G.truncation_cutoff = G.num_layers
    flat = G(z, truncation=0.0)
    assert torch.allclose(flat, flat[:1].expand_as(flat), atol=1e-5)
    G.train()
    G.style_mixing = 0.0
    assert torch.equal(G(z), G(z))  # noise strengths start at 0 (as published) ...
    for m in G.modules():
        if hasattr(m, "noise_strength"):
            m.noise_strength.data.fill_(1.0)
    assert not torch.equal(G(z), G(z))  # ... and once learned, training mode draws fresh noise
    G.eval()
    # truncation only moves the first `cutoff` layers, toward w_avg
    ws = G.map(z)
    t = G.truncate(ws, 0.5, cutoff=2)
    assert torch.allclose(t[:, :2], G.w_avg + 0.5 * (ws[:, :2] - G.w_avg)) and torch.equal(t[:, 2:], ws[:, 2:])


def test_style_mixing_takes_the_layers_below_the_crossover_from_z_and_the_rest_from_one_other_latent() -> None:
    torch.manual_seed(0)
    G, _ = build_networks(_cfg("stylegan", 16))
    G.train()
    G.style_mixing = 1.0
    z = torch.randn(5, 8)
    with torch.no_grad():
        w1 = G.mapping(z)
    for lod in (0.0, 1.0):  # full resolution (6 style layers), then 8 px (4 active layers)
        G.set_lod(lod)
        active = G.active_layers()
        cutoffs = set()
        for seed in range(40):
            torch.manual_seed(seed)
            ws = G.map(z).detach()
            own = [torch.allclose(ws[:, i], w1) for i in range(G.num_layers)]
            cut = own.index(False)
            assert cut >= 1 and all(own[:cut]) and not any(own[cut:]), own  # coarse layers: z's own w
            w2 = ws[:, cut]
            assert all(torch.equal(ws[:, i], w2) for i in range(cut, G.num_layers))  # the rest: one other w
            assert not torch.allclose(w2[0], w2[1])  # another latent per image, not one shared w
            cutoffs.add(cut)
        assert cutoffs == set(range(1, active)), (lod, cutoffs)  # every crossover among the active layers


def _noisy_stylegan(resolution: int = 16):
    torch.manual_seed(0)
    G, _ = build_networks(_cfg("stylegan", resolution))
    for m in G.modules():
        if hasattr(m, "noise_strength"):
            m.noise_strength.data.fill_(0.5)  # as if learned: noise shows in the images
    return G.eval()


def test_stylegan_fresh_noise_per_image_for_evaluation() -> None:
    """Evaluation (generate_images) draws fresh noise maps per image, reproducibly from the seed; the fixed maps
    stay available for grids."""
    G = _noisy_stylegan()
    z = latents_for_seeds([7, 7, 7], 8)  # one latent, three times
    const = synthesize(G, z)
    assert np.array_equal(const[0], const[1])  # fixed noise: same latent, same image
    fresh = synthesize(G, z, noise_seeds=[1, 2, 1])
    assert not np.array_equal(fresh[0], fresh[1]) and np.array_equal(fresh[0], fresh[2])
    assert not np.array_equal(fresh[0], const[0])
    assert np.array_equal(synthesize(G, z[1:2], noise_seeds=[2])[0], fresh[1])  # per image: batch-independent
    a = generate_images(G, 6, seed=3)
    assert np.array_equal(a, generate_images(G, 6, seed=3))  # same seed, same batch
    assert np.abs(a.astype(int) - generate_images(G, 6, seed=3, batch_size=4).astype(int)).max() <= 1
    assert not np.array_equal(a, generate_images(G, 6, seed=4))
    c = generate_images(G, 6, seed=3, noise="const")
    assert not np.array_equal(a, c) and np.array_equal(c, generate_images(G, 6, seed=3, noise="const"))
    maps = G.seeded_noise([5, 6])
    assert [tuple(m.shape) for m in maps] == [(2, 1, s, s) for s in (4, 4, 8, 8, 16, 16)]
    G.set_lod(1.0)  # noise of an image does not depend on the current lod either
    assert all(torch.equal(x, y) for x, y in zip(maps, G.seeded_noise([5, 6]), strict=True))
    with pytest.raises(GanimeError, match="--noise"):
        generate_images(G, 2, seed=0, noise="fresh")
    # without noise inputs (ProGAN) the option changes nothing
    P, _ = build_networks(_cfg("progan", 16))
    assert np.array_equal(generate_images(P.eval(), 3, seed=1), generate_images(P, 3, seed=1, noise="const"))


def test_generate_cli_noise_flag(tmp_path: Path) -> None:
    G = _noisy_stylegan()
    gen = tmp_path / "g.pt"
    export_generator(gen, G, G.cfg)
    grids = {}
    for name, extra in (("const", []), ("random", ["--noise", "random"]), ("random2", ["--noise", "random"])):
        out = tmp_path / f"{name}.png"
        assert generate.main(["--checkpoint", str(gen), "--seeds", "0-3", "--out", str(out), *extra]) == 0
        with Image.open(out) as im:
            grids[name] = np.asarray(im)
    assert np.array_equal(grids["random"], grids["random2"]) and not np.array_equal(grids["random"], grids["const"])
    mix = generate.style_mix_images(G, [0], [5], [0, 1], noise="random")
    assert np.array_equal(mix[2], synthesize(G, latents_for_seeds([0], 8), noise_seeds=noise_seeds_for([0]))[0])
    with pytest.raises(SystemExit):
        generate.main(["--checkpoint", str(gen), "--out", str(tmp_path / "x.png"), "--noise", "fresh"])


def test_bf16_autocast_forward_backward() -> None:
    torch.manual_seed(0)
    for arch in ("progan", "stylegan"):
        G, D = build_networks(_cfg(arch, 16))
        for net in (G, D):
            net.set_lod(0.5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = D(G(torch.randn(4, 8), native=True)).float()
        out.sum().backward()
        assert torch.isfinite(out).all() and all(
            torch.isfinite(p.grad).all() for p in G.parameters() if p.grad is not None
        )


@pytest.mark.parametrize("arch", ["progan", "stylegan"])
def test_export_round_trip_keeps_lod_and_w_avg(arch: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = _cfg(arch, 16)
    G, _ = build_networks(cfg)
    if arch == "stylegan":
        G.train()
        G.map(torch.randn(16, 8))  # a non-zero w_avg
    G.set_lod(1.0)  # trained only to 8 px
    G.eval()
    path = tmp_path / "generator.pt"
    export_generator(path, G, cfg)
    G2 = load_generator(path)
    assert type(G2) is type(G) and G2.current() == (8, 1.0)
    a, b = generate_images(G, 4, seed=3, truncation=0.7), generate_images(G2, 4, seed=3, truncation=0.7)
    assert a.shape == (4, 16, 16, 3) and np.array_equal(a, b)
    assert (a[:, ::2, ::2] == a[:, 1::2, 1::2]).all()  # an 8 px image upsampled by 2
    if arch == "stylegan":
        assert torch.equal(G2.w_avg, G.w_avg) and G2.w_avg.abs().sum() > 0
        assert not np.array_equal(a, generate_images(G2, 4, seed=3, truncation=1.0))


# --- training -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_disc_dataset(tmp_path_factory.mktemp("data") / "train_32.npy", RES)


# Progressive growth on top of the tiny run: a StyleGAN from 8 to 32 px, 16 images a phase, 32 a fade.
GROWING = {
    "family": "stylegan",
    "resolution": RES,
    "kimg": 0.096,
    "channels": 4,
    "z_dim": 8,
    "checkpoint_every": 1.0,
    "start_resolution": 8,
    "stable_kimg": 0.016,
    "fade_kimg": 0.032,
}


def _run(data: Path, out: Path, **kw) -> train.TrainSummary:
    return train_tiny(data, out, **{**GROWING, **kw})


@pytest.mark.parametrize("family", ["progan", "stylegan"])
def test_trains_through_every_phase(data: Path, tmp_path: Path, family: str) -> None:
    s = _run(data, tmp_path, family=family, kimg=0.112, batch_schedule="8:16")
    rows = read_log(tmp_path)
    assert all(math.isfinite(float(r[c])) for r in rows for c in ("loss_g", "loss_d", "penalty"))
    phases = [(r["phase"], int(r["resolution"])) for r in rows]
    # images 0-31 at 8 px (batch 16; alpha 0 at 16 is still the 8 px network), fade to 16 until 48, stable 16,
    # fade to 32 from 64 (alpha > 0 from 72), stable 32 from 96
    assert phases[0] == ("stable", 8) and phases[-1] == ("stable", 32)
    assert ("fade", 16) in phases and ("stable", 16) in phases and ("fade", 32) in phases
    alphas = [float(r["alpha"]) for r in rows if r["phase"] == "fade"]
    assert all(0 <= a < 1 for a in alphas) and len(set(alphas)) > 1
    lods = [float(r["lod"]) for r in rows]
    assert lods == sorted(lods, reverse=True) and lods[0] == 2.0 and lods[-1] == 0.0
    assert s.current_resolution == RES and s.phase == "stable" and s.images_seen == 112
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ck["phase"]["resolution"] == RES and ck["phase_key"] == [RES, "stable"]
    # Adam state was reset when the last phase began (at 96 images): 2 steps since, not all 12
    assert s.step == 12
    steps = {int(st["step"]) for st in ck["opt_g"]["state"].values()}
    assert steps == {2}, steps
    imgs = generate_images(load_generator(tmp_path / "generator.pt"), 2, seed=0)
    assert imgs.shape == (2, RES, RES, 3)
    with Image.open(tmp_path / "samples.png") as im:
        assert im.size == (8 * (RES + 2) + 2,) * 2


@pytest.mark.parametrize("family", ["progan", "stylegan"])
def test_resume_inside_a_fade_in_is_exact(data: Path, tmp_path: Path, family: str) -> None:
    full, part = tmp_path / "full", tmp_path / "part"
    _run(data, full, family=family, diffaug=True)
    first = _run(data, part, family=family, kimg=0.032, diffaug=True)
    assert first.phase == "fade" and 0 < first.alpha < 1  # stopped inside the fade-in to 16 px
    second = _run(data, part, family=family, diffaug=True)
    assert second.resumed and second.images_this_run == 64
    a = torch.load(full / "checkpoint.pt", weights_only=True)
    b = torch.load(part / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == 12 and a["phase"] == b["phase"] and a["phase"]["name"] == "fade"
    for net in ("G_ema", "G", "D"):
        for key, ta in a[net].items():
            assert torch.equal(ta, b[net][key]), f"{net}.{key} differs after resume"
    assert [r["loss_d"] for r in read_log(full)] == [r["loss_d"] for r in read_log(part)]


def test_cli_progressive_flags_and_style_mix_grid(data: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    argv = ["--data", str(data), "--out", str(out), "--family", "stylegan", "--resolution", "32", "--kimg", "0.04"]
    argv += ["--batch-size", "8", "--channels", "4", "--z-dim", "8", "--device", "cpu", "--start-resolution", "16"]
    argv += ["--stable-kimg", "0.016", "--fade-kimg", "0.016", "--batch-schedule", "16:8,32:4"]
    assert train.main(argv) == 0
    rows = read_log(out)
    assert [r["resolution"] for r in rows][:2] == ["16", "16"] and rows[-1]["resolution"] == "32"
    gen = out / "generator.pt"
    grid = tmp_path / "mix.png"
    rc = generate.main(
        ["--checkpoint", str(gen), "--style-mix", "0-2", "5-8", "--out", str(grid), "--truncation", "0.7"]
    )
    assert rc == 0
    with Image.open(grid) as im:  # (1 + 3 rows) x (1 + 4 columns) tiles of 32 px, 2 px padding
        assert im.size == (5 * 34 + 2, 4 * 34 + 2)
        px = np.asarray(im)
    assert (px[2:34, 2:34] == 255).all()  # blank corner
    assert generate.main(["--checkpoint", str(gen), "--seeds", "0-63", "--truncation", "0.7", "--out", str(grid)]) == 0
    # a mixed cell differs from its row's own image; the row image is the plain seed image
    G = load_generator(gen)
    tiles = generate.style_mix_images(G, [0], [5], [0, 1])
    assert tiles.shape == (4, 32, 32, 3) and np.array_equal(tiles[2], generate_images_for_seed(G, 0))
    assert not np.array_equal(tiles[2], tiles[3])
    # which layers come from which latent: the mixed w is the row's w with layers 0-1 taken from the column's
    seen = []
    synthesis = G.synthesis
    G.synthesis = lambda ws, **kw: seen.append(ws.detach().clone()) or synthesis(ws, **kw)
    generate.style_mix_images(G, [0], [5], [0, 1])
    w_row, w_col = (G.map(latents_for_seeds([s], G.z_dim))[0] for s in (0, 5))
    mixed = seen[-1][1]  # the row's second image: row 0 mixed with column 5
    assert torch.equal(mixed[:2], w_col[:2]) and torch.equal(mixed[2:], w_row[2:])
    assert not torch.equal(w_row[:2], w_col[:2])
    assert (
        generate.main(["--checkpoint", str(gen), "--style-mix", "0", "1", "--mix-layers", "99", "--out", str(grid)])
        == 2
    )
    assert "--mix-layers" in capsys.readouterr().err


def generate_images_for_seed(G, seed: int) -> np.ndarray:
    from ganime_steps.gan import latents_for_seeds, synthesize

    return synthesize(G, latents_for_seeds([seed], G.z_dim))[0]


def test_style_mix_refuses_other_families(tmp_path: Path, capsys) -> None:
    torch.manual_seed(0)
    cfg = _cfg("progan", 16)
    G, _ = build_networks(cfg)
    export_generator(tmp_path / "g.pt", G.eval(), cfg)
    argv = ["--checkpoint", str(tmp_path / "g.pt"), "--style-mix", "0", "1", "--out", str(tmp_path / "m.png")]
    assert generate.main(argv) == 2
    assert "not a StyleGAN generator" in capsys.readouterr().err
