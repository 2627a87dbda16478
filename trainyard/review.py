"""`trainyard review --base REF`: what a change does to every stack, offline.

Plans each stack at the base ref and at the head (the working tree by default), each with THAT
ref's own code (`python -m trainyard plan` run as a subprocess inside a temporary git worktree),
then reports per stack: resources added / changed / replaced / removed with property-level diffs,
replacements and node rolls, stateful deletions (DATA LOSS RISK), policy violations introduced
and fixed, the monthly cost delta and the GPU capacity delta. Markdown for a PR comment (summary
first, details collapsed) or JSON (shape in docs/review.md).

    trainyard review --base origin/main                       # working tree vs origin/main
    trainyard review --base HEAD~1 --head HEAD --stacks prod --format json --output r.json

Policies and prices come from the HEAD's code for both sides (`trainyard check` / `trainyard
cost` run in the head tree over both plans): the same rules on both sides isolate the
infrastructure change from rule changes. Exit 0 when the review was produced (bad news is in
the report), 2 for bad input (unknown ref, shallow clone, dirty tree, unknown stack).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from trainyard import diff as D
from trainyard import gitrefs, outfile
from trainyard.errors import UsageError

SCHEMA = "trainyard.review/v1"
COMMENT_MARKER = "<!-- trainyard-review -->"
MAX_COMMENT_CHARS = 60_000  # GitHub caps a comment at 65,536 characters
SUBPROCESS_TIMEOUT_S = 600


def add_parser(sub) -> None:
    p = sub.add_parser(
        "review", help="what a change does to every stack (offline, for PR review)",
        description="Plan every stack at two git refs (each with its own code), and report "
                    "resource, replacement, policy, cost and capacity differences.")
    p.add_argument("--base", required=True, metavar="REF",
                   help="the ref to compare against (e.g. origin/main)")
    p.add_argument("--head", metavar="REF",
                   help="the changed ref (default: the working tree, which must be clean "
                        "unless --allow-dirty)")
    p.add_argument("--stacks", metavar="A,B",
                   help="stacks to review (default: every stack file at either ref)")
    p.add_argument("--format", choices=("md", "json"), default="md")
    p.add_argument("--output", "-o", type=Path, metavar="PATH", help="write here, not stdout")
    p.add_argument("--json", type=Path, metavar="PATH",
                   help="also write the JSON report here (one review, both formats)")
    p.add_argument("--allow-dirty", action="store_true",
                   help="review the working tree with its uncommitted changes")
    p.add_argument("--merge-base", action="store_true",
                   help="compare against the merge base of BASE and the head (what the "
                        "branch changed), not BASE itself")
    p.add_argument("--no-reuse", action="store_true",
                   help="plan both refs even when no plan-relevant file differs")
    p.add_argument("--jobs", type=positive_int, metavar="N",
                   default=min(4, max(2, os.cpu_count() or 2)),
                   help="plans run in parallel, at least 1 (default: %(default)s)")
    p.add_argument("--repo", type=Path, metavar="DIR", help=argparse.SUPPRESS)
    p.set_defaults(func=run)


# ----------------------------------------------------------------------------------------------
# Running the tools of one tree
# ----------------------------------------------------------------------------------------------
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


@dataclass
class Side:
    """One stack at one ref: its plan, or why there is none, and what head's rules say."""
    present: bool
    plan: Optional[dict] = None
    error: Optional[str] = None
    violations: Optional[list[dict]] = None
    policies_run: Optional[int] = None
    policy_note: Optional[str] = None
    monthly: Optional[dict] = None
    """{"desired": $/month, "max": $/month} from `trainyard cost`."""
    cost_note: Optional[str] = None


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


# Paths that cannot change a plan: when only these differ between the refs, the base plan is
# the head plan (planned once). Policies are judged with the head's rules on both sides anyway.
PLAN_INDEPENDENT = ("docs/", "tests/", "workloads/", "scripts/", "policies/", ".github/",
                    ".ci/")


