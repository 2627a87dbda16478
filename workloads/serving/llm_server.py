"""Serve a Hugging Face Llama export on 127.0.0.1 with KServe's ModelServer, batching requests.

    python -m workloads.serving.llm_server --model_dir out/export --http_port 8080
    curl -s localhost:8080/v2/models/model/infer -d '{"inputs": [{"name": "text", "shape": [1],
      "datatype": "BYTES", "data": ["Once upon a time"]}], "parameters": {"max_new_tokens": 16}}'
    curl -s localhost:8080/openai/v1/completions -d '{"model": "model", "prompt": "Once upon",
      "max_tokens": 16, "temperature": 0}'
    trainyard serve bench --url http://127.0.0.1:8080 --protocol openai

Protocols:
- **Open Inference Protocol (KServe v2)**, KServe's own routes: ``/v2/health/ready``,
  ``/v2/models/NAME`` (metadata), ``POST /v2/models/NAME/infer`` with a BYTES input ``text``
  (one prompt per element) and parameters ``max_new_tokens`` (default 32), ``ignore_eos`` and
  ``return_token_ids``; outputs ``text`` (BYTES) and ``completion_tokens`` (INT64), one per
  prompt, and with ``return_token_ids`` also ``token_ids`` (INT64 [prompts, longest], padded
  with -1).
- **OpenAI completions** at ``POST /openai/v1/completions`` (and ``GET /openai/v1/models``), the
  path KServe's Hugging Face runtime uses (``KSERVE_OPENAI_ROUTE_PREFIX`` changes the prefix;
  set it to "" for ``/v1/completions``). kserve 0.16's own OpenAI routes and types import vLLM,
  which is not installed here, so this module adds the one route to KServe's FastAPI app itself.
  Decoding is greedy only: ``temperature`` must be 0 or absent (absent means greedy here, unlike
  OpenAI's default of 1); ``n`` > 1, ``stream``, ``logprobs`` and ``echo`` are refused with 400.

Every prompt, from either protocol, goes through one ``DynamicBatcher`` (batcher.py): concurrent
prompts are left-padded into one ``generate`` (llm.py). ``--max_batch_size 1`` turns it off.
Greedy decoding gives the same tokens as ``transformers``' ``generate(do_sample=False)`` and as
``python -m workloads.llm.generate --greedy`` on the same export (tests/workloads/
test_serving_local.py). Batch statistics are at ``/metrics`` (``trainyard_serving_*``).
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

import kserve
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
from pydantic import BaseModel, ConfigDict

from workloads.common.cli import die
from workloads.serving import server
from workloads.serving.batcher import DynamicBatcher
from workloads.serving.llm import GenRequest, GenResult, LlamaGenerator

DEFAULT_MAX_NEW_TOKENS = 32
MAX_NEW_TOKENS_CAP = 4096


def _int_param(params: dict, names: tuple[str, ...], default: int) -> int:
    for name in names:
        if name in params and params[name] is not None:
            value = params[name]
            if isinstance(value, bool) or not isinstance(value, int | float) or \
                    int(value) != value or not 1 <= int(value) <= MAX_NEW_TOKENS_CAP:
                raise InvalidInput(f"parameters.{name}: must be an integer in "
                                   f"1..{MAX_NEW_TOKENS_CAP}, got {value!r}")
            return int(value)
    return default


class LlamaModel(kserve.Model):
    """A KServe predictor for a Llama export: v2 ``text`` in, ``text`` out, batched."""

    def __init__(self, name: str, model_dir: str, max_batch_size: int, max_delay_s: float):
        super().__init__(name)
        self.model_dir = model_dir
        self.max_batch_size, self.max_delay_s = max_batch_size, max_delay_s
        self.generator: LlamaGenerator | None = None
        self.batcher: DynamicBatcher | None = None

    def load(self) -> bool:
        self.generator = LlamaGenerator(self.model_dir)
        self.batcher = DynamicBatcher(self.generator.generate, max_batch_size=self.max_batch_size,
                                      max_delay_s=self.max_delay_s, name=self.name)
        self.ready = True
        return self.ready

    def get_input_types(self) -> list[dict]:
        return [{"name": "text", "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self) -> list[dict]:
        return [{"name": "text", "datatype": "BYTES", "shape": [-1]},
                {"name": "completion_tokens", "datatype": "INT64", "shape": [-1]}]

    async def complete(self, prompts: list[str], max_new_tokens: int,
                       ignore_eos: bool) -> list[GenResult]:
        """Each prompt joins the shared batch queue on its own; results in prompt order.
        ValueError before anything is queued when a prompt cannot run."""
        import asyncio

        assert self.batcher is not None and self.generator is not None
        requests = [GenRequest(p, max_new_tokens, ignore_eos) for p in prompts]
        for r in requests:
            self.generator.check(r)
        return list(await asyncio.gather(*(self.batcher.submit(r) for r in requests)))

    async def predict(self, payload: Any, headers: dict | None = None,
                      response_headers: dict | None = None) -> InferResponse:
        if not isinstance(payload, InferRequest):
            raise InvalidInput("this model speaks the v2 protocol: POST /v2/models/"
                               f"{self.name}/infer with a BYTES input 'text'")
        texts = [i for i in payload.inputs if i.name == "text"]
        if len(texts) != 1 or texts[0].datatype != "BYTES":
            raise InvalidInput("inputs: expected one BYTES input named 'text'")
        prompts = [p.decode(errors="replace") if isinstance(p, bytes) else str(p)
                   for p in texts[0].as_numpy().reshape(-1).tolist()]
        if not prompts:
            raise InvalidInput("inputs.text: no prompts")
        params = payload.parameters or {}
        n = _int_param(params, ("max_new_tokens", "max_tokens"), DEFAULT_MAX_NEW_TOKENS)
        try:
            results = await self.complete(prompts, n, bool(params.get("ignore_eos", False)))
        except ValueError as e:
            raise InvalidInput(str(e)) from None
        outputs = [InferOutput("text", [len(results)], "BYTES", [r.text for r in results]),
                   InferOutput("completion_tokens", [len(results)], "INT64",
                               [len(r.token_ids) for r in results])]
        if params.get("return_token_ids"):  # [prompts, longest], right-padded with -1
            width = max(len(r.token_ids) for r in results)
            ids = [t for r in results for t in r.token_ids + [-1] * (width - len(r.token_ids))]
            outputs.append(InferOutput("token_ids", [len(results), width], "INT64", ids))
        return InferResponse(response_id=payload.id or str(uuid.uuid4()), model_name=self.name,
                             infer_outputs=outputs)


class CompletionBody(BaseModel):
    """The OpenAI completions request fields this server honours (others are ignored)."""

    model_config = ConfigDict(extra="ignore")
    model: str
    prompt: str | list[str]
    max_tokens: int = 16
    temperature: float | None = None
    n: int = 1
    stream: bool = False
    logprobs: int | None = None
    echo: bool = False
    ignore_eos: bool = False  # vLLM's extension: a fixed number of tokens (benchmarks)


def _openai_error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}},
                        status_code=status)


def openai_router(model: LlamaModel, prefix: str) -> APIRouter:
    """``POST {prefix}/v1/completions`` and ``GET {prefix}/v1/models`` for ``model``."""
    router = APIRouter()

    async def models() -> dict:
        return {"object": "list", "data": [{"id": model.name, "object": "model",
                                            "owned_by": "trainyard"}]}

    async def completions(body: CompletionBody):
        if body.model != model.name:
            return _openai_error(404, f"model {body.model!r} not found; this server has "
                                      f"{model.name!r}", "not_found_error")
        if body.temperature not in (None, 0, 0.0):
            return _openai_error(400, "temperature: this server decodes greedily; send 0")
        for field, bad in (("n", body.n != 1), ("stream", body.stream),
                           ("logprobs", body.logprobs is not None), ("echo", body.echo)):
            if bad:
                return _openai_error(400, f"{field}: not supported by this server")
        if not 1 <= body.max_tokens <= MAX_NEW_TOKENS_CAP:
            return _openai_error(400, f"max_tokens: must be in 1..{MAX_NEW_TOKENS_CAP}")
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not prompts:
            return _openai_error(400, "prompt: empty")
        try:
            results = await model.complete(prompts, body.max_tokens, body.ignore_eos)
        except ValueError as e:
            return _openai_error(400, str(e))
        prompt_tokens = sum(r.prompt_tokens for r in results)
        completion_tokens = sum(len(r.token_ids) for r in results)
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion",
                "created": int(time.time()), "model": model.name,
                "choices": [{"index": i, "text": r.text, "logprobs": None,
                             "finish_reason": r.finish_reason} for i, r in enumerate(results)],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}}

    router.add_api_route(f"{prefix}/v1/models", models, methods=["GET"])
    router.add_api_route(f"{prefix}/v1/completions", completions, methods=["POST"])
    return router


def openai_prefix() -> str:
    """KServe's route prefix convention: ``KSERVE_OPENAI_ROUTE_PREFIX``, default ``/openai``."""
    prefix = os.environ.get("KSERVE_OPENAI_ROUTE_PREFIX", "/openai").rstrip("/")
    return prefix if not prefix or prefix.startswith("/") else f"/{prefix}"


