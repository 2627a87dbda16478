"""How the Llama model is run on the hardware: meta-device init, FSDP2/HSDP, activation
checkpointing, mixed precision, torch.compile, the optimizer and the schedule.

- The model is built on ``torch.device("meta")`` (no memory, no RNG), wrapped and sharded there,
  then materialised with ``to_empty`` on the real device and filled by ``init_weights()``: each
  rank allocates only its shards, even for the 8b preset.
- World size > 1: FSDP2 ``fully_shard`` on every block of ``model.layers``, then on the root
  (embedding, final norm, head; a tied head is one parameter). The mesh is 1-D (FSDP over all
  ranks) on one node and 2-D (replicate across nodes, shard within a node: HSDP) when the job
  spans nodes, unless ``--no-hsdp`` (``mesh_shape``). On GPU parameters are all-gathered in bf16
  and gradients reduce-scattered in fp32 (``MixedPrecisionPolicy``); on CPU (gloo) everything
  stays fp32, which keeps CPU runs bit-for-bit reproducible.
- World size 1 on GPU: no sharding; bf16 ``torch.autocast`` around forward (fp32 master weights).
- ``--activation-checkpointing``: every block recomputes its activations in backward
  (``checkpoint_wrapper``; the state-dict keys keep their names).
- ``torch.compile`` per block after checkpointing and before sharding (torchtitan's order), or the
  whole model when not sharded; optional, on by default only with CUDA.
- AdamW (fused kernel on CUDA), decay on matrices only; cosine schedule with linear warm-up,
  computed from the step number so a resumed run follows the same curve.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from workloads.common.dist import DistInfo
from workloads.llm.config import TrainConfig, mesh_shape
from workloads.llm.model import Llama


def local_world_size(info: DistInfo) -> int:
    import os

    return int(os.environ.get("LOCAL_WORLD_SIZE", str(info.world_size)))


def build_model(cfg: TrainConfig, info: DistInfo) -> tuple[Llama, Callable[[], contextlib.AbstractContextManager]]:
    """The model on ``info.device``, wrapped, sharded and initialised; and the context manager
    factory forward runs under (autocast on one GPU, nothing otherwise)."""
    cuda = info.device.type == "cuda"
    with torch.device("meta"):
        model = Llama(cfg.model)
    if cfg.activation_checkpointing:
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
            checkpoint_wrapper,
        )

        for i, block in enumerate(model.layers):
            model.layers[i] = checkpoint_wrapper(block, preserve_rng_state=False)
    compile_model = cfg.compile if cfg.compile is not None else cuda
    shape = mesh_shape(info.world_size, local_world_size(info), cfg.hsdp)
    if shape is not None:
        _shard(model, info, shape, compile_model)
        amp = contextlib.nullcontext
    else:
        if compile_model:
            model.compile(dynamic=False)
        amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda \
            else contextlib.nullcontext
    model.to_empty(device=info.device)
    if shape is None and cfg.model.tie_embeddings:
        # to_empty gives each module a fresh tensor; FSDP keeps the one shared parameter itself
        model.lm_head.weight = model.embed_tokens.weight
    if shape is not None and not cuda:
        _init_sharded_on_cpu(model)
    else:
        model.init_weights()
    return model, amp


@torch.no_grad()
def _init_sharded_on_cpu(model: Llama) -> None:
    """``init_weights`` for a model sharded over a CPU mesh. DTensor's RNG tracker covers
    CUDA meshes only: on CPU every rank would draw the same numbers for its own shard (shards
    alike, a worse init). Each rank draws the full weights as one process would (same seed,
    same order) and keeps its slice, so any world size starts from the same weights."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    with torch.device("meta"):
        full = Llama(model.cfg)
    full.to_empty(device="cpu")
    if model.cfg.tie_embeddings:
        full.lm_head.weight = full.embed_tokens.weight
    full.init_weights()
    model.rope_cos.copy_(full.rope_cos)
    model.rope_sin.copy_(full.rope_sin)
    for src, dst in zip(full.parameters(), model.parameters(), strict=True):
        if isinstance(dst, DTensor):
            src = distribute_tensor(src, dst.device_mesh, dst.placements,
                                    src_data_rank=None).to_local()
            dst = dst.to_local()
        dst.copy_(src)


def _shard(model: Llama, info: DistInfo, shape: tuple[int, int], compile_model: bool) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    replicate, shard = shape
    if replicate > 1:
        mesh = init_device_mesh(info.device.type, shape, mesh_dim_names=("replicate", "shard"))
    else:
        mesh = init_device_mesh(info.device.type, (shard,), mesh_dim_names=("shard",))
    mp = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
          if info.device.type == "cuda" else MixedPrecisionPolicy())
    last = len(model.layers) - 1
    for i, block in enumerate(model.layers):
        if compile_model:
            block.compile(dynamic=False)
        # The last block's parameters are needed again at once by backward: keep them.
        fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=i < last)
    fully_shard(model, mesh=mesh, mp_policy=mp)


def build_optimizer(model: nn.Module, cfg: TrainConfig, info: DistInfo) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    extra = {"fused": True} if info.device.type == "cuda" else {"foreach": False}
    return torch.optim.AdamW(groups, lr=cfg.peak_lr, betas=(0.9, 0.95), eps=1e-8, **extra)


@dataclass(frozen=True)
class Schedule:
    """Linear warm-up to ``peak`` over ``warmup`` steps, cosine to ``floor`` at ``total``."""

    peak: float
    floor: float
    warmup: int
    total: int

    @classmethod
    def of(cls, cfg: TrainConfig, warmup: int | None = None) -> Schedule:
        """The config's schedule; ``warmup`` (a checkpoint's) replaces the resolved default."""
        return cls(cfg.peak_lr, cfg.peak_lr * cfg.min_lr_ratio,
                   cfg.warmup if warmup is None else warmup, cfg.max_steps)

    def lr(self, step: int) -> float:
        """Learning rate for optimizer step ``step`` (1-based)."""
        if step <= self.warmup:
            return self.peak * step / max(self.warmup, 1)
        progress = (step - self.warmup) / max(self.total - self.warmup, 1)
        return self.floor + 0.5 * (self.peak - self.floor) * \
            (1.0 + math.cos(math.pi * min(progress, 1.0)))


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate at ``step`` for a fresh run of ``cfg``."""
    return Schedule.of(cfg).lr(step)


def clip_grad_norm(model: nn.Module, max_norm: float) -> torch.Tensor:
    """Clip the global gradient norm (across shards); the pre-clip norm, as a tensor (no sync)."""
    params = [p for p in model.parameters() if p.grad is not None]
    if max_norm > 0:
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
    else:
        norm = torch.nn.utils.get_total_norm([p.grad for p in params], foreach=True)
    if hasattr(norm, "full_tensor"):  # a DTensor under FSDP2
        norm = norm.full_tensor()
    return norm