def plan_relevant(path: str, stack: str) -> bool:
    """Whether a change to `path` (project-relative) may change `stack`'s plan."""
    if path.endswith(".md") or path.startswith(PLAN_INDEPENDENT):
        return False
    if path.startswith("stacks/"):
        return path == f"stacks/Pulumi.{stack}.yaml"
    return True


def _side(tree: Tree, judge: Tree, stack: str, workdir: Path) -> Side:
    if stack not in tree.stacks():
        return Side(present=False)
    plan, error = _plan(tree, stack, workdir)
    side = Side(present=True, plan=plan, error=error)
    if plan is None:
        return side
    plan_file = workdir / f"plan-{tree.label}-{stack}.json"
    judged = _judge(judge, plan_file, workdir / f"{tree.label}-{stack}")
    check, side.policy_note = judged["check"]
    if check is not None:
        side.violations = list(check.get("violations") or [])
        side.policies_run = check.get("policies_run")
    side.monthly, side.cost_note = judged["cost"]
    return side


# ----------------------------------------------------------------------------------------------
# Per-stack report
# ----------------------------------------------------------------------------------------------
@dataclass
class StackReview:
    stack: str
    base: Side
    head: Side
    status: str = ""
    """unchanged, changed, added, removed, base-invalid, head-invalid."""
    base_plan_reused: bool = False
    """No plan-relevant file differs between the refs: the stack was planned once."""
    diff: Optional[D.StackDiff] = None
    policy: Optional[dict] = None
    cost: dict = field(default_factory=dict)
    capacity: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    cautions: list[str] = field(default_factory=list)
    head_only: Optional[dict] = None
    """base-invalid: the head's own figures (resources, violations, $/month), nothing to diff."""
    queues: list[str] = field(default_factory=list)
    """Kueue quota and flavor-order changes, one line each (queue_changes)."""

    def to_json(self) -> dict:
        return {
            "stack": self.stack, "status": self.status,
            "base_plan_reused": self.base_plan_reused,
            "base_error": self.base.error, "head_error": self.head.error,
            "summary": self.diff.summary() if self.diff else None,
            "resources": [r.to_json() for r in self.diff.resources] if self.diff else [],
            "policy": self.policy, "cost": self.cost, "capacity": self.capacity,
            "data_loss": self.cautions, "warnings": self.warnings,
            "head_only": self.head_only, "queues": self.queues,
        }


def build_stack_review(stack: str, base: Side, head: Side, catalog) -> StackReview:
    sr = StackReview(stack, base, head)
    if not base.present and not head.present:
        raise UsageError(f"stack {stack!r} exists at neither ref")
    if head.present and head.plan is None:
        sr.status = "head-invalid"
    elif base.present and base.plan is None:
        sr.status = "base-invalid"
    elif not base.present:
        sr.status = "added"
    elif not head.present:
        sr.status = "removed"

    if sr.status in ("", "added", "removed"):
        sr.diff = D.diff_stack(base.plan, head.plan)
        if not sr.status:
            sr.status = "changed" if sr.diff.resources else "unchanged"
        _flag(sr)

    # Policy: only comparable when both sides (that exist) were judged.
    notes = [n for n in (base.policy_note, head.policy_note) if n]
    b_v = base.violations if base.present else []
    h_v = head.violations if head.present else []
    if b_v is not None and h_v is not None and (base.plan or head.plan) and \
            sr.status not in ("base-invalid", "head-invalid"):
        sr.policy = {"available": True, **D.policy_delta(b_v, h_v),
                     "policies_run": head.policies_run or base.policies_run}
    else:
        sr.policy = {"available": False, "note": notes[0] if notes else
                     "no plan to judge on one side", "head_total": len(h_v or [])
                     if head.violations is not None else None}

    zero = {"desired": 0.0, "max": 0.0}
    b_m = base.monthly if base.present else zero
    h_m = head.monthly if head.present else zero
    if b_m is not None and h_m is not None and sr.status not in ("base-invalid", "head-invalid"):
        sr.cost = {"available": True, "currency": "USD",
                   "base_monthly": round(b_m["desired"], 2),
                   "head_monthly": round(h_m["desired"], 2),
                   "delta_monthly": round(h_m["desired"] - b_m["desired"], 2)}
        if b_m.get("max") is not None and h_m.get("max") is not None:
            sr.cost.update(base_monthly_at_max=round(b_m["max"], 2),
                           head_monthly_at_max=round(h_m["max"], 2),
                           delta_monthly_at_max=round(h_m["max"] - b_m["max"], 2))
    else:
        cn = [n for n in (base.cost_note, head.cost_note) if n]
        sr.cost = {"available": False, "note": cn[0] if cn else "no plan on one side",
                   "head_monthly": (head.monthly or {}).get("desired")}

    if sr.status == "base-invalid" and head.plan is not None:
        hv = head.violations
        sr.head_only = {
            "resources": len(D._custom(head.plan)),
            "violations": len(hv) if hv is not None else None,
            "mandatory": sum(1 for v in hv if v.get("level") == "mandatory")
            if hv is not None else None,
            "monthly": (head.monthly or {}).get("desired"),
            "monthly_at_max": (head.monthly or {}).get("max"),
        }

    if base.plan is not None and head.plan is not None:
        sr.queues = queue_changes(base.plan, head.plan)
    cb, ch = D.capacity(base.plan, catalog), D.capacity(head.plan, catalog)
    sr.capacity = {"base": cb.to_json(), "head": ch.to_json(), "delta": D.capacity_delta(cb, ch)}
    if sr.status in ("base-invalid", "head-invalid"):
        sr.capacity["delta"] = None
    return sr


