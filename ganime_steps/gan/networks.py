"""Network configs for every family, the DCGAN-style networks, and export / load / sampling for all of them.

``NetConfig.arch`` picks the architecture: ``dcgan`` (below; DCGAN, WGAN-GP, DRAGAN, SNGAN differ only in
normalisation), ``progan`` (:mod:`ganime_steps.gan.progressive`), ``stylegan`` (:mod:`ganime_steps.gan.stylegan`)
or ``projected`` (:mod:`ganime_steps.gan.projected`).

DCGAN-style generator and discriminator for square images of 16..256 px (powers of two).

Widths: ``channels`` is the width of the last hidden layer (the highest resolution). Toward 4x4 the width doubles
per halving of resolution, capped at 8 x ``channels`` (DCGAN's ``ngf * 8``); read from the 4x4 end, the width is
halved per upsample with ``channels`` as the floor. At 64 px and channels 64 this is exactly DCGAN (512-256-128-64).
The discriminator mirrors it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from ganime_steps.checkpoints import load_torch_file
from ganime_steps.common import GanimeError, torch_device, torch_save

log = logging.getLogger(__name__)

MIN_RESOLUTION = 16
MAX_RESOLUTION = 256
WIDTH_CAP = 8  # widest layer = WIDTH_CAP * channels
G_NORMS = ("batch", "none")
D_NORMS = ("batch", "layer", "none", "spectral")
UPSAMPLES = ("deconv", "nearest")
ARCHS = ("dcgan", "progan", "stylegan", "projected")
PROGRESSIVE_ARCHS = ("progan", "stylegan")


@dataclass(frozen=True)
class NetConfig:
    """Everything needed to rebuild G and D; stored in checkpoints and in generator.pt."""

    resolution: int = 64
    z_dim: int = 100
    channels: int = 64
    g_norm: str = "batch"  # batch | none
    d_norm: str = "batch"  # batch | layer | none | spectral
    upsample: str = "deconv"  # deconv (ConvTranspose 4x4 s2) | nearest (nearest x2 + conv 3x3, no checkerboard)
    arch: str = "dcgan"  # dcgan | progan | stylegan | projected
    # StyleGAN only:
    mapping_layers: int = 8
    style_mixing: float = 0.9  # probability of mixing two latents per training minibatch
    truncation_cutoff: int = 8  # truncation applies to the first N style layers (coarse styles)
    # Projected only: images are resized to this size before D's pretrained feature network
    feature_resolution: int = 64

    def __post_init__(self) -> None:
        r = self.resolution
        if r < MIN_RESOLUTION or r > MAX_RESOLUTION or r & (r - 1):
            raise GanimeError(
                f"--resolution {r}: must be a power of two from {MIN_RESOLUTION} to {MAX_RESOLUTION}; pick e.g. 64"
            )
        if self.channels < 1:
            raise GanimeError(f"--channels {self.channels}: must be >= 1; use e.g. 64")
        if self.z_dim < 1:
            raise GanimeError(f"--z-dim {self.z_dim}: must be >= 1; use e.g. 100")
        if self.g_norm not in G_NORMS or self.d_norm not in D_NORMS or self.upsample not in UPSAMPLES:
            raise GanimeError(f"network config {self}: unknown g_norm/d_norm/upsample option")
        if self.arch not in ARCHS or self.mapping_layers < 1 or not 0 <= self.style_mixing <= 1:
            raise GanimeError(f"network config {self}: unknown arch or bad StyleGAN option")
        if self.arch == "projected" and (self.feature_resolution < 64 or self.feature_resolution % 32):
            raise GanimeError(
                f"--feature-resolution {self.feature_resolution}: must be a multiple of 32, at least 64; use e.g. 64"
            )

    @property
    def progressive(self) -> bool:
        return self.arch in PROGRESSIVE_ARCHS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetConfig:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def widths(cfg: NetConfig) -> list[tuple[int, int]]:
    """(resolution, width) of every hidden feature map, 4x4 first, resolution/2 last."""
    out = []
    r = 4
    while r < cfg.resolution:
        factor = min((cfg.resolution // 2) // r, WIDTH_CAP)
        out.append((r, cfg.channels * factor))
        r *= 2
    return out


def _init_dcgan(module: nn.Module) -> None:
    """DCGAN init: conv weights N(0, 0.02), norm scales N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class Generator(nn.Module):
    """z (B, z_dim) -> 4x4 -> upsample blocks -> (B, 3, R, R) in [-1, 1]."""

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.z_dim = cfg.z_dim
        self.resolution = cfg.resolution
        ws = [w for _, w in widths(cfg)]
        bias = cfg.g_norm == "none"  # a bias before batch-norm is redundant

        def norm(c: int) -> nn.Module:
            return nn.BatchNorm2d(c) if cfg.g_norm == "batch" else nn.Identity()

        layers: list[nn.Module] = [nn.ConvTranspose2d(cfg.z_dim, ws[0], 4, 1, 0, bias=bias), norm(ws[0]), nn.ReLU(True)]
        for c_in, c_out in pairwise(ws):
            layers += [self._up(c_in, c_out, bias), norm(c_out), nn.ReLU(True)]
        layers += [self._up(ws[-1], 3, True), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        _init_dcgan(self)

    def _up(self, c_in: int, c_out: int, bias: bool) -> nn.Module:
        if self.cfg.upsample == "deconv":
            return nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=bias)
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, 1, 1, bias=bias))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(z.shape[0], self.z_dim, 1, 1))


