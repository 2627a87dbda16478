"""The step loop both trainers share: resume, step, agree, log, evaluate, checkpoint, stop.

A workload supplies one optimizer step (returning its metric tensors, unsynchronised) and a
function that logs a step from the all-reduced sums; ``train_loop`` does the rest and returns
the exit code (``workloads.common.cli``).

No host syncs on ordinary steps (torchtitan's rule): the step's metric tensors stay on the
device, queued, and are all-reduced and read (``.tolist()``, the only GPU sync) at a *sync
point*: every ``log_every`` steps, at a checkpoint, an evaluation, the last step and a stop.
Then one record per queued step is written, so the metrics file still has every step; its
``tokens_per_s`` is the window's average. A non-finite loss or gradient norm found there stops
the run (``NonFiniteError``) before anything is saved: a checkpoint step is always a sync point,
so no NaN state can displace a good checkpoint.

What the ranks must agree on every step (a SIGTERM arrived somewhere; every rank's async
checkpoint is stored) travels without the GPU: a two-float gloo all-reduce on CPU tensors in
its own process group, started before the step's work is queued and read after it, so it
overlaps the step. A SIGTERM is acted on at the end of the step during which the next exchange
started: at worst the rest of the current step plus one more step, then the save (the same
bound as a per-step GPU all-reduce after the step, without its sync).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import torch
import torch.distributed as dist

from workloads.common.checkpoint import CheckpointStore
from workloads.common.cli import EXIT_OK, EXIT_PREEMPTED
from workloads.common.config import RunConfig
from workloads.common.dist import DistInfo, eprint0, print0
from workloads.common.metrics import MetricsLogger
from workloads.common.preemption import PreemptionFlag, maybe_inject_fault, record_exit

EXIT_FAILED = 1
"""A non-finite loss or gradient norm (the run's "anything else" code, with a one-line reason)."""


class State(Protocol):
    """A DCP ``Stateful`` that also carries the step count."""

    step: int

    def state_dict(self) -> dict: ...

    def load_state_dict(self, sd: dict) -> None: ...


class NonFiniteError(RuntimeError):
    """A step's loss or gradient norm was NaN or infinite (every rank sees the same sums)."""

    def __init__(self, step: int, what: str, value: float) -> None:
        super().__init__(f"non-finite {what} ({value}) at step {step}")
        self.step, self.what, self.value = step, what, value


def open_store(cfg: RunConfig, info: DistInfo, state: State, metrics: MetricsLogger,
               name: str, prepare: Callable[[CheckpointStore], None] | None = None
               ) -> CheckpointStore | None:
    """The checkpoint store for ``--checkpoint-dir`` (None without one), resumed into ``state``.
    ``prepare(store)`` runs before the resume (a workload's own checks and root files)."""
    if not cfg.checkpoint_dir:
        return None
    use_async = cfg.async_checkpoint
    if use_async is None:
        use_async = info.device.type == "cuda"
    # Checkpoint coordination gets its own gloo group: an async save's collectives run in a
    # background thread and must never interleave with training's on the same group.
    group = dist.new_group(backend="gloo") if info.distributed else None
    store = CheckpointStore(cfg.checkpoint_dir, info, cfg.keep_last, use_async, group)
    if prepare is not None:
        prepare(store)
    if store.load({"train": state}, log=print0) is not None:
        print0(f"{name}: resumed from {cfg.checkpoint_dir} at step {state.step}")
        dropped = metrics.truncate_after(state.step)
        metrics.event("resume", step=state.step, **({"dropped_records": dropped}
                                                    if dropped else {}))
    return store


class FlagExchange:
    """[stop requested, checkpoint share stored] summed over ranks: a gloo all-reduce of a CPU
    tensor on its own group (never a GPU sync), started with ``start`` and read with
    ``result``. Alone (one process) it is just the local flags."""

    def __init__(self, info: DistInfo) -> None:
        self.group = dist.new_group(backend="gloo") if info.distributed else None
        self.buf = torch.zeros(2)
        self.work = None

    def start(self, stop: bool, ready: bool) -> None:
        self.buf = torch.tensor([float(stop), float(ready)])
        if self.group is not None:
            self.work = dist.all_reduce(self.buf, group=self.group, async_op=True)

    def result(self) -> tuple[bool, int]:
        if self.work is not None:
            self.work.wait()
            self.work = None
        stop, ready = self.buf.tolist()
        return stop > 0, int(ready)


class Window:
    """Steps whose metric tensors wait for the next sync point."""

    def __init__(self, info: DistInfo, names: Sequence[str]) -> None:
        self.info, self.names = info, tuple(names)
        self.steps: list[int] = []
        self.values: list[torch.Tensor] = []
        self.t0 = time.perf_counter()

    def add(self, step: int, values: Sequence[torch.Tensor]) -> None:
        device = values[0].device
        self.steps.append(step)
        self.values.append(torch.stack([v.detach().float().to(device) for v in values]))

    def restart(self) -> None:
        self.t0 = time.perf_counter()

    def flush(self, log: Callable[[int, list[float], float], None]) -> None:
        """All-reduce (sum) the queued metrics, log one record per step; NonFiniteError at the
        first step with a NaN or infinite value (its record and the ones before it logged)."""
        if not self.steps:
            return
        sums = torch.stack(self.values)
        if self.info.distributed:
            dist.all_reduce(sums)
        rows = sums.tolist()  # the sync point
        dt = (time.perf_counter() - self.t0) / len(rows)
        steps = self.steps
        self.steps, self.values, self.t0 = [], [], time.perf_counter()
        for step, row in zip(steps, rows, strict=True):
            log(step, row, dt)
            for i, value in enumerate(row):
                if not math.isfinite(value):
                    what = self.names[i] if i < len(self.names) else f"metric {i}"
                    raise NonFiniteError(step, what, value)


def train_loop(cfg: RunConfig, info: DistInfo, state: State, metrics: MetricsLogger, name: str,
               step: Callable[[int], Sequence[torch.Tensor]],
               log: Callable[[int, list[float], float], None], *,
               metric_names: Sequence[str] = ("loss",),
               evaluate: Callable[[int], None] | None = None, eval_every: int = 0,
               prepare_store: Callable[[CheckpointStore], None] | None = None) -> int:
    """Run ``step(n)`` for n = state.step + 1 .. cfg.max_steps; at each sync point (module
    docstring) ``log(n, sums, dt)`` for every step since the last, with the metric tensors
    summed over ranks; ``evaluate(n)`` every ``eval_every`` steps (0: never) and at the last;
    checkpoint every ``checkpoint_every`` steps, at the last and on SIGTERM (then stop:
    ``EXIT_PREEMPTED``). A non-finite metric stops with ``EXIT_FAILED`` and one line on stderr,
    saving nothing. Closes ``metrics``.

    Events carry ``save_s``: on ``checkpoint``, the seconds the loop was blocked by the save
    (the start of an async one); on ``preempted``, from the save's start until it was complete
    everywhere (manifest and marker written): what the Spot budget has to cover."""
    store = open_store(cfg, info, state, metrics, name, prepare_store)
    preempt = PreemptionFlag()
    flags = FlagExchange(info)
    window = Window(info, metric_names)
    code = EXIT_OK
    save_start = 0.0
    try:
        while state.step < cfg.max_steps:
            flags.start(preempt.requested, store.ready() if store else True)
            values = step(state.step + 1)
            state.step += 1
            window.add(state.step, values)
            stop, n_ready = flags.result()
            maybe_inject_fault(state.step, info.rank, info.world_size, preempt)
            last = state.step == cfg.max_steps
            save = store is not None and (state.step % cfg.checkpoint_every == 0 or last or stop)
            run_eval = evaluate is not None and not stop and (
                last or (eval_every > 0 and state.step % eval_every == 0))
            if save or stop or last or run_eval or state.step % cfg.log_every == 0:
                window.flush(log)
            if store and n_ready == info.world_size:
                store.finalize()
            if run_eval:
                evaluate(state.step)
                metrics.sync()
            if save:
                save_start = time.perf_counter()
                store.save({"train": state}, state.step)
                metrics.event("checkpoint", step=state.step,
                              save_s=round(time.perf_counter() - save_start, 3))
                metrics.sync()
            if run_eval or save:
                window.restart()  # throughput counts training steps only
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
    except NonFiniteError as e:
        if store:
            store.close()  # a save still in flight holds a good state: commit it
        kept = store.latest_complete(log=lambda *_: None) if store and info.is_main else None
        metrics.event("non_finite", step=e.step, what=e.what)
        eprint0(f"{name}: error: {e}: stopped without saving it" +
                (f"; the newest checkpoint (step {kept}) is intact" if kept is not None else "") +
                "; lower --lr, raise --warmup-steps or --grad-clip, or check the data")
        code = EXIT_FAILED
    finally:
        preempt.restore()
        metrics.close()
    return code
