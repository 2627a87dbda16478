"""The training run: data, model, optimizer, evaluation, and the loop that steps them.

``run(cfg)`` returns the process exit code (see ``workloads.common.cli``). The loop itself
(resume, sync points, checkpoints, SIGTERM, non-finite stops) is
``workloads.common.loop.train_loop``; its metric tensors here are [loss, grad-norm], summed
over ranks at each sync point and averaged for the metrics.

The model's vocabulary comes from the data (its manifest's ``vocab_size``, padded to 64) unless
``--vocab-size`` says otherwise; a token id at or past it is refused before step 1. The
checkpoint root carries ``model.json`` ({"model": ModelConfig fields, "preset", "tokenizer"})
and, when the data has one, ``tokenizer.json``: what ``workloads.llm.export`` and ``generate``
read. A resume whose model differs from ``model.json`` is refused (exit 2) before loading.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_state_dict,
    set_state_dict,
)

from workloads.common.checkpoint import CheckpointStore, restore_rng_state, rng_state_blob
from workloads.common.cli import ConfigError
from workloads.common.dist import (
    DistInfo,
    broadcast_object,
    distributed,
    print0,
    seed_everything,
)
from workloads.common.loop import train_loop
from workloads.common.memory import check_run_fits
from workloads.common.metrics import MetricsLogger
from workloads.common.mfu import mfu, model_flops_per_token, peak_tflops
from workloads.llm.config import TrainConfig, mesh_shape, pad_vocab
from workloads.llm.data import DEFAULT_CORPUS, ShardLoader, SyntheticLoader, resolve_data
from workloads.llm.model import Llama
from workloads.llm.parallel import (
    Schedule,
    build_model,
    build_optimizer,
    clip_grad_norm,
    local_world_size,
)

MODEL_FILE = "model.json"
TOKENIZER_FILE = "tokenizer.json"
TIED_ALIAS = "lm_head.weight"
"""A tied head's name for the embedding matrix: left out of checkpoints (stored once)."""


class TrainState:
    """Everything a resume needs, as one DCP ``Stateful``: model and optimizer shards, the step,
    the warm-up length, the data loader's position and every rank's RNG state."""

    def __init__(self, model, optimizer, loader, info: DistInfo, warmup: int) -> None:
        self.model, self.optimizer, self.loader, self.info = model, optimizer, loader, info
        self.step, self.warmup = 0, warmup

    def state_dict(self) -> dict:
        msd, osd = get_state_dict(self.model, self.optimizer)
        if self.model.cfg.tie_embeddings:
            msd.pop(TIED_ALIAS, None)  # the same tensor as embed_tokens.weight
        return {"model": msd, "optim": osd, "step": self.step, "warmup": self.warmup,
                "data": self.loader.state_dict(), "rng": rng_state_blob(self.info)}

    def load_state_dict(self, sd: dict) -> None:
        set_state_dict(self.model, self.optimizer,
                       model_state_dict=sd["model"], optim_state_dict=sd["optim"],
                       options=StateDictOptions(strict=not self.model.cfg.tie_embeddings))
        self.step = int(sd["step"])
        self.warmup = int(sd["warmup"])
        self.loader.load_state_dict(sd["data"])
        restore_rng_state(sd["rng"], self.info)  # ranks the saved world lacked keep their seed


@dataclass
class Built:
    cfg: TrainConfig
    """The config with the vocabulary resolved (``--vocab-size`` or the data's)."""
    model: Llama
    optimizer: torch.optim.Optimizer
    loader: ShardLoader | SyntheticLoader
    eval_loader: ShardLoader | SyntheticLoader | None
    amp: object
    flops_per_token: float
    flops_per_token_nanogpt: float
    peak: float | None

    @property
    def manifest(self) -> dict:
        return getattr(self.loader, "manifest", {})


def data_vocab(cfg: TrainConfig, data_vocab_size: int | None) -> int:
    """The model's vocabulary: ``--vocab-size``, else the data's padded to 64, else (synthetic)
    the preset's."""
    if cfg.vocab_size:
        return cfg.vocab_size
    if data_vocab_size:
        return pad_vocab(data_vocab_size)
    return cfg.model.vocab_size


