"""Serve an exported ONNX image classifier on 127.0.0.1: KServe's ModelServer + onnxruntime.

    python -m workloads.vision.export --checkpoint out/vision-ckpt --out out/vision-export
    python -m workloads.serving.vision_server --model_dir out/vision-export --http_port 8081
    trainyard serve bench --url http://127.0.0.1:8081 --protocol triton --batch 8

On the cluster the same export is served by Triton (KServe's Triton runtime, the
``config.pbtxt``'s dynamic batching). Triton has no pip package for this machine, so locally
onnxruntime runs the model inside a KServe predictor with the same policy: concurrent requests
are concatenated along the batch dimension up to ``max_batch_size`` rows, waiting at most the
queue delay (defaults: the ``config.pbtxt``'s ``max_batch_size`` and
``max_queue_delay_microseconds`` when there is one), run as one ``InferenceSession.run``, and
split back. ``--max_batch_size 1`` turns batching off.

``--model_dir`` is a ``model.onnx``, a directory holding one, a Triton model directory
(``NAME/config.pbtxt`` + ``NAME/<version>/model.onnx``, the newest version wins) or a model
repository with one model (what ``workloads.vision.export --out`` writes). The model is named
after its Triton directory unless ``--model_name`` says otherwise.

Protocol: KServe v2 (= Triton's HTTP API), JSON or binary tensors: ``POST /v2/models/NAME/infer``
with the ONNX input (``images``, FP32 [N, 3, H, W], normalised as ``preprocess.json`` says) and
the output (``logits``, FP32 [N, classes]); the v2 metadata at ``GET /v2/models/NAME`` gives the
names and shapes. Batch statistics are at ``/metrics`` (``trainyard_serving_*``).
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import Any

import kserve
import numpy as np
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from workloads.common.cli import die
from workloads.serving import server
from workloads.serving.batcher import DynamicBatcher

_ONNX_TO_V2 = {"tensor(float)": "FP32", "tensor(float16)": "FP16", "tensor(double)": "FP64",
               "tensor(int64)": "INT64", "tensor(int32)": "INT32", "tensor(uint8)": "UINT8",
               "tensor(int8)": "INT8", "tensor(bool)": "BOOL"}


def find_model(path: Path) -> tuple[Path, str | None, dict[str, int]]:
    """(model.onnx, Triton model name or None, batching settings from config.pbtxt)."""
    if path.is_file():
        return path, None, {}
    if not path.is_dir():
        raise ValueError(f"{path}: no such file or directory")
    if (path / "model.onnx").is_file():
        return path / "model.onnx", None, {}
    candidates = [path] if (path / "config.pbtxt").is_file() else sorted(
        p for p in path.iterdir() if (p / "config.pbtxt").is_file())
    if len(candidates) != 1:
        raise ValueError(f"{path}: expected model.onnx or one Triton model directory "
                         f"(NAME/config.pbtxt), found {len(candidates)}")
    model_dir = candidates[0]
    versions = sorted((int(v.name) for v in model_dir.iterdir()
                       if v.name.isdigit() and (v / "model.onnx").is_file()), reverse=True)
    if not versions:
        raise ValueError(f"{model_dir}: no <version>/model.onnx")
    config = (model_dir / "config.pbtxt").read_text()
    settings = {key: int(m.group(1)) for key in ("max_batch_size", "max_queue_delay_microseconds")
                if (m := re.search(rf"\b{key}\s*:\s*(\d+)", config))}
    return model_dir / str(versions[0]) / "model.onnx", model_dir.name, settings


class OnnxModel(kserve.Model):
    """A KServe predictor running one ONNX graph with a dynamic first (batch) dimension."""

    def __init__(self, name: str, onnx_path: Path, max_batch_size: int, max_delay_s: float,
                 threads: int) -> None:
        super().__init__(name)
        self.onnx_path, self.threads = onnx_path, threads
        self.max_batch_size, self.max_delay_s = max_batch_size, max_delay_s
        self.session = None
        self.batcher: DynamicBatcher | None = None

    def load(self) -> bool:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.onnx_path), options,
                                            providers=["CPUExecutionProvider"])
        if len(self.session.get_inputs()) != 1:
            raise ValueError(f"{self.onnx_path}: expected one input, found "
                             f"{len(self.session.get_inputs())}")
        self.input = self.session.get_inputs()[0]
        self.batcher = DynamicBatcher(self._run, max_batch_size=self.max_batch_size,
                                      max_delay_s=self.max_delay_s, name=self.name,
                                      size_of=len)
        self.ready = True
        return self.ready

    @staticmethod
    def _types(args) -> list[dict]:
        return [{"name": a.name, "datatype": _ONNX_TO_V2.get(a.type, a.type),
                 "shape": [d if isinstance(d, int) else -1 for d in a.shape]} for a in args]

    def get_input_types(self) -> list[dict]:
        return self._types(self.session.get_inputs())

    def get_output_types(self) -> list[dict]:
        return self._types(self.session.get_outputs())

    def _run(self, arrays: list[np.ndarray]) -> list[list[np.ndarray]]:
        """One session run over the concatenated requests; per request, its rows of each
        output."""
        outputs = self.session.run(None, {self.input.name: np.concatenate(arrays)})
        bounds = np.cumsum([len(a) for a in arrays])[:-1]
        per_output = [np.split(out, bounds) for out in outputs]
        return [list(parts) for parts in zip(*per_output, strict=True)]

    async def predict(self, payload: Any, headers: dict | None = None,
                      response_headers: dict | None = None) -> InferResponse:
        if not isinstance(payload, InferRequest):
            raise InvalidInput(f"this model speaks the v2 protocol: POST /v2/models/{self.name}"
                               "/infer")
        spec = self.get_input_types()[0]
        found = [i for i in payload.inputs if i.name == spec["name"]]
        if len(found) != 1:
            raise InvalidInput(f"inputs: expected one input named {spec['name']!r}")
        if found[0].datatype != spec["datatype"]:
            raise InvalidInput(f"inputs.{spec['name']}: datatype {found[0].datatype}, the model "
                               f"takes {spec['datatype']}")
        array = found[0].as_numpy()
        want = spec["shape"]
        if array.ndim != len(want) or any(w not in (-1, g) for w, g in zip(want, array.shape,
                                                                           strict=True)):
            raise InvalidInput(f"inputs.{spec['name']}: shape {list(array.shape)}, the model "
                               f"takes {want} (-1: any)")
        if not 1 <= len(array) <= self.max_batch_size:
            raise InvalidInput(f"inputs.{spec['name']}: {len(array)} rows; at most "
                               f"{self.max_batch_size} (--max_batch_size) per request")
        assert self.batcher is not None
        outs = await self.batcher.submit(np.ascontiguousarray(array))
        infer_outputs = []
        for meta, out in zip(self.session.get_outputs(), outs, strict=True):
            o = InferOutput(meta.name, list(out.shape), _ONNX_TO_V2.get(meta.type, "FP32"))
            o.set_data_from_numpy(out, binary_data=False)
            infer_outputs.append(o)
        return InferResponse(response_id=payload.id or str(uuid.uuid4()), model_name=self.name,
                             infer_outputs=infer_outputs)


def main(argv: list[str] | None = None) -> None:
    p = server.parser("Serve an ONNX image model (workloads.vision.export) with KServe's "
                      "ModelServer and onnxruntime, batching concurrent requests.")
    p.add_argument("--ort_threads", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                   help="onnxruntime intra-op threads (default: half the cores)")
    # None: the config.pbtxt's values, else the parser's defaults.
    p.set_defaults(max_batch_size=None, max_batch_delay_ms=None)
    args = p.parse_args(argv)
    try:
        onnx_path, triton_name, settings = find_model(Path(args.model_dir))
    except (OSError, ValueError) as e:
        die(f"error: --model_dir: {e}")
    if args.max_batch_size is None:
        args.max_batch_size = settings.get("max_batch_size", 8)
    if args.max_batch_delay_ms is None:
        args.max_batch_delay_ms = settings.get("max_queue_delay_microseconds", 5000) / 1000
    server.check_batching(args)
    if args.ort_threads < 1:
        die(f"error: --ort_threads: must be >= 1, got {args.ort_threads}")
    name = args.model_name if args.model_name != "model" or not triton_name else triton_name
    model = OnnxModel(name, onnx_path, args.max_batch_size, args.max_batch_delay_ms / 1000,
                      args.ort_threads)
    try:
        model.load()
    except Exception as e:  # onnxruntime raises its own types for unreadable graphs
        die(f"error: --model_dir: {onnx_path}: {str(e).splitlines()[0]}")
    print(f"vision_server: {name} from {onnx_path} on http://{args.host}:{args.http_port} "
          f"(max batch {args.max_batch_size} rows, delay {args.max_batch_delay_ms:g} ms)",
          flush=True)
    server.serve([model], args.host, args.http_port)


if __name__ == "__main__":
    main()
