"""Training metrics: one JSON object per step in a JSONL file, and a human progress line.

JSONL records (rank 0 only, flushed per line so a watcher can tail it)::

    {"step": 10, "loss": 5.418..., "lr": 0.003, "grad_norm": 1.2, "tokens": 10240,
     "tokens_per_s": 51234.5, "mfu": null, "elapsed_s": 1.9, "eta_s": 17.1}
    {"event": "resume", "step": 20}          # also: "checkpoint", "preempted", "done"

The unit of work is a constructor argument: ``tokens`` (the default, LLMs) or ``images``
(vision: ``images`` and ``images_per_s`` fields, ``img/s`` on the human line). A workload may add
its own fields to a step record (``extra``, e.g. vision's ``top1``).

``loss`` is written with full float precision (json uses repr), so two runs can be compared
exactly. The human line is printed every ``log_every`` steps; when stdout is a terminal a
one-line progress bar is redrawn in between (no tqdm dependency).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

UNITS = {"tokens": "tok", "images": "img"}
"""Unit of work -> its abbreviation on the progress line."""


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _fmt_rate(x: float) -> str:
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.1f}k" if x >= 1e3 else f"{x:.0f}"


class MetricsLogger:
    """Writes metrics on rank 0; every method is a no-op on other ranks."""

    def __init__(self, path: str | None, total_steps: int, is_main: bool, log_every: int = 10,
                 stream=None, unit: str = "tokens") -> None:
        if unit not in UNITS:
            raise ValueError(f"unit must be one of {', '.join(UNITS)}, got {unit!r}")
        self.total_steps, self.is_main, self.log_every = total_steps, is_main, log_every
        self.unit = unit
        self.stream = stream or sys.stdout
        self.tty = is_main and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.file = None
        if is_main and path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.file = open(path, "a", encoding="utf-8")
        self.start = time.perf_counter()
        self._step_time_ema: float | None = None
        self._window: list[tuple[float, float]] = []  # (work, seconds) since the last print

    def _write(self, record: dict) -> None:
        if self.file:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def event(self, kind: str, **fields: object) -> None:
        if self.is_main:
            self._write({"event": kind, **fields, "elapsed_s": time.perf_counter() - self.start,
                         "time": time.time()})

    def step(self, step: int, loss: float, lr: float, grad_norm: float, work: int,
             step_time: float, total_work: int, mfu: float | None,
             extra: dict | None = None) -> None:
        """``work``: tokens (or images) this step, all ranks; ``total_work``: since the start."""
        if not self.is_main:
            return
        ema = self._step_time_ema
        self._step_time_ema = step_time if ema is None else 0.9 * ema + 0.1 * step_time
        eta = self._step_time_ema * max(self.total_steps - step, 0)
        rate = work / step_time if step_time > 0 else 0.0
        elapsed = time.perf_counter() - self.start
        self._write({"step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm,
                     self.unit: total_work, f"{self.unit}_per_s": rate, "mfu": mfu,
                     **(extra or {}), "elapsed_s": elapsed, "eta_s": eta})
        self._window.append((work, step_time))
        if step % self.log_every == 0 or step == self.total_steps:
            done, secs = map(sum, zip(*self._window, strict=True))
            self._window.clear()
            mfu_s = f"{100 * mfu:.1f}%" if mfu is not None else "n/a"
            line = (f"step {step:>6}/{self.total_steps} | loss {loss:.4f} | lr {lr:.2e} | "
                    f"{_fmt_rate(done / secs if secs else 0.0)} {UNITS[self.unit]}/s | "
                    f"mfu {mfu_s} | "
                    f"elapsed {_fmt_duration(elapsed)} | eta {_fmt_duration(eta)}")
            self._print(line)
        elif self.tty:
            self._bar(step, loss, eta)

    def _bar(self, step: int, loss: float, eta: float) -> None:
        width = 30
        done = int(width * step / max(self.total_steps, 1))
        self.stream.write(f"\r[{'#' * done}{'.' * (width - done)}] {step}/{self.total_steps} "
                          f"loss {loss:.4f} eta {_fmt_duration(eta)}\x1b[K")
        self.stream.flush()

    def _print(self, line: str) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K")
        self.stream.write(line + "\n")
        self.stream.flush()

    def info(self, line: str) -> None:
        if self.is_main:
            self._print(line)

    def close(self) -> None:
        if self.file:
            self.file.close()
            self.file = None
