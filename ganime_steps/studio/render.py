"""The studio's renderer: one loaded generator -> PNG/GIF bytes for seeds, truncation, style mixing, noise, latent
directions, interpolation and grids, with every input checked and the work per call bounded.

Latent space per family: StyleGAN edits W (one w per style layer, so mixing and per-layer noise exist); the
DCGAN-style families (DCGAN, WGAN-GP, DRAGAN, SNGAN) and ProGAN have no mapping network and edit z (no mixing, no
noise inputs). ProGAN pixel-normalises z, so truncation (scaling z) does nothing there.

Determinism: an image depends only on its parameters. Seeds pick latents with
:func:`ganime_steps.gan.latents_for_seeds`; StyleGAN noise is the generator's fixed noise maps (as ``generate
--noise const``) or, with ``noise_seed``, per-image maps from :meth:`StyleGenerator.seeded_noise`, scaled by the
noise strength on the chosen layers.
"""

from __future__ import annotations

import io
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ganime_steps.common import GanimeError
from ganime_steps.gan import latents_for_seeds, load_generator
from ganime_steps.gan.networks import images_to_uint8
from ganime_steps.generate import parse_seeds
from ganime_steps.imaging import make_grid

MAX_SEED = 2**32 - 1  # exact in JavaScript numbers and in every URL
TRUNCATION_RANGE = (0.0, 2.0)
NOISE_RANGE = (0.0, 5.0)
STRENGTH_RANGE = (-10.0, 10.0)  # direction strength, in standard deviations of the latents along it
MAX_DIRECTIONS = 16  # directions combined in one request
MAX_GRID = 64  # images in one grid
MAX_FRAMES = 32  # frames of one interpolation
MAX_PIXELS = 64 * 256 * 256  # pixels rendered by one request (64 images of 256 px)
GIF_MS_RANGE = (20, 2000)
PCA_SAMPLES = 2000  # latents sampled for the on-the-fly PCA when no directions.npz is given
PCA_COMPONENTS = 8
CACHE_ITEMS = 256


class BadParameter(GanimeError):
    """A malformed or out-of-range parameter, judged without the generator: the limits in ``info()["limits"]`` and
    the syntax of a list (HTTP 422, as FastAPI's own validation). A plain :class:`GanimeError` from the renderer is a
    well-formed parameter this generator cannot use: an unknown direction, layers it lacks, mixing or noise on a
    family without styles, more pixels than the cap at its resolution (HTTP 400)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def layer_groups(num_layers: int) -> dict[str, list[int]]:
    """StyleGAN's style layers by resolution: coarse 4-8 px (0-3), middle 16-32 px (4-7), fine 64 px and up (8-)."""
    return {
        "coarse": list(range(min(4, num_layers))),
        "middle": list(range(4, min(8, num_layers))),
        "fine": list(range(8, num_layers)),
        "all": list(range(num_layers)),
    }


GROUP_NAMES = ("coarse", "middle", "fine", "all")


def layer_spec(text: str, what: str = "mix_layers") -> str | list[int]:
    """The syntax of a layer list, without a generator: a group name, or sorted layer indices from '2-5' | '0,3,4'.
    Malformed: :class:`BadParameter`."""
    text = text.strip().lower()
    if text in GROUP_NAMES:
        return text
    out: set[int] = set()
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = (int(s) for s in part.split("-", 1))
                if hi < lo or hi - lo > 1000:
                    raise ValueError
                out.update(range(lo, hi + 1))
            else:
                out.add(int(part))
    except ValueError:
        raise BadParameter(
            what, f"{what}={text!r}: use coarse, middle, fine, all, a range like 0-3 or a list like 0,2,5"
        ) from None
    return sorted(out)


def parse_layers(text: str, num_layers: int, what: str = "mix_layers") -> list[int]:
    """'coarse' | 'middle' | 'fine' | 'all' | '2-5' | '0,3,4' -> sorted layer indices, each < num_layers. Malformed:
    :class:`BadParameter`; layers this generator lacks: :class:`GanimeError`."""
    spec = layer_spec(text, what)
    if isinstance(spec, str):
        layers = layer_groups(num_layers)[spec]
        if not layers:
            raise GanimeError(f"{what}={spec}: this {num_layers}-layer generator has no {spec} layers")
        return layers
    if max(spec) >= num_layers:
        raise GanimeError(f"{what}={text.strip()!r}: this generator's layers are 0 to {num_layers - 1}")
    return spec


