"""trainyard.diff: property-level diffs, replacement rules, reference cascades, stateful flags,
capacity and policy deltas, on small hand-built plans (no synthesis, no git)."""

from __future__ import annotations

import copy
import importlib
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from components.compute.catalog import load_catalog
from trainyard import diff as D

VPC, SUBNET = "aws:ec2/vpc:Vpc", "aws:ec2/subnet:Subnet"
RTA = "aws:ec2/routeTableAssociation:RouteTableAssociation"
BUCKET, KMS = "aws:s3/bucket:Bucket", "aws:kms/key:Key"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
FSX, EKS = "aws:fsx/lustreFileSystem:LustreFileSystem", "aws:eks/cluster:Cluster"


def res(type_, name, inputs, rid=None, retain=False, arn=None):
    rid = rid or f"{type_.split(':')[-1].lower()}-{name}-0123456789"
    return {"urn": f"urn:pulumi:prod::trainyard::{type_}::{name}", "type": type_, "name": name,
            "custom": True, "id": rid, "parent": None, "retainOnDelete": retain,
            "protect": False, "inputs": inputs, "outputs": {"arn": arn} if arn else {}}


def plan(*resources):
    return {"project": "trainyard", "stack": "prod", "resources": list(resources),
            "outputs": {}}


def gpu_plan(instance="p4d.24xlarge", max_size=4, efa=4, subnet="subnet-aaaaaaaaaaaa"):
    lt = res(D.LAUNCH_TEMPLATE, "a100-lt", {
        "networkInterfaces": [{"deviceIndex": 0 if i == 0 else 1, "networkCardIndex": i,
                               "interfaceType": "efa" if i == 0 else "efa-only"}
                              for i in range(efa)]}, rid="lt-0123456789abcdef0")
    ng = res(D.NODE_GROUP, "a100", {
        "clusterName": "trainyard-eks", "instanceTypes": [instance], "subnetIds": [subnet],
        "launchTemplate": {"id": "lt-0123456789abcdef0", "version": "1"},
        "scalingConfig": {"minSize": 0, "desiredSize": 2, "maxSize": max_size}})
    return plan(lt, ng)


def by_name(sd: D.StackDiff) -> dict[str, D.ResourceDiff]:
    return {r.name: r for r in sd.resources}


# ----------------------------------------------------------------------------------------------
# property_changes
# ----------------------------------------------------------------------------------------------
def test_property_paths():
    old = {"scalingConfig": {"maxSize": 8, "minSize": 0}, "tags": {"a": "1"},
           "networkInterfaces": [{"t": "efa"}, {"t": "efa-only"}, {"t": "efa-only"}]}
    new = {"scalingConfig": {"maxSize": 16, "minSize": 0}, "tags": {"a": "1", "b": "2"},
           "networkInterfaces": [{"t": "efa"}, {"t": "efa"}]}
    got = {c.path: (c.kind, c.old, c.new) for c in D.property_changes(old, new)}
    assert got == {"scalingConfig.maxSize": ("changed", 8, 16),
                   "tags.b": ("added", None, "2"),
                   "networkInterfaces[1].t": ("changed", "efa-only", "efa"),
                   "networkInterfaces[2]": ("removed", {"t": "efa-only"}, None)}


def test_null_equals_absent_and_numbers_compare_by_value():
    assert D.property_changes({"a": None, "n": 2}, {"n": 2.0}) == []
    assert [c.path for c in D.property_changes({"b": 1}, {"b": True})] == ["b"]


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner,
                                                                 max_size=3),
    max_leaves=12)


@given(_json)
def test_no_change_against_itself(value):
    assert D.property_changes(value, copy.deepcopy(value)) == []


@given(st.dictionaries(st.text(min_size=1, max_size=3), st.integers(), min_size=1), st.data())
def test_every_changed_leaf_is_reported(d, data):
    key = data.draw(st.sampled_from(sorted(d)))
    changed = {**d, key: d[key] + 1}
    assert [c.path for c in D.property_changes(d, changed)] == [key]


