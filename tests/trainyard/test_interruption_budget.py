"""The Spot interruption budget (components/services/trainjob.py): the 2-minute notice less the time to
drain must cover the rest of a step and a checkpoint, for every Spot pool of every committed
stack and every workload preset that fits that pool's GPUs.

    notice (120 s) − drain margin (20) − torchrun exit margin (10) − step − save ≥ 0

The rendered runtime and TrainJob carry the same figures (grace 100 s, torchrun 90 s).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from components.services import trainjob
from components.services.k8s_names import SPOT_NOTICE_SECONDS
from trainyard.job import WORKLOADS

STACKS = sorted(p.name.split(".")[1] for p in
                (Path(__file__).resolve().parents[2] / "stacks").glob("Pulumi.*.yaml"))
GIB = 2**30


def spot_pools():
    from trainyard.synth import load_config

    for stack in STACKS:
        for pool in load_config(stack).gpu_pools:
            facts = trainjob.pool_facts(pool)
            if pool.capacity_type == "SPOT" and trainjob.supports_runtime(facts):
                yield stack, facts


SPOT = list(spot_pools())


def presets():
    for wl in WORKLOADS.values():
        module = importlib.import_module(wl.config_module)
        for name in module.PRESETS:
            yield wl.name, name, module.TrainConfig(preset=name)


def fewest_nodes(cfg, facts: trainjob.PoolFacts) -> int | None:
    """The fewest nodes of the pool the preset fits on at its defaults (FSDP shards over all
    GPUs, so more nodes need less memory each); None when not even max_nodes do."""
    for nodes in range(1, facts.max_nodes + 1):
        need = cfg.memory_estimate(nodes * facts.gpus, cuda=True).total
        if need <= facts.gpu_memory_gib * GIB:
            return nodes
    return None


def test_budget_is_the_notice_less_the_margins():
    b = trainjob.BUDGET
    assert b.notice_s == SPOT_NOTICE_SECONDS == 120
    assert b.grace_s == b.notice_s - b.drain_margin_s == 100
    assert b.shutdown_timeout_s == b.grace_s - b.exit_margin_s == 90
    assert b.slack_s(step_s=5, save_s=40) == 45 and b.fits(5, 40)
    assert b.slack_s(step_s=10, save_s=81) == -1 and not b.fits(10, 81)


@pytest.mark.parametrize("notice, drain, exit_", [(120, 110, 10), (120, -1, 10), (30, 20, 10)])
def test_a_budget_that_leaves_no_time_to_save_is_refused(notice, drain, exit_):
    with pytest.raises(ValueError):
        trainjob.interruption_budget(notice, drain, exit_)


def test_save_and_step_estimates():
    assert trainjob.save_seconds(0) == trainjob.SAVE_OVERHEAD_SECONDS
    assert trainjob.save_seconds(2.5e9, bytes_per_s=250e6, overhead_s=0) == 10
    assert trainjob.step_seconds(312e12, 312, mfu=0.5) == 2
    for bad in (lambda: trainjob.save_seconds(-1), lambda: trainjob.step_seconds(1, 0)):
        with pytest.raises(ValueError):
            bad()


def test_every_committed_stack_has_spot_pools_to_check():
    assert {stack for stack, _ in SPOT} == set(STACKS)  # dev, staging and prod all use Spot


@pytest.mark.parametrize("stack, facts", SPOT, ids=[f"{s}-{f.name}" for s, f in SPOT])
def test_every_preset_that_fits_a_spot_pool_saves_within_the_notice(stack, facts):
    fitting = []
    for workload, preset, cfg in presets():
        nodes = fewest_nodes(cfg, facts)
        if nodes is None:
            continue
        step_s = trainjob.step_seconds(cfg.step_flops(), facts.peak_tflops)
        save_s = trainjob.save_seconds(cfg.checkpoint_bytes(nodes))
        slack = trainjob.BUDGET.slack_s(step_s, save_s)
        fitting.append((workload, preset, nodes, round(slack)))
        assert slack >= 0, (
            f"{stack}/{facts.name}: {workload} {preset} on {nodes} node(s): step {step_s:.0f}s + "
            f"save {save_s:.0f}s > torchrun's {trainjob.BUDGET.shutdown_timeout_s}s")
    # A real preset of each workload fits every Spot pool (tiny is there for laptops).
    assert {w for w, p, _, _ in fitting if p != "tiny"} == {"llm", "vision"}, fitting
    # The runtime the pool gets carries the same budget.
    rt = trainjob.cluster_training_runtime(facts, "img:1")
    pod = rt["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]
    assert pod["spec"]["terminationGracePeriodSeconds"] == trainjob.BUDGET.grace_s
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    assert env["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] == str(trainjob.BUDGET.shutdown_timeout_s)


def test_the_largest_preset_is_the_tightest():
    """1b on one a100-spot node (A100 40GB): 16.2 GB to write, the case the budget is sized by."""
    stack, facts = next((s, f) for s, f in SPOT if f.name == "a100-spot")
    cfg = importlib.import_module("workloads.llm.config").TrainConfig(preset="1b")
    assert fewest_nodes(cfg, facts) == 1
    save_s = trainjob.save_seconds(cfg.checkpoint_bytes(1))
    step_s = trainjob.step_seconds(cfg.step_flops(), facts.peak_tflops)
    assert 60 < save_s + step_s < trainjob.BUDGET.shutdown_timeout_s
