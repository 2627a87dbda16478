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
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from trainyard import diff as D
from trainyard import gitrefs, outfile
from trainyard.errors import UsageError

# The parts live beside this module; their public names are re-exported here.
from trainyard.review_queues import ACCELERATORS as ACCELERATORS
from trainyard.review_queues import cluster_queues as cluster_queues
from trainyard.review_queues import queue_changes
from trainyard.review_render import COMMENT_MARKER as COMMENT_MARKER
from trainyard.review_render import MAX_COMMENT_CHARS as MAX_COMMENT_CHARS
from trainyard.review_render import render_markdown
from trainyard.review_serving import serving_changes
from trainyard.review_tree import SUBPROCESS_TIMEOUT_S as SUBPROCESS_TIMEOUT_S
from trainyard.review_tree import Tree, _judge, _plan
from trainyard.review_tree import monthly_totals as monthly_totals

SCHEMA = "trainyard.review/v1"


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
# One stack at one ref (trainyard/review_tree.py runs the tools)
# ----------------------------------------------------------------------------------------------
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
    serving: list[str] = field(default_factory=list)
    """Served-model changes (traffic split weights, exports, replicas), one line each
    (serving_changes)."""

    def to_json(self) -> dict:
        return {
            "stack": self.stack, "status": self.status,
            "base_plan_reused": self.base_plan_reused,
            "base_error": self.base.error, "head_error": self.head.error,
            "summary": self.diff.summary() if self.diff else None,
            "resources": [r.to_json() for r in self.diff.resources] if self.diff else [],
            "policy": self.policy, "cost": self.cost, "capacity": self.capacity,
            "data_loss": self.cautions, "warnings": self.warnings,
            "head_only": self.head_only, "queues": self.queues, "serving": self.serving,
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
        sr.serving = serving_changes(base.plan, head.plan)
    cb, ch = D.capacity(base.plan, catalog), D.capacity(head.plan, catalog)
    sr.capacity = {"base": cb.to_json(), "head": ch.to_json(), "delta": D.capacity_delta(cb, ch)}
    if sr.status in ("base-invalid", "head-invalid"):
        sr.capacity["delta"] = None
    return sr


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
    from components.compute.catalog import load_catalog, parse_catalog

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