# ----------------------------------------------------------------------------------------------
# Replacement rules
# ----------------------------------------------------------------------------------------------
def test_instance_type_change_replaces_the_node_group():
    sd = D.diff_stack(gpu_plan(), gpu_plan(instance="p5.48xlarge"))
    ng = by_name(sd)["a100"]
    assert ng.action == D.REPLACE and ng.replace_paths == ["instanceTypes[0]"]
    assert ng.rolls_nodes
    assert sd.summary()["replaced"] == 1


def test_max_size_is_an_in_place_update():
    sd = D.diff_stack(gpu_plan(max_size=8), gpu_plan(max_size=16))
    ng = by_name(sd)["a100"]
    assert ng.action == D.UPDATE and not ng.rolls_nodes and ng.replace_paths == []
    assert [(c.path, c.old, c.new) for c in ng.changes] == [("scalingConfig.maxSize", 8, 16)]


def test_launch_template_nics_make_a_new_version_that_rolls_the_nodes():
    sd = D.diff_stack(gpu_plan(efa=4), gpu_plan(efa=2))
    got = by_name(sd)
    assert got["a100-lt"].action == D.UPDATE  # new version, not a new template
    assert got["a100"].action == D.UPDATE and got["a100"].rolls_nodes
    assert any("launch template a100-lt" in r for r in got["a100"].reasons)
    assert sd.summary() == {"added": 0, "changed": 2, "replaced": 0, "removed": 0,
                            "nodes_rolled": 1, "data_loss_risks": 0}


def test_release_version_rolls_nodes():
    base = gpu_plan()
    head = copy.deepcopy(base)
    head["resources"][1]["inputs"]["releaseVersion"] = "1.33.5-20260101"
    ng = by_name(D.diff_stack(base, head))["a100"]
    assert ng.action == D.UPDATE and ng.rolls_nodes


def _network(cidr):
    vpc = res(VPC, "vpc", {"cidrBlock": cidr}, rid="vpc-0123456789abcdef0",
              arn="arn:aws:ec2:us-east-1:123456789012:vpc/vpc-0123456789abcdef0")
    subnet = res(SUBNET, "private-a", {"vpcId": "vpc-0123456789abcdef0",
                                       "cidrBlock": cidr.replace("/16", "/18"),
                                       "availabilityZone": "us-east-1a"},
                 rid="subnet-0123456789abcdef0")
    rta = res(RTA, "private-a", {"subnetId": "subnet-0123456789abcdef0",
                                 "routeTableId": "rtb-0123456789abcdef0"})
    return [vpc, subnet, rta]


def test_vpc_cidr_replacement_cascades_through_references():
    base = plan(*_network("10.30.0.0/16"), *gpu_plan(subnet="subnet-0123456789abcdef0")
                ["resources"])
    head = plan(*_network("10.40.0.0/16"), *gpu_plan(subnet="subnet-0123456789abcdef0")
                ["resources"])
    got = by_name(D.diff_stack(base, head))
    assert got["vpc"].action == D.REPLACE and got["vpc"].replace_paths == ["cidrBlock"]
    assert got["private-a"].action == D.REPLACE  # the subnet: own CIDR and its VPC
    assert set(got["private-a"].replace_paths) == {"cidrBlock", "vpcId"}
    assert got["a100"].action == D.REPLACE  # node group: subnetIds references the subnet
    assert any("references private-a" in r for r in got["a100"].reasons)
    assert "a100-lt" not in got  # the launch template does not reference the network


def test_reference_in_an_updatable_property_is_an_update():
    bucket_arn = "arn:aws:s3:::trainyard-ckpt-0123456789"
    policy_doc = ('{"Statement": [{"Action": "s3:*", "Effect": "Allow", "Resource": "'
                  + bucket_arn + '/*"}]}')
    base = plan(res(BUCKET, "ckpt", {"bucketPrefix": "trainyard-ckpt-"}, arn=bucket_arn),
                res(ROLE_POLICY, "reader", {"role": "reader", "policy": policy_doc}))
    head = copy.deepcopy(base)
    head["resources"][0]["inputs"]["bucketPrefix"] = "trainyard-checkpoints-"
    got = by_name(D.diff_stack(base, head))
    assert got["ckpt"].action == D.REPLACE and got["ckpt"].data_loss_risk
    assert got["reader"].action == D.UPDATE
    assert any("new id of ckpt" in r for r in got["reader"].reasons)


