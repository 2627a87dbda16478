"""Typed config: every class of bad input gives its key path and value; good stacks parse."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components.config import ConfigError, load

ROOT = Path(__file__).resolve().parents[2]


def stack_raw(stack: str) -> dict:
    return yaml.safe_load((ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]


def problems(raw, stack="dev") -> list[str]:
    with pytest.raises(ConfigError) as e:
        load(raw, stack)
    return e.value.problems


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_committed_stacks_parse(stack):
    cfg = load(stack_raw(stack), stack)
    assert cfg.environment == stack
    assert cfg.tags["environment"] == stack and cfg.tags["owner"] and cfg.tags["cost-center"]


def test_prod_pools_shape():
    cfg = load(stack_raw("prod"), "prod")
    pools = {p.name: p for p in cfg.gpu_pools}
    assert pools["a100"].efa and pools["a100"].placement_group
    assert pools["h100"].reserved and not pools["h100"].placement_group
    assert pools["h100"].capacity_type == "CAPACITY_BLOCK"
    assert pools["g-spot"].capacity_type == "SPOT" and len(pools["g-spot"].instance_types) == 2
    assert not pools["eval-spot"].efa and len(pools["eval-spot"].availability_zones) == 3
    assert cfg.efa_azs == ("us-east-1a", "us-east-1b")


def mutate(stack="dev", **changes):
    raw = copy.deepcopy(stack_raw(stack))
    for path, value in changes.items():
        *parents, last = path.split("/")
        node = raw
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if value is DELETE:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return raw


DELETE = object()

BAD = [
    # (stack, {path: value}, expected message fragment)
    ("dev", {"trainyard:network/vpcCidr": DELETE}, "trainyard:network.vpcCidr: is required"),
    ("dev", {"trainyard:network/vpcCidr": "10.0.0.1/16"}, "trainyard:network.vpcCidr: '10.0.0.1/16' is not a valid IPv4 CIDR"),
    ("dev", {"trainyard:network/natGateway": "single"}, "trainyard:network.natGateway: unknown key"),
    ("dev", {"trainyard:network/flowLogRetentionDays": "30"}, "trainyard:network.flowLogRetentionDays: expected an integer, got a string '30'"),
    ("dev", {"trainyard:network/flowLogRetentionDays": 31}, "trainyard:network.flowLogRetentionDays: 31 is not a CloudWatch Logs retention period"),
    ("dev", {"trainyard:network/availabilityZones": ["us-east-1a", "us-west-2a"]}, "trainyard:network.availabilityZones[1]: 'us-west-2a' is not in region 'us-east-1'"),
    ("dev", {"trainyard:gpuPools/0/instanceTypes": ["p4x.24xlarge", "g6.xlarge"]}, "trainyard:gpuPools[0].instanceTypes[0]: 'p4x.24xlarge' is not a known instance type"),
    ("dev", {"trainyard:gpuPools/0/minSize": 3}, "trainyard:gpuPools[0].minSize: minSize 3 is greater than maxSize 2"),
    ("dev", {"trainyard:gpuPools/0/instanceTypes": ["g5.xlarge"]}, "trainyard:gpuPools[0].instanceTypes: a SPOT pool needs at least 2 instance types"),
    ("dev", {"trainyard:gpuPools/0/instanceTypes": ["g5.xlarge", "g5.12xlarge"]}, "trainyard:gpuPools[0].instanceTypes: mixes instance shapes"),
    ("dev", {"trainyard:gpuPools/0/efa": True}, "trainyard:gpuPools[0].instanceTypes[0]: efa is true but 'g5.xlarge' has no EFA support"),
    ("dev", {"trainyard:gpuPools/0/amiType": "AL2_x86_64_GPU"}, "trainyard:gpuPools[0].amiType: 'AL2_x86_64_GPU' is not one of"),
    ("dev", {"trainyard:gpuPools/0/availabilityZones": ["us-east-1c"]}, "trainyard:gpuPools[0].availabilityZones[0]: 'us-east-1c' is not one of the stack's availability zones"),
    ("dev", {"trainyard:cluster/kubernetesVersion": "1.27"}, "trainyard:cluster.kubernetesVersion: '1.27' is not a Kubernetes version in the EKS calendar"),
    ("dev", {"trainyard:environment": "qa"}, "trainyard:environment: 'qa' is not one of dev, prod, staging"),
    ("dev", {"trainyard:tags/owner": DELETE}, "trainyard:tags.owner: is required"),
    ("dev", {"trainyard:storage/bucketPrefix": "Bad_Prefix"}, "trainyard:storage.bucketPrefix: 'Bad_Prefix' is not a valid bucket name prefix"),
    ("dev", {"trainyard:storage/checkpointNoncurrentDays": 0}, "trainyard:storage.checkpointNoncurrentDays: 0 is below the minimum 1"),
    ("dev", {"trainyard:storage/fsx": {"enabled": True}}, "trainyard:storage.fsx.enabled: true needs an EFA GPU pool"),
    ("prod", {"trainyard:storage/fsx/storageCapacityGiB": 3000}, "trainyard:storage.fsx.storageCapacityGiB: 3000 is not allowed for PERSISTENT_2"),
    ("prod", {"trainyard:gpuPools/0/availabilityZones": ["us-east-1a", "us-east-1b"]}, "trainyard:gpuPools[0].availabilityZones: an EFA pool must live in exactly one availability zone"),
    ("prod", {"trainyard:gpuPools/1/capacityReservation": DELETE}, "trainyard:gpuPools[1].capacityReservation: is required for a CAPACITY_BLOCK pool"),
    ("prod", {"trainyard:gpuPools/1/availabilityZones": ["us-east-1a"]}, "trainyard:gpuPools[1].availabilityZones: 'us-east-1a' is not the reservation's availability zone 'us-east-1b'"),
    ("prod", {"trainyard:gpuPools/1/placementGroup": True}, "trainyard:gpuPools[1].placementGroup: true is not allowed on a reserved pool"),
    ("prod", {"trainyard:gpuPools/1/name": "a100"}, "trainyard:gpuPools: pool name 'a100' is used more than once"),
    ("prod", {"trainyard:network/privateSubnetPrefix": 24}, "trainyard:network.privateSubnetPrefix: private subnet 10.30.0.0/24 in us-east-1a has 251 usable addresses but the pools may need"),
    ("prod", {"aws:region": "mars-1"}, "aws:region: 'mars-1' is not an AWS region"),
    ("dev", {"trainyard:kubeflow/trainingImage": "repo/train:latest"}, "trainyard:kubeflow.trainingImage: 'repo/train:latest' uses the moving tag :latest"),
    ("dev", {"trainyard:kubeflow/trainingImage": "repo/train"}, "trainyard:kubeflow.trainingImage: 'repo/train' needs a version tag or digest"),
    ("dev", {"trainyard:kubeflow/trainingImage": DELETE}, "trainyard:kubeflow.trainingImage: is required"),
]


@pytest.mark.parametrize("stack,changes,expected", BAD, ids=[b[2].split(":")[1][:40] for b in BAD])
def test_bad_input_names_key_and_value(stack, changes, expected):
    found = problems(mutate(stack, **changes), stack)
    assert any(expected in p for p in found), found
    for p in found:
        assert "\n" not in p


def test_pinned_images_accepted():
    for image in ("registry.example.com:5000/team/train:0.1.0",
                  "repo/train@sha256:" + "a" * 64):
        raw = mutate("dev", **{"trainyard:kubeflow/trainingImage": image})
        assert load(raw, "dev").kubeflow.training_image == image


def test_all_problems_reported_at_once():
    found = problems(mutate("dev", **{"trainyard:network/vpcCidr": "nope",
                                      "trainyard:gpuPools/0/maxSize": -1,
                                      "trainyard:cluster/kubernetesVersion": "1.20"}))
    assert len(found) >= 3


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "trainyard", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def write_stack(tmp_path, raw, name="Pulumi.bad.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"config": raw}))
    return path


def test_cli_bad_config_exit_2_one_line_no_traceback(tmp_path):
    raw = mutate("dev", **{"trainyard:gpuPools/0/instanceTypes": ["p4x.24xlarge", "g6.xlarge"]})
    out = tmp_path / "plan.json"
    r = run_cli("plan", "--stack-file", str(write_stack(tmp_path, raw)), "--json", str(out))
    assert r.returncode == 2
    assert r.stderr.strip() == ("error: trainyard:gpuPools[0].instanceTypes[0]: 'p4x.24xlarge' "
                                "is not a known instance type")
    assert "Traceback" not in r.stderr and not out.exists()  # nothing synthesized


def test_cli_malformed_yaml(tmp_path):
    path = tmp_path / "Pulumi.broken.yaml"
    path.write_text("config:\n  trainyard:network: {vpcCidr: [\n")
    r = run_cli("plan", "--stack-file", str(path))
    assert r.returncode == 2 and "malformed YAML" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_cli_unknown_stack():
    r = run_cli("plan", "--stack", "qa")
    assert r.returncode == 2
    assert "unknown stack 'qa'" in r.stderr and "dev, prod, staging" in r.stderr


def test_cli_bad_flag():
    r = run_cli("plan", "--stak", "dev")
    assert r.returncode == 2 and r.stderr.startswith("error:") and "Traceback" not in r.stderr
