"""The CLI's shared behaviour: every subcommand describes itself in --help, numeric flags and
output paths are refused up front (exit 2, one line)."""

from __future__ import annotations

import argparse

import pytest

from trainyard.cli import build_parser, main


def _subcommands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from _subcommands(sub, (*prefix, name))


SUBCOMMANDS = list(_subcommands(build_parser()))


def test_every_subcommand_is_listed():
    names = {" ".join(path) for path, _ in SUBCOMMANDS}
    assert {"plan", "check", "cost", "review", "job", "job render", "preflight"} <= names


@pytest.mark.parametrize("path", [p for p, _ in SUBCOMMANDS], ids=" ".join)
def test_help_has_a_description(capsys, path):
    with pytest.raises(SystemExit) as e:
        main([*path, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    parser = dict(SUBCOMMANDS)[path]
    assert parser.description and len(parser.description.split()) >= 8, path
    # argparse prints the description between the usage and the arguments
    usage, _, rest = out.partition("\n\n")
    assert usage.startswith("usage: trainyard " + " ".join(path))
    assert rest.split()[:3] == parser.description.split()[:3], out


@pytest.mark.parametrize("value, message", [
    ("0", "argument --jobs: must be at least 1, got 0"),
    ("-2", "argument --jobs: must be at least 1, got -2"),
    ("two", "argument --jobs: expected a whole number >= 1, got 'two'"),
])
def test_review_jobs_must_be_positive(capsys, value, message):
    with pytest.raises(SystemExit) as e:
        main(["review", "--base", "HEAD", "--jobs", value])
    assert e.value.code == 2
    assert capsys.readouterr().err == f"error: {message}\n"


@pytest.mark.parametrize("flag", ["--output", "--json"])
def test_review_output_paths_are_checked_before_planning(capsys, monkeypatch, tmp_path, flag):
    import trainyard.review as review

    def no_review(args):
        raise AssertionError("planned before checking the output path")

    monkeypatch.setattr(review, "review", no_review)
    target = tmp_path / "missing" / "review.md"
    assert main(["review", "--base", "HEAD", flag, str(target)]) == 2
    assert capsys.readouterr().err == \
        f"error: {target}: cannot write: no directory {target.parent}\n"
