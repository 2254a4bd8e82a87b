"""StyleGAN generator (Karras et al. 2019, the progressive-growing version): mapping network, AdaIN, noise inputs,
constant input, style mixing, truncation toward the tracked mean W. The discriminator is ProGAN's with blur
(:class:`ganime_steps.gan.progressive.ProDiscriminator` with ``blur=True``).

Published settings kept: 8-layer mapping MLP with lr multiplier 0.01, W the size of Z, learned constant 4x4 input,
per-layer noise with learned per-channel strength (zero-initialised), AdaIN style scales initialised to 1,
[1, 2, 1] blur after each upsampling, style mixing on 90 % of minibatches with a random crossover layer among the
active ones, ``w_avg`` tracked with decay 0.995, truncation (psi, default cutoff 8 layers) applied only at
inference. Noise: random in training mode; in eval mode either fixed per-layer buffers (the default: a seed always
gives the same image, whatever the batch; used for sample grids) or per-image maps passed in by the caller
(:meth:`StyleGenerator.seeded_noise`: fresh noise per image, reproducible from per-image seeds, as the official FID
protocol samples it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ganime_steps.gan.losses import per_sample
from ganime_steps.gan.progressive import (
    Blur,
    EqConv2d,
    EqLinear,
    LodMixin,
    fade_in_output,
    level,
    lrelu,
    pixel_norm,
    prog_widths,
    upsample,
)

W_AVG_BETA = 0.995
MAPPING_LR_MUL = 0.01


def instance_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-sample, per-channel normalisation over H, W (biased variance, as ``F.instance_norm`` and the official
    code), written with reductions so the result keeps the input's memory format: ``F.instance_norm`` returns
    NCHW, which turned every StyleGAN layer's channels_last activations back and forth. Statistics in fp32."""
    xf = x.float()
    xf = xf - xf.mean(dim=(2, 3), keepdim=True)
    xf = xf * torch.rsqrt(xf.square().mean(dim=(2, 3), keepdim=True) + eps)
    return xf.to(x.dtype)


class MappingNetwork(nn.Module):
    def __init__(self, z_dim: int, w_dim: int, n_layers: int) -> None:
        super().__init__()
        dims = [z_dim] + [w_dim] * n_layers
        self.layers = nn.ModuleList(EqLinear(a, b, lr_mul=MAPPING_LR_MUL) for a, b in zip(dims, dims[1:], strict=False))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = pixel_norm(z)
        for layer in self.layers:
            x = lrelu(layer(x))
        return x


