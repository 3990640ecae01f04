"""Synthetic photo-like JPEGs for the built-in examples, made once into a cache folder."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np


def example_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "stoke-examples"


def ensure_images(count: int = 512, size: int = 128, folder: str | os.PathLike | None = None
                  ) -> list[Path]:
    """``count`` JPEGs of ``size`` pixels (smooth colour fields, blobs and noise: they decode
    like photos), labelled by file name ``<label>_<index>.jpg``. Made once; idempotent."""
    from PIL import Image

    target = Path(folder) if folder else example_dir() / f"jpeg-{size}px"
    target.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = target / f"{i % 10}_{i:05d}.jpg"
        paths.append(path)
        if path.exists():
            continue
        rng = np.random.default_rng(i)
        coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        field = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC), np.float32)
        image = np.clip(field + rng.normal(0, 12, field.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=90)
        partial = path.with_suffix(".tmp")
        partial.write_bytes(buffer.getvalue())
        os.replace(partial, path)
    return paths


def label_of(path: str | os.PathLike) -> int:
    return int(Path(path).name.split("_")[0])
