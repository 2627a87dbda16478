"""Storage as planned for each committed stack: S3, KMS, EFS, FSx, retention, tags, outputs."""

from __future__ import annotations

import json

import pytest

from components.config import StorageConfig
from components.storage import buckets as b
from components.storage.storage import (
    fsx_availability_zone,
    gpu_availability_zones,
    storage_key_policy,
)
from tests.conftest import STACKS, by_id, resources
from trainyard.synth import load_config

S3 = "aws:s3/"
BUCKET = "aws:s3/bucket:Bucket"
SIBLINGS = {
    "sse": "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
    "versioning": "aws:s3/bucketVersioning:BucketVersioning",
    "pab": "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
    "ownership": "aws:s3/bucketOwnershipControls:BucketOwnershipControls",
    "policy": "aws:s3/bucketPolicy:BucketPolicy",
    "lifecycle": "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",
    "logging": "aws:s3/bucketLogging:BucketLogging",
}
KEY = "aws:kms/key:Key"
EFS = "aws:efs/fileSystem:FileSystem"
MOUNT_TARGET = "aws:efs/mountTarget:MountTarget"
ACCESS_POINT = "aws:efs/accessPoint:AccessPoint"
BACKUP = "aws:efs/backupPolicy:BackupPolicy"
FSX = "aws:fsx/lustreFileSystem:LustreFileSystem"
DRA = "aws:fsx/dataRepositoryAssociation:DataRepositoryAssociation"
GRANT = "aws:kms/grant:Grant"
SG = "aws:ec2/securityGroup:SecurityGroup"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
TAGGABLE = {BUCKET, KEY, EFS, ACCESS_POINT, FSX, DRA, SG, INGRESS, EGRESS,
            "aws:iam/role:Role", "aws:eks/addon:Addon",
            "aws:eks/podIdentityAssociation:PodIdentityAssociation"}


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def storage_tree(plan: dict) -> list[dict]:
    """Every resource under the Storage component."""
    by_urn = {r["urn"]: r for r in plan["resources"]}
    roots = {r["urn"] for r in plan["resources"] if r["type"] == "trainyard:index:Storage"}
    assert len(roots) == 1

    def under(r):
        while r["parent"]:
            if r["parent"] in roots:
                return True
            r = by_urn[r["parent"]]
        return False

    return [r for r in plan["resources"] if under(r)]


def buckets_by_role(plan: dict) -> dict[str, dict]:
    out = {r["inputs"]["tags"][b.ROLE_TAG]: r for r in resources(plan, BUCKET)}
    assert set(out) == set(b.ROLES)
    return out


def sibling(plan: dict, kind: str, bucket: dict) -> dict:
    found = [r for r in resources(plan, SIBLINGS[kind]) if r["inputs"]["bucket"] == bucket["id"]]
    assert len(found) == 1, (kind, bucket["name"], len(found))
    return found[0]


def storage_key(plan: dict) -> dict:
    keys = [r for r in storage_tree(plan) if r["type"] == KEY]
    assert len(keys) == 1
    return keys[0]


def rules_of(plan: dict, sg: dict, type_: str) -> list[dict]:
    return [r for r in resources(plan, type_) if r["inputs"]["securityGroupId"] == sg["id"]]


def node_sg_ids(plan: dict) -> set[str]:
    """EFA SG from the network; the cluster SG once the cluster layer exists."""
    ids = {plan["outputs"]["efaSecurityGroupId"]}
    clusters = resources(plan, "aws:eks/cluster:Cluster")
    for c in clusters:
        ids.add(c["outputs"]["vpcConfig"]["clusterSecurityGroupId"])
    return ids


@pytest.fixture(scope="module", params=STACKS)
def stack(request, plan_for):
    return request.param, plan_for(request.param), load_config(request.param)


# ----------------------------------------------------------------------------------------------
# S3
# ----------------------------------------------------------------------------------------------
def test_buckets_encrypted_with_the_storage_key(stack):
    _, plan, _ = stack
    key = storage_key(plan)
    for role, bucket in buckets_by_role(plan).items():
        (rule,) = sibling(plan, "sse", bucket)["inputs"]["rules"]
        default = rule["applyServerSideEncryptionByDefault"]
        if role == "access-logs":  # S3 log delivery only supports SSE-S3 targets
            assert default == {"sseAlgorithm": "AES256"}
        else:
            assert default == {"sseAlgorithm": "aws:kms", "kmsMasterKeyId": key["outputs"]["arn"]}
            assert rule["bucketKeyEnabled"] is True