def parse_seed_list(text: str, limit: int = MAX_GRID) -> list[int]:
    """'0-15' or '1,5,9' -> seeds (order kept), at most ``limit`` of them, each in [0, MAX_SEED]."""
    try:
        return parse_seeds(text, limit=limit, max_seed=MAX_SEED, what="seeds=")
    except GanimeError as exc:  # every failure here is the syntax or a fixed limit
        raise BadParameter("seeds", str(exc)) from None


def _finite_in(value: float, lo: float, hi: float, what: str, param: str | None = None) -> float:
    value = float(value)
    if not math.isfinite(value) or not lo <= value <= hi:
        raise BadParameter(param or what, f"{what}={value}: must be a finite number from {lo:g} to {hi:g}")
    return value


@dataclass
class Directions:
    """Unit vectors in the generator's latent space (``space`` w or z) with a scale each (the standard deviation
    of sampled latents along it), so strength 1 moves one standard deviation."""

    space: str
    names: list[str]
    labels: list[str]
    kinds: list[str]
    vectors: np.ndarray  # (K, dim) unit rows
    scales: np.ndarray  # (K,)
    meta: dict[str, Any] = field(default_factory=dict)

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise GanimeError(
                f"direction {name!r}: unknown; available: {', '.join(self.names) or 'none'} (see /api/info)"
            ) from None

    def to_info(self) -> list[dict[str, Any]]:
        return [
            {"name": n, "label": lb, "kind": k, "scale": float(s)}
            for n, lb, k, s in zip(self.names, self.labels, self.kinds, self.scales, strict=True)
        ]

    def save(self, path: Path, extra: dict[str, np.ndarray] | None = None) -> None:
        from ganime_steps.common import atomic_path

        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(
                    fh,
                    space=np.array(self.space),
                    names=np.array(self.names),
                    labels=np.array(self.labels),
                    kinds=np.array(self.kinds),
                    vectors=self.vectors.astype(np.float32),
                    scales=self.scales.astype(np.float32),
                    **(extra or {}),
                )

    @classmethod
    def load(cls, path: str | Path) -> Directions:
        path = Path(path)
        if not path.is_file():
            raise GanimeError(f"{path}: directions file not found; run the directions rule or drop --directions")
        try:
            with np.load(path, allow_pickle=False) as npz:
                d = cls(
                    space=str(npz["space"]),
                    names=[str(s) for s in npz["names"]],
                    labels=[str(s) for s in npz["labels"]],
                    kinds=[str(s) for s in npz["kinds"]],
                    vectors=np.asarray(npz["vectors"], dtype=np.float32),
                    scales=np.asarray(npz["scales"], dtype=np.float32),
                )
        except (KeyError, ValueError, OSError) as exc:
            raise GanimeError(f"{path}: not a directions.npz ({exc}); rerun the directions rule") from exc
        if d.vectors.ndim != 2 or len(d.vectors) != len(d.names) or len(d.scales) != len(d.names):
            raise GanimeError(f"{path}: inconsistent directions arrays; rerun the directions rule")
        return d


def latent_space(G: torch.nn.Module) -> str:
    return "w" if getattr(G, "truncation_space", "z") == "w" else "z"


@torch.no_grad()
def sample_latents(G: torch.nn.Module, n: int, seed: int, batch_size: int = 256) -> np.ndarray:
    """(n, dim) latents in the editing space: w = mapping(z) for StyleGAN, z otherwise; reproducible from seed."""
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed))
    if latent_space(G) == "z":
        return z.numpy()
    dev = next(G.parameters()).device
    return torch.cat([G.mapping(z[i : i + batch_size].to(dev)).float().cpu() for i in range(0, n, batch_size)]).numpy()


