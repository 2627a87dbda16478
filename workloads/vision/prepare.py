"""Turn a folder of images into tar shards for ``workloads.vision.train --data DIR|s3://...``.

The input is an ImageFolder tree: ``SRC/<class>/*.jpg|png`` (a held-out split of
``--val-fraction`` is drawn per class), or ``SRC/train/<class>/…`` + ``SRC/val/<class>/…`` (the
splits as given). Images are stored as they are (no re-encoding), shuffled from ``--seed`` so
every shard mixes the classes, ``--shard-size`` images per shard, in the webdataset layout
(``<key>.jpg`` + ``<key>.cls``). ``manifest.json`` (written last: its presence marks a complete
set) lists the classes, each split's shards with image counts and byte sizes (a truncated or
missing shard is refused when the set is opened) and the image sizes seen. ``--synthetic N``
writes N generated class-pattern JPEGs first (**not real data**; the trainer's default).

    python -m workloads.vision.prepare --images ~/data/flowers --out out/data/flowers \\
        --shard-size 1000 --val-fraction 0.1
    python -m workloads.vision.prepare --synthetic 4096 --preset tiny --out out/data/synth32
    aws s3 sync out/data/flowers s3://my-bucket/datasets/flowers   # train --data s3://...

About 100-1000 MB per shard suits S3 (ImageNet's 1.28 M JPEGs at ~110 KB: ``--shard-size
2000``); a run needs at least as many training shards as it has ranks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from workloads.common.cli import ArgumentParser, ConfigError, die
from workloads.common.config import check_writable_dir
from workloads.vision.config import PRESETS

PROG = "python -m workloads.vision.prepare"
DESCRIPTION = ("Turn an ImageFolder tree of JPEG/PNG images (or --synthetic N generated ones, "
               "not real data) into tar shards in the webdataset layout with a manifest, for "
               "python -m workloads.vision.train --data.")


def _split_files(src: Path, val_fraction: float | None, seed: int
                 ) -> tuple[list[str], dict[str, list[tuple[Path, int]]]]:
    from workloads.vision.imagesets import ImageFolder

    folder = ImageFolder(src, flag="--images")
    if "val" in folder.files:
        if val_fraction:
            raise ConfigError("--val-fraction", f"{str(src)!r} already has train/ and val/ "
                                                "splits; leave --val-fraction out")
        return folder.classes, folder.files
    rng = np.random.default_rng(seed)
    splits: dict[str, list[tuple[Path, int]]] = {"train": [], "val": []}
    for label in range(len(folder.classes)):
        files = [f for f in folder.files["train"] if f[1] == label]
        n_val = round(len(files) * (val_fraction or 0.0))
        order = rng.permutation(len(files))
        splits["val"] += [files[i] for i in order[:n_val]]
        splits["train"] += [files[i] for i in order[n_val:]]
    return folder.classes, splits


def build_shards(src: Path, out: Path, shard_size: int, val_fraction: float | None, seed: int,
                 source: str = "") -> dict:
    """Shards and manifest for the ImageFolder tree ``src`` under ``out``; the manifest."""
    from PIL import Image, UnidentifiedImageError

    from workloads.vision.images import write_tar
    from workloads.vision.imagesets import TAR_FORMAT

    classes, splits = _split_files(src, val_fraction, seed)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 1)
    sizes = []
    manifest_splits = {}
    for split, files in splits.items():
        shards = []
        order = rng.permutation(len(files))
        for first in range(0, len(files), shard_size):
            samples = []
            for key in order[first:first + shard_size]:
                path, label = files[key]
                try:
                    with Image.open(path) as img:
                        sizes.append(img.size)
                except (OSError, UnidentifiedImageError) as e:
                    raise ConfigError("--images", f"{path}: not a readable image ({e})") from None
                ext = ".png" if path.suffix.lower() == ".png" else ".jpg"
                samples.append((f"{split}-{int(key):08d}", path.read_bytes(), ext, label))
            name = f"{split}-{len(shards):06d}.tar"
            shards.append({"name": name, "count": len(samples),
                           "bytes": write_tar(out / name, samples)})
        manifest_splits[split] = {"count": len(files), "shards": shards}
    wh = np.array(sizes or [(0, 0)])
    manifest = {"format": TAR_FORMAT, "version": 1, "classes": classes,
                "num_classes": len(classes), "splits": manifest_splits,
                "image_sizes": {"min": wh.min(0).tolist(), "median": np.median(wh, 0).tolist(),
                                "max": wh.max(0).tolist()},
                "shard_size": shard_size, "seed": seed, "source": source or str(src)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))  # last: marks complete
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog=PROG, description=DESCRIPTION)
    p.add_argument("--out", required=True, type=Path, help="new directory for the shards")
    p.add_argument("--images", type=Path, help="ImageFolder tree: SRC/<class>/*.jpg, or "
                                               "SRC/train/<class>/... + SRC/val/<class>/...")
    p.add_argument("--synthetic", type=int, metavar="N", help="N generated images (not real)")
    p.add_argument("--preset", default="tiny", help="size and classes of synthetic images")
    p.add_argument("--shard-size", type=int, default=1000, help="images per shard (1000)")
    p.add_argument("--val-fraction", type=float, help="held out per class from a tree without "
                                                      "train/ and val/ (default 0.05)")
    p.add_argument("--seed", type=int, default=0, help="shuffle and split seed (0)")
    args = p.parse_args(argv)
    if args.out.exists():
        die(f"{PROG}: error: --out: {str(args.out)!r} already exists")
    if args.shard_size <= 0:
        die(f"{PROG}: error: --shard-size: must be > 0, got {args.shard_size}")
    if args.val_fraction is not None and not 0.0 <= args.val_fraction < 1.0:
        die(f"{PROG}: error: --val-fraction: must be in [0, 1), got {args.val_fraction}")
    if (args.synthetic is None) == (args.images is None):
        die(f"{PROG}: error: give either --images DIR or --synthetic N")
    try:
        check_writable_dir(args.out, "--out")
        if args.synthetic is not None:
            if args.preset not in PRESETS:
                raise ConfigError("--preset", f"unknown preset {args.preset!r}")
            if args.synthetic <= 0:
                raise ConfigError("--synthetic", f"must be > 0, got {args.synthetic}")
            import tempfile

            from workloads.vision.images import write_synthetic

            model = PRESETS[args.preset].model
            with tempfile.TemporaryDirectory() as tmp:
                val = round(args.synthetic * (args.val_fraction or 0.05))
                write_synthetic(Path(tmp), model.num_classes, model.image_size,
                                args.synthetic - val, val)
                manifest = build_shards(Path(tmp), args.out, args.shard_size, None, args.seed,
                                        f"synthetic ({args.preset}), not real data")
        else:
            if not args.images.is_dir():
                raise ConfigError("--images", f"{str(args.images)!r} is not a directory")
            fraction = 0.05 if args.val_fraction is None else args.val_fraction
            if (args.images / "train").is_dir() and (args.images / "val").is_dir():
                fraction = args.val_fraction
            manifest = build_shards(args.images, args.out, args.shard_size, fraction, args.seed)
    except ConfigError as e:
        die(f"{PROG}: error: {e}")
    counts = {s: v["count"] for s, v in manifest["splits"].items()}
    n_shards = sum(len(v["shards"]) for v in manifest["splits"].values())
    print(f"wrote {counts.get('train', 0)} training and {counts.get('val', 0)} held-out images "
          f"of {manifest['num_classes']} classes in {n_shards} shards to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
