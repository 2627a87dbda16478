"""Training throughput benchmark: prints one JSON line with tokens/s, MFU and peak memory.

It times the real training step (same model, FSDP2/autocast, torch.compile and fused AdamW as
``train``) on synthetic tokens, so storage and data loading are out of the picture. Warm-up
steps (compilation, allocator growth) are excluded. MFU uses 6·N + 12·L·H·Q·T FLOPs per token
and the dense-BF16 peak of the detected GPU (``workloads.common.mfu``); on CPU it is null.

    python -m workloads.llm.bench                        # CPU: the tiny preset
    python -m workloads.llm.bench --preset 125m          # one GPU
    python -m workloads.llm.bench --preset 1b --micro-batch-size 8
    torchrun --nproc-per-node 8 -m workloads.llm.bench --preset 1b    # FSDP2 over 8 GPUs

Output (one line, rank 0)::

    {"preset": "1b", "device": "cuda", "gpu": "NVIDIA H100 80GB HBM3", "world_size": 1,
     "tokens_per_s": ..., "tokens_per_s_per_gpu": ..., "mfu": 0.45, "peak_mem_gib": ..., ...}
"""

from __future__ import annotations

import argparse
import json
import sys

from workloads.common.cli import ArgumentParser, ConfigError, die
from workloads.llm.config import PRESETS, TrainConfig

PROG = "python -m workloads.llm.bench"


def parse(argv: list[str] | None) -> tuple[TrainConfig, int, int]:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--preset", help=f"{', '.join(PRESETS)} (default: tiny on CPU, 125m on GPU)")
    p.add_argument("--steps", type=int, default=20, help="timed steps (default 20)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    p.add_argument("--micro-batch-size", type=int)
    p.add_argument("--seq-len", type=int)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    if args.steps <= 0:
        die(f"{PROG}: error: --steps: must be > 0, got {args.steps}")
    if args.warmup < 0:
        die(f"{PROG}: error: --warmup: must be >= 0, got {args.warmup}")
    preset = args.preset
    if preset is None:
        import torch

        preset = "125m" if args.device != "cpu" and torch.cuda.is_available() else "tiny"
    try:
        cfg = TrainConfig(preset=preset, max_steps=args.warmup + args.steps, data="synthetic",
                          micro_batch_size=args.micro_batch_size, seq_len=args.seq_len,
                          grad_accum=args.grad_accum, compile=args.compile, device=args.device)
    except ConfigError as e:
        die(f"{PROG}: error: {e}")
    return cfg, args.warmup, args.steps


def measure(cfg: TrainConfig, warmup: int, steps: int) -> dict | None:
    import resource
    import time

    import torch

    from workloads.common.dist import setup_distributed, teardown_distributed
    from workloads.common.mfu import mfu
    from workloads.llm.trainer import build, train_step

    info = setup_distributed(cfg.device)
    try:
        b = build(cfg, info)
        cuda = info.device.type == "cuda"
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        for step in range(1, warmup + 1):
            train_step(b, cfg, step)
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for step in range(warmup + 1, warmup + steps + 1):
            loss, _ = train_step(b, cfg, step)
        loss_value = float(loss)  # forces completion of the last step
        sync()
        elapsed = time.perf_counter() - t0
        mcfg = cfg.model
        tokens = steps * info.world_size * cfg.batch_size * cfg.grad_accum * mcfg.seq_len
        tps = tokens / elapsed
        if cuda:
            peak_mem, mem_source = torch.cuda.max_memory_allocated() / 2**30, "cuda_max_allocated"
        else:  # whole-process high-water mark (KiB on Linux)
            peak_mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
            mem_source = "process_max_rss"
        result = {
            "preset": cfg.preset, "device": info.device.type,
            "gpu": torch.cuda.get_device_name(info.device) if cuda else None,
            "world_size": info.world_size, "micro_batch_size": cfg.batch_size,
            "seq_len": mcfg.seq_len, "grad_accum": cfg.grad_accum,
            "compile": cfg.compile if cfg.compile is not None else cuda,
            "dtype": "bf16" if cuda else "fp32", "steps": steps,
            "step_time_s": elapsed / steps, "tokens_per_s": tps,
            "tokens_per_s_per_gpu": tps / info.world_size if cuda else None,
            "non_embedding_params": mcfg.non_embedding_params,
            "flops_per_token": b.flops_per_token, "peak_tflops": b.peak,
            "mfu": mfu(tps, b.flops_per_token, info.world_size, b.peak),
            "peak_mem_gib": peak_mem, "peak_mem_source": mem_source,
            "final_loss": loss_value, "torch": torch.__version__,
            "cpu_threads": None if cuda else torch.get_num_threads(),
        }
        return result if info.is_main else None
    finally:
        teardown_distributed()


def main(argv: list[str] | None = None) -> int:
    cfg, warmup, steps = parse(argv)
    result = measure(cfg, warmup, steps)
    if result is not None:
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
