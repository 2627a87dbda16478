"""Vision entry points as a user runs them: bad configuration exits 2 with one line, no traceback;
the benchmark prints one JSON line; the docstring carries the laptop and cluster commands."""

from __future__ import annotations

import json

import pytest

BAD = [
    (["--preset", "resnet9000"], "--preset", "unknown preset 'resnet9000'"),
    (["--max-steps", "-3"], "--max-steps", "must be > 0"),
    (["--max-steps", "ten"], "--max-steps", "invalid int value"),
    (["--checkpoint-every", "0"], "--checkpoint-every", "must be > 0"),
    (["--checkpoint-dir", "s3://"], "--checkpoint-dir", "has no bucket"),
    (["--checkpoint-dir", "s3:/bucket/run"], "--checkpoint-dir", "is not an s3:// URL"),
    (["--data", "s3://Bad_Bucket/x"], "--data", "is not a valid S3 bucket name"),
    (["--data", "/nonexistent/shards"], "--data", "is not a directory"),
    (["--batch-size", "0"], "--batch-size", "must be > 0"),
    (["--precision", "fp8"], "--precision", "must be one of auto, bf16, fp16, fp32"),
    (["--label-smoothing", "1.5"], "--label-smoothing", "must be in [0, 1]"),
    (["--image-size", "4"], "--image-size", "must be >= 8"),
    (["--no-such-flag"], "unrecognized arguments", "--no-such-flag"),
]


@pytest.mark.parametrize(("args", "flag", "message"), BAD, ids=[" ".join(a) for a, _, _ in BAD])
def test_bad_configuration_exits_2_with_one_line(args, flag, message, wl, tmp_path):
    wl.assert_config_error(wl.run_module("workloads.vision.train", args, tmp_path), flag, message)


def test_shards_of_the_wrong_size_exit_2(tmp_path, wl):
    import numpy as np

    from workloads.vision.data import write_shards

    write_shards(tmp_path / "s", np.zeros((4, 16, 16, 3), np.uint8), np.zeros(4, np.int64), 10)
    proc = wl.run_module("workloads.vision.train", ["--data", str(tmp_path / "s")], tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "holds 16x16 images, the model trains at 32x32" in proc.stderr


def test_docstring_has_laptop_and_cluster_commands(wl, tmp_path):
    import workloads.vision.train as train

    assert "torchrun --nproc-per-node 2 -m workloads.vision.train" in train.__doc__
    assert "trainyard job render vision" in train.__doc__
    proc = wl.run_module("workloads.vision.train", ["--help"], tmp_path)
    assert proc.returncode == 0 and "--checkpoint-every" in proc.stdout


def test_bench_prints_one_json_line_on_cpu(capsys, tmp_path, monkeypatch):
    from workloads.vision import bench

    monkeypatch.setenv("TRAINYARD_CACHE", str(tmp_path))
    assert bench.main(["--steps", "2", "--warmup", "1", "--device", "cpu", "--input-workers",
                       "0,1", "--input-batches", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["preset"] == "tiny" and result["device"] == "cpu" and result["gpu"] is None
    assert result["images_per_s"] > 0 and result["peak_mem_gib"] > 0
    assert result["precision"] == "fp32" and result["mfu"] is None
    assert result["train_flops_per_image"] == 6 * result["forward_gmacs_per_image"] * 1e9
    assert set(result["input_images_per_s"]) == {"0", "1"} and result["input_data"] == "synthetic"
    assert all(r > 0 for r in result["input_images_per_s"].values())
    assert result["bound"] in ("input pipeline", "model step")


@pytest.mark.parametrize(("args", "flag"), [(["--preset", "nope"], "--preset"),
                                            (["--input-workers", "0,x"], "--input-workers"),
                                            (["--data", "/nonexistent"], "--data")])
def test_bench_bad_flags_exit_2(args, flag, wl, tmp_path):
    proc = wl.run_module("workloads.vision.bench", args, tmp_path)
    assert proc.returncode == 2 and flag in proc.stderr and "Traceback" not in proc.stderr


def test_prepare_synthetic_shards(tmp_path, capsys):
    from workloads.vision import prepare

    out = tmp_path / "shards"
    assert prepare.main(["--out", str(out), "--synthetic", "300", "--shard-size", "128",
                         "--val-fraction", "0.1"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    train, val = manifest["splits"]["train"], manifest["splits"]["val"]
    assert (train["count"], val["count"]) == (270, 30)
    assert [s["count"] for s in train["shards"]] == [128, 128, 14]
    assert all((out / s["name"]).stat().st_size == s["bytes"] for s in train["shards"])
    assert manifest["image_sizes"]["max"] == [37, 37] and "not real data" in manifest["source"]
    assert manifest["classes"] == [f"class-{i:04d}" for i in range(10)]
    assert "wrote 270 training and 30 held-out images of 10 classes in 4 shards" in \
        capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        prepare.main(["--out", str(out), "--synthetic", "3"])
    assert e.value.code == 2 and "already exists" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["--synthetic", "10", "--images", "x"], "give either --images DIR or --synthetic N"),
    (["--images", "/nonexistent"], "--images: '/nonexistent' is not a directory"),
    (["--synthetic", "10", "--val-fraction", "1.5"], "--val-fraction: must be in [0, 1)"),
    (["--synthetic", "10", "--shard-size", "0"], "--shard-size: must be > 0"),
])
def test_prepare_bad_input_exits_2_with_one_line(args, message, tmp_path, capsys):
    from workloads.vision import prepare

    with pytest.raises(SystemExit) as e:
        prepare.main(["--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and message in err
