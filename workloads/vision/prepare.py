"""Build uint8 .npy image shards for ``workloads.vision.train --data DIR``.

From arrays you decoded yourself (``--images X.npy --labels Y.npy``: uint8 (N, H, W, 3) at the
training resolution, integer labels), or ``--synthetic N``: N images of the synthetic
class-structured source (``workloads.vision.data``; **not real data**, useful to exercise the
shard and S3 paths end to end). Images are stored as given: resize/crop them to the training
resolution before; the trainer adds only random horizontal flips.

    python -m workloads.vision.prepare --out out/data/synth32 --synthetic 4096 --preset tiny
    python -m workloads.vision.prepare --out out/data/mine --images x.npy --labels y.npy \\
        --num-classes 100
    aws s3 sync out/data/mine s3://my-bucket/datasets/mine    # train --data s3://...
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from workloads.common.cli import ArgumentParser, ConfigError, die
from workloads.common.config import check_writable_dir
from workloads.vision.config import PRESETS

PROG = "python -m workloads.vision.prepare"
DESCRIPTION = ("Build uint8 .npy image shards for python -m workloads.vision.train --data, from "
               "your own decoded arrays (--images/--labels) or the synthetic source "
               "(--synthetic N, not real data).")


def synthetic_arrays(n: int, num_classes: int, image_size: int, seed: int = 0):
    """``n`` synthetic images (uint8 NHWC) and labels, in batches of 256 on the CPU."""
    import torch

    from workloads.common.dist import DistInfo
    from workloads.vision.data import SyntheticImages

    src = SyntheticImages(num_classes, image_size, 256, DistInfo(), seed, torch.device("cpu"))
    images, labels = [], []
    while sum(len(x) for x in labels) < n:
        x, y = src.next_batch()
        images.append(x.numpy())
        labels.append(y.numpy())
    return np.concatenate(images)[:n], np.concatenate(labels)[:n]


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog=PROG, description=DESCRIPTION)
    p.add_argument("--out", required=True, type=Path, help="new directory for the shards")
    p.add_argument("--synthetic", type=int, metavar="N", help="N synthetic images")
    p.add_argument("--preset", default="tiny", help="size and classes of synthetic images")
    p.add_argument("--images", type=Path, help="uint8 (N, H, W, 3) .npy")
    p.add_argument("--labels", type=Path, help="integer (N,) .npy")
    p.add_argument("--num-classes", type=int, help="classes (default: max label + 1)")
    p.add_argument("--shard-size", type=int, default=10_000, help="images per shard")
    args = p.parse_args(argv)
    if args.out.exists():
        die(f"{PROG}: error: --out: {str(args.out)!r} already exists")
    try:
        check_writable_dir(args.out, "--out")
    except ConfigError as e:
        die(f"{PROG}: error: {e}")
    if args.shard_size <= 0:
        die(f"{PROG}: error: --shard-size: must be > 0, got {args.shard_size}")
    if (args.synthetic is None) == (args.images is None):
        die(f"{PROG}: error: give either --synthetic N or --images/--labels")
    from workloads.vision.data import write_shards

    if args.synthetic is not None:
        if args.preset not in PRESETS:
            die(f"{PROG}: error: --preset: unknown preset {args.preset!r}")
        if args.synthetic <= 0:
            die(f"{PROG}: error: --synthetic: must be > 0, got {args.synthetic}")
        model = PRESETS[args.preset].model
        images, labels = synthetic_arrays(args.synthetic, model.num_classes, model.image_size)
        classes, source = model.num_classes, f"synthetic ({args.preset}), not real data"
    else:
        if args.labels is None:
            die(f"{PROG}: error: --images needs --labels")
        try:
            images, labels = np.load(args.images, mmap_mode="r"), np.load(args.labels)
        except (OSError, ValueError) as e:
            die(f"{PROG}: error: --images/--labels: cannot read: {e}")
        classes = args.num_classes or int(labels.max()) + 1
        source = str(args.images)
    try:
        manifest = write_shards(args.out, images, labels, classes, args.shard_size, source)
    except ValueError as e:
        die(f"{PROG}: error: {e}")
    print(f"wrote {manifest['total']} images in {len(manifest['shards'])} shards to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
