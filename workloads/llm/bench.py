"""Training throughput benchmark: prints one JSON line with tokens/s, MFU and peak memory.

It times the real training step (same model, FSDP2/autocast, torch.compile and fused AdamW as
``train``) on synthetic tokens, so storage and data loading are out of the picture. Warm-up
steps (compilation, allocator growth) are excluded. MFU uses 6·N + 12·L·H·Q·T FLOPs per token
and the dense-BF16 peak of the detected GPU (``workloads.common.mfu``); on CPU it is null.

    python -m workloads.llm.bench                        # CPU: the tiny preset
    python -m workloads.llm.bench --preset 125m          # one GPU
    python -m workloads.llm.bench --preset 1b --micro-batch-size 8   # one 80 GB GPU
    torchrun --nproc-per-node 8 -m workloads.llm.bench --preset 1b    # FSDP2 over 8 GPUs

Before building anything it estimates the memory the step needs (``TrainConfig.memory_estimate``:
weights, gradients, AdamW states, activations) and exits 2 with that figure when the device has
less free (``1b`` needs about 80 GiB on CPU in fp32, 55 GiB on one GPU in bf16).

Output (one line, rank 0)::

    {"preset": "1b", "device": "cuda", "gpu": "NVIDIA H100 80GB HBM3", "world_size": 1,
     "tokens_per_s": ..., "tokens_per_s_per_gpu": ..., "mfu": 0.45, "peak_mem_gib": ..., ...}
"""

from __future__ import annotations

import argparse
import sys

from workloads.common.bench import parse_bench_args, print_result
from workloads.common.cli import ArgumentParser, exit_2_on_config_error
from workloads.llm.config import PRESETS, TrainConfig

PROG = "python -m workloads.llm.bench"
DESCRIPTION = ("LLM training throughput: times the real training step on synthetic tokens and "
               "prints one JSON line (tokens/s, MFU, peak memory). Refuses, before allocating, "
               "a preset that does not fit the device.")


def parse(argv: list[str] | None) -> tuple[TrainConfig, int, int]:
    p = ArgumentParser(prog=PROG, description=DESCRIPTION)
    p.add_argument("--preset", help=f"{', '.join(PRESETS)} (default: tiny on CPU, 125m on GPU)")
    p.add_argument("--micro-batch-size", type=int)
    p.add_argument("--seq-len", type=int)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--device", default="auto")
    args = parse_bench_args(p, argv, steps=20, warmup=5, gpu_preset="125m")
    cfg = TrainConfig.from_flags(PROG, preset=args.preset, max_steps=args.warmup + args.steps,
                                 data="synthetic", micro_batch_size=args.micro_batch_size,
                                 seq_len=args.seq_len, grad_accum=args.grad_accum,
                                 compile=args.compile, device=args.device)
    return cfg, args.warmup, args.steps


def measure(cfg: TrainConfig, warmup: int, steps: int) -> dict | None:
    from workloads.common.bench import record, time_steps
    from workloads.common.dist import distributed
    from workloads.common.mfu import mfu
    from workloads.llm.trainer import build, check_fits, train_step

    check_fits(cfg)
    with distributed(cfg.device) as info:
        b = build(cfg, info)
        cuda = info.device.type == "cuda"
        t = time_steps(lambda n: train_step(b, cfg, n)[0], warmup, steps, cuda)
        mcfg = cfg.model
        tokens = steps * info.world_size * cfg.batch_size * cfg.grad_accum * mcfg.seq_len
        tps = tokens / t.elapsed_s
        result = record(cfg.preset, info, t, {
            "micro_batch_size": cfg.batch_size, "seq_len": mcfg.seq_len,
            "grad_accum": cfg.grad_accum,
            "compile": cfg.compile if cfg.compile is not None else cuda,
            "dtype": "bf16" if cuda else "fp32", "steps": steps,
            "step_time_s": t.elapsed_s / steps, "tokens_per_s": tps,
            "tokens_per_s_per_gpu": tps / info.world_size if cuda else None,
            "non_embedding_params": mcfg.non_embedding_params,
            "flops_per_token": b.flops_per_token, "peak_tflops": b.peak,
            "mfu": mfu(tps, b.flops_per_token, info.world_size, b.peak),
        })
        return result if info.is_main else None


def main(argv: list[str] | None = None) -> int:
    return print_result(exit_2_on_config_error(PROG, measure, *parse(argv)))


if __name__ == "__main__":
    sys.exit(main())
