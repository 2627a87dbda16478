"""`trainyard serve bench`: request building, statistics, and its bounds against a fake server.

The fake is a stdlib HTTP server on 127.0.0.1 that speaks just enough of the v2 protocol and
OpenAI completions, can answer slowly or with errors, and records what it received; the model
servers themselves are exercised in tests/workloads/test_serving_local.py.
"""

from __future__ import annotations

import argparse
import json
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from trainyard import serve_bench
from trainyard.errors import UsageError


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    serve_bench.add_arguments(p)
    return p.parse_args(list(argv))


class Fake:
    """v2 + OpenAI on a free port. ``delay`` seconds per infer; every ``fail_every``-th -> 500."""

    def __init__(self, inputs: list[dict], delay: float = 0.0, fail_every: int = 0) -> None:
        self.inputs, self.delay, self.fail_every = inputs, delay, fail_every
        self.bodies: list[tuple[dict, bytes]] = []
        self.in_flight = self.peak = 0
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, status: int, doc) -> None:
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path == "/v2/health/ready":
                    self._send(200, {"ready": True})
                elif self.path == "/v2/models":
                    self._send(200, {"models": ["m"]})
                elif self.path == "/v2/models/m":
                    self._send(200, {"name": "m", "inputs": fake.inputs})
                elif self.path == "/openai/v1/models":
                    self._send(200, {"data": [{"id": "m"}]})
                else:
                    self._send(404, {"error": "no"})

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with fake.lock:
                    fake.bodies.append((dict(self.headers), body))
                    n = len(fake.bodies)
                    fake.in_flight += 1
                    fake.peak = max(fake.peak, fake.in_flight)
                time.sleep(fake.delay)
                with fake.lock:
                    fake.in_flight -= 1
                if fake.fail_every and n % fake.fail_every == 0:
                    return self._send(500, {"error": "injected"})
                if self.path.endswith("/completions"):
                    return self._send(200, {"usage": {"completion_tokens": 4}})
                if fake.inputs[0]["datatype"] == "BYTES":  # a text model counts its tokens
                    return self._send(200, {"outputs": [{"name": "completion_tokens",
                                                         "data": [3]}]})
                self._send(200, {"outputs": [{"name": "probs", "data": [0.5]}]})

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):  # a client that gave up: fine
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


TEXT = [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
IMAGE = [{"name": "images", "datatype": "FP32", "shape": [-1, 3, 4, 4]}]


@pytest.fixture
def fake():
    made: list[Fake] = []

    def make(*a, **kw) -> Fake:
        made.append(Fake(*a, **kw))
        return made[-1]

    yield make
    for f in made:
        f.close()


def test_percentile_interpolates_like_numpy():
    assert serve_bench.percentile([], 50) is None
    assert serve_bench.percentile([5.0], 99) == 5.0
    values = [float(x) for x in range(1, 101)]
    assert serve_bench.percentile(values, 50) == pytest.approx(50.5)
    assert serve_bench.percentile(values, 99) == pytest.approx(99.01)


@pytest.mark.parametrize("argv, message", [
    (("--url", "localhost:8080"), "--url: expected http://HOST[:PORT]"),
    (("--url", "http://h:99999"), "--url: bad port"),
    (("--url", "http://h", "--concurrency", "1,x"), "--concurrency: expected comma-separated"),
    (("--url", "http://h", "--concurrency", "0"), "--concurrency: each level must be in"),
    (("--url", "http://h", "--requests", "0"), "--requests: must be >= 1"),
    (("--url", "http://h", "--timeout", "0"), "--timeout: must be > 0"),
])
def test_bad_flags_are_one_line_errors(argv, message):
    with pytest.raises(UsageError) as e:
        serve_bench.check_args(_args(*argv))
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_connection_refused_is_a_usage_error():
    import socket

    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UsageError, match=f"--url: cannot reach http://127.0.0.1:{port}"):
        serve_bench.run(_args("--url", f"http://127.0.0.1:{port}", "--requests", "1"))


