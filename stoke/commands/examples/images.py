"""Synthetic photo-like JPEGs: the one maker of the images that stoke's examples (``stoke
demo``, ``naive_train``), ``stoke bench --example``, the benchmarks (``benchmarks/workloads.py``)
and the tests decode.

Owns: :func:`photo_like` (the pixels: a smooth random colour field, a few soft-edged shapes
and fine sensor-like texture, so that they compress and decode like photos of the same
size), :func:`encode_jpeg` (Pillow, 4:2:0 chroma), :func:`write_jpegs` (files made once,
never half-written), and the examples' cache (:func:`ensure_images`, :func:`label_of`).
Leaves to others: decoding and augmenting them (the examples and benchmarks' transforms).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

IMAGES_VERSION = 2  # in the examples' cache folder name; bump when the pixels change


def _pillow():
    try:
        import PIL.Image
        import PIL.ImageFilter
    except ImportError as exc:
        raise ImportError(
            "making the synthetic example JPEGs needs Pillow, which is not installed: "
            "pip install 'stoke[images]'"
        ) from exc
    return PIL.Image, PIL.ImageFilter


def photo_like(rng: np.random.Generator, size: int) -> np.ndarray:
    """A ``size`` x ``size`` x 3 uint8 image drawn from ``rng``: a smooth random colour field
    with soft blobs and texture, which compresses and decodes like a photo (natural images
    are mostly low-frequency with fine texture)."""
    Image, ImageFilter = _pillow()
    coarse = rng.integers(0, 256, size=(rng.integers(3, 8), rng.integers(3, 8), 3), dtype=np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC), np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for _ in range(int(rng.integers(2, 6))):  # soft-edged "objects"
        cy, cx = rng.uniform(0, size, 2)
        radius = rng.uniform(size / 10, size / 3)
        mask = 1.0 / (1.0 + np.exp(((yy - cy) ** 2 + (xx - cx) ** 2) ** 0.5 / 3 - radius / 3))
        field += mask[..., None] * (rng.uniform(-90, 90, 3).astype(np.float32))
    texture = rng.normal(0.0, 1.0, (size, size, 3)).astype(np.float32)
    texture = np.asarray(
        Image.fromarray(np.clip(texture * 40 + 128, 0, 255).astype(np.uint8))
        .filter(ImageFilter.GaussianBlur(0.8)), np.float32) - 128
    image = field + 0.35 * texture + rng.normal(0.0, 3.0, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """``image`` (HxWx3 uint8 RGB) as JPEG bytes at ``quality``, 4:2:0 chroma, with Pillow."""
    Image, _ = _pillow()
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality, subsampling="4:2:0")
    return buffer.getvalue()


def write_jpegs(paths: Sequence[str | os.PathLike], size: int, quality: int = 90,
                seed: int = 0) -> list[Path]:
    """Image ``i`` (``photo_like`` drawn from ``default_rng([seed, i])``) as a JPEG at
    ``paths[i]``, for each path that does not exist yet; written to a temporary name and
    renamed, so an interrupted run never leaves half a file. Idempotent; returns the paths."""
    written = [Path(p) for p in paths]
    for i, path in enumerate(written):
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp")
        partial.write_bytes(encode_jpeg(photo_like(np.random.default_rng([seed, i]), size),
                                        quality))
        os.replace(partial, path)
    return written


def example_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "stoke-examples"


def ensure_images(count: int = 512, size: int = 128, folder: str | os.PathLike | None = None
                  ) -> list[Path]:
    """``count`` photo-like JPEGs of ``size`` pixels, labelled by file name
    ``<label>_<index>.jpg``, in ``folder`` (default: the examples' cache). Made once;
    idempotent."""
    target = (Path(folder) if folder
              else example_dir() / f"jpeg-v{IMAGES_VERSION}-{size}px")
    return write_jpegs([target / f"{i % 10}_{i:05d}.jpg" for i in range(count)], size)


def label_of(path: str | os.PathLike) -> int:
    return int(Path(path).name.split("_")[0])
