"""`trainyard review` end to end, on a temporary git repository holding a copy of this project.

The copy is this working tree (tracked and untracked, not ignored: the code under test), committed
as `base`. The `pr` commit is a realistic infrastructure PR: prod's `a100` pool moves from
p4d.24xlarge to p4de.24xlarge (forces a node-group replacement), prod's `g-spot` pool doubles its
max size, and the storage component turns bucket versioning off (a code change, as a PR would
make it). Side branches cover a base whose config no longer parses, stacks present at one ref
only, and a stack none of whose plan-relevant files changed. Every ref is planned with its own
code, in a worktree.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components.compute.catalog import load_catalog
from trainyard import cli, gitrefs
from trainyard import review as R
from trainyard.errors import UsageError

ROOT = Path(__file__).resolve().parents[2]
GIT_ID = ["-c", "user.name=trainyard-tests", "-c", "user.email=tests@trainyard.invalid",
          "-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main"]
VERSIONING_ON = 'versioning_configuration={"status": "Enabled"}'


def git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(["git", *GIT_ID, *args], cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, f"git {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def edit_stack(repo: Path, stack: str, edit) -> None:
    path = repo / "stacks" / f"Pulumi.{stack}.yaml"
    doc = yaml.safe_load(path.read_text())
    edit(doc["config"])
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def pool(config: dict, name: str) -> dict:
    return next(p for p in config["trainyard:gpuPools"] if p["name"] == name)


def commit_all(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("review") / "project"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, repo / rel)
    # The base keeps a100 a managed node group with two standing nodes (prod gives it to
    # Karpenter), so the PR below replaces a node group and changes the desired-size cost.
    edit_stack(repo, "prod", lambda c: pool(c, "a100").update(provisioner="managed",
                                                              desiredSize=2))
    git(repo, "init", "-q")
    commit_all(repo, "base")
    git(repo, "tag", "base")

    # The PR: instance type change (a node group), max size doubled (a Karpenter NodePool),
    # a pool moved from Karpenter to a managed node group, bucket versioning suspended.
    edit_stack(repo, "prod", lambda c: pool(c, "a100").update(instanceTypes=["p4de.24xlarge"]))
    edit_stack(repo, "prod", lambda c: pool(c, "g-spot").update(
        maxSize=2 * pool(c, "g-spot")["maxSize"]))
    edit_stack(repo, "prod", lambda c: pool(c, "eval-spot").update(provisioner="managed"))
    buckets = repo / "components" / "storage" / "buckets.py"
    code = buckets.read_text()
    assert VERSIONING_ON in code, "components/storage/buckets.py no longer sets versioning like this; " \
        "update the test's PR edit"
    buckets.write_text(code.replace(VERSIONING_ON, VERSIONING_ON.replace("Enabled", "Suspended")))
    commit_all(repo, "prod: p4de for a100, g-spot to 16 nodes, eval-spot managed, versioning off")
    git(repo, "tag", "pr")

    # A base whose config no longer parses...
    git(repo, "checkout", "-q", "-b", "broken", "base")
    dev_yaml = (repo / "stacks" / "Pulumi.dev.yaml").read_text()
    edit_stack(repo, "dev", lambda c: c["trainyard:gpuPools"][0].update(
        instanceTypes=["p9.nonexistent"]))
    commit_all(repo, "dev: unknown instance type")
    # ...and a head that fixes it, adds a qa stack, removes staging and edits documentation.
    git(repo, "checkout", "-q", "-b", "misc", "broken")
    (repo / "stacks" / "Pulumi.dev.yaml").write_text(dev_yaml)
    shutil.copy(repo / "stacks" / "Pulumi.dev.yaml", repo / "stacks" / "Pulumi.qa.yaml")
    (repo / "stacks" / "Pulumi.staging.yaml").unlink()
    (repo / "docs").mkdir(exist_ok=True)
    (repo / "docs" / "note.md").write_text("a note\n")
    commit_all(repo, "fix dev, add qa, remove staging, a note")
    git(repo, "checkout", "-q", "main")
    return repo


def run_review(repo: Path, *argv: str) -> R.Review:
    args = cli.build_parser().parse_args(["review", "--repo", str(repo), "--jobs", "2", *argv])
    return R.review(args)


def stack(rv: R.Review, name: str) -> dict:
    return next(s for s in rv.to_json()["stacks"] if s["stack"] == name)


@pytest.fixture(scope="module")
def pr_review(repo) -> R.Review:
    return run_review(repo, "--base", "base", "--head", "pr", "--stacks", "prod")


# ----------------------------------------------------------------------------------------------
# The PR
# ----------------------------------------------------------------------------------------------
def test_names_the_replacement(pr_review):
    prod = stack(pr_review, "prod")
    assert prod["status"] == "changed"
    replaced = {r["name"]: r for r in prod["resources"] if r["action"] == "replace"}
    a100 = [r for n, r in replaced.items() if "a100" in n and
            r["type"] == "aws:eks/nodeGroup:NodeGroup"]
    assert a100, f"no a100 node-group replacement in {sorted(replaced)}"
    assert "instanceTypes[0]" in a100[0]["replace_paths"]
    assert a100[0]["rolls_nodes"]
    change = next(c for c in a100[0]["changes"] if c["path"] == "instanceTypes[0]")
    assert (change["old"], change["new"]) == ("p4d.24xlarge", "p4de.24xlarge")
    assert not prod["data_loss"]  # no stateful resource is replaced or deleted


def base_pool(repo: Path, name: str) -> dict:
    return pool(yaml.safe_load(git(repo, "show", "base:stacks/Pulumi.prod.yaml"))["config"], name)


def test_names_the_in_place_changes(pr_review, repo):
    prod = stack(pr_review, "prod")
    was = base_pool(repo, "g-spot")["maxSize"]
    updated = [r for r in prod["resources"] if r["action"] == "update"]
    paths = {(r["type"].split(":")[-1], c["path"], c["old"], c["new"])
             for r in updated for c in r["changes"]}
    gpus = load_catalog().get(base_pool(repo, "g-spot")["instanceTypes"][0]).gpus
    assert ("NodePool", "spec.limits.nvidia.com/gpu", str(was * gpus), str(2 * was * gpus)) \
        in paths  # g-spot is a Karpenter NodePool: its maximum is its limits
    assert ("BucketVersioning", "versioningConfiguration.status", "Enabled", "Suspended") in paths


def test_names_the_provisioner_change(pr_review):
    """A pool that changes provisioner is said as such, not only as resources added/deleted."""
    warnings = stack(pr_review, "prod")["warnings"]
    moved = [w for w in warnings if w.startswith("pool **eval-spot**")]
    assert moved and "Karpenter NodePool → managed node group" in moved[0], warnings
    assert not any(w.startswith("pool **g-spot**") for w in warnings)


def test_names_the_new_policy_violation(pr_review):
    policy = stack(pr_review, "prod")["policy"]
    assert policy["available"], policy
    new = [v for v in policy["introduced"] if v["policy"] == "s3-versioning"]
    assert new and any("checkpoints" in v["urn"] for v in new), policy["introduced"]
    assert not any(v["policy"] == "s3-versioning" for v in policy["fixed"])


def test_reports_the_cost_and_capacity_delta(pr_review, repo):
    prod = stack(pr_review, "prod")
    g_spot = base_pool(repo, "g-spot")
    spec = load_catalog().get(g_spot["instanceTypes"][0])
    cost = prod["cost"]
    assert cost["available"], cost
    # p4de lists above p4d and the a100 pool runs 2 nodes at desired size.
    assert cost["delta_monthly"] > 0
    assert cost["delta_monthly"] == pytest.approx(cost["head_monthly"] - cost["base_monthly"],
                                                  abs=0.01)
    assert cost["delta_monthly_at_max"] > cost["delta_monthly"]  # g-spot's extra 8 nodes
    cap = prod["capacity"]["delta"]
    more = g_spot["maxSize"]  # the pool doubled
    assert (cap["nodes"], cap["gpus"]) == (more, more * spec.gpus)
    assert cap["efa_interfaces"] == more * spec.max_efa  # an EFA pool: every interface
    assert cap["bf16_pflops"] == pytest.approx(more * spec.bf16_tflops_total / 1000, abs=0.002)


def test_markdown_is_a_pr_comment(pr_review):
    md = R.render_markdown(pr_review)
    assert md.startswith(R.COMMENT_MARKER)
    head, _, details = md.partition("<details>")
    assert "| **prod** |" in head and "🆕" in head  # summary table first
    assert "s3-versioning" in head  # new mandatory violations are called out above the fold
    assert "`instanceTypes[0]`: \"p4d.24xlarge\" → \"p4de.24xlarge\" **(forces replacement)**" \
        in details
    assert "spec.limits.nvidia.com/gpu`: " in details
    assert "$" in head and "GPUs" in head
    assert md.count("<details>") == md.count("</details>") == 1
    assert len(md) < R.MAX_COMMENT_CHARS


def test_each_ref_was_planned_with_its_own_code(pr_review, repo):
    # versioning is a code change: only the pr ref's components/storage/buckets.py suspends it, so the
    # diff can only show it if the base was planned with the base's code.
    assert pr_review.base_commit == git(repo, "rev-parse", "base").strip()
    assert pr_review.head_commit == git(repo, "rev-parse", "pr").strip()
    assert not stack(pr_review, "prod")["base_plan_reused"]


# ----------------------------------------------------------------------------------------------
# Stacks at one ref only, invalid config, reuse
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def misc_review(repo) -> R.Review:
    return run_review(repo, "--base", "broken", "--head", "misc",
                      "--stacks", "dev,qa,staging,prod")


def test_stack_added_and_removed(misc_review):
    added, removed = stack(misc_review, "qa"), stack(misc_review, "staging")
    assert added["status"] == "added" and added["summary"]["added"] > 0
    assert {r["action"] for r in added["resources"]} == {"create"}
    assert added["cost"]["available"] and added["cost"]["base_monthly"] == 0
    assert added["capacity"]["delta"]["gpus"] > 0
    assert removed["status"] == "removed" and removed["summary"]["removed"] > 0
    assert {r["action"] for r in removed["resources"]} == {"delete"}
    # Removing the file destroys nothing: one warning saying what `pulumi destroy` would delete,
    # no per-resource DATA LOSS cautions.
    assert removed["data_loss"] == []
    assert any("stack file is removed" in w and "would delete" in w and "Bucket" in w
               for w in removed["warnings"])
    assert removed["cost"]["delta_monthly"] == -removed["cost"]["base_monthly"] < 0
    md = R.render_markdown(misc_review)
    assert "| **qa** (new stack) |" in md and "| **staging** (stack removed) |" in md


def test_base_config_invalid_is_reported(misc_review):
    dev = stack(misc_review, "dev")
    assert dev["status"] == "base-invalid"
    assert dev["base_error"].startswith("config invalid: ")
    assert "p9.nonexistent" in dev["base_error"] and "gpuPools[0]" in dev["base_error"]
    assert dev["head_error"] is None and dev["summary"] is None
    assert dev["cost"]["available"] is False and dev["capacity"]["delta"] is None
    head_only = dev["head_only"]
    assert head_only["resources"] > 0 and head_only["monthly"] > 0
    assert head_only["violations"] is not None
    md = R.render_markdown(misc_review)
    assert "| **dev** | base config invalid |" in md
    assert "The base could not be planned: **config invalid: " in md
    assert "The head on its own: " in md


def test_plan_reused_when_nothing_plan_relevant_changed(misc_review):
    # Between broken and misc only other stacks' files and docs changed: prod is planned once.
    prod = stack(misc_review, "prod")
    assert prod["base_plan_reused"] and prod["status"] == "unchanged"
    assert prod["policy"]["introduced"] == [] and prod["cost"]["delta_monthly"] == 0
    assert not stack(misc_review, "dev")["base_plan_reused"]


def test_merge_base(repo):
    sha = lambda ref: git(repo, "rev-parse", ref).strip()  # noqa: E731
    assert gitrefs.merge_base(gitrefs.open_repo(repo), sha("pr"), sha("misc")) == sha("base")


@pytest.mark.parametrize("path, stack_name, relevant", [
    ("docs/review.md", "prod", False), ("README.md", "prod", False),
    ("tests/x.py", "prod", False), ("workloads/llm/train.py", "prod", False),
    ("policies/storage.py", "prod", False), ("stacks/Pulumi.dev.yaml", "prod", False),
    ("stacks/Pulumi.prod.yaml", "prod", True), ("components/storage/buckets.py", "prod", True),
    ("__main__.py", "prod", True), ("trainyard/mocks.py", "dev", True),
])
def test_plan_relevance(path, stack_name, relevant):
    assert R.plan_relevant(path, stack_name) is relevant


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------
def _cli(repo: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainyard", "review", *argv], cwd=repo,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(repo)},
                          capture_output=True, text=True)


def test_unknown_ref_exits_2_naming_it(repo):
    proc = _cli(repo, "--base", "no-such-branch", "--head", "pr")
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: unknown git ref 'no-such-branch': no such commit " \
        f"in {repo.resolve()}"
    assert "Traceback" not in proc.stderr


def test_unknown_stack_exits_2_and_removes_worktrees(repo):
    proc = _cli(repo, "--base", "base", "--head", "pr", "--stacks", "nope")
    assert proc.returncode == 2 and "unknown stack 'nope'" in proc.stderr
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1


def test_no_worktrees_left_behind(repo, pr_review):
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1


def test_dirty_tree_is_refused(repo, tmp_path):
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    (clone / "stacks" / "Pulumi.dev.yaml").write_text("config: {}\n")
    with pytest.raises(UsageError, match=r"uncommitted changes \(stacks/Pulumi.dev.yaml\).*"
                                         r"--allow-dirty"):
        run_review(clone, "--base", "origin/main")


def test_shallow_clone_is_refused(repo, tmp_path):
    shallow = tmp_path / "shallow"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{repo}", str(shallow))
    with pytest.raises(UsageError, match="shallow clone.*fetch-depth: 0"):
        run_review(shallow, "--base", "origin/main", "--head", "HEAD")


def test_not_a_git_repository(tmp_path):
    with pytest.raises(UsageError, match="not inside a git repository"):
        gitrefs.open_repo(tmp_path)


def test_cli_writes_markdown_and_json(repo, tmp_path):
    md, js = tmp_path / "review.md", tmp_path / "review.json"
    proc = _cli(repo, "--base", "misc", "--head", "misc", "--stacks", "qa", "--output", str(md),
                "--json", str(js))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and "1 stack(s) in" in proc.stderr
    assert md.read_text().startswith(R.COMMENT_MARKER)
    doc = yaml.safe_load(js.read_text())  # JSON is YAML
    assert doc["schema"] == "trainyard.review/v1"
    assert doc["stacks"][0]["status"] == "unchanged" and doc["stacks"][0]["base_plan_reused"]