_ENC = {"provider": {"keyArn": "arn:k1"}, "resources": ["secrets"]}


@pytest.mark.parametrize("old, new, action", [
    (None, _ENC, D.UPDATE),  # encryption can be added to a running cluster
    (_ENC, {**_ENC, "provider": {"keyArn": "arn:k2"}}, D.UPDATE),
    (_ENC, None, D.REPLACE),  # but never removed
])
def test_removed_mode(old, new, action):
    b = plan(res(EKS, "eks", {"name": "trainyard", "encryptionConfig": old}))
    h = plan(res(EKS, "eks", {"name": "trainyard", "encryptionConfig": new}))
    assert by_name(D.diff_stack(b, h))["eks"].action == action


def test_set_mode():
    rule_type = "test:index/thing:Thing"
    D.REPLACE_ON[rule_type] = (("kmsKeyId", D.SET),)
    try:
        assert not D.replacing(rule_type, D.Change("kmsKeyId", None, "k", "added"))
        assert D.replacing(rule_type, D.Change("kmsKeyId", "k", "k2", "changed"))
        assert D.replacing(rule_type, D.Change("kmsKeyId", "k", None, "removed"))
    finally:
        del D.REPLACE_ON[rule_type]


@pytest.mark.parametrize("old, new, action", [(1200, 2400, D.UPDATE), (2400, 1200, D.REPLACE)])
def test_decrease_mode(old, new, action):
    b = plan(res(FSX, "fsx", {"storageCapacity": old}))
    h = plan(res(FSX, "fsx", {"storageCapacity": new}))
    assert by_name(D.diff_stack(b, h))["fsx"].action == action


def test_wildcard_rules():
    t = "kubernetes:core/v1:Namespace"
    assert D.replacing(t, D.Change("metadata.name", "a", "b", "changed"))
    assert not D.replacing(t, D.Change("metadata.labels.x", "a", "b", "changed"))
    assert D.replacing("random:index/randomPassword:RandomPassword",
                       D.Change("length", 16, 32, "changed"))


# ----------------------------------------------------------------------------------------------
# Stateful resources, options, added/removed stacks
# ----------------------------------------------------------------------------------------------
def test_stateful_deletes_are_data_loss_unless_retained():
    base = plan(res(BUCKET, "ckpt", {"bucketPrefix": "a-"}),
                res(BUCKET, "kept", {"bucketPrefix": "b-"}, retain=True),
                res(KMS, "key", {"description": "k"}),
                res(SUBNET, "s", {"cidrBlock": "10.0.0.0/24"}))
    got = by_name(D.diff_stack(base, plan()))
    assert {n: (r.action, r.data_loss_risk) for n, r in got.items()} == {
        "ckpt": (D.DELETE, True), "kept": (D.DELETE, False), "key": (D.DELETE, True),
        "s": (D.DELETE, False)}
    assert got["kept"].retain_on_delete and got["kept"].stateful


def test_option_change_is_reported():
    base = plan(res(BUCKET, "ckpt", {"bucketPrefix": "a-"}))
    head = copy.deepcopy(base)
    head["resources"][0]["retainOnDelete"] = True
    r = by_name(D.diff_stack(base, head))["ckpt"]
    assert r.action == D.UPDATE and r.reasons == ["resource option retainOnDelete: False → True"]


def test_stack_added_and_removed():
    p = gpu_plan()
    added = D.diff_stack(None, p)
    assert {r.action for r in added.resources} == {D.CREATE}
    assert by_name(added)["a100"].rolls_nodes
    assert D.diff_stack(p, None).summary()["removed"] == 2


