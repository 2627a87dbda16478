"""Karpenter: the provisioner config key, the pure decisions (NodePool / EC2NodeClass specs, EFA
interfaces, limits, IAM, the interruption queue), what the committed stacks plan, and every
NodePool / EC2NodeClass validated against the pinned CRDs' schemas (tests/components/data/crds/).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from components.compute import karpenter as K
from components.compute.addons import chart, version_tuple
from components.compute.catalog import load_catalog
from components.compute.gpu_pool import node_labels, node_taints, pool_specs
from components.config import ConfigError, load
from components.network.efa import efa_interfaces
from components.network.netmath import MAX_PODS_PER_NODE
from components.services.k8s_names import DO_NOT_DISRUPT, POOL_LABEL, PROVISIONERS
from tests.conftest import STACKS, by_id, resources
from trainyard.plan import max_nodes_from_limits, planned_pools
from trainyard.synth import load_config

ROOT = Path(__file__).resolve().parents[2]
CRDS = Path(__file__).parent / "data" / "crds"
CATALOG = load_catalog()
NODEPOOL = "kubernetes:karpenter.sh/v1:NodePool"
NODECLASS = "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass"
RELEASE = "kubernetes:helm.sh/v3:Release"
P = "trainyard:gpuPools"


def stack_raw(stack: str) -> dict:
    return yaml.safe_load((ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]


def with_pool(stack: str, index: int, **changes) -> dict:
    raw = copy.deepcopy(stack_raw(stack))
    for key, value in changes.items():
        if value is None:
            raw[P][index].pop(key, None)
        else:
            raw[P][index][key] = value
    return raw


def problems(raw: dict) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load(raw, "prod")
    return e.value.problems


# ----------------------------------------------------------------------------------------------
# Config: one default, validated like every other key
# ----------------------------------------------------------------------------------------------
def test_default_provisioner_follows_the_capacity():
    assert PROVISIONERS == ("managed", "karpenter")
    pools = {p.name: p for p in load(stack_raw("prod"), "prod").gpu_pools}
    assert {n: p.provisioner for n, p in pools.items()} == {
        "a100": "karpenter", "h100": "managed", "g-spot": "karpenter", "eval-spot": "karpenter",
        "inference": "karpenter"}
    assert [p.provisioner for p in load(stack_raw("dev"), "dev").gpu_pools] == ["karpenter"]
    assert [p.provisioner for p in load(stack_raw("staging"), "staging").gpu_pools] == \
        ["karpenter"]


def test_managed_can_be_chosen_for_an_elastic_pool():
    raw = with_pool("prod", 0, provisioner="managed", desiredSize=2)
    assert load(raw, "prod").pool("a100").provisioner == "managed"


def test_odcr_pool_defaults_to_managed():
    raw = with_pool("prod", 0, capacityReservation={"id": "cr-0123456789abcdef0",
                                                    "availabilityZone": "us-east-1a"},
                    placementGroup=False)
    assert load(raw, "prod").pool("a100").provisioner == "managed"


@pytest.mark.parametrize("index,changes,expected", [
    (0, {"provisioner": "autoscaler"},
     f"{P}[0].provisioner: 'autoscaler' is not one of karpenter, managed"),
    (0, {"provisioner": 3}, f"{P}[0].provisioner: expected a string"),
    (1, {"provisioner": "karpenter"},
     f"{P}[1].provisioner: 'karpenter' is for elastic pools: a reserved pool (ODCR or Capacity "
     "Block) is sized to its reservation and stays a managed node group"),
    (0, {"desiredSize": 2}, f"{P}[0].desiredSize: 2 must be 0 for a Karpenter pool "
                            "(provisioner defaults to karpenter for SPOT and ON_DEMAND pools)"),
    (0, {"minSize": 1, "desiredSize": 1, "provisioner": "karpenter"},
     f"{P}[0].minSize: 1 must be 0 for a Karpenter pool: Karpenter keeps no standing nodes"),
    (2, {"efaLayout": "legacy"}, f"{P}[2].efaLayout: 'legacy' cannot be built by Karpenter"),
    (3, {"amiType": "BOTTLEROCKET_x86_64_NVIDIA"},
     f"{P}[3].amiType: 'BOTTLEROCKET_x86_64_NVIDIA' is not built by trainyard's Karpenter pools"),
])
def test_bad_provisioner_config_is_one_line_naming_the_key(index, changes, expected):
    found = problems(with_pool("prod", index, **changes))
    if "minSize" in changes:  # minSize 1 with desiredSize 1: one problem per key set
        assert len(found) == 2 and found[0].startswith(expected), found
        return
    assert len(found) == 1 and found[0].startswith(expected), found
    assert "\n" not in found[0]


# ----------------------------------------------------------------------------------------------
# Pure decisions
# ----------------------------------------------------------------------------------------------
def prod_pool(name: str):
    return load_config("prod").pool(name)


def test_nodepool_nodes_look_exactly_like_managed_nodes():
    """Labels and taints come from the same builders as the node groups': device plugins, DCGM,
    runtimes, Kueue flavors and policies cannot tell the provisioners apart."""
    for name in ("a100", "g-spot", "eval-spot"):
        pool = prod_pool(name)
        specs = pool_specs(pool, CATALOG)
        spec = K.nodepool_spec(pool, specs)
        assert spec["template"]["metadata"]["labels"] == node_labels(pool, specs)
        assert [(t["key"], t["value"]) for t in spec["template"]["spec"]["taints"]] == \
            [(t["key"], t["value"]) for t in node_taints("nvidia")]
        assert spec["template"]["spec"]["taints"][0]["effect"] == "NoSchedule"
        assert spec["template"]["metadata"]["labels"]["trainyard.io/capacity-type"] == \
            pool.capacity_type


def test_requirements_diversify_spot_over_the_pools_types():
    reqs = {r["key"]: r for r in K.requirements(prod_pool("g-spot"))}
    assert reqs["node.kubernetes.io/instance-type"]["values"] == ["g5.48xlarge", "g6.48xlarge"]
    assert reqs["karpenter.sh/capacity-type"]["values"] == ["spot"]
    assert reqs["topology.kubernetes.io/zone"]["values"] == ["us-east-1a"]
    assert {r["operator"] for r in reqs.values()} == {"In"}
    a100 = {r["key"]: r for r in K.requirements(prod_pool("a100"))}
    assert a100["karpenter.sh/capacity-type"]["values"] == ["on-demand"]


@pytest.mark.parametrize("name", ["a100", "g-spot", "eval-spot"])
def test_limits_are_the_pools_maximum_and_read_back(name):
    pool = prod_pool(name)
    specs = pool_specs(pool, CATALOG)
    limits = K.limits(pool, specs)
    gpus, vcpus = specs[0].gpus, max(s.vcpus for s in specs)
    assert limits == {"nvidia.com/gpu": str(pool.max_size * gpus),
                      "cpu": str(pool.max_size * vcpus)}
    assert max_nodes_from_limits(limits, gpus, vcpus) == pool.max_size
    assert max_nodes_from_limits({}, gpus, vcpus) == 0


def test_disruption_never_consolidates_a_node_running_training():
    spec = K.nodepool_spec(prod_pool("a100"), pool_specs(prod_pool("a100"), CATALOG))
    d = spec["disruption"]
    assert d["consolidationPolicy"] == "WhenEmpty"
    assert re.fullmatch(r"\d+m", d["consolidateAfter"]) and 1 <= int(d["consolidateAfter"][:-1]) <= 15
    assert {"nodes": "1", "reasons": ["Drifted"]} in d["budgets"]
    assert spec["template"]["spec"]["expireAfter"] == "Never"  # expiry ignores do-not-disrupt
    assert DO_NOT_DISRUPT == "karpenter.sh/do-not-disrupt"


@pytest.mark.parametrize("instance_type,efa", [("p4d.24xlarge", 4), ("p5.48xlarge", 32),
                                                ("p5en.48xlarge", 16), ("g5.48xlarge", 1),
                                                ("g6e.48xlarge", 4)])
def test_efa_interfaces_every_card_primary_plain_ena(instance_type, efa):
    spec = CATALOG.get(instance_type)
    nics = K.network_interfaces([spec])
    assert nics[0] == {"networkCardIndex": 0, "deviceIndex": 0, "interfaceType": "interface"}
    efa_nics = [n for n in nics if n["interfaceType"] == "efa-only"]
    assert len(efa_nics) == efa == len(efa_interfaces(spec, "current"))
    assert sorted(n["networkCardIndex"] for n in efa_nics) == list(range(efa))  # one per card
    assert sum(1 for n in nics if n["interfaceType"] == "interface") == 1  # one IP-bearing
    with pytest.raises(ValueError):
        K.network_interfaces([CATALOG.get("p4d.24xlarge"), CATALOG.get("p5.48xlarge")])


def test_nodeclass_spec_from_the_pool_config():
    pool = prod_pool("a100")
    spec = K.nodeclass_spec(pool, pool_specs(pool, CATALOG), "profile", ["subnet-a"],
                            ["sg-cluster", "sg-efa"], "pg-name", {"owner": "ml"})
    assert spec["amiSelectorTerms"] == [{"alias": "al2023@latest"}]
    assert spec["metadataOptions"] == {"httpEndpoint": "enabled", "httpProtocolIPv6": "disabled",
                                       "httpPutResponseHopLimit": 2, "httpTokens": "required"}
    (bdm,) = spec["blockDeviceMappings"]
    assert bdm["ebs"] == {"volumeSize": "200Gi", "volumeType": "gp3", "encrypted": True,
                          "deleteOnTermination": True}
    assert spec["instanceStorePolicy"] == "RAID0"  # p4d: 8 x 1 TB NVMe
    assert spec["placementGroupSelector"] == {"name": "pg-name"}
    assert spec["kubelet"] == {"maxPods": MAX_PODS_PER_NODE}
    assert spec["tags"] == {"owner": "ml", POOL_LABEL: "a100"}
    assert spec["subnetSelectorTerms"] == [{"id": "subnet-a"}]
    assert spec["securityGroupSelectorTerms"] == [{"id": "sg-cluster"}, {"id": "sg-efa"}]
    eval_spot = prod_pool("eval-spot")
    plain = K.nodeclass_spec(eval_spot, pool_specs(eval_spot, CATALOG), "p", [], [])
    assert "networkInterfaces" not in plain and "placementGroupSelector" not in plain


def test_validation_guards_direct_use():
    import dataclasses

    ok = prod_pool("g-spot")
    assert K.validate_karpenter_pool(ok) == []
    assert K.validate_karpenter_pool(prod_pool("h100"))  # reserved
    assert K.validate_karpenter_pool(dataclasses.replace(ok, desired_size=1))
    assert K.validate_karpenter_pool(dataclasses.replace(ok, efa_layout="legacy"))


def test_chart_pin():
    pin = chart(K.KARPENTER_CHART)
    assert (pin.repo, pin.chart) == ("oci://public.ecr.aws/karpenter", "karpenter")
    assert re.fullmatch(r"\d+\.\d+\.\d+", pin.version)
    # Kubernetes 1.36 needs >= 1.13; EC2NodeClass placementGroupSelector needs >= 1.11.
    assert version_tuple(pin.version) >= (1, 13, 0)
    assert pin.version == "1.14.1"


def test_controller_values_use_only_keys_the_chart_has():
    recorded = yaml.safe_load((Path(__file__).parent / "data" / "chart_value_keys.yaml")
                              .read_text())["karpenter"]["keys"]

    def paths(d, prefix=""):
        for k, v in d.items():
            p = f"{prefix}{k}"
            if p in recorded:
                yield p
            elif isinstance(v, dict):
                yield from paths(v, p + ".")
            else:
                yield p

    values = K.controller_values("cluster", "queue")
    assert set(paths(values)) <= set(recorded), set(paths(values)) - set(recorded)
    assert values["nodeSelector"] == {POOL_LABEL: "system"}
    assert values["settings"] == {"clusterName": "cluster", "interruptionQueue": "queue"}
    assert values["serviceAccount"] == {"name": K.SERVICE_ACCOUNT}


def _statements(doc: str) -> dict:
    return {s["Sid"]: s for s in json.loads(doc)["Statement"]}


def test_controller_policy_is_scoped_to_the_cluster():
    st = _statements(K.controller_policy("aws", "us-east-1", "123456789012", "c1",
                                         "arn:aws:iam::123456789012:role/node",
                                         "arn:aws:iam::123456789012:instance-profile/np",
                                         "arn:aws:sqs:us-east-1:123456789012:q"))
    owned = "aws:ResourceTag/kubernetes.io/cluster/c1"
    for sid in ("LaunchFromOwnLaunchTemplates", "DeleteOwn", "TagOwnInstances"):
        assert st[sid]["Condition"]["StringEquals"][owned] == "owned", sid
        assert st[sid]["Condition"]["StringLike"]["aws:ResourceTag/karpenter.sh/nodepool"] == "*"
    for sid in ("CreateTaggedForCluster", "TagOnCreate"):
        cond = st[sid]["Condition"]
        assert cond["StringEquals"]["aws:RequestTag/kubernetes.io/cluster/c1"] == "owned"
        assert cond["StringEquals"]["aws:RequestTag/eks:eks-cluster-name"] == "c1"
        assert cond["StringLike"]["aws:RequestTag/karpenter.sh/nodepool"] == "*"
    assert st["PassNodeRole"]["Resource"] == "arn:aws:iam::123456789012:role/node"
    assert st["PassNodeRole"]["Condition"]["StringEquals"]["iam:PassedToService"] == \
        "ec2.amazonaws.com"
    assert st["ReadNodeInstanceProfile"]["Resource"].endswith(":instance-profile/np")
    assert st["DescribeCluster"]["Resource"] == "arn:aws:eks:us-east-1:123456789012:cluster/c1"
    assert st["InterruptionQueue"]["Resource"] == "arn:aws:sqs:us-east-1:123456789012:q"
    assert st["EksAmiParameters"]["Resource"] == \
        "arn:aws:ssm:us-east-1::parameter/aws/service/eks/optimized-ami/*"
    assert st["RegionalReads"]["Condition"] == {"StringEquals": {"aws:RequestedRegion":
                                                                 "us-east-1"}}
    # Unscoped resources only for reads; no instance-profile management (the profile is ours).
    actions = [a for s in st.values() for a in
               ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])]
    for s in st.values():
        if s["Resource"] == "*" and "Condition" not in s:
            acts = [s["Action"]] if isinstance(s["Action"], str) else s["Action"]
            assert all(a.split(":")[1].startswith(("Get", "List", "Describe")) for a in acts), s
    assert not [a for a in actions if re.match(r"iam:(Create|Delete|AddRole|RemoveRole|Tag)", a)]
    assert "*" not in actions and not any(a.endswith(":*") for a in actions)


def test_interruption_events_and_queue_policy():
    assert {d for _, d in K.INTERRUPTION_EVENTS.values()} == {
        "EC2 Spot Instance Interruption Warning", "EC2 Instance Rebalance Recommendation",
        "AWS Health Event", "EC2 Instance State-change Notification"}
    assert K.INTERRUPTION_EVENTS["scheduled-change"][0] == "aws.health"
    assert json.loads(K.event_pattern("aws.ec2", "X")) == {"source": ["aws.ec2"],
                                                           "detail-type": ["X"]}
    st = _statements(K.queue_policy("arn:q", ["arn:r2", "arn:r1"]))
    assert st["EventBridgeRules"]["Principal"] == {"Service": "events.amazonaws.com"}
    assert st["EventBridgeRules"]["Condition"]["ArnEquals"]["aws:SourceArn"] == ["arn:r1", "arn:r2"]
    assert st["SqsService"]["Principal"] == {"Service": "sqs.amazonaws.com"}
    for s in (st["EventBridgeRules"], st["SqsService"]):
        assert (s["Action"], s["Resource"]) == ("sqs:SendMessage", "arn:q")
    assert st["DenyInsecureTransport"]["Effect"] == "Deny"


# ----------------------------------------------------------------------------------------------
# What the committed stacks plan
# ----------------------------------------------------------------------------------------------
def _karpenter_parts(plan: dict) -> dict:
    by_urn = {r["urn"]: r for r in plan["resources"]}
    (comp,) = [r for r in plan["resources"] if r["type"] == "trainyard:index:Karpenter"]
    return {"component": comp, "by_urn": by_urn,
            "mine": [r for r in plan["resources"] if r["parent"] == comp["urn"]]}


@pytest.mark.parametrize("stack", STACKS)
def test_every_karpenter_pool_is_a_nodepool_and_no_node_group(plan_for, stack):
    plan = plan_for(stack)
    cfg = load_config(stack)
    karpenter = {p.name for p in cfg.gpu_pools if p.karpenter}
    nodepools = {r["inputs"]["metadata"]["name"]: r for r in resources(plan, NODEPOOL)}
    classes = {r["inputs"]["metadata"]["name"]: r for r in resources(plan, NODECLASS)}
    assert set(nodepools) == set(classes) == karpenter
    groups = {r["inputs"]["labels"].get(POOL_LABEL) for r in
              resources(plan, "aws:eks/nodeGroup:NodeGroup")}
    assert not groups & karpenter
    for name, np in nodepools.items():
        pool = cfg.pool(name)
        assert np["inputs"]["spec"] == K.nodepool_spec(pool, pool_specs(pool, CATALOG))
        assert np["inputs"]["spec"]["template"]["spec"]["nodeClassRef"]["name"] == name


@pytest.mark.parametrize("stack", STACKS)
def test_nodeclasses_use_the_pools_subnets_groups_and_placement(plan_for, stack):
    plan = plan_for(stack)
    cfg = load_config(stack)
    ids = by_id(plan)
    subnets = plan["outputs"]["privateSubnetIds"]
    cluster = resources(plan, "aws:eks/cluster:Cluster")[0]
    cluster_sg = cluster["outputs"]["vpcConfig"]["clusterSecurityGroupId"]
    efa_sg = plan["outputs"]["efaSecurityGroupId"]
    (profile,) = resources(plan, "aws:iam/instanceProfile:InstanceProfile")
    pgs = {r["outputs"].get("name") or r["inputs"].get("name"): r
           for r in resources(plan, "aws:ec2/placementGroup:PlacementGroup")}
    for nc in resources(plan, NODECLASS):
        pool = cfg.pool(nc["inputs"]["metadata"]["name"])
        spec = nc["inputs"]["spec"]
        assert [t["id"] for t in spec["subnetSelectorTerms"]] == \
            [subnets[az] for az in pool.availability_zones]
        assert [t["id"] for t in spec["securityGroupSelectorTerms"]] == \
            [cluster_sg] + ([efa_sg] if pool.efa else [])
        assert spec["instanceProfile"] == profile["outputs"]["name"]
        assert ids[profile["id"]]["inputs"]["role"]  # the Karpenter node role
        if pool.placement_group:
            pg = pgs[spec["placementGroupSelector"]["name"]]
            assert pg["inputs"]["strategy"] == "cluster"
        else:
            assert "placementGroupSelector" not in spec
        if pool.efa:
            specs = pool_specs(pool, CATALOG)
            assert sum(n["interfaceType"] == "efa-only" for n in spec["networkInterfaces"]) == \
                specs[0].max_efa


def test_prod_efa_pools_keep_their_placement_groups_under_karpenter(plan_for):
    plan = plan_for("prod")
    specs = {r["inputs"]["metadata"]["name"]: r["inputs"]["spec"]
             for r in resources(plan, NODECLASS)}
    assert "placementGroupSelector" in specs["a100"] and "placementGroupSelector" in specs["g-spot"]
    assert "placementGroupSelector" not in specs["eval-spot"]
    assert len(specs["a100"]["networkInterfaces"]) == 5  # primary ENA + 4 efa-only


@pytest.mark.parametrize("stack", STACKS)
def test_controller_identity_node_identity_and_queue(plan_for, stack):
    plan = plan_for(stack)
    ids = by_id(plan)
    parts = _karpenter_parts(plan)
    mine = parts["mine"]

    def one(type_, suffix=""):
        found = [r for r in mine if r["type"] == type_ and r["name"].endswith(suffix)]
        assert len(found) == 1, (type_, suffix, [r["name"] for r in found])
        return found[0]

    # Controller: Pod Identity for kube-system/karpenter, trust scoped to account and cluster.
    assoc = one("aws:eks/podIdentityAssociation:PodIdentityAssociation")
    assert (assoc["inputs"]["namespace"], assoc["inputs"]["serviceAccount"]) == \
        ("kube-system", "karpenter")
    role = ids[assoc["inputs"]["roleArn"]] if assoc["inputs"]["roleArn"] in ids else \
        next(r for r in mine if r["type"] == "aws:iam/role:Role"
             and r["outputs"].get("arn") == assoc["inputs"]["roleArn"])
    (trust,) = json.loads(role["inputs"]["assumeRolePolicy"])["Statement"]
    assert trust["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert sorted(trust["Action"]) == ["sts:AssumeRole", "sts:TagSession"]
    assert trust["Condition"]["ArnEquals"]["aws:SourceArn"].endswith(
        f":cluster/{plan['outputs']['clusterName']}")
    policy = one("aws:iam/rolePolicy:RolePolicy")
    st = _statements(policy["inputs"]["policy"])
    name = plan["outputs"]["clusterName"]
    assert f"aws:ResourceTag/kubernetes.io/cluster/{name}" in \
        st["DeleteOwn"]["Condition"]["StringEquals"]
    # Nodes: their own role with the node policies, an instance profile, an EC2_LINUX entry.
    entry = one("aws:eks/accessEntry:AccessEntry")
    assert entry["inputs"]["type"] == "EC2_LINUX"
    node_role = next(r for r in mine if r["type"] == "aws:iam/role:Role"
                     and r["outputs"].get("arn") == entry["inputs"]["principalArn"])
    assert st["PassNodeRole"]["Resource"] == node_role["outputs"]["arn"]
    attached = {r["inputs"]["policyArn"].rsplit("/", 1)[-1] for r in mine
                if r["type"] == "aws:iam/rolePolicyAttachment:RolePolicyAttachment"}
    assert attached == {"AmazonEKSWorkerNodePolicy", "AmazonEC2ContainerRegistryPullOnly"}
    cluster_node_roles = {r["inputs"]["nodeRoleArn"] for r in
                          resources(plan, "aws:eks/nodeGroup:NodeGroup")}
    assert entry["inputs"]["principalArn"] not in cluster_node_roles  # one entry per principal
    # Interruption queue: encrypted, fed by the four rules, named in the chart's values.
    queue = one("aws:sqs/queue:Queue")
    assert queue["inputs"]["sqsManagedSseEnabled"] is True
    rules = [r for r in mine if r["type"] == "aws:cloudwatch/eventRule:EventRule"]
    patterns = {tuple(json.loads(r["inputs"]["eventPattern"])["detail-type"]) for r in rules}
    assert patterns == {(d,) for _, d in K.INTERRUPTION_EVENTS.values()}
    targets = [r for r in mine if r["type"] == "aws:cloudwatch/eventTarget:EventTarget"]
    assert len(targets) == 4 and {t["inputs"]["arn"] for t in targets} == \
        {queue["outputs"]["arn"]}
    qp = one("aws:sqs/queuePolicy:QueuePolicy")
    assert json.loads(qp["inputs"]["policy"])["Statement"][0]["Condition"]["ArnEquals"][
        "aws:SourceArn"] == sorted(r["outputs"]["arn"] for r in rules)
    release = one(RELEASE)
    values = release["inputs"]["values"]
    assert values["settings"]["interruptionQueue"] == queue["outputs"]["name"]
    assert values["settings"]["clusterName"] == name
    assert values["nodeSelector"] == {POOL_LABEL: "system"}
    assert release["inputs"]["chart"] == "oci://public.ecr.aws/karpenter/karpenter"
    assert plan["outputs"]["karpenterInterruptionQueue"] == queue["outputs"]["name"]


@pytest.mark.parametrize("stack", STACKS)
def test_nodepools_wait_for_the_release_and_the_release_for_its_credentials(plan_for, stack):
    plan = plan_for(stack)
    parts = _karpenter_parts(plan)
    mine = parts["mine"]
    (release,) = [r for r in mine if r["type"] == RELEASE]
    assoc = next(r for r in mine if r["type"].endswith("PodIdentityAssociation"))
    assert assoc["urn"] in release["dependencies"]
    for r in mine:
        if r["type"] in (NODEPOOL, NODECLASS):
            assert release["urn"] in r["dependencies"], r["name"]


@pytest.mark.parametrize("stack", STACKS)
def test_planned_pools_count_karpenter_pools(plan_for, stack):
    cfg = load_config(stack)
    pools = {p.label: p for p in planned_pools(plan_for(stack))}
    for pool in cfg.gpu_pools:
        got = pools[pool.name]
        assert got.provisioner == pool.provisioner
        assert got.max_size == pool.max_size
        assert got.capacity_type == pool.capacity_type
        assert list(got.availability_zones) == sorted(pool.availability_zones)
        if pool.karpenter:
            assert (got.min_size, got.desired_size) == (0, 0)
            assert got.efa_per_node == (pool_specs(pool, CATALOG)[0].max_efa if pool.efa else 0)


# ----------------------------------------------------------------------------------------------
# The pinned CRDs' schemas
# ----------------------------------------------------------------------------------------------
def closed(schema):
    """The CRD's structural schema as JSON Schema that rejects unknown fields: the API server
    prunes (or, with strict field validation, refuses) fields an object schema does not list,
    unless it says x-kubernetes-preserve-unknown-fields."""
    if isinstance(schema, dict):
        out = {k: closed(v) for k, v in schema.items()}
        if out.get("type") == "object" and "properties" in out and \
                "additionalProperties" not in out and \
                not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [closed(v) for v in schema]
    return schema


SCHEMAS = {
    NODEPOOL: closed(json.loads((CRDS / "karpenter.sh_nodepools_v1.json").read_text())),
    NODECLASS: closed(json.loads((CRDS / "karpenter.k8s.aws_ec2nodeclasses_v1.json").read_text())),
}


def manifest(resource: dict) -> dict:
    return {k: v for k, v in resource["inputs"].items()}


def validate(resource: dict) -> None:
    schema = SCHEMAS[resource["type"]]
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(manifest(resource)),
                    key=lambda e: list(e.path))
    assert not errors, f"{resource['name']}: " + "; ".join(
        f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


@pytest.mark.parametrize("stack", STACKS)
def test_every_nodepool_and_nodeclass_validates_against_the_crds(plan_for, stack):
    objects = [r for r in plan_for(stack)["resources"] if r["type"] in SCHEMAS]
    assert {r["type"] for r in objects} == set(SCHEMAS)
    for r in objects:
        validate(r)


def test_schema_check_has_teeth(plan_for):
    np = next(r for r in plan_for("prod")["resources"] if r["type"] == NODEPOOL)
    nc = next(r for r in plan_for("prod")["resources"] if r["type"] == NODECLASS)
    for target, mutate in [
        (np, lambda s: s["disruption"].update(consolidationPolicy="Never")),
        (np, lambda s: s["template"]["spec"].update(nodeClasRef={})),  # typo: unknown field
        (np, lambda s: s["template"]["spec"]["taints"][0].update(effect="NO_SCHEDULE")),
        (np, lambda s: s["disruption"].pop("consolidateAfter")),
        (nc, lambda s: s.update(networkInterfaces=[{"networkCardIndex": 0, "deviceIndex": 0,
                                                    "interfaceType": "efa"}])),
        (nc, lambda s: s["blockDeviceMappings"][0]["ebs"].update(volumeSize=200)),
        (nc, lambda s: s.update(placementGroup={"name": "x"})),
        (nc, lambda s: s["metadataOptions"].update(httpPutResponseHopLimit=65)),
    ]:
        bad = copy.deepcopy(target)
        mutate(bad["inputs"]["spec"])
        with pytest.raises(AssertionError):
            validate(bad)


def test_cel_rules_the_objects_rely_on(any_plan):
    """The CRDs' x-kubernetes-validations that jsonschema cannot run, re-checked for our objects
    (tests/components/data/crds/karpenter.SOURCE.md lists them)."""
    restricted_labels = ("karpenter.sh/", "karpenter.k8s.aws/")
    restricted_tags = ("kubernetes.io/cluster", "eks:eks-cluster-name", "karpenter.sh/nodepool",
                       "karpenter.sh/nodeclaim", "karpenter.k8s.aws/ec2nodeclass")
    for r in resources(any_plan, NODECLASS):
        s = r["inputs"]["spec"]
        assert ("role" in s) != ("instanceProfile" in s)
        if any("alias" in t for t in s["amiSelectorTerms"]):
            assert len(s["amiSelectorTerms"]) == 1 and set(s["amiSelectorTerms"][0]) == {"alias"}
            assert re.fullmatch(r"al2023@.+", s["amiSelectorTerms"][0]["alias"])
        nics = s.get("networkInterfaces") or []
        if nics:
            assert {"networkCardIndex": 0, "deviceIndex": 0, "interfaceType": "interface"} in nics
            pairs = [(n["networkCardIndex"], n["deviceIndex"]) for n in nics]
            assert len(pairs) == len(set(pairs))
            efa_cards = [n["networkCardIndex"] for n in nics if n["interfaceType"] == "efa-only"]
            assert len(efa_cards) == len(set(efa_cards))
        if "placementGroupSelector" in s:
            assert len(s["placementGroupSelector"]) == 1
        assert not any(k.startswith(restricted_tags) for k in s.get("tags") or {})
    for r in resources(any_plan, NODEPOOL):
        s = r["inputs"]["spec"]
        for b in s["disruption"]["budgets"]:
            assert ("schedule" in b) == ("duration" in b)
        labels = s["template"]["metadata"]["labels"]
        assert not any(k.startswith(restricted_labels) or k == "kubernetes.io/hostname"
                       for k in labels)
        for q in s["template"]["spec"]["requirements"]:
            if q["operator"] == "In":
                assert q["values"]
