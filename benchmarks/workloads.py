"""The benchmark workload: synthetic photo-like JPEGs, and one transform that every loader runs.

What it owns:

- :func:`ensure_jpegs` writes N JPEG files once into a cache folder (stoke's synthetic
  photo-like images, :mod:`stoke.commands.examples.images`: smooth colour fields, a few soft
  shapes and sensor-like noise, quality 90, 4:2:0 chroma: sizes and decode times close to
  real photos of the same resolution) and :func:`load_samples` reads them back into memory,
  so no loader ever waits on the disk.
- :class:`JpegSamples` is the source every loader reads: ``samples[i] -> (jpeg bytes,
  label)``. Its length is the number of samples a run streams, which may exceed the number
  of distinct files (index ``i`` reads file ``i % files``), so short and long runs use the
  same files.
- :func:`transform` is THE per-sample transform, in plain Python: decode -> random crop ->
  random horizontal flip -> random brightness -> float32 in [0, 1] (+ brightness). Every
  Python loader (plain loop, stoke, tf.data ``numpy_function``, PyDataset, torch, grain)
  calls this same function with a per-sample ``numpy.random.Generator``.
- :func:`tf_native_transform` is the same work written in TensorFlow ops, for the reference
  row only (C++ kernels, no Python per sample).

The decoder is simplejpeg (libjpeg-turbo; releases the GIL) when installed, else Pillow
(libjpeg-turbo too). Neither is home-made. :data:`DECODER` says which one is in use; the benchmark records it.
"""

from __future__ import annotations

import io
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

try:  # pragma: no cover - depends on the environment
    import simplejpeg
except ImportError:  # pragma: no cover
    simplejpeg = None

DECODER = "simplejpeg" if simplejpeg is not None else "pillow"
CACHE_VERSION = 1  # bump when the generated images change


@dataclass(frozen=True)
class Workload:
    """What the benchmark measures. Defaults: 160x160 JPEGs (quality 90) cropped to 128x128,
    the crop size the design notes' measurements use (a 0.8 crop ratio, near ImageNet's
    224/256). Pass ``--image-size 256 --crop-size 224`` for the ImageNet-sized variant."""

    files: int = 512
    image_size: int = 160
    crop_size: int = 128
    quality: int = 90
    max_brightness_delta: float = 0.2
    classes: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.files < 1:
            raise ValueError(f"files must be >= 1. Received: files={self.files}")
        if not 1 <= self.crop_size <= self.image_size:
            raise ValueError(
                f"crop_size must be between 1 and image_size ({self.image_size}). "
                f"Received: crop_size={self.crop_size}"
            )
        if not 1 <= self.quality <= 100:
            raise ValueError(f"quality must be in 1..100. Received: quality={self.quality}")

    name = "jpeg"
    batch_size = 64

    def describe(self) -> str:
        return (f"{self.image_size}px JPEG -> crop {self.crop_size}, {self.files} files, "
                f"decoder {DECODER}")

    def as_dict(self) -> dict:
        return {**asdict(self), "name": self.name, "decoder": DECODER,
                "describe": self.describe()}


# -- data ---------------------------------------------------------------------------------
def default_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "stoke-bench"


def ensure_jpegs(workload: Workload, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The workload's JPEG files (:func:`stoke.commands.examples.images.write_jpegs`, the one
    maker of synthetic JPEGs), generated once into ``data_dir`` (default
    ``~/.cache/stoke-bench``) under a folder named by the parameters. Idempotent."""
    from stoke.commands.examples.images import write_jpegs

    root = Path(data_dir) if data_dir is not None else default_cache_dir()
    folder = root / (f"jpeg-v{CACHE_VERSION}-{workload.image_size}px-q{workload.quality}"
                     f"-seed{workload.seed}")
    paths = [folder / f"{i:06d}.jpg" for i in range(workload.files)]
    return write_jpegs(paths, workload.image_size, workload.quality, workload.seed)


def load_samples(workload: Workload, data_dir: str | os.PathLike | None = None
                 ) -> tuple[list[bytes], np.ndarray]:
    """The JPEG bytes of every file (generated if needed) and one int32 label per file."""
    paths = ensure_jpegs(workload, data_dir)
    jpegs = [p.read_bytes() for p in paths]
    labels = (np.arange(len(jpegs)) % workload.classes).astype(np.int32)
    return jpegs, labels


class JpegSamples:
    """``samples[i] -> (jpeg bytes, int32 label)`` for ``i < length``; reads file
    ``i % files``. Picklable (the bytes travel with it), so any loader's workers can hold it."""

    def __init__(self, jpegs: list[bytes], labels: np.ndarray, length: int | None = None):
        if not jpegs:
            raise ValueError("JpegSamples needs at least one JPEG.")
        self.jpegs = list(jpegs)
        self.labels = np.asarray(labels, np.int32)
        self.length = len(self.jpegs) if length is None else int(length)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[bytes, np.int32]:
        index = int(index)
        if not 0 <= index < self.length:
            raise IndexError(f"sample index {index} out of range [0, {self.length})")
        k = index % len(self.jpegs)
        return self.jpegs[k], self.labels[k]


