"""GpuPool: pure decisions (labels, taints, repair, capacity, user data, validation) and what the
committed stacks plan (IMDSv2, encrypted root, taints, placement groups, reserved capacity)."""

import base64
import dataclasses
import email
import tomllib

import pytest
import yaml

from components.compute.catalog import load_catalog
from components.compute.gpu_pool import (
    AMI_FAMILY_LABEL,
    CAPACITY_TYPE_LABEL,
    GpuPoolArgs,
    instance_types,
    market_options,
    node_labels,
    node_taints,
    repair_config,
    reservation_specification,
    root_device_name,
    update_config,
    validate_gpu_pool,
)
from components.compute.userdata import encoded_user_data, user_data
from components.config import CapacityReservation, GpuPoolConfig
from components.services.k8s_names import (
    ACCELERATOR_LABEL,
    EFA_LABEL,
    GPU_MODEL_LABEL,
    GPU_TAINT_KEY,
    POOL_LABEL,
)
from tests.conftest import STACKS, by_id, resources, synthesize_program

CATALOG = load_catalog()
NG = "aws:eks/nodeGroup:NodeGroup"
LT = "aws:ec2/launchTemplate:LaunchTemplate"
PG = "aws:ec2/placementGroup:PlacementGroup"


def pool(**kw) -> GpuPoolConfig:
    base = dict(name="p", instance_types=("p4d.24xlarge",), capacity_type="ON_DEMAND",
                min_size=0, desired_size=1, max_size=4, availability_zones=("us-east-1a",))
    base.update(kw)
    return GpuPoolConfig(**base)


def specs(p):
    return [CATALOG.get(t) for t in p.instance_types]


def args(p, **kw):
    base = dict(config=p, cluster_name="c", kubernetes_version="1.33", node_role_arn="arn",
                subnet_ids=["subnet-a"] * len(p.availability_zones),
                cluster_security_group_id="sg-cluster",
                efa_security_group_id="sg-efa" if p.efa else None)
    base.update(kw)
    return GpuPoolArgs(**base)


# -- labels, taints, repair ------------------------------------------------------------------
def test_labels():
    p = pool(efa=True, placement_group=True, labels={"team": "research"})
    assert node_labels(p, specs(p)) == {
        "team": "research", POOL_LABEL: "p", ACCELERATOR_LABEL: "nvidia",
        GPU_MODEL_LABEL: "A100-40GB", EFA_LABEL: "true", CAPACITY_TYPE_LABEL: "ON_DEMAND",
        AMI_FAMILY_LABEL: "al2023"}
    mixed = pool(instance_types=("g5.48xlarge", "g6.48xlarge"), capacity_type="SPOT")
    labels = node_labels(mixed, specs(mixed))
    assert labels[GPU_MODEL_LABEL] == "A10G-24GB_L4-24GB" and labels[EFA_LABEL] == "false"
    br = pool(ami_type="BOTTLEROCKET_x86_64_NVIDIA")
    assert node_labels(br, specs(br))[AMI_FAMILY_LABEL] == "bottlerocket"


def test_taints():
    assert node_taints("nvidia") == [{"key": "nvidia.com/gpu", "value": "true",
                                      "effect": "NO_SCHEDULE"}]
    assert node_taints("neuron")[0]["key"] == GPU_TAINT_KEY["neuron"] == "aws.amazon.com/neuron"


def test_repair_config():
    on = repair_config(pool(max_size=16), "nvidia")
    assert on["enabled"] is True
    assert on["max_unhealthy_node_threshold_count"] == 4
    assert on["max_parallel_nodes_repaired_count"] == 2
    reasons = {o["node_unhealthy_reason"]: o for o in on["node_repair_config_overrides"]}
    assert reasons["NvidiaXID79Error"]["repair_action"] == "Replace"
    assert reasons["NvidiaXID64Error"]["repair_action"] == "Replace"
    assert all(o["node_monitoring_condition"] == "AcceleratedHardwareReady"
               and o["repair_action"] in ("Replace", "Reboot", "NoAction")
               and 0 < o["min_repair_wait_time_mins"] <= 10 for o in reasons.values())
    small = repair_config(pool(max_size=2), "nvidia")
    assert small["max_unhealthy_node_threshold_count"] >= 2  # one sick node never stops repair
    assert repair_config(pool(auto_repair=False), "nvidia") == {"enabled": False}
    assert "node_repair_config_overrides" not in repair_config(
        pool(instance_types=("trn1.32xlarge",), ami_type="AL2023_x86_64_NEURON"), "neuron")