def test_component_resources_are_not_counted():
    comp = {"urn": "urn:pulumi:prod::trainyard::trainyard:index:Network::net",
            "type": "trainyard:index:Network", "name": "net", "custom": False, "id": None,
            "inputs": {}, "outputs": {}}
    assert D.diff_stack(plan(), plan(comp)).resources == []


# ----------------------------------------------------------------------------------------------
# The rules name real input properties of pulumi-aws v7 resources
# ----------------------------------------------------------------------------------------------
def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _aws_rules():
    for table in (D.REPLACE_ON, D.ROLLS_NODES):
        for typ in table:
            if typ.startswith("aws:"):
                for rule, _ in D.rules_for(typ, table):
                    yield typ, rule


@pytest.mark.parametrize("typ, rule", sorted(set(_aws_rules())))
def test_rule_names_a_real_input(typ, rule):
    module = importlib.import_module(f"pulumi_aws.{typ.split(':')[1].split('/')[0]}")
    cls = typ.split(":")[-1]
    owner = getattr(module, f"{cls}InitArgs", None) or getattr(module, f"{cls}Args")
    for seg in rule.split("."):
        assert owner is not None, f"{typ}: cannot follow {rule!r}"
        prop = getattr(owner, _snake(seg), None)
        assert isinstance(prop, property), f"{typ}: {seg!r} is not an input of {owner.__name__}"
        m = re.search(r"'(\w+Args)'", str(prop.fget.__annotations__.get("return")))
        owner = getattr(module, m.group(1), None) if m else None


def test_stateful_types_cover_the_storage_layer():
    assert {BUCKET, KMS, EKS, FSX, "aws:efs/fileSystem:FileSystem"} <= set(D.STATEFUL)


# ----------------------------------------------------------------------------------------------
# Capacity and policy deltas
# ----------------------------------------------------------------------------------------------
def test_capacity_from_node_groups_and_launch_templates():
    cat = load_catalog()
    spec = cat.get("p4d.24xlarge")
    cap = D.capacity(gpu_plan(max_size=4, efa=4), cat)
    assert (cap.nodes, cap.gpus, cap.efa_interfaces) == (4, 4 * spec.gpus, 16)
    assert cap.bf16_tflops == pytest.approx(4 * spec.bf16_tflops_total)
    delta = D.capacity_delta(cap, D.capacity(gpu_plan(max_size=8, efa=4), cat))
    assert delta["gpus"] == 4 * spec.gpus and delta["efa_interfaces"] == 16
    assert D.capacity(None, cat).gpus == 0
    unknown = D.capacity(gpu_plan(instance="zz9.huge"), cat)
    assert unknown.unknown_types == ("zz9.huge",) and unknown.gpus == 0


def test_policy_delta_matches_on_policy_and_urn():
    v = lambda p, u, msg="m", lvl="mandatory": {"policy": p, "urn": u, "message": msg,  # noqa: E731
                                                "level": lvl}
    base = [v("s3-versioning", "u1"), v("imdsv2", "u2"), v("tags", "u3", lvl="advisory")]
    head = [v("s3-versioning", "u1", msg="reworded"), v("tags", "u3", lvl="advisory"),
            v("efa-count", "u4"), v("tags", "u5", lvl="advisory")]
    d = D.policy_delta(base, head)
    assert [(x["policy"], x["urn"]) for x in d["introduced"]] == [("efa-count", "u4"),
                                                                  ("tags", "u5")]
    assert [(x["policy"], x["urn"]) for x in d["fixed"]] == [("imdsv2", "u2")]
    assert (d["unchanged"], d["base_total"], d["head_total"]) == (2, 3, 4)


def test_short_value():
    assert D.short_value(None) == "—"
    assert D.short_value("x" * 200).count("…") == 1 and len(D.short_value("x" * 200)) <= 60


