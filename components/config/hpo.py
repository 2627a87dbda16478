"""`trainyard:hpo`: the ceilings every hyperparameter search on the stack must stay under.

    trainyard:hpo:
      pools: [eval-spot, g-spot]   # training pools trials may use (default: all of them)
      maxGpuHours: 200             # per search: its budget.gpu_hours may not exceed this
      maxConcurrentTrials: 4
      maxTrials: 64

With the section present the stack creates, in every team namespace, the `hpo` service account
and the Role the search controller needs (components/services/hpo.py); `trainyard hpo render`
checks each spec's budget against these ceilings (docs/hpo.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

from components.config.reader import Reader
from components.config.types import GpuPoolConfig, HpoConfig


def parse_hpo(r: Reader, pools: Optional[Sequence[GpuPoolConfig]]) -> HpoConfig:
    """`pools` None: the pools did not parse, so names are not checked here."""
    if not r.raw:
        r.finish()
        return HpoConfig()
    training = [p.name for p in pools or () if p.purpose == "training"]

    def pool_check(value: str) -> Optional[str]:
        if pools is None or value in training:
            return None
        return f"is not a training pool of this stack ({', '.join(training) or 'none'})"

    config = HpoConfig(
        enabled=r.bool("enabled", True),
        pools=r.str_list("pools", tuple(training), check=pool_check),
        max_gpu_hours=r.int("maxGpuHours", 100, min=1, max=100_000),
        max_concurrent_trials=r.int("maxConcurrentTrials", 4, min=1, max=256),
        max_trials=r.int("maxTrials", 64, min=1, max=10_000))
    r.finish()
    return config