# ----------------------------------------------------------------------------------------------
# Kueue: quota and flavor order, said as such
# ----------------------------------------------------------------------------------------------
_CLUSTER_QUEUE = re.compile(r"^kubernetes:kueue\.x-k8s\.io/v1beta\d+:ClusterQueue$")
ACCELERATORS = ("nvidia.com/gpu", "aws.amazon.com/neuron")


def _gpu_quota(value: Any) -> float:
    try:
        return float(str(value))
    except ValueError:
        return 0.0


def cluster_queues(plan: Optional[dict]) -> dict[str, dict[str, float]]:
    """ClusterQueue name -> flavor -> nominal accelerators, flavors in the queue's order (those
    of the resource groups covering an accelerator resource)."""
    out: dict[str, dict[str, float]] = {}
    for r in (plan or {}).get("resources", []):
        if not _CLUSTER_QUEUE.match(r.get("type", "")):
            continue
        inputs = r.get("inputs") or {}
        name = str((inputs.get("metadata") or {}).get("name") or r.get("name"))
        flavors: dict[str, float] = {}
        for group in (inputs.get("spec") or {}).get("resourceGroups") or []:
            if not set(group.get("coveredResources") or []) & set(ACCELERATORS):
                continue
            for f in group.get("flavors") or []:
                flavors[str(f.get("name"))] = sum(
                    _gpu_quota(q.get("nominalQuota")) for q in f.get("resources") or []
                    if q.get("name") in ACCELERATORS)
        out[name] = flavors
    return out


def _n(x: float) -> str:
    return f"{x:g}"


def _split(flavors: dict[str, float]) -> str:
    held = [f"{f} {_n(n)}" for f, n in flavors.items() if n]
    return ", ".join(held) or "none"


def queue_changes(base: Optional[dict], head: Optional[dict]) -> list[str]:
    """What a change does to the teams' Kueue quota, as such: `team research: nominal GPU quota
    64 → 32`, `flavor order of research: g-spot, a100 → a100, g-spot`, the split across flavors,
    queues added or removed."""
    b, h = cluster_queues(base), cluster_queues(head)
    out = []
    for team in sorted(set(b) | set(h)):
        if team not in b:
            out.append(f"team {team}: ClusterQueue added, nominal GPU quota "
                       f"{_n(sum(h[team].values()))} ({_split(h[team])})")
            continue
        if team not in h:
            out.append(f"team {team}: ClusterQueue removed (was nominal GPU quota "
                       f"{_n(sum(b[team].values()))})")
            continue
        old, new = b[team], h[team]
        if sum(old.values()) != sum(new.values()):
            out.append(f"team {team}: nominal GPU quota {_n(sum(old.values()))} → "
                       f"{_n(sum(new.values()))}")
        if list(old) != list(new):
            out.append(f"flavor order of {team}: {', '.join(old) or 'none'} → "
                       f"{', '.join(new) or 'none'}")
        if {f: n for f, n in old.items() if n} != {f: n for f, n in new.items() if n}:
            out.append(f"team {team}: nominal GPUs per flavor {_split(old)} → {_split(new)}")
    return out


