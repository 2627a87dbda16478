"""Encoded images: decoding and augmentation (Pillow + numpy), tar shards, the synthetic set.

**Transforms** (each returns a uint8 HxWx3 array at the training resolution):

- ``train_transform``: random-resized crop (a box covering ``scale`` of the area at an aspect
  ratio in [3/4, 4/3], log-uniform; 10 tries, then the largest centred box of a ratio in that
  range; Szegedy et al. 2015, the ImageNet recipe) resized with bilinear filtering, then a
  horizontal flip with probability 1/2. All randomness comes from the ``rng`` passed in, which
  the loader derives from ``(seed, epoch, rank, sample index)``: the same sample gets the same
  crop whichever worker process decodes it.
- ``eval_transform``: resize the shorter side to ``size / 0.875`` (256 for 224) and take the
  centred ``size`` square. Deterministic.

torchvision 0.28.0 matches torch 2.13.0 (its wheel requires torch==2.13.0 exactly), but its
random transforms draw from torch's global generator, not one passed in, so per-sample
determinism would need a fork of the global RNG state per image; and a compiled extension for
crop + flip is not worth a dependency. Pillow does the decoding and resizing either way.

**Tar shards** are the webdataset layout: members ``<key>.jpg`` (or ``.png``) and ``<key>.cls``
(the class index as decimal text), a sample's members adjacent. ``tar_index`` reads only the
headers (and the small ``.cls`` members) to find every image's byte offset, so a worker reads one
image with one seek.

**Synthetic** (``--data synthetic``, the default): ``write_synthetic`` draws class patterns (a
fixed colour and 4x4 texture per class, upsampled, plus noise) and writes them as JPEG files in
an ImageFolder tree, so the real decode path runs on every test and demo. **Not real data**: a
CNN learns it in a few dozen steps; it shows the pipeline and the loop work, nothing about
accuracy on photos.
"""

from __future__ import annotations

import io
import math
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

EXTENSIONS = (".jpg", ".jpeg", ".png")
"""Image files an ImageFolder tree and a shard may hold."""
EVAL_CROP = 0.875
"""Centre crop fraction for evaluation: resize to size / 0.875, crop size (256 -> 224)."""
RATIO = (3 / 4, 4 / 3)
"""Aspect ratios a random-resized crop may take."""
SYNTHETIC_SEED = 20240601
"""Seed of the synthetic classes' patterns (independent of --seed: one fixed "dataset")."""


def decode(data: bytes) -> Image.Image:
    """JPEG/PNG bytes -> an RGB image (grey, palette, CMYK and alpha images converted)."""
    img = Image.open(io.BytesIO(data))
    img.load()
    return img if img.mode == "RGB" else img.convert("RGB")


def crop_box(width: int, height: int, rng: np.random.Generator,
             scale: tuple[float, float]) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a random-resized crop; see the module docstring."""
    area = width * height
    log_ratio = (math.log(RATIO[0]), math.log(RATIO[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        ratio = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * ratio))
        h = round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            left = int(rng.integers(0, width - w + 1))
            top = int(rng.integers(0, height - h + 1))
            return left, top, left + w, top + h
    ratio = width / height  # fallback: the whole image, cut to the nearest allowed ratio
    if ratio < RATIO[0]:
        w, h = width, round(width / RATIO[0])
    elif ratio > RATIO[1]:
        w, h = round(height * RATIO[1]), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def train_transform(img: Image.Image, size: int, rng: np.random.Generator,
                    scale: tuple[float, float], hflip: bool) -> np.ndarray:
    box = crop_box(img.width, img.height, rng, scale)
    out = img.resize((size, size), Image.Resampling.BILINEAR, box=box)
    if hflip and rng.random() < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(out, dtype=np.uint8)


def eval_transform(img: Image.Image, size: int) -> np.ndarray:
    short = round(size / EVAL_CROP)
    w, h = img.width, img.height
    nw, nh = (short, max(short, round(h * short / w))) if w <= h else \
        (max(short, round(w * short / h)), short)
    left, top = (nw - size) // 2, (nh - size) // 2
    scale_x, scale_y = w / nw, h / nh  # crop in the source's pixels: one resampling, not two
    box = (left * scale_x, top * scale_y, (left + size) * scale_x, (top + size) * scale_y)
    return np.asarray(img.resize((size, size), Image.Resampling.BILINEAR, box=box),
                      dtype=np.uint8)


# ----- tar shards (webdataset layout) -----
@dataclass(frozen=True)
class Member:
    """One image inside a tar shard."""

    offset: int
    """Byte offset of the image's data in the tar file."""
    size: int
    """Bytes of the encoded image."""
    label: int
    """Class index (from ``<key>.cls``)."""


