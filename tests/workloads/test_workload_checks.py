"""Bad input found outside the flags exits 2 with one line before anything trains, in both
workloads: S3 without credentials or bucket, an unwritable checkpoint directory or metrics file,
data the model cannot take (token ids past the vocabulary, labels past the classes), a run the
device's memory cannot hold. Plus: every workload CLI's --help says what it does."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from workloads.common.cli import ConfigError
from workloads.common.dist import DistInfo

TRAIN = ["workloads.llm.train", "workloads.vision.train"]


@pytest.mark.parametrize("module", TRAIN)
@pytest.mark.parametrize("flag", ["--checkpoint-dir", "--data"])
def test_s3_without_credentials_exits_2_before_training(module, flag, wl, tmp_path):
    proc = wl.run_module(module, [flag, "s3://some-bucket/runs/r1"], tmp_path,
                         env=wl.NO_AWS_CREDENTIALS)
    wl.assert_config_error(proc, flag, "s3://some-bucket/runs/r1: no AWS credentials found")
    assert "AWS_ACCESS_KEY_ID" in proc.stderr and "Pod Identity" in proc.stderr


def test_s3_bucket_that_does_not_exist_exits_2(s3, wl, tmp_path):
    env, _, _ = s3
    proc = wl.run_module("workloads.llm.train", ["--checkpoint-dir", "s3://no-such-bucket/r1"],
                         tmp_path, env=env)
    wl.assert_config_error(proc, "--checkpoint-dir", "bucket 'no-such-bucket' does not exist")


@pytest.mark.parametrize("module", TRAIN)
@pytest.mark.parametrize("below", ["", "run1"], ids=["existing", "to-create"])
def test_unwritable_checkpoint_dir_exits_2_before_any_step(module, below, wl, tmp_path):
    target = wl.unwritable_dir(tmp_path) / below
    proc = wl.run_module(module, ["--checkpoint-dir", str(target)], tmp_path)
    wl.assert_config_error(proc, "--checkpoint-dir", "is not writable")


def test_unwritable_metrics_file_and_prepare_out_exit_2(wl, tmp_path):
    bad = wl.unwritable_dir(tmp_path)
    proc = wl.run_module("workloads.llm.train", ["--metrics-file", str(bad / "m.jsonl")],
                         tmp_path)
    wl.assert_config_error(proc, "--metrics-file", "is not writable")
    proc = wl.run_module("workloads.llm.prepare", ["--out", str(bad / "shards")], tmp_path)
    wl.assert_config_error(proc, "--out", "is not writable")


def _token_shards(root, tokens: np.ndarray, **manifest) -> None:
    """A version-1 dataset (raw uint16, no header: what the loader still reads)."""
    root.mkdir()
    tokens.astype("<u2").tofile(root / "shard-00000.bin")
    (root / "manifest.json").write_text(json.dumps({
        "format": "trainyard-tokens-v1", "dtype": "uint16", "vocab_size": 50257,
        "tokenizer": "gpt2", "shards": [{"file": "shard-00000.bin", "tokens": int(tokens.size)}],
        **manifest}))


def test_token_ids_past_the_model_vocabulary_exit_2_when_the_data_is_opened(wl, tmp_path):
    data = tmp_path / "bpe"
    _token_shards(data, np.arange(20_000) % 50257)  # no max_token_id: the loader scans
    ckpt, metrics = tmp_path / "ckpt", tmp_path / "m.jsonl"
    proc = wl.run_module("workloads.llm.train", ["--data", str(data), "--vocab-size", "256",
                                                 "--checkpoint-dir", str(ckpt),
                                                 "--metrics-file", str(metrics)], tmp_path)
    wl.assert_config_error(proc, "--data", "holds token ids up to 19999")
    assert "model's vocabulary is 256" in proc.stderr
    assert not ckpt.exists() and not metrics.exists()  # nothing started, nothing written


def test_the_models_vocabulary_is_the_datas_padded(tmp_path):
    from workloads.llm.config import TrainConfig
    from workloads.llm.trainer import open_data

    _token_shards(tmp_path / "d", np.arange(20_000) % 50257)
    cfg, loader, _ = open_data(TrainConfig(data=str(tmp_path / "d"), eval_batches=0),
                               DistInfo())
    assert cfg.model.vocab_size == 50304 and loader.vocab_size == 50257  # tiny + the data's
    cfg, _, _ = open_data(TrainConfig(data=str(tmp_path / "d"), vocab_size=50400,
                                      eval_batches=0), DistInfo())
    assert cfg.model.vocab_size == 50400  # --vocab-size wins
    with pytest.raises(ConfigError, match="model's vocabulary is 19968"):
        open_data(TrainConfig(data=str(tmp_path / "d"), vocab_size=19968), DistInfo())
    cfg, _, held_out = open_data(TrainConfig(data="synthetic"), DistInfo())
    assert cfg.model.vocab_size == 256 and held_out is not None  # the preset's


def test_manifest_max_token_id_is_checked_without_a_scan(tmp_path):
    from workloads.llm.data import ShardLoader

    _token_shards(tmp_path / "d", np.zeros(4096), max_token_id=300)
    with pytest.raises(ConfigError, match="token ids up to 300 .* vocabulary is 256"):
        ShardLoader(tmp_path / "d", 16, 2, 1, DistInfo(), seed=0, model_vocab=256)
    assert ShardLoader(tmp_path / "d", 16, 2, 1, DistInfo(), 0, model_vocab=512).max_token_id == 300


def test_prepare_records_the_largest_token_id(small_data):
    manifest = json.loads((small_data / "manifest.json").read_text())
    assert 0 < manifest["max_token_id"] < 256


def test_labels_past_the_model_classes_are_refused_when_the_shards_are_opened(tmp_path):
    from workloads.vision.data import ShardLoader, write_shards

    data = tmp_path / "shards"
    write_shards(data, np.zeros((64, 32, 32, 3), np.uint8), np.arange(64) % 10, 10)
    np.save(data / "labels-00000.npy", np.arange(64) % 13)  # the manifest still says 10
    with pytest.raises(ConfigError, match="--data: .* holds labels 0..12, but the model has 10"):
        ShardLoader(data, 8, DistInfo(), seed=0, hflip=False, num_classes=10)
    with pytest.raises(ValueError, match="labels 0..12 do not fit 10 classes"):
        write_shards(tmp_path / "again", np.zeros((64, 32, 32, 3), np.uint8), np.arange(64) % 13,
                     10)


# ----- memory -----
GIB = 2**30


def test_a_run_too_big_for_the_machine_is_refused_before_allocating(wl, tmp_path, capsys):
    proc = wl.run_module("workloads.llm.bench", ["--preset", "1b", "--micro-batch-size", "4096",
                                                 "--device", "cpu"], tmp_path)
    wl.assert_config_error(proc, "--preset", "1b (micro-batch 4096 x seq 2048) needs about")
    assert "GiB available" in proc.stderr and "TRAINYARD_SKIP_MEMORY_CHECK" in proc.stderr
    from workloads.vision import train  # in-process: refused before anything is set up

    with pytest.raises(SystemExit) as e:
        train.main(["--preset", "resnet50", "--batch-size", "100000", "--device", "cpu"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1
    assert "--preset: resnet50 (batch 100000 x 224x224) needs about" in err


def test_the_readme_1b_bench_is_refused_on_a_24_gib_cpu_and_fits_an_80_gb_gpu(monkeypatch):
    from workloads.common import memory
    from workloads.llm.config import TrainConfig

    cfg = TrainConfig(preset="1b", data="synthetic")
    monkeypatch.setattr(memory, "cpu_available", lambda: (24 * GIB, "test"))
    with pytest.raises(ConfigError, match=r"needs about 51\.7 GiB .* AdamW 9\.21 .* 24\.0 GiB"):
        memory.check_fits(cfg.memory_estimate(1, cuda=False), torch.device("cpu"), "1b")
    # bf16 on one GPU: 16 B/param + 2 B bf16 copies + activations, inside 80 GB
    assert 40 * GIB < cfg.memory_estimate(1, cuda=True).total < 45 * GIB
    # FSDP over 8 GPUs shards the 16 B/param, not the activations
    eight = dict(cfg.memory_estimate(8, cuda=True).parts)
    assert eight["AdamW"] == dict(cfg.memory_estimate(1, cuda=True).parts)["AdamW"] / 8
    # processes sharing one machine's RAM each need their share; the escape hatch skips it all
    small = TrainConfig(preset="125m", micro_batch_size=8, seq_len=512, data="synthetic")
    est = small.memory_estimate(2, cuda=False)
    monkeypatch.setattr(memory, "cpu_available", lambda: (1.5 * est.total, "test"))
    memory.check_fits(est, torch.device("cpu"), "125m")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="2 processes, each"):
        memory.check_fits(est, torch.device("cpu"), "125m")
    monkeypatch.setenv("TRAINYARD_SKIP_MEMORY_CHECK", "1")
    memory.check_fits(est, torch.device("cpu"), "125m")


def test_estimates_count_the_models_parameters():
    from workloads.llm.config import PRESETS as LLM
    from workloads.llm.config import ModelConfig
    from workloads.llm.model import Llama
    from workloads.vision.config import PRESETS as VISION
    from workloads.vision.model import ResNet

    for model in (*(p.model for p in LLM.values()),
                  ModelConfig(n_layer=3, n_head=4, d_model=96, seq_len=32, vocab_size=1000,
                              tie_embeddings=False, n_kv_head=1, ffn_dim=100)):
        with torch.device("meta"):
            real = Llama(model)
        assert model.params == sum(p.numel() for p in real.parameters())
    for preset in VISION.values():
        assert preset.model.num_params() == ResNet(preset.model).num_params()
    assert VISION["resnet50"].model.num_params() == 25_557_032


def test_flops_formula_counts_the_models_matmuls():
    """torch's FLOP counter on a real forward + backward: every matmul parameter 6 times per
    token (on CPU it leaves out SDPA, the 12·L·H·Q·T term). That is nanoGPT's 6·N less the
    RMSNorm weights (no matmul); torchtitan's also leaves out the tied head."""
    from torch.utils.flop_counter import FlopCounterMode

    from workloads.common.mfu import model_flops_per_token
    from workloads.llm.config import PRESETS, ModelConfig
    from workloads.llm.model import Llama

    for m in (PRESETS["tiny"].model, ModelConfig(n_layer=2, n_head=4, n_kv_head=1, d_model=32,
                                                 seq_len=16, vocab_size=128,
                                                 tie_embeddings=False)):
        torch.manual_seed(0)
        model = Llama(m)
        x = torch.randint(0, m.vocab_size, (2, m.seq_len))
        with FlopCounterMode(display=False) as counter:
            model(x, x).backward()
        per_token = counter.get_total_flops() / x.numel()
        norms = (2 * m.n_layer + 1) * m.d_model
        lookup = 0 if m.tie_embeddings else m.vocab_size * m.d_model  # untied: no matmul
        attention = 12 * m.n_layer * m.n_head * m.head_dim * m.seq_len
        assert per_token == 6 * (m.params - norms - lookup)
        assert model_flops_per_token(m, "nanogpt") == per_token + 6 * (norms + lookup) + attention
        head = 0 if m.tie_embeddings else m.vocab_size * m.d_model  # torchtitan counts it untied
        assert model_flops_per_token(m) == 6 * (m.non_embedding_params + head) + attention
        assert model_flops_per_token(m) == per_token + 6 * norms + attention - \
            (6 * m.vocab_size * m.d_model if m.tie_embeddings else 0)