def _flag(sr: StackReview) -> None:
    if sr.status == "removed":  # nothing is destroyed by removing the file: say what would be
        stateful = [r for r in sr.diff.resources if r.stateful]
        sr.warnings.append(
            "the stack file is removed: deploys stop updating this stack and its resources stay "
            "until `pulumi destroy`" + (f", which would delete {len(stateful)} stateful "
                                        f"resources ({_kinds(stateful)})" if stateful else ""))
        return
    for label, was, now in D.provisioner_changes(sr.base.plan, sr.head.plan):
        sr.warnings.append(
            f"pool **{label}**: {D.PROVISIONER_NAMES.get(was, was)} → "
            f"{D.PROVISIONER_NAMES.get(now, now)}: "
            + ("the node group is deleted (its nodes drained, running jobs evicted); from then "
               "on Karpenter launches the pool's nodes for pending pods and removes empty ones"
               if now == "karpenter" else
               "the NodePool is deleted and Karpenter drains its nodes (running jobs evicted); "
               "the node group starts at its desired size"))
    for r in sr.diff.resources:
        verb = {"delete": "is deleted", "replace": "is replaced"}.get(r.action)
        if r.stateful and verb:
            if r.retain_on_delete:
                sr.warnings.append(
                    f"`{r.type}` **{r.name}** {verb}; retainOnDelete keeps the old one in AWS "
                    "(orphaned, no longer managed): move its data or import it back")
            else:
                sr.cautions.append(f"`{r.type}` **{r.name}** {verb}: loses {r.stateful}")
        if r.protect and verb:
            sr.warnings.append(f"**{r.name}** is protected: `pulumi up` will refuse to "
                               f"{'delete' if r.action == 'delete' else 'replace'} it")
        if r.type == D.NODE_GROUP and r.action == "replace":
            sr.warnings.append(f"node group **{r.name}** is replaced "
                               f"({', '.join(r.replace_paths) or 'a replaced dependency'}): "
                               "every node is drained and running jobs are evicted")
        elif r.type == D.NODE_GROUP and r.rolls_nodes and r.action == "update":
            sr.warnings.append(f"node group **{r.name}**: every node is replaced (rolling "
                               "update): running jobs are evicted")
        if r.type == D.NODE_GROUP and r.capacity_block and r.rolls_nodes and \
                r.action in ("update", "replace"):
            sr.warnings.append(f"node group **{r.name}** runs on a Capacity Block: EKS can only "
                               "roll it at desired size 0 (the block has no spare instances). "
                               "Scale it to 0 first (`aws eks update-nodegroup-config "
                               "--scaling-config desiredSize=0`), then apply, then scale back; "
                               "docs/operations.md \"Capacity Block pools\"")


def _kinds(rs: list) -> str:
    counts: dict[str, int] = {}
    for r in rs:
        kind = r.type.split(":")[-1]
        counts[kind] = counts.get(kind, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))


# ----------------------------------------------------------------------------------------------
# Orchestration
# ----------------------------------------------------------------------------------------------
@dataclass
class Review:
    base_ref: str
    base_commit: str
    base_title: str
    head_ref: str
    head_commit: Optional[str]
    head_title: str
    dirty: bool
    stacks: list[StackReview]
    elapsed_s: float
    compared_with_merge_base: bool = False

    def to_json(self) -> dict:
        return {"schema": SCHEMA, "offline": True,
                "base": {"ref": self.base_ref, "commit": self.base_commit,
                         "merge_base": self.compared_with_merge_base},
                "head": {"ref": self.head_ref, "commit": self.head_commit, "dirty": self.dirty},
                "judged_with": "head",
                "stacks": [s.to_json() for s in self.stacks],
                "elapsed_s": round(self.elapsed_s, 2)}