class Discriminator(nn.Module):
    """(B, 3, R, R) -> strided convs down to 4x4 -> 4x4 conv -> one logit per image (B,)."""

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.resolution = cfg.resolution
        ws = [w for _, w in reversed(widths(cfg))]  # resolution/2 first, 4x4 last

        def norm(c: int) -> nn.Module:
            if cfg.d_norm == "batch":
                return nn.BatchNorm2d(c)
            if cfg.d_norm == "layer":  # normalise over (C, H, W) per sample: the WGAN-GP "layer norm"
                return nn.GroupNorm(1, c)
            return nn.Identity()

        # DCGAN: no normalisation on the first layer (it sees raw pixels).
        layers: list[nn.Module] = [nn.Conv2d(3, ws[0], 4, 2, 1), nn.LeakyReLU(0.2, True)]
        for c_in, c_out in pairwise(ws):
            layers += [
                nn.Conv2d(c_in, c_out, 4, 2, 1, bias=cfg.d_norm != "batch"),
                norm(c_out),
                nn.LeakyReLU(0.2, True),
            ]
        layers += [nn.Conv2d(ws[-1], 1, 4, 1, 0)]
        self.net = nn.Sequential(*layers)
        _init_dcgan(self)
        self._sn_layers: list[nn.Module] = []
        if cfg.d_norm == "spectral":
            # After init: spectral_norm re-parametrises the weight, so it must wrap the initialised tensor.
            for m in self.net.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.utils.parametrizations.spectral_norm(m)
                    self._sn_layers.append(m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dev = x.device.type
        if self._sn_layers and torch.is_autocast_enabled(dev):
            # Under CUDA autocast the power iteration's mv runs in low precision while its u/v buffers stay fp32,
            # and vdot refuses mixed dtypes: compute the normalised weights in fp32 once, then reuse them.
            with parametrize.cached():
                with torch.autocast(dev, enabled=False):
                    for m in self._sn_layers:
                        m.weight  # noqa: B018 - fills the cache
                return self.net(x).flatten()
        return self.net(x).flatten()


def build_generator(cfg: NetConfig) -> nn.Module:
    if cfg.arch == "progan":
        from ganime_steps.gan.progressive import ProGenerator

        return ProGenerator(cfg)
    if cfg.arch == "stylegan":
        from ganime_steps.gan.stylegan import StyleGenerator

        return StyleGenerator(cfg)
    if cfg.arch == "projected":
        from ganime_steps.gan.projected import FastGenerator

        return FastGenerator(cfg)
    return Generator(cfg)


def build_discriminator(cfg: NetConfig, feature_weights: str | None = None) -> nn.Module:
    """``feature_weights`` (projected only): the converted EfficientNet-Lite0 file for D's frozen feature network;
    None looks it up (:func:`ganime_steps.backbones.verified_weights`), "" leaves it random (a checkpoint follows)."""
    if cfg.arch == "projected":
        from ganime_steps.gan.projected import ProjectedDiscriminator

        return ProjectedDiscriminator(cfg, feature_weights)
    if cfg.progressive:
        from ganime_steps.gan.progressive import ProDiscriminator

        return ProDiscriminator(cfg, blur=cfg.arch == "stylegan")
    return Discriminator(cfg)


def build_networks(cfg: NetConfig, feature_weights: str | None = None) -> tuple[nn.Module, nn.Module]:
    """G then D (in this order, so weight init draws from the global RNG deterministically)."""
    G = build_generator(cfg)
    return G, build_discriminator(cfg, feature_weights)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- export / load / sample (the evaluate stage depends on these) -------------------------------------------------

GENERATOR_FORMAT = "ganime-generator/1"
CHECKPOINT_FORMAT = "ganime-gan-checkpoint/1"


def images_to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> uint8 (B, H, W, 3) on the CPU."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def export_generator(path: Path, G: nn.Module, cfg: NetConfig, extra: dict[str, Any] | None = None) -> None:
    """Write G's weights with the config that rebuilds it (CPU tensors, plain layout)."""
    state = {k: v.detach().cpu().contiguous() for k, v in G.state_dict().items()}
    torch_save(path, {"format": GENERATOR_FORMAT, "net": cfg.to_dict(), "state_dict": state, **(extra or {})})


def load_generator(path: str | Path, device: str = "cpu") -> nn.Module:
    """Rebuild a generator from ``generator.pt`` (or the G_ema inside a ``checkpoint.pt``), in eval mode."""
    path = Path(path)
    obj = load_torch_file(path, what="generator file", made_by="the train stage")
    fmt = obj.get("format")
    if fmt == GENERATOR_FORMAT:
        state = obj.get("state_dict")
    elif fmt == CHECKPOINT_FORMAT:
        state = obj.get("G_ema")
    else:
        raise GanimeError(f"{path}: not a ganime generator.pt or checkpoint.pt; point to the train stage's output")
    try:
        G = build_generator(NetConfig.from_dict(obj["net"]))
        G.load_state_dict(state)
    except (KeyError, TypeError, RuntimeError) as exc:
        raise GanimeError(f"{path}: weights do not match the stored config ({exc}); rerun the train stage") from exc
    return G.to(torch_device(device)).eval().requires_grad_(False)


def latents_for_seeds(seeds: list[int], z_dim: int) -> torch.Tensor:
    """One latent per seed (the StyleGAN convention): the image for seed s never depends on the other seeds."""
    return torch.stack([torch.randn(z_dim, generator=torch.Generator().manual_seed(s)) for s in seeds])


# --- batch-norm statistics of an averaged generator ---------------------------------------------------------------

BN_RECALIBRATION_SAMPLES = 512
BN_RECALIBRATION_BATCH = 128


def batch_norm_layers(G: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in G.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recalibrate_batch_norm(
    G: nn.Module, seed: int, n: int = BN_RECALIBRATION_SAMPLES, batch_size: int = BN_RECALIBRATION_BATCH
) -> bool:
    """Re-estimate the batch-norm running statistics of ``G`` for ``G``'s own weights; False if it has no BN.

    G_ema's weights are an average of G's, so statistics gathered by G during training do not describe G_ema's
    activations. This resets every BN layer and feeds ``n`` fresh latents (whole batches of ``batch_size``) with
    only the BN layers in training mode and ``momentum=None``: the running mean/var become the cumulative average
    of the per-batch statistics (as ``torch.optim.swa_utils.update_bn``). The latents come from their own
    generator seeded with ``seed``, so the global RNG streams are untouched and the result is deterministic
    (and independent of the statistics held before). G is left in eval mode.
    """
    bns = batch_norm_layers(G)
    if not bns:
        return False
    device = next(G.parameters()).device
    momenta = [m.momentum for m in bns]
    gen = torch.Generator().manual_seed(seed)
    G.eval()
    try:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        for _ in range(max(1, -(-n // batch_size))):
            G(torch.randn(batch_size, G.z_dim, generator=gen).to(device))
    finally:
        for m, momentum in zip(bns, momenta, strict=True):
            m.momentum = momentum
        G.eval()
    return True


# --- sampling -----------------------------------------------------------------------------------------------------

NOISE_MODES = ("random", "const")
NOISE_STREAM = 0x6E6F697365  # b"noise": keeps per-image noise seeds apart from the latent seeds


def noise_seeds_for(seeds: Sequence[int]) -> list[int]:
    """The per-image noise seed of each latent seed (``generate --noise random``): image s never depends on the
    other seeds, and its noise never reuses its latent's random stream."""
    return [int(np.random.SeedSequence([int(s), NOISE_STREAM]).generate_state(1, np.uint64)[0]) for s in seeds]


def _forward_truncated(
    G: nn.Module, z: torch.Tensor, truncation: float, noise: list[torch.Tensor] | None = None
) -> torch.Tensor:
    """StyleGAN truncates toward the tracked mean W; the others pull z toward its mean, 0. ProGAN pixel-normalises
    z, so scaling it has no effect (a warning says so)."""
    if getattr(G, "truncation_space", "z") == "w":
        return G(z, truncation=truncation, noise=noise)
    return G(z * truncation)


@torch.no_grad()
def synthesize(
    G: nn.Module,
    z: torch.Tensor,
    batch_size: int = 64,
    truncation: float = 1.0,
    noise_seeds: Sequence[int] | None = None,
) -> np.ndarray:
    """Images for latents ``z``, with truncation ``psi`` (1.0 = off): toward the mean W for StyleGAN, toward z = 0
    for the DCGAN-style families.

    ``noise_seeds`` (StyleGAN; ignored by generators without noise inputs): one seed per latent; each image gets
    fresh noise maps drawn from its own seed, as the official FID protocol samples noise per image. None: the
    generator's fixed noise maps (reproducible grids; every image shares them)."""
    if truncation != 1.0 and getattr(G, "truncation_space", "z") == "none":
        log.warning("--truncation %g has no effect on this generator (its latents are pixel-normalised)", truncation)
    if truncation < 0:
        raise GanimeError(f"--truncation {truncation}: must be >= 0 (1.0 = off, smaller = closer to the mean)")
    if batch_size < 1:
        raise GanimeError(f"--batch-size {batch_size}: must be >= 1")
    if noise_seeds is not None and len(noise_seeds) != len(z):
        raise GanimeError(f"{len(noise_seeds)} noise seeds for {len(z)} latents: give one per image")
    if len(z) == 0:
        return np.zeros((0, G.resolution, G.resolution, 3), dtype=np.uint8)
    device = next(G.parameters()).device
    with_noise = noise_seeds is not None and hasattr(G, "seeded_noise")
    was_training = G.training
    G.eval()
    try:
        out = []
        for start in range(0, len(z), batch_size):
            chunk = z[start : start + batch_size].to(device)
            noise = G.seeded_noise(noise_seeds[start : start + len(chunk)], device) if with_noise else None
            out.append(images_to_uint8(_forward_truncated(G, chunk, truncation, noise)))
    finally:
        G.train(was_training)
    return np.concatenate(out)


def generate_images(
    G: nn.Module, n: int, seed: int, batch_size: int = 64, truncation: float = 1.0, noise: str = "random"
) -> np.ndarray:
    """``n`` images as uint8 (n, H, W, 3), reproducible from ``seed`` and independent of ``batch_size``.

    ``noise`` (StyleGAN only): ``random`` (default, for evaluation) gives every image its own noise maps, drawn
    deterministically from ``seed``; ``const`` uses the generator's fixed noise maps for all images."""
    if n < 0:
        raise GanimeError(f"n={n}: the number of images must be >= 0")
    if noise not in NOISE_MODES:
        raise GanimeError(f"--noise {noise}: use one of {', '.join(NOISE_MODES)}")
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed))
    noise_seeds = None
    if noise == "random" and n:
        noise_seeds = [int(s) for s in np.random.SeedSequence([seed, NOISE_STREAM]).generate_state(n, np.uint64)]
    return synthesize(G, z, batch_size=batch_size, truncation=truncation, noise_seeds=noise_seeds)
