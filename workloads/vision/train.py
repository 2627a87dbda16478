"""ResNet image classification: DDP, mixed precision, DCP checkpoints to disk or S3, spot-safe resume.

Laptop (CPU, gloo, fp32; the ``tiny`` preset trains in seconds on synthetic 32x32 images: class
patterns plus noise, written once as JPEG shards and decoded like real ones, but not real data)::

    python -m workloads.vision.train --preset tiny --max-steps 200 \\
        --checkpoint-dir /tmp/vckpt --checkpoint-every 50 --seed 0 --metrics-file /tmp/vm.jsonl \\
        --eval-every 50 --tensorboard-dir /tmp/vtb
    torchrun --nproc-per-node 2 -m workloads.vision.train --preset tiny --max-steps 200 \\
        --checkpoint-dir /tmp/vckpt2 --checkpoint-every 50

One GPU node (NCCL; bf16 autocast, channels_last, torch.compile and async checkpoints switch on
by themselves; ``--precision fp16`` uses a GradScaler instead)::

    torchrun --nproc-per-node 8 -m workloads.vision.train --preset resnet50 --max-steps 50000 \\
        --data s3://BUCKET/datasets/imagenet-shards --checkpoint-dir /fsx/ckpt/rn50 \\
        --checkpoint-every 1000 --eval-every 5000 --workers 10

Cluster (a Kubeflow TrainJob that runs the torchrun line above on every node; rendered from
the stack's pool facts by the infra CLI)::

    trainyard job render vision --stack prod --pool <pool> --nodes 2 > job.yaml
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
from workloads.vision.config import PRECISIONS, PRESETS, TrainConfig

PROG = "python -m workloads.vision.train"
DESCRIPTION = """ResNet image classification: DDP, mixed precision, DCP checkpoints to a directory
or S3, resumed automatically (Spot-safe). Without --data it trains on synthetic images
(generated class patterns written as JPEG shards, not real data)."""
EPILOG = """examples:
  python -m workloads.vision.train --preset tiny --max-steps 200 --checkpoint-dir out/vision-ckpt
  torchrun --nproc-per-node 8 -m workloads.vision.train --preset resnet50 --data s3://B/P \\
      --checkpoint-dir s3://B/ckpt/rn50

exit codes: 0 done, 2 bad input (one line on stderr), 75 SIGTERM after a checkpoint (restart to
resume), 1 anything else. Details: docs/workloads.md"""


def build_parser() -> ArgumentParser:
    d = TrainConfig()
    p = ArgumentParser(prog=PROG, description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default=d.preset, help=f"model: {', '.join(PRESETS)}")
    p.add_argument("--data", default=d.data,
                   help="'synthetic' (default; generated JPEGs, not real images), an ImageFolder "
                        "directory, or a directory or s3://bucket/prefix of tar shards (python -m "
                        "workloads.vision.prepare); 'device': tensors made on the device, no "
                        "decoding")
    p.add_argument("--batch-size", type=int, help="images per rank per step")
    p.add_argument("--image-size", type=int, help="training resolution (default: the preset's)")
    p.add_argument("--lr", type=float, help="peak lr per 256 images (x global batch / 256)")
    p.add_argument("--min-lr-ratio", type=float, default=d.min_lr_ratio)
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--momentum", type=float, default=d.momentum, help="Nesterov SGD momentum")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=d.hflip,
                   help="random horizontal flips in training augmentation")
    p.add_argument("--min-crop", type=float,
                   help="smallest area fraction of a random-resized crop (default: the preset's)")
    p.add_argument("--workers", type=int, help="DataLoader decode processes per rank (default: "
                                               "CPUs per rank - 1, at most 8; 0: in-process)")
    p.add_argument("--prefetch", type=int, default=d.prefetch,
                   help="batches each worker prepares ahead (DataLoader prefetch_factor)")
    p.add_argument("--eval-every", type=int, default=d.eval_every, metavar="N",
                   help="top-1/top-5 on the held-out split every N steps (0: only at the end)")
    p.add_argument("--tensorboard-dir", help="also write TensorBoard scalars here (dir or s3://)")
    p.add_argument("--precision", default=d.precision,
                   help=f"{', '.join(PRECISIONS)} (auto: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC memory format (default: on with CUDA, off on CPU)")
    add_run_args(p, d)
    return p


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    """Flags -> validated TrainConfig; exits 2 with one line on stderr for bad input."""
    return TrainConfig.from_flags(PROG, **vars(build_parser().parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(argv)
    from workloads.vision.trainer import run  # torch is imported only once the flags are good

    return exit_2_on_config_error(PROG, run, cfg)


if __name__ == "__main__":
    sys.exit(main())
