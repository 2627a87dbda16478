"""Pure pieces: config validation, schedule, MFU, the model, the mesh, the loader, metrics."""

from __future__ import annotations

import io
import json
import math
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from workloads.common.cli import ConfigError
from workloads.common.dist import DistInfo
from workloads.common.metrics import MetricsLogger
from workloads.common.mfu import (
    flops_per_token,
    gpu_model,
    mfu,
    model_flops_per_token,
    peak_tflops,
)
from workloads.llm.config import PRESETS, ModelConfig, TrainConfig, mesh_shape, pad_vocab
from workloads.llm.data import ShardLoader, SyntheticLoader
from workloads.llm.model import Llama
from workloads.llm.parallel import Schedule, lr_at


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["max_steps", "checkpoint_every", "grad_accum", "keep_last"]),
       st.integers(max_value=0))
def test_non_positive_counts_name_their_flag(field, value):
    with pytest.raises(ConfigError) as e:
        TrainConfig(**{field: value})
    assert e.value.flag == "--" + field.replace("_", "-")


def test_model_config_rejects_bad_shapes():
    with pytest.raises(ConfigError, match="divisible"):
        ModelConfig(n_layer=1, n_head=3, d_model=64, seq_len=8, vocab_size=256)


def test_lr_schedule_warmup_then_cosine_to_floor():
    cfg = TrainConfig(max_steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    lrs = [lr_at(s, cfg) for s in range(1, 101)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))
    assert lrs[-1] == pytest.approx(0.1)


@pytest.mark.parametrize(("name", "model", "peak"), [
    ("NVIDIA H100 80GB HBM3", "H100 SXM", 989.0),
    ("NVIDIA H100 PCIe", "H100 PCIe", 756.0),
    ("NVIDIA H200", "H200", 989.0),
    ("NVIDIA A100-SXM4-80GB", "A100", 312.0),
    ("Tesla T4", None, None),
    ("NVIDIA H100 NVL", None, None),
])
def test_gpu_peak_table(name, model, peak, monkeypatch):
    monkeypatch.delenv("TRAINYARD_PEAK_TFLOPS", raising=False)
    assert gpu_model(name) == model
    assert peak_tflops(name) == peak


def test_mfu_formula_matches_the_anchor():
    m = PRESETS["1b"].model
    fpt = flops_per_token(m.non_embedding_params, m.n_layer, m.n_head, m.head_dim, m.seq_len)
    assert fpt == 6 * m.non_embedding_params + 12 * 16 * 32 * 64 * 2048
    assert mfu(10_000, fpt, 1, 989.0) == pytest.approx(10_000 * fpt / 989e12)
    assert mfu(10_000, fpt, 1, None) is None


@pytest.mark.parametrize("preset", ["tiny", "8b"])
def test_flops_conventions_count_what_each_project_counts(preset):
    """torchtitan: every distinct parameter minus the nn.Embedding children's; nanoGPT: every
    parameter (no position embeddings here). Counted on the real model, built on meta."""
    m = PRESETS[preset].model
    with torch.device("meta"):
        model = Llama(m)
    every = sum(p.numel() for p in model.parameters())  # a tied head once
    embedding = sum(p.numel() for c in model.children() if isinstance(c, torch.nn.Embedding)
                    for p in c.parameters())
    attn = 12 * m.n_layer * m.n_head * m.head_dim * m.seq_len
    assert model_flops_per_token(m) == 6 * (every - embedding) + attn
    assert model_flops_per_token(m, "nanogpt") == 6 * every + attn
    if m.tie_embeddings:  # the tied head's matmul is not counted by torchtitan
        assert every - embedding == m.non_embedding_params
    else:
        assert every - embedding == m.non_embedding_params + m.vocab_size * m.d_model


@pytest.mark.parametrize("preset", list(PRESETS))
def test_param_count_formula_matches_the_model(preset):
    cfg = PRESETS[preset].model
    with torch.device("meta"):
        model = Llama(cfg)
    assert model.num_params() == cfg.non_embedding_params
    assert model.num_params(non_embedding=False) == cfg.params


def test_preset_sizes():
    sizes = {name: p.model.params for name, p in PRESETS.items()}
    assert 120e6 < sizes["125m"] < 130e6 and 340e6 < sizes["350m"] < 370e6
    assert sizes["1b"] == 1_235_814_400  # Llama 3.2 1B's shape
    assert sizes["8b"] == 8_030_261_248  # Llama 3 8B's shape
    assert PRESETS["8b"].model.kv_heads == 8 and not PRESETS["8b"].model.tie_embeddings
    assert all(p.model.vocab_size % 64 == 0 for p in PRESETS.values())


def test_vocab_padding():
    assert [pad_vocab(n) for n in (1, 64, 65, 256, 50257, 128256)] == \
        [64, 64, 128, 256, 50304, 128256]
    assert TrainConfig(vocab_size=1000).model.vocab_size == 1000


