"""The local model servers for real: KServe's ModelServer in a subprocess on 127.0.0.1.

A random tiny checkpoint, exported by ``workloads.llm.export``, is served by
``workloads.serving.llm_server``; concurrent v2 requests must be answered with exactly the tokens
``workloads.llm.generate`` picks greedily from the checkpoint (our model code, no transformers),
the predictor must have batched them (its /metrics histogram), the OpenAI route must agree, and
``trainyard serve bench`` must measure it. The ONNX image server gets the same treatment with a
small CNN written as ONNX here and laid out as ``workloads.vision.export`` lays out a Triton
repository. Each server is
stopped by a fixture finalizer, whatever the test did.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROMPTS = ["The quick brown fox", "hi", "Once upon a time there was", "x", "serve me", "12345"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m MODULE ...`` on a free port; ``stop()`` ends it (TERM, then KILL)."""

    def __init__(self, module: str, args: list[str], log: Path) -> None:
        self.module = module
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args, "--http_port", str(self.port)], cwd=REPO,
            stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 90) -> Server:
        """Polls /v2/health/ready; fails the test (with the server's log) on exit or timeout."""
        import httpx

        module, log = self.module, self.log
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                self.stop()
                pytest.fail(f"{module} exited {self.proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"{module} not ready in {timeout} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.25)

    def metric(self, name: str) -> dict[str, float]:
        """Samples of one Prometheus family at /metrics, by sample name + labels."""
        import httpx

        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        return {m.group(1): float(m.group(2)) for m in
                re.finditer(rf"^({name}\S*) (\S+)$", text, re.MULTILINE)}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


def _batches(server: Server, model: str) -> tuple[float, float]:
    """(batches run, items run) from the predictor's batch-size histogram."""
    m = server.metric("trainyard_serving_batch_size")
    return (m[f'trainyard_serving_batch_size_count{{model="{model}"}}'],
            m[f'trainyard_serving_batch_size_sum{{model="{model}"}}'])


# ----- the LLM server -----
def make_llama_export(root: Path) -> Path:
    """A random 2-layer GQA checkpoint laid out as the trainer saves it (byte tokenizer), and
    its ``workloads.llm.export`` (float32, so the served weights are the checkpoint's)."""
    from dataclasses import asdict

    import torch

    from workloads.common.checkpoint import CheckpointStore
    from workloads.common.dist import DistInfo
    from workloads.llm.config import ModelConfig
    from workloads.llm.export import export
    from workloads.llm.model import Llama

    cfg = ModelConfig(n_layer=2, n_head=4, n_kv_head=2, d_model=64, seq_len=64, vocab_size=256,
                      tie_embeddings=False, ffn_dim=96)
    torch.manual_seed(0)
    model = Llama(cfg)
    with torch.no_grad():  # larger than the init: varied, tie-free greedy continuations
        for p in model.parameters():
            p.mul_(4.0) if p.dim() > 1 else p.add_(torch.randn_like(p) * 0.2)
    ckpt = root / "ckpt"
    store = CheckpointStore(str(ckpt), DistInfo())
    store.save({"train": {"model": model.state_dict(), "step": 1}}, 1)
    store.close()
    (ckpt / "model.json").write_text(json.dumps({"model": asdict(cfg), "preset": "test",
                                                 "tokenizer": "byte"}))
    export(str(ckpt), str(root / "export"), dtype="float32")
    return root


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Path:
    """Root with ``ckpt/`` (the checkpoint) and ``export/`` (the HF directory served)."""
    return make_llama_export(tmp_path_factory.mktemp("serving"))


LENGTHS = [12, 5, 20, 9, 16, 7]


@pytest.fixture(scope="module")
def llm_server(llama, tmp_path_factory):
    """The server, and (computed while it starts) the reference tokens for PROMPTS/LENGTHS."""
    server = Server("workloads.serving.llm_server",
                    ["--model_dir", str(llama / "export"), "--model_name", "tiny",
                     "--max_batch_size", "8", "--max_batch_delay_ms", "200",
                     "--torch_threads", "1"],
                    tmp_path_factory.mktemp("logs") / "llm_server.log")
    try:
        server.reference = _reference(llama, PROMPTS, LENGTHS)
        yield server.wait_ready()
    finally:
        server.stop()


