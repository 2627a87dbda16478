"""Storage rules: S3 (pulumi-aws v7 splits bucket settings into sibling resources, so these are
stack rules that join a bucket with its siblings), EFS, FSx for Lustre, CloudWatch log groups."""

from __future__ import annotations

import json
from typing import Any, Optional

from pulumi_policy import Severity

from .common import (
    ADVISORY,
    MANDATORY,
    Refs,
    Stack,
    as_int,
    get,
    items,
    plain,
    resource_rule,
    schema,
    short,
    stack_rule,
    tags_of,
    truthy,
)

BUCKETS = ("aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2")
SSE = ("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
       "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2")
VERSIONING = ("aws:s3/bucketVersioning:BucketVersioning",
              "aws:s3/bucketVersioningV2:BucketVersioningV2")
PAB = ("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",)
OWNERSHIP = ("aws:s3/bucketOwnershipControls:BucketOwnershipControls",)
POLICY = ("aws:s3/bucketPolicy:BucketPolicy",)
LOGGING = ("aws:s3/bucketLogging:BucketLogging", "aws:s3/bucketLoggingV2:BucketLoggingV2")
LIFECYCLE = ("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",
             "aws:s3/bucketLifecycleConfigurationV2:BucketLifecycleConfigurationV2")
EFS = "aws:efs/fileSystem:FileSystem"
EFS_AP = "aws:efs/accessPoint:AccessPoint"
EFS_BACKUP = "aws:efs/backupPolicy:BackupPolicy"
FSX_LUSTRE = "aws:fsx/lustreFileSystem:LustreFileSystem"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"

BUCKET_KEYS = ("id", "bucket")
PURPOSE_TAGS = ("trainyard.io/bucket-role", "trainyard.io/purpose")


def siblings(stack: Stack, bucket, types) -> list:
    return stack.referring(bucket, stack.of(*types), "bucket", BUCKET_KEYS)


def purpose(bucket) -> str:
    """`checkpoints`, `datasets`, `access-logs`, ... from the bucket-role tag, else the logical
    name."""
    tags = tags_of(bucket.props)
    for key in PURPOSE_TAGS:
        if tags.get(key):
            return str(tags[key])
    name = bucket.name.lower()
    for needle, role in (("checkpoint", "checkpoints"), ("ckpt", "checkpoints"),
                         ("dataset", "datasets"), ("access-log", "access-logs"),
                         ("accesslog", "access-logs")):
        if needle in name:
            return role
    return "general"


def log_targets(stack: Stack) -> list:
    """Buckets that receive S3 server access logs (they cannot use SSE-KMS and do not log
    themselves)."""
    buckets = stack.of(*BUCKETS)
    out = [b for b in buckets if purpose(b) == "access-logs"]
    for lg in stack.of(*LOGGING):
        for b in stack.linked(lg, "targetBucket", buckets, BUCKET_KEYS):
            if b not in out:
                out.append(b)
    return out


def policy_document(value: Any) -> Optional[dict]:
    value = plain(value)
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value.strip():
        try:
            doc = json.loads(value)
        except ValueError:
            return None
        return doc if isinstance(doc, dict) else None
    return None


def statements(doc: Optional[dict]) -> list[dict]:
    if not doc:
        return []
    st = doc.get("Statement", [])
    return [s for s in (st if isinstance(st, list) else [st]) if isinstance(s, dict)]


def listify(value: Any) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


# ----------------------------------------------------------------------------------------------
# S3
# ----------------------------------------------------------------------------------------------
@stack_rule(
    name="s3-public-access-block",
    description="Every bucket has a public access block with all four settings on.",
    family="storage", level=MANDATORY, severity=Severity.CRITICAL,
    refs=Refs(checkov=("CKV2_AWS_6", "CKV_AWS_53", "CKV_AWS_54", "CKV_AWS_55", "CKV_AWS_56"),
              trivy=("AWS-0086", "AWS-0087", "AWS-0091", "AWS-0093", "AWS-0094")),
    remediation="Add aws.s3.BucketPublicAccessBlock(bucket=<bucket id>, block_public_acls=True, "
                "block_public_policy=True, ignore_public_acls=True, restrict_public_buckets=True).")
