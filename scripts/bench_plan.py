"""Whole-process time of `trainyard plan --stack S` (what a user waits for), N runs per stack.

    python scripts/bench_plan.py                 # prod, 5 runs
    python scripts/bench_plan.py --stacks dev,staging,prod --runs 3

Prints one JSON line per stack: min / median / max wall seconds and the resource count.
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
    ap.add_argument("--stacks", default="prod")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}", file=sys.stderr)
    for stack in args.stacks.split(","):
        times = []
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "plan.json"
            for _ in range(args.runs):
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-m", "trainyard", "plan", "--stack", stack,
                                "--json", str(out), "--quiet"], cwd=ROOT, check=True)
                times.append(time.perf_counter() - t0)
            n = sum(1 for r in json.loads(out.read_text())["resources"] if r["custom"])
        print(json.dumps({"stack": stack, "runs": args.runs, "resources": n,
                          "min_s": round(min(times), 2),
                          "median_s": round(statistics.median(times), 2),
                          "max_s": round(max(times), 2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
