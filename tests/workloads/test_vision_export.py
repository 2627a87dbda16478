"""Export: a trained checkpoint -> ONNX in a Triton model repository; onnxruntime must agree with
the PyTorch model at several batch sizes (the batch dimension is dynamic)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A 3-step tiny run (in-process), checkpointed, and its trained model."""
    from workloads.common.checkpoint import CheckpointStore
    from workloads.common.dist import setup_distributed
    from workloads.vision.config import TrainConfig
    from workloads.vision.trainer import TrainState, build, train_step

    d = tmp_path_factory.mktemp("vision-export")
    mp = pytest.MonkeyPatch()
    mp.setenv("TRAINYARD_CACHE", str(d / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        info = setup_distributed("cpu")
        cfg = TrainConfig(max_steps=3, seed=1, workers=0)
        b = build(cfg, info)
        for n in range(1, 4):
            train_step(b, cfg, n, info)
        state = TrainState(b, info, cfg)
        state.step = 3
        store = CheckpointStore(str(d / "ckpt"), info)
        store.save({"train": state}, 3)
        store.close()
        yield d, b.model.eval()
    finally:
        torch.set_num_threads(threads)
        mp.undo()


def test_export_writes_a_triton_repository_that_onnxruntime_agrees_with(checkpoint, capsys):
    import onnx
    import onnxruntime as ort

    from workloads.vision import export

    d, model = checkpoint
    out = d / "export"
    assert export.main(["--checkpoint", str(d / "ckpt"), "--out", str(out), "--name", "tiny-cls",
                        "--max-batch-size", "32", "--preferred-batch-sizes", "8,16"]) == 0
    assert "exported step 3" in capsys.readouterr().out
    onnx_path = out / "tiny-cls" / "1" / "model.onnx"
    proto = onnx.load(str(onnx_path))
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [export.OPSET]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [x.dim_value for x in dims[1:]] == [3, 32, 32]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(7)
    for batch in (1, 5, 32):
        x = torch.randn(batch, 3, 32, 32, generator=g)
        with torch.no_grad():
            want = model(x).numpy()
        got = session.run(["logits"], {"images": x.numpy()})[0]
        assert got.shape == (batch, 10)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    config = (out / "tiny-cls" / "config.pbtxt").read_text()
    for line in ['name: "tiny-cls"', 'platform: "onnxruntime_onnx"', "max_batch_size: 32",
                 "preferred_batch_size: [ 8, 16 ]", "max_queue_delay_microseconds: 2000",
                 "kind: KIND_GPU", "dims: [ 3, 32, 32 ]", "dims: [ 10 ]",
                 'label_filename: "labels.txt"']:
        assert line in config
    labels = (out / "tiny-cls" / "labels.txt").read_text().splitlines()
    assert labels == [f"class-{i:04d}" for i in range(10)]
    pre = json.loads((out / "preprocess.json").read_text())
    assert pre["size"] == 32 and pre["resize"] == 37 and pre["step"] == 3
    assert pre["mean"] == [0.485, 0.456, 0.406] and pre["std"] == [0.229, 0.224, 0.225]


@pytest.mark.parametrize(("args", "flag", "message"), [
    (["--preferred-batch-sizes", "8,128"], "--preferred-batch-sizes", "each must be in 1..64"),
    (["--preferred-batch-sizes", "a"], "--preferred-batch-sizes", "is not a comma-separated"),
    (["--max-queue-delay-us", "-1"], "--max-queue-delay-us", "must be >= 0"),
    (["--name", "a/b"], "--name", "use letters, digits"),
])
def test_bad_export_flags_exit_2_with_one_line(args, flag, message, tmp_path, capsys):
    from workloads.vision import export

    with pytest.raises(SystemExit) as e:
        export.main(["--checkpoint", str(tmp_path), "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and flag in err and message in err


def test_a_directory_without_a_checkpoint_exits_2(tmp_path, wl):
    proc = wl.run_module("workloads.vision.export", ["--checkpoint", str(tmp_path), "--out",
                                                     str(tmp_path / "o")], tmp_path)
    wl.assert_config_error(proc, "--checkpoint", "no complete checkpoint there")
