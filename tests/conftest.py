"""Shared fixtures: each committed stack is synthesized once per test session."""

from __future__ import annotations

import asyncio
import copy
import functools
from pathlib import Path

import pytest
import yaml

from trainyard.synth import synthesize

STACKS = ("dev", "staging", "prod")
ROOT = Path(__file__).resolve().parents[1]


def stack_raw(stack: str) -> dict:
    """The `config:` mapping of stacks/Pulumi.<stack>.yaml, read afresh (tests edit it)."""
    return yaml.safe_load((ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]


def section_problems(stack: str, key: str, section) -> list[str]:
    """The config problems of `stack` with `trainyard:<key>` replaced by `section` (the test
    fails when the config loads)."""
    from components.config import ConfigError, load

    raw = stack_raw(stack)
    raw[f"trainyard:{key}"] = section
    with pytest.raises(ConfigError) as e:
        load(raw, stack)
    return e.value.problems


@functools.cache
def _plan(stack: str) -> dict:
    return synthesize(stack)


@functools.cache
def _managed_plan(stack: str) -> dict:
    """`stack` with every GPU pool a managed node group (`provisioner: managed`): the node-group
    path of elastic pools (EFA launch templates, placement groups, Spot node groups) stays
    tested although the committed stacks give those pools to Karpenter."""
    import tempfile
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1]
    raw = yaml.safe_load((root / "stacks" / f"Pulumi.{stack}.yaml").read_text())
    for pool in raw["config"]["trainyard:gpuPools"]:
        pool["provisioner"] = "managed"
    path = Path(tempfile.mkdtemp(prefix="trainyard-managed-")) / f"Pulumi.{stack}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return synthesize(stack, path)


@pytest.fixture(scope="session")
def managed_plan_for():
    """`managed_plan_for("prod")` -> a private copy of the stack planned with every GPU pool a
    managed node group."""
    return lambda stack: copy.deepcopy(_managed_plan(stack))


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


def synthesize_program(program, stack: str = "unit", region: str = "us-east-1") -> dict:
    """Run `program()` (which creates resources directly, e.g. one component with a test
    Provider) under the same mocks and recorder as `trainyard plan`; returns a plan dict with
    the same shape (no stack outputs)."""
    import pulumi
    from pulumi.runtime import settings
    from pulumi.runtime.mocks import _sync_await
    from pulumi.runtime.stack import run_pulumi_func

    from trainyard.mocks import TrainyardMocks
    from trainyard.synth import PROJECT, _plain, _recording_monitor

    mocks = TrainyardMocks(region)
    monitor = _recording_monitor(mocks)
    settings.set_root_resource(None)  # type: ignore[arg-type]
    pulumi.runtime.set_all_config({}, [])
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor)
    settings.SETTINGS.rpc_manager.clear()
    settings.SETTINGS.outputs.clear()
    _sync_await(run_pulumi_func(program))
    return {"project": PROJECT, "stack": stack, "outputs": {},
            "resources": [_plain(r) for _, r in sorted(monitor.records.items())]}


def storage_unit_plan(stack: str = "prod", teams: tuple = ("research", "applied"),
                      with_cluster: bool = True) -> dict:
    """Plan of just the Storage component for `stack`'s config, wired to stand-in network ids
    and (with_cluster) a test Kubernetes provider, a cluster name and one namespace per team:
    lets the Kubernetes side and Pod Identity be tested before the cluster layer exists."""

    def program():
        import pulumi_kubernetes as k8s

        from components.services.identity import ClusterAttachment
        from components.storage.storage import (
            Storage,
            StorageArgs,
            fsx_availability_zone,
            gpu_availability_zones,
        )
        from trainyard.synth import load_config

        cfg = load_config(stack)
        attachment = None
        if with_cluster:
            provider = k8s.Provider("unit-k8s", kubeconfig="{}")
            namespaces = {t: k8s.core.v1.Namespace(
                f"unit-{t}", metadata={"name": t},
                opts=__import__("pulumi").ResourceOptions(provider=provider)) for t in teams}
            attachment = ClusterAttachment(cluster_name="unit-cluster", provider=provider,
                                           namespaces=namespaces)
        Storage("unit-storage", StorageArgs(
            config=cfg.storage, vpc_id="vpc-unit",
            private_subnet_ids={az: f"subnet-{az}" for az in cfg.network.availability_zones},
            gpu_azs=gpu_availability_zones(cfg), efa_az=fsx_availability_zone(cfg),
            node_security_group_ids={"cluster": "sg-cluster", "efa": "sg-efa"},
            cluster=attachment, tags=cfg.tags))

    return synthesize_program(program, stack=f"unit-{stack}")


@pytest.fixture(autouse=True)
def _an_event_loop():
    """Pulumi's mock runtime asks for the thread's event loop. A test that ran asyncio.run()
    (the serving bench, the local model servers) leaves the main thread with none set, so the
    next test in the same worker would fail with "There is no current event loop"."""
    try:
        asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())
    yield