def s3_public_access_block(stack: Stack, cfg, report):
    keys = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    for b in stack.of(*BUCKETS):
        blocks = siblings(stack, b, PAB)
        if not blocks:
            report(f"bucket {short(b.urn)} has no BucketPublicAccessBlock: add one with all four "
                   "settings true.", b.urn)
            continue
        off = [k for k in keys if not any(truthy(get(pb.props, k)) for pb in blocks)]
        if off:
            report(f"bucket {short(b.urn)}'s public access block leaves {', '.join(off)} off: "
                   "set all four to true.", blocks[0].urn)


def _sse_algorithms(stack: Stack, b) -> list[tuple[str, Any]]:
    out = []
    for cfg_res in siblings(stack, b, SSE):
        for rule in items(get(cfg_res.props, "rules")):
            d = get(rule, "applyServerSideEncryptionByDefault") or {}
            out.append((str(get(d, "sseAlgorithm", "")), get(d, "kmsMasterKeyId")))
    for rule in items(get(b.props, "serverSideEncryptionConfiguration.rules")):  # legacy inline
        d = get(rule, "applyServerSideEncryptionByDefault") or {}
        out.append((str(get(d, "sseAlgorithm", "")), get(d, "kmsMasterKeyId")))
    return out


@stack_rule(
    name="s3-encryption",
    description="Every bucket has default encryption with a KMS key (access-log target buckets: "
                "SSE-S3, the only encryption S3 log delivery supports).",
    family="storage", level=MANDATORY, severity=Severity.HIGH,
    refs=Refs(checkov=("CKV_AWS_19", "CKV_AWS_145"), trivy=("AWS-0088", "AWS-0132")),
    config=schema(requireKms={
        "type": "boolean", "default": True,
        "description": "Require aws:kms (with a key id) rather than SSE-S3 (AES256)."}),
    remediation="Add aws.s3.BucketServerSideEncryptionConfiguration(bucket=..., rules=[{"
                "apply_server_side_encryption_by_default: {sse_algorithm: 'aws:kms', "
                "kms_master_key_id: <key arn>}, bucket_key_enabled: True}]).")
def s3_encryption(stack: Stack, cfg, report):
    logs = log_targets(stack)
    for b in stack.of(*BUCKETS):
        algos = _sse_algorithms(stack, b)
        if not algos:
            report(f"bucket {short(b.urn)} has no server-side encryption configuration: add a "
                   "BucketServerSideEncryptionConfiguration using aws:kms.", b.urn)
            continue
        if b in logs:
            continue
        if cfg["requireKms"] and not any(a.startswith("aws:kms") and key for a, key in algos):
            report(f"bucket {short(b.urn)} is encrypted with {algos[0][0] or 'no algorithm'} "
                   "but this environment requires aws:kms with a customer-managed key: set "
                   "sse_algorithm='aws:kms' and kms_master_key_id.", b.urn)


def _versioned(stack: Stack, b) -> bool:
    for v in siblings(stack, b, VERSIONING):
        if get(v.props, "versioningConfiguration.status") == "Enabled":
            return True
    return truthy(get(b.props, "versioning.enabled"))  # legacy inline


@stack_rule(
    name="s3-versioning",
    description="Every bucket (except access-log targets) has versioning enabled.",
    family="storage", level=MANDATORY, severity=Severity.MEDIUM,
    refs=Refs(checkov=("CKV_AWS_21",), trivy=("AWS-0090",)),
    remediation="Add aws.s3.BucketVersioning(bucket=..., versioning_configuration={'status': "
                "'Enabled'}) and expire noncurrent versions with a lifecycle rule.")
def s3_versioning(stack: Stack, cfg, report):
    logs = log_targets(stack)
    for b in stack.of(*BUCKETS):
        if b not in logs and not _versioned(stack, b):
            report(f"bucket {short(b.urn)} is not versioned: add a BucketVersioning with status "
                   "Enabled.", b.urn)


@stack_rule(
    name="s3-access-logging",
    description="Every bucket (except access-log targets) logs requests to a log bucket.",
    family="storage", level=ADVISORY, severity=Severity.LOW,
    refs=Refs(checkov=("CKV_AWS_18",), trivy=("AWS-0089",)),
    remediation="Add aws.s3.BucketLogging(bucket=..., target_bucket=<log bucket>, "
                "target_prefix='<bucket>/').")