@pytest.mark.parametrize(("world", "local", "hsdp", "shape"), [
    (1, 1, None, None),           # one process: nothing to shard
    (8, 8, None, (1, 8)),         # one node: FSDP
    (16, 8, None, (2, 8)),        # two nodes: HSDP, sharded within each node
    (16, 8, False, (1, 16)),      # --no-hsdp: FSDP over every rank
    (8, 8, True, (1, 8)),         # --hsdp on one node is FSDP
    (12, 8, None, (1, 12)),       # ranks not in whole nodes: FSDP
    (4, 2, None, (2, 2)),         # the CPU test's 2 x 2
])
def test_mesh_shape_follows_the_job(world, local, hsdp, shape):
    assert mesh_shape(world, local, hsdp) == shape


def test_memory_estimate_shards_over_a_node_with_hsdp():
    cfg = TrainConfig(preset="8b", data="synthetic")
    fsdp = dict(TrainConfig(preset="8b", data="synthetic", hsdp=False)
                .memory_estimate(16, True, local_world_size=8).parts)
    hsdp = dict(cfg.memory_estimate(16, True, local_world_size=8).parts)
    assert hsdp["AdamW"] == 2 * fsdp["AdamW"] == 8 * cfg.model.params / 8
    ac = TrainConfig(preset="8b", data="synthetic", activation_checkpointing=True)
    assert ac.activation_bytes(True) < cfg.activation_bytes(True) / 4


def test_model_is_causal():
    torch.manual_seed(0)
    model = Llama(ModelConfig(n_layer=2, n_head=4, n_kv_head=2, d_model=32, seq_len=16,
                              vocab_size=64)).eval()
    x = torch.randint(0, 64, (1, 16))
    y = x.clone()
    y[0, 10] = (x[0, 10] + 1) % 64
    a, b = model(x), model(y)
    assert torch.equal(a[:, :10], b[:, :10]) and not torch.equal(a[:, 10:], b[:, 10:])


def test_meta_init_matches_a_model_built_in_place_and_keeps_the_tie():
    """build_model (meta, to_empty, init_weights) gives the weights init_weights draws on a
    model built on the CPU, and the tied head is still the embedding."""
    from workloads.llm.parallel import build_model

    cfg = TrainConfig(preset="tiny")
    torch.manual_seed(3)
    model, _ = build_model(cfg, DistInfo())
    assert model.lm_head.weight is model.embed_tokens.weight
    with torch.device("meta"):
        ref = Llama(cfg.model)
    ref.to_empty(device="cpu")
    ref.lm_head.weight = ref.embed_tokens.weight
    torch.manual_seed(3)
    ref.init_weights()
    for (name, a), b in zip(model.named_parameters(), ref.parameters(), strict=True):
        assert torch.equal(a, b), name
    assert torch.equal(model.rope_cos, ref.rope_cos)
    assert model.layers[0].mlp.down_proj.weight.std() < model.layers[0].mlp.up_proj.weight.std()


def test_activation_checkpointing_keeps_names_and_gradients():
    from workloads.llm.parallel import build_model

    x = torch.randint(0, 256, (2, 16))
    grads = []
    for ac in (False, True):
        torch.manual_seed(0)
        model, _ = build_model(TrainConfig(preset="tiny", activation_checkpointing=ac),
                               DistInfo())
        model(x, x).backward()
        grads.append({k: p.grad for k, p in model.named_parameters()})
        keys = set(model.state_dict())
        assert "layers.0.self_attn.q_proj.weight" in keys
    plain, checkpointed = grads
    assert len(plain) == len(checkpointed)
    for a, b in zip(plain.values(), checkpointed.values(), strict=True):
        torch.testing.assert_close(a, b)


def test_warmup_is_the_checkpoints_not_max_steps():
    short = Schedule.of(TrainConfig(max_steps=30))
    assert short.warmup == 3  # min(preset's 10, max_steps // 10)
    longer = Schedule.of(TrainConfig(max_steps=300), warmup=short.warmup)
    assert longer.warmup == 3 and longer.lr(3) == pytest.approx(longer.peak)
    assert Schedule.of(TrainConfig(max_steps=300)).warmup == 10  # a fresh run's own


