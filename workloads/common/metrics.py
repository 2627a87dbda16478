"""Training metrics: one JSON object per step in a JSONL file, and a human progress line.

JSONL records (rank 0 only, flushed per line so a watcher can tail it)::

    {"step": 10, "loss": 5.418..., "lr": 0.003, "grad_norm": 1.2, "tokens": 10240,
     "tokens_per_s": 51234.5, "mfu": null, "elapsed_s": 1.9, "eta_s": 17.1}
    {"event": "resume", "step": 20}          # also: "checkpoint", "preempted", "done"
    {"event": "eval", "step": 200, "eval_loss": 2.1, "eval_perplexity": 8.2, "eval_tokens": ...,
     "eval_s": 0.4}

After an evaluation every step record carries its ``eval_loss``, ``eval_perplexity`` and
``eval_step``: the Prometheus sidecar (components/data/monitoring/train-metrics-exporter.yaml)
serves the newest step record, so the held-out figures reach it there.

On resume (``truncate_after``) records past the resumed step are dropped from the file: they
belong to the steps the run is about to redo, so the file never holds a step twice.

``tensorboard_dir`` (optional; a directory or ``s3://``): the same figures as TensorBoard
scalars (``train/*``, ``eval/*``), written locally and uploaded by ``sync()`` (the loop calls it
at each evaluation and checkpoint, and at the end).

The unit of work is a constructor argument: ``tokens`` (the default, LLMs) or ``images``
(vision: ``images`` and ``images_per_s`` fields, ``img/s`` on the human line). A workload may add
its own fields to a step record (``extra``, e.g. vision's ``top1``).

``loss`` is written with full float precision (json uses repr), so two runs can be compared
exactly. The human line is printed every ``log_every`` steps; when stdout is a terminal a
one-line progress bar is redrawn in between (no tqdm dependency).
"""

from __future__ import annotations

import json
import math
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
                 stream=None, unit: str = "tokens", tensorboard_dir: str | None = None) -> None:
        if unit not in UNITS:
            raise ValueError(f"unit must be one of {', '.join(UNITS)}, got {unit!r}")
        self.total_steps, self.is_main, self.log_every = total_steps, is_main, log_every
        self.unit = unit
        self.stream = stream or sys.stdout
        self.tty = is_main and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.file = None
        self.path = path
        if is_main and path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.file = open(path, "a", encoding="utf-8")
        self.last_eval: dict = {}
        self.tb = TensorBoard(tensorboard_dir) if is_main and tensorboard_dir else None
        self.start = time.perf_counter()
        self._step_time_ema: float | None = None
        self._window: list[tuple[float, float]] = []  # (work, seconds) since the last print

    def _write(self, record: dict) -> None:
        if self.file:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def truncate_after(self, step: int) -> int:
        """Drop records (steps and events) past ``step``, and any torn last line; returns how
        many were dropped. Called on resume, before the resume event."""
        if not self.file:
            return 0
        self.file.close()
        path = Path(self.path)
        kept, dropped = [], 0
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                dropped += 1
                continue
            if isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] > step:
                dropped += 1
                continue
            kept.append(line)
        if dropped:
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text("".join(x + "\n" for x in kept), encoding="utf-8")
            tmp.replace(path)
        self.file = open(path, "a", encoding="utf-8")
        return dropped

    def eval(self, step: int, loss: float, tokens: int, seconds: float) -> None:
        """An evaluation's mean held-out loss (all ranks) and its perplexity."""
        if not self.is_main:
            return
        ppl = math.exp(loss) if loss < 700 else math.inf
        self.last_eval = {"eval_loss": loss, "eval_perplexity": ppl, "eval_step": step}
        self.event("eval", step=step, eval_loss=loss, eval_perplexity=ppl, eval_tokens=tokens,
                   eval_s=round(seconds, 3))
        self._print(f"eval   {step:>6}/{self.total_steps} | loss {loss:.4f} | perplexity "
                    f"{ppl:.2f} | {tokens:,} tokens in {seconds:.2f} s")
        if self.tb:
            self.tb.scalars(step, {"eval/loss": loss, "eval/perplexity": ppl})

    def sync(self) -> None:
        """Flush TensorBoard's files and upload them when the directory is on S3."""
        if self.tb:
            self.tb.sync()

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
                     **(extra or {}), **self.last_eval, "elapsed_s": elapsed, "eta_s": eta})
        if self.tb:
            self.tb.scalars(step, {"train/loss": loss, "train/lr": lr, "train/grad_norm": grad_norm,
                                   f"train/{self.unit}_per_s": rate,
                                   **({"train/mfu": mfu} if mfu is not None else {}),
                                   **{f"train/{k}": v for k, v in (extra or {}).items()
                                      if isinstance(v, (int, float))}})
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
        if self.tb:
            self.tb.close()
            self.tb = None


class TensorBoard:
    """A ``SummaryWriter`` on a local directory; for ``s3://`` a local staging directory
    under the cache whose files ``sync`` uploads (event files only grow: each upload replaces
    the object with the longer file)."""

    def __init__(self, where: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.where = where
        self.bucket = None
        if where.startswith("s3://"):
            from workloads.common import s3 as s3util
            from workloads.common.checkpoint import cache_root
            from workloads.common.cli import parse_s3_url

            self.bucket, self.prefix = parse_s3_url(where, "--tensorboard-dir")
            self.client = s3util.s3_client()
            self.local = cache_root() / "tensorboard" / self.bucket / self.prefix
        else:
            self.local = Path(where)
        self.local.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(str(self.local))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            if math.isfinite(value):
                self.writer.add_scalar(tag, value, step)

    def sync(self) -> None:
        self.writer.flush()
        if self.bucket is not None:
            from workloads.common import s3 as s3util

            files = sorted(p.name for p in self.local.iterdir() if p.is_file())
            s3util.upload_dir(self.client, self.local, self.bucket, self.prefix, files)

    def close(self) -> None:
        self.sync()
        self.writer.close()