def test_capacity_counts_capacity_block_pools(plan_for):
    """Capacity Block node groups name their instance type in the launch template; the review's
    capacity must count them like `trainyard plan` does (prod: h100 is 4 x p5.48xlarge)."""
    from components.compute.catalog import load_catalog
    from trainyard.diff import capacity

    cap = capacity(plan_for("prod"), load_catalog())
    # a100 16x8 + h100 4x8 + g-spot 8x8 + eval-spot 6x4 + inference 8x1 GPUs;
    # EFA 16x4 + 4x32 + 8x1
    assert (cap.gpus, cap.efa_interfaces) == (256, 200)
    assert cap.unknown_types == ()


def test_capacity_block_roll_says_scale_to_zero_first(plan_for):
    """A version change rolls every node; on a Capacity Block EKS can only do that at desired 0,
    and review says so (EKS user guide, Capacity Blocks for managed node groups)."""
    from trainyard import review as R

    base = plan_for("prod")
    head = copy.deepcopy(base)
    for r in head["resources"]:
        if r["type"] == D.NODE_GROUP and r["inputs"].get("version"):
            r["inputs"]["version"] = "1.37"
    sd = D.diff_stack(base, head)
    flagged = {r.name for r in sd.resources if r.capacity_block}
    assert flagged == {"trainyard-pool-h100-ng"}
    sr = R.StackReview("prod", R.Side(True, base), R.Side(True, head), status="changed", diff=sd)
    R._flag(sr)
    cb = [w for w in sr.warnings if "Capacity Block" in w]
    assert len(cb) == 1 and "trainyard-pool-h100-ng" in cb[0] and "desiredSize=0" in cb[0]
    # a max-size change does not roll the nodes: no Capacity Block warning
    head = copy.deepcopy(base)
    for r in head["resources"]:
        if r["name"] == "trainyard-pool-h100-ng":
            r["inputs"]["scalingConfig"]["maxSize"] = 8
    sr = R.StackReview("prod", R.Side(True, base), R.Side(True, head), status="changed",
                       diff=D.diff_stack(base, head))
    R._flag(sr)
    assert not [w for w in sr.warnings if "Capacity Block" in w]


# ----------------------------------------------------------------------------------------------
# `new-vpc`: EKS cannot move a cluster to another VPC
# ----------------------------------------------------------------------------------------------
SG = "aws:ec2/securityGroup:SecurityGroup"
VPC_ID = "vpc-0123456789abcdef0"


def _cluster_plan(vpc_cidr="10.30.0.0/16", subnet_cidrs=("10.30.0.0/18", "10.30.64.0/18"),
                  sg_description="cluster extra"):
    vpc = res(VPC, "vpc", {"cidrBlock": vpc_cidr}, rid=VPC_ID)
    subnets = [res(SUBNET, f"private-{az}", {"vpcId": VPC_ID, "cidrBlock": cidr,
                                            "availabilityZone": f"us-east-1{az}"},
                   rid=f"subnet-{az}123456789abcdef")
               for az, cidr in zip("ab", subnet_cidrs, strict=True)]
    sg = res(SG, "extra", {"vpcId": VPC_ID, "description": sg_description},
             rid="sg-0123456789abcdef0")
    cluster = res(EKS, "eks", {"name": "trainyard-prod", "vpcConfig": {
        "subnetIds": [s["id"] for s in subnets], "securityGroupIds": [sg["id"]],
        "endpointPrivateAccess": True}}, rid="trainyard-prod")
    group = res(D.NODE_GROUP, "system", {"clusterName": "trainyard-prod",
                                         "subnetIds": [s["id"] for s in subnets]})
    return plan(vpc, *subnets, sg, cluster, group)