def _head_catalog(tree: Tree):
    from components.catalog import load_catalog, parse_catalog

    try:
        import yaml

        return parse_catalog(yaml.safe_load(
            (tree.path / "components" / "data" / "instances.yaml").read_text()))
    except Exception:  # an older/newer catalog layout: the running code's catalog will do
        return load_catalog()


def review(args) -> Review:
    from trainyard.project import project_root

    started = time.perf_counter()
    repo = gitrefs.open_repo((args.repo or project_root()).resolve())
    gitrefs.ensure_full_history(repo)
    base_sha = gitrefs.resolve(repo, args.base)
    dirty = False
    if args.head:
        head_sha: Optional[str] = gitrefs.resolve(repo, args.head)
        head_ref = args.head
    else:
        head_ref = "working tree"
        proc = gitrefs.git(repo.top, "rev-parse", "--verify", "--quiet", "HEAD", check=False)
        head_sha = proc.stdout.strip() or None
        changed = gitrefs.dirty_paths(repo)
        dirty = bool(changed)
        if dirty and not args.allow_dirty:
            shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more"
                                               if len(changed) > 5 else "")
            raise UsageError(
                f"the working tree has uncommitted changes ({shown}): commit or stash them, "
                "pass --head REF to review a commit, or --allow-dirty to review the tree as "
                "it is")
    merge = bool(args.merge_base)
    if merge:
        if head_sha is None:
            raise UsageError("--merge-base needs a head commit")
        base_sha = gitrefs.merge_base(repo, base_sha, head_sha)

    with contextlib.ExitStack() as stack_ctx:
        workdir = Path(stack_ctx.enter_context(tempfile.TemporaryDirectory(
            prefix="trainyard-review-")))
        base = Tree("base", stack_ctx.enter_context(gitrefs.worktree(repo, base_sha, "base")))
        if args.head:
            head = Tree("head", stack_ctx.enter_context(
                gitrefs.worktree(repo, head_sha, "head")))  # type: ignore[arg-type]
        else:
            head = Tree("head", repo.project)
        stacks = _stacks(args.stacks, base, head)

        changed = gitrefs.changed_paths(repo, base_sha, head_sha if args.head else None)
        same = set() if args.no_reuse else {
            s for s in stacks if s in base.stacks() and s in head.stacks()
            and not any(plan_relevant(p, s) for p in changed)}

        jobs = max(1, int(args.jobs))
        with cf.ThreadPoolExecutor(max_workers=jobs) as pool:
            futs = {(s, t.label): pool.submit(_side, t, head, s, workdir)
                    for s in stacks for t in (head, base) if not (t is base and s in same)}
            sides = {k: f.result() for k, f in futs.items()}
        for s in same:
            sides[(s, "base")] = sides[(s, "head")]
        catalog = _head_catalog(head)
        reviews = [build_stack_review(s, sides[(s, "base")], sides[(s, "head")], catalog)
                   for s in stacks]
        for r in reviews:
            r.base_plan_reused = r.stack in same

    return Review(base_ref=args.base, base_commit=base_sha,
                  base_title=gitrefs.describe(repo, base_sha), head_ref=head_ref,
                  head_commit=head_sha,
                  head_title=gitrefs.describe(repo, head_sha) if head_sha else "(no commits)",
                  dirty=dirty, stacks=reviews, elapsed_s=time.perf_counter() - started,
                  compared_with_merge_base=merge)


_ORDER = {"prod": 0, "staging": 1, "dev": 2}


