"""The training loop: build, resume, step, evaluate, checkpoint, stop on SIGTERM.

``run(cfg)`` returns the process exit code (see ``workloads.common.cli``). The loop itself
(resume, checkpoints, SIGTERM, when to evaluate) is ``workloads.common.loop.train_loop``, shared
with ``workloads.llm.trainer``; its all-reduce carries [loss, correct predictions, grad norm]
here, averaged across ranks for the metrics.

``evaluate`` runs the bare model (no DDP, no compile, eval-mode BatchNorm, no gradients) over each
rank's part of the held-out split and sums [loss, top-1 hits, top-5 hits, images] over the
ranks: the accuracy of the whole split, not a mean of per-rank means. It draws no random numbers
and changes no state, so a run with evaluations trains exactly like one without.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import asdict, dataclass

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
from workloads.vision.config import TrainConfig
from workloads.vision.data import MEAN, STD, ShardLoader, SyntheticImages, open_source, to_input
from workloads.vision.loader import ImageLoader, default_workers
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
    loader: SyntheticImages | ShardLoader | ImageLoader
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

    def __init__(self, b: Built, info: DistInfo, cfg: TrainConfig) -> None:
        self.b, self.info, self.step = b, info, 0
        self.meta = json.dumps(model_meta(cfg, b.loader)).encode()

    def state_dict(self) -> dict:
        sync_buffers(self.b.model, self.info)
        msd, osd = get_state_dict(self.b.net, self.b.optimizer)
        scaler = io.BytesIO()
        torch.save(self.b.scaler.state_dict(), scaler)  # {} when disabled (bf16, fp32)
        return {"model": msd, "optim": osd, "step": self.step,
                "data": self.b.loader.state_dict(), "rng": rng_state_blob(self.info),
                "scaler": scaler.getvalue(), "meta": self.meta}

    def load_state_dict(self, sd: dict) -> None:
        set_state_dict(self.b.net, self.b.optimizer,
                       model_state_dict=sd["model"], optim_state_dict=sd["optim"])
        self.step = int(sd["step"])
        self.b.loader.load_state_dict(sd["data"])
        restore_rng_state(sd["rng"], self.info)
        scaler = torch.load(io.BytesIO(sd["scaler"]), weights_only=True)
        if scaler and self.b.scaler.is_enabled():
            self.b.scaler.load_state_dict(scaler)


def model_meta(cfg: TrainConfig, loader) -> dict:
    """What an export needs beside the weights (saved in every checkpoint as ``meta``): the
    model's shape, the class names and the input normalisation."""
    images = getattr(loader, "images", None)
    return {"preset": cfg.preset, "model": asdict(cfg.model),
            "classes": list(getattr(images, "classes", None) or []), "mean": list(MEAN),
            "std": list(STD), "data": cfg.data}


def build(cfg: TrainConfig, info: DistInfo) -> Built:
    """Data, model (NHWC, DDP, compiled), optimizer, loss scaler, FLOPs per image, GPU peak."""
    cuda = info.device.type == "cuda"
    seed_everything(cfg.seed, deterministic=not cuda)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    mcfg = cfg.model
    workers = cfg.workers if cfg.workers is not None else default_workers()
    loader = open_source(cfg.data, mcfg.image_size, mcfg.num_classes, cfg.batch, info, cfg.seed,
                         workers, cfg.prefetch, cfg.crop_scale, cfg.hflip)
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


def evaluate(b: Built, info: DistInfo) -> dict | None:
    """Held-out loss, top-1 and top-5 over the whole split (all ranks); None without a split."""
    if not getattr(b.loader, "has_eval", False):
        return None
    t0 = time.perf_counter()
    model, was_training = b.model, b.model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=info.device)
    k = min(5, model.cfg.num_classes)
    with torch.no_grad(), b.autocast():
        for images, labels in b.loader.evaluate_batches():
            x = to_input(images, info.device, b.channels_last)
            y = labels.to(info.device, non_blocking=True)
            logits = model(x).float()
            hits = logits.topk(k, dim=1).indices == y[:, None]
            sums += torch.stack([F.cross_entropy(logits, y, reduction="sum").double(),
                                 hits[:, 0].sum().double(), hits.any(dim=1).sum().double(),
                                 torch.tensor(float(len(y)), dtype=torch.float64,
                                              device=info.device)])
    model.train(was_training)
    if info.distributed:
        torch.distributed.all_reduce(sums)
    loss, top1, top5, n = sums.tolist()
    if n == 0:
        return None
    return {"eval_loss": loss / n, "eval_top1": top1 / n, "eval_top5": top5 / n,
            "eval_images": int(n), "eval_s": round(time.perf_counter() - t0, 3)}


def log_eval(metrics: MetricsLogger, step: int, result: dict) -> None:
    """An evaluation into the metrics file (an ``eval`` event; the following step records carry
    ``eval_top1``/``eval_top5``/``eval_loss``/``eval_step`` for the sidecar), TensorBoard and
    the progress line. Rank 0 only, like the rest of ``MetricsLogger``."""
    if not metrics.is_main:
        return
    figures = {k: result[k] for k in ("eval_loss", "eval_top1", "eval_top5")}
    metrics.last_eval = {**figures, "eval_step": step}
    metrics.event("eval", step=step, **result)
    metrics.info(f"eval   {step:>6}/{metrics.total_steps} | loss {result['eval_loss']:.4f} | "
                 f"top-1 {100 * result['eval_top1']:.2f}% | top-5 "
                 f"{100 * result['eval_top5']:.2f}% | {result['eval_images']:,} images in "
                 f"{result['eval_s']:.2f} s")
    if getattr(metrics, "tb", None):
        metrics.tb.scalars(step, {"eval/loss": figures["eval_loss"],
                                  "eval/top1": figures["eval_top1"],
                                  "eval/top5": figures["eval_top5"]})


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
    state = TrainState(b, info, cfg)
    metrics = MetricsLogger(cfg.metrics_file, cfg.max_steps, info.is_main, cfg.log_every,
                            unit="images", tensorboard_dir=cfg.tensorboard_dir)
    mcfg = cfg.model
    images_per_step = info.world_size * cfg.batch
    data = "synthetic JPEG shards (generated, not real data)" if cfg.data == "synthetic" \
        else cfg.data
    if isinstance(b.loader, ImageLoader):
        data += f", {b.loader.workers} loader workers/rank"
        if not b.loader.has_eval:
            data += ", no held-out split (no evaluation)"
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

    def run_eval(step: int) -> None:
        result = evaluate(b, info)
        if result is not None:
            log_eval(metrics, step, result)

    try:
        return train_loop(cfg, info, state, metrics, "vision",
                          lambda n: train_step(b, cfg, n, info), log,
                          metric_names=("loss", "top-1 hits", "grad_norm"), evaluate=run_eval,
                          eval_every=cfg.eval_every)
    finally:
        if isinstance(b.loader, ImageLoader):
            b.loader.close()