def pca_directions(latents: np.ndarray, k: int, space: str) -> tuple[Directions, np.ndarray]:
    """GANSpace: the top ``k`` principal components of sampled latents; returns (directions, mean latent)."""
    mean = latents.mean(0)
    x = latents - mean
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    k = min(k, len(s))
    var = s**2 / max(len(latents) - 1, 1)
    ratio = var / max(var.sum(), 1e-12)
    names = [f"pc{i}" for i in range(k)]
    labels = [f"PCA {i + 1} ({100 * ratio[i]:.1f}% var)" for i in range(k)]
    d = Directions(
        space=space,
        names=names,
        labels=labels,
        kinds=["pca"] * k,
        vectors=vt[:k].astype(np.float32),
        scales=np.sqrt(var[:k]).astype(np.float32),
        meta={"explained_variance_ratio": ratio[:k].tolist()},
    )
    return d, mean


@dataclass(frozen=True)
class Params:
    """Every knob of one image except the seed (checked by :meth:`Renderer.check`)."""

    truncation: float = 1.0
    noise: float = 1.0
    noise_seed: int | None = None
    noise_layers: str = "all"
    mix_seed: int | None = None
    mix_layers: str = "coarse"
    directions: tuple[tuple[str, float], ...] = ()


def parse_directions(text: str | None) -> tuple[tuple[str, float], ...]:
    """'pc0:1.5,chibi:-2' -> (('pc0', 1.5), ('chibi', -2.0))."""
    if not text:
        return ()
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, value = part.partition(":")
        if not sep or not name.strip():
            raise BadParameter("directions", f"directions={text!r}: use name:strength pairs like pc0:1.5,chibi:-2")
        try:
            strength = float(value)
        except ValueError:
            raise BadParameter(
                "directions", f"directions={text!r}: strength {value!r} of {name!r} is not a number"
            ) from None
        out.append((name.strip(), _finite_in(strength, *STRENGTH_RANGE, f"strength of {name.strip()}", "directions")))
    if len(out) > MAX_DIRECTIONS:
        raise BadParameter("directions", f"directions={text!r}: at most {MAX_DIRECTIONS} directions per request")
    return tuple(out)


class Busy(Exception):
    """The renderer is saturated; the caller should retry later (HTTP 429)."""