def test_buckets_versioned_private_acls_disabled(stack):
    _, plan, _ = stack
    for bucket in buckets_by_role(plan).values():
        assert sibling(plan, "versioning", bucket)["inputs"]["versioningConfiguration"] == \
            {"status": "Enabled"}
        pab = sibling(plan, "pab", bucket)["inputs"]
        assert all(pab[k] is True for k in ("blockPublicAcls", "blockPublicPolicy",
                                            "ignorePublicAcls", "restrictPublicBuckets"))
        assert sibling(plan, "ownership", bucket)["inputs"]["rule"] == \
            {"objectOwnership": "BucketOwnerEnforced"}
        assert bucket["inputs"].get("forceDestroy") is False
        assert "acl" not in bucket["inputs"]


def test_bucket_policies_tls_only_and_log_delivery_scoped(stack):
    _, plan, _ = stack
    roles = buckets_by_role(plan)
    for role, bucket in roles.items():
        arn = bucket["outputs"]["arn"]
        doc = json.loads(sibling(plan, "policy", bucket)["inputs"]["policy"])
        deny = [s for s in doc["Statement"] if s["Effect"] == "Deny"]
        assert deny == [{"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*",
                         "Action": "s3:*", "Resource": [arn, f"{arn}/*"],
                         "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]
        allow = [s for s in doc["Statement"] if s["Effect"] == "Allow"]
        if role != "access-logs":
            assert allow == []
            continue
        (delivery,) = allow
        assert delivery["Principal"] == {"Service": "logging.s3.amazonaws.com"}
        assert delivery["Action"] == "s3:PutObject" and delivery["Resource"] == f"{arn}/*"
        assert delivery["Condition"]["ArnLike"]["aws:SourceArn"] == sorted(
            roles[r]["outputs"]["arn"] for r in b.LOGGED_ROLES)
        assert delivery["Condition"]["StringEquals"]["aws:SourceAccount"] == "123456789012"


def test_access_logging_to_the_log_bucket(stack):
    _, plan, _ = stack
    roles = buckets_by_role(plan)
    for role in b.LOGGED_ROLES:
        logging = sibling(plan, "logging", roles[role])["inputs"]
        assert logging["targetBucket"] == roles["access-logs"]["id"]
        assert logging["targetPrefix"] == f"{role}/"
        assert logging["targetObjectKeyFormat"] == {
            "partitionedPrefix": {"partitionDateSource": "EventTime"}}
    # the log bucket does not log to itself
    assert not [r for r in resources(plan, SIBLINGS["logging"])
                if r["inputs"]["bucket"] == roles["access-logs"]["id"]]


def test_lifecycle_rules(stack):
    _, plan, cfg = stack
    s = cfg.storage
    for role, bucket in buckets_by_role(plan).items():
        rules = {r["id"]: r for r in sibling(plan, "lifecycle", bucket)["inputs"]["rules"]}
        assert all(r["status"] == "Enabled" for r in rules.values())
        assert rules["abort-incomplete-multipart-uploads"]["abortIncompleteMultipartUpload"] == \
            {"daysAfterInitiation": b.ABORT_MULTIPART_DAYS}
        noncurrent = rules["expire-noncurrent-versions"]["noncurrentVersionExpiration"]
        if role == "checkpoints":
            assert noncurrent == {"noncurrentDays": s.checkpoint_noncurrent_days}
            assert rules["remove-expired-delete-markers"]["expiration"] == \
                {"expiredObjectDeleteMarker": True}
        elif role == "datasets":
            assert noncurrent == {"noncurrentDays": b.DATASET_NONCURRENT_DAYS}
            assert rules["intelligent-tiering"]["transitions"] == [
                {"days": s.dataset_tiering_days, "storageClass": "INTELLIGENT_TIERING"}]
        else:
            assert rules["expire-access-logs"]["expiration"] == \
                {"days": s.access_log_retention_days}


def test_bucket_names_follow_the_prefix(stack):
    _, plan, cfg = stack
    for role, bucket in buckets_by_role(plan).items():
        if cfg.storage.bucket_prefix:
            assert bucket["inputs"]["bucketPrefix"] == f"{cfg.storage.bucket_prefix}-{role}-"
            assert len(bucket["inputs"]["bucketPrefix"]) + 26 <= 63
        else:
            assert "bucketPrefix" not in bucket["inputs"] and "bucket" not in bucket["inputs"]


def test_bucket_settings_depend_on_each_other(stack):
    _, plan, _ = stack
    for bucket in buckets_by_role(plan).values():
        policy = sibling(plan, "policy", bucket)
        assert sibling(plan, "pab", bucket)["urn"] in policy["dependencies"]
        lifecycle = sibling(plan, "lifecycle", bucket)
        assert sibling(plan, "versioning", bucket)["urn"] in lifecycle["dependencies"]


# ----------------------------------------------------------------------------------------------
# KMS, retention, tags
# ----------------------------------------------------------------------------------------------
def test_storage_key_rotates(stack):
    _, plan, _ = stack
    key = storage_key(plan)["inputs"]
    assert key["enableKeyRotation"] is True and key["deletionWindowInDays"] == 30
    assert json.loads(key["policy"]) == json.loads(storage_key_policy("123456789012", "aws"))


def test_retain_on_delete_follows_config(stack):
    name, plan, cfg = stack
    stateful = {BUCKET, *SIBLINGS.values(), KEY, EFS, BACKUP, FSX}
    tree = storage_tree(plan)
    for r in tree:
        if r["type"] in stateful:
            assert r["retainOnDelete"] is cfg.storage.retain_on_delete, r["name"]
        else:
            assert r["retainOnDelete"] is False, r["name"]
        assert r["protect"] is False, r["name"]  # protect would block every destroy
    assert cfg.storage.retain_on_delete is (name == "prod")


def test_every_taggable_storage_resource_tagged(stack):
    _, plan, cfg = stack
    tagged = [r for r in storage_tree(plan) if r["type"] in TAGGABLE]
    assert tagged
    for r in tagged:
        tags = r["inputs"].get("tags") or {}
        assert {k: tags.get(k) for k in cfg.tags} == dict(cfg.tags), r["name"]
        assert tags.get("Name"), r["name"]


# ----------------------------------------------------------------------------------------------
# EFS
# ----------------------------------------------------------------------------------------------
def efs_sg(plan):
    (sg,) = [r for r in resources(plan, SG) if r["name"].endswith("-efs-nfs")]
    return sg


def test_efs_encrypted_with_cmk_and_backed_up(stack):
    _, plan, cfg = stack
    (fs,) = resources(plan, EFS)
    assert fs["inputs"]["encrypted"] is True
    assert fs["inputs"]["kmsKeyId"] == storage_key(plan)["outputs"]["arn"]
    assert fs["inputs"]["throughputMode"] == cfg.storage.efs.throughput_mode
    (backup,) = resources(plan, BACKUP)
    assert backup["inputs"]["fileSystemId"] == fs["id"]
    assert backup["inputs"]["backupPolicy"] == {"status": "ENABLED"}
    assert cfg.storage.efs.backups  # committed stacks keep backups on


def test_efs_mount_targets_in_private_subnets_of_gpu_azs(stack):
    _, plan, cfg = stack
    (fs,) = resources(plan, EFS)
    ids = by_id(plan)
    targets = resources(plan, MOUNT_TARGET)
    placed = {}
    for mt in targets:
        assert mt["inputs"]["fileSystemId"] == fs["id"]
        assert mt["inputs"]["securityGroups"] == [efs_sg(plan)["id"]]
        subnet = ids[mt["inputs"]["subnetId"]]
        assert subnet["inputs"]["tags"]["trainyard.io/tier"] == "private"
        placed[subnet["inputs"]["availabilityZone"]] = subnet["id"]
    expected = gpu_availability_zones(cfg)
    assert sorted(placed) == sorted(expected) and len(targets) == len(expected)
    assert placed == {az: plan["outputs"]["privateSubnetIds"][az] for az in expected}


def test_gpu_azs_per_stack():
    assert gpu_availability_zones(load_config("dev")) == ("us-east-1a", "us-east-1b")
    assert gpu_availability_zones(load_config("staging")) == ("us-east-1a",)
    assert gpu_availability_zones(load_config("prod")) == ("us-east-1a", "us-east-1b",
                                                           "us-east-1c")
    assert fsx_availability_zone(load_config("prod")) == "us-east-1a"
    assert fsx_availability_zone(load_config("dev")) is None


def test_efs_sg_allows_only_nfs_from_node_groups(stack):
    _, plan, _ = stack
    sg = efs_sg(plan)
    ingress = rules_of(plan, sg, INGRESS)
    assert {r["inputs"]["referencedSecurityGroupId"] for r in ingress} == node_sg_ids(plan)
    for r in ingress:
        i = r["inputs"]
        assert (i["ipProtocol"], i["fromPort"], i["toPort"]) == ("tcp", 2049, 2049)
        assert "cidrIpv4" not in i and "cidrIpv6" not in i and i["description"]
    assert rules_of(plan, sg, EGRESS) == []
    assert "ingress" not in sg["inputs"] and "egress" not in sg["inputs"]


def test_efs_access_point_enforces_root_and_posix_user(stack):
    _, plan, _ = stack
    (fs,) = resources(plan, EFS)
    (ap,) = resources(plan, ACCESS_POINT)
    assert ap["inputs"]["fileSystemId"] == fs["id"]
    assert ap["inputs"]["rootDirectory"] == {
        "path": "/training",
        "creationInfo": {"ownerUid": 1000, "ownerGid": 1000, "permissions": "0775"}}
    assert ap["inputs"]["posixUser"] == {"uid": 1000, "gid": 1000}


# ----------------------------------------------------------------------------------------------
# FSx for Lustre
# ----------------------------------------------------------------------------------------------
def test_fsx_only_where_enabled(stack):
    _, plan, cfg = stack
    fsx_types = {FSX, DRA, GRANT}
    present = [r for r in storage_tree(plan) if r["type"] in fsx_types]
    assert bool(present) is cfg.storage.fsx.enabled
    assert ("fsxFileSystemId" in plan["outputs"]) is cfg.storage.fsx.enabled


def test_prod_fsx_persistent2_in_efa_az(plan_for):
    plan, cfg = plan_for("prod"), load_config("prod")
    (fs,) = resources(plan, FSX)
    i = fs["inputs"]
    assert i["deploymentType"] == "PERSISTENT_2" and i["storageType"] == "SSD"
    assert i["storageCapacity"] == cfg.storage.fsx.storage_capacity_gib == 2400
    assert i["perUnitStorageThroughput"] == cfg.storage.fsx.per_unit_storage_throughput
    assert i["kmsKeyId"] == storage_key(plan)["outputs"]["arn"]
    assert i["subnetIds"] == plan["outputs"]["privateSubnetIds"][cfg.efa_azs[0]]
    assert by_id(plan)[i["subnetIds"]]["inputs"]["availabilityZone"] == "us-east-1a"
    assert i["automaticBackupRetentionDays"] > 0 and i["skipFinalBackup"] is False
    (sg,) = [r for r in resources(plan, SG) if r["name"].endswith("-fsx-lustre")]
    assert i["securityGroupIds"] == [sg["id"]]


def test_prod_fsx_lustre_ports_only_from_nodes_and_itself(plan_for):
    plan = plan_for("prod")
    (sg,) = [r for r in resources(plan, SG) if r["name"].endswith("-fsx-lustre")]
    allowed = node_sg_ids(plan) | {sg["id"]}
    for type_ in (INGRESS, EGRESS):
        rules = rules_of(plan, sg, type_)
        seen = {(r["inputs"]["referencedSecurityGroupId"], r["inputs"]["fromPort"],
                 r["inputs"]["toPort"]) for r in rules}
        assert seen == {(s, lo, hi) for s in allowed for lo, hi in ((988, 988), (1018, 1023))}
        assert all(r["inputs"]["ipProtocol"] == "tcp" and "cidrIpv4" not in r["inputs"]
                   for r in rules)


def test_prod_fsx_linked_to_datasets_bucket(plan_for):
    plan = plan_for("prod")
    (fs,) = resources(plan, FSX)
    datasets = buckets_by_role(plan)["datasets"]
    (dra,) = resources(plan, DRA)
    assert dra["inputs"]["fileSystemId"] == fs["id"]
    assert dra["inputs"]["fileSystemPath"] == "/datasets"
    assert dra["inputs"]["dataRepositoryPath"] == f"s3://{datasets['id']}/"
    assert dra["inputs"]["s3"] == {"autoImportPolicy": {"events": ["NEW", "CHANGED", "DELETED"]}}
    assert "autoExportPolicy" not in dra["inputs"]["s3"]
    assert dra["inputs"]["deleteDataInFilesystem"] is False
    (grant,) = resources(plan, GRANT)
    g = grant["inputs"]
    assert g["keyId"] == storage_key(plan)["outputs"]["arn"]
    assert g["granteePrincipal"] == (
        "arn:aws:iam::123456789012:role/aws-service-role/s3.data-source.lustre.fsx.amazonaws.com/"
        f"AWSServiceRoleForFSxS3Access_{fs['id']}")
    assert g["constraints"] == [{"encryptionContextSubset": {"aws:s3:arn":
                                                             datasets["outputs"]["arn"]}}]
    assert "DescribeKey" not in g["operations"] and "CreateGrant" not in g["operations"]
    assert dra["urn"] in grant["dependencies"]


# ----------------------------------------------------------------------------------------------
# outputs
# ----------------------------------------------------------------------------------------------
def test_stack_outputs_for_workloads(stack):
    _, plan, cfg = stack
    out, roles = plan["outputs"], buckets_by_role(plan)
    assert out["datasetsBucket"] == roles["datasets"]["id"]
    assert out["checkpointsBucket"] == roles["checkpoints"]["id"]
    assert out["accessLogsBucket"] == roles["access-logs"]["id"]
    assert out["checkpointPrefix"] == "checkpoints/"
    assert out["trainingServiceAccount"] == "trainer"
    (fs,) = resources(plan, EFS)
    (ap,) = resources(plan, ACCESS_POINT)
    assert (out["efsFileSystemId"], out["efsAccessPointId"]) == (fs["id"], ap["id"])
    assert out["sharedClaimName"] == "shared-efs"
    roles_ = [r for r in resources(plan, "aws:iam/role:Role") if r["name"].endswith("-training")]
    assert out["trainingRoleArn"] == roles_[0]["outputs"]["arn"]
    if cfg.storage.fsx.enabled:
        (lustre,) = resources(plan, FSX)
        assert out["fsxFileSystemId"] == lustre["id"]
        assert out["fsxMountName"] == lustre["outputs"]["mountName"]
        assert out["fsxDnsName"] == lustre["outputs"]["dnsName"]
        assert out["fsxClaimName"] == "fsx-lustre"
    else:
        assert not {"fsxFileSystemId", "fsxMountName", "fsxDnsName", "fsxClaimName"} & set(out)


# ----------------------------------------------------------------------------------------------
# pure functions
# ----------------------------------------------------------------------------------------------
def test_lifecycle_rules_pure():
    cfg = StorageConfig(checkpoint_noncurrent_days=3, dataset_tiering_days=0,
                        access_log_retention_days=90)
    ck = {r["id"]: r for r in b.lifecycle_rules("checkpoints", cfg)}
    assert ck["expire-noncurrent-versions"]["noncurrent_version_expiration"] == \
        {"noncurrent_days": 3}
    ds = {r["id"]: r for r in b.lifecycle_rules("datasets", cfg)}
    assert ds["intelligent-tiering"]["transitions"] == [{"days": 0,
                                                         "storage_class": "INTELLIGENT_TIERING"}]
    logs = {r["id"]: r for r in b.lifecycle_rules("access-logs", cfg)}
    assert logs["expire-access-logs"]["expiration"] == {"days": 90}
    for role in b.ROLES:
        assert any("abort_incomplete_multipart_upload" in r
                   for r in b.lifecycle_rules(role, cfg))
    with pytest.raises(ValueError):
        b.lifecycle_rules("scratch", cfg)


def test_bucket_prefix_pure():
    assert b.bucket_prefix(None, "datasets") is None
    assert b.bucket_prefix("acme-ml", "access-logs") == "acme-ml-access-logs-"
    # the longest allowed configured prefix (24) still leaves room for S3's 26-char suffix
    assert len(b.bucket_prefix("a" * 24, "access-logs")) + 26 == 63


def test_access_log_policy_pure():
    doc = json.loads(b.access_log_bucket_policy("arn:aws:s3:::logs", ["arn:aws:s3:::z",
                                                                      "arn:aws:s3:::a"], "1"))
    (allow,) = [s for s in doc["Statement"] if s["Effect"] == "Allow"]
    assert allow["Condition"]["ArnLike"]["aws:SourceArn"] == ["arn:aws:s3:::a", "arn:aws:s3:::z"]