# -- the transform ------------------------------------------------------------------------
def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """A per-sample generator for loaders that do not supply one: the one stoke gives its
    first ``map`` step, so they pay the same for randomness and draw the same numbers."""
    from stoke.data.program import sample_rng as stoke_sample_rng

    return stoke_sample_rng(seed, epoch, int(index), 0)


def decode(jpeg: bytes) -> np.ndarray:
    """JPEG bytes -> HxWx3 uint8 RGB at full resolution, with a well-kept decoder.

    Full resolution for every loader, like ``tf.io.decode_jpeg`` in the reference row
    (accurate integer DCT, smooth chroma upsampling in both). Pillow's ``draft`` only asks
    the JPEG decoder for RGB output here: scaling in the DCT would change what the random
    crop sees, so it is not used.
    """
    if simplejpeg is not None:
        return simplejpeg.decode_jpeg(jpeg, colorspace="RGB")
    from PIL import Image

    image = Image.open(io.BytesIO(jpeg))
    image.draft("RGB", image.size)
    return np.asarray(image.convert("RGB"))


def random_crop_and_flip(image: np.ndarray, rng: np.random.Generator, crop: int) -> np.ndarray:
    """A random ``crop`` x ``crop`` window of ``image``, flipped left-right half the time
    (a view: no copy yet)."""
    top = int(rng.integers(0, image.shape[0] - crop + 1))
    left = int(rng.integers(0, image.shape[1] - crop + 1))
    image = image[top:top + crop, left:left + crop]
    return image[:, ::-1] if rng.random() < 0.5 else image


def transform(sample: tuple[bytes, np.int32], rng: np.random.Generator,
              crop_size: int = 128, max_brightness_delta: float = 0.2
              ) -> tuple[np.ndarray, np.int32]:
    """Decode, random crop ``crop_size``, random flip, random brightness, float32 / 255.

    The plain-Python transform every Python loader runs. Brightness adds one delta drawn
    uniformly from ``[-max_brightness_delta, max_brightness_delta)`` to the [0, 1] image,
    like ``tf.image.random_brightness`` (no clipping).
    """
    jpeg, label = sample
    image = random_crop_and_flip(decode(jpeg), rng, crop_size)
    delta = np.float32(rng.uniform(-max_brightness_delta, max_brightness_delta))
    out = image.astype(np.float32)  # one contiguous copy, then in place
    out *= np.float32(1.0 / 255.0)
    out += delta
    return out, np.int32(label)


class Transform:
    """``transform`` bound to a workload's parameters: a picklable callable ``(sample, rng)``.
    (A class instead of ``functools.partial``, so loaders that inspect signatures see two
    parameters.)"""

    def __init__(self, workload: Workload) -> None:
        self.crop_size = workload.crop_size
        self.max_brightness_delta = workload.max_brightness_delta

    def __call__(self, sample, rng):
        return transform(sample, rng, self.crop_size, self.max_brightness_delta)


class TransformWithCaption(Transform):
    """The image transform plus a pure-Python step that holds the GIL, as when a sample is
    an image with a caption to tokenize (``words`` pseudo-random words, hashed character by
    character, the first 16 ids kept). The ids are folded into nothing the batch carries, so
    every loader returns the same (image, label) batches as with :class:`Transform`; what
    changes is that part of each sample's work is Python bytecode, which threads cannot run
    in parallel. ``words=0`` is :class:`Transform`."""

    def __init__(self, workload: Workload, words: int) -> None:
        super().__init__(workload)
        self.words = words

    def __call__(self, sample, rng):
        image, label = super().__call__(sample, rng)
        if tokenize_caption(int(label), self.words)[:1] == [-1]:  # never: ids are >= 0
            label = np.int32(-1)
        return image, label


CAPTION_WORDS = ("a", "photo", "of", "the", "small", "red", "dog", "running", "on", "grass",
                 "near", "an", "old", "wooden", "fence", "under", "bright", "blue", "sky")


def tokenize_caption(seed: int, words: int) -> list[int]:
    """A caption of ``words`` words drawn by an LCG from ``seed``, tokenized in pure Python."""
    state = (seed * 2654435761 + 1) % 2147483648
    ids = []
    for _ in range(words):
        state = (state * 1103515245 + 12345) % 2147483648
        h = 7
        for ch in CAPTION_WORDS[state % len(CAPTION_WORDS)]:
            h = (h * 31 + ord(ch)) % 65521
        ids.append(h)
    return ids[:16]


# -- the native TensorFlow reference --------------------------------------------------------
def tf_native_transform(workload: Workload):
    """The same work in TensorFlow ops, for ``Dataset.map``: ``(jpeg, label, index) ->
    (image, label)``. Randomness is stateless, seeded by ``(seed, index)``."""
    import tensorflow as tf

    crop = workload.crop_size
    delta = workload.max_brightness_delta
    seed = workload.seed

    def fn(jpeg, label, index):
        seeds = tf.random.experimental.stateless_split(
            tf.stack([tf.cast(seed, tf.int64), tf.cast(index, tf.int64)]), num=3)
        image = tf.io.decode_jpeg(jpeg, channels=3)
        image = tf.image.stateless_random_crop(image, [crop, crop, 3], seed=seeds[0])
        image = tf.image.stateless_random_flip_left_right(image, seed=seeds[1])
        image = tf.image.convert_image_dtype(image, tf.float32)  # / 255
        image = tf.image.stateless_random_brightness(image, delta, seed=seeds[2])
        return image, label

    return fn