def write_tar(path: Path, samples: list[tuple[str, bytes, str, int]]) -> int:
    """Write (key, encoded image, extension, label) samples as a tar shard; its size in bytes."""
    tmp = path.with_name(path.name + ".part")
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for key, data, ext, label in samples:
            for name, payload in ((f"{key}{ext}", data), (f"{key}.cls", str(label).encode())):
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(payload), 0, 0o644
                tar.addfile(info, io.BytesIO(payload))
    tmp.replace(path)
    return path.stat().st_size


def tar_index(path: Path) -> list[Member]:
    """Every image in the shard, in stored order; ValueError naming what is wrong."""
    members: list[Member] = []
    pending: dict[str, tuple[int, int]] = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for m in tar:
                key, dot, ext = m.name.rpartition(".")
                if not dot or not m.isfile():
                    continue
                if "." + ext.lower() in EXTENSIONS:
                    pending[key] = (m.offset_data, m.size)
                elif ext == "cls":
                    label = int(tar.extractfile(m).read().decode().strip())
                    if key not in pending:
                        raise ValueError(f"{m.name} has no image before it")
                    offset, size = pending.pop(key)
                    members.append(Member(offset, size, label))
    except (tarfile.TarError, OSError, EOFError, UnicodeDecodeError) as e:
        raise ValueError(f"unreadable tar ({type(e).__name__}: {e})") from None
    if pending:
        raise ValueError(f"{len(pending)} images without a .cls label, e.g. {next(iter(pending))}")
    return members


# ----- the synthetic set -----
def synthetic_image(label: int, num_classes: int, size: int, rng: np.random.Generator,
                    noise: float = 0.25) -> Image.Image:
    """Class ``label``'s pattern plus Gaussian noise (std ``noise`` in [0, 1] units)."""
    g = np.random.default_rng(SYNTHETIC_SEED)
    colour = g.random((num_classes, 1, 1, 3))
    texture = g.random((num_classes, 4, 4, 3))
    pattern = (0.5 * colour[label] + 0.5 * texture[label]) * 255
    small = Image.fromarray(pattern.round().astype(np.uint8))
    base = np.asarray(small.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
    x = base + noise * 255 * rng.standard_normal(base.shape, dtype=np.float32)
    return Image.fromarray(x.clip(0, 255).round().astype(np.uint8))


def write_synthetic(out: Path, num_classes: int, image_size: int, train: int, val: int) -> None:
    """An ImageFolder tree ``out/{train,val}/class-NNNN/*.jpg`` of synthetic images, generated a
    little larger than ``image_size`` (so crops have room), labels balanced, JPEG quality 90."""
    size = round(image_size / EVAL_CROP)
    rng = np.random.default_rng(SYNTHETIC_SEED + 1)
    for split, n in (("train", train), ("val", val)):
        (out / split).mkdir(parents=True, exist_ok=True)  # both, so the tree reads as split
        for i in range(n):
            label = i % num_classes
            d = out / split / f"class-{label:04d}"
            d.mkdir(parents=True, exist_ok=True)
            synthetic_image(label, num_classes, size, rng).save(d / f"{i:07d}.jpg", quality=90)
