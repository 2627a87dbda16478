"""What the local model servers share: KServe's ModelServer bound to one address, the flags.

KServe's ``ModelServer`` (the Python SDK a custom predictor deploys with) binds its REST server to
0.0.0.0 in kserve 0.16; a server on a laptop or CI runner should listen on 127.0.0.1 unless told
otherwise, so ``serve`` starts the same ``RESTServer`` (v1/v2 routes, /metrics, health) with
the host set. gRPC is off (REST only: nothing here needs a second port).

Flags: KServe's own (``--http_port``, ``--model_name``, ...) from ``kserve.model_server.parser``,
plus ``--model_dir``, ``--host``, ``--max_batch_size`` and
``--max_batch_delay_ms``; underscores, as KServe's custom predictors spell their flags.
"""

from __future__ import annotations

import argparse
import asyncio

from workloads.common.cli import ArgumentParser, die


def parser(description: str) -> argparse.ArgumentParser:
    """KServe's ModelServer flags plus the ones every local server here takes."""
    from kserve import model_server

    p = ArgumentParser(description=description, parents=[model_server.parser])
    p.add_argument("--model_dir", required=True, help="the export directory to serve")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; 0.0.0.0 in a container)")
    p.add_argument("--max_batch_size", type=int, default=8,
                   help="most requests run as one batch; 1 turns batching off (default 8)")
    p.add_argument("--max_batch_delay_ms", type=float, default=5.0,
                   help="longest wait for more requests after the first (default 5 ms)")
    return p


def check_batching(args: argparse.Namespace) -> None:
    """Exit 2 with one line on a bad batching flag."""
    if args.max_batch_size < 1:
        die(f"error: --max_batch_size: must be >= 1, got {args.max_batch_size}")
    if not 0 <= args.max_batch_delay_ms <= 10_000:
        die(f"error: --max_batch_delay_ms: must be in [0, 10000], got {args.max_batch_delay_ms}")
    if not 0 < args.http_port < 65536:
        die(f"error: --http_port: must be in 1..65535, got {args.http_port}")


def serve(models: list, host: str, port: int) -> None:
    """Run KServe's REST ModelServer for ``models`` on ``host:port`` until SIGTERM/SIGINT."""
    from kserve import ModelServer
    from kserve.model_server import FASTAPI_APP_IMPORT_STRING
    from kserve.protocol.rest.server import RESTServer

    class _BoundModelServer(ModelServer):
        def start(self, models: list) -> None:
            self._register_and_check_atleast_one_model_is_ready(models)
            self._rest_server = RESTServer(
                FASTAPI_APP_IMPORT_STRING, self.dataplane, self.model_repository_extension,
                self.http_port, access_log_format=self.access_log_format, workers=1,
                grace_period=self.grace_period)
            # uvicorn reads its Config when it starts serving, so the bind address can be set
            # here; everything else (routes, handlers, metrics) is KServe's own.
            self._rest_server.config.host = host
            self.servers.append(self._rest_server.start())
            self.setup_event_loop()
            self.register_signal_handler()
            asyncio.run(self._serve())

        def stop(self, sig: int) -> None:
            # KServe's handler schedules its shutdown on a loop; once uvicorn has returned
            # there is none left, so the models are only unloaded.
            for name in list(self.registered_models.get_models()):
                self.registered_models.unload(name)

    _BoundModelServer(http_port=port, enable_grpc=False, workers=1, grace_period=5).start(models)
