"""The step loop both trainers share: resume, step, agree, log, checkpoint, stop on SIGTERM.

A workload supplies one optimizer step (returning its metric tensors, unsynchronised) and a
function that logs a step from the all-reduced sums; ``train_loop`` does the rest and returns
the exit code (``workloads.common.cli``). Per step it runs one small all-reduce of
[metrics..., stop-requested, checkpoint-ready]: it sums the metrics across ranks and makes every
rank agree on *when* to stop and when an async checkpoint can be committed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol

import torch
import torch.distributed as dist

from workloads.common.checkpoint import CheckpointStore
from workloads.common.cli import EXIT_OK, EXIT_PREEMPTED
from workloads.common.config import RunConfig
from workloads.common.dist import DistInfo, print0
from workloads.common.metrics import MetricsLogger
from workloads.common.preemption import PreemptionFlag, maybe_inject_fault, record_exit


class State(Protocol):
    """A DCP ``Stateful`` that also carries the step count."""

    step: int

    def state_dict(self) -> dict: ...

    def load_state_dict(self, sd: dict) -> None: ...


def open_store(cfg: RunConfig, info: DistInfo, state: State, metrics: MetricsLogger,
               name: str) -> CheckpointStore | None:
    """The checkpoint store for ``--checkpoint-dir`` (None without one), resumed into ``state``."""
    if not cfg.checkpoint_dir:
        return None
    use_async = cfg.async_checkpoint
    if use_async is None:
        use_async = info.device.type == "cuda"
    # Checkpoint coordination gets its own gloo group: an async save's collectives run in a
    # background thread and must never interleave with training's on the same group.
    group = dist.new_group(backend="gloo") if info.distributed else None
    store = CheckpointStore(cfg.checkpoint_dir, info, cfg.keep_last, use_async, group)
    if store.load({"train": state}, log=print0) is not None:
        print0(f"{name}: resumed from {cfg.checkpoint_dir} at step {state.step}")
        metrics.event("resume", step=state.step)
    return store


def train_loop(cfg: RunConfig, info: DistInfo, state: State, metrics: MetricsLogger, name: str,
               step: Callable[[int], Sequence[torch.Tensor]],
               log: Callable[[int, list[float], float], None]) -> int:
    """Run ``step(n)`` for n = state.step + 1 .. cfg.max_steps; after each, ``log(n, sums, dt)``
    with the metric tensors summed over ranks, then checkpoint every ``checkpoint_every`` steps,
    at the last and on SIGTERM (then stop: ``EXIT_PREEMPTED``). Closes ``metrics``.

    Events carry ``save_s``: on ``checkpoint``, the seconds the loop was blocked by the save
    (the start of an async one); on ``preempted``, from the save's start until it was complete
    everywhere (manifest and marker written): what the Spot budget has to cover."""
    store = open_store(cfg, info, state, metrics, name)
    preempt = PreemptionFlag()
    code = EXIT_OK
    save_start = 0.0
    try:
        while state.step < cfg.max_steps:
            t0 = time.perf_counter()
            values = step(state.step + 1)
            state.step += 1
            ready = store.ready() if store else True
            device = values[0].device
            flags = torch.stack([*(v.float().to(device) for v in values),
                                 torch.tensor(float(preempt.requested), device=device),
                                 torch.tensor(float(ready), device=device)])
            if info.distributed:
                dist.all_reduce(flags)
            *sums, stop, n_ready = flags.tolist()
            dt = time.perf_counter() - t0
            maybe_inject_fault(state.step, info.rank, info.world_size, preempt)
            log(state.step, sums, dt)
            if store and n_ready == info.world_size:
                store.finalize()
            last = state.step == cfg.max_steps
            if store and (state.step % cfg.checkpoint_every == 0 or last or stop):
                save_start = time.perf_counter()
                store.save({"train": state}, state.step)
                metrics.event("checkpoint", step=state.step,
                              save_s=round(time.perf_counter() - save_start, 3))
            if stop:
                code = EXIT_PREEMPTED
                break
        if store:
            store.close()  # commits a pending (async) save: the checkpoint is complete after it
        if code == EXIT_PREEMPTED:
            print0(f"{name}: {preempt.signal_name or 'SIGTERM'} received: stopped after step "
                   f"{state.step}" + (", checkpoint saved" if store
                                      else ", no --checkpoint-dir to save to"))
            metrics.event("preempted", step=state.step, exit_code=EXIT_PREEMPTED,
                          save_s=round(time.perf_counter() - save_start, 3) if store else None)
            record_exit(EXIT_PREEMPTED, info.rank)
        else:
            metrics.event("done", step=state.step)
            print0(f"{name}: done at step {state.step}")
    finally:
        preempt.restore()
        metrics.close()
    return code
