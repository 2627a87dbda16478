"""How the ResNet is run on the hardware: DDP, mixed precision, channels_last, compile, SGD.

- **DDP** when the world size is > 1 (NCCL on GPU, gloo on CPU): every rank holds the whole model,
  gradients are all-reduced in buckets during backward. BatchNorm statistics are per rank
  (DDP broadcasts rank 0's running statistics at each forward); no SyncBatchNorm, which at 256
  images per GPU is not needed.
- **Precision**: ``bf16`` autocast (default on CUDA; fp32 master weights, no loss scaling),
  ``fp16`` autocast with a ``torch.amp.GradScaler`` (dynamic loss scale, saved in checkpoints), or
  ``fp32`` (default on CPU, which keeps CPU runs bit-for-bit reproducible). TF32 is allowed for
  the fp32 parts on CUDA, and cuDNN picks its fastest kernels (``benchmark``) there.
- **channels_last** (NHWC; default on CUDA): the layout tensor cores want for convolutions.
- **torch.compile** of the DDP-wrapped model (default on CUDA): DDP's optimizer splits the graph
  at bucket boundaries so communication still overlaps backward.
- **SGD** with Nesterov momentum; weight decay on conv and linear weights only (not BatchNorm,
  not biases); linear warm-up then cosine, computed from the step number so a resumed run
  follows the same curve.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from workloads.common.dist import DistInfo
from workloads.vision.config import TrainConfig


def resolve_precision(precision: str, cuda: bool) -> str:
    if precision == "auto":
        return "bf16" if cuda else "fp32"
    return precision


def autocast_factory(precision: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    if precision == "fp32":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype)


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A GradScaler, enabled for fp16 only (a disabled one passes every call through)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def wrap(model: nn.Module, info: DistInfo, channels_last: bool, compile_model: bool) -> nn.Module:
    """The module to train: ``model`` in NHWC if asked, in DDP when distributed, compiled if
    asked. Its state dict keys are the bare model's (``get_state_dict`` strips DDP's prefix)."""
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    net: nn.Module = model
    if info.distributed:
        device_ids = [info.local_rank] if info.device.type == "cuda" else None
        net = DistributedDataParallel(model, device_ids=device_ids, gradient_as_bucket_view=True)
    if compile_model:
        net.compile(dynamic=False)  # in place: parameter names stay as they are
    return net


def build_optimizer(model: nn.Module, cfg: TrainConfig, info: DistInfo) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    extra = {"fused": True} if info.device.type == "cuda" else {"foreach": False}
    return torch.optim.SGD(groups, lr=cfg.peak_lr(info.world_size), momentum=cfg.momentum,
                           nesterov=cfg.momentum > 0, **extra)


def lr_at(step: int, cfg: TrainConfig, world_size: int) -> float:
    """Learning rate for optimizer step ``step`` (1-based): linear warm-up, cosine to the floor."""
    peak = cfg.peak_lr(world_size)
    floor = peak * cfg.min_lr_ratio
    if step <= cfg.warmup:
        return peak * step / max(cfg.warmup, 1)
    progress = (step - cfg.warmup) / max(cfg.max_steps - cfg.warmup, 1)
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def grad_norm(model: nn.Module) -> torch.Tensor:
    """Global L2 norm of the (already all-reduced, unscaled) gradients, as a tensor (no sync)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads, foreach=True)


def sync_buffers(model: nn.Module, info: DistInfo) -> None:
    """Give every rank rank 0's BatchNorm running statistics (DDP does this at the next forward
    anyway), so a checkpoint holds one well-defined copy."""
    if info.distributed:
        for buf in model.buffers():
            torch.distributed.broadcast(buf, src=0)
