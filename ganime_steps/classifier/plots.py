"""Classifier figures: the PR curve and the confusion matrix of each split block of metrics.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ganime_steps.common import atomic_path


def _save_figure(fig, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)  # Agg explicitly: no display, no pyplot global state
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def plot_pr(path: Path, blocks: list[dict[str, Any]], threshold: float, task: str) -> None:
    """PR curve of each split block (test first when there is one), with the operating point at ``threshold``."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 4.2))
    ax = fig.add_subplot()
    for block, color, style in zip(blocks, ("tab:blue", "tab:gray"), ("-", "--"), strict=False):
        pr = block["pr_curve"]
        recall, precision = np.asarray(pr["recall"]), np.asarray(pr["precision"])
        # "pre": the precision at recall r_i holds over (r_{i-1}, r_i], as in average precision
        label = f"{block['split']}, n={block['n']}"
        ax.step(np.r_[0.0, recall], np.r_[precision[:1], precision], where="pre", color=color, ls=style, label=label)
        ax.plot([block["recall"]], [block["precision"]], "o", color=color)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02))
    ax.set_title(f"{task}: PR curves, dots at threshold {threshold:.3f}", fontsize=10)
    ax.legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    _save_figure(fig, path)


def plot_confusion(path: Path, blocks: list[dict[str, Any]], task: str, threshold: float) -> None:
    """One confusion matrix panel per split block (test first when there is one)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4 * len(blocks), 3.8))
    names = [f"not {task}", task]
    for i, block in enumerate(blocks):
        cm = np.asarray(block["confusion"])
        ax = fig.add_subplot(1, len(blocks), i + 1)
        ax.imshow(cm, cmap="Blues", vmin=0, vmax=max(int(cm.max()), 1))
        for (r, c), v in np.ndenumerate(cm):
            ax.text(c, r, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
        ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=names, yticklabels=names, xlabel="predicted", ylabel="label")
        ax.set_title(f"{task}: {block['split']}\nthreshold {threshold:.3f}", fontsize=8)
    fig.tight_layout()
    _save_figure(fig, path)
