"""`trainyard review`: one ref's checkout and the trainyard commands run in it.

A `Tree` runs `python -m trainyard plan` with its own code (a subprocess, this interpreter), and
the judge tree (the head) runs `trainyard check` and `trainyard cost` over a plan in one
interpreter of its code. trainyard/review.py turns the results into each stack's `Side`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

SUBPROCESS_TIMEOUT_S = 600


@dataclass(frozen=True)
class Tree:
    label: str
    """`base` or `head`."""
    path: Path
    """The project directory (its __main__.py, stacks/, trainyard/, policies/)."""

    def stacks(self) -> set[str]:
        return {p.name[len("Pulumi."):-len(".yaml")]
                for p in (self.path / "stacks").glob("Pulumi.*.yaml")}

    def has_command(self, name: str) -> bool:
        return (self.path / "trainyard" / f"{name}.py").is_file()

    def trainyard(self, *args: str) -> subprocess.CompletedProcess:
        """`python -m trainyard ARGS` with this tree's code (same interpreter)."""
        return self.python("-m", "trainyard", *args)

    def python(self, *args: str) -> subprocess.CompletedProcess:
        """`python ARGS` in this tree, importing this tree's code (same interpreter)."""
        # Bytecode caching on: the worktree's modules are imported by several processes.
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONDONTWRITEBYTECODE")}
        env["PYTHONPATH"] = str(self.path)
        try:
            return subprocess.run([sys.executable, *args], cwd=self.path,
                                  env=env, capture_output=True, text=True,
                                  timeout=SUBPROCESS_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(args, 124, "", f"timed out after "
                                               f"{SUBPROCESS_TIMEOUT_S} s")


def _errors(proc: subprocess.CompletedProcess) -> str:
    """The `error: ...` lines of a trainyard command, else its last stderr line."""
    lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
    errs = [ln.removeprefix("error: ") for ln in lines if ln.startswith("error: ")]
    if errs:
        return "; ".join(errs)
    return lines[-1] if lines else f"exit code {proc.returncode}"


def _plan(tree: Tree, stack: str, workdir: Path) -> tuple[Optional[dict], Optional[str]]:
    out = workdir / f"plan-{tree.label}-{stack}.json"
    proc = tree.trainyard("plan", "--stack", stack, "--json", str(out), "--quiet")
    if proc.returncode == 2:
        return None, f"config invalid: {_errors(proc)}"
    if proc.returncode != 0 or not out.is_file():
        return None, f"plan failed (exit {proc.returncode}): {_errors(proc)}"
    return json.loads(out.read_text()), None


# Runs several `trainyard` commands in one interpreter of the judge's tree, through its CLI
# entry point (`trainyard.cli.main(argv)`): one process start instead of one per command.
_RUN_MANY = r"""
import contextlib, io, json, sys
from trainyard.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 2
        except Exception as e:
            rc = 1
            print(f"{type(e).__name__}: {e}", file=sys.stderr)
    results.append([rc, err.getvalue()])
print(json.dumps(results))
"""


def _judge(judge: Tree, plan_file: Path, stem: Path) -> dict[str, Any]:
    """`trainyard check --plan` and `trainyard cost --plan` with the judge's rules and prices.
    Returns {"check": (doc, note), "cost": (monthly, note)}."""
    commands: dict[str, list[str]] = {}
    out: dict[str, Any] = {}
    for name in ("check", "cost"):
        if judge.has_command(name):
            commands[name] = [name, "--plan", str(plan_file), "--json", f"{stem}-{name}.json"]
        else:
            out[name] = (None, f"`trainyard {name}` is not present at {judge.label}")
    if not commands:
        return out
    proc = judge.python("-c", _RUN_MANY, json.dumps(list(commands.values())))
    try:
        results = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        for name in commands:
            out[name] = (None, f"trainyard {name} did not run: {_errors(proc)}")
        return out
    for (name, argv), (rc, stderr) in zip(commands.items(), results, strict=True):
        path = Path(argv[-1])
        ok = rc in ((0, 1) if name == "check" else (0,)) and path.is_file()  # check: 1 = found
        if not ok:
            err = subprocess.CompletedProcess(argv, rc, "", stderr)
            out[name] = (None, f"trainyard {name} failed (exit {rc}): {_errors(err)}")
            continue
        doc = json.loads(path.read_text())
        if name == "check":
            out[name] = (doc, None)
        else:
            monthly = monthly_totals(doc)
            out[name] = (monthly, None if monthly else "trainyard cost's JSON has no "
                         "`monthly_total`")
    return out


def monthly_totals(doc: Any) -> Optional[dict]:
    """From `trainyard cost --json`: `monthly_total` (the stack at desired size, each pool at
    its own capacity type) and `totals.max.monthly` (every pool at max size)."""
    if not isinstance(doc, dict) or not _number(doc.get("monthly_total")):
        return None
    at_max = ((doc.get("totals") or {}).get("max") or {}).get("monthly")
    return {"desired": float(doc["monthly_total"]),
            "max": float(at_max) if _number(at_max) else None}


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)
