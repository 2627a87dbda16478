"""`trainyard:storage` bad input: rejected at config parse with the key path, by
components.config.load and by the CLI (exit 2, one line, nothing synthesized)."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components.config import ConfigError, load

ROOT = Path(__file__).resolve().parents[2]
K = "trainyard:storage"


def raw_stack(stack: str, **storage) -> dict:
    raw = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]
    raw = copy.deepcopy(raw)
    section = raw.setdefault(K, {})
    for path, value in storage.items():
        *parents, last = path.split(".")
        node = section
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return raw


def problems(raw: dict, stack: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load(raw, stack)
    return e.value.problems


BAD = [
    # (stack, {dotted storage path: value}, exact problem line expected)
    ("dev", {"bucketPrefix": "Bad_Prefix"}, f"{K}.bucketPrefix: 'Bad_Prefix' is not a valid bucket name prefix"),
    ("dev", {"bucketPrefix": "ab"}, f"{K}.bucketPrefix: 'ab' is not a valid bucket name prefix"),
    ("dev", {"bucketPrefix": "a" * 25}, f"{K}.bucketPrefix: '{'a' * 25}' is not a valid bucket name prefix"),
    ("dev", {"bucketPrefix": "trainyard-"}, f"{K}.bucketPrefix: 'trainyard-' is not a valid"),
    ("dev", {"bucketPrefix": "-trainyard"}, f"{K}.bucketPrefix: '-trainyard' is not a valid"),
    ("dev", {"bucketPrefix": "train--yard"}, f"{K}.bucketPrefix: 'train--yard' is not a valid"),
    ("dev", {"bucketPrefix": "train.yard"}, f"{K}.bucketPrefix: 'train.yard' is not a valid"),
    ("dev", {"bucketPrefix": "xn--trainyard"}, f"{K}.bucketPrefix: 'xn--trainyard' is not a valid"),
    ("dev", {"bucketPrefix": "sthree-data"}, f"{K}.bucketPrefix: 'sthree-data' is not a valid"),
    ("dev", {"bucketPrefix": "amzn-s3-demo-ml"}, f"{K}.bucketPrefix: 'amzn-s3-demo-ml' is not a valid"),
    ("dev", {"bucketPrefix": 42}, f"{K}.bucketPrefix: expected a string, got an integer 42"),
    ("dev", {"checkpointNoncurrentDays": 0}, f"{K}.checkpointNoncurrentDays: 0 is below the minimum 1"),
    ("dev", {"checkpointNoncurrentDays": 3651}, f"{K}.checkpointNoncurrentDays: 3651 is above the maximum 3650"),
    ("dev", {"checkpointNoncurrentDays": "30"}, f"{K}.checkpointNoncurrentDays: expected an integer, got a string '30'"),
    ("dev", {"datasetTieringDays": -1}, f"{K}.datasetTieringDays: -1 is below the minimum 0"),
    ("dev", {"datasetTieringDays": 4000}, f"{K}.datasetTieringDays: 4000 is above the maximum 3650"),
    ("dev", {"accessLogRetentionDays": 0}, f"{K}.accessLogRetentionDays: 0 is below the minimum 1"),
    ("dev", {"accessLogRetentionDays": 3651}, f"{K}.accessLogRetentionDays: 3651 is above the maximum 3650"),
    ("dev", {"retainOnDelete": "yes"}, f"{K}.retainOnDelete: expected true or false, got a string 'yes'"),
    ("dev", {"efs.throughputMode": "provisioned"}, f"{K}.efs.throughputMode: 'provisioned' is not one of bursting, elastic"),
    ("dev", {"efs.backup": True}, f"{K}.efs.backup: unknown key"),
    ("dev", {"fsx.enabled": True}, f"{K}.fsx.enabled: true needs an EFA GPU pool"),
    ("staging", {"fsx.enabled": True, "fsx.storageCapacityGiB": 3000}, f"{K}.fsx.storageCapacityGiB: 3000 is not allowed for PERSISTENT_2 (1200 or a multiple of 2400 GiB)"),
    ("prod", {"fsx.storageCapacityGiB": 3600}, f"{K}.fsx.storageCapacityGiB: 3600 is not allowed for PERSISTENT_2"),
    ("prod", {"fsx.storageCapacityGiB": 600}, f"{K}.fsx.storageCapacityGiB: 600 is below the minimum 1200"),
    ("prod", {"fsx.perUnitStorageThroughput": 200}, f"{K}.fsx.perUnitStorageThroughput: 200 is not one of 125, 250, 500, 1000"),
    ("prod", {"fsx.storageCapacity": 2400}, f"{K}.fsx.storageCapacity: unknown key"),
]


@pytest.mark.parametrize("stack,changes,expected", BAD, ids=[f"{b[0]}-{list(b[1])[-1]}-{i}"
                                                             for i, b in enumerate(BAD)])
def test_bad_storage_input_rejected_with_key_path(stack, changes, expected):
    found = problems(raw_stack(stack, **changes), stack)
    assert any(p.startswith(expected) for p in found), found
    assert all("\n" not in p for p in found)


@pytest.mark.parametrize("stack,changes", [
    ("dev", {"bucketPrefix": "a" * 24}),
    ("dev", {"bucketPrefix": "acme-ml-01"}),
    ("dev", {"datasetTieringDays": 0, "checkpointNoncurrentDays": 1,
             "accessLogRetentionDays": 3650}),
    ("prod", {"fsx.storageCapacityGiB": 1200, "fsx.perUnitStorageThroughput": 1000}),
    ("prod", {"fsx.storageCapacityGiB": 7200, "fsx.perUnitStorageThroughput": 125}),
    ("staging", {"fsx.enabled": True}),  # staging has an EFA pool
    ("dev", {"efs.enabled": False, "efs.throughputMode": "bursting"}),
])
def test_good_storage_input_accepted(stack, changes):
    cfg = load(raw_stack(stack, **changes), stack)
    assert cfg.storage is not None


def test_every_storage_problem_reported_at_once():
    found = problems(raw_stack("dev", bucketPrefix="BAD", checkpointNoncurrentDays=0,
                               **{"fsx.enabled": True, "fsx.perUnitStorageThroughput": 7}), "dev")
    keys = {p.split(":")[1] for p in found}
    assert {"storage.bucketPrefix", "storage.checkpointNoncurrentDays", "storage.fsx.enabled",
            "storage.fsx.perUnitStorageThroughput"} <= keys


def run_plan(path: Path, out: Path):
    return subprocess.run([sys.executable, "-m", "trainyard", "plan", "--stack-file", str(path),
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("stack,changes,line", [
    ("dev", {"bucketPrefix": "My_Bucket"},
     f"error: {K}.bucketPrefix: 'My_Bucket' is not a valid bucket name prefix"),
    ("dev", {"checkpointNoncurrentDays": 0},
     f"error: {K}.checkpointNoncurrentDays: 0 is below the minimum 1"),
    ("dev", {"fsx.enabled": True},
     f"error: {K}.fsx.enabled: true needs an EFA GPU pool"),
    ("prod", {"fsx.storageCapacityGiB": 3000},
     f"error: {K}.fsx.storageCapacityGiB: 3000 is not allowed for PERSISTENT_2"),
])
def test_cli_rejects_bad_storage_config(tmp_path, stack, changes, line):
    path = tmp_path / f"Pulumi.{stack}-bad.yaml"
    path.write_text(yaml.safe_dump({"config": raw_stack(stack, **changes)}))
    out = tmp_path / "plan.json"
    r = run_plan(path, out)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(line), r.stderr
    assert "Traceback" not in r.stderr and not out.exists()
