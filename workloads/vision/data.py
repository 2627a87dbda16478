"""Images for the trainer: which source ``--data`` names, and the tensors a step consumes.

Every source yields ``(images, labels)`` per step for this rank: images uint8 NHWC (what a
decoder produces), labels int64. ``to_input`` turns them into normalised float NCHW on the
device; NHWC permuted to NCHW *is* the channels_last layout, so no copy is needed when the model
runs channels_last.

- **Encoded images** (``open_source``): an ImageFolder tree or tar shards, local or ``s3://``,
  decoded and augmented in DataLoader workers: ``imagesets.py`` (where the bytes are and in
  which order), ``images.py`` (decode, crop, flip, the tar layout), ``loader.py`` (workers,
  per-sample seeding, the resumable position, evaluation batches).
- **``--data synthetic``** (the default) is **not real data**: generated class patterns written
  once per node as JPEG files and tar shards under ``$TRAINYARD_CACHE/data/vision-synthetic/``
  (``ensure_synthetic``), then read like any other shards, so tests and the demo exercise the
  decode path. A CNN learns it in a few dozen steps: a falling loss shows the loop works and says
  nothing about accuracy on photos.
- **``SyntheticImages``**: the same kind of patterns generated as tensors on the device, no
  I/O: what ``bench`` times the model step on, with the input pipeline out of the picture.
- **Legacy ``.npy`` shards** (``ShardLoader``, ``write_shards``): already decoded uint8 arrays at
  the training resolution, flips only::

    manifest.json      {"format": "trainyard-vision-npy", "image_size": [H, W], "num_classes": K,
                        "shards": [{"images": "images-00000.npy", "labels": "labels-00000.npy",
                                    "count": N}, ...], "total": N}
    images-00000.npy   uint8 (N, H, W, 3), memory-mapped
    labels-00000.npy   integer (N,)

  Each epoch visits every image once in an order fixed by ``(seed, epoch)``; each step consumes
  ``world_size x batch`` images of that order and rank r takes its own slice (state ``{"epoch",
  "cursor"}``); flips are seeded by ``(seed, epoch, cursor, rank)``. ``s3://`` .npy shards are
  downloaded whole once per node into ``$TRAINYARD_CACHE/data/``.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from workloads.common import s3 as s3util
from workloads.common.checkpoint import cache_root
from workloads.common.cli import ConfigError, parse_s3_url
from workloads.common.dist import DistInfo, barrier

FORMAT = "trainyard-vision-npy"
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
"""ImageNet channel statistics, applied to every source (in [0, 1] units)."""
SYNTHETIC_DATA_SEED = 20240601
SYNTHETIC_NOISE = 0.25
"""Noise std of synthetic images (in [0, 1] units) around the class pattern."""


def _mix(*parts: int) -> int:
    """A 63-bit seed from small integers (stable across processes, unlike ``hash`` of str)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0]) >> 1


@functools.lru_cache(maxsize=4)
def _stats(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # Built once per device: a host-to-device copy every step would stall the GPU queue.
    return (torch.tensor(MEAN, device=device).view(1, 3, 1, 1),
            torch.tensor(STD, device=device).view(1, 3, 1, 1))


def to_input(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """uint8 NHWC -> normalised float32 NCHW on ``device`` (channels_last strides if asked)."""
    x = images.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
    mean, std = _stats(device)
    x = (x - mean) / std
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return x.contiguous(memory_format=fmt)


class SyntheticImages:
    """Class pattern + noise, generated on ``device``; see the module docstring."""

    def __init__(self, num_classes: int, image_size: int, batch: int, info: DistInfo,
                 seed: int, device: torch.device) -> None:
        self.num_classes, self.image_size, self.batch = num_classes, image_size, batch
        self.info, self.seed, self.device = info, seed, device
        g = torch.Generator().manual_seed(SYNTHETIC_DATA_SEED)
        colour = torch.rand(num_classes, 3, 1, 1, generator=g)
        texture = torch.rand(num_classes, 3, 4, 4, generator=g)
        self.patterns = (0.5 * colour + 0.5 * texture).to(device)  # (K, 3, 4, 4) in [0, 1]
        self.step = 0

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator(self.device).manual_seed(_mix(self.seed, self.step, self.info.rank))
        self.step += 1
        labels = torch.randint(0, self.num_classes, (self.batch,), generator=g,
                               device=self.device)
        size = (self.image_size, self.image_size)
        x = F.interpolate(self.patterns[labels], size=size, mode="bilinear", align_corners=False)
        x = x + SYNTHETIC_NOISE * torch.randn(x.shape, generator=g, device=self.device)
        images = (x.clamp_(0, 1) * 255).round_().to(torch.uint8).permute(0, 2, 3, 1)
        return images, labels

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])