def main(argv: list[str] | None = None) -> None:
    p = server.parser("Serve a Hugging Face Llama export with KServe's ModelServer, batching "
                      "concurrent requests.")
    p.add_argument("--torch_threads", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                   help="torch intra-op threads (default: half the cores, leaving the rest to "
                        "the HTTP server; more threads than free cores is much slower)")
    args = p.parse_args(argv)
    if args.torch_threads < 1:
        die(f"error: --torch_threads: must be >= 1, got {args.torch_threads}")
    server.check_batching(args)
    model = LlamaModel(args.model_name, args.model_dir, args.max_batch_size,
                       args.max_batch_delay_ms / 1000)
    try:
        model.load()  # a missing config.json fails before torch is imported
    except (OSError, ValueError) as e:
        die(f"error: --model_dir: {str(e).splitlines()[0]}")
    import torch

    torch.set_num_threads(args.torch_threads)
    from kserve.model_server import app

    prefix = openai_prefix()
    app.include_router(openai_router(model, prefix))
    print(f"llm_server: {args.model_name} from {args.model_dir} on http://{args.host}:"
          f"{args.http_port} (max batch {args.max_batch_size}, delay "
          f"{args.max_batch_delay_ms:g} ms); v2 at /v2/models/{args.model_name}/infer, OpenAI "
          f"completions at {prefix}/v1/completions (this module's route: KServe's own OpenAI "
          "routes need vLLM)", flush=True)
    server.serve([model], args.host, args.http_port)


if __name__ == "__main__":
    main()
