"""Every broken stack file in tests/data/broken_stacks/ is refused cleanly by `trainyard plan`.

Each file is a small variation of a committed stack whose first line says what the refusal must
contain: `# expect: <substring of the error line>`. A clean refusal is: exit code 2, one
`error: ...` line per problem and nothing else on stderr, exactly one problem (a broken file
changes one thing, and no error may be computed from a value that was already rejected), no
traceback, and no plan written.

Counting clean refusals over the corpus (for any checkout of the code, e.g. an older commit in a
`git worktree`):

    .venv/bin/python tests/components/test_broken_stacks.py [--code-root /tmp/before]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import pytest

ROOT = Path(__file__).resolve().parents[2]
BROKEN_DIR = ROOT / "tests" / "data" / "broken_stacks"
BROKEN = sorted(BROKEN_DIR.glob("*.yaml"))


def expected(path: Path) -> str:
    first = path.read_text().split("\n", 1)[0]
    assert first.startswith("# expect: "), f"{path.name}: first line must be '# expect: ...'"
    return first[len("# expect: "):]


def judge(path: Path, rc: Optional[int], stderr: str, plan_written: bool) -> Optional[str]:
    """Why this run is not a clean refusal of `path`, or None when it is."""
    lines = stderr.strip().splitlines()
    if "Traceback" in stderr or rc is None:
        return "traceback"
    if rc == 0:
        return "accepted"
    if rc != 2:
        return f"exit code {rc}"
    if plan_written:
        return "plan written"
    if not lines or not all(line.startswith("error: ") for line in lines):
        return "stderr lines not all 'error: ...'"
    if expected(path) not in stderr:
        return "other message"
    if len(lines) != 1:
        return f"{len(lines)} problems for one change"
    return None


def plan_in_process(path: Path, json_out: Path) -> tuple[Optional[int], str]:
    """`trainyard plan --stack-file path` through trainyard.cli.main (fast: no interpreter start).
    rc None: an exception escaped main (the CLI would have printed a traceback)."""
    from trainyard.cli import main

    err = io.StringIO()
    gc_was_enabled = gc.isenabled()  # main turns the GC off for the CLI's short life
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = main(["plan", "--stack-file", str(path), "--json", str(json_out)])
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
    except Exception as e:  # a crash is what this reports
        return None, f"{err.getvalue()}Traceback: {type(e).__name__}: {e}"
    finally:
        if gc_was_enabled:
            gc.enable()
    return rc, err.getvalue()


def plan_subprocess(path: Path, json_out: Path, code_root: Path = ROOT) -> tuple[int, str]:
    env = dict(os.environ, PYTHONPATH=str(code_root))
    r = subprocess.run([sys.executable, "-m", "trainyard", "plan", "--stack-file", str(path),
                        "--json", str(json_out)], cwd=code_root, env=env,
                       capture_output=True, text=True, timeout=300)
    return r.returncode, r.stderr


# ----------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------
def test_corpus_is_large_and_well_formed():
    assert len(BROKEN) >= 60
    for path in BROKEN:
        assert expected(path).strip(), path.name


@pytest.mark.parametrize("path", BROKEN, ids=[p.stem for p in BROKEN])
def test_broken_stack_refused_cleanly(path, tmp_path):
    out = tmp_path / "plan.json"
    rc, stderr = plan_in_process(path, out)
    problem = judge(path, rc, stderr, out.exists())
    assert problem is None, f"{path.name}: {problem}\nexpected: {expected(path)}\n{stderr}"


# The real command line, end to end, for one file of each class.
THROUGH_CLI = ["pool-maxsize-missing", "duplicate-key-in-pool", "region-missing",
               "instance-not-offered-in-region"]


@pytest.mark.parametrize("name", THROUGH_CLI)
def test_broken_stack_refused_by_the_cli(name, tmp_path):
    path = BROKEN_DIR / f"{name}.yaml"
    out = tmp_path / "plan.json"
    rc, stderr = plan_subprocess(path, out)
    assert judge(path, rc, stderr, out.exists()) is None, stderr


# ----------------------------------------------------------------------------------------------
# Counting clean refusals (before/after a change)
# ----------------------------------------------------------------------------------------------
def count(code_root: Path, jobs: int) -> dict[str, list[str]]:
    verdicts: dict[str, list[str]] = {}

    def one(path: Path) -> tuple[str, str]:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "plan.json"
            rc, stderr = plan_subprocess(path, out, code_root)
            return path.stem, judge(path, rc, stderr, out.exists()) or "clean"

    with ThreadPoolExecutor(jobs) as pool:
        for name, verdict in pool.map(one, BROKEN):
            verdicts.setdefault(verdict.split(" for ")[0] if "problems" in verdict else verdict,
                                []).append(name)
    return verdicts


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Count clean refusals of the broken stacks.")
    parser.add_argument("--code-root", type=Path, default=ROOT,
                        help="checkout whose trainyard runs the files (default: this one)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 4)
    parser.add_argument("-v", "--verbose", action="store_true", help="list files per verdict")
    args = parser.parse_args()
    result = count(args.code_root.resolve(), args.jobs)
    clean = len(result.get("clean", []))
    print(f"{clean}/{len(BROKEN)} clean refusals ({args.code_root})")
    for verdict, names in sorted(result.items(), key=lambda kv: -len(kv[1])):
        if verdict != "clean":
            print(f"  {len(names):3} {verdict}" + (f": {', '.join(sorted(names))}"
                                                   if args.verbose else ""))
