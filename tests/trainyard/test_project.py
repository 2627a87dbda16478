"""Where the project lives: found from the working directory like the Pulumi CLI finds it (the
nearest Pulumi.yaml), never from where the package was installed; a non-editable install runs
the checkout's program, components, stacks and policies."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from trainyard.cli import main
from trainyard.errors import UsageError
from trainyard.project import find_root

ROOT = Path(__file__).resolve().parents[2]


def project(path: Path, name: str = "trainyard") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "Pulumi.yaml").write_text(f"name: {name}\nruntime: python\n")
    return path


def test_nearest_project_file_wins(tmp_path):
    outer = project(tmp_path / "outer")
    inner = project(outer / "nested" / "inner")
    (inner / "stacks" / "deep").mkdir(parents=True)
    assert find_root(inner / "stacks" / "deep") == inner.resolve()
    assert find_root(outer / "nested") == outer.resolve()
    assert find_root(ROOT / "docs") == ROOT


def test_another_pulumi_project_is_not_ours(tmp_path):
    other = project(tmp_path / "other", name="website")
    with pytest.raises(UsageError, match=r"Pulumi.yaml is Pulumi project 'website', not "
                                         r"'trainyard'; run from a trainyard checkout"):
        find_root(other)


def test_outside_any_project_every_command_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for argv in (["plan", "--stack", "dev"], ["check", "--stack", "dev"],
                 ["cost", "--stack", "dev"], ["review", "--base", "HEAD"],
                 ["job", "render", "llm", "--stack", "dev", "--pool", "p", "--nodes", "1"],
                 ["preflight", "--stack", "dev"]):
        assert main(argv) == 2, argv
        assert capsys.readouterr().err == (
            f"error: not inside a trainyard project: no Pulumi.yaml in {tmp_path.resolve()} or "
            "any parent; run from a checkout\n"), argv
    with pytest.raises(SystemExit) as e:  # help needs no project
        main(["plan", "--help"])
    assert e.value.code == 0


def test_review_plans_the_project_of_the_working_directory(tmp_path, monkeypatch):
    """`review` opens the git repository of the project found from the working directory (a
    project that is not in git says so)."""
    import trainyard.review as review
    from trainyard.cli import build_parser

    monkeypatch.chdir(project(tmp_path / "checkout"))
    args = build_parser().parse_args(["review", "--base", "HEAD"])
    with pytest.raises(UsageError, match=f"{tmp_path / 'checkout'} is not inside a git "
                                         "repository"):
        review.review(args)


def _copy(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def test_a_non_editable_install_runs_the_checkout_it_is_run_from(tmp_path):
    """Build a wheel of this tree, install it (no deps) into a fresh virtual environment that
    borrows the dependencies of this one, and run it from a copy of the checkout: trainyard
    comes from the wheel, the program, components, stacks and policies from the checkout."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for package in ("trainyard", "components", "workloads", "policies"):
        _copy(ROOT / package, src / package)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "wheels"), str(src)], check=True, timeout=120)
    (wheel,) = (tmp_path / "wheels").glob("trainyard-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=60)
    python = venv / "bin" / "python"
    subprocess.run([*pip, "--python", str(python), "install", "--no-deps", "--no-index",
                    str(wheel)], check=True, timeout=120)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; "
                                "print(sysconfig.get_paths()['purelib'])"], check=True,
                               capture_output=True, text=True).stdout.strip())
    # The dependencies (pulumi, ...) from this environment, after the wheel's own packages.
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for name in ("Pulumi.yaml", "__main__.py"):
        shutil.copy(ROOT / name, checkout / name)
    for package in ("components", "stacks", "policies", "workloads"):
        _copy(ROOT / package, checkout / package)
    # A stack the wheel cannot know about: only the checkout has it.
    shutil.copy(checkout / "stacks" / "Pulumi.dev.yaml", checkout / "stacks" / "Pulumi.qa.yaml")

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    plan, checked = tmp_path / "qa.json", tmp_path / "check.json"
    script = (
        "import json, sys\n"
        "from trainyard.cli import main\n"
        f"rc = [main(['plan', '--stack', 'qa', '--json', {str(plan)!r}, '--quiet']),\n"
        f"      main(['check', '--plan', {str(plan)!r}, '--json', {str(checked)!r}])]\n"
        "import trainyard, components.config, policies\n"
        "print(json.dumps({'rc': rc, 'trainyard': trainyard.__file__,\n"
        "                  'components': components.config.__file__,\n"
        "                  'policies': policies.__file__}))\n")
    proc = subprocess.run([str(python), "-c", script], cwd=checkout / "stacks", env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["rc"][0] == 0 and got["rc"][1] in (0, 1), proc.stderr
    assert Path(got["trainyard"]).is_relative_to(venv), got
    assert Path(got["components"]).is_relative_to(checkout), got
    assert Path(got["policies"]).is_relative_to(checkout), got
    assert json.loads(plan.read_text())["stack"] == "qa"
    assert json.loads(checked.read_text())["policies_run"] > 0

    outside = subprocess.run([str(venv / "bin" / "trainyard"), "plan", "--stack", "dev"],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert outside.returncode == 2
    assert outside.stderr == (f"error: not inside a trainyard project: no Pulumi.yaml in "
                              f"{tmp_path.resolve()} or any parent; run from a checkout\n")
