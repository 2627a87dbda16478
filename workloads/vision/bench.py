"""Training throughput benchmark: the input pipeline and the model step, measured apart.

Prints one JSON line. **Model step**: the real training step (same ResNet, DDP, autocast,
channels_last, torch.compile and SGD as ``train``) on images generated on the device, so storage
and decoding are out of the picture, as in NVIDIA's ``--data-backend synthetic`` figures; warm-up
steps (cuDNN autotuning, compilation, allocator growth) are excluded. **Input pipeline**: the
loader alone (read, decode, random-resized crop, flip, stack; ``--data``, default the synthetic
JPEG shards) at each ``--input-workers`` count, images/s per rank over ``--input-batches``
batches after the first (worker start-up excluded). ``bound`` names the slower of the two at the
largest worker count: if it says ``input pipeline``, more ``--workers`` (CPUs), smaller source
images or a GPU decoder would speed training up, not a faster GPU. A regression in decoding or
augmentation shows as a lower ``input_images_per_s``.

MFU = images/s x 6 x forward MACs per image / (GPUs x dense-BF16 peak): 2 FLOPs per
multiply-accumulate, backward = 2 x forward, convolutions and the classifier counted
(ResNet-50 at 224: 4.09 GMACs, so 24.5 GFLOPs per trained image). Null on CPU, in fp32 and on
a GPU without a known peak (``workloads.common.mfu``).

    python -m workloads.vision.bench                          # CPU: the tiny preset
    python -m workloads.vision.bench --input-workers 0,1,2 --input-batches 50
    python -m workloads.vision.bench --preset resnet50 --data s3://B/imagenet-shards \
        --input-workers 0,4,8,16                              # is the GPU waiting for JPEGs?
    python -m workloads.vision.bench --preset resnet50        # one GPU: bf16, batch 256
    python -m workloads.vision.bench --preset resnet50 --precision fp16
    torchrun --nproc-per-node 8 -m workloads.vision.bench --preset resnet50   # DDP over 8 GPUs

Output (one line, rank 0)::

    {"preset": "resnet50", "device": "cuda", "gpu": "NVIDIA H100 80GB HBM3", "world_size": 1,
     "images_per_s": ..., "images_per_s_per_gpu": ..., "mfu": ..., "peak_mem_gib": ...,
     "input_images_per_s": {"0": ..., "4": ..., "8": ...}, "bound": "model step", ...}
"""

from __future__ import annotations

import argparse
import sys

from workloads.common.bench import parse_bench_args, print_result
from workloads.common.cli import ArgumentParser, die, exit_2_on_config_error
from workloads.vision.config import PRECISIONS, PRESETS, TrainConfig

PROG = "python -m workloads.vision.bench"
DESCRIPTION = ("Vision training throughput: times the input pipeline alone (decode and augment, "
               "images/s per worker count) and the real training step on images made on the "
               "device, and prints one JSON line saying which bounds training (images/s, MFU, "
               "peak memory). Refuses, before allocating, a preset and batch that do not fit "
               "the device.")


def parse(argv: list[str] | None) -> tuple[TrainConfig, int, int, dict]:
    p = ArgumentParser(prog=PROG, description=DESCRIPTION)
    p.add_argument("--preset", help=f"{', '.join(PRESETS)} (default: tiny on CPU, resnet50 on GPU)")
    p.add_argument("--batch-size", type=int, help="images per rank (default: the preset's)")
    p.add_argument("--image-size", type=int)
    p.add_argument("--precision", default="auto", help=", ".join(PRECISIONS))
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--data", default="synthetic",
                   help="image set for the input-pipeline half (default: the synthetic JPEGs)")
    p.add_argument("--input-workers", default="0,1,2",
                   help="worker counts to time the input pipeline at, comma-separated; 'none' "
                        "skips it (default 0,1,2)")
    p.add_argument("--input-batches", type=int, default=20,
                   help="timed input batches per worker count (default 20)")
    args = parse_bench_args(p, argv, steps=30, warmup=10, gpu_preset="resnet50")
    try:
        workers = [] if args.input_workers == "none" else \
            [int(w) for w in args.input_workers.split(",")]
    except ValueError:
        workers = [-1]
    if any(w < 0 for w in workers):
        die(f"{PROG}: error: --input-workers: {args.input_workers!r} is not a comma-separated "
            "list of counts >= 0 (or none)")
    if args.input_batches <= 0:
        die(f"{PROG}: error: --input-batches: must be > 0, got {args.input_batches}")
    cfg = TrainConfig.from_flags(PROG, preset=args.preset, max_steps=args.warmup + args.steps,
                                 data="device", batch_size=args.batch_size,
                                 image_size=args.image_size, precision=args.precision,
                                 channels_last=args.channels_last, compile=args.compile,
                                 device=args.device)
    if workers:  # the input set's checks (directory there, S3 reachable), before any work
        TrainConfig.from_flags(PROG, preset=args.preset, data=args.data, device=args.device)
    return cfg, args.warmup, args.steps, {"data": args.data, "workers": workers,
                                          "batches": args.input_batches}


def measure_input(cfg: TrainConfig, info, data: str, workers: list[int], batches: int) -> dict:
    """Images/s of the training loader alone (this rank's share) at each worker count."""
    import time

    from workloads.vision.data import open_source
    from workloads.vision.loader import ImageLoader

    rates = {}
    m = cfg.model
    for w in workers:
        loader = open_source(data, m.image_size, m.num_classes, cfg.batch, info, cfg.seed, w,
                             cfg.prefetch, cfg.crop_scale, cfg.hflip)
        if not isinstance(loader, ImageLoader):
            return {}
        loader.next_batch()  # worker start-up and the first shard are not the steady state
        t0 = time.perf_counter()
        for _ in range(batches):
            loader.next_batch()
        rates[str(w)] = batches * cfg.batch / (time.perf_counter() - t0)
        loader.close()
    return rates


def measure(cfg: TrainConfig, warmup: int, steps: int, inputs: dict) -> dict | None:
    from workloads.common.bench import record, time_steps
    from workloads.common.dist import distributed
    from workloads.common.mfu import mfu
    from workloads.vision.trainer import build, check_fits, train_step

    check_fits(cfg)
    with distributed(cfg.device) as info:
        rates = measure_input(cfg, info, inputs["data"], inputs["workers"], inputs["batches"]) \
            if inputs["workers"] else {}
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
            "input_data": inputs["data"] if rates else None, "input_images_per_s": rates or None,
            "input_image_size": mcfg.image_size if rates else None,
            "bound": None if not rates else "input pipeline"
            if list(rates.values())[-1] < ips / info.world_size else "model step",
        })
        return result if info.is_main else None


def main(argv: list[str] | None = None) -> int:
    return print_result(exit_2_on_config_error(PROG, measure, *parse(argv)))


if __name__ == "__main__":
    sys.exit(main())
