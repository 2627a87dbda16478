"""Token-shard data loading: memory-mapped uint16 shards from a directory or ``s3://``.

The dataset is cut into non-overlapping windows of ``seq_len + 1`` tokens (never across a shard
boundary). Each epoch visits every window once in an order fixed by ``(seed, epoch)``. Every
optimizer step consumes ``world_size × micro_batch × grad_accum`` windows of that order and rank
r takes its own slice, so the loader's whole state is ``{"epoch", "cursor"}`` (windows consumed
in the epoch), identical on every rank and saved in each checkpoint: a resumed run sees exactly
the batches an uninterrupted run would have seen.

``s3://`` data is downloaded once per node (local rank 0) into ``$TRAINYARD_CACHE/data/...``.
No ``--data``: the stdlib corpus (``prepare.py``) is built into the cache on first use.

Opening the data checks it against the model: every token id must be below the model's
vocabulary size (``max_token_id`` from the manifest, which ``prepare`` writes, else a scan of
the shards). A problem there is a ``ConfigError`` naming ``--data`` (exit 2, one line).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from workloads.common import s3 as s3util
from workloads.common.checkpoint import cache_root
from workloads.common.cli import ConfigError, parse_s3_url
from workloads.common.dist import DistInfo, barrier

DEFAULT_CORPUS = "the built-in corpus"


def resolve_data(data: str | None, info: DistInfo) -> Path:
    """A local directory holding manifest.json + shards for ``--data`` (collective)."""
    if data and not data.startswith("s3://"):
        return Path(data)
    if data:
        bucket, prefix = parse_s3_url(data, "--data")
        local = cache_root() / "data" / "s3" / bucket / prefix
        if info.is_local_main and not (local / "manifest.json").is_file():
            client = s3util.s3_client()
            sizes = s3util.download_prefix(client, bucket, prefix, local.with_name(local.name + ".dl"))
            if "manifest.json" not in sizes:
                raise ConfigError("--data", f"no manifest.json under {data} (build one with "
                                            "python -m workloads.llm.prepare, then upload it)")
            local.with_name(local.name + ".dl").rename(local)
    else:
        from workloads.llm.prepare import build_default

        local = cache_root() / "data" / "stdlib-bytes"
        if info.is_local_main and not (local / "manifest.json").is_file():
            print(f"llm: no --data: building {DEFAULT_CORPUS} once (the Python standard "
                  f"library's .py sources as byte tokens, about 12M tokens) into {local} ...",
                  flush=True)
            t0 = time.perf_counter()
            m = build_default(local)
            print(f"llm: built {m['total_tokens']:,} tokens in {time.perf_counter() - t0:.1f} s "
                  "(later runs reuse them)", flush=True)
    barrier()
    return local


class ShardLoader:
    """Deterministic, resumable batches of (inputs, targets) for this rank."""

    def __init__(self, root: Path, seq_len: int, micro_batch: int, grad_accum: int,
                 info: DistInfo, seed: int, model_vocab: int | None = None) -> None:
        try:
            self.manifest = json.loads((root / "manifest.json").read_text())
            dtype = self.manifest.get("dtype")
            self.vocab_size = int(self.manifest["vocab_size"])
            if dtype == "uint16":
                self.shards = [np.memmap(root / s["file"], dtype="<u2", mode="r",
                                         shape=(int(s["tokens"]),))
                               for s in self.manifest["shards"]]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise ConfigError("--data", f"{str(root)!r}: unreadable dataset: "
                                        f"{type(e).__name__}: {e}") from None
        if dtype != "uint16":
            raise ConfigError("--data", f"{str(root)!r}: unsupported dtype {dtype!r} (uint16 "
                                        "tokens, as python -m workloads.llm.prepare writes)")
        self.max_token_id = self.manifest.get("max_token_id")
        if not isinstance(self.max_token_id, int):  # not recorded: scan (memory-mapped, fast)
            self.max_token_id = max((int(s.max()) for s in self.shards if len(s)), default=0)
        if model_vocab is not None and self.max_token_id >= model_vocab:
            raise ConfigError("--data", f"{str(root)!r} holds token ids up to "
                                        f"{self.max_token_id} (manifest vocab_size "
                                        f"{self.vocab_size}), but the model's vocabulary is "
                                        f"{model_vocab} (ids 0..{model_vocab - 1}); pick a "
                                        "--preset whose vocabulary covers the data")
        self.seq_len, self.micro_batch, self.grad_accum = seq_len, micro_batch, grad_accum
        self.info, self.seed = info, seed
        per_shard = np.array([(len(s) - 1) // seq_len for s in self.shards], dtype=np.int64)
        self._first = np.concatenate([[0], np.cumsum(per_shard)])  # first window id per shard
        self.n_windows = int(self._first[-1])
        self.per_step = info.world_size * micro_batch * grad_accum
        if self.n_windows < self.per_step:
            raise ConfigError("--data", f"{str(root)!r}: {self.n_windows} windows of "
                                        f"{seq_len + 1} tokens, but one step needs "
                                        f"{self.per_step}; use more data or a smaller batch")
        self.epoch, self.cursor = 0, 0
        self._perm_epoch, self._perm = -1, np.empty(0, dtype=np.int64)

    def describe(self) -> str:
        """What the banner says about the data: tokens, tokenizer, where they came from."""
        m = self.manifest
        total = int(m.get("total_tokens", sum(len(s) for s in self.shards)))
        return (f"{total / 1e6:.1f}M tokens, {m.get('tokenizer', '?')} tokenizer, vocab "
                f"{self.vocab_size}, from {m.get('source', '?')}")

    def _order(self) -> np.ndarray:
        if self._perm_epoch != self.epoch:
            rng = np.random.default_rng([self.seed, self.epoch])
            self._perm, self._perm_epoch = rng.permutation(self.n_windows), self.epoch
        return self._perm

    def _window(self, wid: int) -> np.ndarray:
        shard = int(np.searchsorted(self._first, wid, side="right") - 1)
        start = (wid - int(self._first[shard])) * self.seq_len
        return self.shards[shard][start:start + self.seq_len + 1]

    def next_batch(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``grad_accum`` micro-batches of (x, y), each (micro_batch, seq_len) int64 on CPU."""
        if self.cursor + self.per_step > self.n_windows:  # drop the remainder, new order
            self.epoch, self.cursor = self.epoch + 1, 0
        ids = self._order()[self.cursor:self.cursor + self.per_step]
        self.cursor += self.per_step
        ids = ids.reshape(self.grad_accum, self.info.world_size, self.micro_batch)[:, self.info.rank]
        out = []
        for micro in ids:
            tok = torch.from_numpy(np.stack([self._window(int(w)) for w in micro]).astype(np.int64))
            out.append((tok[:, :-1], tok[:, 1:]))
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])


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
