"""Render a grid of samples from a trained generator: one image per seed, optional truncation; for StyleGAN also a
style-mixing grid (``--style-mix ROWSEEDS COLSEEDS``): the first row shows the column seeds, the first column the
row seeds, and each cell is its row's image with the styles of ``--mix-layers`` (default the coarse 4-8 px ones)
taken from its column's seed, as in the StyleGAN paper's figure 3. Truncation is toward the tracked mean W.

StyleGAN noise (``--noise``): ``const`` (default) renders with the generator's fixed noise maps, so grids are
reproducible and comparable across runs; ``random`` gives each image fresh noise drawn from its own seed (still
reproducible: seed s always gives the same image), as the evaluation samples it.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ganime_steps.common import GanimeError, call_with_args, run_cli, save_image
from ganime_steps.gan import latents_for_seeds, load_generator, synthesize
from ganime_steps.gan.networks import NOISE_MODES, images_to_uint8, noise_seeds_for
from ganime_steps.imaging import make_grid

MAX_SEEDS = 10_000


@dataclass
class GenerateSummary:
    checkpoint: str
    out: str
    n_images: int
    resolution: int
    truncation: float
    grid_width: int
    grid_height: int
    style_mix: bool = False
    mix_layers: list[int] | None = None
    noise: str = "const"


def parse_seeds(text: str, *, limit: int = MAX_SEEDS, max_seed: int = 2**63 - 1, what: str = "--seeds") -> list[int]:
    """'0-63', '1,5,10-12' -> list of ints (ranges inclusive, order kept), at most ``limit``, each in [0, max_seed].

    A range is checked against ``limit`` before it is expanded, so '0-999999999999' costs nothing (the studio parses
    request parameters with this)."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(s) for s in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                items: range | list[int] = range(lo, hi + 1)
            else:
                items = [int(part)]
        except ValueError:
            hint = "use ranges and commas like 0-63 or 1,5,10-12"
            raise GanimeError(f"{what} {text!r}: bad item {part!r}; {hint}") from None
        if len(seeds) + len(items) > limit:
            raise GanimeError(f"{what} {text!r}: more than {limit} images; ask for fewer")
        seeds.extend(items)
    if any(s < 0 or s > max_seed for s in seeds):
        raise GanimeError(f"{what} {text!r}: seeds must be between 0 and {max_seed}")
    return seeds


@torch.no_grad()
def style_mix_images(
    G: torch.nn.Module,
    row_seeds: list[int],
    col_seeds: list[int],
    layers: list[int],
    truncation: float = 1.0,
    noise: str = "const",
) -> np.ndarray:
    """(1 + rows) x (1 + cols) tiles, row-major: a blank corner, the column images, then per row its own image
    followed by the row's w with ``layers`` replaced by each column's w. With ``noise="random"`` every image
    of a row (and each column image) uses the noise of its own seed."""
    dev = next(G.parameters()).device
    G.eval()

    def ws_for(seeds: list[int]) -> torch.Tensor:
        return G.map(latents_for_seeds(seeds, G.z_dim).to(dev), truncation)

    def noise_for(seeds: list[int]) -> list[torch.Tensor] | None:
        return G.seeded_noise(noise_seeds_for(seeds), dev) if noise == "random" else None

    w_rows, w_cols = ws_for(row_seeds), ws_for(col_seeds)
    res = G.resolution
    tiles = [
        np.full((1, res, res, 3), 255, dtype=np.uint8),
        images_to_uint8(G.synthesis(w_cols, noise=noise_for(col_seeds))),
    ]
    for i in range(len(row_seeds)):
        mixed = w_rows[i : i + 1].repeat(len(col_seeds) + 1, 1, 1)
        mixed[1:, layers] = w_cols[:, layers]
        tiles.append(images_to_uint8(G.synthesis(mixed, noise=noise_for([row_seeds[i]] * len(mixed)))))
    return np.concatenate(tiles)