# -- capacity ----------------------------------------------------------------------------------
def test_capacity_block_and_odcr():
    cb = pool(capacity_type="CAPACITY_BLOCK", efa=True,
              capacity_reservation=CapacityReservation("cr-0123456789abcdef0", "us-east-1a"))
    assert market_options(cb) == {"market_type": "capacity-block"}
    assert reservation_specification(cb) == {"capacity_reservation_target": {
        "capacity_reservation_id": "cr-0123456789abcdef0"}}
    odcr = dataclasses.replace(cb, capacity_type="ON_DEMAND")
    assert market_options(odcr) is None and reservation_specification(odcr) is not None
    spot = pool(instance_types=("g5.12xlarge", "g6.12xlarge"), capacity_type="SPOT")
    assert market_options(spot) is None and reservation_specification(spot) is None


def test_instance_types_placement():
    cb = pool(capacity_type="CAPACITY_BLOCK",
              capacity_reservation=CapacityReservation("cr-0123456789abcdef0", "us-east-1a"))
    assert instance_types(cb) == ("p4d.24xlarge", None)
    spot = pool(instance_types=("g5.12xlarge", "g6.12xlarge"), capacity_type="SPOT")
    assert instance_types(spot) == (None, ["g5.12xlarge", "g6.12xlarge"])


def test_update_config_and_root_device():
    assert update_config() == {"max_unavailable": 1, "update_strategy": "MINIMAL"}
    assert root_device_name("AL2023_x86_64_NVIDIA") == "/dev/xvda"
    assert root_device_name("BOTTLEROCKET_x86_64_NVIDIA") == "/dev/xvdb"


# -- user data ---------------------------------------------------------------------------------
def test_al2023_user_data_raids_nvme():
    text = base64.b64decode(encoded_user_data("AL2023_x86_64_NVIDIA",
                                              [CATALOG.get("p4d.24xlarge")])).decode()
    msg = email.message_from_string(text)
    assert msg.is_multipart()
    (part,) = msg.get_payload()
    assert part.get_content_type() == "application/node.eks.aws"
    config = yaml.safe_load(part.get_payload())
    assert config["apiVersion"] == "node.eks.aws/v1alpha1" and config["kind"] == "NodeConfig"
    assert config["spec"]["instance"]["localStorage"]["strategy"] == "RAID0"


def test_no_user_data_without_nvme():
    assert user_data("AL2023_x86_64_NVIDIA", [CATALOG.get("m6i.xlarge")]) is None
    # RAID0 only when every type of the pool has instance-store disks
    assert user_data("AL2023_x86_64_NVIDIA",
                     [CATALOG.get("g5.48xlarge"), CATALOG.get("m6i.xlarge")]) is None


def test_bottlerocket_user_data_is_toml():
    text = user_data("BOTTLEROCKET_x86_64_NVIDIA", [CATALOG.get("p5.48xlarge")])
    doc = tomllib.loads(text)
    cmd = doc["settings"]["bootstrap-commands"]["k8s-ephemeral-storage"]
    assert cmd["commands"][0] == ["apiclient", "ephemeral-storage", "init"]
    assert cmd["commands"][1][:4] == ["apiclient", "ephemeral-storage", "bind", "--dirs"]
    assert cmd["essential"] is True


@pytest.mark.parametrize("name", [n for n in CATALOG.names() if CATALOG.get(n).is_accelerated])
def test_user_data_never_secret(name):
    text = user_data("AL2023_x86_64_NVIDIA", [CATALOG.get(name)]) or ""
    assert not any(w in text.lower() for w in ("password", "secret", "token", "aws_access"))


# -- validation --------------------------------------------------------------------------------
def test_valid_args_have_no_problems():
    assert validate_gpu_pool(args(pool(efa=True, placement_group=True)), CATALOG) == []