def _reference(llama: Path, prompts: list[str], lengths: list[int]) -> list[list[int]]:
    """``workloads.llm.generate``'s greedy tokens (our model code, the checkpoint's weights),
    without the end-of-text token it includes."""
    from workloads.llm.generate import generate, load_model

    model, tok, _ = load_model(str(llama / "ckpt"))
    out = []
    for prompt, n in zip(prompts, lengths, strict=True):
        ids = generate(model, tok.encode_prompt(prompt), n, tok.eos_id, greedy=True)
        out.append(ids[:-1] if ids and ids[-1] == tok.eos_id else ids)
    return out


def _v2(server: Server, prompts: list[str], n: int, **params) -> dict:
    import httpx

    body = {"inputs": [{"name": "text", "shape": [len(prompts)], "datatype": "BYTES",
                        "data": prompts}],
            "parameters": {"max_new_tokens": n, "return_token_ids": True, **params}}
    r = httpx.post(f"{server.url}/v2/models/tiny/infer", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return {o["name"]: o for o in r.json()["outputs"]}


def _ids(outputs: dict) -> list[list[int]]:
    rows, width = outputs["token_ids"]["shape"]
    flat = outputs["token_ids"]["data"]
    return [[t for t in flat[i * width:(i + 1) * width] if t >= 0] for i in range(rows)]


def test_concurrent_requests_are_batched_and_match_greedy_generate(llm_server):
    before = _batches(llm_server, "tiny")
    with ThreadPoolExecutor(len(PROMPTS)) as pool:  # one request per prompt, all at once
        got = list(pool.map(lambda pn: _ids(_v2(llm_server, [pn[0]], pn[1]))[0],
                            zip(PROMPTS, LENGTHS, strict=True)))
    batches, items = (a - b for a, b in zip(_batches(llm_server, "tiny"), before, strict=True))
    assert items == len(PROMPTS)
    assert batches < items, "six concurrent requests never shared a forward pass"
    assert got == llm_server.reference
    assert len({t for ids in got for t in ids}) > 5  # varied tokens, not one repeated


def test_ignore_eos_gives_exactly_max_tokens_and_openai_agrees(llm_server):
    import httpx

    v2 = _v2(llm_server, PROMPTS[:3], 10, ignore_eos=True)
    assert v2["completion_tokens"]["data"] == [10, 10, 10]
    r = httpx.post(f"{llm_server.url}/openai/v1/completions", timeout=60, json={
        "model": "tiny", "prompt": PROMPTS[:3], "max_tokens": 10, "temperature": 0,
        "ignore_eos": True})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert [c["text"] for c in doc["choices"]] == v2["text"]["data"]
    assert doc["usage"]["completion_tokens"] == 30
    assert {c["finish_reason"] for c in doc["choices"]} == {"length"}


def test_bad_requests_are_400_with_the_field(llm_server):
    import httpx

    r = httpx.post(f"{llm_server.url}/openai/v1/completions", timeout=30,
                   json={"model": "tiny", "prompt": "x", "temperature": 0.7})
    assert r.status_code == 400 and "temperature" in r.json()["error"]["message"]
    r = httpx.post(f"{llm_server.url}/openai/v1/completions", timeout=30,
                   json={"model": "other", "prompt": "x"})
    assert r.status_code == 404
    r = httpx.post(f"{llm_server.url}/v2/models/tiny/infer", timeout=30, json={
        "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["x"]}],
        "parameters": {"max_new_tokens": 10_000}})
    assert r.status_code == 400 and "max_new_tokens" in r.text
    # a prompt past the context (64) is refused alone; a request beside it is still answered
    with ThreadPoolExecutor(2) as pool:
        bad = pool.submit(httpx.post, f"{llm_server.url}/openai/v1/completions", timeout=60,
                          json={"model": "tiny", "prompt": "y" * 60, "max_tokens": 8})
        good = pool.submit(_v2, llm_server, ["hi"], 8)
        assert bad.result().status_code == 400
        assert "exceeds the model's context of 64" in bad.result().json()["error"]["message"]
        assert good.result()["completion_tokens"]["data"][0] <= 8


def test_serve_bench_measures_the_server(llm_server, tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "trainyard", "serve", "bench", "--url", llm_server.url,
         "--protocol", "openai", "--concurrency", "1,3", "--requests", "6",
         "--max-tokens", "4", "--ignore-eos", "--warmup", "1", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "p99 ms" in proc.stdout and "tokens/s" in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["model"] == "tiny"
    for level in doc["levels"]:
        assert (level["sent"], level["ok"], level["errors"]) == (6, 6, 0)
        assert level["tokens_per_s"] == pytest.approx(24 / level["wall_s"], rel=1e-6)


def test_batcher_off_runs_one_at_a_time_and_errors_reach_every_caller():
    from workloads.serving.batcher import DynamicBatcher

    seen: list[list[int]] = []

    def run(items):
        seen.append(list(items))
        if 13 in items:
            raise RuntimeError("bad item")
        return [x * 2 for x in items]

    async def main(batcher):
        return await asyncio.gather(*(batcher.submit(i) for i in range(5)),
                                    return_exceptions=True)

    off = DynamicBatcher(run, max_batch_size=1, max_delay_s=0.05, name="off")
    assert asyncio.run(main(off)) == [0, 2, 4, 6, 8]
    assert seen == [[0], [1], [2], [3], [4]] and off.stats()["max_batch"] == 1
    seen.clear()
    on = DynamicBatcher(run, max_batch_size=3, max_delay_s=0.05, name="on")
    assert asyncio.run(main(on)) == [0, 2, 4, 6, 8]
    assert seen == [[0, 1, 2], [3, 4]]

    async def failing():
        return await asyncio.gather(on.submit(12), on.submit(13), return_exceptions=True)

    results = asyncio.run(failing())
    assert all(isinstance(r, RuntimeError) for r in results)

    # sizes counted in rows (images): an entry that would overflow the batch starts the next
    rows: list[list[int]] = []
    by_rows = DynamicBatcher(lambda items: rows.append([len(i) for i in items]) or items,
                             max_batch_size=4, max_delay_s=0.05, name="rows", size_of=len)

    async def sized():
        return await asyncio.gather(*(by_rows.submit([0] * n) for n in (2, 1, 3, 4, 1)))

    asyncio.run(sized())
    assert rows == [[2, 1], [3], [4], [1]]
    assert by_rows.stats()["sizes"] == {3: 2, 4: 1, 1: 1}  # sizes in rows, not entries


# ----- the ONNX image server -----
def make_cnn_repo(root: Path, size: int = 8, classes: int = 10) -> Path:
    """A small CNN (conv 3x3 -> ReLU -> global average pool -> linear) written as ONNX with a
    dynamic batch, laid out as ``workloads.vision.export`` lays out a Triton repository."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from workloads.vision.export import pbtxt

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.normal(0, 0.5, s).astype(np.float32), n) for n, s in
               (("w", (8, 3, 3, 3)), ("b", (8,)), ("fc", (8, classes)), ("fcb", (classes,)))]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["images", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("GlobalAveragePool", ["r"], ["p"]),
         helper.make_node("Flatten", ["p"], ["f"]),
         helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"])],
        "tiny_cnn",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    (root / "vision" / "1").mkdir(parents=True)
    onnx.save(model, root / "vision" / "1" / "model.onnx")
    # max batch 16 rows, a 100 ms queue delay: generous, so concurrent requests surely meet
    (root / "vision" / "config.pbtxt").write_text(pbtxt("vision", size, classes, 16, [4, 8],
                                                        100_000, 1))
    return root


@pytest.fixture(scope="module")
def vision_server(tmp_path_factory):
    repo = make_cnn_repo(tmp_path_factory.mktemp("vision-repo"))
    server = Server("workloads.serving.vision_server",
                    ["--model_dir", str(repo), "--ort_threads", "1"],
                    tmp_path_factory.mktemp("logs") / "vision_server.log")
    server.onnx = repo / "vision" / "1" / "model.onnx"
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def test_image_requests_are_batched_and_match_onnxruntime(vision_server):
    import httpx
    import numpy as np
    import onnxruntime as ort

    meta = httpx.get(f"{vision_server.url}/v2/models/vision", timeout=10).json()
    assert meta["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, 3, 8, 8]}]
    rng = np.random.default_rng(1)
    batches = [rng.normal(size=(n, 3, 8, 8)).astype(np.float32) for n in (1, 2, 3, 1, 2, 3)]

    def infer(x):
        body = {"inputs": [{"name": "images", "shape": list(x.shape), "datatype": "FP32",
                            "data": x.reshape(-1).tolist()}]}
        r = httpx.post(f"{vision_server.url}/v2/models/vision/infer", json=body, timeout=60)
        assert r.status_code == 200, r.text
        out = r.json()["outputs"][0]
        return np.array(out["data"], dtype=np.float32).reshape(out["shape"])

    before = _batches(vision_server, "vision")
    with ThreadPoolExecutor(len(batches)) as pool:
        got = list(pool.map(infer, batches))
    runs, rows = (a - b for a, b in zip(_batches(vision_server, "vision"), before, strict=True))
    assert rows == 12 and runs < len(batches), "concurrent requests never shared a session run"
    session = ort.InferenceSession(str(vision_server.onnx), providers=["CPUExecutionProvider"])
    for x, y in zip(batches, got, strict=True):
        np.testing.assert_allclose(y, session.run(None, {"images": x})[0], rtol=1e-5, atol=1e-5)


def test_image_shape_and_row_limits_are_400(vision_server):
    import httpx

    def post(shape):
        n = 1
        for d in shape:
            n *= d
        return httpx.post(f"{vision_server.url}/v2/models/vision/infer", timeout=30, json={
            "inputs": [{"name": "images", "shape": shape, "datatype": "FP32", "data": [0.0] * n}]})

    r = post([1, 3, 9, 9])
    assert r.status_code == 400 and "shape [1, 3, 9, 9]" in r.text
    r = post([17, 3, 8, 8])
    assert r.status_code == 400 and "at most 16" in r.text


def test_serve_bench_triton_protocol_counts_images(vision_server, tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "trainyard", "serve", "bench", "--url", vision_server.url,
         "--protocol", "triton", "--batch", "2", "--concurrency", "1,2", "--requests", "4",
         "--warmup", "1", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "items/s" in proc.stdout
    for level in json.loads(out.read_text())["levels"]:
        assert (level["sent"], level["ok"]) == (4, 4)
        assert level["items_per_s"] == pytest.approx(2 * level["qps"])


@pytest.mark.parametrize("module, args, message", [
    ("workloads.serving.llm_server", ["--model_dir", "/nonexistent"],
     "error: --model_dir: /nonexistent: no config.json"),
    ("workloads.serving.vision_server", ["--model_dir", str(REPO / "docs")],
     "expected model.onnx or one Triton model directory"),
])
def test_servers_refuse_bad_input_in_one_line(module, args, message):
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr


def test_batching_flags_are_checked(capsys):
    from argparse import Namespace

    from workloads.serving.server import check_batching

    for bad, message in (({"max_batch_size": 0}, "--max_batch_size: must be >= 1, got 0"),
                         ({"max_batch_delay_ms": -1}, "--max_batch_delay_ms: must be in"),
                         ({"http_port": 70000}, "--http_port: must be in 1..65535")):
        args = Namespace(**{"max_batch_size": 8, "max_batch_delay_ms": 5, "http_port": 8080,
                            **bad})
        with pytest.raises(SystemExit) as e:
            check_batching(args)
        assert e.value.code == 2 and message in capsys.readouterr().err
