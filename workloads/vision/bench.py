"""Training throughput benchmark: prints one JSON line with images/s, peak memory and the device.

It times the real training step (same ResNet, DDP, autocast, channels_last, torch.compile and SGD
as ``train``) on synthetic images generated on the device, so storage and decoding are out of
the picture, as in NVIDIA's ``--data-backend synthetic`` figures. Warm-up steps (cuDNN autotuning,
compilation, allocator growth) are excluded.

MFU = images/s x 6 x forward MACs per image / (GPUs x dense-BF16 peak): 2 FLOPs per
multiply-accumulate, backward = 2 x forward, convolutions and the classifier counted
(ResNet-50 at 224: 4.09 GMACs, so 24.5 GFLOPs per trained image). Null on CPU, in fp32 and on
a GPU without a known peak (``workloads.common.mfu``).

    python -m workloads.vision.bench                          # CPU: the tiny preset
    python -m workloads.vision.bench --preset resnet50        # one GPU: bf16, batch 256
    python -m workloads.vision.bench --preset resnet50 --precision fp16
    torchrun --nproc-per-node 8 -m workloads.vision.bench --preset resnet50   # DDP over 8 GPUs

Output (one line, rank 0)::

    {"preset": "resnet50", "device": "cuda", "gpu": "NVIDIA H100 80GB HBM3", "world_size": 1,
     "images_per_s": ..., "images_per_s_per_gpu": ..., "mfu": ..., "peak_mem_gib": ..., ...}
"""

from __future__ import annotations

import argparse
import sys

from workloads.common.bench import parse_bench_args, print_result
from workloads.common.cli import ArgumentParser, exit_2_on_config_error
from workloads.vision.config import PRECISIONS, PRESETS, TrainConfig

PROG = "python -m workloads.vision.bench"
DESCRIPTION = ("Vision training throughput: times the real training step on synthetic images "
               "and prints one JSON line (images/s, MFU, peak memory). Refuses, before "
               "allocating, a preset and batch that do not fit the device.")


def parse(argv: list[str] | None) -> tuple[TrainConfig, int, int]:
    p = ArgumentParser(prog=PROG, description=DESCRIPTION)
    p.add_argument("--preset", help=f"{', '.join(PRESETS)} (default: tiny on CPU, resnet50 on GPU)")
    p.add_argument("--batch-size", type=int, help="images per rank (default: the preset's)")
    p.add_argument("--image-size", type=int)
    p.add_argument("--precision", default="auto", help=", ".join(PRECISIONS))
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--device", default="auto")
    args = parse_bench_args(p, argv, steps=30, warmup=10, gpu_preset="resnet50")
    cfg = TrainConfig.from_flags(PROG, preset=args.preset, max_steps=args.warmup + args.steps,
                                 data="synthetic", batch_size=args.batch_size,
                                 image_size=args.image_size, precision=args.precision,
                                 channels_last=args.channels_last, compile=args.compile,
                                 device=args.device)
    return cfg, args.warmup, args.steps


def measure(cfg: TrainConfig, warmup: int, steps: int) -> dict | None:
    from workloads.common.bench import record, time_steps
    from workloads.common.dist import distributed
    from workloads.common.mfu import mfu
    from workloads.vision.trainer import build, check_fits, train_step

    check_fits(cfg)
    with distributed(cfg.device) as info:
        b = build(cfg, info)
        cuda = info.device.type == "cuda"
        t = time_steps(lambda n: train_step(b, cfg, n, info)[0], warmup, steps, cuda)
        ips = steps * info.world_size * cfg.batch / t.elapsed_s
        mcfg = cfg.model
        result = record(cfg.preset, info, t, {
            "batch_size": cfg.batch, "image_size": mcfg.image_size, "precision": b.precision,
            "channels_last": b.channels_last, "compile": b.compiled, "steps": steps,
            "step_time_s": t.elapsed_s / steps, "images_per_s": ips,
            "images_per_s_per_gpu": ips / info.world_size if cuda else None,
            "params": b.model.num_params(), "forward_gmacs_per_image": mcfg.forward_macs() / 1e9,
            "train_flops_per_image": b.flops_per_image, "peak_tflops": b.peak,
            "mfu": mfu(ips, b.flops_per_image, info.world_size, b.peak),
        })
        return result if info.is_main else None


def main(argv: list[str] | None = None) -> int:
    return print_result(exit_2_on_config_error(PROG, measure, *parse(argv)))


if __name__ == "__main__":
    sys.exit(main())
