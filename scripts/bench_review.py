"""Whole-process time of `trainyard review` over every stack (what a PR check waits for).

    python scripts/bench_review.py                          # HEAD~1 vs HEAD, 3 runs
    python scripts/bench_review.py --base origin/main --head HEAD --runs 5 --jobs 2

Each run is `python -m trainyard review --base B --head H --stacks S --format json --no-reuse`:
both refs are checked out into worktrees and every stack is planned at both, even where no
plan-relevant file differs (the worst case), then checked and priced with the head's code.
Prints one JSON line: min / median / max wall seconds, the stacks, the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="HEAD~1")
    ap.add_argument("--head", default="HEAD")
    ap.add_argument("--stacks", default="dev,staging,prod")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=None, help="passed to trainyard review")
    args = ap.parse_args()
    cmd = [sys.executable, "-m", "trainyard", "review", "--base", args.base, "--head", args.head,
           "--stacks", args.stacks, "--format", "json", "--no-reuse"]
    if args.jobs:
        cmd += ["--jobs", str(args.jobs)]
    times, resources = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "review.json"
        for _ in range(args.runs):
            t0 = time.perf_counter()
            subprocess.run(cmd + ["--output", str(out)], cwd=ROOT, check=True,
                           stderr=subprocess.DEVNULL)
            times.append(time.perf_counter() - t0)
        for s in json.loads(out.read_text())["stacks"]:
            resources[s["stack"]] = s["status"]
    print(json.dumps({
        "command": " ".join(["trainyard", *cmd[3:]]),
        "runs": args.runs, "min_s": round(min(times), 2),
        "median_s": round(statistics.median(times), 2), "max_s": round(max(times), 2),
        "stacks": resources, "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "machine": f"{platform.machine()}, python {platform.python_version()}",
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
