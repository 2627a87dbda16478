"""Training throughput benchmark: prints one JSON line with tokens/s, MFU and peak memory.

It times the real training step (same model, FSDP2/autocast, torch.compile and fused AdamW as
``train``) on synthetic tokens, so storage and data loading are out of the picture. Warm-up
steps (compilation, allocator growth) are excluded. MFU uses 6·N + 12·L·H·Q·T FLOPs per token
with torchtitan's N (``mfu``) and nanoGPT's beside it (``mfu_nanogpt``), and the dense-BF16 peak
of the detected GPU (``workloads.common.mfu``); on CPU both are null. It also times one
evaluation of ``--eval-batches`` micro-batches (the held-out pass ``train`` runs).

    python -m workloads.llm.bench --list                 # every preset: parameters, FLOPs/token

    python -m workloads.llm.bench                        # CPU: the tiny preset
    python -m workloads.llm.bench --preset 125m          # one GPU
    python -m workloads.llm.bench --preset 1b --micro-batch-size 8   # one 80 GB GPU
    torchrun --nproc-per-node 8 -m workloads.llm.bench --preset 1b    # FSDP2 over 8 GPUs

Before building anything it estimates the memory the step needs (``TrainConfig.memory_estimate``:
weights, gradients, AdamW states, activations) and exits 2 with that figure when the device has
less free (``1b`` at micro-batch 4 x 2048 needs about 52 GiB on CPU in fp32, 42 GiB on one GPU
in bf16).

Output (one line, rank 0)::

    {"preset": "1b", "device": "cuda", "gpu": "NVIDIA H100 80GB HBM3", "world_size": 1,
     "tokens_per_s": ..., "tokens_per_s_per_gpu": ..., "mfu": 0.45, "peak_mem_gib": ..., ...}
"""

from __future__ import annotations

import argparse
import json
import sys

from workloads.common.bench import parse_bench_args, print_result
from workloads.common.cli import ArgumentParser, exit_2_on_config_error
from workloads.llm.config import PRESETS, TrainConfig

PROG = "python -m workloads.llm.bench"
DESCRIPTION = ("LLM training throughput: times the real training step on synthetic tokens and "
               "prints one JSON line (tokens/s, MFU, peak memory). Refuses, before allocating, "
               "a preset that does not fit the device.")


def preset_table() -> list[dict]:
    """Every preset's shape, parameter counts and FLOPs per token (both conventions)."""
    from workloads.common.mfu import model_flops_per_token

    rows = []
    for name, preset in PRESETS.items():
        m = preset.model
        rows.append({"preset": name, "params": m.params,
                     "non_embedding_params": m.non_embedding_params, "layers": m.n_layer,
                     "d_model": m.d_model, "heads": m.n_head, "kv_heads": m.kv_heads,
                     "ffn_dim": m.hidden_dim, "seq_len": m.seq_len, "vocab_size": m.vocab_size,
                     "tied": m.tie_embeddings,
                     "flops_per_token": model_flops_per_token(m),
                     "flops_per_token_nanogpt": model_flops_per_token(m, "nanogpt")})
    return rows


def parse(argv: list[str] | None) -> tuple[TrainConfig, int, int]:
    p = ArgumentParser(prog=PROG, description=DESCRIPTION)
    p.add_argument("--list", action="store_true",
                   help="print every preset's parameters and FLOPs per token (JSON lines), exit")
    p.add_argument("--preset", help=f"{', '.join(PRESETS)} (default: tiny on CPU, 125m on GPU)")
    p.add_argument("--micro-batch-size", type=int)
    p.add_argument("--seq-len", type=int)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--activation-checkpointing", action="store_true")
    p.add_argument("--eval-batches", type=int, default=5,
                   help="micro-batches of the timed evaluation (default 5; 0: none)")
    if "--list" in (sys.argv[1:] if argv is None else argv):
        for row in preset_table():
            print(json.dumps(row))
        raise SystemExit(0)
    args = parse_bench_args(p, argv, steps=20, warmup=5, gpu_preset="125m")
    cfg = TrainConfig.from_flags(PROG, preset=args.preset, max_steps=args.warmup + args.steps,
                                 data="synthetic", micro_batch_size=args.micro_batch_size,
                                 seq_len=args.seq_len, grad_accum=args.grad_accum,
                                 compile=args.compile, device=args.device,
                                 activation_checkpointing=args.activation_checkpointing,
                                 eval_batches=args.eval_batches)
    return cfg, args.warmup, args.steps


def measure(cfg: TrainConfig, warmup: int, steps: int) -> dict | None:
    import time

    from workloads.common.bench import record, time_steps
    from workloads.common.dist import distributed
    from workloads.common.mfu import mfu
    from workloads.llm.parallel import Schedule
    from workloads.llm.trainer import build, check_fits, evaluate, train_step

    check_fits(cfg)
    with distributed(cfg.device) as info:
        b = build(cfg, info)
        cuda = info.device.type == "cuda"
        schedule = Schedule.of(cfg)
        t = time_steps(lambda n: train_step(b, schedule, n)[0], warmup, steps, cuda)
        eval_s = None
        if cfg.eval_batches:
            t0 = time.perf_counter()
            evaluate(b, info)  # reads the loss: synchronised
            eval_s = time.perf_counter() - t0
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
            "activation_checkpointing": cfg.activation_checkpointing,
            "params": mcfg.params, "non_embedding_params": mcfg.non_embedding_params,
            "flops_per_token": b.flops_per_token,
            "flops_per_token_nanogpt": b.flops_per_token_nanogpt, "peak_tflops": b.peak,
            "mfu": mfu(tps, b.flops_per_token, info.world_size, b.peak),
            "mfu_nanogpt": mfu(tps, b.flops_per_token_nanogpt, info.world_size, b.peak),
            "eval_batches": cfg.eval_batches, "eval_s": eval_s,
        })
        return result if info.is_main else None


def main(argv: list[str] | None = None) -> int:
    return print_result(exit_2_on_config_error(PROG, measure, *parse(argv)))


if __name__ == "__main__":
    sys.exit(main())
