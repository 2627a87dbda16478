"""Dynamic batching for a model server: concurrent requests become one forward pass.

``DynamicBatcher.submit(item)`` queues one item and awaits its result. A single worker task takes
the first waiting item, then gathers more until ``max_batch_size`` is reached or ``max_delay_s``
has passed since the first one (size counts items, or rows with ``size_of``: a request of 4
images counts 4, as Triton's ``max_batch_size`` does; an item that would overflow the batch
starts the next one), runs ``run_batch(items)`` (a blocking function:
tokenize, pad, one ``generate`` / one ONNX session run, split) in a dedicated thread so the
event loop keeps accepting requests meanwhile, and hands each caller its own result. Requests
that arrive while a batch runs wait in the queue and form the next batch at once, so under load
batches fill without waiting for the delay. ``max_batch_size=1`` is "batching off": requests run
one at a time in arrival order, the baseline the benchmarks compare against.

The same policy as Triton's dynamic batcher (max queue delay, max batch size) and KServe's
``batcher`` (maxBatchSize, maxLatency), applied inside the predictor process.

Exported Prometheus series (KServe's ModelServer serves them at ``/metrics``), labelled by model:
``trainyard_serving_batch_size`` (histogram of the size of each batch run),
``trainyard_serving_queue_depth`` (requests waiting), ``trainyard_serving_batches_total`` and
``trainyard_serving_items_total`` (the sizes summed).
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge, Histogram

BATCH_SIZE = Histogram("trainyard_serving_batch_size", "Size of each batch the predictor ran",
                       ["model"], buckets=(1, 2, 4, 8, 16, 32, 64, 128))
QUEUE_DEPTH = Gauge("trainyard_serving_queue_depth", "Items waiting for a batch", ["model"])
BATCHES = PromCounter("trainyard_serving_batches", "Batches run", ["model"])
ITEMS = PromCounter("trainyard_serving_items", "Batch sizes summed (prompts or rows)", ["model"])


class DynamicBatcher:
    """Gathers items submitted concurrently into batches for ``run_batch``.

    ``run_batch(items) -> results`` must return one result per item, in order; if it raises,
    every caller in that batch gets the exception.
    """

    def __init__(self, run_batch: Callable[[list[Any]], Sequence[Any]], *, max_batch_size: int,
                 max_delay_s: float, name: str = "model",
                 size_of: Callable[[Any], int] | None = None) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size: must be >= 1, got {max_batch_size}")
        if max_delay_s < 0:
            raise ValueError(f"max_delay_s: must be >= 0, got {max_delay_s}")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.name = name
        self.size_of = size_of or (lambda item: 1)
        self._carry: tuple[Any, asyncio.Future] | None = None
        self.sizes: Counter[int] = Counter()
        """Batch size (``size_of`` summed) -> how many batches of that size ran."""
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        # One thread: one batch at a time, as one model instance runs on one device.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"batch-{name}")
        self._lock = threading.Lock()
        for metric in (BATCH_SIZE, QUEUE_DEPTH, BATCHES, ITEMS):  # series at 0 from the start
            metric.labels(name)

    async def submit(self, item: Any) -> Any:
        """Queue ``item``; return its result once its batch has run."""
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = loop.create_task(self._run())
        fut = loop.create_future()
        await self._queue.put((item, fut))
        QUEUE_DEPTH.labels(self.name).inc()
        return await fut

    def stats(self) -> dict[str, Any]:
        """Batches run, items, the largest batch and the size histogram (for tests and logs)."""
        with self._lock:
            sizes = dict(self.sizes)
        return {"batches": sum(sizes.values()), "items": sum(k * v for k, v in sizes.items()),
                "max_batch": max(sizes, default=0), "sizes": sizes}

    async def _gather(self) -> list[tuple[Any, asyncio.Future]]:
        assert self._queue is not None
        first, self._carry = self._carry or await self._queue.get(), None
        batch, size = [first], self.size_of(first[0])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_delay_s
        while size < self.max_batch_size:
            try:  # whatever is already waiting joins without delay
                entry = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    entry = await asyncio.wait_for(self._queue.get(), left)
                except TimeoutError:
                    break
            n = self.size_of(entry[0])
            if size + n > self.max_batch_size:
                self._carry = entry  # first of the next batch
                break
            batch.append(entry)
            size += n
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            QUEUE_DEPTH.labels(self.name).dec(len(batch))
            live = [(item, fut) for item, fut in batch if not fut.cancelled()]
            if not live:
                continue
            items = [item for item, _ in live]
            try:
                results = await loop.run_in_executor(self._pool, self.run_batch, items)
                if len(results) != len(items):
                    raise RuntimeError(f"run_batch returned {len(results)} results for "
                                       f"{len(items)} items")
            except Exception as e:  # noqa: BLE001 - every caller of the batch gets it
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            size = sum(self.size_of(item) for item in items)
            with self._lock:
                self.sizes[size] += 1
            BATCH_SIZE.labels(self.name).observe(size)
            BATCHES.labels(self.name).inc()
            ITEMS.labels(self.name).inc(size)
            for (_, fut), result in zip(live, results, strict=True):
                if not fut.done():
                    fut.set_result(result)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)
