"""Batches of decoded, augmented images from an image set, in DataLoader worker processes.

One DataLoader serves the whole run. Its sampler yields batch positions ``(epoch, k)`` from the
resume point on; a worker turns a position into a batch: it reads the ``batch`` samples at
positions k·batch … of this rank's epoch order (``imagesets``), decodes and augments each with a
generator seeded from ``(seed, epoch, rank, sample position)``, and stacks them into a uint8
NHWC tensor (pinned on CUDA). Nothing depends on which worker made a batch or how many there
are: ``--workers 0`` (the main process) and ``--workers 8`` give bit-identical batches, and a
resumed run (the position ``{"epoch", "batch"}`` is in every checkpoint) continues at the exact
sample. Workers keep ``--prefetch`` batches each in flight.

Evaluation uses the same machinery on the held-out split: resize + centre crop, no randomness,
each rank its own part, the last batch short.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from workloads.common.dist import DistInfo
from workloads.vision.images import decode, eval_transform, train_transform
from workloads.vision.imagesets import ImageFolder, TarShards


def default_workers(local_world_size: int | None = None) -> int:
    """Worker processes per rank when ``--workers`` is not given: the node's CPUs split between
    its ranks, one left for the rank itself, at most 8."""
    ranks = local_world_size or int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(0, min(8, (os.cpu_count() or 1) // ranks - 1))


class Batches(Dataset):
    """Position -> (images uint8 (B, S, S, 3), labels int64 (B,)); see the module docstring.
    Training positions are ``(epoch, k)``; evaluation positions are ``k``."""

    def __init__(self, images: ImageFolder | TarShards, batch: int, image_size: int, seed: int,
                 info: DistInfo, train: bool, scale: tuple[float, float] = (0.08, 1.0),
                 hflip: bool = True) -> None:
        self.images, self.batch, self.size, self.seed = images, batch, image_size, seed
        self.rank, self.world, self.train = info.rank, info.world_size, train
        self.scale, self.hflip = scale, hflip
        self._epoch, self._order = -1, []
        self.eval_order = [] if train else images.eval_refs(self.rank, self.world)

    def order(self, epoch: int) -> list:
        if self._epoch != epoch:  # one epoch's order per process, computed once
            self._order = self.images.train_order(epoch, self.rank, self.world, self.batch,
                                                  self.seed)
            self._epoch = epoch
        return self._order

    def __len__(self) -> int:  # evaluation batches (training runs on a sampler of its own)
        return math.ceil(len(self.eval_order) / self.batch)

    def __getitem__(self, pos) -> tuple[torch.Tensor, torch.Tensor]:
        if self.train:
            epoch, k = pos
            refs = self.order(epoch)[k * self.batch:(k + 1) * self.batch]
        else:
            refs = self.eval_order[pos * self.batch:(pos + 1) * self.batch]
        out = np.empty((len(refs), self.size, self.size, 3), np.uint8)
        labels = np.empty(len(refs), np.int64)
        for i, ref in enumerate(refs):
            data, labels[i] = self.images.read(ref)
            img = decode(data)
            if self.train:
                rng = np.random.default_rng([self.seed, epoch, self.rank, k * self.batch + i])
                out[i] = train_transform(img, self.size, rng, self.scale, self.hflip)
            else:
                out[i] = eval_transform(img, self.size)
        return torch.from_numpy(out), torch.from_numpy(labels)


class Positions(Sampler):
    """Training batch positions (epoch, k) from a starting point, forever."""

    def __init__(self, batches: Batches, epoch: int, k: int) -> None:
        self.batches, self.epoch, self.k = batches, epoch, k

    def __iter__(self) -> Iterator[tuple[int, int]]:
        b = self.batches
        epoch, k = self.epoch, self.k
        while True:
            if k >= b.images.steps_per_epoch(epoch, b.batch, b.world, b.seed):
                epoch, k = epoch + 1, 0
                continue
            yield epoch, k
            k += 1


def _loader(dataset: Dataset, sampler, workers: int, prefetch: int, pin: bool) -> DataLoader:
    return DataLoader(dataset, batch_size=None, sampler=sampler, num_workers=workers,
                      pin_memory=pin, prefetch_factor=prefetch if workers else None,
                      persistent_workers=False)


class ImageLoader:
    """The trainer's data source for an image set: ``next_batch()``, ``evaluate_batches()``,
    and the resumable position as ``state_dict()``."""

    def __init__(self, images: ImageFolder | TarShards, batch: int, image_size: int,
                 info: DistInfo, seed: int, workers: int, prefetch: int,
                 scale: tuple[float, float], hflip: bool) -> None:
        steps = images.steps_per_epoch(0, batch, info.world_size, seed)
        if steps < 1:
            from workloads.common.cli import ConfigError

            raise ConfigError("--data", f"{images.n} training images give no full step of "
                                        f"{info.world_size} x {batch}; use more data, more or "
                                        "smaller shards, or a smaller --batch-size")
        self.images, self.info, self.workers, self.prefetch = images, info, workers, prefetch
        self.pin = info.device.type == "cuda"
        self.train = Batches(images, batch, image_size, seed, info, True, scale, hflip)
        self.eval = Batches(images, batch, image_size, seed, info, False)
        self.epoch, self.k = 0, 0
        self._it: Iterator | None = None
        self._ahead = ThreadPoolExecutor(1, thread_name_prefix="shard-fetch") \
            if isinstance(images, TarShards) and images.s3 else None
        self._fetched: set[str] = set()

    @property
    def has_eval(self) -> bool:
        return self.images.has_eval

    def _prefetch_shards(self) -> None:
        """Download the shards of the next few batches in the background (S3 only)."""
        order = self.train.order(self.epoch)
        ahead = order[self.k * self.train.batch:(self.k + 4 * max(1, self.workers) *
                                                 self.prefetch) * self.train.batch]
        for name in self.images.shard_names(ahead)[:2]:
            if name not in self._fetched:
                self._fetched.add(name)
                self._ahead.submit(self.images.fetch, name)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._it is None:
            sampler = Positions(self.train, self.epoch, self.k)
            self._it = iter(_loader(self.train, sampler, self.workers, self.prefetch, self.pin))
        if self._ahead is not None:
            self._prefetch_shards()
        images, labels = next(self._it)
        self.k += 1
        steps = self.images.steps_per_epoch(self.epoch, self.train.batch, self.info.world_size,
                                            self.train.seed)
        if self.k >= steps:
            self.epoch, self.k = self.epoch + 1, 0
        return images, labels

    def evaluate_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's held-out batches (possibly none), in worker processes."""
        if len(self.eval) == 0:
            return iter(())
        return iter(_loader(self.eval, range(len(self.eval)), self.workers, self.prefetch,
                            self.pin))

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch": self.k}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.k = int(state["epoch"]), int(state["batch"])
        self._it = None  # restart the workers at the loaded position

    def close(self) -> None:
        self._it = None
        if self._ahead is not None:
            self._ahead.shutdown(wait=False, cancel_futures=True)
