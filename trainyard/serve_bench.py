"""`trainyard serve bench --url URL`: a bounded load test of a model server.

At each concurrency level (default 1, 4, 16) that many clients send requests back to back (a
closed loop) until the level's request count is reached or its time is up, whichever comes
first; each request has its own deadline, so a level ends within its duration plus one request
timeout and the command always stops by itself. Per level: p50/p95/p99 latency of the answered
requests, QPS, tokens/s (completions: the server's own count) or items/s (tensor inputs: rows of
the first input), and errors (HTTP status, timeout or connection failure, with a sample), as a
table and, with ``--json FILE``, as JSON.

Protocols (``--protocol``):
- ``v2``: the Open Inference Protocol (KServe v2) with JSON tensors, POST /v2/models/M/infer.
- ``triton``: the same protocol with Triton's binary tensor extension (tensor bytes after the
  JSON header, ``Inference-Header-Content-Length``), as Triton's clients send image batches;
  KServe's ModelServer accepts it too.
- ``openai``: POST {prefix}/v1/completions (prefix ``/openai``, KServe's; ``--path`` overrides).

The request body is built from the model's v2 metadata (GET /v2/models/M): a BYTES input gets
``--prompt`` with ``max_new_tokens``, a numeric tensor gets seeded random data of its shape with
-1 dimensions set to ``--batch``. ``--body`` (JSON, or @FILE) replaces it; the model name is asked
from the server when ``--model`` is not given.

The client is httpx (asyncio, one keep-alive connection per client, per-phase timeouts and
typed connect errors); one process drives every level, so on a small machine the client's own
CPU use is part of what is measured: run it beside, not on, the server where that matters.

    trainyard serve bench --url http://127.0.0.1:8080 --protocol openai --max-tokens 16
    trainyard serve bench --url http://127.0.0.1:8081 --protocol triton --batch 8 --json b.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import struct
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit

from trainyard import outfile
from trainyard.errors import UsageError

PROTOCOLS = ("v2", "triton", "openai")
DEFAULT_PROMPT = "The platform trains the model, then serves it:"
# (struct code, bytes) per v2 datatype the generated bodies support.
_PACK = {"FP32": ("f", 4), "FP64": ("d", 8), "FP16": ("e", 2), "INT64": ("q", 8),
         "INT32": ("i", 4), "INT8": ("b", 1), "UINT8": ("B", 1)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--protocol", choices=PROTOCOLS, default="v2",
                   help="v2 (JSON tensors), triton (v2 + binary tensors) or openai (default v2)")
    p.add_argument("--model", help="model name (default: the server's first model)")
    p.add_argument("--concurrency", default="1,4,16",
                   help="comma-separated client counts, one level each (default 1,4,16)")
    p.add_argument("--requests", type=int, default=64,
                   help="requests per level (default 64)")
    p.add_argument("--duration", type=float, default=60.0,
                   help="most seconds a level sends new requests (default 60)")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds one request may take before it counts as an error (default 30)")
    p.add_argument("--warmup", type=int, default=2,
                   help="untimed requests before the first level (default 2)")
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help="prompt for text models")
    p.add_argument("--max-tokens", type=int, default=16,
                   help="tokens to generate per text request (default 16)")
    p.add_argument("--ignore-eos", action="store_true",
                   help="ask the server for exactly --max-tokens tokens (vLLM's and this "
                        "project's servers honour it)")
    p.add_argument("--batch", type=int, default=1,
                   help="rows per request for tensor inputs (the -1 dimension; default 1)")
    p.add_argument("--body", help="request body instead of the generated one: JSON or @FILE")
    p.add_argument("--path", help="request path instead of the protocol's")
    p.add_argument("--json", type=Path, metavar="FILE",
                   help="also write the results as JSON ('-': JSON on stdout instead of the table)")


@dataclass
class Request:
    """One prepared request, sent unchanged every time."""

    url: str
    content: bytes
    headers: dict[str, str]
    items: int
    """Rows (or prompts) per request, for items/s."""


@dataclass
class Level:
    """What one concurrency level measured."""

    concurrency: int
    sent: int = 0
    ok: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    p50_ms: Optional[float] = None
    p95_ms: Optional[float] = None
    p99_ms: Optional[float] = None
    mean_ms: Optional[float] = None
    qps: float = 0.0
    tokens_per_s: Optional[float] = None
    items_per_s: float = 0.0


def parse_levels(text: str) -> list[int]:
    try:
        levels = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--concurrency: expected comma-separated integers, got {text!r}") from None
    if not levels or any(c < 1 or c > 1024 for c in levels):
        raise UsageError(f"--concurrency: each level must be in 1..1024, got {text!r}")
    return levels


def percentile(sorted_values: list[float], q: float) -> Optional[float]:
    """Linear interpolation between closest ranks (numpy's default); None when empty."""
    if not sorted_values:
        return None
    pos = (len(sorted_values) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def check_args(args: argparse.Namespace) -> tuple[str, list[int]]:
    parts = urlsplit(args.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--url: expected http://HOST[:PORT], got {args.url!r}")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise UsageError(f"--url: bad port in {args.url!r}") from None
    for flag, value, low in (("--requests", args.requests, 1), ("--max-tokens", args.max_tokens, 1),
                             ("--batch", args.batch, 1), ("--warmup", args.warmup, 0)):
        if value < low:
            raise UsageError(f"{flag}: must be >= {low}, got {value}")
    for flag, value in (("--duration", args.duration), ("--timeout", args.timeout)):
        if not value > 0:
            raise UsageError(f"{flag}: must be > 0, got {value}")
    outfile.check_writable(args.json)
    return args.url.rstrip("/"), parse_levels(args.concurrency)


def _user_body(spec: str) -> bytes:
    text = spec
    if spec.startswith("@"):
        try:
            text = Path(spec[1:]).read_text()
        except OSError as e:
            raise UsageError(f"--body: cannot read {spec[1:]}: {e.strerror or e}") from None
    try:
        json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"--body: not JSON ({e.msg} at line {e.lineno})") from None
    return text.encode()


def _tensor(spec: dict, batch: int, rng: random.Random, args) -> tuple[dict, list, int]:
    """(input header, values, rows) for one metadata input."""
    dtype = str(spec.get("datatype", "")).upper()
    shape = [batch if int(d) < 0 else int(d) for d in spec.get("shape", [])]
    if dtype == "BYTES":
        rows = shape[0] if shape else 1
        return {"name": spec["name"], "shape": [rows], "datatype": dtype}, [args.prompt] * rows, rows
    if dtype not in _PACK:
        raise UsageError(f"input {spec.get('name')!r}: datatype {dtype!r} has no generated body; "
                         "pass --body")
    n = math.prod(shape)
    if dtype.startswith("FP"):
        values = [rng.uniform(-1, 1) for _ in range(n)]
    else:
        values = [rng.randrange(0, 100) for _ in range(n)]
    return {"name": spec["name"], "shape": shape, "datatype": dtype}, values, (shape or [1])[0]


def build_request(args, base: str, model: str, metadata: Optional[dict]) -> Request:
    """The request every client sends, for the protocol, metadata and flags."""
    if args.protocol == "openai":
        path = args.path or "/openai/v1/completions"
        body = {"model": model, "prompt": args.prompt, "max_tokens": args.max_tokens,
                "temperature": 0}
        if args.ignore_eos:
            body["ignore_eos"] = True
        content = _user_body(args.body) if args.body else json.dumps(body).encode()
        return Request(base + path, content, {"content-type": "application/json"}, 1)
    path = args.path or f"/v2/models/{model}/infer"
    if args.body:
        return Request(base + path, _user_body(args.body), {"content-type": "application/json"}, 1)
    inputs = (metadata or {}).get("inputs") or [{"name": "text", "datatype": "BYTES",
                                                 "shape": [-1]}]
    rng = random.Random(0)
    tensors = [_tensor(spec, args.batch, rng, args) for spec in inputs]
    header: dict[str, Any] = {"inputs": []}
    if any(h["datatype"] == "BYTES" for h, _, _ in tensors):
        header["parameters"] = {"max_new_tokens": args.max_tokens}
        if args.ignore_eos:
            header["parameters"]["ignore_eos"] = True
    rows = tensors[0][2]
    if args.protocol == "v2":
        for h, values, _ in tensors:
            header["inputs"].append({**h, "data": values})
        return Request(base + path, json.dumps(header).encode(),
                       {"content-type": "application/json"}, rows)
    blobs = []
    for h, values, _ in tensors:  # Triton's binary tensor extension
        if h["datatype"] == "BYTES":
            blob = b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)
        else:
            code, _size = _PACK[h["datatype"]]
            blob = struct.pack(f"<{len(values)}{code}", *values)
        header["inputs"].append({**h, "parameters": {"binary_data_size": len(blob)}})
        blobs.append(blob)
    head = json.dumps(header).encode()
    return Request(base + path, head + b"".join(blobs),
                   {"content-type": "application/octet-stream",
                    "inference-header-content-length": str(len(head))}, rows)


def _tokens(protocol: str, payload: Any) -> int:
    """Generated tokens the server reports in one response (0 when it reports none)."""
    try:
        if protocol == "openai":
            return int(payload["usage"]["completion_tokens"])
        for out in payload.get("outputs", []):
            if out.get("name") == "completion_tokens":
                return int(sum(out.get("data", [])))
    except (KeyError, TypeError, ValueError, AttributeError):
        pass
    return 0


async def _send(client, req: Request, protocol: str, timeout: float) -> tuple[Optional[str], int]:
    """(error or None, tokens) for one request, within `timeout` seconds in all."""
    import httpx

    try:
        r = await asyncio.wait_for(client.post(req.url, content=req.content, headers=req.headers),
                                   timeout)
    except (TimeoutError, httpx.TimeoutException):
        return f"timeout after {timeout:g} s", 0
    except httpx.HTTPError as e:
        return f"{type(e).__name__}: {e}", 0
    if r.status_code != 200:
        return f"HTTP {r.status_code}: {r.text[:200]}", 0
    try:
        return None, _tokens(protocol, r.json())
    except ValueError:
        return None, 0  # a binary response: answered, no token count


async def run_level(client, req: Request, protocol: str, concurrency: int, requests: int,
                    duration: float, timeout: float) -> Level:
    level, latencies, tokens = Level(concurrency), [], 0
    start = time.perf_counter()
    deadline = start + duration

    async def client_loop() -> None:
        nonlocal tokens
        while level.sent < requests and time.perf_counter() < deadline:
            level.sent += 1
            t0 = time.perf_counter()
            error, n = await _send(client, req, protocol, timeout)
            if error is None:
                latencies.append(time.perf_counter() - t0)
                tokens += n
            else:
                level.errors += 1
                if len(level.error_samples) < 3:
                    level.error_samples.append(error)

    await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    level.wall_s = time.perf_counter() - start
    level.ok = len(latencies)
    latencies.sort()
    ms = [x * 1000 for x in latencies]
    level.p50_ms, level.p95_ms, level.p99_ms = (percentile(ms, q) for q in (50, 95, 99))
    level.mean_ms = sum(ms) / len(ms) if ms else None
    level.qps = level.ok / level.wall_s if level.wall_s > 0 else 0.0
    level.items_per_s = level.qps * req.items
    level.tokens_per_s = tokens / level.wall_s if tokens and level.wall_s > 0 else None
    return level


async def _probe(client, base: str, args) -> str:
    """Fails with one line when the server cannot be reached; returns the model name."""
    import httpx

    path = (args.path or "/openai/v1/completions").rsplit("/", 1)[0] + "/models" \
        if args.protocol == "openai" else "/v2/health/ready"
    try:
        r = await client.get(base + path, timeout=min(args.timeout, 10))
    except httpx.HTTPError as e:
        reason = str(e) or type(e).__name__
        raise UsageError(f"--url: cannot reach {base}: {reason}") from None
    if r.status_code != 200:
        raise UsageError(f"--url: {base}{path} answered HTTP {r.status_code}: not ready")
    if args.model:
        return args.model
    names: list[str] = []
    try:
        if args.protocol == "openai":
            names = [m["id"] for m in r.json().get("data", [])]
        else:
            listing = await client.get(base + "/v2/models")  # KServe
            if listing.status_code == 200:
                names = list(listing.json().get("models", []))
            else:
                index = await client.post(base + "/v2/repository/index", json={})  # Triton
                if index.status_code == 200:
                    names = [m["name"] for m in index.json() if m.get("state", "READY") == "READY"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError):
        names = []
    if not names:
        raise UsageError(f"--model: {base} does not list its models; pass --model NAME")
    return names[0]


async def bench(args, base: str, levels: list[int]) -> tuple[str, list[Level]]:
    import httpx

    limits = httpx.Limits(max_connections=max(levels), max_keepalive_connections=max(levels))
    timeout = httpx.Timeout(args.timeout, connect=min(args.timeout, 10))
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        model = await _probe(client, base, args)
        metadata = None
        if args.protocol != "openai" and not args.body:
            r = await client.get(f"{base}/v2/models/{model}")
            if r.status_code != 200:
                raise UsageError(f"--model: {base}/v2/models/{model} answered HTTP "
                                 f"{r.status_code}: {r.text[:120]}")
            metadata = r.json()
        req = build_request(args, base, model, metadata)
        for _ in range(args.warmup):
            error, _n = await _send(client, req, args.protocol, args.timeout)
            if error is not None:
                raise UsageError(f"warm-up request to {req.url} failed: {error}")
        results = []
        for c in levels:
            results.append(await run_level(client, req, args.protocol, c, args.requests,
                                           args.duration, args.timeout))
        return model, results


def _fmt(value: Optional[float], digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def render(base: str, protocol: str, model: str, args, levels: list[Level]) -> list[str]:
    rate = "tokens/s" if any(lv.tokens_per_s for lv in levels) else "items/s"
    rows = [("concurrency", "requests", "ok", "errors", "p50 ms", "p95 ms", "p99 ms", "QPS", rate)]
    for lv in levels:
        rows.append((str(lv.concurrency), str(lv.sent), str(lv.ok), str(lv.errors),
                     _fmt(lv.p50_ms), _fmt(lv.p95_ms), _fmt(lv.p99_ms), _fmt(lv.qps, 2),
                     _fmt(lv.tokens_per_s if rate == "tokens/s" else lv.items_per_s, 1)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"serve bench: {base} ({protocol}, model {model!r}; at most {args.requests} "
             f"requests or {args.duration:g} s per level, {args.timeout:g} s per request)"]
    lines += ["  " + "  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    for lv in levels:
        for sample in lv.error_samples:
            lines.append(f"  errors at concurrency {lv.concurrency}: {sample}")
    return lines


def run(args: argparse.Namespace) -> int:
    base, levels = check_args(args)
    try:
        import httpx  # noqa: F401
    except ModuleNotFoundError:
        raise UsageError("serve bench needs httpx: pip install -e '.[dev]'") from None
    model, results = asyncio.run(bench(args, base, levels))
    to_stdout = args.json is not None and str(args.json) == outfile.STDOUT
    if not to_stdout:
        print("\n".join(render(base, args.protocol, model, args, results)))
    if args.json is not None:
        doc = {"url": base, "protocol": args.protocol, "model": model,
               "requests_per_level": args.requests, "duration_s": args.duration,
               "timeout_s": args.timeout, "levels": [asdict(lv) for lv in results]}
        text = json.dumps(doc, indent=1) + "\n"
        if to_stdout:
            print(text, end="")
        else:
            outfile.write(args.json, text)
    return 1 if all(lv.ok == 0 for lv in results) else 0
