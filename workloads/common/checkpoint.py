"""Sharded checkpoints (torch.distributed.checkpoint) in a directory or under ``s3://``.

Layout under the root (a local path, an EFS/FSx mount, or ``s3://bucket/prefix``)::

    step-00000200/   .metadata, __0_0.distcp, __1_0.distcp ...   (DCP: each rank writes its shards)
    step-00000200/MANIFEST.json   every file and its size; written after all shards are stored
    latest                        "step-00000200"; written last, atomically

A checkpoint is *complete* when its manifest exists and every file it lists is present with
the listed size. ``latest`` only ever names a complete checkpoint; on resume we start from it
and walk back to older complete ones, so a truncated or half-written checkpoint (a crash
mid-save, a partial upload) is skipped, never loaded. Retention keeps the newest
``keep_last`` complete checkpoints and deletes older ones only after a newer one is complete.

For ``s3://`` each rank's DCP files go to a node-local staging directory and are uploaded with
boto3 (retries configured in ``s3.py``); the manifest, then the marker, are uploaded after every
rank's files are in. On resume each node downloads the chosen checkpoint to its staging dir.

Async (GPU): ``dcp.async_save`` copies the state to CPU and writes in a background thread, as do
the uploads. The copy goes into pinned host buffers (a ``DefaultStager`` with pinned memory,
kept across saves, so later saves reuse them; the copy itself is synchronous, so training may
change the weights as soon as ``save`` returns). The trainer calls ``finalize()`` once every
rank reports ``ready()`` (its per-step flag exchange carries that flag, so all ranks agree on
the step) and the manifest and marker are written then. On CPU saves are synchronous and
finalised at once.

Files at the root besides those (``write_root_file``): the workload's description of what the
checkpoint holds, e.g. the LLM's ``model.json`` and ``tokenizer.json``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

from workloads.common import s3 as s3util
from workloads.common.cli import parse_s3_url
from workloads.common.dist import DistInfo, all_gather_object, barrier, broadcast_object

MANIFEST = "MANIFEST.json"
LATEST = "latest"
PREFIX = "step-"


def step_name(step: int) -> str:
    return f"{PREFIX}{step:08d}"


def parse_step(name: str) -> int | None:
    if not name.startswith(PREFIX) or not name[len(PREFIX):].isdigit():
        return None
    return int(name[len(PREFIX):])


def cache_root() -> Path:
    """Local cache for S3 staging and prepared data (``TRAINYARD_CACHE``, else ~/.cache)."""
    return Path(os.environ.get("TRAINYARD_CACHE", Path.home() / ".cache" / "trainyard"))


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _quiet(fn, *args, **kwargs):
    # DCP warns on every single-process save/load ("assuming the intent is ...").
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.distributed is disabled.*")
        return fn(*args, **kwargs)


class CheckpointStore:
    """Save/resume a training state dict under one root; see the module docstring."""

    def __init__(self, uri: str, info: DistInfo, keep_last: int = 3, use_async: bool = False,
                 group: dist.ProcessGroup | None = None) -> None:
        self.uri, self.info, self.keep_last = uri, info, keep_last
        self.use_async, self.group = use_async, group
        self._pending: tuple[int, Future] | None = None
        self._stager = None
        if use_async and info.device.type == "cuda":
            from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions

            self._stager = DefaultStager(StagingOptions(
                use_pinned_memory=True, use_shared_memory=False, use_async_staging=False,
                use_non_blocking_copy=True))
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ckpt-upload")
        if uri.startswith("s3://"):
            self.bucket, self.prefix = parse_s3_url(uri, "--checkpoint-dir")
            self.client = s3util.s3_client()
            self.local = cache_root() / "s3-staging" / self.bucket / self.prefix
        else:
            self.bucket, self.prefix, self.client = None, "", None
            self.local = Path(uri)
        if info.is_local_main:
            self.local.mkdir(parents=True, exist_ok=True)

    # ----- storage primitives (local directory or S3) -----
    def _read(self, rel: str) -> bytes | None:
        if self.client is not None:
            return s3util.get_bytes(self.client, self.bucket, s3util.join_key(self.prefix, rel))
        path = self.local / rel
        return path.read_bytes() if path.is_file() else None

    def _write(self, rel: str, data: bytes) -> None:
        if self.client is not None:
            s3util.put_bytes(self.client, self.bucket, s3util.join_key(self.prefix, rel), data)
        else:
            _atomic_write(self.local / rel, data)

    def _list_steps(self) -> list[int]:
        if self.client is not None:
            names = s3util.list_dirs(self.client, self.bucket, self.prefix)
        else:
            names = [p.name for p in self.local.iterdir() if p.is_dir()]
        return sorted(s for s in map(parse_step, names) if s is not None)

    def _sizes(self, name: str) -> dict[str, int]:
        if self.client is not None:
            base = s3util.join_key(self.prefix, name)
            objs = s3util.list_objects(self.client, self.bucket, base)
            return {k[len(base) + 1:]: v for k, v in objs.items()}
        d = self.local / name
        return {p.name: p.stat().st_size for p in d.iterdir() if p.is_file()} if d.is_dir() else {}

    def _delete(self, name: str) -> None:
        if self.client is not None:
            s3util.delete_prefix(self.client, self.bucket, s3util.join_key(self.prefix, name))
        shutil.rmtree(self.local / name, ignore_errors=True)

    def write_root_file(self, name: str, data: bytes) -> None:
        """Write ``name`` at the checkpoint root (rank 0 only; local or S3)."""
        if self.info.is_main:
            self._write(name, data)

    def read_root_file(self, name: str) -> bytes | None:
        """``name`` at the checkpoint root, or None (any rank)."""
        return self._read(name)

    # ----- completeness -----
    def check(self, step: int) -> str | None:
        """None if checkpoint ``step`` is complete, else why not."""
        raw = self._read(f"{step_name(step)}/{MANIFEST}")
        if raw is None:
            return "no manifest (half-written)"
        try:
            files = json.loads(raw)["files"]
        except (ValueError, KeyError, TypeError):
            return "unreadable manifest"
        sizes = self._sizes(step_name(step))
        for fname, size in files.items():
            if fname not in sizes:
                return f"{fname} is missing"
            if sizes[fname] != size:
                return f"{fname} is {sizes[fname]} bytes, manifest says {size} (truncated)"
        return None

    def latest_complete(self, log=print) -> int | None:
        """Step of the newest complete checkpoint at or before the ``latest`` marker."""
        steps = self._list_steps()
        marker = self._read(LATEST)
        marked = parse_step(marker.decode().strip()) if marker else None
        if marked is not None:
            steps = [s for s in steps if s <= marked]
        for step in reversed(steps):
            problem = self.check(step)
            if problem is None:
                return step
            log(f"checkpoint: skipping {step_name(step)}: {problem}")
        return None

    # ----- save -----
    def save(self, state: dict, step: int) -> None:
        """Write ``state`` as checkpoint ``step`` (finishes any pending save first)."""
        self.finalize()
        name = step_name(step)
        # Leftovers of an earlier attempt at this step (a crash mid-save) must not leak in.
        if self.info.is_main:
            self._delete(name)
        if self.info.is_local_main:
            shutil.rmtree(self.local / name, ignore_errors=True)
        barrier(self.group)
        path = self.local / name
        if self.use_async:
            extra = {"async_stager": self._stager} if self._stager is not None else {}
            resp = dcp.async_save(state, checkpoint_id=str(path), process_group=self.group,
                                  **extra)
            written = getattr(resp, "upload_completion", resp)
        else:
            _quiet(dcp.save, state, checkpoint_id=str(path), process_group=self.group)
            written = None
        job = self._pool.submit(self._store_files, name, written)
        self._pending = (step, job)
        if not self.use_async:
            self.finalize()

    def _store_files(self, name: str, written: Future | None) -> dict[str, int]:
        """Background part: wait for DCP, upload this rank's share, report {file: size}."""
        if written is not None:
            written.result()
        d = self.local / name
        files = sorted(p.name for p in d.iterdir() if p.is_file())
        mine = files[self.info.local_rank::_local_world_size()]
        if self.client is not None:
            s3util.upload_dir(self.client, d, self.bucket, s3util.join_key(self.prefix, name), mine)
        return {f: (d / f).stat().st_size for f in mine}

    def ready(self) -> bool:
        """True when this rank has nothing pending or its share of the save is stored."""
        return self._pending is None or self._pending[1].done()

    def finalize(self) -> int | None:
        """Collective: wait for the pending save, write manifest, marker, apply retention."""
        if self._pending is None:
            return None
        step, job = self._pending
        self._pending = None
        shares = all_gather_object(job.result(), self.group)
        name = step_name(step)
        if self.info.is_main:
            files: dict[str, int] = {}
            for share in shares:
                files.update(share)
            manifest = {"step": step, "world_size": self.info.world_size,
                        "created": time.time(), "files": files}
            self._write(f"{name}/{MANIFEST}", json.dumps(manifest, indent=1).encode())
            self._write(LATEST, name.encode())
            self._retain()
        if self.client is not None and self.info.is_local_main:
            shutil.rmtree(self.local / name, ignore_errors=True)
        barrier(self.group)
        return step

    def _retain(self) -> None:
        steps = self._list_steps()
        complete = [s for s in steps if self._read(f"{step_name(s)}/{MANIFEST}") is not None]
        keep = complete[-self.keep_last:]
        if not keep:
            return
        for s in steps:
            if s < keep[0]:
                self._delete(step_name(s))

    # ----- load -----
    def load(self, state: dict, log=print) -> int | None:
        """Load the newest complete checkpoint into ``state`` in place; its step, or None."""
        step = self.latest_complete(log=log) if self.info.is_main else None
        step = broadcast_object(step, group=self.group)
        if step is None:
            return None
        name = step_name(step)
        if self.client is not None:
            if self.info.is_local_main:
                shutil.rmtree(self.local / name, ignore_errors=True)
                s3util.download_prefix(self.client, self.bucket,
                                       s3util.join_key(self.prefix, name), self.local / name)
            barrier(self.group)
        _quiet(dcp.load, state, checkpoint_id=str(self.local / name), process_group=self.group)
        if self.client is not None:
            barrier(self.group)
            if self.info.is_local_main:
                shutil.rmtree(self.local / name, ignore_errors=True)
        return step

    def close(self) -> None:
        self.finalize()
        self._pool.shutdown(wait=True)
        if self._stager is not None:
            self._stager.close()
            self._stager = None


def _local_world_size() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def rng_state_blob(info: DistInfo) -> bytes:
    """Every rank's torch RNG state (CPU, and CUDA on GPU ranks) as one blob for a checkpoint
    (collective: each rank contributes its own, all ranks get the same bytes)."""
    rng = {"cpu": torch.get_rng_state()}
    if info.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(info.device)
    buf = io.BytesIO()
    torch.save(all_gather_object(rng), buf)
    return buf.getvalue()


def restore_rng_state(blob: bytes, info: DistInfo) -> None:
    """Inverse of ``rng_state_blob`` for this rank; a rank the saved world lacked keeps its seed."""
    states = torch.load(io.BytesIO(blob), weights_only=True)
    if info.rank < len(states):
        torch.set_rng_state(states[info.rank]["cpu"])
        if "cuda" in states[info.rank] and info.device.type == "cuda":
            torch.cuda.set_rng_state(states[info.rank]["cuda"], info.device)
