"""Token-shard data loading: llm.c-format shards from a directory or ``s3://``, checked first.

**Order.** The dataset is cut into non-overlapping windows of ``seq_len + 1`` tokens (never
across a shard boundary). Each epoch visits every window once: the shards are permuted by
``(seed, epoch)``, taken ``SHUFFLE_BLOCK`` (4) at a time, and the windows of each block are
shuffled together. Every optimizer step consumes ``world_size × micro_batch × grad_accum``
windows of that order and rank r takes its own slice, so the loader's whole state is
``{"epoch", "cursor"}``, identical on every rank and saved in each checkpoint: a resumed run sees
exactly the batches an uninterrupted run would have seen, wherever the shards are stored.

**Checks.** ``manifest.json`` (see ``prepare.py``) must parse; every shard's size, llm.c header
(magic/version = dtype) and token count must match it, or the run stops with one line naming
the file (``ConfigError`` on ``--data``, exit 2). A shard is never read without its header, so
a raw or foreign file is refused, not read as tokens. ``check_vocab(model_vocab)`` (called by
the constructor when given ``model_vocab``) refuses data whose token ids reach the model's
vocabulary; each shard's contents are checked against the manifest when first opened.

**S3.** ``s3://bucket/prefix``: the manifest and tokenizer are fetched at once into the cache
(``--cache-dir``, default ``$TRAINYARD_CACHE/data``; node-local NVMe on the cluster), shards
one by one as the order reaches them: a background thread per rank downloads the current and
the next block's shards (ranks on one node share the cache through file locks), so step 1 waits
for one block, not the dataset, and no rank waits in a collective for another's download.
The cache keeps shards for later epochs and restarts; a changed manifest clears it.

Held-out data: ``ShardLoader(..., split="val")`` and ``eval_batches(n)``: the same windows, in
file order, every time. No ``--data``: the stdlib corpus (byte tokens) is built on first use.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from workloads.common import s3 as s3util
from workloads.common.checkpoint import cache_root
from workloads.common.cli import ConfigError, parse_s3_url
from workloads.common.dist import DistInfo
from workloads.llm.prepare import FORMAT, FORMAT_V1, HEADER_BYTES, read_header

DEFAULT_CORPUS = "the built-in corpus"
SHUFFLE_BLOCK = 4
"""Shards whose windows are shuffled together (and fetched together from S3)."""
DTYPES = {"uint16": "<u2", "uint32": "<u4"}


def _bad(where: object, message: str) -> ConfigError:
    return ConfigError("--data", f"{where}: {message}")


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between the processes of one node (flock on ``path``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def load_manifest(root: Path, shown: str) -> dict:
    """The manifest with ``splits`` filled in (v1: one train split), checked field by field."""
    try:
        m = json.loads((root / "manifest.json").read_text())
    except (OSError, ValueError) as e:
        raise _bad(shown, f"unreadable manifest.json ({type(e).__name__}: {e})") from None
    if not isinstance(m, dict) or m.get("format") not in (FORMAT, FORMAT_V1):
        raise _bad(shown, f"manifest.json format {m.get('format') if isinstance(m, dict) else m!r}"
                          f" is not {FORMAT} (rebuild with python -m workloads.llm.prepare)")
    if m["format"] == FORMAT_V1:
        m = {**m, "splits": {"train": m.get("shards")}, "tokenizer": "byte"}
    if m.get("dtype") not in DTYPES or (m["format"] == FORMAT_V1 and m["dtype"] != "uint16"):
        raise _bad(shown, f"manifest dtype {m.get('dtype')!r} (uint16 or uint32)")
    if not isinstance(m.get("vocab_size"), int) or m["vocab_size"] < 1:
        raise _bad(shown, f"manifest vocab_size {m.get('vocab_size')!r} is not a positive int")
    splits = m.get("splits")
    if not isinstance(splits, dict) or not isinstance(splits.get("train"), list):
        raise _bad(shown, "manifest has no train split")
    for name, entries in splits.items():
        for i, e in enumerate(entries if isinstance(entries, list) else [None]):
            ok = (isinstance(e, dict) and isinstance(e.get("file"), str)
                  and "/" not in e["file"] and not e["file"].startswith(".")
                  and isinstance(e.get("tokens"), int) and e["tokens"] >= 0)
            if not ok:
                raise _bad(shown, f"manifest splits.{name}[{i}] is not "
                                  "{\"file\": NAME, \"tokens\": N}")
    return m


def shard_bytes(manifest: dict, entry: dict) -> int:
    header = 0 if manifest["format"] == FORMAT_V1 else HEADER_BYTES
    return header + entry["tokens"] * (2 if manifest["dtype"] == "uint16" else 4)


def check_shard(path: Path, manifest: dict, entry: dict) -> None:
    """ConfigError naming ``path`` unless its size, header and dtype match the manifest."""
    try:
        size = path.stat().st_size
    except OSError as e:
        raise _bad(path, f"listed in manifest.json but unreadable ({e.strerror})") from None
    if manifest["format"] == FORMAT_V1:
        if size != shard_bytes(manifest, entry):
            raise _bad(path, f"{size} bytes, manifest says {entry['tokens']} uint16 tokens "
                             f"({shard_bytes(manifest, entry)} bytes)")
        return
    try:
        dtype, count = read_header(path)
    except ValueError as e:
        raise ConfigError("--data", str(e)) from None
    if dtype != manifest["dtype"]:
        raise _bad(path, f"{dtype} tokens (llm.c header), manifest says {manifest['dtype']}")
    if count != entry["tokens"]:
        raise _bad(path, f"header says {count} tokens, manifest says {entry['tokens']}")


class DataSource:
    """A prepared dataset: a local directory, or ``s3://`` with a node-local cache."""

    def __init__(self, data: str | Path, cache_dir: str | Path | None = None) -> None:
        self.url = str(data)
        self.bucket = self.client = None
        if self.url.startswith("s3://"):
            self.bucket, self.prefix = parse_s3_url(self.url, "--data")
            base = Path(cache_dir) if cache_dir else cache_root() / "data"
            self.root = base / "s3" / self.bucket / self.prefix
            self.client = s3util.s3_client()
            self._refresh()
        else:
            self.root = Path(data)
        self.manifest = load_manifest(self.root, self.url)

    @property
    def remote(self) -> bool:
        return self.bucket is not None

    def _key(self, name: str) -> str:
        return s3util.join_key(self.prefix, name)

    def _refresh(self) -> None:
        """Fetch manifest.json (and tokenizer.json); a manifest unlike the cached one means a
        different dataset under this prefix, so the cached shards go."""
        raw = s3util.get_bytes(self.client, self.bucket, self._key("manifest.json"))
        if raw is None:
            raise _bad(self.url, "no manifest.json there (build one with python -m "
                                 "workloads.llm.prepare, then upload the directory)")
        with file_lock(self.root / ".lock"):
            cached = self.root / "manifest.json"
            if cached.is_file() and cached.read_bytes() == raw:
                return
            for p in self.root.iterdir():  # shards and tokenizer (lock files stay)
                if p.is_file() and not p.name.startswith("."):
                    p.unlink()
            try:
                name = json.loads(raw).get("tokenizer_file")
            except (ValueError, AttributeError):
                name = None
            if isinstance(name, str) and "/" not in name:
                s3util.download_file(self.client, self.bucket, self._key(name), self.root / name)
            tmp = self.root / f".manifest.json.{os.getpid()}"
            tmp.write_bytes(raw)
            os.replace(tmp, cached)

    def fetch(self, entry: dict) -> Path:
        """The shard's local path, downloading it first from S3 if the cache lacks it."""
        path = self.root / entry["file"]
        if not self.remote:
            return path
        want = shard_bytes(self.manifest, entry)
        with file_lock(self.root / f".{entry['file']}.lock"):
            if not path.is_file() or path.stat().st_size != want:
                s3util.download_file(self.client, self.bucket, self._key(entry["file"]), path)
        return path

    def tokenizer_path(self) -> Path | None:
        """tokenizer.json beside the shards (fetched already for S3), or None."""
        name = self.manifest.get("tokenizer_file")
        path = self.root / name if isinstance(name, str) else None
        return path if path is not None and path.is_file() else None


