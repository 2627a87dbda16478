"""Llama-style pretraining: FSDP2/HSDP, bf16, torch.compile, held-out evaluation, DCP checkpoints
to disk or S3, spot-safe resume.

Laptop (CPU, gloo; the ``tiny`` preset trains in seconds on the Python stdlib corpus, built
into ~/.cache/trainyard on first use)::

    python -m workloads.llm.train --preset tiny --max-steps 200 --eval-every 50 \\
        --checkpoint-dir /tmp/ckpt --checkpoint-every 50 --seed 0 --metrics-file /tmp/m.jsonl
    torchrun --nproc-per-node 2 -m workloads.llm.train --preset tiny --max-steps 200 \\
        --checkpoint-dir /tmp/ckpt2 --checkpoint-every 50

One GPU node (NCCL; bf16, torch.compile and async checkpoints switch on by themselves)::

    torchrun --nproc-per-node 8 -m workloads.llm.train --preset 1b --max-steps 20000 \\
        --data s3://BUCKET/datasets/stdlib --checkpoint-dir /fsx/ckpt/run1 --checkpoint-every 500

Cluster (a Kubeflow TrainJob that runs the torchrun line above on every node; rendered from
the stack's pool facts by the infra CLI)::

    trainyard job render llm --stack prod --pool <pool> --nodes 4 > job.yaml
    kubectl apply -f job.yaml

Re-running the same command resumes from the newest complete checkpoint. Exit codes: 0 done,
2 bad configuration (one line on stderr), 75 stopped by SIGTERM after saving a checkpoint
(restart to resume), 1 anything else. See docs/workloads.md.
"""

from __future__ import annotations

import argparse
import sys

from workloads.common.cli import ArgumentParser, exit_2_on_config_error
from workloads.common.config import add_run_args
from workloads.llm.config import PRESETS, TrainConfig

PROG = "python -m workloads.llm.train"
DESCRIPTION = """Llama-style pretraining (RMSNorm, RoPE, GQA, SwiGLU): FSDP2 or HSDP, bf16,
torch.compile, held-out evaluation, DCP checkpoints to a directory or S3, resumed automatically
(Spot-safe). Without --data it trains on the Python standard library's sources (built into
$TRAINYARD_CACHE on first use)."""
EPILOG = """examples:
  python -m workloads.llm.train --preset tiny --max-steps 200 --checkpoint-dir out/llm-ckpt
  torchrun --nproc-per-node 8 -m workloads.llm.train --preset 1b --data s3://B/P \\
      --checkpoint-dir s3://B/ckpt/run1

exit codes: 0 done, 2 bad input (one line on stderr), 75 SIGTERM after a checkpoint (restart to
resume), 1 anything else. Details: docs/workloads.md"""


def build_parser() -> ArgumentParser:
    d = TrainConfig()
    p = ArgumentParser(prog=PROG, description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default=d.preset, help=f"model size: {', '.join(PRESETS)}")
    p.add_argument("--data", help="shard dir, s3://bucket/prefix or 'synthetic' "
                                  "(default: the Python stdlib corpus, byte tokens)")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="node-local cache for S3 shards (default: $TRAINYARD_CACHE/data)")
    p.add_argument("--micro-batch-size", type=int, help="sequences per rank per micro-step")
    p.add_argument("--seq-len", type=int, help="context length (<= the preset's)")
    p.add_argument("--grad-accum", type=int, default=d.grad_accum)
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--min-lr-ratio", type=float, default=d.min_lr_ratio)
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--grad-clip", type=float, default=d.grad_clip, help="0 disables")
    p.add_argument("--vocab-size", type=int,
                   help="model vocabulary (default: the data's, padded to a multiple of 64)")
    p.add_argument("--activation-checkpointing", action=argparse.BooleanOptionalAction,
                   default=d.activation_checkpointing,
                   help="recompute each block's activations in backward (less memory)")
    p.add_argument("--hsdp", action=argparse.BooleanOptionalAction, default=None,
                   help="shard within a node, replicate across nodes (default: on when the job "
                        "spans nodes; --no-hsdp forces FSDP over every rank)")
    e = p.add_argument_group("evaluation")
    e.add_argument("--eval-every", type=int, default=d.eval_every, metavar="N",
                   help="evaluate on the held-out split every N steps (0: only at the end)")
    e.add_argument("--eval-batches", type=int, default=d.eval_batches, metavar="N",
                   help="micro-batches per rank per evaluation (0: no evaluation)")
    e.add_argument("--tensorboard-dir", metavar="DIR",
                   help="TensorBoard event files: a directory or s3://bucket/prefix")
    add_run_args(p, d)
    return p


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    """Flags -> validated TrainConfig; exits 2 with one line on stderr for bad input."""
    return TrainConfig.from_flags(PROG, **vars(build_parser().parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(argv)
    from workloads.llm.trainer import run  # torch is imported only once the flags are good

    return exit_2_on_config_error(PROG, run, cfg)


if __name__ == "__main__":
    sys.exit(main())
