"""Progressive growing (Karras et al. 2018): the growth schedule, equalized-lr layers and the ProGAN networks.

The networks are built at the run's full resolution from the start (all layers exist, as in the official code);
a ``lod`` ("level of detail") value selects how much of them is used:

    lod = log2(full) - log2(current resolution) + (1 - alpha)

so lod 0 is the full network, an integer lod is a stable phase and a fractional lod is a fade-in, where the
new highest-resolution block is blended in with weight ``alpha``. ``lod`` is a buffer of G and D (saved with the
weights, so an exported generator renders at the level it was trained to); the generator's output is always
upsampled (nearest) to the full resolution unless ``native=True`` (training, where D sees the current size).

Widths: ``channels`` is the width at the full resolution; it doubles per halving toward 4x4, capped at
``WIDTH_CAP * channels`` (at 128 px with channels 64: 64-128-256-512-512-512, ProGAN/StyleGAN's 512 cap).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ganime_steps.common import GanimeError

WIDTH_CAP = 8
LRELU = 0.2
SQRT2 = math.sqrt(2.0)


def level(resolution: int) -> int:
    """4 -> 0, 8 -> 1, 16 -> 2 ..."""
    return int(math.log2(resolution)) - 2


def prog_widths(resolution: int, channels: int) -> dict[int, int]:
    """Feature width per resolution, 4x4 .. full."""
    out = {}
    r = 4
    while r <= resolution:
        out[r] = min(channels * (resolution // r), channels * WIDTH_CAP)
        r *= 2
    return out


# --- growth schedule ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    """Where training is at a given number of images shown to D."""

    name: str  # "stable" | "fade"
    resolution: int  # current (highest active) resolution
    alpha: float  # weight of the newest block; 1 in a stable phase
    lod: float
    batch_size: int

    @property
    def key(self) -> tuple[int, str]:
        return (self.resolution, self.name)

    def to_dict(self) -> dict[str, float | int | str]:
        return {
            "name": self.name,
            "resolution": self.resolution,
            "alpha": self.alpha,
            "lod": self.lod,
            "batch_size": self.batch_size,
        }


def parse_batch_schedule(text: str) -> dict[int, int]:
    """'8:128,16:64' -> {8: 128, 16: 64}; '' -> {}."""
    out: dict[int, int] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        try:
            res, batch = (int(s) for s in part.split(":"))
        except ValueError:
            raise GanimeError(
                f"--batch-schedule {text!r}: bad item {part!r}; use RES:BATCH pairs like 8:128,16:64"
            ) from None
        if res < 4 or res & (res - 1) or batch < 1:
            raise GanimeError(f"--batch-schedule {text!r}: {part!r} needs a power-of-two resolution and a batch >= 1")
        out[res] = batch
    return out


def parse_lr_schedule(text: str) -> dict[int, float]:
    """'128:0.0015,256:0.002' -> {128: 0.0015, 256: 0.002}; '' -> {}. Resolutions not listed use --lr."""
    out: dict[int, float] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        try:
            res_text, lr_text = part.split(":")
            res, lr = int(res_text), float(lr_text)
        except ValueError:
            raise GanimeError(
                f"--lr-schedule {text!r}: bad item {part!r}; use RES:LR pairs like 128:0.0015,256:0.002"
            ) from None
        if res < 4 or res & (res - 1) or not lr > 0 or not math.isfinite(lr):
            raise GanimeError(f"--lr-schedule {text!r}: {part!r} needs a power-of-two resolution and a finite lr > 0")
        out[res] = lr
    return out


class GrowthSchedule:
    """ProGAN's schedule in images: per resolution a stable phase of ``stable_kimg``, then a fade-in of ``fade_kimg``
    into the next one, from ``start_resolution`` up to ``resolution``; the last resolution stays stable to the end.

    Batch size per resolution: ``batch_schedule[r]`` if given, else ``batch_size`` (ProGAN and StyleGAN shrink the
    minibatch as the resolution grows to fit memory). During a fade-in into r, r's batch size applies.
    """

    def __init__(
        self,
        resolution: int,
        start_resolution: int,
        stable_kimg: float,
        fade_kimg: float,
        batch_size: int,
        batch_schedule: dict[int, int] | None = None,
    ) -> None:
        if start_resolution < 4 or start_resolution & (start_resolution - 1) or start_resolution > resolution:
            raise GanimeError(
                f"--start-resolution {start_resolution}: must be a power of two from 4 to --resolution {resolution}"
            )
        if stable_kimg < 0 or fade_kimg < 0:
            raise GanimeError(f"--stable-kimg {stable_kimg} / --fade-kimg {fade_kimg}: must be >= 0")
        self.resolution = resolution
        self.start_resolution = start_resolution
        self.stable = round(stable_kimg * 1000)
        self.fade = round(fade_kimg * 1000)
        self.batch_size = batch_size
        self.batch_schedule = dict(batch_schedule or {})
        self.lod0 = level(resolution) - level(start_resolution)

    def lod_at(self, images: int) -> float:
        dur = self.stable + self.fade
        if dur <= 0:
            return 0.0
        stage = images // dur
        t = images - stage * dur
        lod = float(self.lod0 - stage)
        if self.fade > 0:
            lod -= max(t - self.stable, 0) / self.fade
        return max(lod, 0.0)

    def at(self, images: int) -> Phase:
        lod = self.lod_at(images)
        whole = math.floor(lod)
        frac = lod - whole
        res = self.resolution >> whole
        return Phase(
            name="fade" if frac > 0 else "stable",
            resolution=res,
            alpha=1.0 - frac,
            lod=lod,
            batch_size=self.batch_schedule.get(res, self.batch_size),
        )

    def full_resolution_at_kimg(self) -> float:
        """kimg at which the last fade-in ends (the full network is in use from there on)."""
        return self.lod0 * (self.stable + self.fade) / 1000.0

    def iterations(self, start: int, target: int, n_critic: int = 1) -> int:
        """How many iterations take ``start`` images to at least ``target``."""
        n, images = 0, start
        while images < target:
            images += self.at(images).batch_size * n_critic
            n += 1
        return n


def resize_reals(x: torch.Tensor, phase: Phase) -> torch.Tensor:
    """Full-resolution reals -> the phase's resolution (box filter, as ProGAN); in a fade-in, blend with the
    2x-coarser version upsampled, by the same alpha as the networks (ProGAN's ``process_reals``)."""
    factor = x.shape[-1] // phase.resolution
    if factor > 1:
        x = F.avg_pool2d(x, factor)
    if phase.alpha < 1.0:
        coarse = F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="nearest")
        x = torch.lerp(coarse, x, phase.alpha)
    return x


