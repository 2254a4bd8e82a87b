"""Image sets: the project's one reader of packed ``.npy`` image arrays (:func:`load_packed`), Lanczos resizing as the
packer does (:func:`resize_images`), and :class:`ImageSet` (a packed ``.npy``, a folder or a ``.zip`` of images, read
lazily by index) for ``evaluate compare``.
"""

from __future__ import annotations

import logging
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np

from ganime_steps.common import GanimeError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


PACK_FIX = "rerun the pack stage"


def load_packed(path: Path, flag: str | None = "--data", *, fix: str | None = PACK_FIX) -> np.ndarray:
    """Memory-map a packed image array (the pack stage's ``.npy``), checking it is a non-empty uint8 (N, H, W, 3):
    the project's one ``.npy`` image reader. Errors are one line, ``<flag> <path>: ...`` (just ``<path>`` when
    ``flag`` is None), ending in ``; <fix>`` when one is given. Size checks (square, a resolution) are the
    caller's."""
    path = Path(path)
    where = f"{flag} {path}" if flag else str(path)
    then = f"; {fix}" if fix else ""
    if not path.is_file():
        raise GanimeError(f"{where}: file not found; run the pack stage for this dataset first")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise GanimeError(f"{where}: not a readable .npy array ({exc}){then}") from exc
    if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3 or not len(arr):
        got = f"{getattr(arr, 'dtype', type(arr).__name__)} {getattr(arr, 'shape', '')}"
        raise GanimeError(f"{where}: expected a non-empty uint8 array (N, H, W, 3), got {got}{then}")
    return arr


def resize_images(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Lanczos-resize uint8 (N, H, W, 3) images to (N, size[0], size[1], 3), like the dataset packer."""
    from PIL import Image

    h, w = size
    if images.shape[1:3] == (h, w):
        return images
    out = np.empty((len(images), h, w, 3), dtype=np.uint8)
    for i, im in enumerate(images):
        out[i] = np.asarray(Image.fromarray(im).resize((w, h), Image.Resampling.LANCZOS))
    return out


class ImageSet:
    """Images read lazily by index, all at one size: ``set[indices]`` → uint8 (B, H, W, 3).

    A packed array keeps its size. Files keep theirs when they all share one; otherwise every image is padded to a
    square on white and Lanczos-resized to ``size`` (default: the most common longer side), as the packer does.
    """

    def __init__(self, path: Path, flag: str, size: int | None = None):
        from PIL import Image

        self.path, self.flag = Path(path), flag
        self._array = None
        self._zip = None
        if not self.path.exists():
            raise GanimeError(f"{flag} {path}: not found; give a packed .npy, a folder of images or a .zip of images")
        if self.path.is_file() and self.path.suffix.lower() == ".npy":
            arr = load_packed(self.path, flag, fix=None)
            self._array = arr
            self.names = None
            native = {tuple(arr.shape[1:3]): len(arr)}
        else:
            if self.path.is_dir():
                files = sorted(
                    p
                    for p in self.path.rglob("*")
                    if p.suffix.lower() in IMAGE_SUFFIXES
                    and p.is_file()
                    and not any(part.startswith(".") for part in p.relative_to(self.path).parts)
                )
                self.names = [str(p.relative_to(self.path)) for p in files]
            elif zipfile.is_zipfile(self.path):
                self._zip = zipfile.ZipFile(self.path)
                self.names = sorted(
                    n
                    for n in self._zip.namelist()
                    if Path(n).suffix.lower() in IMAGE_SUFFIXES
                    and not n.endswith("/")
                    and not n.startswith("__MACOSX/")
                    and not any(part.startswith(".") for part in Path(n).parts)
                )
            else:
                raise GanimeError(
                    f"{flag} {path}: neither a packed .npy, a folder nor a .zip; give one of those "
                    f"(images: {', '.join(IMAGE_SUFFIXES)})"
                )
            if not self.names:
                raise GanimeError(f"{flag} {path}: no images found ({', '.join(IMAGE_SUFFIXES)}); check the path")
            native = Counter()
            for name in self.names:
                try:  # the header only
                    with self._open(name) as fh, Image.open(fh) as im:
                        w, h = im.size
                except Exception as exc:
                    raise GanimeError(f"{flag} {path}: {name} is not a readable image ({exc}); remove it") from exc
                native[(h, w)] += 1
        if size is not None:
            self.size = (size, size)
        elif len(native) == 1:
            self.size = next(iter(native))
        else:
            side = Counter({max(hw): 0 for hw in native})
            for hw, count in native.items():
                side[max(hw)] += count
            s = side.most_common(1)[0][0]
            self.size = (s, s)
            log.warning("%s %s: images of %d sizes; padding and resizing all to %dx%d", flag, path, len(native), s, s)

    def _open(self, name: str):
        return self._zip.open(name) if self._zip is not None else open(self.path / name, "rb")

    def _read_bytes(self, name: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(name)
        return (self.path / name).read_bytes()

    def __len__(self) -> int:
        return len(self._array) if self._array is not None else len(self.names)

    def __getitem__(self, indices) -> np.ndarray:
        from PIL import Image

        from ganime_steps import imaging

        indices = np.atleast_1d(np.asarray(indices))
        if self._array is not None:
            return resize_images(np.asarray(self._array[indices]), self.size)
        h, w = self.size
        out = np.empty((len(indices), h, w, 3), dtype=np.uint8)
        for j, i in enumerate(indices):
            name = self.names[int(i)]
            img = imaging.decode_image(self._read_bytes(name), what=f"{self.flag} {self.path}: {name}")
            if img.size == (w, h):
                out[j] = np.asarray(img)
            elif h == w:
                out[j] = imaging.square_resize(img, h)
            else:
                out[j] = np.asarray(img.resize((w, h), Image.Resampling.LANCZOS))
        return out
