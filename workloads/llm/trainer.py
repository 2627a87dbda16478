"""The training loop: build, resume, step, checkpoint, stop on SIGTERM.

``run(cfg)`` returns the process exit code (see ``workloads.common.cli``). The loop itself
(resume, checkpoints, SIGTERM) is ``workloads.common.loop.train_loop``; its per-step all-reduce
carries [loss, grad-norm] here, averaged across ranks for the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
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
from workloads.common.mfu import flops_per_token, mfu, peak_tflops
from workloads.llm.config import TrainConfig
from workloads.llm.data import DEFAULT_CORPUS, ShardLoader, SyntheticLoader, resolve_data
from workloads.llm.model import GPT
from workloads.llm.parallel import build_optimizer, clip_grad_norm, lr_at, parallelize


class TrainState:
    """Everything a resume needs, as one DCP ``Stateful``: model and optimizer shards, the step,
    the data loader's position and every rank's RNG state."""

    def __init__(self, model, optimizer, loader, info: DistInfo) -> None:
        self.model, self.optimizer, self.loader, self.info = model, optimizer, loader, info
        self.step = 0

    def state_dict(self) -> dict:
        msd, osd = get_state_dict(self.model, self.optimizer)
        return {"model": msd, "optim": osd, "step": self.step, "data": self.loader.state_dict(),
                "rng": rng_state_blob(self.info)}

    def load_state_dict(self, sd: dict) -> None:
        set_state_dict(self.model, self.optimizer,
                       model_state_dict=sd["model"], optim_state_dict=sd["optim"])
        self.step = int(sd["step"])
        self.loader.load_state_dict(sd["data"])
        restore_rng_state(sd["rng"], self.info)  # ranks the saved world lacked keep their seed


@dataclass
class Built:
    model: GPT
    optimizer: torch.optim.Optimizer
    loader: ShardLoader | SyntheticLoader
    amp: object
    flops_per_token: float
    peak: float | None


def build(cfg: TrainConfig, info: DistInfo) -> Built:
    """Data, model (sharded, compiled), optimizer, FLOPs per token and GPU peak."""
    seed_everything(cfg.seed, deterministic=info.device.type == "cpu")
    cuda = info.device.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    mcfg = cfg.model
    if cfg.data == "synthetic":
        loader = SyntheticLoader(mcfg.vocab_size, mcfg.seq_len, cfg.batch_size, cfg.grad_accum,
                                 info, cfg.seed)
    else:  # checks every token id < the model's vocabulary (ConfigError otherwise)
        loader = ShardLoader(resolve_data(cfg.data, info), mcfg.seq_len, cfg.batch_size,
                             cfg.grad_accum, info, cfg.seed, model_vocab=mcfg.vocab_size)
    with torch.device(info.device):
        model = GPT(mcfg)
    compile_model = cfg.compile if cfg.compile is not None else cuda
    amp = parallelize(model, info, compile_model)
    optimizer = build_optimizer(model, cfg, info)
    fpt = flops_per_token(mcfg.non_embedding_params, mcfg.n_layer, mcfg.n_head, mcfg.head_dim,
                          mcfg.seq_len)
    peak = peak_tflops(torch.cuda.get_device_name(info.device)) if cuda else None
    return Built(model, optimizer, loader, amp, fpt, peak)


def train_step(b: Built, cfg: TrainConfig, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step (with gradient accumulation); (summed loss, grad norm) as tensors."""
    lr = lr_at(step, cfg)
    for group in b.optimizer.param_groups:
        group["lr"] = lr
    loss_sum = torch.zeros((), device=next(b.model.parameters()).device)
    for x, y in b.loader.next_batch():
        x, y = x.to(loss_sum.device, non_blocking=True), y.to(loss_sum.device, non_blocking=True)
        with b.amp():
            loss = b.model(x, y) / cfg.grad_accum
        loss.backward()
        loss_sum += loss.detach()
    norm = clip_grad_norm(b.model, cfg.grad_clip)
    b.optimizer.step()
    b.optimizer.zero_grad(set_to_none=True)
    return loss_sum, norm


def check_fits(cfg: TrainConfig) -> None:
    """Refuse (ConfigError) a run whose estimated memory exceeds the device's, before any
    process group, model or data exists (``TrainConfig.memory_estimate`` has the formula)."""
    check_run_fits(cfg, f"{cfg.preset} (micro-batch {cfg.batch_size} x seq "
                        f"{cfg.model.seq_len})")


def run(cfg: TrainConfig) -> int:
    check_fits(cfg)
    with distributed(cfg.device) as info:
        return _run(cfg, info)


def describe_data(cfg: TrainConfig, loader: ShardLoader | SyntheticLoader) -> str:
    if isinstance(loader, SyntheticLoader):
        return "synthetic random tokens (no I/O; a throughput run, nothing to learn)"
    return f"{cfg.data or DEFAULT_CORPUS} ({loader.describe()})"


def _run(cfg: TrainConfig, info: DistInfo) -> int:
    b = build(cfg, info)
    state = TrainState(b.model, b.optimizer, b.loader, info)
    metrics = MetricsLogger(cfg.metrics_file, cfg.max_steps, info.is_main, cfg.log_every)
    mcfg = cfg.model
    print0(f"llm: preset {cfg.preset} ({b.model.num_params() / 1e6:.2f}M non-embedding params), "
           f"world {info.world_size} on {info.device.type}, seq {mcfg.seq_len}, micro-batch "
           f"{cfg.batch_size} x accum {cfg.grad_accum}, {cfg.max_steps} steps, "
           f"data: {describe_data(cfg, b.loader)}")
    tokens_per_step = info.world_size * cfg.batch_size * cfg.grad_accum * mcfg.seq_len

    def log(step: int, sums: list[float], dt: float) -> None:
        loss, grad_norm = sums
        metrics.step(step, loss / info.world_size, lr_at(step, cfg), grad_norm / info.world_size,
                     tokens_per_step, dt, step * tokens_per_step,
                     mfu(tokens_per_step / dt, b.flops_per_token, info.world_size, b.peak))

    return train_loop(cfg, info, state, metrics, "llm", lambda n: train_step(b, cfg, n), log)
