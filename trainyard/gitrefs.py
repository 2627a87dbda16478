"""Git plumbing for `trainyard review`: resolve refs, refuse unusable checkouts, and check a ref
out into a temporary worktree that is always removed again.

Every failure a user can cause (not a git repository, unknown ref, shallow clone, dirty tree) is
a UsageError naming what to do.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from trainyard.errors import UsageError


@dataclass(frozen=True)
class Repo:
    top: Path
    """The repository's top-level directory."""
    project: Path
    """The trainyard project (holds __main__.py, stacks/); may be a subdirectory of `top`."""

    @property
    def rel(self) -> Path:
        return self.project.relative_to(self.top)


def git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise UsageError("git is not installed (trainyard review needs it)") from None
    if check and proc.returncode != 0:
        msg = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise UsageError(f"git {' '.join(args)} failed: {msg[-1] if msg else proc.returncode}")
    return proc


def open_repo(project: Path) -> Repo:
    proc = git(project, "rev-parse", "--show-toplevel", check=False)
    if proc.returncode != 0:
        raise UsageError(f"{project} is not inside a git repository (trainyard review compares "
                         "git refs)")
    return Repo(Path(proc.stdout.strip()).resolve(), project.resolve())


def ensure_full_history(repo: Repo) -> None:
    """A shallow clone lacks the base commit (or has it without history): refuse up front."""
    proc = git(repo.top, "rev-parse", "--is-shallow-repository", check=False)
    if proc.stdout.strip() == "true":
        raise UsageError(
            "this is a shallow clone: the base ref's commits are missing. Fetch the full "
            "history (`git fetch --unshallow origin`), or in GitHub Actions check out with "
            "`actions/checkout` and `fetch-depth: 0`")


def resolve(repo: Repo, ref: str) -> str:
    """The commit `ref` names, or a UsageError naming the ref."""
    if not ref or ref.startswith("-"):
        raise UsageError(f"unknown git ref {ref!r}")
    proc = git(repo.top, "rev-parse", "--verify", "--quiet", "--end-of-options",
               f"{ref}^{{commit}}", check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        hint = ""
        if ref.startswith("origin/"):
            hint = f" (fetch it first: git fetch origin {ref.removeprefix('origin/')})"
        raise UsageError(f"unknown git ref {ref!r}: no such commit in {repo.top}{hint}")
    return proc.stdout.strip()


def merge_base(repo: Repo, a: str, b: str) -> str:
    proc = git(repo.top, "merge-base", a, b, check=False)
    if proc.returncode != 0:
        raise UsageError(f"{a[:12]} and {b[:12]} have no common ancestor")
    return proc.stdout.strip()


def dirty_paths(repo: Repo) -> list[str]:
    """Uncommitted changes under the project: modified, staged and untracked (not ignored)."""
    proc = git(repo.top, "status", "--porcelain=v1", "--untracked-files=normal", "--",
               str(repo.rel) if str(repo.rel) != "." else ".")
    return [line[3:] for line in proc.stdout.splitlines() if line.strip()]


def describe(repo: Repo, sha: str) -> str:
    """One line: short sha and subject."""
    proc = git(repo.top, "log", "-1", "--format=%h %s", sha, check=False)
    return proc.stdout.strip() or sha[:12]


@contextlib.contextmanager
def worktree(repo: Repo, sha: str, label: str) -> Iterator[Path]:
    """Check `sha` out (detached) into a temporary worktree; yield the project directory in
    it. The worktree is removed afterwards, also on errors and interrupts."""
    parent = Path(tempfile.mkdtemp(prefix=f"trainyard-review-{label}-"))
    path = parent / "tree"
    try:
        # No hooks: a post-checkout hook has no business running for a throwaway checkout.
        git(repo.top, "-c", "core.hooksPath=/dev/null", "worktree", "add", "--detach",
            "--quiet", str(path), sha)
        yield path / repo.rel
    finally:
        git(repo.top, "worktree", "remove", "--force", str(path), check=False)
        shutil.rmtree(parent, ignore_errors=True)
        git(repo.top, "worktree", "prune", check=False)


def changed_paths(repo: Repo, base: str, head: Optional[str]) -> list[str]:
    """Project-relative paths that differ between `base` and `head` (a commit, or None for the
    working tree, untracked files included)."""
    scope = str(repo.rel) if str(repo.rel) != "." else "."
    if head is not None:
        out = git(repo.top, "diff", "--name-only", "--no-renames", base, head, "--", scope).stdout
    else:
        out = git(repo.top, "diff", "--name-only", "--no-renames", base, "--", scope).stdout
        out += git(repo.top, "ls-files", "--others", "--exclude-standard", "--", scope).stdout
    paths = []
    for line in out.splitlines():
        p = (repo.top / line.strip()).resolve()
        try:
            paths.append(p.relative_to(repo.project).as_posix())
        except ValueError:
            continue
    return sorted(set(paths))
