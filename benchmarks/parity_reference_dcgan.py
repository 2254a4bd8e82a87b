"""A plain DCGAN training loop in the style of github.com/pytorch/examples ``dcgan/main.py``: the reference of the
CPU parity benchmark (:mod:`benchmarks.bench_parity`), run as its own process.

Same networks as the example (ngf = ndf = 64, nz = 100, 64 px, no biases, Sigmoid + BCELoss), the same init
(conv N(0, 0.02), BN scale N(1, 0.02)), Adam lr 2e-4 betas (0.5, 0.999), the same step order (D on reals, D on
fakes, G on the same fakes with D's weights still requiring grad) and the same per-iteration ``.item()`` reads.
Data: the packed uint8 (N, 64, 64, 3) ``.npy`` as a TensorDataset in a shuffling DataLoader; each batch becomes
float in [-1, 1] (what the example's ToTensor + Normalize(0.5, 0.5) give). At the end the networks are saved (the
example saves them every epoch). Prints one JSON line: images, seconds (training loop only), params.

    python benchmarks/parity_reference_dcgan.py --data set.npy --images 4096 --out folder
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn


class Generator(nn.Module):
    def __init__(self, nz: int, ngf: int, nc: int = 3) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ngf * 8),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
            nn.Tanh(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class Discriminator(nn.Module):
    def __init__(self, ndf: int, nc: int = 3) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 8),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).view(-1, 1).squeeze(1)


def weights_init(m: nn.Module) -> None:
    classname = m.__class__.__name__
    if classname.find("Conv") != -1:
        torch.nn.init.normal_(m.weight, 0.0, 0.02)
    elif classname.find("BatchNorm") != -1:
        torch.nn.init.normal_(m.weight, 1.0, 0.02)
        torch.nn.init.zeros_(m.bias)


def count_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--images", type=int, required=True, help="real images shown to D (a multiple of --batch-size)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--nz", type=int, default=100)
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--ndf", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.0002)
    p.add_argument("--beta1", type=float, default=0.5)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    opt = p.parse_args()

    torch.manual_seed(opt.seed)
    device = torch.device("cpu")
    arr = np.load(opt.data)  # (N, H, W, 3) uint8
    images = torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()
    dataset = torch.utils.data.TensorDataset(images)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=opt.batch_size, shuffle=True, drop_last=True, num_workers=opt.workers
    )

    netG = Generator(opt.nz, opt.ngf).to(device)
    netG.apply(weights_init)
    netD = Discriminator(opt.ndf).to(device)
    netD.apply(weights_init)
    criterion = nn.BCELoss()
    real_label, fake_label = 1.0, 0.0
    optimizerD = torch.optim.Adam(netD.parameters(), lr=opt.lr, betas=(opt.beta1, 0.999))
    optimizerG = torch.optim.Adam(netG.parameters(), lr=opt.lr, betas=(opt.beta1, 0.999))

    n_iters = opt.images // opt.batch_size
    done = 0
    t0 = time.perf_counter()
    while done < n_iters:
        for (data,) in loader:
            if done == n_iters:
                break
            real_cpu = data.to(device).float().div_(127.5).sub_(1.0)
            # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
            netD.zero_grad()
            batch_size = real_cpu.size(0)
            label = torch.full((batch_size,), real_label, dtype=real_cpu.dtype, device=device)
            output = netD(real_cpu)
            errD_real = criterion(output, label)
            errD_real.backward()
            D_x = output.mean().item()
            noise = torch.randn(batch_size, opt.nz, 1, 1, device=device)
            fake = netG(noise)
            label.fill_(fake_label)
            output = netD(fake.detach())
            errD_fake = criterion(output, label)
            errD_fake.backward()
            D_G_z1 = output.mean().item()
            errD = errD_real + errD_fake
            optimizerD.step()
            # (2) Update G network: maximize log(D(G(z)))
            netG.zero_grad()
            label.fill_(real_label)
            output = netD(fake)
            errG = criterion(output, label)
            errG.backward()
            D_G_z2 = output.mean().item()
            optimizerG.step()
            done += 1
            if done % 50 == 0 or done == n_iters:
                print(
                    f"[{done}/{n_iters}] Loss_D: {errD.item():.4f} Loss_G: {errG.item():.4f} "
                    f"D(x): {D_x:.4f} D(G(z)): {D_G_z1:.4f} / {D_G_z2:.4f}",
                    flush=True,
                )
    seconds = time.perf_counter() - t0
    opt.out.mkdir(parents=True, exist_ok=True)
    torch.save(netG.state_dict(), opt.out / "netG.pth")
    torch.save(netD.state_dict(), opt.out / "netD.pth")
    print(
        json.dumps(
            {
                "images": n_iters * opt.batch_size,
                "seconds": round(seconds, 3),
                "params_g": count_params(netG),
                "params_d": count_params(netD),
            }
        )
    )


if __name__ == "__main__":
    main()