def open_data(cfg: TrainConfig, info: DistInfo):
    """(config with the vocabulary resolved, train loader, held-out loader or None)."""
    if cfg.data == "synthetic":
        vocab = cfg.model.vocab_size
        train = SyntheticLoader(vocab, cfg.model.seq_len, cfg.batch_size, cfg.grad_accum, info,
                                cfg.seed)
        held_out = SyntheticLoader(vocab, cfg.model.seq_len, cfg.batch_size, 1, info,
                                   cfg.seed + 1) if cfg.eval_batches else None
        return cfg, train, held_out
    root = resolve_data(cfg.data, info, cfg.cache_dir)
    m = cfg.model
    train = ShardLoader(root, m.seq_len, cfg.batch_size, cfg.grad_accum, info, cfg.seed,
                        cache_dir=cfg.cache_dir)
    cfg = dataclasses.replace(cfg, vocab_size=data_vocab(cfg, train.vocab_size))
    train.check_vocab(cfg.model.vocab_size)  # every token id < the model's vocabulary
    held_out = None
    if cfg.eval_batches:
        try:
            held_out = ShardLoader(train.source, cfg.model.seq_len, cfg.batch_size, 1, info,
                                   cfg.seed, model_vocab=cfg.model.vocab_size, split="val")
        except ConfigError as e:  # no val split (an older dataset), or too small for a batch
            print0(f"llm: no evaluation: {e}")
    return cfg, train, held_out


def held_out_batches(loader: ShardLoader | SyntheticLoader, n: int):
    """``n`` held-out micro-batches (fewer when the split is smaller), the same every call and
    the same count on every rank."""
    if isinstance(loader, SyntheticLoader):
        loader.load_state_dict({"step": 0})
        for _ in range(n):
            yield loader.next_batch()[0]
        return
    yield from loader.eval_batches(n)


def build(cfg: TrainConfig, info: DistInfo) -> Built:
    """Data, model (meta-initialised, sharded, compiled), optimizer, FLOPs per token, GPU peak."""
    seed_everything(cfg.seed, deterministic=info.device.type == "cpu")
    cuda = info.device.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    cfg, loader, held_out = open_data(cfg, info)
    model, amp = build_model(cfg, info)
    optimizer = build_optimizer(model, cfg, info)
    peak = peak_tflops(torch.cuda.get_device_name(info.device)) if cuda else None
    return Built(cfg, model, optimizer, loader, held_out, amp,
                 model_flops_per_token(cfg.model), model_flops_per_token(cfg.model, "nanogpt"),
                 peak)


