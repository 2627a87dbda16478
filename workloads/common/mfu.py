"""Model FLOPs utilisation: the formula and the table of GPU peaks it divides by.

FLOPs per token = 6·N + 12·L·H·Q·T (PaLM appendix B: L layers, H query heads, Q head dim, T
sequence length; the attention term ignores causal sparsity, activation recompute is not
counted); MFU = tokens/s × FLOPs per token ÷ (GPUs × peak). Two conventions for N:

- **torchtitan** (the one reported as ``mfu``): N = every parameter (a tied head counted once)
  minus the token-embedding table (``get_dense_model_nparams_and_flops`` in torchtitan's
  models/utils.py). An untied output head counts; a tied one does not.
- **nanoGPT** (reported beside it as ``mfu_nanogpt``): N = every parameter except position
  embeddings (``GPT.estimate_mfu``): the token embedding counts, as the tied output head it is
  there. With rotary embeddings that is every parameter.

Peaks are dense BF16 (never the 2:4-sparsity figures); see shared/design/WORKLOAD_ANCHORS.md.
"""

from __future__ import annotations

import os

PEAK_BF16_TFLOPS: dict[str, float] = {
    "A100": 312.0,
    "H100 SXM": 989.0,
    "H100 PCIe": 756.0,
    "H200": 989.0,
}
"""Dense BF16 TFLOP/s per GPU. ``TRAINYARD_PEAK_TFLOPS`` overrides for an unlisted GPU."""


def gpu_model(device_name: str) -> str | None:
    """Map ``torch.cuda.get_device_name()`` to a key of PEAK_BF16_TFLOPS (None if unknown)."""
    name = device_name.upper()
    if "H200" in name:
        return "H200"
    if "H100" in name:
        if "PCIE" in name:
            return "H100 PCIe"
        if "NVL" in name:
            return None  # H100 NVL has its own peak; not in the table
        return "H100 SXM"  # "NVIDIA H100 80GB HBM3" is the SXM part
    if "A100" in name:
        return "A100"
    return None


def peak_tflops(device_name: str | None) -> float | None:
    """Dense BF16 peak of the named GPU; None on CPU or for an unknown GPU."""
    override = os.environ.get("TRAINYARD_PEAK_TFLOPS")
    if override:
        return float(override)
    if not device_name:
        return None
    model = gpu_model(device_name)
    return PEAK_BF16_TFLOPS.get(model) if model else None


def flops_per_token(n_params_non_embedding: int, n_layer: int, n_head: int, head_dim: int,
                    seq_len: int) -> float:
    """Training FLOPs per token (forward + backward), activation recompute not counted."""
    return 6.0 * n_params_non_embedding + 12.0 * n_layer * n_head * head_dim * seq_len


def model_flops_per_token(m, convention: str = "torchtitan") -> float:
    """FLOPs per trained token of a model config with ``n_layer``, ``n_head``, ``head_dim``,
    ``seq_len``, ``vocab_size``, ``d_model``, ``tie_embeddings``, ``non_embedding_params`` and
    ``params`` (``workloads.llm.config.ModelConfig``), by ``convention`` (module docstring)."""
    if convention == "torchtitan":
        n = m.params - m.vocab_size * m.d_model
    elif convention == "nanogpt":
        n = m.params
    else:
        raise ValueError(f"unknown FLOPs convention {convention!r} (torchtitan or nanogpt)")
    return flops_per_token(n, m.n_layer, m.n_head, m.head_dim, m.seq_len)


def mfu(tokens_per_s: float, flops_per_tok: float, n_gpus: int, peak: float | None) -> float | None:
    """Fraction of peak (0..1), or None when the peak is unknown (CPU)."""
    if not peak or n_gpus <= 0:
        return None
    return tokens_per_s * flops_per_tok / (n_gpus * peak * 1e12)
