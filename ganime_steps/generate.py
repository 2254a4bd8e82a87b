"""Render a grid of samples from a trained generator: one image per seed, optional truncation."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from ganime_steps.common import GanimeError, run_cli, save_image
from ganime_steps.gan import latents_for_seeds, load_generator, synthesize
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


def parse_seeds(text: str) -> list[int]:
    """'0-63', '1,5,10-12' -> list of ints (ranges inclusive, order kept)."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(s) for s in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise GanimeError(
                f"--seeds {text!r}: bad item {part!r}; use ranges and commas like 0-63 or 1,5,10-12"
            ) from None
        if len(seeds) > MAX_SEEDS:
            raise GanimeError(f"--seeds {text!r}: more than {MAX_SEEDS} images; render fewer per grid")
    if any(s < 0 or s >= 2**63 for s in seeds):
        raise GanimeError(f"--seeds {text!r}: seeds must be between 0 and 2**63 - 1")
    return seeds


def run(
    *,
    checkpoint: Path,
    out: Path,
    seeds: str,
    truncation: float = 1.0,
    ncol: int | None = None,
    batch_size: int = 64,
    device: str = "cpu",
) -> GenerateSummary:
    seed_list = parse_seeds(seeds)
    if Path(out).suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        raise GanimeError(f"--out {out}: unsupported image type; end the name with .png")
    if ncol is not None and ncol < 1:
        raise GanimeError(f"--ncol {ncol}: must be >= 1")
    G = load_generator(checkpoint, device=device)
    images = synthesize(G, latents_for_seeds(seed_list, G.z_dim), batch_size=batch_size, truncation=truncation)
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

    def handler(args: argparse.Namespace) -> GenerateSummary:
        return run(
            checkpoint=args.checkpoint,
            out=args.out,
            seeds=args.seeds,
            truncation=args.truncation,
            ncol=args.ncol,
            batch_size=args.batch_size,
            device=args.device,
        )

    return run_cli(p, handler, argv)


if __name__ == "__main__":
    raise SystemExit(main())
