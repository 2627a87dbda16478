"""Configuration for LLM pretraining: model presets and the training config, validated early.

Torch-free on purpose: the CLI validates every flag (and exits 2 on a bad one) before paying for
``import torch``. Each field's docstring states its default; ``TrainConfig.__post_init__``
checks values, ``check_inputs()`` checks paths; both raise ``ConfigError`` naming the flag.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

from workloads.common.cli import ConfigError, parse_s3_url


@dataclass(frozen=True)
class ModelConfig:
    """A GPT-style decoder: pre-LayerNorm blocks, SDPA causal attention, GELU MLP, tied embeddings."""

    n_layer: int
    """Transformer blocks (L)."""
    n_head: int
    """Attention heads (H); head dim Q = d_model / n_head."""
    d_model: int
    """Residual stream width."""
    seq_len: int
    """Context length (T); also the size of the learned position table."""
    vocab_size: int
    """Embedding rows; padded to a multiple of 64 for the matmul kernels (50304 = GPT-2's 50257)."""
    dropout: float = 0.0
    """Dropout on attention and residual outputs (default 0.0: pretraining at this scale)."""

    def __post_init__(self) -> None:
        for name in ("n_layer", "n_head", "d_model", "seq_len", "vocab_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name}", f"must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.n_head:
            raise ConfigError("model.d_model", f"{self.d_model} is not divisible by n_head "
                                               f"{self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("model.dropout", f"must be in [0, 1), got {self.dropout}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def non_embedding_params(self) -> int:
        """N for the MFU formula: 12·d² per block (qkv, proj, 2×MLP) plus the LayerNorms."""
        d = self.d_model
        return self.n_layer * (12 * d * d + 2 * d) + d


@dataclass(frozen=True)
class Preset:
    """A model plus the training defaults that suit it."""

    model: ModelConfig
    micro_batch_size: int
    """Sequences per rank per micro-step."""
    lr: float
    """Peak learning rate (after warm-up)."""
    warmup_steps: int
    """Linear warm-up steps (capped at max_steps // 10 for short runs)."""


PRESETS: dict[str, Preset] = {
    # Seconds on a laptop CPU; byte-level vocab (256) so it trains on the stdlib corpus as is.
    "tiny": Preset(ModelConfig(n_layer=2, n_head=2, d_model=64, seq_len=64, vocab_size=256),
                   micro_batch_size=8, lr=3e-3, warmup_steps=10),
    # GPT-2 small / medium shapes; GPT-3 XL shape (~1.2B non-embedding) for "1b".
    "125m": Preset(ModelConfig(n_layer=12, n_head=12, d_model=768, seq_len=1024, vocab_size=50304),
                   micro_batch_size=32, lr=6e-4, warmup_steps=700),
    "350m": Preset(ModelConfig(n_layer=24, n_head=16, d_model=1024, seq_len=1024,
                               vocab_size=50304),
                   micro_batch_size=16, lr=3e-4, warmup_steps=700),
    "1b": Preset(ModelConfig(n_layer=24, n_head=16, d_model=2048, seq_len=2048, vocab_size=50304),
                 micro_batch_size=8, lr=2e-4, warmup_steps=1000),
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``python -m workloads.llm.train`` accepts; field ``x_y`` is flag ``--x-y``."""

    preset: str = "tiny"
    """Model size: one of PRESETS (default tiny)."""
    max_steps: int = 200
    """Optimizer steps to train for; the cosine schedule ends here (default 200)."""
    seed: int = 0
    """Seed for weights, data order and dropout (default 0)."""
    data: str | None = None
    """Token shards: a directory or s3://bucket/prefix written by ``workloads.llm.prepare``, or
    "synthetic" (random tokens). Default: the Python stdlib corpus, prepared on first use."""
    checkpoint_dir: str | None = None
    """Directory, EFS/FSx mount or s3://bucket/prefix; resumed automatically (default: none)."""
    checkpoint_every: int = 100
    """Save every K steps, and always at the last step and on SIGTERM (default 100)."""
    keep_last: int = 3
    """Complete checkpoints to keep (default 3)."""
    async_checkpoint: bool | None = None
    """Write checkpoints in the background (dcp.async_save; default: on with CUDA, off on CPU)."""
    metrics_file: str | None = None
    """JSONL metrics path, appended to across restarts (default: none, stdout only)."""
    micro_batch_size: int | None = None
    """Sequences per rank per micro-step (default: the preset's)."""
    seq_len: int | None = None
    """Context length (default: the preset's; at most the preset's)."""
    grad_accum: int = 1
    """Micro-steps per optimizer step (default 1)."""
    lr: float | None = None
    """Peak learning rate (default: the preset's)."""
    min_lr_ratio: float = 0.1
    """Cosine floor as a fraction of the peak (default 0.1)."""
    warmup_steps: int | None = None
    """Linear warm-up (default: the preset's, at most max_steps // 10)."""
    weight_decay: float = 0.1
    """AdamW decoupled weight decay on matrices (default 0.1)."""
    grad_clip: float = 1.0
    """Global gradient-norm clip; 0 disables (default 1.0)."""
    compile: bool | None = None
    """torch.compile the blocks (default: on with CUDA, off on CPU)."""
    device: str = "auto"
    """auto (CUDA if present), cuda or cpu (default auto)."""
    log_every: int = 10
    """Print a human progress line every N steps (default 10)."""

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError("--preset", f"unknown preset {self.preset!r} "
                                          f"(choose from {', '.join(PRESETS)})")
        positive = ("max_steps", "checkpoint_every", "keep_last", "grad_accum", "log_every",
                    "micro_batch_size", "seq_len", "lr")
        for name in positive:
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(_flag(name), f"must be > 0, got {value}")
        for name in ("seed", "warmup_steps", "weight_decay", "grad_clip"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(_flag(name), f"must be >= 0, got {value}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError("--min-lr-ratio", f"must be in [0, 1], got {self.min_lr_ratio}")
        if self.seq_len is not None and self.seq_len > PRESETS[self.preset].model.seq_len:
            raise ConfigError("--seq-len", f"{self.seq_len} exceeds the {self.preset} preset's "
                                           f"context of {PRESETS[self.preset].model.seq_len}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError("--device", f"must be auto, cpu or cuda, got {self.device!r}")
        for name in ("data", "checkpoint_dir"):
            value = getattr(self, name)
            if value is not None and value.startswith("s3:"):
                if not value.startswith("s3://"):
                    raise ConfigError(_flag(name), f"{value!r} is not an s3:// URL")
                parse_s3_url(value, _flag(name))

    def check_inputs(self) -> None:
        """Filesystem checks: the data must be readable, the checkpoint dir creatable."""
        if self.data and self.data != "synthetic" and not self.data.startswith("s3://"):
            path = Path(self.data)
            manifest = path / "manifest.json"
            if not path.is_dir():
                raise ConfigError("--data", f"{self.data!r} is not a directory")
            if not manifest.is_file() or not os.access(manifest, os.R_OK):
                raise ConfigError("--data", f"{self.data!r} has no readable manifest.json "
                                            "(build one with python -m workloads.llm.prepare)")
        if self.checkpoint_dir and not self.checkpoint_dir.startswith("s3://"):
            path = Path(self.checkpoint_dir)
            if path.exists() and not path.is_dir():
                raise ConfigError("--checkpoint-dir", f"{self.checkpoint_dir!r} is not a directory")
        if self.metrics_file and Path(self.metrics_file).is_dir():
            raise ConfigError("--metrics-file", f"{self.metrics_file!r} is a directory")

    # ----- resolved values (preset defaults applied) -----
    @property
    def model(self) -> ModelConfig:
        base = PRESETS[self.preset].model
        return replace(base, seq_len=self.seq_len) if self.seq_len else base

    @property
    def batch_size(self) -> int:
        return self.micro_batch_size or PRESETS[self.preset].micro_batch_size

    @property
    def peak_lr(self) -> float:
        return self.lr or PRESETS[self.preset].lr

    @property
    def warmup(self) -> int:
        if self.warmup_steps is not None:
            return self.warmup_steps
        return min(PRESETS[self.preset].warmup_steps, self.max_steps // 10)


def _flag(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


FIELDS = {f.name for f in fields(TrainConfig)}