def resolve_data(data: str, info: DistInfo) -> Path:
    """A local directory of shards for ``--data`` (collective: s3:// downloads once per node)."""
    if not data.startswith("s3://"):
        return Path(data)
    bucket, prefix = parse_s3_url(data, "--data")
    local = cache_root() / "data" / "s3" / bucket / prefix
    if info.is_local_main and not (local / "manifest.json").is_file():
        staging = local.with_name(local.name + ".dl")
        sizes = s3util.download_prefix(s3util.s3_client(), bucket, prefix, staging)
        if "manifest.json" not in sizes:
            raise ConfigError("--data", f"no manifest.json under {data} (build one with "
                                        "python -m workloads.vision.prepare, then upload it)")
        staging.rename(local)  # complete or absent: a crash mid-download is retried
    barrier()
    return local


class ShardLoader:
    """Deterministic, resumable batches of this rank's images from .npy shards. Opening checks
    the shards (ConfigError naming --data): uint8 NHWC images, a label per image, and with
    ``num_classes`` every label in 0..num_classes-1."""

    def __init__(self, root: Path, batch: int, info: DistInfo, seed: int, hflip: bool,
                 num_classes: int | None = None) -> None:
        try:
            self.manifest = json.loads((root / "manifest.json").read_text())
            fmt = self.manifest.get("format")
            if fmt == FORMAT:
                self.images = [np.load(root / s["images"], mmap_mode="r")
                               for s in self.manifest["shards"]]
                self.labels = [np.load(root / s["labels"]) for s in self.manifest["shards"]]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise ConfigError("--data", f"{str(root)!r}: unreadable shards: "
                                        f"{type(e).__name__}: {e}") from None
        if fmt != FORMAT:
            raise ConfigError("--data", f"{str(root)!r}: not a {FORMAT} manifest")
        for s, im, lb in zip(self.manifest["shards"], self.images, self.labels, strict=True):
            if im.dtype != np.uint8 or im.ndim != 4 or im.shape[3] != 3 or len(lb) != len(im):
                raise ConfigError("--data", f"{root}/{s['images']}: expected uint8 (N, H, W, 3) "
                                            f"images and N labels, got {im.dtype} {im.shape} and "
                                            f"{len(lb)} labels")
        if num_classes is not None:
            lo = min((int(lb.min()) for lb in self.labels if len(lb)), default=0)
            hi = max((int(lb.max()) for lb in self.labels if len(lb)), default=0)
            if lo < 0 or hi >= num_classes:
                raise ConfigError("--data", f"{str(root)!r} holds labels {lo}..{hi}, but the "
                                            f"model has {num_classes} classes (0.."
                                            f"{num_classes - 1}); pick a --preset with more "
                                            "classes or fix the labels")
        self._first = np.concatenate([[0], np.cumsum([len(x) for x in self.images])])
        self.n_images = int(self._first[-1])
        self.batch, self.info, self.seed, self.hflip = batch, info, seed, hflip
        self.per_step = info.world_size * batch
        if self.n_images < self.per_step:
            raise ConfigError("--data", f"{str(root)!r}: {self.n_images} images, but one step "
                                        f"needs {self.per_step}; use more data or a smaller "
                                        "--batch-size")
        self.epoch, self.cursor = 0, 0
        self._perm_epoch, self._perm = -1, np.empty(0, dtype=np.int64)

    def _order(self) -> np.ndarray:
        if self._perm_epoch != self.epoch:
            rng = np.random.default_rng([self.seed, self.epoch])
            self._perm, self._perm_epoch = rng.permutation(self.n_images), self.epoch
        return self._perm

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cursor + self.per_step > self.n_images:  # drop the remainder, new order
            self.epoch, self.cursor = self.epoch + 1, 0
        ids = self._order()[self.cursor:self.cursor + self.per_step]
        flip_seed = _mix(self.seed, self.epoch, self.cursor, self.info.rank)
        self.cursor += self.per_step
        ids = ids.reshape(self.info.world_size, self.batch)[self.info.rank]
        shard = np.searchsorted(self._first, ids, side="right") - 1
        offset = ids - self._first[shard]
        images = np.stack([self.images[s][o] for s, o in zip(shard, offset, strict=True)])
        labels = np.array([self.labels[s][o] for s, o in zip(shard, offset, strict=True)])
        x = torch.from_numpy(images)
        if self.hflip:
            g = torch.Generator().manual_seed(flip_seed)
            flip = torch.rand(len(x), generator=g) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(2), x)
        return x, torch.from_numpy(labels.astype(np.int64))

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])


