"""The training loop: build, resume, step, checkpoint, stop on SIGTERM.

``run(cfg)`` returns the process exit code (see ``workloads.common.cli``). The loop itself
(resume, checkpoints, SIGTERM) is ``workloads.common.loop.train_loop``, shared with
``workloads.llm.trainer``; its per-step all-reduce carries [loss, correct predictions, grad norm]
here, averaged across ranks for the metrics.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from workloads.common.checkpoint import restore_rng_state, rng_state_blob
from workloads.common.dist import (
    DistInfo,
    distributed,
    print0,
    seed_everything,
)
from workloads.common.loop import train_loop
from workloads.common.memory import check_run_fits
from workloads.common.metrics import MetricsLogger
from workloads.common.mfu import mfu, peak_tflops
from workloads.vision.config import TrainConfig, check_manifest
from workloads.vision.data import ShardLoader, SyntheticImages, resolve_data, to_input
from workloads.vision.model import ResNet
from workloads.vision.parallel import (
    autocast_factory,
    build_optimizer,
    grad_norm,
    grad_scaler,
    lr_at,
    resolve_precision,
    sync_buffers,
    wrap,
)


@dataclass
class Built:
    model: ResNet
    """The bare model (parameters, buffers)."""
    net: torch.nn.Module
    """What forward runs through: the model, wrapped in DDP and compiled as configured."""
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loader: SyntheticImages | ShardLoader
    autocast: object
    precision: str
    channels_last: bool
    compiled: bool
    flops_per_image: float
    peak: float | None
    """Dense BF16 peak TFLOP/s of the GPU for MFU; None on CPU, in fp32 or on an unknown GPU."""


class TrainState:
    """Everything a resume needs, as one DCP ``Stateful``: model (with BatchNorm statistics) and
    optimizer, the loss scaler, the step, the data position and every rank's RNG state."""

    def __init__(self, b: Built, info: DistInfo) -> None:
        self.b, self.info, self.step = b, info, 0

    def state_dict(self) -> dict:
        sync_buffers(self.b.model, self.info)
        msd, osd = get_state_dict(self.b.net, self.b.optimizer)
        scaler = io.BytesIO()
        torch.save(self.b.scaler.state_dict(), scaler)  # {} when disabled (bf16, fp32)
        return {"model": msd, "optim": osd, "step": self.step,
                "data": self.b.loader.state_dict(), "rng": rng_state_blob(self.info),
                "scaler": scaler.getvalue()}

    def load_state_dict(self, sd: dict) -> None:
        set_state_dict(self.b.net, self.b.optimizer,
                       model_state_dict=sd["model"], optim_state_dict=sd["optim"])
        self.step = int(sd["step"])
        self.b.loader.load_state_dict(sd["data"])
        restore_rng_state(sd["rng"], self.info)
        scaler = torch.load(io.BytesIO(sd["scaler"]), weights_only=True)
        if scaler and self.b.scaler.is_enabled():
            self.b.scaler.load_state_dict(scaler)


def build(cfg: TrainConfig, info: DistInfo) -> Built:
    """Data, model (NHWC, DDP, compiled), optimizer, loss scaler, FLOPs per image, GPU peak."""
    cuda = info.device.type == "cuda"
    seed_everything(cfg.seed, deterministic=not cuda)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    mcfg = cfg.model
    if cfg.data == "synthetic":
        loader = SyntheticImages(mcfg.num_classes, mcfg.image_size, cfg.batch, info, cfg.seed,
                                 info.device)
    else:  # shards from S3 are checked against the model once downloaded, like local ones
        root = resolve_data(cfg.data, info)
        check_manifest(root, mcfg.image_size, mcfg.num_classes)
        loader = ShardLoader(root, cfg.batch, info, cfg.seed, cfg.hflip,
                             num_classes=mcfg.num_classes)
    with torch.device(info.device):
        model = ResNet(mcfg)
    precision = resolve_precision(cfg.precision, cuda)
    channels_last = cfg.channels_last if cfg.channels_last is not None else cuda
    compiled = cfg.compile if cfg.compile is not None else cuda
    net = wrap(model, info, channels_last, compiled)
    optimizer = build_optimizer(model, cfg, info)
    peak = None
    if cuda and precision != "fp32":  # the table holds 16-bit tensor-core peaks
        peak = peak_tflops(torch.cuda.get_device_name(info.device))
    return Built(model, net, optimizer, grad_scaler(precision, info.device), loader,
                 autocast_factory(precision, info.device), precision, channels_last, compiled,
                 mcfg.train_flops_per_image(), peak)


def train_step(b: Built, cfg: TrainConfig, step: int, info: DistInfo
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimizer step; (mean loss, correct top-1 count, gradient norm) as tensors (no sync)."""
    lr = lr_at(step, cfg, info.world_size)
    for group in b.optimizer.param_groups:
        group["lr"] = lr
    images, labels = b.loader.next_batch()
    x = to_input(images, info.device, b.channels_last)
    y = labels.to(info.device, non_blocking=True)
    with b.autocast():
        logits = b.net(x)
        loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
    b.scaler.scale(loss).backward()
    b.scaler.unscale_(b.optimizer)  # true gradients for the norm; a no-op unless fp16
    norm = grad_norm(b.model)
    b.scaler.step(b.optimizer)  # skipped (and the scale lowered) on inf/nan in fp16
    b.scaler.update()
    b.optimizer.zero_grad(set_to_none=True)
    correct = (logits.detach().argmax(dim=1) == y).sum()
    return loss.detach().float(), correct.float(), norm.float()


def check_fits(cfg: TrainConfig) -> None:
    """Refuse (ConfigError) a run whose estimated memory exceeds the device's, before any
    process group, model or data exists (``TrainConfig.memory_estimate`` has the formula)."""
    size = cfg.model.image_size
    check_run_fits(cfg, f"{cfg.preset} (batch {cfg.batch} x {size}x{size})")


def run(cfg: TrainConfig) -> int:
    check_fits(cfg)
    with distributed(cfg.device) as info:
        return _run(cfg, info)


def _run(cfg: TrainConfig, info: DistInfo) -> int:
    b = build(cfg, info)
    state = TrainState(b, info)
    metrics = MetricsLogger(cfg.metrics_file, cfg.max_steps, info.is_main, cfg.log_every,
                            unit="images")
    mcfg = cfg.model
    images_per_step = info.world_size * cfg.batch
    data = "synthetic images (generated, not real data)" if cfg.data == "synthetic" else cfg.data
    print0(f"vision: preset {cfg.preset} ({b.model.num_params() / 1e6:.2f}M params, "
           f"{mcfg.forward_macs() / 1e9:.2f} GMACs/image), world {info.world_size} on "
           f"{info.device.type}, {b.precision}, channels_last {b.channels_last}, compile "
           f"{b.compiled}, {mcfg.image_size}x{mcfg.image_size}, batch {cfg.batch}/rank "
           f"({images_per_step} global), peak lr {cfg.peak_lr(info.world_size):.3g}, "
           f"{cfg.max_steps} steps, data: {data}")

    def log(step: int, sums: list[float], dt: float) -> None:
        loss_sum, n_correct, norm_sum = sums
        metrics.step(step, loss_sum / info.world_size, lr_at(step, cfg, info.world_size),
                     norm_sum / info.world_size, images_per_step, dt, step * images_per_step,
                     mfu(images_per_step / dt, b.flops_per_image, info.world_size, b.peak),
                     extra={"top1": n_correct / images_per_step})

    return train_loop(cfg, info, state, metrics, "vision",
                      lambda n: train_step(b, cfg, n, info), log)