def test_checkpoint_bytes_is_what_dcp_writes(tmp_path):
    """The estimate against a real checkpoint of the tiny model: the tensors DCP stored (the
    tied embedding once) are 12 bytes per parameter, plus AdamW's step counters."""
    import torch.distributed.checkpoint as dcp

    from workloads.common.checkpoint import CheckpointStore
    from workloads.llm.config import TrainConfig
    from workloads.llm.parallel import Schedule
    from workloads.llm.trainer import TrainState, build, train_step

    cfg = TrainConfig(data="synthetic", checkpoint_dir=str(tmp_path))
    info = DistInfo()
    b = build(cfg, info)
    train_step(b, Schedule.of(cfg), 1)
    state = TrainState(b.model, b.optimizer, b.loader, info, 3)
    CheckpointStore(str(tmp_path), info).save({"train": state}, 1)
    meta = dcp.FileSystemReader(str(tmp_path / "step-00000001")).read_metadata()
    tensors = {k: v for k, v in meta.state_dict_metadata.items() if hasattr(v, "size")}
    stored = sum(4 * math.prod(v.size) for v in tensors.values())
    steps = [k for k in tensors if k.endswith(".step")]  # one fp32 scalar per parameter
    assert "train.model.lm_head.weight" not in tensors
    assert "train.model.embed_tokens.weight" in tensors
    assert stored == cfg.checkpoint_bytes(nodes=1) + 4 * len(steps)
    assert cfg.checkpoint_bytes(nodes=4) == cfg.checkpoint_bytes(nodes=1) / 4