def parse_layers(text: str, n_layers: int) -> list[int]:
    layers = parse_seeds(text) if text else []
    if not layers or max(layers) >= n_layers:
        raise GanimeError(f"--mix-layers {text!r}: give style layers from 0 to {n_layers - 1}, e.g. 0-3 (coarse)")
    return sorted(set(layers))


def run_generate(
    *,
    checkpoint: Path,
    out: Path,
    seeds: str,
    truncation: float = 1.0,
    ncol: int | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    style_mix: tuple[str, str] | None = None,
    mix_layers: str = "0-3",
    noise: str = "const",
) -> GenerateSummary:
    seed_list = parse_seeds(seeds)
    if noise not in NOISE_MODES:
        raise GanimeError(f"--noise {noise}: use one of {', '.join(NOISE_MODES)}")
    if Path(out).suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        raise GanimeError(f"--out {out}: unsupported image type; end the name with .png")
    if ncol is not None and ncol < 1:
        raise GanimeError(f"--ncol {ncol}: must be >= 1")
    G = load_generator(checkpoint, device=device)
    layers = None
    if style_mix is not None:
        if getattr(G, "truncation_space", "z") != "w":
            raise GanimeError(f"--style-mix: {checkpoint} is not a StyleGAN generator; drop --style-mix")
        rows, cols = parse_seeds(style_mix[0]), parse_seeds(style_mix[1])
        layers = parse_layers(mix_layers, G.num_layers)
        images = style_mix_images(G, rows, cols, layers, truncation, noise=noise)
        grid = make_grid(images, ncol=len(cols) + 1)
    else:
        images = synthesize(
            G,
            latents_for_seeds(seed_list, G.z_dim),
            batch_size=batch_size,
            truncation=truncation,
            noise_seeds=noise_seeds_for(seed_list) if noise == "random" else None,
        )
        grid = make_grid(images, ncol=ncol)
    save_image(out, grid)
    return GenerateSummary(
        checkpoint=str(checkpoint),
        out=str(out),
        n_images=len(images),
        resolution=G.resolution,
        truncation=truncation,
        grid_width=grid.width,
        grid_height=grid.height,
        style_mix=style_mix is not None,
        mix_layers=layers,
        noise=noise,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ganime_steps.generate",
        description="Write a PNG grid of generated images, one per seed (seed s always gives the same image).",
    )
    p.add_argument("--checkpoint", type=Path, required=True, help="generator.pt (or a run's checkpoint.pt)")
    p.add_argument("--seeds", default="0-63", help="seeds as ranges and commas, e.g. 0-63 or 1,5,10-12 (default 0-63)")
    p.add_argument("--truncation", type=float, default=1.0, help="psi: pull latents toward the mean; 1.0 = off")
    p.add_argument("--out", type=Path, required=True, help="output image (.png)")
    p.add_argument("--ncol", type=int, default=None, help="grid columns (default: about sqrt(n))")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    p.add_argument("--device", default="cpu", help="cpu, cuda, or auto")
    p.add_argument(
        "--style-mix",
        nargs=2,
        metavar=("ROWSEEDS", "COLSEEDS"),
        default=None,
        help="StyleGAN: style-mixing grid instead of --seeds, e.g. --style-mix 0-4 10-15",
    )
    p.add_argument(
        "--mix-layers",
        default="0-3",
        help="style layers the columns give to each row (0-3 coarse = 4-8 px, 4-7 middle, 8- fine); default 0-3",
    )
    p.add_argument(
        "--noise",
        choices=NOISE_MODES,
        default="const",
        help="StyleGAN noise inputs: const = the generator's fixed maps (reproducible grids, default); "
        "random = fresh maps per image from its seed (as the evaluation samples); other families ignore it",
    )

    def _handle(args: argparse.Namespace) -> GenerateSummary:
        return call_with_args(run_generate, args, style_mix=tuple(args.style_mix) if args.style_mix else None)

    return run_cli(p, _handle, argv)


if __name__ == "__main__":
    raise SystemExit(main())