def test_cli_connection_refused_is_one_line_exit_2(capsys):
    import socket

    from trainyard.cli import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["serve", "bench", "--url", f"http://127.0.0.1:{port}", "--requests", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --url: cannot reach http://127.0.0.1:{port}")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_request_bodies_per_protocol():
    base = "http://h"
    v2 = serve_bench.build_request(_args("--url", base, "--prompt", "hi", "--max-tokens", "7",
                                         "--ignore-eos"), base, "m", {"inputs": TEXT})
    doc = json.loads(v2.content)
    assert v2.url == "http://h/v2/models/m/infer"
    assert doc["inputs"] == [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hi"]}]
    assert doc["parameters"] == {"max_new_tokens": 7, "ignore_eos": True}

    tri = serve_bench.build_request(_args("--url", base, "--protocol", "triton", "--batch", "2"),
                                    base, "m", {"inputs": IMAGE})
    head_len = int(tri.headers["inference-header-content-length"])
    head = json.loads(tri.content[:head_len])
    blob = tri.content[head_len:]
    assert head["inputs"] == [{"name": "images", "shape": [2, 3, 4, 4], "datatype": "FP32",
                               "parameters": {"binary_data_size": 2 * 3 * 4 * 4 * 4}}]
    assert len(blob) == 384 and all(-1 <= v <= 1 for v in struct.unpack("<96f", blob))
    assert tri.items == 2

    oa = serve_bench.build_request(_args("--url", base, "--protocol", "openai"), base, "m", None)
    assert oa.url == "http://h/openai/v1/completions"
    assert json.loads(oa.content)["temperature"] == 0

    with pytest.raises(UsageError, match="--body: not JSON"):
        serve_bench.build_request(_args("--url", base, "--body", "{nope"), base, "m", None)
    with pytest.raises(UsageError, match="datatype 'BOOL' has no generated body"):
        serve_bench.build_request(_args("--url", base), base, "m",
                                  {"inputs": [{"name": "b", "datatype": "BOOL", "shape": [1]}]})


def test_levels_send_the_fixed_count_at_the_asked_concurrency(fake, tmp_path, capsys):
    server = fake(IMAGE, delay=0.05)
    out = tmp_path / "b.json"
    rc = serve_bench.run(_args("--url", server.url, "--concurrency", "1,4", "--requests", "8",
                               "--warmup", "1", "--batch", "3", "--json", str(out)))
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["model"] == "m"
    assert [(lv["concurrency"], lv["sent"], lv["ok"]) for lv in doc["levels"]] == [(1, 8, 8),
                                                                                   (4, 8, 8)]
    assert len(server.bodies) == 1 + 8 + 8 and server.peak == 4
    lv4 = doc["levels"][1]
    assert lv4["items_per_s"] == pytest.approx(3 * lv4["qps"])
    assert lv4["p50_ms"] >= 50 and lv4["p50_ms"] <= lv4["p95_ms"] <= lv4["p99_ms"]
    # the image body came from the metadata, with the -1 dimension set to --batch
    assert json.loads(server.bodies[-1][1])["inputs"][0]["shape"] == [3, 3, 4, 4]
    assert "items/s" in capsys.readouterr().out


def test_errors_and_timeouts_are_counted_and_the_level_stops_by_itself(fake):
    flaky = fake(TEXT, fail_every=3)
    rc = serve_bench.run(_args("--url", flaky.url, "--protocol", "openai", "--concurrency", "2",
                               "--requests", "9", "--warmup", "0"))
    assert rc == 0  # some answered
    slow = fake(TEXT, delay=2.0)
    t0 = time.monotonic()
    rc = serve_bench.run(_args("--url", slow.url, "--concurrency", "2", "--requests", "50",
                               "--duration", "0.2", "--timeout", "0.3", "--warmup", "0"))
    assert rc == 1  # nothing answered in time
    assert time.monotonic() - t0 < 5  # one duration + one timeout, not 50 requests x 2 s


def test_error_samples_and_counts_in_the_json(fake, tmp_path):
    flaky = fake(TEXT, fail_every=3)
    out = tmp_path / "b.json"
    serve_bench.run(_args("--url", flaky.url, "--concurrency", "1", "--requests", "9",
                          "--warmup", "0", "--json", str(out)))
    lv = json.loads(out.read_text())["levels"][0]
    assert (lv["sent"], lv["ok"], lv["errors"]) == (9, 6, 3)
    assert lv["error_samples"][0].startswith("HTTP 500")
    assert lv["tokens_per_s"] == pytest.approx(6 * 3 / lv["wall_s"])


def test_json_dash_prints_only_json(fake, capsys):
    server = fake(TEXT)
    assert serve_bench.run(_args("--url", server.url, "--concurrency", "2", "--requests", "3",
                                 "--warmup", "0", "--json", "-")) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["levels"][0]["ok"] == 3 and doc["levels"][0]["tokens_per_s"] > 0
