"""Configuration for image classification: ResNet presets and the training config, validated early.

Torch-free on purpose, like ``workloads.llm.config``: the CLI validates every flag (and exits 2
on a bad one) before paying for ``import torch``. Each field's docstring states its default;
``TrainConfig.__post_init__`` checks values, ``check_inputs()`` checks paths; both raise
``ConfigError`` naming the flag. The run fields and their checks come from
``workloads.common.config.RunConfig``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path

from workloads.common.cli import ConfigError
from workloads.common.config import (
    RunConfig,
    check_non_negative,
    check_positive,
    check_s3,
    check_writable_dir,
    flag,
)
from workloads.common.memory import MemoryEstimate

BLOCKS = ("basic", "bottleneck")
STEMS = ("imagenet", "small")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
SYNTHETIC = ("synthetic", "device")
"""--data values that generate images: JPEG shards written on first use, or tensors made on the
device (no decoding; what the benchmark's model step uses)."""


@dataclass(frozen=True)
class ModelConfig:
    """A ResNet: a stem, stages of residual blocks (the first stage at stride 1, each later one
    halving the resolution and doubling the width), global average pooling, one linear layer.
    Bottleneck blocks are v1.5 (the stride sits on the 3x3 conv, not the first 1x1)."""

    block: str
    """``basic`` (two 3x3 convs, ResNet-18/34) or ``bottleneck`` (1x1-3x3-1x1, x4 expansion)."""
    layers: tuple[int, ...]
    """Blocks per stage, e.g. (3, 4, 6, 3) for ResNet-50."""
    width: int
    """Channels of the first stage (before a bottleneck's x4 expansion); doubles per stage."""
    stem: str
    """``imagenet`` (7x7/2 conv + 3x3/2 max-pool, for 224x224) or ``small`` (one 3x3/1 conv, for
    32x32 images, as in the CIFAR ResNets)."""
    num_classes: int
    """Outputs of the classifier."""
    image_size: int
    """Height = width of the training images (FLOPs are counted at this size)."""

    def __post_init__(self) -> None:
        if self.block not in BLOCKS:
            raise ConfigError("model.block", f"must be one of {', '.join(BLOCKS)}, got "
                                             f"{self.block!r}")
        if self.stem not in STEMS:
            raise ConfigError("model.stem", f"must be one of {', '.join(STEMS)}, got {self.stem!r}")
        if not self.layers or any(n < 1 for n in self.layers):
            raise ConfigError("model.layers", f"every stage needs >= 1 block, got {self.layers}")
        for name in ("width", "num_classes", "image_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name}", f"must be >= 1, got {getattr(self, name)}")

    @property
    def expansion(self) -> int:
        return 4 if self.block == "bottleneck" else 1

    def layers_at(self, image_size: int | None = None
                  ) -> Iterator[tuple[str, int, int, int, int]]:
        """The network in order as (kind, in channels, out channels, kernel, output size):
        ``conv`` for every convolution (each followed by a BatchNorm), ``pool`` for the stem's
        max-pool, ``add`` for the residual sum (then ReLU) that ends each block."""
        size = image_size or self.image_size

        def out(s: int, k: int, stride: int, pad: int) -> int:
            return (s + 2 * pad - k) // stride + 1

        if self.stem == "imagenet":
            size = out(size, 7, 2, 3)
            yield "conv", 3, self.width, 7, size
            size = out(size, 3, 2, 1)
            yield "pool", self.width, self.width, 3, size
        else:
            size = out(size, 3, 1, 1)
            yield "conv", 3, self.width, 3, size
        cin = self.width
        for i, n in enumerate(self.layers):
            width = self.width * 2**i
            cout = width * self.expansion
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                start = size
                size = out(start, 3, stride, 1)
                if self.block == "bottleneck":
                    yield "conv", cin, width, 1, start
                    yield "conv", width, width, 3, size
                    yield "conv", width, cout, 1, size
                else:
                    yield "conv", cin, width, 3, size
                    yield "conv", width, cout, 3, size
                if stride != 1 or cin != cout:  # projection shortcut, 1x1 at the block's stride
                    yield "conv", cin, cout, 1, out(start, 1, stride, 0)
                yield "add", cout, cout, 0, size
                cin = cout

    @property
    def features(self) -> int:
        """Channels into the classifier."""
        return self.width * 2 ** (len(self.layers) - 1) * self.expansion

    def forward_macs(self, image_size: int | None = None) -> int:
        """Multiply-accumulates of one forward pass per image, convolutions and the classifier
        only (BatchNorm, ReLU, pooling and residual adds are < 1% and not counted). ResNet-50
        v1.5 at 224x224: 4.09 G, the figure usually quoted as "4.1 GFLOPs"."""
        macs = sum(cin * cout * k * k * size * size
                   for kind, cin, cout, k, size in self.layers_at(image_size) if kind == "conv")
        return macs + self.features * self.num_classes

    def num_params(self) -> int:
        """Parameters: conv weights, BatchNorm scale and shift, the classifier (ResNet-50:
        25,557,032)."""
        convs = sum(cin * cout * k * k + 2 * cout
                    for kind, cin, cout, k, _ in self.layers_at() if kind == "conv")
        return convs + (self.features + 1) * self.num_classes

    def activation_values(self, image_size: int | None = None) -> int:
        """Values saved for backward per image: 2 per convolution output (the conv's output,
        kept by its BatchNorm, and the BatchNorm's, kept by the ReLU or the next conv), 1 per
        max-pool and residual-sum output (ReLU runs in place). ResNet-50 at 224: 26.5 M."""
        return sum((2 if kind == "conv" else 1) * cout * size * size
                   for kind, _, cout, _, size in self.layers_at(image_size))

    def train_flops_per_image(self, image_size: int | None = None) -> float:
        """Forward + backward FLOPs per image: 3 x forward, 2 FLOPs per multiply-accumulate
        (the same convention as the 6·N of the LLM formula). ResNet-50 at 224: 24.5 G."""
        return 6.0 * self.forward_macs(image_size)


@dataclass(frozen=True)
class Preset:
    """A model plus the training defaults that suit it."""

    model: ModelConfig
    batch_size: int
    """Images per rank per step."""
    lr: float
    """Peak learning rate for a global batch of 256 images; scaled linearly with the real global
    batch (Goyal et al., "Accurate, Large Minibatch SGD")."""
    warmup_steps: int
    """Linear warm-up steps (capped at max_steps // 10 for short runs)."""
    min_crop: float = 0.08
    """Smallest area fraction a random-resized crop keeps (0.08: the ImageNet recipe)."""


PRESETS: dict[str, Preset] = {
    # Seconds on a laptop CPU: a ResNet-8-like net on 32x32 images, 10 classes.
    "tiny": Preset(ModelConfig(block="basic", layers=(1, 1, 1), width=16, stem="small",
                               num_classes=10, image_size=32),
                   batch_size=16, lr=3.2, warmup_steps=5, min_crop=0.35),
    "resnet18": Preset(ModelConfig(block="basic", layers=(2, 2, 2, 2), width=64, stem="imagenet",
                                   num_classes=1000, image_size=224),
                       batch_size=256, lr=0.1, warmup_steps=1000),
    # ResNet-50 v1.5, the shape of NVIDIA DeepLearningExamples' benchmark (batch 256 per GPU).
    "resnet50": Preset(ModelConfig(block="bottleneck", layers=(3, 4, 6, 3), width=64,
                                   stem="imagenet", num_classes=1000, image_size=224),
                       batch_size=256, lr=0.1, warmup_steps=1000),
}


@dataclass(frozen=True)
class TrainConfig(RunConfig):
    """Everything ``python -m workloads.vision.train`` accepts; field ``x_y`` is flag ``--x-y``.
    The run fields (steps, seed, checkpoints, metrics, compile, device) are ``RunConfig``'s."""

    preset: str = "tiny"
    """Model: one of PRESETS (default tiny)."""
    data: str = "synthetic"
    """``synthetic`` (generated class patterns written as JPEG shards on first use; not real
    data), an ImageFolder directory, a directory or s3://bucket/prefix of tar shards
    (``workloads.vision.prepare``), or legacy uint8 .npy shards (see ``workloads.vision.data``).
    ``device`` generates the patterns as tensors on the device (no decoding: a model-only
    throughput run). Default synthetic."""
    batch_size: int | None = None
    """Images per rank per step (default: the preset's)."""
    image_size: int | None = None
    """Training resolution (default: the preset's; shards must match it)."""
    lr: float | None = None
    """Peak learning rate per 256 images, scaled by global batch / 256 (default: the preset's)."""
    min_lr_ratio: float = 0.0
    """Cosine floor as a fraction of the peak (default 0.0)."""
    warmup_steps: int | None = None
    """Linear warm-up (default: the preset's, at most max_steps // 10)."""
    momentum: float = 0.9
    """SGD momentum, Nesterov (default 0.9)."""
    weight_decay: float = 5e-5
    """L2 weight decay on conv and linear weights, not on BatchNorm or biases (default 5e-5)."""
    label_smoothing: float = 0.1
    """Cross-entropy label smoothing (default 0.1)."""
    hflip: bool = True
    """Random horizontal flips in training augmentation (default on)."""
    min_crop: float | None = None
    """Smallest area fraction of a random-resized crop (default: the preset's, 0.08 for the
    ResNets, 0.35 for tiny's 32 px images)."""
    workers: int | None = None
    """DataLoader worker processes per rank decoding images (default: the node's CPUs split
    between its ranks minus one, at most 8; 0 decodes in the training process)."""
    prefetch: int = 2
    """Batches each worker keeps ready ahead of the step (DataLoader prefetch_factor; default 2)."""
    eval_every: int = 0
    """Evaluate top-1/top-5 on the held-out split every N steps; always at the last step
    (default 0: only at the last step)."""
    tensorboard_dir: str | None = None
    """Also write the metrics as TensorBoard scalars here, a directory or s3://bucket/prefix
    (rank 0; default: none)."""
    precision: str = "auto"
    """auto (bf16 autocast on CUDA, fp32 on CPU), bf16, fp16 (autocast + GradScaler) or fp32."""
    channels_last: bool | None = None
    """NHWC memory format for the model and inputs (default: on with CUDA, off on CPU)."""

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError("--preset", f"unknown preset {self.preset!r} "
                                          f"(choose from {', '.join(PRESETS)})")
        super().__post_init__()
        check_positive(self, ("batch_size", "lr", "prefetch"))
        check_non_negative(self, ("warmup_steps", "weight_decay", "workers", "eval_every"))
        if self.min_crop is not None and not 0.0 < self.min_crop <= 1.0:
            raise ConfigError("--min-crop", f"must be in (0, 1], got {self.min_crop}")
        if self.image_size is not None and self.image_size < 8:
            raise ConfigError("--image-size", f"must be >= 8, got {self.image_size}")
        for name in ("min_lr_ratio", "label_smoothing"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(flag(name), f"must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError("--momentum", f"must be in [0, 1), got {self.momentum}")
        if self.precision not in PRECISIONS:
            raise ConfigError("--precision", f"must be one of {', '.join(PRECISIONS)}, got "
                                             f"{self.precision!r}")
        check_s3(self.data, "--data")
        check_s3(self.tensorboard_dir, "--tensorboard-dir")
        if not self.data:
            raise ConfigError("--data", "must be 'synthetic', a directory or s3://bucket/prefix")

    def check_inputs(self) -> None:
        """A local --data directory exists (legacy .npy shards: matching the model), S3 data
        reachable (credentials, bucket), the TensorBoard directory writable, then
        ``RunConfig``'s checks. Image sets are checked when opened (``imagesets``: classes,
        shard sizes against the manifest), labels when the shards are read."""
        if self.data.startswith("s3://"):
            from workloads.common.s3 import check_access

            check_access(self.data, "--data")
        elif self.data not in SYNTHETIC:
            root = Path(self.data)
            if not root.is_dir():
                raise ConfigError("--data", f"{self.data!r} is not a directory")
            if is_npy_shards(root):
                check_manifest(root, self.model.image_size, self.model.num_classes)
        if self.tensorboard_dir and self.tensorboard_dir.startswith("s3://"):
            from workloads.common.s3 import check_access

            check_access(self.tensorboard_dir, "--tensorboard-dir")
        elif self.tensorboard_dir:
            check_writable_dir(Path(self.tensorboard_dir), "--tensorboard-dir")
        super().check_inputs()

    def memory_estimate(self, world_size: int, cuda: bool) -> MemoryEstimate:
        """Bytes per process (DDP: every rank holds everything): 4 per parameter each for
        weights, gradients (DDP's buckets are the gradients) and SGD momentum, plus 2 for
        autocast's 16-bit weight copies; plus one batch of activations, B·(a·E + 12·H·W + 8·M)
        with E = ``ModelConfig.activation_values()``, a = 2 (bf16/fp16) or 4 (fp32) bytes, the
        fp32 normalised input (12·H·W) and the max-pool's int64 indices (M values)."""
        m = self.model
        fp32 = self.precision == "fp32" or (self.precision == "auto" and not cuda)
        a = 4 if fp32 else 2
        p = m.num_params()
        parts = [("params", 4 * p), ("grads", 4 * p)]
        if self.momentum > 0:
            parts.append(("momentum", 4 * p))
        if not fp32:
            parts.append(("16-bit copies", 2 * p))
        pool = sum(c * s * s for kind, _, c, _, s in m.layers_at() if kind == "pool")
        parts.append(("activations",
                      self.batch * (a * m.activation_values() + 12 * m.image_size**2 + 8 * pool)))
        return MemoryEstimate(
            tuple(parts),
            formula="12·P bytes for weights, grads and momentum (+2·P for 16-bit copies) + "
                    "B·(a·E + 12·H·W) for activations, E saved values per image, a = 2 (16-bit) "
                    "or 4 (fp32)",
            hint="lower --batch-size or --image-size, or pick a smaller --preset")

    def checkpoint_bytes(self, nodes: int) -> float:
        """4 per parameter for the weights, 4 more for SGD momentum. DDP replicates them, so
        count all of it per node (DCP spreads the writes, but any rank may get any tensor)."""
        return (8 if self.momentum > 0 else 4) * self.model.num_params()

    def step_flops(self) -> float:
        """Images per rank per step times forward + backward FLOPs per image."""
        return self.batch * self.model.train_flops_per_image()

    # ----- resolved values (preset defaults applied) -----
    @property
    def model(self) -> ModelConfig:
        base = PRESETS[self.preset].model
        return replace(base, image_size=self.image_size) if self.image_size else base

    @property
    def batch(self) -> int:
        return self.batch_size or PRESETS[self.preset].batch_size

    def peak_lr(self, world_size: int) -> float:
        """The schedule's peak: lr per 256 images x global batch / 256."""
        return (self.lr or PRESETS[self.preset].lr) * self.batch * world_size / 256

    @property
    def crop_scale(self) -> tuple[float, float]:
        return (self.min_crop or PRESETS[self.preset].min_crop, 1.0)

    @property
    def warmup(self) -> int:
        if self.warmup_steps is not None:
            return self.warmup_steps
        return min(PRESETS[self.preset].warmup_steps, self.max_steps // 10)


def is_npy_shards(root: Path) -> bool:
    """Whether ``root`` holds legacy uint8 .npy shards (their manifest says so)."""
    try:
        return json.loads((root / "manifest.json").read_text()).get("format") == \
            "trainyard-vision-npy"
    except (OSError, ValueError, AttributeError):
        return False


def check_manifest(root: Path, image_size: int, num_classes: int) -> dict:
    """The shard manifest under ``root``, checked against the model; ConfigError naming --data."""
    manifest = root / "manifest.json"
    if not root.is_dir():
        raise ConfigError("--data", f"{str(root)!r} is not a directory")
    try:
        meta = json.loads(manifest.read_text())
        size, classes = meta["image_size"], int(meta["num_classes"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError("--data", f"{str(root)!r} has no readable manifest.json (build one with "
                                    "python -m workloads.vision.prepare)") from None
    if list(size) != [image_size, image_size]:
        raise ConfigError("--data", f"{str(root)!r} holds {size[0]}x{size[1]} images, the model "
                                    f"trains at {image_size}x{image_size} (--image-size)")
    if classes > num_classes:
        raise ConfigError("--data", f"{str(root)!r} has {classes} classes, the model "
                                    f"{num_classes} outputs")
    return meta


FIELDS = {f.name for f in fields(TrainConfig)}