def _stacks(requested: Optional[str], base: Tree, head: Tree) -> list[str]:
    known = base.stacks() | head.stacks()
    if requested:
        names = [s.strip() for s in requested.split(",") if s.strip()]
        if not names:
            raise UsageError("--stacks: give at least one stack name")
        unknown = [s for s in names if s not in known]
        if unknown:
            raise UsageError(f"unknown stack {unknown[0]!r}: no stacks/Pulumi.{unknown[0]}.yaml "
                             f"at either ref (known: {', '.join(sorted(known)) or 'none'})")
        return list(dict.fromkeys(names))
    if not known:
        raise UsageError("no stacks/Pulumi.*.yaml at either ref")
    return sorted(known, key=lambda s: (_ORDER.get(s, 3), s))


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (argparse turns the ValueError into `error: ...`)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") \
            from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def run(args) -> int:
    for path in (args.output, args.json):  # before planning anything
        outfile.check_writable(path)
    result = review(args)
    as_json = json.dumps(result.to_json(), indent=2, sort_keys=False) + "\n"
    text = as_json if args.format == "json" else render_markdown(result)
    for path, content in ((args.json, as_json), (args.output, text)):
        if path is None:
            continue
        outfile.write(path, content)
    if args.output is None:
        sys.stdout.write(text)
    print(f"trainyard review: {len(result.stacks)} stack(s) in {result.elapsed_s:.1f} s",
          file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------------------------
def _money(x: Optional[float], signed: bool = False) -> str:
    if x is None:
        return "n/a"
    sign = ("+" if x > 0 else "−" if x < 0 else "±") if signed else ("−" if x < 0 else "")
    return f"{sign}${abs(x):,.0f}"


def _signed(n: float, unit: str = "") -> str:
    if not n:
        return "0"
    text = f"{n:+,}" if isinstance(n, int) else f"{n:+,.2f}"
    return text.replace("-", "−") + unit


def _policy_cell(sr: StackReview) -> str:
    p = sr.policy or {}
    if not p.get("available"):
        return "n/a"
    new, fixed = len(p["introduced"]), len(p["fixed"])
    if not new and not fixed:
        return "—"
    mand = sum(1 for v in p["introduced"] if v.get("level") == "mandatory")
    parts = []
    if new:
        parts.append(f"🆕 {new}" + (f" ({mand} mandatory)" if mand else ""))
    if fixed:
        parts.append(f"✅ {fixed} fixed")
    return ", ".join(parts)


def _row(sr: StackReview) -> str:
    if sr.status in ("base-invalid", "head-invalid"):
        side = "base" if sr.status == "base-invalid" else "head"
        return f"| **{sr.stack}** | {side} config invalid ||||||| "
    s = sr.diff.summary()
    label = {"added": " (new stack)", "removed": " (stack removed)"}.get(sr.status, "")
    gpus = (sr.capacity.get("delta") or {}).get("gpus", 0)
    c = sr.cost
    cost = _money(c.get("delta_monthly"), signed=True) if c.get("available") else "n/a"
    if c.get("available") and c.get("delta_monthly_at_max", c.get("delta_monthly")) != \
            c.get("delta_monthly"):
        cost += f" (at max {_money(c['delta_monthly_at_max'], signed=True)})"
    repl = f"**{s['replaced']}**" if s["replaced"] else "0"
    if s["nodes_rolled"]:
        repl += f" (+{s['nodes_rolled']} node roll{'s' if s['nodes_rolled'] > 1 else ''})"
    return (f"| **{sr.stack}**{label} | {s['added']} | {s['changed']} | {repl} | "
            f"{s['removed']} | {_policy_cell(sr)} | {cost} | {_signed(gpus)} |")


def render_markdown(rv: Review, max_changes: int = 25) -> str:
    text = _render(rv, max_changes)
    if len(text) > MAX_COMMENT_CHARS:
        text = _render(rv, 3, max_resources=40)
    if len(text) > MAX_COMMENT_CHARS:
        text = text[:MAX_COMMENT_CHARS - 200] + "\n\n… (truncated: run `trainyard review` " \
            "locally or read the JSON report)\n</details>\n"
    return text


def _render(rv: Review, max_changes: int, max_resources: int = 10_000) -> str:
    head = f"working tree at `{rv.head_commit[:7]}`" if rv.head_ref == "working tree" and \
        rv.head_commit else f"`{rv.head_ref}` (`{(rv.head_commit or '')[:7]}`)"
    if rv.dirty:
        head += " **with uncommitted changes**"
    base = f"`{rv.base_ref}` (`{rv.base_commit[:7]}`" + \
        (", merge base)" if rv.compared_with_merge_base else ")")
    out = [COMMENT_MARKER, "### trainyard review", "",
           f"{base} → {head}, {len(rv.stacks)} stack(s), offline plan under the mock runtime "
           "(no cloud credentials; ids and ARNs are placeholders, `pulumi preview` stays the "
           "authority). Policies and prices: the head's rules applied to both sides.", "",
           "| stack | + added | ~ changed | ± replaced | − removed | policy Δ | $/month Δ | "
           "GPUs Δ |", "|---|--:|--:|--:|--:|---|--:|--:|"]
    out += [_row(sr) for sr in rv.stacks]
    out.append("")

    cautions = [f"- **{sr.stack}**: {c}" for sr in rv.stacks for c in sr.cautions]
    if cautions:
        out += ["> [!CAUTION]", "> **DATA LOSS RISK**", ">"] + [f"> {c}" for c in cautions] + [""]
    errors = [f"- **{sr.stack}**: {sr.status.split('-')[0]} — "
              f"{sr.base.error if sr.status == 'base-invalid' else sr.head.error}"
              for sr in rv.stacks if sr.status.endswith("-invalid")]
    if errors:
        out += ["> [!WARNING]", "> **Stacks that could not be planned**", ">"] + \
            [f"> {e}" for e in errors] + [""]
    warns = [f"- **{sr.stack}**: {w}" for sr in rv.stacks for w in sr.warnings]
    if warns:
        out += ["> [!WARNING]"] + [f"> {w}" for w in warns] + [""]
    mand = [(sr.stack, v) for sr in rv.stacks if (sr.policy or {}).get("available")
            for v in sr.policy["introduced"] if v.get("level") == "mandatory"]
    if mand:
        out += ["> [!IMPORTANT]", "> **New mandatory policy violations** (`pulumi up` with "
                "`--policy-pack policies` will refuse)", ">"]
        out += [f"> - **{s}**: `{v.get('policy')}` on {_short(v.get('urn'))}: "
                f"{_one_line(v.get('message'))}" for s, v in mand] + [""]

    for sr in rv.stacks:
        out += _details(sr, max_changes, max_resources)
    out.append(f"<sub>trainyard review · {rv.elapsed_s:.1f} s · JSON: `trainyard review "
               f"--format json`</sub>")
    return "\n".join(out) + "\n"


def _short(urn: Optional[str]) -> str:
    if not urn:
        return "(stack)"
    return f"`{urn.rsplit('::', 1)[-1]}`"


def _one_line(text: Any, limit: int = 200) -> str:
    """One line, safe inside a Markdown table cell."""
    s = " ".join(str(text or "").split()).replace("|", "\\|")
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _change_lines(r: D.ResourceDiff, max_changes: int) -> list[str]:
    lines = []
    for c in r.changes[:max_changes]:
        mark = " **(forces replacement)**" if c.path in r.replace_paths else ""
        if c.kind == "added":
            lines.append(f"  - `{c.path}`: added {D.short_value(c.new)}{mark}")
        elif c.kind == "removed":
            lines.append(f"  - `{c.path}`: removed (was {D.short_value(c.old)}){mark}")
        else:
            lines.append(f"  - `{c.path}`: {D.short_value(c.old)} → "
                         f"{D.short_value(c.new)}{mark}")
    if len(r.changes) > max_changes:
        lines.append(f"  - … {len(r.changes) - max_changes} more")
    lines += [f"  - {why}" for why in r.reasons]
    return lines


def _details(sr: StackReview, max_changes: int, max_resources: int) -> list[str]:
    bits = [sr.status]
    if sr.diff:
        s = sr.diff.summary()
        bits = [f"{n} {k}" for k, n in s.items() if n and k in
                ("added", "changed", "replaced", "removed")] or ["no resource changes"]
    if sr.cost.get("available") and sr.cost["delta_monthly"]:
        bits.append(f"{_money(sr.cost['delta_monthly'], signed=True)}/month")
    out = [f"<details><summary><b>{sr.stack}</b>: {', '.join(bits)}</summary>", ""]
    if sr.status in ("base-invalid", "head-invalid"):
        side = sr.base if sr.status == "base-invalid" else sr.head
        out += [f"The {sr.status.split('-')[0]} could not be planned: **{side.error}**", ""]
        h = sr.head_only
        if h:
            bits = [f"{h['resources']} resources"]
            if h["violations"] is not None:
                bits.append(f"{h['violations']} policy violations ({h['mandatory']} mandatory)")
            if h["monthly"] is not None:
                bits.append(f"{_money(h['monthly'])}/month at desired size"
                            + (f", {_money(h['monthly_at_max'])} at max"
                               if h["monthly_at_max"] is not None else ""))
            hc = sr.capacity["head"]
            bits.append(f"{hc['gpus']:,} GPUs and {hc['efa_interfaces']:,} EFA interfaces at "
                        "max size")
            out += ["No resource diff without a base plan. The head on its own: "
                    + "; ".join(bits) + ".", "", "</details>", ""]
            return out
        if sr.status == "head-invalid":
            return out + ["Nothing to compare until the head plans.", "", "</details>", ""]
    if sr.diff and sr.diff.resources:
        groups = [("Replaced", "replace", "±"), ("Removed", "delete", "−"),
                  ("Changed", "update", "~"), ("Added", "create", "+")]
        shown = 0
        for title, action, sym in groups:
            rs = [r for r in sr.diff.resources if r.action == action]
            if not rs:
                continue
            out.append(f"**{title}** ({len(rs)})")
            out.append("")
            for r in rs:
                shown += 1
                if shown > max_resources:
                    out.append(f"- … {len(rs)} in all")
                    break
                flag = " ⚠ **DATA LOSS RISK**" if r.data_loss_risk else ""
                roll = " (replaces nodes)" if r.rolls_nodes and action == "update" else ""
                out.append(f"- {sym} `{r.type}` **{r.name}**{roll}{flag}")
                if action in ("replace", "update"):
                    out += _change_lines(r, max_changes)
            out.append("")
    elif sr.diff:
        out += ["No resource changes.", ""]

    if sr.queues:
        out += ["**Queues** (Kueue quota and flavor order)", ""]
        out += [f"- {line}" for line in sr.queues] + [""]

    p = sr.policy or {}
    if p.get("available") and (p["introduced"] or p["fixed"]):
        out += ["**Policy** (head's rules on both sides)", "",
                "| | policy | level | resource | message |", "|---|---|---|---|---|"]
        for mark, key in (("🆕", "introduced"), ("✅ fixed", "fixed")):
            for v in p[key]:
                out.append(f"| {mark} | `{v.get('policy')}` | {v.get('level')} | "
                           f"{_short(v.get('urn'))} | {_one_line(v.get('message'), 160)} |")
        out.append("")
    elif p.get("available"):
        out += [f"**Policy**: no violations introduced or fixed ({p['head_total']} at head).", ""]
    else:
        out += [f"**Policy**: not compared: {p.get('note')}.", ""]

    c = sr.cost
    if c.get("available"):
        out += [f"**Cost** (head's prices): {_money(c['base_monthly'])} → "
                f"{_money(c['head_monthly'])} per month at desired size "
                f"(**{_money(c['delta_monthly'], signed=True)}**)"
                + (f"; at max size {_money(c['base_monthly_at_max'])} → "
                   f"{_money(c['head_monthly_at_max'])} "
                   f"({_money(c['delta_monthly_at_max'], signed=True)})"
                   if "delta_monthly_at_max" in c else ""), ""]
    else:
        out += [f"**Cost**: not compared: {c.get('note')}.", ""]

    cap = sr.capacity
    if cap and (cap["base"]["nodes"] or cap["head"]["nodes"]):
        d = cap.get("delta")
        out += ["**GPU capacity at max size**", "", "| | base | head | Δ |", "|---|--:|--:|--:|"]
        for key, label in (("gpus", "GPUs"), ("efa_interfaces", "EFA interfaces"),
                           ("bf16_pflops", "bf16 peak (PFLOPS, dense)"), ("nodes", "nodes")):
            delta = _signed(d[key]) if d else "n/a"
            out.append(f"| {label} | {cap['base'][key]:,} | {cap['head'][key]:,} | {delta} |")
        out.append("")
    out += ["</details>", ""]
    return out
