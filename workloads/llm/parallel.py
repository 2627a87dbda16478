"""How the GPT is run on the hardware: FSDP2, mixed precision, torch.compile, the optimizer.

- World size > 1: FSDP2 ``fully_shard`` on every transformer block, then on the root (which
  holds the tied embedding/head). On GPU parameters are all-gathered in bf16 and gradients
  reduce-scattered in fp32 (``MixedPrecisionPolicy``); on CPU (gloo) everything stays fp32, which
  is what makes CPU runs bit-for-bit reproducible. FSDP2 works on CPU with gloo in torch 2.13, so
  the CPU tests exercise the same code path as the cluster.
- World size 1 on GPU: no sharding; bf16 ``torch.autocast`` around forward (fp32 master weights).
- ``torch.compile`` per block before sharding (the torchtitan recipe), or the whole model when
  not sharded; optional, on by default only with CUDA.
- AdamW (fused kernel on CUDA), decay on matrices only; cosine schedule with linear warm-up,
  computed from the step number so a resumed run follows the same curve.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch
from torch import nn

from workloads.common.dist import DistInfo
from workloads.llm.config import TrainConfig
from workloads.llm.model import GPT


def parallelize(model: GPT, info: DistInfo, compile_model: bool) -> Callable[[], contextlib.AbstractContextManager]:
    """Shard/compile ``model`` in place; returns the context manager factory for forward."""
    cuda = info.device.type == "cuda"
    if info.world_size > 1:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mesh = init_device_mesh(info.device.type, (info.world_size,))
        mp = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
              if cuda else MixedPrecisionPolicy())
        last = len(model.blocks) - 1
        for i, block in enumerate(model.blocks):
            if compile_model:
                block.compile(dynamic=False)
            # The last block's parameters are needed again at once by backward: keep them.
            fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=i < last)
        fully_shard(model, mesh=mesh, mp_policy=mp)
        return contextlib.nullcontext
    if compile_model:
        model.compile(dynamic=False)
    if cuda:
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


def build_optimizer(model: nn.Module, cfg: TrainConfig, info: DistInfo) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    extra = {"fused": True} if info.device.type == "cuda" else {"foreach": False}
    return torch.optim.AdamW(groups, lr=cfg.peak_lr, betas=(0.9, 0.95), eps=1e-8, **extra)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for optimizer step ``step`` (1-based): linear warm-up, cosine to the floor."""
    peak, floor = cfg.peak_lr, cfg.peak_lr * cfg.min_lr_ratio
    if step <= cfg.warmup:
        return peak * step / max(cfg.warmup, 1)
    progress = (step - cfg.warmup) / max(cfg.max_steps - cfg.warmup, 1)
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * min(progress, 1.0)))


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
