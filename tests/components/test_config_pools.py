"""Bad cluster / GPU-pool config is rejected at parse time: exit code 2 and exactly one line
naming the key path, both from `components.config.load` and `python -m trainyard plan`."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components.config import ConfigError, load

ROOT = Path(__file__).resolve().parents[2]
P = "trainyard:gpuPools"


def stack_raw(stack):
    return yaml.safe_load((ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]


def with_pool(stack, index, **changes):
    raw = copy.deepcopy(stack_raw(stack))
    entry = raw[P][index]
    for key, value in changes.items():
        if value is None:
            entry.pop(key, None)
        else:
            entry[key] = value
    return raw


def with_cluster(stack, **changes):
    raw = copy.deepcopy(stack_raw(stack))
    raw["trainyard:cluster"].update(changes)
    return raw


# (id, raw config, the one expected problem)
CASES = [
    ("efa-without-efa-type", with_pool("prod", 0, instanceTypes=["g5.2xlarge"]),
     f"{P}[0].instanceTypes[0]: efa is true but 'g5.2xlarge' has no EFA support"),
    ("efa-small-trn1", with_pool("prod", 0, instanceTypes=["trn1.2xlarge"],
                                 amiType="AL2023_x86_64_NEURON"),
     f"{P}[0].instanceTypes[0]: efa is true but 'trn1.2xlarge' has no EFA support"),
    ("spot-one-type", with_pool("prod", 3, instanceTypes=["g5.12xlarge"]),
     f"{P}[3].instanceTypes: a SPOT pool needs at least 2 instance types of the same shape"),
    ("spot-mixed-gpu-count", with_pool("prod", 3, instanceTypes=["g5.12xlarge", "g6.48xlarge"]),
     f"{P}[3].instanceTypes: mixes instance shapes"),
    ("spot-mixed-efa-count", with_pool("staging", 0, instanceTypes=["p4d.24xlarge", "p5.48xlarge"]),
     f"{P}[0].instanceTypes: mixes instance shapes"),
    ("capacity-block-no-reservation", with_pool("prod", 1, capacityReservation=None),
     f"{P}[1].capacityReservation: is required for a CAPACITY_BLOCK pool"),
    ("capacity-block-no-id", with_pool("prod", 1, capacityReservation={
        "availabilityZone": "us-east-1b"}),
     f"{P}[1].capacityReservation.id: is required"),
    ("reservation-wrong-az", with_pool("prod", 1, availabilityZones=["us-east-1c"]),
     f"{P}[1].availabilityZones: 'us-east-1c' is not the reservation's availability zone "
     "'us-east-1b'"),
    ("min-over-max", with_pool("prod", 0, minSize=20, desiredSize=None),
     f"{P}[0].minSize: minSize 20 is greater than maxSize 16"),
    ("unknown-ami", with_pool("prod", 0, amiType="AL2_x86_64_GPU"),
     f"{P}[0].amiType: 'AL2_x86_64_GPU' is not one of"),
    ("neuron-ami-on-nvidia", with_pool("prod", 0, amiType="AL2023_x86_64_NEURON"),
     f"{P}[0].amiType: 'AL2023_x86_64_NEURON' does not match the nvidia accelerators"),
    ("unsupported-k8s", with_cluster("prod", kubernetesVersion="1.29"),
     "trainyard:cluster.kubernetesVersion: '1.29' is not a Kubernetes version in the EKS calendar"),
    ("k8s-as-number", with_cluster("prod", kubernetesVersion=1.33),
     "trainyard:cluster.kubernetesVersion: expected a string"),
    ("system-min-over-max", with_cluster("dev", systemNodes={
        "instanceTypes": ["m6i.large"], "minSize": 4, "desiredSize": 4, "maxSize": 3}),
     "trainyard:cluster.systemNodes.minSize: minSize 4 is greater than maxSize 3"),
    ("system-gpu-name", with_pool("prod", 0, name="system"),
     f"{P}[0].name: 'system' is reserved for the system node group"),
    ("reserved-label", with_pool("prod", 0, labels={"trainyard.io/pool": "x"}),
     f"{P}[0].labels.trainyard.io/pool: 'trainyard.io/pool' is in a reserved label domain"),
    ("kubelet-label", with_pool("prod", 0, labels={"node-role.kubernetes.io/gpu": ""}),
     f"{P}[0].labels.node-role.kubernetes.io/gpu: 'node-role.kubernetes.io/gpu' is in a "
     "reserved label domain"),
    ("bad-label-value", with_pool("prod", 0, labels={"team": "a b"}),
     f"{P}[0].labels.team: 'a b' is not a valid Kubernetes label value"),
    ("placement-on-reserved", with_pool("prod", 1, placementGroup=True),
     f"{P}[1].placementGroup: true is not allowed on a reserved pool"),
    ("efa-two-azs", with_pool("prod", 0, availabilityZones=["us-east-1a", "us-east-1b"]),
     f"{P}[0].availabilityZones: an EFA pool must live in exactly one availability zone"),
    ("public-endpoint-no-cidrs", with_cluster("prod", endpointPublicAccess=True),
     "trainyard:cluster.publicAccessCidrs: is required when endpointPublicAccess is true"),
]


@pytest.mark.parametrize("raw,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_load_reports_one_problem_with_key_path(raw, expected):
    with pytest.raises(ConfigError) as e:
        load(raw, "bad")
    assert len(e.value.problems) == 1, e.value.problems
    assert e.value.problems[0].startswith(expected), e.value.problems


@pytest.mark.parametrize("raw,expected", [c[1:] for c in CASES[:12]], ids=[c[0] for c in CASES[:12]])
def test_cli_exit_2_one_line(tmp_path, raw, expected):
    path = tmp_path / "Pulumi.bad.yaml"
    path.write_text(yaml.safe_dump({"config": raw}))
    out = tmp_path / "plan.json"
    r = subprocess.run([sys.executable, "-m", "trainyard", "plan", "--stack-file", str(path),
                        "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {expected}"), r.stderr
    assert not out.exists()


def test_good_pool_labels_accepted():
    cfg = load(with_pool("prod", 0, labels={"team": "research", "example.com/tier": "gold"}),
               "prod")
    assert dict(cfg.pool("a100").labels) == {"team": "research", "example.com/tier": "gold"}