def test_a_new_vpc_replaces_the_cluster_on_it():
    """A VPC CIDR change replaces the VPC, hence its subnets and security groups, so the cluster
    would have to move to another VPC: a replacement, not the in-place subnet update."""
    head = _cluster_plan("10.40.0.0/16", ("10.40.0.0/18", "10.40.64.0/18"))
    got = by_name(D.diff_stack(_cluster_plan(), head))
    eks = got["eks"]
    assert eks.action == D.REPLACE and eks.data_loss_risk
    assert set(eks.replace_paths) == {"vpcConfig.subnetIds[0]", "vpcConfig.subnetIds[1]",
                                      "vpcConfig.securityGroupIds[0]"}
    assert "`vpcConfig.subnetIds[0]` references private-a, which is replaced into a new VPC" \
        in eks.reasons
    assert not any("is updated to the new id" in r for r in eks.reasons)
    assert got["system"].action == D.REPLACE  # its subnets moved, and so did its cluster
    assert "`clusterName` references eks, which is replaced into a new VPC" in \
        got["system"].reasons


def test_new_subnets_in_the_same_vpc_update_the_cluster_in_place():
    head = _cluster_plan(subnet_cidrs=("10.30.128.0/18", "10.30.192.0/18"))
    got = by_name(D.diff_stack(_cluster_plan(), head))
    assert got["private-a"].action == D.REPLACE and "vpc" not in got
    assert got["eks"].action == D.UPDATE  # vpcConfig.subnetIds is updatable within the VPC
    assert "`vpcConfig.subnetIds[0]` is updated to the new id of private-a (replaced)" in \
        got["eks"].reasons


def test_a_replaced_security_group_in_the_same_vpc_updates_the_cluster():
    got = by_name(D.diff_stack(_cluster_plan(), _cluster_plan(sg_description="other")))
    assert got["extra"].action == D.REPLACE
    assert got["eks"].action == D.UPDATE


def test_new_vpc_is_a_rule_in_the_table_not_a_special_case():
    assert ("vpcConfig.subnetIds", D.NEW_VPC) in D.rules_for(EKS, D.REPLACE_ON)
    assert ("vpcConfig.securityGroupIds", D.NEW_VPC) in D.rules_for(EKS, D.REPLACE_ON)
    change = D.Change("vpcConfig.subnetIds[1]", "subnet-a", "subnet-b", "changed")
    assert not D.replacing(EKS, change)
    assert D.replacing(EKS, change, new_vpc=True)
    assert not D.replacing(EKS, D.Change("vpcConfig.endpointPublicAccess", True, False,
                                         "changed"), new_vpc=True)


def test_prod_vpc_cidr_change_replaces_the_cluster(plan_for, tmp_path):
    from trainyard.synth import stack_path, synthesize

    text = stack_path("prod").read_text()
    assert "vpcCidr: 10.30.0.0/16" in text, "prod's VPC CIDR moved; update the test"
    edited = tmp_path / "Pulumi.prod.yaml"
    edited.write_text(text.replace("vpcCidr: 10.30.0.0/16", "vpcCidr: 10.40.0.0/16"))
    got = D.diff_stack(plan_for("prod"), synthesize("prod", edited))
    by_type: dict[str, set[str]] = {}
    for r in got.resources:
        by_type.setdefault(r.type, set()).add(r.action)
    assert by_type[EKS] == {D.REPLACE}
    assert by_type[D.NODE_GROUP] == {D.REPLACE}
    assert by_type[VPC] == {D.REPLACE} and by_type[SUBNET] == {D.REPLACE}


def test_provisioner_changes_name_each_moved_pool(plan_for, managed_plan_for):
    """prod with its elastic pools as node groups -> the committed prod (Karpenter NodePools)."""
    from trainyard.diff import PROVISIONER_NAMES, provisioner_changes

    managed, karpenter = managed_plan_for("prod"), plan_for("prod")
    assert provisioner_changes(managed, karpenter) == [
        ("a100", "managed", "karpenter"), ("eval-spot", "managed", "karpenter"),
        ("g-spot", "managed", "karpenter"), ("inference", "managed", "karpenter")]
    assert provisioner_changes(karpenter, managed)[0] == ("a100", "karpenter", "managed")
    assert provisioner_changes(karpenter, karpenter) == []
    assert provisioner_changes(None, karpenter) == []
    assert PROVISIONER_NAMES == {"managed": "managed node group",
                                 "karpenter": "Karpenter NodePool"}