@pytest.mark.parametrize("config,kw,fragment", [
    (pool(instance_types=("g5.xlarge",), efa=True), {}, "instanceTypes[0]: efa is true"),
    (pool(instance_types=("g5.xlarge",), capacity_type="SPOT"), {}, "SPOT pool needs at least 2"),
    (pool(instance_types=("g5.xlarge", "g5.12xlarge"), capacity_type="SPOT"), {}, "mixes"),
    (pool(capacity_type="CAPACITY_BLOCK"), {}, "capacityReservation: is required"),
    (pool(capacity_reservation=CapacityReservation("cr-0123456789abcdef0", "us-east-1b")), {},
     "reservation's availability zone"),
    (pool(min_size=5, desired_size=5, max_size=2), {}, "minSize"),
    (pool(ami_type="AL2_x86_64_GPU"), {}, "amiType"),
    (pool(ami_type="AL2023_x86_64_NEURON"), {}, "does not match"),
    (pool(efa=True, availability_zones=("us-east-1a", "us-east-1b")), {"subnet_ids": ["a", "b"]},
     "exactly one availability zone"),
    (pool(efa=True), {"efa_security_group_id": None}, "efa_security_group_id"),
    (pool(), {"subnet_ids": []}, "subnet_ids"),
    (pool(placement_group=True), {}, "placementGroup: needs efa"),
    (pool(efa=True, placement_group=True,
          capacity_reservation=CapacityReservation("cr-0123456789abcdef0", "us-east-1a")), {},
     "placementGroup: not allowed on a reserved pool"),
])
def test_validation_names_field(config, kw, fragment):
    problems = validate_gpu_pool(args(config, **kw), CATALOG)
    assert any(fragment in p for p in problems), problems


# -- the committed stacks ------------------------------------------------------------------------
def _gpu_node_groups(plan):
    return [r for r in resources(plan, NG) if r["inputs"]["labels"][POOL_LABEL] != "system"]


def test_every_launch_template_imdsv2_and_encrypted(any_plan):
    lts = resources(any_plan, LT)
    assert lts
    for lt in lts:
        md = lt["inputs"]["metadataOptions"]
        assert md["httpTokens"] == "required" and md["httpEndpoint"] == "enabled"
        assert md["httpPutResponseHopLimit"] in (1, 2)
        (root,) = lt["inputs"]["blockDeviceMappings"]
        assert root["ebs"]["encrypted"] == "true" and root["ebs"]["volumeType"] == "gp3"
        assert "imageId" not in lt["inputs"]  # EKS picks the AMI from the node group's amiType


