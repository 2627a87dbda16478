"""Export a vision checkpoint as ONNX inside a Triton model repository, ready to serve.

    python -m workloads.vision.export --checkpoint out/vision-ckpt --out out/vision-export
    python -m workloads.vision.export --checkpoint s3://BUCKET/ckpt/rn50 --out out/rn50 \\
        --name resnet50 --max-batch-size 128 --preferred-batch-sizes 32,64 \\
        --max-queue-delay-us 2000
    aws s3 sync out/rn50 s3://BUCKET/models/resnet50      # a trainyard:serving source

Writes (the newest complete checkpoint, or ``--step N``)::

    OUT/<name>/config.pbtxt      platform onnxruntime_onnx, max_batch_size, dynamic_batching
                                 {preferred_batch_size, max_queue_delay_microseconds},
                                 instance_group KIND_GPU, labels.txt as the output's labels
    OUT/<name>/1/model.onnx      input "images" float32 (batch, 3, H, W), normalised;
                                 output "logits" float32 (batch, classes); the batch is dynamic
    OUT/<name>/labels.txt        one class name per line (Triton's classification extension)
    OUT/preprocess.json          mean, std, input size, resize size, layout, class names

The ONNX graph comes from ``torch.onnx.export(..., dynamo=True)`` (the torch.export-based
exporter, torch's default since 2.9; the TorchScript one is deprecated) at opset ``OPSET``, with
the model in eval mode and fp32. Before anything is written, onnxruntime runs the graph on a
batch of 2 and its logits are compared with PyTorch's; a mismatch is an error, not a warning.
Clients resize the shorter side to ``resize`` px, centre-crop ``size`` px, scale to [0, 1] and
normalise with ``mean``/``std`` per RGB channel (what ``loader``'s evaluation does).
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

from workloads.common.cli import ArgumentParser, ConfigError, die

PROG = "python -m workloads.vision.export"
DESCRIPTION = ("Export a vision training checkpoint (directory or s3://) as an ONNX model with a "
               "dynamic batch dimension inside a Triton model repository (config.pbtxt with "
               "dynamic batching on a GPU instance group), plus the preprocessing constants.")
OPSET = 18
"""ONNX opset of the export: supported by onnxruntime >= 1.14 and Triton's onnxruntime backend
of 23.02 and later."""
TOLERANCE = 1e-4
"""Largest |onnxruntime - PyTorch| logit difference the export accepts (fp32 both)."""


def pbtxt(name: str, image_size: int, classes: int, max_batch: int, preferred: list[int],
          delay_us: int, instances: int) -> str:
    """A Triton ``config.pbtxt`` for the exported model (dims without the batch dimension)."""
    return f"""name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: {max_batch}