class Prefetcher:
    """One background thread downloading the shards ``want()`` names, in that order."""

    def __init__(self, source: DataSource, entries: list[dict]) -> None:
        self.source, self.entries = source, entries
        self.done: dict[int, Path | BaseException] = {}
        self._want: list[int] = []
        self._cv = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="data-prefetch", daemon=True)
        self._thread.start()

    def want(self, shards: list[int]) -> None:
        with self._cv:
            self._want = [s for s in shards if s not in self.done]
            self._cv.notify_all()

    def get(self, shard: int) -> Path:
        with self._cv:
            if shard not in self.done and shard not in self._want:
                self._want.insert(0, shard)
                self._cv.notify_all()
            while shard not in self.done:
                self._cv.wait()
            got = self.done[shard]
        if isinstance(got, BaseException):
            raise got
        return got

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._want and not self._stop:
                    self._cv.wait()
                if self._stop:
                    return
                shard = self._want.pop(0)
            try:
                result: Path | BaseException = self.source.fetch(self.entries[shard])
            except BaseException as e:  # handed to the main thread by get()
                result = e
            with self._cv:
                self.done[shard] = result
                self._cv.notify_all()

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()


def resolve_data(data: str | None, info: DistInfo | None = None,
                 cache_dir: str | Path | None = None) -> Path | DataSource:
    """What ``ShardLoader`` reads for ``--data``: a local directory, an S3 ``DataSource`` (its
    manifest fetched, shards not yet), or the stdlib corpus, built once per node on first use
    (under a file lock, so no rank waits in a collective while another builds it)."""
    if data and data.startswith("s3://"):
        return DataSource(data, cache_dir)
    if data:
        return Path(data)
    from workloads.llm.prepare import build_default

    local = (Path(cache_dir) if cache_dir else cache_root() / "data") / "stdlib-bytes"
    with file_lock(local.with_name(".stdlib-bytes.lock")):
        if not (local / "manifest.json").is_file():
            print(f"llm: no --data: building {DEFAULT_CORPUS} once (the Python standard "
                  f"library's .py sources as byte tokens, about 12M tokens) into {local} ...",
                  flush=True)
            t0 = time.perf_counter()
            m = build_default(local)
            print(f"llm: built {m['total_tokens']:,} tokens in {time.perf_counter() - t0:.1f} s "
                  "(later runs reuse them)", flush=True)
    return local


