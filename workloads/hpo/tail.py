"""Reading a trial's metrics file (workloads/common/metrics.py's JSON lines) while it grows.

The objective comes from the ``eval`` events the trainer writes at each evaluation::

    {"event": "eval", "step": 20, "eval_loss": 3.1, "eval_perplexity": 22.2, ...}   # llm
    {"event": "eval", "step": 20, "eval_loss": 1.9, "eval_top1": 0.41, ...}         # vision

Step records (``{"step": 21, "loss": ...}``) say how far the trial got. A resumed trial drops
the records past its checkpoint and writes them again (``truncate_after``): the file shrinks, and
the tail starts over from the beginning (a step already reported is not reported twice).

    python -c "from workloads.hpo.tail import MetricsTail; t = MetricsTail('m.jsonl', \\
        'eval_loss'); print(t.poll(), t.last_step)"
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional


class MetricsTail:
    """New ``(step, value)`` evaluations of ``metric`` since the last ``poll``."""

    def __init__(self, path, metric: str) -> None:
        self.path, self.metric = Path(path), metric
        self.offset = 0
        self.last_step = 0
        """Highest training step seen in a step record."""
        self.evals: dict[int, float] = {}
        """Every evaluation read so far, by step."""
        self.done = False
        """The trainer wrote its ``done`` event."""

    def poll(self) -> list[tuple[int, float]]:
        """Evaluations that appeared since the last call, in file order."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return []
        if size < self.offset:  # truncated on resume: read it again
            self.offset = 0
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a torn last line waits for its newline
        self.offset += end
        new = []
        for line in data[:end].splitlines():
            value = self._record(line)
            if value is not None and value[0] not in self.evals:
                self.evals[value[0]] = value[1]
                new.append(value)
        return new

    def _record(self, line: bytes) -> Optional[tuple[int, float]]:
        try:
            rec = json.loads(line)
        except ValueError:
            return None
        if not isinstance(rec, dict):
            return None
        step = rec.get("step")
        if not isinstance(step, int):
            return None
        if rec.get("event") == "done":
            self.done = True
        if "event" not in rec:
            self.last_step = max(self.last_step, step)
            return None
        if rec.get("event") != "eval":
            return None
        value = rec.get(self.metric)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        # A diverged trial reports nan (or inf) as it is: the pruner stops a nan at once.
        return step, float(value)

    @property
    def last(self) -> Optional[tuple[int, float]]:
        """The latest evaluation (step, value), or None."""
        if not self.evals:
            return None
        step = max(self.evals)
        return step, self.evals[step]