def test_every_gpu_node_group(any_plan):
    cfg_pools = any_plan["outputs"]["gpuPools"]
    ngs = _gpu_node_groups(any_plan)
    assert len(ngs) == sum(1 for p in cfg_pools.values() if p["provisioner"] == "managed")
    for ng in ngs:
        i = ng["inputs"]
        name = i["labels"][POOL_LABEL]
        assert i["taints"] == [{"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}]
        assert i["amiType"] == "AL2023_x86_64_NVIDIA"
        assert i["nodeRepairConfig"]["enabled"] is True
        assert i["nodeRepairConfig"]["nodeRepairConfigOverrides"]
        assert i["labels"][EFA_LABEL] == ("true" if cfg_pools[name]["efa"] else "false")
        assert i["labels"][CAPACITY_TYPE_LABEL] == i["capacityType"]
        assert i["updateConfig"] == {"maxUnavailable": 1, "updateStrategy": "MINIMAL"}
        assert i["scalingConfig"]["minSize"] <= i["scalingConfig"]["desiredSize"] \
            <= i["scalingConfig"]["maxSize"]
        lt = by_id(any_plan)[i["launchTemplate"]["id"]]["inputs"]
        if i["capacityType"] == "CAPACITY_BLOCK":  # the type lives in the launch template only
            assert "instanceTypes" not in i
            assert [lt["instanceType"]] == cfg_pools[name]["instanceTypes"]
        else:
            assert i["instanceTypes"] == cfg_pools[name]["instanceTypes"]
            assert "instanceType" not in lt
        assert i["launchTemplate"]["version"] == "1"


def test_prod_capacity_and_placement(managed_plan_for):
    plan = managed_plan_for("prod")  # prod's elastic pools as node groups (committed: Karpenter)
    ids = by_id(plan)
    pgs = {r["id"]: r for r in resources(plan, PG)}
    seen = {}
    for ng in _gpu_node_groups(plan):
        name, i = ng["inputs"]["labels"][POOL_LABEL], ng["inputs"]
        lt = ids[i["launchTemplate"]["id"]]["inputs"]
        group = (lt.get("placement") or {}).get("groupName")
        seen[name] = (i["capacityType"], group, lt.get("instanceMarketOptions"),
                      lt.get("capacityReservationSpecification"))
        if group:
            assert pgs[group]["inputs"]["strategy"] == "cluster"
    assert seen["a100"][0] == "ON_DEMAND" and seen["a100"][1] and seen["a100"][2] is None
    assert seen["g-spot"][0] == "SPOT" and seen["g-spot"][1]
    assert seen["eval-spot"][1] is None
    cap, group, market, reservation = seen["h100"]
    assert cap == "CAPACITY_BLOCK" and group is None  # never a placement group on reservations
    assert market == {"marketType": "capacity-block"}
    assert reservation == {"capacityReservationTarget": {
        "capacityReservationId": "cr-0a1b2c3d4e5f60718"}}
    assert len(pgs) == 2


def test_prod_outputs(plan_for):
    out = plan_for("prod")["outputs"]
    assert out["clusterName"] == "trainyard-prod"
    assert out["clusterEndpoint"].startswith("https://")
    assert out["gpuPools"]["h100"]["capacityType"] == "CAPACITY_BLOCK"
    assert out["gpuPools"]["h100"]["availabilityZones"] == ["us-east-1b"]
    assert out["gpuPools"]["h100"]["nodeGroupName"].startswith("trainyard-pool-h100")
    assert out["gpuPools"]["h100"]["provisioner"] == "managed"
    assert out["gpuPools"]["h100"]["nodePoolName"] is None
    a100 = out["gpuPools"]["a100"]  # elastic: a Karpenter NodePool, no node group
    assert (a100["provisioner"], a100["nodeGroupName"], a100["nodePoolName"]) == \
        ("karpenter", None, "a100")


# -- variants built directly (ODCR, Bottlerocket, legacy layout) ---------------------------------
def _unit_pool(config):
    def program():
        from components.compute.gpu_pool import GpuPool
        GpuPool("unit", args(config))
    return synthesize_program(program)


def test_odcr_pool():
    plan = _unit_pool(pool(efa=True, capacity_reservation=CapacityReservation(
        "cr-0123456789abcdef0", "us-east-1a")))
    (lt,) = resources(plan, LT)
    assert "instanceMarketOptions" not in lt["inputs"] and "placement" not in lt["inputs"]
    assert lt["inputs"]["capacityReservationSpecification"]["capacityReservationTarget"] == {
        "capacityReservationId": "cr-0123456789abcdef0"}
    assert not resources(plan, PG)
    (ng,) = resources(plan, NG)
    assert ng["inputs"]["capacityType"] == "ON_DEMAND"


def test_bottlerocket_legacy_pool():
    plan = _unit_pool(pool(efa=True, placement_group=True, efa_layout="legacy",
                           ami_type="BOTTLEROCKET_x86_64_NVIDIA", http_put_response_hop_limit=1))
    (lt,) = resources(plan, LT)
    i = lt["inputs"]
    assert [(n["networkCardIndex"], n["deviceIndex"], n["interfaceType"])
            for n in i["networkInterfaces"]] == [(0, 0, "efa"), (1, 1, "efa"), (2, 1, "efa"),
                                                  (3, 1, "efa")]
    assert i["blockDeviceMappings"][0]["deviceName"] == "/dev/xvdb"
    assert i["metadataOptions"]["httpPutResponseHopLimit"] == 1
    assert "[settings.bootstrap-commands" in base64.b64decode(i["userData"]).decode()
    (ng,) = resources(plan, NG)
    assert ng["inputs"]["amiType"] == "BOTTLEROCKET_x86_64_NVIDIA"


def test_invalid_args_raise():
    def program():
        from components.compute.gpu_pool import GpuPool
        GpuPool("bad", args(pool(efa=True), efa_security_group_id=None))
    with pytest.raises(ValueError, match="efa_security_group_id"):
        synthesize_program(program)


def test_desired_size_drift_ignored(monkeypatch):
    """Node groups ignore scalingConfig.desiredSize (autoscalers and EKS change it)."""
    import trainyard.synth as synth

    seen = {}
    original = synth._recording_monitor

    def recording(mocks):
        monitor = original(mocks)
        register = monitor.RegisterResource

        def capture(request):
            if request.type == NG:
                seen[request.name] = list(request.ignoreChanges)
            return register(request)
        monitor.RegisterResource = capture
        return monitor

    monkeypatch.setattr(synth, "_recording_monitor", recording)
    _unit_pool(pool())
    assert seen == {"unit-ng": ["scalingConfig.desiredSize"]}


@pytest.mark.parametrize("stack", STACKS)
def test_tags_on_pool_resources(plan_for, stack):
    plan = plan_for(stack)
    for r in resources(plan, LT) + resources(plan, NG) + resources(plan, PG):
        tags = r["inputs"]["tags"]
        assert tags["environment"] == stack and tags["owner"] and tags["cost-center"]
