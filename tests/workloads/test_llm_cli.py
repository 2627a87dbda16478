"""Entry points as a user runs them: bad configuration exits 2 with one line; bench prints JSON."""

from __future__ import annotations

import json

import pytest

BAD = [
    (["--preset", "7b"], "--preset", "unknown preset '7b'"),
    (["--max-steps", "-3"], "--max-steps", "must be > 0"),
    (["--max-steps", "ten"], "--max-steps", "invalid int value"),
    (["--checkpoint-every", "0"], "--checkpoint-every", "must be > 0"),
    (["--data", "/nonexistent/shards"], "--data", "is not a directory"),
    (["--checkpoint-dir", "s3://"], "--checkpoint-dir", "has no bucket"),
    (["--checkpoint-dir", "s3:///ckpt/run1"], "--checkpoint-dir", "has no bucket"),
    (["--data", "s3://"], "--data", "has no bucket"),
    (["--seq-len", "4096"], "--seq-len", "exceeds"),
    (["--device", "tpu"], "--device", "must be auto, cpu or cuda"),
    (["--eval-every", "-1"], "--eval-every", "must be >= 0"),
    (["--eval-batches", "-2"], "--eval-batches", "must be >= 0"),
    (["--vocab-size", "0"], "--vocab-size", "must be > 0"),
    (["--tensorboard-dir", "s3://"], "--tensorboard-dir", "has no bucket"),
    (["--no-such-flag"], "unrecognized arguments", "--no-such-flag"),
]


@pytest.mark.parametrize(("args", "flag", "message"), BAD, ids=[" ".join(a) for a, _, _ in BAD])
def test_bad_configuration_exits_2_with_one_line(args, flag, message, wl, cache_dir):
    wl.assert_config_error(wl.run_module("workloads.llm.train", args, cache_dir), flag, message)


def test_data_dir_without_manifest_exits_2(tmp_path, wl, cache_dir):
    proc = wl.run_module("workloads.llm.train", ["--data", str(tmp_path)], cache_dir)
    assert proc.returncode == 2
    assert "--data" in proc.stderr and "no readable manifest.json" in proc.stderr


def test_checkpoint_dir_that_is_a_file_exits_2(tmp_path, wl, cache_dir):
    f = tmp_path / "file"
    f.write_text("x")
    proc = wl.run_module("workloads.llm.train", ["--checkpoint-dir", str(f)], cache_dir)
    assert proc.returncode == 2 and "--checkpoint-dir" in proc.stderr


def test_help_shows_laptop_and_cluster_commands(wl, cache_dir):
    import workloads.llm.train as train

    assert "torchrun --nproc-per-node" in train.__doc__
    assert "trainyard job render llm" in train.__doc__
    proc = wl.run_module("workloads.llm.train", ["--help"], cache_dir)
    assert proc.returncode == 0 and "--checkpoint-every" in proc.stdout


def test_bench_prints_one_json_line_on_cpu(wl, cache_dir):
    proc = wl.run_module("workloads.llm.bench", ["--steps", "3", "--warmup", "1"], cache_dir)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["preset"] == "tiny" and result["device"] == "cpu"
    assert result["tokens_per_s"] > 0 and result["peak_mem_gib"] > 0
    assert result["mfu"] is None and result["peak_tflops"] is None
    assert result["mfu_nanogpt"] is None and result["eval_s"] > 0
    assert result["params"] == 139_584 and result["flops_per_token"] == 837_504


def test_bench_lists_every_presets_parameters_and_flops(wl, cache_dir):
    from workloads.common.mfu import model_flops_per_token
    from workloads.llm.config import PRESETS

    proc = wl.run_module("workloads.llm.bench", ["--list"], cache_dir)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["preset"] for r in rows] == list(PRESETS)
    for r in rows:
        m = PRESETS[r["preset"]].model
        assert r["params"] == m.params and r["flops_per_token"] == model_flops_per_token(m)
        assert r["flops_per_token_nanogpt"] > r["flops_per_token"]


def test_bench_bad_preset_exits_2(wl, cache_dir):
    proc = wl.run_module("workloads.llm.bench", ["--preset", "nope"], cache_dir)
    assert proc.returncode == 2 and "--preset" in proc.stderr


def test_prepare_writes_shards_and_manifest(tmp_path, wl, cache_dir):
    """The byte tokenizer end to end (the BPE path and the held-out split: test_llm_data.py)."""
    src = tmp_path / "corpus"
    src.mkdir()
    (src / "a.txt").write_text("hello world\n" * 100)
    (src / "b.txt").write_text("héllo\n")
    out = tmp_path / "shards"
    proc = wl.run_module("workloads.llm.prepare", ["--out", str(out), "--source", str(src),
                                                   "--tokenizer", "byte", "--val-fraction", "0",
                                                   "--shard-tokens", "500"], cache_dir)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tokenizer"] == "byte" and manifest["dtype"] == "uint16"
    assert manifest["total_tokens"] == 1200 + 1 + len("héllo\n".encode()) + 1
    train = manifest["splits"]["train"]
    assert sum(s["tokens"] for s in train) == manifest["total_tokens"]
    assert len(train) >= 2  # --shard-tokens 500 starts new shards
    again = wl.run_module("workloads.llm.prepare", ["--out", str(out)], cache_dir)
    assert again.returncode == 2 and "already exists" in again.stderr
