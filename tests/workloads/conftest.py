"""Fixtures for the workload tests: a shared data cache, subprocess runners, S3 on localhost.

S3 is moto's server on 127.0.0.1, reached through ``FlakyProxy``: a small HTTP proxy that
answers some requests with a transient failure (503 SlowDown, 500 InternalError, or a dropped
connection) instead of forwarding them, so the tests prove that botocore's retries absorb them.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY = ["--preset", "tiny", "--log-every", "10"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """TRAINYARD_CACHE for every run: the stdlib corpus is built here once."""
    path = tmp_path_factory.mktemp("trainyard-cache")
    from workloads.llm.prepare import build_default

    build_default(path / "data" / "stdlib-bytes")
    return path


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> Path:
    """A 200k-token slice of the stdlib corpus (quick to copy to S3)."""
    from workloads.llm.prepare import build_default

    out = tmp_path_factory.mktemp("data") / "small"
    build_default(out, max_tokens=200_000)
    return out


def base_env(cache_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "TRAINYARD_", "TORCHELASTIC_"))}
    env.update(PYTHONPATH=str(REPO), TRAINYARD_CACHE=str(cache_dir), OMP_NUM_THREADS="1",
               PYTHONDONTWRITEBYTECODE="1")
    env.update(extra)
    return env


def train_command(args: list[str], nproc: int = 0, max_restarts: int = 0,
                  launcher: str = "torch.distributed.run") -> list[str]:
    """``python -m workloads.llm.train ARGS``, or under torchrun with ``nproc`` workers
    (``launcher`` "workloads.common.launch": torchrun with the exit code a TrainJob sees)."""
    if nproc:
        return [sys.executable, "-m", launcher, "--standalone", f"--nproc-per-node={nproc}",
                f"--max-restarts={max_restarts}", "-m", "workloads.llm.train", *args]
    return [sys.executable, "-m", "workloads.llm.train", *args]


def run_train(args: list[str], env: dict[str, str], nproc: int = 0, max_restarts: int = 0,
              timeout: int = 120, launcher: str = "torch.distributed.run"
              ) -> subprocess.CompletedProcess:
    """Run ``train_command(...)`` to the end from the repository root."""
    return subprocess.run(train_command(args, nproc, max_restarts, launcher), env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def run_module(module: str, args: list[str], cache_dir: Path, timeout: int = 120,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m MODULE ARGS`` from the repository root, with ``base_env(cache_dir, **env)``."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, text=True,
                          capture_output=True, env=base_env(cache_dir, **(env or {})),
                          timeout=timeout)


NO_AWS_CREDENTIALS = {"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                      "AWS_EC2_METADATA_DISABLED": "true", "AWS_DEFAULT_REGION": "us-east-1"}
"""With ``base_env`` (which drops every AWS_ variable): botocore finds no credentials at all."""


def unwritable_dir(tmp_path: Path) -> Path:
    """A directory this process cannot create files in: a read-only tmp dir, or /sys for root
    (which writes through file modes); skips the test where neither is available."""
    import tempfile

    candidates = [Path("/sys")]
    if os.geteuid() != 0:
        ro = tmp_path / "read-only"
        ro.mkdir()
        ro.chmod(0o500)
        candidates.insert(0, ro)
    for d in candidates:
        try:
            with tempfile.TemporaryFile(dir=d):
                pass
        except OSError:
            return d
    pytest.skip("no unwritable directory on this machine")


def assert_config_error(proc: subprocess.CompletedProcess, flag: str, message: str) -> None:
    """Bad configuration: exit 2, one stderr line naming ``flag`` and ``message``, nothing else."""
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert flag in lines[0] and message in lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def read_metrics(path: Path) -> tuple[dict[int, dict], list[dict]]:
    """(last record per step, events) from a metrics JSONL file."""
    steps, events = {}, []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if "event" in rec:
            events.append(rec)
        else:
            steps[rec["step"]] = rec
    return steps, events


# ----- S3 on localhost -----
class FlakyProxy:
    """Forwards HTTP to ``upstream``; request number n (1-based) fails when n % every == 0,
    until ``max_failures`` failures were injected. Failures rotate through three kinds."""

    KINDS = ("503 SlowDown", "500 InternalError", "drop")

    def __init__(self, upstream_port: int, every: int = 4, max_failures: int = 6) -> None:
        self.upstream_port, self.every, self.max_failures = upstream_port, every, max_failures
        self.requests = self.failures = 0
        self.enabled = True
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _handle(self) -> None:
                body = self._body()
                kind = proxy._decide()
                if kind == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if kind:
                    status, code = kind.split(" ")
                    payload = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}"
                               f"</Code><Message>injected</Message></Error>").encode()
                    self.send_response(int(status))
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("transfer-encoding", "connection", "content-length")}
                headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length",
                                         "date", "server"):
                        self.send_header(k, v)
                length = resp.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _decide(self) -> str | None:
        with self.lock:
            self.requests += 1
            if (self.enabled and self.failures < self.max_failures
                    and self.requests % self.every == 0):
                self.failures += 1
                return self.KINDS[(self.failures - 1) % len(self.KINDS)]
        return None

    def reset(self, every: int = 4, max_failures: int = 6) -> None:
        with self.lock:
            self.every, self.max_failures = every, max_failures
            self.requests = self.failures = 0

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def moto_port():
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield port
    server.stop()


@pytest.fixture
def s3(moto_port, monkeypatch):
    """Env pointing boto3 at a flaky proxy in front of moto; yields (env dict, proxy, client)."""
    proxy = FlakyProxy(moto_port)
    env = {"AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{proxy.port}",
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull,
           "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true"}
    for k in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    import boto3

    direct = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{moto_port}")
    yield env, proxy, direct
    proxy.close()


@pytest.fixture(scope="session")
def wl():
    """Helpers for tests (a fixture, so no test imports conftest by module name)."""
    from types import SimpleNamespace

    return SimpleNamespace(run_train=run_train, train_command=train_command,
                           read_metrics=read_metrics, base_env=base_env,
                           run_module=run_module, assert_config_error=assert_config_error,
                           unwritable_dir=unwritable_dir, NO_AWS_CREDENTIALS=NO_AWS_CREDENTIALS,
                           TINY=TINY, REPO=REPO)