input [
  {{
    name: "images"
    data_type: TYPE_FP32
    dims: [ 3, {image_size}, {image_size} ]
  }}
]
output [
  {{
    name: "logits"
    data_type: TYPE_FP32
    dims: [ {classes} ]
    label_filename: "labels.txt"
  }}
]
dynamic_batching {{
  preferred_batch_size: [ {", ".join(str(b) for b in preferred)} ]
  max_queue_delay_microseconds: {delay_us}
}}
instance_group [
  {{
    count: {instances}
    kind: KIND_GPU
  }}
]
"""


def load_checkpoint(uri: str, step: int | None):
    """(bare model in eval mode, meta dict, step) from a training checkpoint."""
    import torch
    import torch.distributed.checkpoint as dcp

    from workloads.common.checkpoint import CheckpointStore, step_name
    from workloads.common.dist import DistInfo
    from workloads.vision.config import ModelConfig
    from workloads.vision.model import ResNet

    store = CheckpointStore(uri, DistInfo())
    if step is None:
        step = store.latest_complete(log=lambda *_: None)
        if step is None:
            raise ConfigError("--checkpoint", f"{uri}: no complete checkpoint there")
    elif (problem := store.check(step)) is not None:
        raise ConfigError("--step", f"{uri}: checkpoint {step}: {problem}")
    name = step_name(step)
    local = store.local / name
    if store.client is not None:
        from workloads.common import s3 as s3util

        s3util.download_prefix(store.client, store.bucket, s3util.join_key(store.prefix, name),
                               local)
    holder = {"train": {"meta": b""}}
    warnings.filterwarnings("ignore", message=".*torch.distributed is disabled.*")
    try:
        dcp.load(holder, checkpoint_id=str(local), no_dist=True)
        meta = json.loads(holder["train"]["meta"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise ConfigError("--checkpoint", f"{uri}: {name} has no model description (written "
                                          f"before exports existed?): {e}") from None
    cfg = ModelConfig(**{**meta["model"], "layers": tuple(meta["model"]["layers"])})
    model = ResNet(cfg)
    holder = {"train": {"model": model.state_dict()}}
    dcp.load(holder, checkpoint_id=str(local), no_dist=True)
    model.load_state_dict(holder["train"]["model"])
    if store.client is not None:
        import shutil

        shutil.rmtree(local, ignore_errors=True)
    with torch.no_grad():
        return model.eval(), meta, step


def export_onnx(model, image_size: int, path: Path, max_batch: int) -> float:
    """Write ``model`` as ONNX with a dynamic batch; the largest onnxruntime-vs-PyTorch logit
    difference on a random batch of 2 (ConfigError-free: a mismatch raises RuntimeError)."""
    import numpy as np
    import onnxruntime as ort
    import torch

    example = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    batch = torch.export.Dim("batch", min=1, max=max(max_batch, 2))
    program = torch.onnx.export(model, (example,), dynamo=True, opset_version=OPSET,
                                input_names=["images"], output_names=["logits"],
                                dynamic_shapes=({0: batch},), verbose=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"images": example.numpy()})[0]
    with torch.no_grad():
        want = model(example).numpy()
    diff = float(np.abs(got - want).max())
    if diff > TOLERANCE:
        raise RuntimeError(f"onnxruntime's logits differ from PyTorch's by {diff:.3g} "
                           f"(> {TOLERANCE}): the export is wrong")
    return diff


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog=PROG, description=DESCRIPTION)
    p.add_argument("--checkpoint", required=True, help="checkpoint root: directory or s3://")
    p.add_argument("--out", required=True, type=Path, help="new directory (model repository)")
    p.add_argument("--step", type=int, help="checkpoint step (default: the newest complete)")
    p.add_argument("--name", default="vision", help="model name in the repository (vision)")
    p.add_argument("--max-batch-size", type=int, default=64, help="Triton max_batch_size (64)")
    p.add_argument("--preferred-batch-sizes", default="16,32",
                   help="dynamic batching's preferred sizes, comma-separated (16,32)")
    p.add_argument("--max-queue-delay-us", type=int, default=2000,
                   help="longest a request waits for a batch to fill, µs (2000)")
    p.add_argument("--instances", type=int, default=1, help="model instances per GPU (1)")
    args = p.parse_args(argv)
    try:
        preferred = [int(x) for x in args.preferred_batch_sizes.split(",") if x.strip()]
    except ValueError:
        die(f"{PROG}: error: --preferred-batch-sizes: {args.preferred_batch_sizes!r} is not a "
            "comma-separated list of integers")
    checks = [
        (args.max_batch_size >= 1, "--max-batch-size", f"must be >= 1, got {args.max_batch_size}"),
        (bool(preferred) and all(1 <= b <= args.max_batch_size for b in preferred),
         "--preferred-batch-sizes", f"each must be in 1..{args.max_batch_size} "
                                    f"(--max-batch-size), got {args.preferred_batch_sizes!r}"),
        (args.max_queue_delay_us >= 0, "--max-queue-delay-us",
         f"must be >= 0, got {args.max_queue_delay_us}"),
        (args.instances >= 1, "--instances", f"must be >= 1, got {args.instances}"),
        (args.name.replace("-", "").replace("_", "").isalnum(), "--name",
         f"{args.name!r}: use letters, digits, - and _"),
        (not args.out.exists(), "--out", f"{str(args.out)!r} already exists"),
    ]
    for ok, flag, message in checks:
        if not ok:
            die(f"{PROG}: error: {flag}: {message}")
    try:
        from workloads.common.config import check_s3, check_writable_dir

        check_s3(args.checkpoint, "--checkpoint")
        if not args.checkpoint.startswith("s3://") and not Path(args.checkpoint).is_dir():
            raise ConfigError("--checkpoint", f"{args.checkpoint!r} is not a directory")
        check_writable_dir(args.out, "--out")
        model, meta, step = load_checkpoint(args.checkpoint, args.step)
    except ConfigError as e:
        die(f"{PROG}: error: {e}")
    size = meta["model"]["image_size"]
    n_classes = meta["model"]["num_classes"]
    classes = meta["classes"] + [f"class-{i}" for i in range(len(meta["classes"]), n_classes)]
    repo = args.out / args.name
    diff = export_onnx(model, size, repo / "1" / "model.onnx", args.max_batch_size)
    (repo / "config.pbtxt").write_text(pbtxt(args.name, size, n_classes, args.max_batch_size,
                                             preferred, args.max_queue_delay_us, args.instances))
    (repo / "labels.txt").write_text("".join(c + "\n" for c in classes))
    from workloads.vision.images import EVAL_CROP

    pre = {"model": args.name, "input": "images", "output": "logits", "layout": "NCHW",
           "dtype": "float32", "size": size, "resize": round(size / EVAL_CROP),
           "mean": meta["mean"], "std": meta["std"], "scale": 1 / 255, "classes": classes,
           "preset": meta["preset"], "checkpoint": args.checkpoint, "step": step,
           "opset": OPSET, "max_abs_diff_vs_pytorch": diff}
    (args.out / "preprocess.json").write_text(json.dumps(pre, indent=1))
    print(f"exported step {step} of {args.checkpoint} to {repo} (opset {OPSET}, "
          f"{n_classes} classes, {size}x{size}; onnxruntime matches PyTorch within {diff:.1e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