class TransformedSamples:
    """``dataset[i] -> transform(samples[i], rng(seed, epoch, i))``: the per-sample view the
    peers without their own per-sample rng read (a torch map-style dataset, the body of a
    ``numpy_function``, a PyDataset's batch). Module-level, so it pickles by reference."""

    def __init__(self, samples: JpegSamples, fn, seed: int = 0, epoch: int = 0) -> None:
        self.samples = samples
        self.fn = fn
        self.seed = seed
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        index = int(index)
        return self.fn(self.samples[index], sample_rng(self.seed, self.epoch, index))


def collate(samples: list[tuple[np.ndarray, np.int32]]) -> tuple[np.ndarray, np.ndarray]:
    """A batch from ``(image, label)`` samples: what a hand-written loop does (``np.stack``)."""
    return np.stack([s[0] for s in samples]), np.array([s[1] for s in samples], np.int32)


# -- other workloads: numbers already in memory, no decoding --------------------------------
# The JPEG workload is the one issue 2 quotes; these two check that the engine, not that one
# workload, is fast: `pipeline_throughput.py --workload tabular|large-arrays`.
@dataclass(frozen=True)
class ArrayWorkload:
    """In-memory samples of one of two shapes of work:

    - ``tabular``: rows of 64 float32 features; the transform adds Gaussian noise and drops
      10% of the features (a few µs of numpy per sample: the per-sample cost of the loader
      itself shows). Batches of 256.
    - ``large-arrays``: 256x256x3 uint8 images; random crop 224, random flip, per-channel
      normalisation to float32 (600 KB out per sample, little compute: moving bytes shows).
      Batches of 32.
    """

    name: str
    distinct: int  # distinct samples in memory (the stream cycles through them)
    seed: int = 0

    SHAPES = {"tabular": (64,), "large-arrays": (256, 256, 3)}
    BATCH_SIZES = {"tabular": 256, "large-arrays": 32}

    def __post_init__(self) -> None:
        if self.name not in self.SHAPES:
            raise ValueError(f"unknown array workload {self.name!r}; one of {list(self.SHAPES)}")
        if self.distinct < 1:
            raise ValueError(f"distinct must be >= 1. Received: distinct={self.distinct}")

    @property
    def batch_size(self) -> int:
        return self.BATCH_SIZES[self.name]

    def describe(self) -> str:
        if self.name == "tabular":
            return f"tabular: {self.distinct} rows of 64 float32 -> noise + feature dropout"
        return (f"large-arrays: {self.distinct} 256px uint8 images -> crop 224, flip, "
                "normalise to float32")

    def as_dict(self) -> dict:
        return {**asdict(self), "describe": self.describe()}

    def load(self, length: int) -> ArraySamples:
        rng = np.random.default_rng(self.seed)
        shape = self.SHAPES[self.name]
        if self.name == "tabular":
            data = rng.normal(0.0, 1.0, (self.distinct, *shape)).astype(np.float32)
        else:
            data = rng.integers(0, 256, (self.distinct, *shape), dtype=np.uint8)
        labels = (np.arange(self.distinct) % 1000).astype(np.int32)
        return ArraySamples(data, labels, length)

    def transform(self):
        return tabular_transform if self.name == "tabular" else large_array_transform


class ArraySamples:
    """``samples[i] -> (data[i % n], label)`` for ``i < length``: like :class:`JpegSamples`
    for in-memory arrays. Picklable (the arrays travel with it; stoke sends big ones to its
    workers through shared memory, once)."""

    def __init__(self, data: np.ndarray, labels: np.ndarray, length: int) -> None:
        self.data = data
        self.labels = np.asarray(labels, np.int32)
        self.length = int(length)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.int32]:
        index = int(index)
        if not 0 <= index < self.length:
            raise IndexError(f"sample index {index} out of range [0, {self.length})")
        k = index % len(self.data)
        return self.data[k], self.labels[k]


def tabular_transform(sample, rng: np.random.Generator):
    """Gaussian noise (sigma 0.05) on every feature, then 10% of the features set to 0."""
    row, label = sample
    out = row + rng.normal(0.0, 0.05, row.shape).astype(np.float32)
    out[rng.random(row.shape) < 0.1] = 0.0
    return out, np.int32(label)


IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255


def large_array_transform(sample, rng: np.random.Generator, crop: int = 224):
    """Random crop ``crop``, random horizontal flip, (x - mean) / std per channel, float32."""
    image, label = sample
    out = random_crop_and_flip(image, rng, crop).astype(np.float32)
    out -= IMAGENET_MEAN
    out /= IMAGENET_STD
    return out, np.int32(label)
