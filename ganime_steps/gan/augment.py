"""DiffAugment (Zhao et al. 2020): differentiable colour, translation (1/8) and cutout, applied identically to real
and fake images before D. Its draws come from the global torch RNG through :func:`~ganime_steps.gan.losses.per_sample`
(under data parallel the global batch's draws, this rank's rows kept), so a resumed run redraws them exactly."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ganime_steps.gan.losses import per_sample


def diff_augment(x: torch.Tensor, cutout: float = 0.5) -> torch.Tensor:
    """Differentiable augmentation applied identically to real and fake images before D. ``cutout``: the side of
    the zeroed square as a share of the image's (the DiffAugment paper's 1/2; Projected GAN's code uses 0.2)."""
    b, _, h, w = x.shape
    dev, dt = x.device, x.dtype

    def u() -> torch.Tensor:
        return per_sample(lambda size: torch.rand(size, device=dev, dtype=dt), (b, 1, 1, 1))

    def randint(low: int, high: int) -> torch.Tensor:
        return per_sample(lambda size: torch.randint(low, high, size, device=dev), (b, 1, 1))

    # colour: brightness, saturation, contrast
    x = x + (u() - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (u() * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * (u() + 0.5) + mean
    # translation by up to 1/8 of the size, zero fill
    sh, sw = int(h * 0.125 + 0.5), int(w * 0.125 + 0.5)
    ty = randint(-sh, sh + 1)
    tx = randint(-sw, sw + 1)
    gb, gy, gx = torch.meshgrid(
        torch.arange(b, device=dev), torch.arange(h, device=dev), torch.arange(w, device=dev), indexing="ij"
    )
    gy = (gy + ty + 1).clamp(0, h + 1)
    gx = (gx + tx + 1).clamp(0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)
    x = padded[gb, gy, gx].permute(0, 3, 1, 2)
    # cutout: one zeroed square per image
    ch, cw = int(h * cutout + 0.5), int(w * cutout + 0.5)
    cy = randint(0, h + (1 - ch % 2)) - ch // 2
    cx = randint(0, w + (1 - cw % 2)) - cw // 2
    rows = torch.arange(h, device=dev).view(1, h, 1)
    cols = torch.arange(w, device=dev).view(1, 1, w)
    inside = (rows >= cy) & (rows < cy + ch) & (cols >= cx) & (cols < cx + cw)
    return x * (~inside).unsqueeze(1).to(dt)