# --- layers -------------------------------------------------------------------------------------------------------


class EqLinear(nn.Module):
    """Equalized learning rate: weights ~ N(0, 1) scaled at runtime by gain / sqrt(fan_in) (He's constant).
    ``lr_mul`` scales the effective learning rate (StyleGAN's mapping network uses 0.01)."""

    def __init__(self, c_in: int, c_out: int, gain: float = SQRT2, lr_mul: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in) / lr_mul)
        self.bias = nn.Parameter(torch.full((c_out,), float(bias_init) / lr_mul))
        self.scale = gain / math.sqrt(c_in) * lr_mul
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class EqConv2d(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, gain: float = SQRT2, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(c_out)) if bias else None
        self.scale = gain / math.sqrt(c_in * kernel * kernel)
        self.pad = kernel // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.pad)


def pixel_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Normalise each feature vector (dim 1) to unit average square (ProGAN's PixelNorm)."""
    return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + eps)


def lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, LRELU)


def upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


class Blur(nn.Module):
    """[1, 2, 1] x [1, 2, 1] / 16 low-pass filter, depthwise (StyleGAN, after upsampling and before downsampling)."""

    def __init__(self) -> None:
        super().__init__()
        k = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("kernel", (k[:, None] * k[None, :] / 16).view(1, 1, 3, 3), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        return F.conv2d(x, self.kernel.to(x.dtype).expand(c, 1, 3, 3), padding=1, groups=c)


def minibatch_stddev(x: torch.Tensor, group_size: int = 4) -> torch.Tensor:
    """Append one feature map: the stddev of each feature over a group of samples, averaged (ProGAN)."""
    b, c, h, w = x.shape
    g = min(group_size, b)
    while b % g:
        g -= 1
    y = x.float().reshape(g, -1, c, h, w)  # group i holds samples i, i + b/g, ... (the official layout)
    y = (y - y.mean(dim=0)).square().mean(dim=0).add(1e-8).sqrt()  # (b/g, c, h, w)
    y = y.mean(dim=(1, 2, 3)).to(x.dtype)  # (b/g,)
    y = y.view(-1, 1, 1, 1).repeat(g, 1, h, w)
    return torch.cat([x, y], dim=1)


class LodMixin(nn.Module):
    """A ``lod`` buffer (saved, exported) with a Python mirror so forward() never syncs with the device."""

    full_resolution: int

    def _init_lod(self) -> None:
        self.register_buffer("lod", torch.zeros(()))
        self._lod = 0.0
        self.register_load_state_dict_post_hook(lambda module, _keys: module._sync_lod())

    def _sync_lod(self) -> None:
        self._lod = float(self.lod)

    def set_lod(self, lod: float) -> None:
        self.lod.fill_(lod)
        self._lod = float(lod)

    def current(self) -> tuple[int, float]:
        """(current resolution, alpha) from lod."""
        whole = math.floor(self._lod)
        return self.full_resolution >> whole, 1.0 - (self._lod - whole)


# --- ProGAN -------------------------------------------------------------------------------------------------------


class ProGenerator(LodMixin):
    """z -> PixelNorm -> dense 4x4 -> conv 3x3 -> [upsample, conv 3x3, conv 3x3] per resolution; PixelNorm and
    LeakyReLU(0.2) after every conv; a 1x1 toRGB per resolution (linear output)."""

    truncation_space = "none"  # latents are pixel-normalised: scaling z changes nothing

    def __init__(self, cfg) -> None:  # cfg: NetConfig
        super().__init__()
        self.cfg = cfg
        self.z_dim = cfg.z_dim
        self.resolution = self.full_resolution = cfg.resolution
        ws = prog_widths(cfg.resolution, cfg.channels)
        c4 = ws[4]
        self.dense = EqLinear(cfg.z_dim, c4 * 16, gain=SQRT2 / 4)  # the official gain for the 4x4 dense layer
        self.conv4 = EqConv2d(c4, c4, 3)
        self.blocks = nn.ModuleList(
            nn.ModuleList([EqConv2d(ws[r // 2], ws[r], 3), EqConv2d(ws[r], ws[r], 3)]) for r in list(ws)[1:]
        )
        self.to_rgb = nn.ModuleList(EqConv2d(ws[r], 3, 1, gain=1.0) for r in ws)
        self._init_lod()

    def forward(self, z: torch.Tensor, native: bool = False) -> torch.Tensor:
        res, alpha = self.current()
        n_blocks = level(res)
        x = lrelu(self.dense(pixel_norm(z))).view(z.shape[0], -1, 4, 4)
        x = pixel_norm(lrelu(self.conv4(pixel_norm(x))))
        prev_rgb = None
        for i in range(n_blocks):
            if i == n_blocks - 1 and alpha < 1.0:
                prev_rgb = self.to_rgb[i](x)
            conv0, conv1 = self.blocks[i]
            x = pixel_norm(lrelu(conv0(upsample(x))))
            x = pixel_norm(lrelu(conv1(x)))
        return fade_in_output(self.to_rgb[n_blocks](x), prev_rgb, alpha, res, self.full_resolution, native)


def fade_in_output(img, prev_rgb, alpha: float, res: int, full_resolution: int, native: bool):
    """A growing generator's image: blended from the upsampled previous resolution's RGB during a fade-in, then
    (unless ``native``) nearest-upsampled to the full resolution so that D and the metrics always see one size."""
    if prev_rgb is not None:
        img = torch.lerp(upsample(prev_rgb), img, alpha)
    if not native and res < full_resolution:
        img = F.interpolate(img, scale_factor=full_resolution // res, mode="nearest")
    return img


class ProDiscriminator(LodMixin):
    """Mirror of G: 1x1 fromRGB, [conv 3x3, conv 3x3, downsample] per resolution, then minibatch stddev, conv 3x3,
    dense, dense -> one score. ``blur``: StyleGAN's variant (blur before the downsampling conv).
    Takes images at the current resolution; in a fade-in the coarser path (downsampled input -> fromRGB) is
    blended in with weight 1 - alpha."""

    def __init__(self, cfg, blur: bool = False, mbstd_group: int = 4) -> None:
        super().__init__()
        self.cfg = cfg
        self.resolution = self.full_resolution = cfg.resolution
        self.mbstd_group = mbstd_group
        ws = prog_widths(cfg.resolution, cfg.channels)
        self.from_rgb = nn.ModuleList(EqConv2d(3, ws[r], 1) for r in ws)
        self.blocks = nn.ModuleList(
            nn.ModuleList(
                [EqConv2d(ws[r], ws[r], 3), Blur() if blur else nn.Identity(), EqConv2d(ws[r], ws[r // 2], 3)]
            )
            for r in list(ws)[1:]
        )  # blocks[i]: resolution 2^(i+3) -> 2^(i+2)
        c4 = ws[4]
        self.final_conv = EqConv2d(c4 + 1, c4, 3)
        self.final_dense = EqLinear(c4 * 16, c4)
        self.out = EqLinear(c4, 1, gain=1.0)
        self._init_lod()

    def _block(self, i: int, x: torch.Tensor) -> torch.Tensor:
        conv0, blur, conv1 = self.blocks[i]
        x = lrelu(conv0(x))
        return lrelu(F.avg_pool2d(conv1(blur(x)), 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = x.shape[-1]
        cur, alpha = self.current()
        if res != cur:  # e.g. full-size images given to a network at another lod: no blending
            alpha = 1.0
        n = level(res)
        h = lrelu(self.from_rgb[n](x))
        for i in range(n - 1, -1, -1):
            h = self._block(i, h)
            if i == n - 1 and alpha < 1.0:
                h = torch.lerp(lrelu(self.from_rgb[i](F.avg_pool2d(x, 2))), h, alpha)
        h = lrelu(self.final_conv(minibatch_stddev(h, self.mbstd_group)))
        h = lrelu(self.final_dense(h.flatten(1)))
        return self.out(h).flatten()