def s3_access_logging(stack: Stack, cfg, report):
    logs = log_targets(stack)
    for b in stack.of(*BUCKETS):
        if b in logs:
            continue
        if not siblings(stack, b, LOGGING) and not get(b.props, "logging.targetBucket"):
            report(f"bucket {short(b.urn)} has no access logging: add a BucketLogging targeting "
                   "the access-log bucket.", b.urn)


@stack_rule(
    name="s3-acls-disabled",
    description="Object ownership is BucketOwnerEnforced (ACLs disabled) on every bucket.",
    family="storage", level=MANDATORY, severity=Severity.MEDIUM,
    refs=Refs(checkov=("CKV2_AWS_65",)),
    remediation="Add aws.s3.BucketOwnershipControls(bucket=..., rule={'object_ownership': "
                "'BucketOwnerEnforced'}).")
def s3_acls_disabled(stack: Stack, cfg, report):
    for b in stack.of(*BUCKETS):
        owners = siblings(stack, b, OWNERSHIP)
        if not any(get(o.props, "rule.objectOwnership") == "BucketOwnerEnforced" for o in owners):
            report(f"bucket {short(b.urn)} does not disable ACLs: add BucketOwnershipControls "
                   "with object_ownership='BucketOwnerEnforced'.", (owners[0] if owners else b).urn)


def _lifecycle_rules(stack: Stack, b) -> list:
    rules = []
    for lc in siblings(stack, b, LIFECYCLE):
        rules += [r for r in items(get(lc.props, "rules")) if get(r, "status") == "Enabled"]
    return rules


@stack_rule(
    name="s3-lifecycle",
    description="Every bucket has an enabled lifecycle rule that aborts incomplete multipart "
                "uploads.",
    family="storage", level=MANDATORY, severity=Severity.LOW,
    refs=Refs(checkov=("CKV2_AWS_61", "CKV_AWS_300")),
    remediation="Add aws.s3.BucketLifecycleConfiguration(bucket=..., rules=[{id: "
                "'abort-multipart', status: 'Enabled', filter: {}, "
                "abort_incomplete_multipart_upload: {days_after_initiation: 7}}]).")
def s3_lifecycle(stack: Stack, cfg, report):
    for b in stack.of(*BUCKETS):
        rules = _lifecycle_rules(stack, b)
        if not rules:
            report(f"bucket {short(b.urn)} has no enabled lifecycle rule: add a "
                   "BucketLifecycleConfiguration.", b.urn)
        elif not any(as_int(get(r, "abortIncompleteMultipartUpload.daysAfterInitiation")) for r in rules):
            report(f"bucket {short(b.urn)} never aborts incomplete multipart uploads (large "
                   "checkpoints leave billed parts behind): add abort_incomplete_multipart_upload"
                   ".", b.urn)


def _tls_only(doc: Optional[dict]) -> bool:
    for s in statements(doc):
        if s.get("Effect") != "Deny":
            continue
        cond = s.get("Condition") or {}
        for op in ("Bool", "BoolIfExists"):
            v = (cond.get(op) or {}).get("aws:SecureTransport")
            if str(listify(v)[0] if listify(v) else "").lower() == "false":
                return True
    return False


@stack_rule(
    name="s3-tls-only",
    description="Every bucket's policy denies requests that do not use TLS.",
    family="storage", level=MANDATORY, severity=Severity.MEDIUM,
    refs=Refs(other=("aws-security-hub:S3.5",)),
    remediation="Add a BucketPolicy statement: Effect Deny, Principal '*', Action 's3:*', "
                "Resource [bucket arn, bucket arn/*], Condition Bool aws:SecureTransport 'false'.")
def s3_tls_only(stack: Stack, cfg, report):
    for b in stack.of(*BUCKETS):
        pols = siblings(stack, b, POLICY)
        if not any(_tls_only(policy_document(get(p.props, "policy"))) for p in pols):
            report(f"bucket {short(b.urn)} accepts plain-HTTP requests: add a bucket policy that "
                   "denies aws:SecureTransport=false.", (pols[0] if pols else b).urn)