def write_shards(out: Path, images: np.ndarray, labels: np.ndarray, num_classes: int,
                 shard_size: int = 10_000, source: str = "") -> dict:
    """Write ``images`` (uint8 N,H,W,3) and ``labels`` as shards + manifest under ``out``."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels {int(labels.min())}..{int(labels.max())} do not fit "
                         f"{num_classes} classes (0..{num_classes - 1})")
    out.mkdir(parents=True, exist_ok=True)
    shards = []
    for i, start in enumerate(range(0, len(images), shard_size)):
        names = {"images": f"images-{i:05d}.npy", "labels": f"labels-{i:05d}.npy"}
        np.save(out / names["images"], images[start:start + shard_size])
        np.save(out / names["labels"], labels[start:start + shard_size].astype(np.int64))
        shards.append({**names, "count": len(images[start:start + shard_size])})
    manifest = {"format": FORMAT, "image_size": list(images.shape[1:3]),
                "num_classes": num_classes, "shards": shards, "total": len(images),
                "source": source}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))  # last: marks complete
    return manifest


# ----- encoded images -----
SYNTHETIC_VERSION = 1
"""Bump when the synthetic generator changes, so caches of the old one are not reused."""


def synthetic_counts(num_classes: int) -> tuple[int, int]:
    """(train, val) images of the synthetic set: at least 2048 and 4 per class for training."""
    train = max(2048, 4 * num_classes)
    return train, train // 4


def ensure_synthetic(num_classes: int, image_size: int, info: DistInfo) -> Path:
    """The synthetic set's tar shards, written on first use by each node's local rank 0
    (collective: the other ranks wait at a barrier)."""
    root = cache_root() / "data" / "vision-synthetic" / \
        f"v{SYNTHETIC_VERSION}-k{num_classes}-s{image_size}"
    shards = root / "shards"
    if info.is_local_main and not (shards / "manifest.json").is_file():
        import os
        import shutil
        import tempfile

        from workloads.vision.images import write_synthetic
        from workloads.vision.prepare import build_shards

        root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=root, prefix=".build-"))
        train, val = synthetic_counts(num_classes)
        write_synthetic(work / "jpeg", num_classes, image_size, train, val)
        build_shards(work / "jpeg", work / "shards", shard_size=256, val_fraction=0.0, seed=0,
                     source="synthetic class patterns (not real data)")
        try:
            os.replace(work / "shards", shards)  # complete or absent
        except OSError:  # another process on this node finished first
            pass
        shutil.rmtree(work, ignore_errors=True)
    barrier()
    return shards


def open_source(data: str, image_size: int, num_classes: int, batch: int, info: DistInfo,
                seed: int, workers: int, prefetch: int, scale: tuple[float, float],
                hflip: bool):
    """The training source ``--data`` names: an ``ImageLoader`` over encoded images (synthetic
    included), or a legacy ``ShardLoader``. ConfigError naming --data when the set does not fit
    the model (more classes than outputs, too few images for one step)."""
    from workloads.vision.config import check_manifest, is_npy_shards
    from workloads.vision.imagesets import open_images
    from workloads.vision.loader import ImageLoader

    if data == "device":
        return SyntheticImages(num_classes, image_size, batch, info, seed, info.device)
    if data == "synthetic":
        data = str(ensure_synthetic(num_classes, image_size, info))
    elif not data.startswith("s3://") and is_npy_shards(Path(data)) or \
            data.startswith("s3://") and _s3_is_npy(data):
        root = resolve_data(data, info)
        check_manifest(root, image_size, num_classes)
        return ShardLoader(root, batch, info, seed, hflip, num_classes=num_classes)
    images = open_images(data)
    if len(images.classes) > num_classes:
        raise ConfigError("--data", f"{data!r} has {len(images.classes)} classes, the model "
                                    f"{num_classes} outputs; pick a --preset with more classes")
    return ImageLoader(images, batch, image_size, info, seed, workers, prefetch, scale, hflip)


def _s3_is_npy(url: str) -> bool:
    bucket, prefix = parse_s3_url(url, "--data")
    raw = s3util.get_bytes(s3util.s3_client(), bucket, s3util.join_key(prefix, "manifest.json"))
    try:
        return raw is not None and json.loads(raw).get("format") == FORMAT
    except (ValueError, AttributeError):
        return False
