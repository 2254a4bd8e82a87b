"""Directions stage: editing directions in a generator's latent space, for the studio's sliders and the report.

- Unsupervised (GANSpace, Härkönen et al. 2020): PCA of sampled latents; the top components.
- Supervised (InterFaceGAN, Shen et al. 2020), from the project's own cleaning classifiers: sample latents, render
  them, score the images with each classifier (chibi, multi, aesthetic, ...), take the most and least scoring
  fraction and fit a linear boundary (L2-regularised logistic regression) in the latent space; its unit normal
  points toward "more <task>". Its held-out accuracy says how linearly separable the attribute is.

The space is W (the mapping network's output) for StyleGAN and z for the DCGAN-style families and ProGAN. Every
vector is a unit row with a scale: the standard deviation of the sampled latents along it, so a slider strength of
1 moves one standard deviation. Writes ``directions.npz`` (read by ``python -m ganime_steps.studio``) and a figure
with one row per direction: a fixed seed moved from -3 to +3 standard deviations.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ganime_steps.classifier import load_classifier, norm_stats, read_classifier
from ganime_steps.common import GanimeError, atomic_path, call_with_args, run_cli, torch_device
from ganime_steps.gan import load_generator
from ganime_steps.gan.networks import images_to_uint8
from ganime_steps.studio.render import Directions, latent_space, pca_directions, sample_latents

log = logging.getLogger(__name__)

FIGURE_STRENGTHS = (-3.0, -1.5, 0.0, 1.5, 3.0)
RIDGE = 1e-2


@dataclass
class DirectionsSummary:
    generator: str
    out: str
    figure: str
    space: str
    n: int  # latents sampled
    names: list[str]
    explained_variance_ratio: list[float]
    classifiers: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0


def parse_classifier_args(items: list[str]) -> dict[str, Path]:
    """['chibi=results/classifiers/chibi/model.pt', ...] -> {task: path}."""
    out: dict[str, Path] = {}
    for item in items:
        task, sep, path = item.partition("=")
        if not sep or not task or not path:
            raise GanimeError(f"--classifier {item!r}: use TASK=PATH, e.g. chibi=results/classifiers/chibi/model.pt")
        if task in out:
            raise GanimeError(f"--classifier {task}: given twice")
        out[task] = Path(path)
    return out


@torch.no_grad()
def render(G: torch.nn.Module, lat: torch.Tensor, batch_size: int) -> np.ndarray:
    """uint8 (B, H, W, 3) images of latents in the editing space (StyleGAN: one w broadcast to every layer; fixed
    noise maps, as the studio renders by default)."""
    dev = next(G.parameters()).device
    out = []
    for i in range(0, len(lat), batch_size):
        chunk = lat[i : i + batch_size].to(dev)
        if latent_space(G) == "w":
            img = G.synthesis(chunk.unsqueeze(1).repeat(1, G.num_layers, 1))
        else:
            img = G(chunk)
        out.append(images_to_uint8(img))
    return np.concatenate(out)


@torch.no_grad()
def score_images(
    model_path: Path, images: np.ndarray, device: torch.device, batch_size: int
) -> tuple[np.ndarray, dict]:
    """Sigmoid scores of a classifier model.pt for uint8 images (resized to its input size as it was trained)."""
    net, ckpt = load_classifier(model_path)
    net = net.to(device).eval()
    mean, std = (torch.tensor(v, device=device).view(1, -1, 1, 1) for v in norm_stats(net))
    size = int(ckpt["image_size"])
    out = []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(images[i : i + batch_size]).to(device).permute(0, 3, 1, 2).float() / 255.0
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(torch.sigmoid(net((x - mean) / std).float().squeeze(1)).cpu().numpy())
    return np.concatenate(out), ckpt


def fit_boundary(x: np.ndarray, scores: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, dict[str, float]]:
    """InterFaceGAN: the ``fraction`` highest-scoring latents against the lowest, a ridge-regularised logistic
    regression (Newton steps) on standardised inputs; returns the unit normal toward high scores and fit stats
    (accuracy on a held-out quarter, score spread)."""
    n = len(scores)
    k = max(2, int(round(fraction * n)))
    if 2 * k > n:
        k = n // 2
    order = np.argsort(scores, kind="stable")
    idx = np.concatenate([order[:k], order[-k:]])
    y = np.concatenate([np.zeros(k), np.ones(k)])
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(idx))
    idx, y = idx[perm], y[perm]
    n_val = max(2, len(idx) // 4)
    mu = x[idx].mean(0)
    sd = x[idx].std(0) + 1e-8
    xs = (x[idx] - mu) / sd
    xs = np.concatenate([xs, np.ones((len(xs), 1))], axis=1)
    tr, va = slice(n_val, None), slice(0, n_val)
    w = np.zeros(xs.shape[1])
    reg = RIDGE * np.eye(xs.shape[1])
    reg[-1, -1] = 0.0
    for _ in range(25):
        p = 1.0 / (1.0 + np.exp(-(xs[tr] @ w)))
        grad = xs[tr].T @ (p - y[tr]) + reg @ w
        hess = (xs[tr] * (p * (1 - p))[:, None]).T @ xs[tr] + reg + 1e-6 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-6:
            break
    acc = float((((xs[va] @ w) > 0) == (y[va] > 0.5)).mean())
    normal = w[:-1] / sd  # back to the unstandardised latent space
    norm = np.linalg.norm(normal)
    if not np.isfinite(norm) or norm == 0:
        raise GanimeError("the classifier scores do not separate any latents (all equal?); check the classifier")
    stats = {
        "val_accuracy": acc,
        "n_per_side": float(k),
        "score_low_mean": float(scores[order[:k]].mean()),
        "score_high_mean": float(scores[order[-k:]].mean()),
        "score_mean": float(scores.mean()),
    }
    return (normal / norm).astype(np.float32), stats


def plot_directions(path: Path, G: torch.nn.Module, d: Directions, mean: np.ndarray, seed: int, batch_size: int):
    """One row per direction: the latent of ``seed`` moved by FIGURE_STRENGTHS standard deviations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ganime_steps.gan import latents_for_seeds

    base = latents_for_seeds([seed], G.z_dim)
    if latent_space(G) == "w":
        base = G.mapping(base.to(next(G.parameters()).device)).cpu()
    rows = []
    for v, s in zip(d.vectors, d.scales, strict=True):
        steps = torch.tensor([[a * float(s)] for a in FIGURE_STRENGTHS])
        rows.append(base + steps * torch.from_numpy(v)[None])
    imgs = render(G, torch.cat(rows).float(), batch_size) if rows else np.zeros((0, 1, 1, 3), np.uint8)
    n, m = len(d.names), len(FIGURE_STRENGTHS)
    fig, axes = plt.subplots(max(n, 1), m, figsize=(1.4 * m + 1.8, 1.4 * max(n, 1) + 0.4), squeeze=False)
    for r in range(max(n, 1)):
        for c in range(m):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if n:
                ax.imshow(imgs[r * m + c], interpolation="nearest")
            if r == 0:
                ax.set_title(f"{FIGURE_STRENGTHS[c]:+g} sd", fontsize=8)
            if c == 0 and n:
                ax.set_ylabel(d.labels[r], fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(f"latent directions in {d.space.upper()} (seed {seed})", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def run_directions(
    *,
    generator: Path,
    out: Path,
    figure: Path,
    classifiers: dict[str, Path] | None = None,
    n: int = 5000,
    n_components: int = 8,
    fraction: float = 0.25,
    seed: int = 0,
    figure_seed: int = 0,
    batch_size: int = 64,
    device: str = "auto",
) -> DirectionsSummary:
    t0 = time.perf_counter()
    classifiers = classifiers or {}
    if n < 16:
        raise GanimeError(f"--n {n}: need at least 16 latents")
    if n_components < 0:
        raise GanimeError(f"--components {n_components}: must be >= 0")
    if not 0 < fraction <= 0.5:
        raise GanimeError(f"--fraction {fraction}: must be in (0, 0.5]; InterFaceGAN uses the top/bottom few %")
    if batch_size < 1:
        raise GanimeError(f"--batch-size {batch_size}: must be >= 1")
    for path in classifiers.values():
        read_classifier(path)  # a missing or foreign model file fails here, before any rendering
    dev = torch_device(device)
    G = load_generator(generator, device=str(dev))
    space = latent_space(G)
    lat = sample_latents(G, n, seed)
    d, mean = pca_directions(lat, n_components, space)
    log.info(
        "PCA of %d %s latents: top %d explain %.1f%% of the variance",
        n,
        space,
        len(d.names),
        100 * sum(d.meta["explained_variance_ratio"]),
    )
    stats: dict[str, dict[str, float]] = {}
    if classifiers:
        images = render(G, torch.from_numpy(lat), batch_size)
        for task, path in classifiers.items():
            scores, _ = score_images(Path(path), images, dev, batch_size)
            normal, st = fit_boundary(lat, scores, fraction, seed)
            proj = (lat - mean) @ normal
            d.names.append(task)
            d.labels.append(f"{task} (boundary acc {100 * st['val_accuracy']:.0f}%)")
            d.kinds.append("classifier")
            d.vectors = np.concatenate([d.vectors, normal[None]])
            d.scales = np.concatenate([d.scales, np.array([proj.std()], dtype=np.float32)])
            stats[task] = st
            log.info(
                "%s: boundary held-out accuracy %.3f, scores %.3f..%.3f",
                task,
                st["val_accuracy"],
                st["score_low_mean"],
                st["score_high_mean"],
            )
    d.save(
        Path(out),
        extra={
            "mean": mean.astype(np.float32),
            "explained_variance_ratio": np.array(d.meta["explained_variance_ratio"], dtype=np.float32),
            "info": np.array(json.dumps({"n": n, "seed": seed, "classifiers": stats})),
        },
    )
    plot_directions(Path(figure), G, d, mean, figure_seed, batch_size)
    return DirectionsSummary(
        generator=str(generator),
        out=str(out),
        figure=str(figure),
        space=space,
        n=n,
        names=list(d.names),
        explained_variance_ratio=list(d.meta["explained_variance_ratio"]),
        classifiers=stats,
        seconds=time.perf_counter() - t0,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ganime_steps.studio.directions",
        description="Latent directions of a trained generator (PCA and classifier boundaries) for the style studio.",
    )
    p.add_argument("--generator", type=Path, required=True, help="results/runs/<run>/generator.pt")
    p.add_argument(
        "--classifier",
        action="extend",
        nargs="+",
        default=[],
        metavar="TASK=PATH",
        help="a cleaning classifier's model.pt, e.g. chibi=results/classifiers/chibi/model.pt (repeatable)",
    )
    p.add_argument("--out", type=Path, required=True, help="directions.npz to write")
    p.add_argument("--figure", type=Path, required=True, help="PNG figure of each direction's effect")
    p.add_argument("--n", type=int, default=5000, help="latents sampled for PCA and scoring (default 5000)")
    p.add_argument("--components", type=int, default=8, help="principal components kept (default 8)")
    p.add_argument(
        "--fraction",
        type=float,
        default=0.25,
        help="top and bottom fraction of scores used as the two classes (default 0.25)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled latents")
    p.add_argument("--figure-seed", type=int, default=0, help="seed shown in the figure")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")

    def _handle(args: argparse.Namespace) -> DirectionsSummary:
        classifiers = parse_classifier_args(args.classifier)
        return call_with_args(run_directions, args, classifiers=classifiers, n_components=args.components)

    return run_cli(p, _handle, argv)


if __name__ == "__main__":
    raise SystemExit(main())