def test_cpu_available_reads_proc_meminfo():
    from workloads.common.memory import cpu_available

    found = cpu_available()
    assert found is not None and found[0] > 0


# ----- what the user sees -----
def test_first_run_corpus_build_says_what_it_does(tmp_path, monkeypatch, capsys):
    import workloads.llm.prepare as prepare
    from workloads.llm.data import resolve_data

    monkeypatch.setenv("TRAINYARD_CACHE", str(tmp_path))
    real = prepare.build_default
    monkeypatch.setattr(prepare, "build_default", lambda out: real(out, max_tokens=100_000))
    root = resolve_data(None, DistInfo())
    out = capsys.readouterr().out
    assert f"building the built-in corpus once (the Python standard library's .py sources as " \
           f"byte tokens, about 12M tokens) into {root}" in out
    assert "built 100,000 tokens in" in out
    resolve_data(None, DistInfo())
    assert capsys.readouterr().out == ""  # built once


CLIS = ["workloads.llm.train", "workloads.llm.prepare", "workloads.llm.bench",
        "workloads.vision.train", "workloads.vision.bench", "workloads.vision.prepare"]


@pytest.mark.parametrize("module", CLIS)
def test_help_has_a_description(module, capsys):
    import importlib

    mod = importlib.import_module(module)
    with pytest.raises(SystemExit) as e:
        mod.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    usage, _, rest = out.partition("\n\n")
    description = rest.split("\n\n")[0]
    assert usage.startswith("usage: python -m " + module)
    assert not description.startswith("options:") and len(description.split()) >= 10
    assert " ".join(description.split()) == " ".join(mod.DESCRIPTION.split())
