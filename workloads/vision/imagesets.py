"""Where encoded images come from: an ImageFolder tree or tar shards, local or on S3.

Both kinds answer the same questions for the loader (``workloads.vision.loader``): how many
steps an epoch has, which samples rank r trains on in epoch e (``train_order``), which held-out
samples it evaluates (``eval_refs``), and the bytes and label of one sample (``read``).

- **ImageFolder** (local only): ``ROOT/<class>/*.jpg|png``, classes sorted by name; or
  ``ROOT/train/<class>/…`` plus ``ROOT/val/<class>/…``, the held-out split. Epoch e's order is a
  permutation from ``(seed, e)``; each step takes ``world x batch`` samples of it and rank r its
  own slice (so rank r's samples are a function of seed, epoch, rank and position).
- **Tar shards** (``python -m workloads.vision.prepare`` writes them; a directory or
  ``s3://bucket/prefix``): ``manifest.json`` lists each split's shards with their sample counts
  and byte sizes. Epoch e permutes the train shards from ``(seed, e)`` and deals them to the
  ranks round-robin; a rank reads its shards whole, each shard's samples in an order permuted
  from ``(seed, e, shard)``. Every rank stops the epoch at the same step (the smallest rank's
  share // batch). The sizes are checked when the data is opened: a truncated or missing shard
  is refused with one line before anything trains.
- **S3 shards are streamed**: a shard is downloaded (boto3, retries from ``common/s3.py``) to
  ``$TRAINYARD_CACHE/data/s3/<bucket>/<prefix>/`` when the loader first needs it, under a file
  lock so the node's workers fetch it once, and the loader fetches the next shards in the
  background; the first step waits for one shard, not the dataset. Set ``TRAINYARD_CACHE`` to
  node-local NVMe for a large set.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workloads.common import s3 as s3util
from workloads.common.checkpoint import cache_root
from workloads.common.cli import ConfigError, parse_s3_url
from workloads.vision.images import EXTENSIONS, Member, tar_index

TAR_FORMAT = "trainyard-vision-tar"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Shard:
    name: str
    count: int
    bytes: int


class ImageFolder:
    """See the module docstring; ``refs`` are indices into ``self.files[split]``."""

    def __init__(self, root: Path, flag: str = "--data") -> None:
        self.root = root
        split_roots = {"train": root / "train", "val": root / "val"}
        if not (split_roots["train"].is_dir() and split_roots["val"].is_dir()):
            split_roots = {"train": root}
        self.classes = sorted(p.name for p in split_roots["train"].iterdir() if p.is_dir())
        if not self.classes:
            raise ConfigError(flag, f"{str(root)!r} has no class sub-directories with images "
                                    "(expected ROOT/<class>/*.jpg, or ROOT/train/<class>/... and "
                                    "ROOT/val/<class>/...)")
        index = {c: i for i, c in enumerate(self.classes)}
        self.files: dict[str, list[tuple[Path, int]]] = {}
        for split, d in split_roots.items():
            files = []
            for c in sorted(p.name for p in d.iterdir() if p.is_dir()):
                if c not in index:
                    raise ConfigError(flag, f"{d / c}: class {c!r} is not in the training split")
                files += [(f, index[c]) for f in sorted((d / c).iterdir())
                          if f.suffix.lower() in EXTENSIONS]
            self.files[split] = files
        if not self.files["train"]:
            raise ConfigError(flag, f"{str(root)!r}: no .jpg/.jpeg/.png files under the classes")
        self.n = len(self.files["train"])

    @property
    def has_eval(self) -> bool:
        return bool(self.files.get("val"))

    def steps_per_epoch(self, epoch: int, batch: int, world: int, seed: int) -> int:
        return self.n // (batch * world)

    def train_order(self, epoch: int, rank: int, world: int, batch: int, seed: int) -> list:
        steps = self.steps_per_epoch(epoch, batch, world, seed)
        perm = np.random.default_rng([seed, epoch]).permutation(self.n)[:steps * world * batch]
        mine = perm.reshape(steps, world, batch)[:, rank].reshape(-1)
        return [("train", int(i)) for i in mine]

    def eval_refs(self, rank: int, world: int) -> list:
        return [("val", i) for i in range(rank, len(self.files.get("val", [])), world)]

    def read(self, ref) -> tuple[bytes, int]:
        path, label = self.files[ref[0]][ref[1]]
        return path.read_bytes(), label


def read_manifest(text: str, where: str, flag: str = "--data") -> dict:
    """A tar-shard manifest, checked for shape; ConfigError naming ``flag`` when it is not one."""
    try:
        meta = json.loads(text)
        if meta.get("format") != TAR_FORMAT:
            raise ValueError(f"format is {meta.get('format')!r}, not {TAR_FORMAT!r}")
        classes = [str(c) for c in meta["classes"]]
        splits = {split: [Shard(str(s["name"]), int(s["count"]), int(s["bytes"]))
                          for s in meta["splits"][split]["shards"]]
                  for split in meta["splits"]}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigError(flag, f"{where}: not a {TAR_FORMAT} manifest ({e})") from None
    if not splits.get("train"):
        raise ConfigError(flag, f"{where}: the manifest lists no train shards")
    return {**meta, "classes": classes, "shards": splits}


class TarShards:
    """See the module docstring; ``refs`` are (split, shard number, member number)."""

    def __init__(self, url: str, flag: str = "--data") -> None:
        self.url, self.flag = url, flag
        self.s3 = url.startswith("s3://")
        if self.s3:
            self.bucket, self.prefix = parse_s3_url(url, flag)
            self.local = cache_root() / "data" / "s3" / self.bucket / self.prefix
            client = s3util.s3_client()
            text = s3util.get_bytes(client, self.bucket, s3util.join_key(self.prefix, MANIFEST))
            if text is None:
                raise ConfigError(flag, f"{url}: no {MANIFEST} (write shards with python -m "
                                        "workloads.vision.prepare, then upload the directory)")
            base = s3util.join_key(self.prefix, "")
            sizes = {k[len(base) + 1 if base else 0:]: v
                     for k, v in s3util.list_objects(client, self.bucket, self.prefix).items()}
        else:
            self.local = Path(url)
            try:
                text = (self.local / MANIFEST).read_bytes()
            except OSError as e:
                raise ConfigError(flag, f"{url!r}: cannot read {MANIFEST}: {e.strerror}") from None
            sizes = {p.name: p.stat().st_size for p in self.local.iterdir() if p.is_file()}
        self.meta = read_manifest(text.decode(errors="replace"), url, flag)
        self.classes = self.meta["classes"]
        self.shards: dict[str, list[Shard]] = self.meta["shards"]
        for split in self.shards.values():
            for s in split:
                got = sizes.get(s.name)
                if got is None:
                    raise ConfigError(flag, f"{url}: shard {s.name} is missing")
                if got != s.bytes:
                    raise ConfigError(flag, f"{url}: shard {s.name} is {got} bytes, the manifest "
                                            f"says {s.bytes} (truncated or rewritten); "
                                            "re-run prepare or re-upload it")
        self.n = sum(s.count for s in self.shards["train"])

    @property
    def has_eval(self) -> bool:
        return bool(self.shards.get("val"))

    def _dealt(self, epoch: int, world: int, seed: int) -> list[np.ndarray]:
        perm = np.random.default_rng([seed, epoch]).permutation(len(self.shards["train"]))
        return [perm[r::world] for r in range(world)]

    def steps_per_epoch(self, epoch: int, batch: int, world: int, seed: int) -> int:
        counts = [sum(self.shards["train"][i].count for i in mine)
                  for mine in self._dealt(epoch, world, seed)]
        return min(counts) // batch

    def train_order(self, epoch: int, rank: int, world: int, batch: int, seed: int) -> list:
        refs = []
        for i in self._dealt(epoch, world, seed)[rank]:
            order = np.random.default_rng([seed, epoch, int(i)]).permutation(
                self.shards["train"][i].count)
            refs += [("train", int(i), int(j)) for j in order]
        return refs[:self.steps_per_epoch(epoch, batch, world, seed) * batch]

    def eval_refs(self, rank: int, world: int) -> list:
        val = self.shards.get("val", [])
        return [("val", i, j) for i in range(rank, len(val), world) for j in range(val[i].count)]

    def shard_names(self, refs: list) -> list[str]:
        """The shards ``refs`` read, in first-use order."""
        return list(dict.fromkeys(self.shards[r[0]][r[1]].name for r in refs))

    def fetch(self, name: str) -> Path:
        """The local path of shard ``name``; on S3, downloaded once per node (file lock)."""
        path = self.local / name
        if not self.s3:
            return path
        size = next(s.bytes for split in self.shards.values() for s in split if s.name == name)
        if path.is_file() and path.stat().st_size == size:
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (path.is_file() and path.stat().st_size == size):
                tmp = path.with_name(f"{name}.part-{os.getpid()}")
                _client().download_file(self.bucket, s3util.join_key(self.prefix, name), str(tmp))
                if tmp.stat().st_size != size:
                    tmp.unlink()
                    raise OSError(f"{self.url}/{name}: downloaded a different size than the "
                                  "manifest's")
                os.replace(tmp, path)
        return path

    @functools.lru_cache(maxsize=8)  # noqa: B019 - one loader per process, a few shards open
    def _index(self, split: str, i: int) -> tuple[Path, list[Member]]:
        shard = self.shards[split][i]
        path = self.fetch(shard.name)
        try:
            members = tar_index(path)
        except ValueError as e:
            raise ConfigError(self.flag, f"{self.url}: shard {shard.name}: {e}") from None
        if len(members) != shard.count:
            raise ConfigError(self.flag, f"{self.url}: shard {shard.name} holds {len(members)} "
                                         f"images, the manifest says {shard.count}")
        return path, members

    def read(self, ref) -> tuple[bytes, int]:
        path, members = self._index(ref[0], ref[1])
        m = members[ref[2]]
        with open(path, "rb") as f:
            f.seek(m.offset)
            return f.read(m.size), m.label


@functools.lru_cache(maxsize=1)
def _client_for(pid: int):
    return s3util.s3_client()


def _client():
    """A boto3 client per process: clients must not cross a fork into DataLoader workers."""
    return _client_for(os.getpid())


def open_images(url: str, flag: str = "--data") -> ImageFolder | TarShards:
    """The image set at ``url``: tar shards (a manifest.json there, or any s3:// URL) or an
    ImageFolder tree; ConfigError naming ``flag`` when it is neither."""
    if url.startswith("s3://"):
        return TarShards(url, flag)
    root = Path(url)
    if not root.is_dir():
        raise ConfigError(flag, f"{url!r} is not a directory")
    if (root / MANIFEST).is_file():
        return TarShards(url, flag)
    return ImageFolder(root, flag)
