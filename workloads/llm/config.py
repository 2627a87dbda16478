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
from workloads.common.config import (
    RunConfig,
    check_non_negative,
    check_positive,
    check_s3,
    check_writable_dir,
)
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


VOCAB_MULTIPLE = 64
"""Embedding rows are padded to a multiple of this (matmul-friendly shapes)."""


def pad_vocab(n: int, multiple: int = VOCAB_MULTIPLE) -> int:
    """``n`` rounded up to a multiple of ``multiple``: 50257 -> 50304, 256 -> 256."""
    return -(-n // multiple) * multiple


def mesh_shape(world_size: int, local_world_size: int, hsdp: bool | None = None
               ) -> tuple[int, int] | None:
    """(replicas, shards) of the device mesh for ``world_size`` ranks, ``local_world_size`` per
    node; None for one rank (nothing to shard). HSDP (replicate across nodes, shard within a
    node: the all-gathers stay on NVLink, only the gradient all-reduce crosses nodes) when the
    job spans whole nodes, unless ``hsdp`` is False; plain FSDP over every rank otherwise.
    ``hsdp`` True on one node is FSDP (one replica)."""
    if world_size <= 1:
        return None
    local = max(1, min(local_world_size, world_size))
    nodes, rest = divmod(world_size, local)
    if hsdp is False or nodes == 1 or rest:
        return (1, world_size)
    return (nodes, local)


@dataclass(frozen=True)
class Preset:
    """A model plus the training defaults that suit it."""

    model: ModelConfig
    micro_batch_size: int
    """Sequences per rank per micro-step."""
    lr: float
    """Peak learning rate (after warm-up)."""
    warmup_steps: int
    """Linear warm-up steps (capped at max_steps // 10 for short runs; resolved once and kept
    in the checkpoint, so a resume with another --max-steps does not move it)."""


PRESETS: dict[str, Preset] = {
    # Seconds on a laptop CPU; byte vocabulary (256) unless the data brings a tokenizer.
    "tiny": Preset(ModelConfig(n_layer=2, n_head=4, n_kv_head=2, d_model=64, seq_len=64,
                               vocab_size=256),
                   micro_batch_size=8, lr=3e-3, warmup_steps=10),
    # GPT-2 small / medium shapes and vocabulary (50257 padded) with the Llama block (MHA).
    "125m": Preset(ModelConfig(n_layer=12, n_head=12, d_model=768, seq_len=1024,
                               vocab_size=50304),
                   micro_batch_size=16, lr=6e-4, warmup_steps=700),
    "350m": Preset(ModelConfig(n_layer=24, n_head=16, d_model=1024, seq_len=1024,
                               vocab_size=50304),
                   micro_batch_size=8, lr=3e-4, warmup_steps=700),
    # Llama 3.2 1B's shape (16 x 2048, 32 q / 8 kv heads, SwiGLU 8192, tied, theta 500000).
    "1b": Preset(ModelConfig(n_layer=16, n_head=32, n_kv_head=8, d_model=2048, seq_len=2048,
                             vocab_size=128256, ffn_dim=8192, rope_theta=500000.0),
                 micro_batch_size=4, lr=3e-4, warmup_steps=2000),
    # Llama 3 8B's shape (32 x 4096, 32 q / 8 kv heads, SwiGLU 14336, untied, theta 500000);
    # FSDP/HSDP over >= 8 GPUs, --activation-checkpointing for micro-batches above 1.
    "8b": Preset(ModelConfig(n_layer=32, n_head=32, n_kv_head=8, d_model=4096, seq_len=8192,
                             vocab_size=128256, ffn_dim=14336, rope_theta=500000.0,
                             tie_embeddings=False),
                 micro_batch_size=1, lr=3e-4, warmup_steps=2000),
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
    cache_dir: str | None = None
    """Where S3 shards (and the default corpus) are cached on this node: node-local NVMe on
    the cluster (default: $TRAINYARD_CACHE/data, i.e. ~/.cache/trainyard/data)."""
    vocab_size: int | None = None
    """Model vocabulary (default: the data's tokenizer vocabulary from its manifest, rounded up
    to a multiple of 64; the preset's for synthetic data). Token ids at or past it are refused
    before step 1."""
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
    """Linear warm-up (default: the preset's, at most max_steps // 10 of the first run; kept in
    the checkpoint, so resuming with another --max-steps does not move it)."""
    weight_decay: float = 0.1
    """AdamW decoupled weight decay on matrices (default 0.1)."""
    grad_clip: float = 1.0
    """Global gradient-norm clip; 0 disables (default 1.0)."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in backward instead of keeping them (default off:
    about a third more compute for a fraction of the activation memory)."""
    hsdp: bool | None = None
    """Shard within a node, replicate across nodes (default: on when the job spans more than
    one node, i.e. WORLD_SIZE > LOCAL_WORLD_SIZE; --no-hsdp forces plain FSDP)."""
    eval_every: int = 0
    """Evaluate on the held-out split every N steps (default 0: only at the end)."""
    eval_batches: int = 20
    """Micro-batches per rank per evaluation (default 20; 0 turns evaluation off)."""
    tensorboard_dir: str | None = None
    """TensorBoard event files: a directory or s3://bucket/prefix (written locally, uploaded at
    each evaluation and checkpoint; default: none)."""

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError("--preset", f"unknown preset {self.preset!r} "
                                          f"(choose from {', '.join(PRESETS)})")
        super().__post_init__()
        check_positive(self, ("grad_accum", "micro_batch_size", "seq_len", "lr", "vocab_size"))
        check_non_negative(self, ("warmup_steps", "weight_decay", "grad_clip", "eval_every",
                                  "eval_batches"))
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError("--min-lr-ratio", f"must be in [0, 1], got {self.min_lr_ratio}")
        if self.seq_len is not None and self.seq_len > PRESETS[self.preset].model.seq_len:
            raise ConfigError("--seq-len", f"{self.seq_len} exceeds the {self.preset} preset's "
                                           f"context of {PRESETS[self.preset].model.seq_len}")
        check_s3(self.data, "--data")
        check_s3(self.tensorboard_dir, "--tensorboard-dir")

    def check_inputs(self) -> None:
        """The data must be readable (on S3: credentials and bucket usable), then
        ``RunConfig``'s checks. Token ids are checked against the vocabulary when the data is
        opened (``trainer.open_data``)."""
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
        if self.cache_dir:
            check_writable_dir(Path(self.cache_dir), "--cache-dir")
        if self.tensorboard_dir and self.tensorboard_dir.startswith("s3://"):
            from workloads.common.s3 import check_access

            check_access(self.tensorboard_dir, "--tensorboard-dir")
        elif self.tensorboard_dir:
            check_writable_dir(Path(self.tensorboard_dir), "--tensorboard-dir")
        super().check_inputs()

    def memory_estimate(self, world_size: int, cuda: bool,
                        local_world_size: int | None = None) -> MemoryEstimate:
        """Bytes per process: 16 per parameter (fp32 weights 4, gradients 4, AdamW's two
        moments 8), divided by the ranks W that shard them (all ranks with FSDP, the ranks of a
        node with HSDP: ``mesh_shape``; ``local_world_size`` defaults to torchrun's
        LOCAL_WORLD_SIZE), plus 2 per parameter for autocast's bf16 weight copies on a single
        GPU; plus activations of one micro-batch (see ``activation_bytes``). Gradient
        accumulation adds nothing."""
        m = self.model
        if local_world_size is None:
            local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
        shape = mesh_shape(world_size, local_world_size, self.hsdp)
        shard = shape[1] if shape else 1
        parts = [("params", 4 * m.params / shard), ("grads", 4 * m.params / shard),
                 ("AdamW", 8 * m.params / shard)]
        if cuda and shard == 1:
            parts.append(("bf16 copies", 2 * m.params))
        parts.append(("activations", self.activation_bytes(cuda)))
        return MemoryEstimate(
            tuple(parts),
            formula="16·P/W bytes for weights, grads and AdamW (+2·P for bf16 copies on one "
                    "GPU) + B·T·(L·(a·(5·d + 3·kv·Q + H·Q) + 2·4·d + 3·a·f) + 4·d + (a+8)·V) "
                    "for activations (B·T·L·a·d with activation checkpointing), a = 2 (bf16) "
                    "or 4 (fp32)",
            hint="lower --micro-batch-size (raise --grad-accum to keep the batch) or --seq-len, "
                 "use --activation-checkpointing, shard over more GPUs, or pick a smaller "
                 "--preset")

    def activation_bytes(self, cuda: bool) -> float:
        """Activations kept for backward, one micro-batch: per token per layer, in compute dtype
        (a bytes): the attention block's norm output, q, k, v (d + 2·kv·Q after GQA, which
        ``repeat_interleave`` expands to H·Q each for SDPA: counted as 2·H·Q), the attention
        output and o_proj's output (d) and the residual (d); two fp32 RMSNorm inputs (2·4·d);
        the MLP's norm output (d) and gate, up and their SiLU product (3·f). Plus the fp32
        embedding output (4·d) and the logits in compute dtype with their fp32 log-softmax and
        its gradient ((a + 8)·V). With activation checkpointing only each block's input (a·d)
        is kept, plus one block's full set during its recompute."""
        m = self.model
        a = 2 if cuda else 4
        b, t, d, f = self.batch_size, m.seq_len, m.d_model, m.hidden_dim
        q = m.head_dim
        per_layer = a * (5 * d + 2 * m.kv_heads * q + 2 * m.n_head * q + 3 * f) + 8 * d
        layers = (m.n_layer * a * d + per_layer) if self.activation_checkpointing \
            else m.n_layer * per_layer
        return b * t * (layers + 4 * d + (a + 8) * m.vocab_size)

    def checkpoint_bytes(self, nodes: int) -> float:
        """12 per parameter (fp32 weights 4, AdamW's two moments 8), the tied embedding
        stored once (the trainer drops the head's alias from the saved state); the step, data
        position and RNG states are bytes. Sharded by FSDP: each node writes its 1/nodes
        (with HSDP the replicas' copies are deduplicated by DCP, so the same)."""
        return 12 * self.model.params / max(nodes, 1)

    def step_flops(self) -> float:
        """Tokens per rank per step (B·T·grad_accum) times the FLOPs per token (torchtitan's
        convention, ``workloads.common.mfu.model_flops_per_token``)."""
        from workloads.common.mfu import model_flops_per_token

        return self.batch_size * self.model.seq_len * self.grad_accum * \
            model_flops_per_token(self.model)

    # ----- resolved values (preset defaults applied) -----
    @property
    def model(self) -> ModelConfig:
        base = PRESETS[self.preset].model
        over = {}
        if self.seq_len:
            over["seq_len"] = self.seq_len
        if self.vocab_size:
            over["vocab_size"] = self.vocab_size
        return replace(base, **over) if over else base

    @property
    def batch_size(self) -> int:
        return self.micro_batch_size or PRESETS[self.preset].micro_batch_size

    @property
    def peak_lr(self) -> float:
        return self.lr or PRESETS[self.preset].lr

    @property
    def warmup(self) -> int:
        """The warm-up a fresh run starts with (a resumed run keeps its checkpoint's)."""
        if self.warmup_steps is not None:
            return self.warmup_steps
        return min(PRESETS[self.preset].warmup_steps, self.max_steps // 10)


FIELDS = {f.name for f in fields(TrainConfig)}
