"""Shared fixtures: each committed stack is synthesized once per test session."""

from __future__ import annotations

import copy
import functools

import pytest

from trainyard.synth import synthesize

STACKS = ("dev", "staging", "prod")


@functools.lru_cache(maxsize=None)
def _plan(stack: str) -> dict:
    return synthesize(stack)


@pytest.fixture(scope="session")
def plan_for():
    """`plan_for("prod")` -> a private deep copy of that stack's synthesized plan."""
    return lambda stack: copy.deepcopy(_plan(stack))


@pytest.fixture(scope="session", params=STACKS)
def any_plan(request):
    return copy.deepcopy(_plan(request.param))


def resources(plan: dict, type_: str) -> list[dict]:
    return [r for r in plan["resources"] if r["type"] == type_]


def by_id(plan: dict) -> dict:
    return {r["id"]: r for r in plan["resources"] if r.get("id")}