class ShardLoader:
    """Deterministic, resumable batches of (inputs, targets) for this rank from one split."""

    def __init__(self, root: str | Path | DataSource, seq_len: int, micro_batch: int,
                 grad_accum: int, info: DistInfo, seed: int, model_vocab: int | None = None,
                 split: str = "train", cache_dir: str | Path | None = None) -> None:
        self.source = root if isinstance(root, DataSource) else DataSource(root, cache_dir)
        m = self.manifest = self.source.manifest
        shown = self.source.url
        if split not in m["splits"] or not m["splits"][split]:
            have = ", ".join(k for k, v in m["splits"].items() if v)
            hint = "; prepare it with --val-fraction > 0" if split == "val" else ""
            raise _bad(shown, f"no {split!r} split (it has: {have}){hint}")
        self.split, self.entries = split, m["splits"][split]
        self._open: dict[int, np.ndarray] = {}
        self._checked: set[int] = set()
        self._prefetch: Prefetcher | None = None
        self.vocab_size, self.dtype = int(m["vocab_size"]), m["dtype"]
        if not self.source.remote:  # cheap (stat + 1 KB each); S3 shards: checked on arrival
            for e in self.entries:
                check_shard(self.source.root / e["file"], m, e)
        self.max_token_id = m.get("max_token_id")
        if not isinstance(self.max_token_id, int):
            if self.source.remote:
                raise _bad(shown, "manifest has no max_token_id (rebuild it with prepare)")
            self.max_token_id = max(int(self._shard(i).max(initial=0))
                                    for i in range(len(self.entries)))
        if self.max_token_id >= self.vocab_size:
            raise _bad(shown, f"token ids up to {self.max_token_id}, but the manifest's "
                              f"vocab_size is {self.vocab_size}")
        self.seq_len, self.micro_batch, self.grad_accum = seq_len, micro_batch, grad_accum
        self.info, self.seed = info, seed
        per_shard = np.array([max(e["tokens"] - 1, 0) // seq_len for e in self.entries],
                             dtype=np.int64)
        self._first = np.concatenate([[0], np.cumsum(per_shard)])  # first window id per shard
        self.n_windows = int(self._first[-1])
        self.per_step = info.world_size * micro_batch * (grad_accum if split == "train" else 1)
        if self.n_windows < self.per_step:
            raise _bad(shown, f"the {split} split has {self.n_windows} windows of {seq_len + 1} "
                              f"tokens, but one {'step' if split == 'train' else 'eval batch'} "
                              f"needs {self.per_step}; use more data or a smaller batch")
        self.epoch, self.cursor = 0, 0
        self.stall_s = 0.0
        """Seconds ``next_batch``/``eval_batches`` waited for shards to arrive (S3)."""
        self._perm_epoch, self._perm = -1, np.empty(0, dtype=np.int64)
        self._blocks: list[list[int]] = []
        self._block_end = np.empty(0, dtype=np.int64)
        self._prefetch = Prefetcher(self.source, self.entries) if self.source.remote else None
        if model_vocab is not None:
            self.check_vocab(model_vocab)
        self._plan()

    # ----- checks and description -----
    def check_vocab(self, model_vocab: int) -> None:
        """ConfigError unless every token id is below the model's vocabulary size."""
        if self.max_token_id >= model_vocab:
            raise _bad(self.source.url, f"holds token ids up to {self.max_token_id} (manifest "
                                        f"vocab_size {self.vocab_size}), but the model's "
                                        f"vocabulary is {model_vocab} (ids 0..{model_vocab - 1})")

    def tokenizer_path(self) -> Path | None:
        """The data's tokenizer.json (local; the trainer copies it to the checkpoint root)."""
        return self.source.tokenizer_path()

    def describe(self) -> str:
        """What the banner says about the data: tokens, tokenizer, where they came from."""
        m = self.manifest
        total = int(m.get("total_tokens", sum(e["tokens"] for e in self.entries)))
        return (f"{total / 1e6:.1f}M tokens, {m.get('tokenizer', '?')} tokenizer, vocab "
                f"{self.vocab_size}, {self.dtype}, from {m.get('source', '?')}")

    # ----- order -----
    def _order(self) -> np.ndarray:
        if self._perm_epoch != self.epoch:
            self._blocks = self._block_shards(self.epoch)
            parts = []
            for b, shards in enumerate(self._blocks):
                wins = np.concatenate([np.arange(self._first[s], self._first[s + 1])
                                       for s in shards])
                if self.split == "train":
                    wins = np.random.default_rng([self.seed, self.epoch, b + 1]).permutation(wins)
                parts.append(wins)
            self._perm, self._perm_epoch = np.concatenate(parts), self.epoch
            self._block_end = np.cumsum([p.size for p in parts])
        return self._perm

    def _block_shards(self, epoch: int) -> list[list[int]]:
        n = len(self.entries)
        if self.split != "train":
            return [list(range(n))]
        order = np.random.default_rng([self.seed, epoch]).permutation(n).tolist()
        return [order[i:i + SHUFFLE_BLOCK] for i in range(0, n, SHUFFLE_BLOCK)]

    def _plan(self) -> None:
        """Fetch the current and the next block's shards; close shards no longer needed."""
        self._order()
        b = int(np.searchsorted(self._block_end, self.cursor, side="right"))
        if b >= len(self._blocks):  # the epoch is used up: the next one starts
            upcoming = self._block_shards(self.epoch + 1)[:2]
        else:
            upcoming = self._blocks[b:b + 2]
            if len(upcoming) < 2:
                upcoming = upcoming + self._block_shards(self.epoch + 1)[:1]
        keep = [s for block in upcoming for s in block]
        for s in list(self._open):
            if s not in keep:
                del self._open[s]
        if self._prefetch is not None:
            self._prefetch.want(keep)

    def _shard(self, i: int) -> np.ndarray:
        arr = self._open.get(i)
        if arr is not None:
            return arr
        e = self.entries[i]
        if self._prefetch is not None:
            t0 = time.perf_counter()
            path = self._prefetch.get(i)
            self.stall_s += time.perf_counter() - t0
            check_shard(path, self.manifest, e)
        else:
            path = self.source.root / e["file"]
        offset = 0 if self.manifest["format"] == FORMAT_V1 else HEADER_BYTES
        arr = np.memmap(path, dtype=DTYPES[self.dtype], mode="r", offset=offset,
                        shape=(e["tokens"],))
        if i not in self._checked and isinstance(self.max_token_id, int):
            top = int(arr.max(initial=0))
            if top > e.get("max_token_id", self.max_token_id):
                raise _bad(path, f"holds token id {top}, above the manifest's "
                                 f"{e.get('max_token_id', self.max_token_id)}")
            self._checked.add(i)
        self._open[i] = arr
        return arr

    def _window(self, wid: int) -> np.ndarray:
        shard = int(np.searchsorted(self._first, wid, side="right") - 1)
        start = (wid - int(self._first[shard])) * self.seq_len
        return self._shard(shard)[start:start + self.seq_len + 1]

    def _batch(self, ids: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        tok = torch.from_numpy(np.stack([self._window(int(w)) for w in ids]).astype(np.int64))
        return tok[:, :-1], tok[:, 1:]

    # ----- training -----
    def next_batch(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``grad_accum`` micro-batches of (x, y), each (micro_batch, seq_len) int64 on CPU."""
        if self.cursor + self.per_step > self.n_windows:  # drop the remainder, new order
            self.epoch, self.cursor = self.epoch + 1, 0
        ids = self._order()[self.cursor:self.cursor + self.per_step]
        self.cursor += self.per_step
        ids = ids.reshape(self.grad_accum, self.info.world_size, self.micro_batch)[:, self.info.rank]
        out = [self._batch(micro) for micro in ids]
        self._plan()
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
        self._plan()

    # ----- evaluation -----
    def eval_batches(self, max_batches: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(x, y) micro-batches of this rank's share of the split's first windows in file order
        (the same every call): ``max_batches`` of them, or one full pass with 0. Every rank
        gets the same count."""
        per = self.info.world_size * self.micro_batch
        n = self.n_windows // per
        n = min(n, max_batches) if max_batches else n
        for i in range(n):
            start = i * per + self.info.rank * self.micro_batch
            yield self._batch(np.arange(start, start + self.micro_batch))

    def eval_batch_count(self, max_batches: int = 0) -> int:
        n = self.n_windows // (self.info.world_size * self.micro_batch)
        return min(n, max_batches) if max_batches else n

    def close(self) -> None:
        if self._prefetch is not None:
            self._prefetch.close()


class SyntheticLoader:
    """Uniformly random tokens, a pure function of (seed, step, rank): no I/O (benchmarks)."""

    def __init__(self, vocab_size: int, seq_len: int, micro_batch: int, grad_accum: int,
                 info: DistInfo, seed: int) -> None:
        self.vocab_size, self.seq_len = vocab_size, seq_len
        self.micro_batch, self.grad_accum, self.info, self.seed = micro_batch, grad_accum, info, seed
        self.step = 0

    def next_batch(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(hash((self.seed, self.step, self.info.rank)) % 2**63)
        self.step += 1
        out = []
        for _ in range(self.grad_accum):
            tok = torch.randint(0, self.vocab_size, (self.micro_batch, self.seq_len + 1), generator=g)
            out.append((tok[:, :-1], tok[:, 1:]))
        return out

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