@stack_rule(
    name="checkpoint-bucket-protection",
    description="Checkpoint buckets are versioned, expire noncurrent versions and abort "
                "incomplete multipart uploads.",
    family="storage", level=MANDATORY, severity=Severity.HIGH,
    refs=Refs(checkov=("CKV_AWS_21", "CKV_AWS_300")), gpu=True,
    remediation="Version the checkpoint bucket and give it a lifecycle rule with "
                "noncurrent_version_expiration (days) and abort_incomplete_multipart_upload.")
def checkpoint_bucket_protection(stack: Stack, cfg, report):
    for b in stack.of(*BUCKETS):
        if purpose(b) != "checkpoints":
            continue
        problems = []
        if not _versioned(stack, b):
            problems.append("versioning is off (an overwritten or deleted checkpoint is lost)")
        rules = _lifecycle_rules(stack, b)
        if not any(as_int(get(r, "noncurrentVersionExpiration.noncurrentDays")) for r in rules):
            problems.append("noncurrent versions never expire (every save is kept forever)")
        if not any(as_int(get(r, "abortIncompleteMultipartUpload.daysAfterInitiation"))
                   for r in rules):
            problems.append("incomplete multipart uploads are never aborted")
        if problems:
            report(f"checkpoint bucket {short(b.urn)}: {'; '.join(problems)}.", b.urn)


# ----------------------------------------------------------------------------------------------
# EFS / FSx
# ----------------------------------------------------------------------------------------------
@resource_rule(
    name="efs-encrypted",
    description="EFS file systems are encrypted at rest with a customer-managed KMS key.",
    family="storage", types=(EFS,), level=MANDATORY, severity=Severity.HIGH,
    refs=Refs(checkov=("CKV_AWS_42", "CKV_AWS_184"), trivy=("AWS-0037",)),
    config=schema(requireCmk={"type": "boolean", "default": True,
                              "description": "Require kms_key_id (a CMK), not the AWS key."}),
    remediation="Set encrypted=True and kms_key_id=<KMS key arn>.")
def efs_encrypted(args, cfg, report):
    if not truthy(get(args.props, "encrypted")):
        report("EFS file system is not encrypted at rest: set encrypted=True (this forces "
               "replacement).")
    elif cfg["requireCmk"] and not get(args.props, "kmsKeyId"):
        report("EFS file system uses the AWS-managed key: set kms_key_id to a customer-managed "
               "KMS key.")


@resource_rule(
    name="efs-access-point-posix",
    description="EFS access points enforce a non-root POSIX user (uid and gid not 0) and a "
                "non-root directory not owned by root.",
    family="storage", types=(EFS_AP,), level=MANDATORY, severity=Severity.MEDIUM,
    refs=Refs(checkov=("CKV_AWS_329", "CKV_AWS_330")),
    remediation="Set posix_user={uid, gid} and root_directory={path: '/<team>', creation_info: "
                "{owner_uid, owner_gid, permissions}}.")
def efs_access_point_posix(args, cfg, report):
    uid, gid = as_int(get(args.props, "posixUser.uid")), as_int(get(args.props, "posixUser.gid"))
    if uid is None or gid is None:
        report("access point does not enforce a POSIX user: set posix_user uid and gid.")
    elif uid == 0 or gid == 0:
        report(f"access point runs every client as uid {uid} gid {gid} (root): set posix_user to "
               "a non-root uid and gid (e.g. 1000/1000).")
    owner = get(args.props, "rootDirectory.creationInfo")
    if owner and (as_int(get(owner, "ownerUid")) == 0 or as_int(get(owner, "ownerGid")) == 0):
        report("access point creates its root directory owned by root: set creation_info "
               "owner_uid and owner_gid to the posix_user's ids.")
    path = get(args.props, "rootDirectory.path")
    if not path or str(path).rstrip("/") == "":
        report("access point exposes the file system root: set root_directory.path to a "
               "subdirectory (with creation_info).")


@stack_rule(
    name="efs-backup",
    description="EFS file systems have AWS Backup enabled where the environment requires it.",
    family="storage", level=MANDATORY, severity=Severity.MEDIUM,
    refs=Refs(checkov=("CKV2_AWS_18",)),
    config=schema(requireBackup={"type": "boolean", "default": True,
                                 "description": "Require an ENABLED EFS backup policy."}),
    remediation="Add aws.efs.BackupPolicy(file_system_id=..., backup_policy={'status': "
                "'ENABLED'}).")