class StyleEpilogue(nn.Module):
    """After each conv: + noise * per-channel strength, + bias, LeakyReLU, instance norm, AdaIN(style from w)."""

    def __init__(self, channels: int, w_dim: int, size: int, noise_seed: int) -> None:
        super().__init__()
        self.noise_strength = nn.Parameter(torch.zeros(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.style = EqLinear(w_dim, 2 * channels, gain=1.0)  # (scale - 1, shift): starts as the identity
        # Fixed noise for eval mode: part of the weights, so an exported generator renders identically anywhere.
        fixed = torch.randn(1, 1, size, size, generator=torch.Generator().manual_seed(noise_seed))
        self.register_buffer("fixed_noise", fixed)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """``noise``: (B, 1, H, W) maps to use instead of the mode's own (random in training, fixed in eval)."""
        b, c, h, wd = x.shape
        if noise is not None:
            noise = noise.to(x.dtype)
        elif self.training:
            # per image: under data parallel each rank keeps its rows of the global batch's draw (losses.per_sample)
            noise = per_sample(lambda size: torch.randn(size, device=x.device, dtype=x.dtype), (b, 1, h, wd))
        else:
            noise = self.fixed_noise.to(x.dtype)
        x = x + noise * self.noise_strength.view(1, c, 1, 1).to(x.dtype)
        x = lrelu(x + self.bias.view(1, c, 1, 1).to(x.dtype))
        x = instance_norm(x)
        style = self.style(w).view(b, 2, c, 1, 1).to(x.dtype)
        return x * (style[:, 0] + 1) + style[:, 1]


class StyleGenerator(LodMixin):
    """z -> mapping -> w (one per layer: 2 per resolution) -> synthesis from a learned constant 4x4."""

    truncation_space = "w"

    def __init__(self, cfg) -> None:  # cfg: NetConfig
        super().__init__()
        self.cfg = cfg
        self.z_dim = cfg.z_dim
        self.w_dim = cfg.z_dim
        self.resolution = self.full_resolution = cfg.resolution
        self.style_mixing = cfg.style_mixing
        self.truncation_cutoff = cfg.truncation_cutoff
        ws = prog_widths(cfg.resolution, cfg.channels)
        self.num_layers = 2 * (level(cfg.resolution) + 1)
        self.mapping = MappingNetwork(cfg.z_dim, self.w_dim, cfg.mapping_layers)
        self.register_buffer("w_avg", torch.zeros(self.w_dim))
        c4 = ws[4]
        self.const = nn.Parameter(torch.ones(1, c4, 4, 4))
        self.epi4 = nn.ModuleList([StyleEpilogue(c4, self.w_dim, 4, 0), StyleEpilogue(c4, self.w_dim, 4, 1)])
        self.conv4 = EqConv2d(c4, c4, 3)
        self.blur = Blur()
        self.blocks = nn.ModuleList()
        for i, r in enumerate(list(ws)[1:]):
            self.blocks.append(
                nn.ModuleDict(
                    {
                        "conv0": EqConv2d(ws[r // 2], ws[r], 3),
                        "epi0": StyleEpilogue(ws[r], self.w_dim, r, 2 * i + 2),
                        "conv1": EqConv2d(ws[r], ws[r], 3),
                        "epi1": StyleEpilogue(ws[r], self.w_dim, r, 2 * i + 3),
                    }
                )
            )
        self.to_rgb = nn.ModuleList(EqConv2d(ws[r], 3, 1, gain=1.0) for r in ws)
        self._init_lod()

    def active_layers(self) -> int:
        res, _ = self.current()
        return 2 * (level(res) + 1)

    def map(self, z: torch.Tensor, truncation: float = 1.0) -> torch.Tensor:
        """z (B, z_dim) -> w per layer (B, num_layers, w_dim); training mode updates w_avg and mixes styles."""
        w = self.mapping(z)
        if self.training:
            with torch.no_grad():
                self.w_avg.copy_(torch.lerp(w.detach().float().mean(0), self.w_avg, W_AVG_BETA))
        ws = w.unsqueeze(1).repeat(1, self.num_layers, 1)
        if self.training and self.style_mixing > 0:
            # One draw per minibatch from the (CPU) global RNG, as the official code: no device sync, resumable
            # (under data parallel the same on every rank, as for one process's global batch); the second latents
            # per image, each rank keeping its rows of the global batch's draw (losses.per_sample).
            if float(torch.rand(())) < self.style_mixing:
                cur = self.active_layers()
                cutoff = int(torch.randint(1, cur, ())) if cur > 1 else cur
                z2 = per_sample(lambda size: torch.randn(size, device=z.device, dtype=z.dtype), tuple(z.shape))
                w2 = self.mapping(z2)
                ws[:, cutoff:] = w2.unsqueeze(1)
        if truncation != 1.0:
            ws = self.truncate(ws, truncation)
        return ws

    def truncate(self, ws: torch.Tensor, psi: float, cutoff: int | None = None) -> torch.Tensor:
        """w' = w_avg + psi (w - w_avg) on the first ``cutoff`` layers (coarse styles)."""
        cutoff = self.truncation_cutoff if cutoff is None else cutoff
        avg = self.w_avg.to(ws.dtype)
        out = ws.clone()
        out[:, :cutoff] = torch.lerp(avg, ws[:, :cutoff], psi)
        return out

    def noise_sizes(self) -> list[int]:
        """Side of the noise map of every style layer: 4, 4, 8, 8, ... full, full."""
        return [4 << (i // 2) for i in range(self.num_layers)]

    def seeded_noise(self, seeds: Sequence[int], device: torch.device | str | None = None) -> list[torch.Tensor]:
        """Per-layer noise maps (B, 1, s, s) for B images, image i's maps drawn from its own generator seeded with
        ``seeds[i]`` (so they do not depend on the batch, the other images or the current lod)."""
        sizes = self.noise_sizes()
        total = sum(s * s for s in sizes)
        flat = torch.stack([torch.randn(total, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
        flat = flat.to(device if device is not None else self.const.device)
        return [
            part.reshape(-1, 1, s, s) for part, s in zip(flat.split([s * s for s in sizes], dim=1), sizes, strict=True)
        ]

    def synthesis(
        self, ws: torch.Tensor, native: bool = False, noise: Sequence[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """ws (B, num_layers, w_dim) -> image; ``noise``: per-layer maps (from :meth:`seeded_noise`) or None."""
        res, alpha = self.current()
        n_blocks = level(res)

        def nz(i: int) -> torch.Tensor | None:
            return None if noise is None else noise[i]

        x = self.const.expand(ws.shape[0], -1, -1, -1).to(ws.dtype)
        x = self.epi4[0](x, ws[:, 0], nz(0))
        x = self.epi4[1](self.conv4(x), ws[:, 1], nz(1))
        prev_rgb = None
        for i in range(n_blocks):
            if i == n_blocks - 1 and alpha < 1.0:
                prev_rgb = self.to_rgb[i](x)
            blk = self.blocks[i]
            x = blk["epi0"](self.blur(blk["conv0"](upsample(x))), ws[:, 2 * i + 2], nz(2 * i + 2))
            x = blk["epi1"](blk["conv1"](x), ws[:, 2 * i + 3], nz(2 * i + 3))
        return fade_in_output(self.to_rgb[n_blocks](x), prev_rgb, alpha, res, self.full_resolution, native)

    def forward(
        self,
        z: torch.Tensor,
        native: bool = False,
        truncation: float = 1.0,
        noise: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        return self.synthesis(self.map(z, truncation), native=native, noise=noise)


def n_style_layers(resolution: int) -> int:
    return 2 * (int(math.log2(resolution)) - 1)