def train_step(b: Built, schedule: Schedule, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step (with gradient accumulation); (summed loss, grad norm) as tensors,
    never read here (no host sync)."""
    lr = schedule.lr(step)
    for group in b.optimizer.param_groups:
        group["lr"] = lr
    accum = b.cfg.grad_accum
    loss_sum = torch.zeros((), device=b.model.rope_cos.device)
    for x, y in b.loader.next_batch():
        x, y = x.to(loss_sum.device, non_blocking=True), y.to(loss_sum.device, non_blocking=True)
        with b.amp():
            loss = b.model(x, y) / accum
        loss.backward()
        loss_sum += loss.detach()
    norm = clip_grad_norm(b.model, b.cfg.grad_clip)
    b.optimizer.step()
    b.optimizer.zero_grad(set_to_none=True)
    return loss_sum, norm


@torch.no_grad()
def evaluate(b: Built, info: DistInfo) -> tuple[float, int]:
    """Mean loss over ``eval_batches`` micro-batches per rank of the held-out split, the same
    batches every time, averaged over ranks; (loss, tokens evaluated on all ranks)."""
    device = b.model.rope_cos.device
    total = torch.zeros((), device=device)
    count = 0
    b.model.eval()
    try:
        for x, y in held_out_batches(b.eval_loader, b.cfg.eval_batches):
            with b.amp():
                total += b.model(x.to(device), y.to(device)).float()
            count += 1
    finally:
        b.model.train()
    if info.distributed:
        dist.all_reduce(total)
    n = max(count, 1) * info.world_size
    return total.item() / n, count * info.world_size * b.cfg.batch_size * b.cfg.model.seq_len


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


def describe_mesh(cfg: TrainConfig, info: DistInfo) -> str:
    shape = mesh_shape(info.world_size, local_world_size(info), cfg.hsdp)
    if shape is None:
        return "not sharded"
    replicas, shards = shape
    return f"HSDP {replicas} x {shards}" if replicas > 1 else f"FSDP over {shards}"


def tokenizer_kind(manifest: dict) -> str | None:
    kind = manifest.get("tokenizer")
    return {"bytes": "byte"}.get(kind, kind)


def model_description(b: Built) -> dict:
    """``model.json``: what the checkpoint's weights are (export and generate read it)."""
    return {"model": dataclasses.asdict(b.cfg.model), "preset": b.cfg.preset,
            "tokenizer": tokenizer_kind(b.manifest)}


def prepare_store(b: Built):
    """Before resuming: refuse a checkpoint of another model; write model.json and the data's
    tokenizer.json at the checkpoint root."""
    desc = model_description(b)

    def prepare(store: CheckpointStore) -> None:
        diff: list[str] = []
        if store.info.is_main:  # one reader, not every rank of the job
            raw = store.read_root_file(MODEL_FILE)
            if raw is not None and store.latest_complete(log=lambda *_: None) is not None:
                try:
                    old = json.loads(raw).get("model", {})
                except (ValueError, AttributeError):
                    old = {}
                diff = [f"{k} {old.get(k)!r} -> {v!r}" for k, v in desc["model"].items()
                        if old and old.get(k) != v]
        diff = broadcast_object(diff, group=store.group)
        if diff:
            raise ConfigError("--checkpoint-dir", f"{store.uri} holds checkpoints of another "
                                                  f"model ({'; '.join(diff)}): resume with its "
                                                  "--preset/--seq-len/--vocab-size or use a new "
                                                  "directory")
        store.write_root_file(MODEL_FILE, (json.dumps(desc, indent=1) + "\n").encode())
        path = b.loader.tokenizer_path() if hasattr(b.loader, "tokenizer_path") else None
        if path is not None:
            store.write_root_file(TOKENIZER_FILE, path.read_bytes())

    return prepare


def _run(cfg: TrainConfig, info: DistInfo) -> int:
    b = build(cfg, info)
    cfg = b.cfg
    state = TrainState(b.model, b.optimizer, b.loader, info, cfg.warmup)
    metrics = MetricsLogger(cfg.metrics_file, cfg.max_steps, info.is_main, cfg.log_every,
                            tensorboard_dir=cfg.tensorboard_dir)
    mcfg = cfg.model
    print0(f"llm: preset {cfg.preset} ({mcfg.params / 1e6:.2f}M params, "
           f"{mcfg.non_embedding_params / 1e6:.2f}M non-embedding, vocab {mcfg.vocab_size}), "
           f"world {info.world_size} on {info.device.type} ({describe_mesh(cfg, info)}), "
           f"seq {mcfg.seq_len}, micro-batch "
           f"{cfg.batch_size} x accum {cfg.grad_accum}, {cfg.max_steps} steps, "
           f"data: {describe_data(cfg, b.loader)}")
    tokens_per_step = info.world_size * cfg.batch_size * cfg.grad_accum * mcfg.seq_len
    schedule = None

    def step(n: int):
        nonlocal schedule
        if schedule is None:  # after the resume: the checkpoint's warm-up
            schedule = Schedule.of(cfg, state.warmup)
        return train_step(b, schedule, n)

    def log(n: int, sums: list[float], dt: float) -> None:
        loss, grad_norm = sums
        rate = tokens_per_step / dt if dt > 0 else 0.0
        metrics.step(n, loss / info.world_size, schedule.lr(n), grad_norm / info.world_size,
                     tokens_per_step, dt, n * tokens_per_step,
                     mfu(rate, b.flops_per_token, info.world_size, b.peak),
                     extra={"mfu_nanogpt": mfu(rate, b.flops_per_token_nanogpt,
                                               info.world_size, b.peak)})

    def run_eval(n: int) -> None:
        t0 = time.perf_counter()
        loss, tokens = evaluate(b, info)
        metrics.eval(n, loss, tokens, time.perf_counter() - t0)

    if b.eval_loader is None and cfg.eval_batches and info.is_main:
        print0("llm: no evaluation: the data has no held-out split (rebuild it with "
               "python -m workloads.llm.prepare)")
    try:
        return train_loop(cfg, info, state, metrics, "llm", step, log,
                          metric_names=("loss", "grad norm"),
                          evaluate=run_eval if b.eval_loader is not None else None,
                          eval_every=cfg.eval_every, prepare_store=prepare_store(b))
    finally:
        for loader in (b.loader, b.eval_loader):
            if hasattr(loader, "close"):
                loader.close()  # S3 prefetch threads
