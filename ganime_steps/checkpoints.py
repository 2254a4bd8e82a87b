"""One reader for the torch files the stages write: a classifier's ``model.pt``, a ``generator.pt`` and a training
``checkpoint.pt``. A missing, unreadable or foreign file is one GanimeError line with one wording: the file, what
was expected, and the step that makes it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ganime_steps.common import GanimeError


def load_torch_file(
    path: str | Path, *, what: str, made_by: str, required: Iterable[str] = (), weights_only: bool = True
) -> dict[str, Any]:
    """The dict saved at ``path`` (tensors on the CPU).

    ``what`` names the file for the user ("classifier model", "generator"); ``made_by`` the step that writes it
    ("the classifier train step"); ``required``: keys it must hold. ``weights_only=False`` only for files this
    project wrote itself that hold plain Python objects besides tensors."""
    import torch  # lazily: stages that never read a torch file do not import torch

    path = Path(path)
    if not path.is_file():
        raise GanimeError(f"{path}: {what} not found; run {made_by} first")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as exc:
        detail = (str(exc).splitlines() or [""])[0][:200]
        raise GanimeError(
            f"{path}: not a readable {what} ({type(exc).__name__}: {detail}); delete it and rerun {made_by}"
        ) from exc
    if not isinstance(obj, dict):
        raise GanimeError(f"{path}: not a {what} (it holds a {type(obj).__name__}); delete it and rerun {made_by}")
    missing = [key for key in required if key not in obj]
    if missing:
        raise GanimeError(f"{path}: not a {what} (missing {', '.join(missing)}); delete it and rerun {made_by}")
    return obj


def state_dict_hash(state_dict: dict, skip_prefixes: tuple[str, ...] = ()) -> str:
    """sha256 over sorted keys + dtype + shape + bytes of every tensor: a weights file's identity by content. Skips
    keys starting with ``skip_prefixes`` and BN's ``num_batches_tracked`` counters (bookkeeping, not weights)."""
    import torch

    h = hashlib.sha256()
    for key in sorted(state_dict):
        if key.startswith(skip_prefixes) or key.endswith("num_batches_tracked"):
            continue
        t = state_dict[key]
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{key} is a {type(t).__name__}, not a tensor")
        t = t.detach().to("cpu").contiguous()
        h.update(f"{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
