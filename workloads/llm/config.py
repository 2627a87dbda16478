"""Configuration for LLM pretraining: model presets and the training config, validated early.

Torch-free on purpose: the CLI validates every flag (and exits 2 on a bad one) before paying for
``import torch``. Each field's docstring states its default; ``TrainConfig.__post_init__``
checks values, ``check_inputs()`` checks paths; both raise ``ConfigError`` naming the flag. The
run fields and their checks come from ``workloads.common.config.RunConfig``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

from workloads.common.cli import ConfigError
from workloads.common.config import RunConfig, check_non_negative, check_positive, check_s3
from workloads.common.memory import MemoryEstimate


@dataclass(frozen=True)
class ModelConfig:
    """A Llama-style decoder: pre-RMSNorm blocks, rotary position embeddings, SDPA causal
    attention with grouped-query heads, SwiGLU MLP, optionally tied input/output embeddings.
    Parameter names follow Hugging Face's LlamaForCausalLM, so an export is a rename."""

    n_layer: int
    """Transformer blocks (L)."""
    n_head: int
    """Query heads (H); head dim Q = d_model / n_head."""
    d_model: int
    """Residual stream width (d)."""
    seq_len: int
    """Context length (T) trained at; rotary embeddings have no table to outgrow."""
    vocab_size: int
    """Embedding rows; padded to a multiple of 64 for the matmul kernels."""
    n_kv_head: int = 0
    """Key/value heads for grouped-query attention; must divide n_head (default 0: n_head, i.e.
    plain multi-head attention)."""
    ffn_dim: int = 0
    """SwiGLU hidden width (default 0: 8/3·d rounded up to a multiple of 256, Llama's rule)."""
    rope_theta: float = 10000.0
    """Rotary base frequency (default 10000; Llama 3 uses 500000)."""
    norm_eps: float = 1e-5
    """RMSNorm epsilon (default 1e-5)."""
    tie_embeddings: bool = True
    """Output head shares the token-embedding matrix (default True: small models)."""
    dropout: float = 0.0
    """Dropout on attention and residual outputs (default 0.0: pretraining at this scale)."""

    def __post_init__(self) -> None:
        for name in ("n_layer", "n_head", "d_model", "seq_len", "vocab_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name}", f"must be >= 1, got {getattr(self, name)}")
        for name in ("n_kv_head", "ffn_dim"):
            if getattr(self, name) < 0:
                raise ConfigError(f"model.{name}", f"must be >= 0, got {getattr(self, name)}")
        if self.d_model % self.n_head:
            raise ConfigError("model.d_model", f"{self.d_model} is not divisible by n_head "
                                               f"{self.n_head}")
        if self.head_dim % 2:
            raise ConfigError("model.d_model", f"head dim {self.head_dim} must be even for "
                                               "rotary embeddings")
        if self.n_head % self.kv_heads:
            raise ConfigError("model.n_kv_head", f"{self.kv_heads} does not divide n_head "
                                                 f"{self.n_head}")
        if self.rope_theta <= 0 or self.norm_eps <= 0:
            raise ConfigError("model.rope_theta", "rope_theta and norm_eps must be > 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("model.dropout", f"must be in [0, 1), got {self.dropout}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def hidden_dim(self) -> int:
        """The SwiGLU width actually used."""
        if self.ffn_dim:
            return self.ffn_dim
        return 256 * -(-(8 * self.d_model // 3) // 256)

    @property
    def non_embedding_params(self) -> int:
        """N for the MFU formula, per block: q and o (2·d²), k and v (2·d·kv·Q), the SwiGLU's three
        matrices (3·d·f), two RMSNorm weights (2·d); plus the final norm."""
        d, f = self.d_model, self.hidden_dim
        kv = self.kv_heads * self.head_dim
        return self.n_layer * (2 * d * d + 2 * d * kv + 3 * d * f + 2 * d) + d

    @property
    def params(self) -> int:
        """Every parameter: the embedding (V·d), the output head when untied (V·d), and N."""
        emb = self.vocab_size * self.d_model
        return emb * (1 if self.tie_embeddings else 2) + self.non_embedding_params


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
class TrainConfig(RunConfig):
    """Everything ``python -m workloads.llm.train`` accepts; field ``x_y`` is flag ``--x-y``.
    The run fields (steps, seed, checkpoints, metrics, compile, device) are ``RunConfig``'s."""

    preset: str = "tiny"
    """Model size: one of PRESETS (default tiny)."""
    data: str | None = None
    """Token shards: a directory or s3://bucket/prefix written by ``workloads.llm.prepare``, or
    "synthetic" (random tokens). Default: the Python stdlib corpus, prepared on first use."""
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

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError("--preset", f"unknown preset {self.preset!r} "
                                          f"(choose from {', '.join(PRESETS)})")
        super().__post_init__()
        check_positive(self, ("grad_accum", "micro_batch_size", "seq_len", "lr"))
        check_non_negative(self, ("warmup_steps", "weight_decay", "grad_clip"))
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError("--min-lr-ratio", f"must be in [0, 1], got {self.min_lr_ratio}")
        if self.seq_len is not None and self.seq_len > PRESETS[self.preset].model.seq_len:
            raise ConfigError("--seq-len", f"{self.seq_len} exceeds the {self.preset} preset's "
                                           f"context of {PRESETS[self.preset].model.seq_len}")
        check_s3(self.data, "--data")

    def check_inputs(self) -> None:
        """The data must be readable (on S3: credentials and bucket usable), then
        ``RunConfig``'s checks. Token ids are checked against the vocabulary when the data is
        opened (``data.ShardLoader``)."""
        if self.data and self.data.startswith("s3://"):
            from workloads.common.s3 import check_access

            check_access(self.data, "--data")
        elif self.data and self.data != "synthetic":
            path = Path(self.data)
            manifest = path / "manifest.json"
            if not path.is_dir():
                raise ConfigError("--data", f"{self.data!r} is not a directory")
            if not manifest.is_file() or not os.access(manifest, os.R_OK):
                raise ConfigError("--data", f"{self.data!r} has no readable manifest.json "
                                            "(build one with python -m workloads.llm.prepare)")
        super().check_inputs()

    def memory_estimate(self, world_size: int, cuda: bool) -> MemoryEstimate:
        """Bytes per process: 16 per parameter (fp32 weights 4, gradients 4, AdamW's two
        moments 8), divided by the FSDP ranks W when W > 1, plus 2 per parameter for autocast's
        bf16 weight copies on a single GPU; plus activations of one micro-batch, B·T·(17·L·d·a +
        4·d + (a + 8)·V) with a = 2 (bf16 on GPU) or 4 (fp32 on CPU) bytes: 17 values per token
        per layer saved for backward (LayerNorm in/out, qkv, attention out and its projection
        input, MLP in, 4·d GELU in and out), the fp32 embedding sum, and the logits in compute
        dtype with their fp32 log-softmax and its gradient. Gradient accumulation adds nothing."""
        m = self.model
        shard = world_size if world_size > 1 else 1
        a = 2 if cuda else 4
        b, t, d = self.batch_size, m.seq_len, m.d_model
        parts = [("params", 4 * m.params / shard), ("grads", 4 * m.params / shard),
                 ("AdamW", 8 * m.params / shard)]
        if cuda and shard == 1:
            parts.append(("bf16 copies", 2 * m.params))
        parts.append(("activations",
                      b * t * (17 * m.n_layer * d * a + 4 * d + (a + 8) * m.vocab_size)))
        return MemoryEstimate(
            tuple(parts),
            formula="16·P/W bytes for weights, grads and AdamW (+2·P for bf16 copies on one "
                    "GPU) + B·T·(17·L·d·a + 4·d + (a+8)·V) for activations, a = 2 (bf16) or 4 "
                    "(fp32)",
            hint="lower --micro-batch-size (raise --grad-accum to keep the batch) or --seq-len, "
                 "shard over more GPUs, or pick a smaller --preset")

    def checkpoint_bytes(self, nodes: int) -> float:
        """12 per parameter (fp32 weights 4, AdamW's two moments 8) plus 4 per value of the tied
        embedding, whose weights the model state holds under both names (token embedding and
        output head); the step, data position and RNG states are bytes. Sharded by FSDP: each
        node writes its 1/nodes. 125m at --seq-len 128: 1.639 GB, a real checkpoint 1.640 GB."""
        m = self.model
        return (12 * m.params + 4 * m.vocab_size * m.d_model) / max(nodes, 1)

    def step_flops(self) -> float:
        """Tokens per rank per step (B·T·grad_accum) times 6·N + 12·L·H·Q·T."""
        from workloads.common.mfu import flops_per_token

        m = self.model
        return self.batch_size * m.seq_len * self.grad_accum * flops_per_token(
            m.non_embedding_params, m.n_layer, m.n_head, m.head_dim, m.seq_len)

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


FIELDS = {f.name for f in fields(TrainConfig)}