def efs_backup(stack: Stack, cfg, report):
    if not cfg["requireBackup"]:
        return
    policies = stack.of(EFS_BACKUP)
    for fs in stack.of(EFS):
        mine = stack.referring(fs, policies, "fileSystemId")
        if not any(get(p.props, "backupPolicy.status") == "ENABLED" for p in mine):
            report(f"EFS file system {short(fs.urn)} has no enabled backup policy: add an "
                   "aws.efs.BackupPolicy with status ENABLED.", (mine[0] if mine else fs).urn)


FSX_OTHER = ("aws:fsx/openZfsFileSystem:OpenZfsFileSystem", "aws:fsx/ontapFileSystem:OntapFileSystem",
             "aws:fsx/windowsFileSystem:WindowsFileSystem")


@resource_rule(
    name="fsx-lustre-cmk",
    description="FSx file systems (Lustre, OpenZFS, ONTAP, Windows) encrypt with a "
                "customer-managed KMS key; SCRATCH Lustre (which cannot take one) only where the "
                "environment allows it.",
    family="storage", types=(FSX_LUSTRE,) + FSX_OTHER, level=MANDATORY, severity=Severity.HIGH,
    refs=Refs(checkov=("CKV_AWS_190", "CKV_AWS_203", "CKV_AWS_178", "CKV_AWS_179"),
              other=("aws-docs:fsx-lustre-encryption",)),
    config=schema(allowScratch={
        "type": "boolean", "default": False,
        "description": "Allow SCRATCH Lustre deployments, which FSx encrypts with an "
                       "AWS-managed key only."}),
    remediation="Set kms_key_id=<customer-managed KMS key arn> (PERSISTENT_1/PERSISTENT_2 "
                "Lustre and the other FSx types); for SCRATCH, move to PERSISTENT_2 or allow "
                "scratch for this environment in policies/config/<env>.json.")
def fsx_lustre_cmk(args, cfg, report):
    deployment = str(get(args.props, "deploymentType", "") or "")
    if args.resource_type == FSX_LUSTRE and not deployment.startswith("PERSISTENT"):
        if not cfg["allowScratch"]:
            report(f"{deployment or 'SCRATCH_1 (default)'} Lustre cannot use a customer-managed "
                   "key: use PERSISTENT_2 with kms_key_id, or set allowScratch for this "
                   "environment.")
        return
    if not get(args.props, "kmsKeyId"):
        report(f"{deployment or 'file system'} uses the AWS-managed key: set kms_key_id to a "
               "customer-managed key.")


# ----------------------------------------------------------------------------------------------
# CloudWatch log groups
# ----------------------------------------------------------------------------------------------
@resource_rule(
    name="log-group-kms",
    description="CloudWatch log groups are encrypted with a KMS key.",
    family="storage", types=(LOG_GROUP,), level=MANDATORY, severity=Severity.MEDIUM,
    refs=Refs(checkov=("CKV_AWS_158",), trivy=("AWS-0017",)),
    remediation="Set kms_key_id=<KMS key arn> (the key policy must allow logs.<region>."
                "amazonaws.com).")
def log_group_kms(args, cfg, report):
    if not get(args.props, "kmsKeyId"):
        report("log group is not KMS-encrypted: set kms_key_id.")


@resource_rule(
    name="log-group-retention",
    description="CloudWatch log groups set a retention of at least the environment's minimum.",
    family="storage", types=(LOG_GROUP,), level=MANDATORY, severity=Severity.LOW,
    refs=Refs(checkov=("CKV_AWS_66", "CKV_AWS_338")),
    config=schema(minRetentionDays={
        "type": "integer", "minimum": 1, "default": 365,
        "description": "Shortest allowed retention_in_days (CKV_AWS_338 wants 365)."}),
    remediation="Set retention_in_days to a CloudWatch-allowed value >= the minimum.")
def log_group_retention(args, cfg, report):
    days = as_int(get(args.props, "retentionInDays"))
    minimum = int(cfg["minRetentionDays"])
    if not days:
        report("retention_in_days is unset (logs kept forever, billed forever): set it to at "
               f"least {minimum}.")
    elif days < minimum:
        report(f"retention_in_days is {days}, below this environment's minimum {minimum}: "
               f"raise it to {minimum} or more.")