class Renderer:
    """A loaded generator behind a lock: one render at a time, a bounded queue, a small cache of encoded images."""

    def __init__(
        self,
        generator: str | Path,
        directions: str | Path | None = None,
        device: str = "cpu",
        max_waiting: int = 8,
        wait_s: float = 30.0,
        pca_seed: int = 0,
    ) -> None:
        self.path = Path(generator)
        self.G = load_generator(self.path, device=device)
        self.device = next(self.G.parameters()).device
        self.space = latent_space(self.G)
        self.family = str(getattr(getattr(self.G, "cfg", None), "arch", "dcgan"))
        self.resolution = int(self.G.resolution)
        self.num_layers = int(getattr(self.G, "num_layers", 0)) if self.space == "w" else 0
        self._lock = threading.Lock()
        self._waiting = threading.BoundedSemaphore(max_waiting)
        self._wait_s = wait_s
        self._cache: OrderedDict[tuple, bytes] = OrderedDict()
        self._cache_lock = threading.Lock()
        if directions is None and (self.path.parent / "directions.npz").is_file():
            directions = self.path.parent / "directions.npz"
        if directions is not None:
            self.directions = Directions.load(directions)
            self.directions_source = str(directions)
        else:
            self.directions, _ = pca_directions(
                sample_latents(self.G, PCA_SAMPLES, pca_seed), PCA_COMPONENTS, self.space
            )
            self.directions_source = f"PCA of {PCA_SAMPLES} sampled latents (computed at start-up)"
        dim = self.G.z_dim
        if self.directions.space != self.space or self.directions.vectors.shape[1] != dim:
            raise GanimeError(
                f"{self.directions_source}: directions in {self.directions.space} "
                f"({self.directions.vectors.shape[1]}-d) do not fit this generator ({self.space}, {dim}-d); "
                "recompute them for this run"
            )
        self._dir_vectors = torch.from_numpy(self.directions.vectors * self.directions.scales[:, None]).to(self.device)

    # -- description ------------------------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        style = self.space == "w"
        return {
            "generator": str(self.path),
            "family": self.family,
            "resolution": self.resolution,
            "latent_space": self.space,
            "z_dim": int(self.G.z_dim),
            "num_layers": self.num_layers,
            "layer_groups": {k: v for k, v in layer_groups(self.num_layers).items() if v} if style else {},
            "supports": {
                "truncation": getattr(self.G, "truncation_space", "z") != "none",
                "mixing": style,
                "noise": style,
                "directions": True,
            },
            "directions": self.directions.to_info(),
            "directions_source": self.directions_source,
            "limits": {
                "seed": [0, MAX_SEED],
                "truncation": list(TRUNCATION_RANGE),
                "noise": list(NOISE_RANGE),
                "strength": list(STRENGTH_RANGE),
                "grid": MAX_GRID,
                "frames": MAX_FRAMES,
                "gif_ms": list(GIF_MS_RANGE),
            },
        }

    # -- validation ---------------------------------------------------------------------------------------------------

    def check_seed(self, seed: int, what: str = "seed") -> int:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise BadParameter(what, f"{what}={seed}: must be an integer from 0 to {MAX_SEED}")
        return seed

    def check(self, p: Params) -> Params:
        _finite_in(p.truncation, *TRUNCATION_RANGE, "truncation")
        _finite_in(p.noise, *NOISE_RANGE, "noise")
        style = self.space == "w"
        if p.mix_seed is not None:
            if not style:
                raise GanimeError(f"mix_seed: a {self.family} generator has no style layers; drop mix_seed")
            self.check_seed(p.mix_seed, "mix_seed")
            parse_layers(p.mix_layers, self.num_layers, "mix_layers")
        if not style and (p.noise != 1.0 or p.noise_seed is not None or p.noise_layers != "all"):
            raise GanimeError(f"noise: a {self.family} generator has no noise inputs; drop the noise parameters")
        if style:
            parse_layers(p.noise_layers, self.num_layers, "noise_layers")
            if p.noise_seed is not None:
                self.check_seed(p.noise_seed, "noise_seed")
        for name, _ in p.directions:
            self.directions.index(name)
        return p

    # -- rendering ------------------------------------------------------------------------------------------------

    def _latents(self, seeds: list[int], p: Params) -> torch.Tensor:
        """(B, L, w_dim) for StyleGAN (truncated, mixed, edited), (B, z_dim) for the z families."""
        z = latents_for_seeds(seeds, self.G.z_dim).to(self.device)
        if self.space == "w":
            ws = self.G.map(z, p.truncation)
            if p.mix_seed is not None:
                layers = parse_layers(p.mix_layers, self.num_layers)
                w2 = self.G.map(latents_for_seeds([p.mix_seed], self.G.z_dim).to(self.device), p.truncation)
                ws[:, layers] = w2[:, layers]
            return ws + self._offset_for(p).to(ws.dtype)
        if getattr(self.G, "truncation_space", "z") == "z":
            z = z * p.truncation
        return z + self._offset_for(p).to(z.dtype)

    def _offset_for(self, p: Params) -> torch.Tensor:
        off = torch.zeros(self.G.z_dim, device=self.device)
        for name, strength in p.directions:
            off = off + strength * self._dir_vectors[self.directions.index(name)]
        return off

    def _noise(self, batch: int, p: Params) -> list[torch.Tensor] | None:
        """Per-layer noise maps scaled by the strength on ``noise_layers`` (0 elsewhere); None = the fixed maps."""
        if p.noise == 1.0 and p.noise_seed is None and p.noise_layers == "all":
            return None
        on = set(parse_layers(p.noise_layers, self.num_layers, "noise_layers"))
        if p.noise_seed is not None:
            maps = self.G.seeded_noise([p.noise_seed], self.device)
        else:
            maps = [epi.fixed_noise for epi in self._epilogues()]
        return [m.expand(batch, -1, -1, -1) * (p.noise if i in on else 0.0) for i, m in enumerate(maps)]

    def _epilogues(self) -> list[torch.nn.Module]:
        G = self.G
        return [G.epi4[0], G.epi4[1]] + [blk[k] for blk in G.blocks for k in ("epi0", "epi1")]

    @torch.no_grad()
    def _synth(self, lat: torch.Tensor, p: Params) -> np.ndarray:
        if self.space == "w":
            return images_to_uint8(self.G.synthesis(lat, noise=self._noise(len(lat), p)))
        return images_to_uint8(self.G(lat))

    def _guarded(self, key: tuple, work) -> bytes:
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        if not self._waiting.acquire(blocking=False):
            raise Busy("too many requests are waiting; retry shortly")
        try:
            if not self._lock.acquire(timeout=self._wait_s):
                raise Busy("the renderer stayed busy; retry shortly")
            try:
                data = work()
            finally:
                self._lock.release()
        finally:
            self._waiting.release()
        with self._cache_lock:
            self._cache[key] = data
            while len(self._cache) > CACHE_ITEMS:
                self._cache.popitem(last=False)
        return data

    def _check_pixels(self, n: int) -> None:
        if n * self.resolution**2 > MAX_PIXELS:
            raise GanimeError(
                f"{n} images of {self.resolution} px exceed the per-request limit of {MAX_PIXELS} pixels; ask for fewer"
            )

    def image(self, seed: int, p: Params) -> bytes:
        self.check_seed(seed)
        self.check(p)
        return self._guarded(("image", seed, p), lambda: png(self._synth(self._latents([seed], p), p)[0]))

    def grid(self, seeds: list[int], p: Params, cols: int | None = None) -> bytes:
        if not seeds or len(seeds) > MAX_GRID:
            raise BadParameter("seeds", f"grid: give 1 to {MAX_GRID} seeds")
        if cols is not None and not 1 <= cols <= MAX_GRID:
            raise BadParameter("cols", f"cols={cols}: must be from 1 to {MAX_GRID}")
        for s in seeds:
            self.check_seed(s)
        self._check_pixels(len(seeds))
        self.check(p)

        def work() -> bytes:
            imgs = np.concatenate(
                [self._synth(self._latents(seeds[i : i + 16], p), p) for i in range(0, len(seeds), 16)]
            )
            return png(np.asarray(make_grid(imgs, ncol=cols)))

        return self._guarded(("grid", tuple(seeds), cols, p), work)

    def interpolate(self, seed: int, seed2: int, frames: int, p: Params, fmt: str = "png", ms: int = 100) -> bytes:
        self.check_seed(seed)
        self.check_seed(seed2, "seed2")
        if not 2 <= frames <= MAX_FRAMES:
            raise BadParameter("frames", f"frames={frames}: must be from 2 to {MAX_FRAMES}")
        if fmt not in ("png", "gif"):
            raise BadParameter("format", f"format={fmt!r}: use png (a strip) or gif (an animation)")
        if not GIF_MS_RANGE[0] <= ms <= GIF_MS_RANGE[1]:
            raise BadParameter("ms", f"ms={ms}: frame duration must be from {GIF_MS_RANGE[0]} to {GIF_MS_RANGE[1]} ms")
        self._check_pixels(frames)
        self.check(p)

        def work() -> bytes:
            ends = self._latents([seed, seed2], p)
            t = torch.linspace(0, 1, frames, device=self.device)
            if self.space == "w":  # linear in W (StyleGAN's perceptual path length convention)
                lat = torch.lerp(ends[:1], ends[1:], t.view(-1, 1, 1))
            else:  # spherical in z (the Gaussian prior's shell)
                lat = slerp(ends[0], ends[1], t)
            imgs = self._synth(lat, p)
            if fmt == "png":
                return png(np.concatenate(list(imgs), axis=1))
            return gif(imgs, ms)

        return self._guarded(("interp", seed, seed2, frames, fmt, ms, p), work)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    na, nb = a / a.norm(), b / b.norm()
    omega = torch.arccos((na * nb).sum().clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    t = t.view(-1, 1)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def gif(frames: np.ndarray, ms: int) -> bytes:
    buf = io.BytesIO()
    ims = [Image.fromarray(f) for f in frames]
    ims[0].save(buf, format="GIF", save_all=True, append_images=ims[1:], duration=ms, loop=0, optimize=False)
    return buf.getvalue()