def test_loader_is_deterministic_resumable_and_rank_disjoint(small_data):
    def make(rank=0, world=2):
        return ShardLoader(small_data, 64, 4, 2, DistInfo(rank=rank, world_size=world), seed=3)

    a = make()
    for _ in range(5):
        a.next_batch()
    state = a.state_dict()
    b = make()
    b.load_state_dict(state)
    for _ in range(3):
        for (xa, ya), (xb, yb) in zip(a.next_batch(), b.next_batch(), strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    r0, r1 = make(0).next_batch(), make(1).next_batch()
    rows0 = {tuple(r.tolist()) for x, _ in r0 for r in x}
    rows1 = {tuple(r.tolist()) for x, _ in r1 for r in x}
    assert len(rows0) == 8 and not rows0 & rows1
    x, y = r0[0]
    assert torch.equal(x[:, 1:], y[:, :-1])  # targets are inputs shifted by one


def test_loader_wraps_epochs(small_data):
    loader = ShardLoader(small_data, 64, 64, 4, DistInfo(), seed=0)
    for _ in range(loader.n_windows // loader.per_step + 1):
        loader.next_batch()
    assert loader.state_dict()["epoch"] == 1


def test_synthetic_loader_is_a_function_of_step():
    a = SyntheticLoader(100, 8, 2, 1, DistInfo(), seed=1)
    first = a.next_batch()[0][0]
    b = SyntheticLoader(100, 8, 2, 1, DistInfo(), seed=1)
    assert torch.equal(first, b.next_batch()[0][0])


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_metrics_jsonl_and_progress(tmp_path):
    out = _Tty()
    m = MetricsLogger(str(tmp_path / "m.jsonl"), total_steps=4, is_main=True, log_every=2,
                      stream=out)
    loss = 1.0 / 3.0
    for step in range(1, 5):
        m.step(step, loss, 1e-3, 0.5, 100, 0.01, 100 * step, 0.42)
    m.event("done", step=4)
    m.close()
    records = [json.loads(x) for x in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert records[0]["loss"] == loss  # full precision survives the round trip
    assert records[-1] == {"event": "done", "step": 4, "elapsed_s": records[-1]["elapsed_s"],
                           "time": records[-1]["time"]}  # wall clock: events line up across runs
    assert abs(records[-1]["time"] - time.time()) < 60
    assert {"tokens_per_s", "mfu", "eta_s", "elapsed_s", "lr"} <= set(records[0])
    text = out.getvalue()
    assert "step      2/4" in text and "mfu 42.0%" in text and "[####" in text


def test_metrics_truncate_after_a_resume_and_carry_the_last_eval(tmp_path):
    path = tmp_path / "m.jsonl"
    m = MetricsLogger(str(path), total_steps=10, is_main=True, log_every=5, stream=io.StringIO())
    for step in range(1, 8):
        m.step(step, 1.0, 1e-3, 0.5, 100, 0.01, 100 * step, None)
        if step == 5:
            m.event("checkpoint", step=5)
    m.close()
    with open(path, "a") as f:
        f.write('{"step": 8, "lo')  # torn by a kill mid-write
    m = MetricsLogger(str(path), total_steps=10, is_main=True, stream=io.StringIO())
    assert m.truncate_after(5) == 3  # steps 6, 7 and the torn line
    m.eval(5, 2.0, 4096, 0.1)
    m.step(6, 1.0, 1e-3, 0.5, 100, 0.01, 600, None)
    m.close()
    records = [json.loads(x) for x in path.read_text().splitlines()]
    assert [r.get("step") for r in records] == [1, 2, 3, 4, 5, 5, 5, 6]
    assert records[-2]["event"] == "eval" and records[-2]["eval_perplexity"] == pytest.approx(
        math.exp(2.0))
    assert records[-1]["eval_loss"] == 2.0 and records[-1]["eval_step"] == 5


def test_metrics_without_tty_prints_plain_lines(tmp_path):
    out = io.StringIO()
    m = MetricsLogger(None, total_steps=2, is_main=True, log_every=1, stream=out)
    m.step(1, 2.0, 1e-3, 0.5, 100, 0.01, 100, None)
    assert "\r" not in out.getvalue() and "mfu n/a" in out.getvalue()


def test_gradient_accumulation_matches_one_big_batch(cache_dir, monkeypatch):
    """micro-batch 8 × accum 1 and micro-batch 4 × accum 2 see the same windows in one step, so
    they take the same optimizer step (up to float summation order)."""
    from workloads.common.dist import setup_distributed
    from workloads.llm.trainer import build, train_step

    monkeypatch.setenv("TRAINYARD_CACHE", str(cache_dir))
    info = setup_distributed("cpu")
    results = []
    for mb, accum in [(8, 1), (4, 2)]:
        cfg = TrainConfig(max_steps=10, micro_batch_size=mb, grad_accum=accum, seed=5)
        b = build(cfg, info)
        loss, _ = train_step(b, Schedule.of(cfg), 1)
        results.append((float(loss), [p.detach().clone() for p in b.model.parameters()]))
    (loss_a, params_a), (loss_b, params_b) = results
    assert loss_a == pytest.approx(loss_b, rel=1e-5)
    for a, b in zip(params_a, params_b, strict=True):
        # Adam normalises each gradient, so near-zero ones amplify rounding: compare against
        # the step size (lr 3e-3), not machine precision.
        torch.testing.assert_close(a, b, rtol=1e-4, atol=3e-5)


def test_workloads_import_nothing_from_the_infrastructure_half():
    import ast
    from pathlib import Path

    import workloads

    root = Path(workloads.__file__).parent
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top not in {"pulumi", "pulumi_aws", "components", "trainyard"}, \
                    f"{path}: imports {name}"
