"""Fixtures for the AWS depth rules (principals, IAM semantics, security groups, FSx, flow logs,
EFS access points): a compliant and a minimal violating case each, merged into FIXTURES by
policy_fixtures.py."""

from __future__ import annotations

from policy_fixtures import (
    ATTACH,
    BPOL,
    FLOW_LOG,
    FSX,
    IN,
    KMS,
    POD_TRUST,
    ROLE,
    ROLE_POLICY,
    SG,
    Case,
    R,
    doc,
    rid,
    tls_policy,
)

ACCOUNT = "123456789012"
FOREIGN = "999988887777"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/trainer"
EC2_TRUST = doc({"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                 "Action": "sts:AssumeRole"})


def role(name: str = "trainer", trust: str = POD_TRUST, **kw) -> dict:
    return R(ROLE, name, {"assumeRolePolicy": trust, **kw},
             outputs={"arn": f"arn:aws:iam::{ACCOUNT}:role/{name}", "name": name}, rid=name,
             tags=True)


def inline(name: str, *statements, role_name: str = "trainer") -> dict:
    return R(ROLE_POLICY, name, {"role": role_name, "policy": doc(*statements)})


def allow(actions, resources="*", **extra) -> dict:
    return {"Effect": "Allow", "Action": actions, "Resource": resources, **extra}


def sg_in(name: str, cidr: str, port: int, to: int = 0, proto: str = "tcp") -> dict:
    key = "cidrIpv6" if ":" in cidr else "cidrIpv4"
    return R(IN, name, {"securityGroupId": "sg-1", key: cidr, "ipProtocol": proto,
                        "fromPort": port, "toPort": to or port, "description": "x"})


BUCKET_ARN = "arn:aws:s3:::b"

AWS_DEPTH_FIXTURES = {
    # -- principals --------------------------------------------------------------------------
    "no-cross-account-principal": {
        "bad": [Case([role(), R(KMS, "key", {"enableKeyRotation": True, "policy": doc(
            {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{FOREIGN}:root"},
             "Action": "kms:Decrypt", "Resource": "*"})})], "key", label="kms"),
                Case([role(), role("ci", doc({"Effect": "Allow", "Principal": {"AWS": FOREIGN},
                                              "Action": "sts:AssumeRole"}))], "ci",
                     label="trust")],
        "good": [Case([role(), R(BPOL, "bp", {"bucket": "b", "policy": tls_policy("b", [
            {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:role/trainer"},
             "Action": "s3:GetObject", "Resource": f"{BUCKET_ARN}/*"}])})]),
                 Case([role(), role("ci", doc({"Effect": "Allow", "Principal": {"AWS": FOREIGN},
                                               "Action": "sts:AssumeRole"}))],
                      config={"allowedAccounts": [FOREIGN]}, label="listed account")],
    },
    # -- IAM semantics -------------------------------------------------------------------------
    "iam-no-service-wildcard-on-all-resources": {
        "bad": [Case([inline("rp", allow("s3:*"))], "rp"),
                Case([inline("rp", allow(["ec2:Describe*", "iam:*"], "arn:aws:iam::*:role/*"))],
                     "rp", label="iam on every role")],
        "good": [Case([inline("rp", allow(["s3:GetObject"], f"{BUCKET_ARN}/*"))]),
                 Case([inline("rp", allow("s3:*", f"{BUCKET_ARN}/*"))], label="scoped")],
    },
    "iam-service-wildcard-actions": {
        "bad": [Case([inline("rp", allow("s3:*", [BUCKET_ARN, f"{BUCKET_ARN}/*"]))], "rp")],
        "good": [Case([inline("rp", allow(["s3:GetObject", "s3:PutObject"], f"{BUCKET_ARN}/*"))])],
    },
    "iam-no-credential-exposure": {
        "bad": [Case([inline("rp", allow("sts:AssumeRole"))], "rp"),
                Case([inline("rp", allow("iam:Create*"))], "rp", label="wildcard expands"),
                Case([inline("rp", allow("ec2:GetPasswordData"))], "rp", label="password")],
        "good": [Case([inline("rp", allow("sts:AssumeRole", ROLE_ARN),
                              allow("ecr:GetAuthorizationToken"))])],
    },
    "iam-no-data-exfiltration": {
        "bad": [Case([inline("rp", allow("secretsmanager:GetSecretValue"))], "rp"),
                Case([inline("rp", allow("s3:Get*", "arn:aws:s3:::*"))], "rp",
                     label="every bucket")],
        "good": [Case([inline("rp", allow("secretsmanager:GetSecretValue",
                                          f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:x"),
                              allow("kms:Decrypt", "*", Condition={"StringEquals": {
                                  "kms:ViaService": "s3.us-east-1.amazonaws.com"}}))])],
    },
    "iam-privilege-escalation": {
        "bad": [Case([role(), inline("rp", allow("iam:PassRole"), allow("ec2:RunInstances"))],
                     "rp", label="passrole+runinstances"),
                Case([role(), inline("pass", allow("iam:PassRole", "arn:aws:iam::*:role/*")),
                      inline("launch", allow("sagemaker:Create*"))], "pass",
                     label="across policies"),
                Case([role(), inline("rp", allow("iam:PutRolePolicy", ROLE_ARN))], "rp",
                     label="self"),
                Case([role(), inline("rp", allow("iam:*", ROLE_ARN))], "rp",
                     label="wildcard on self")],
        "good": [Case([role(), inline("rp", allow("iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/node",
                                                  Condition={"StringEquals": {
                                                      "iam:PassedToService": "ec2.amazonaws.com"}}),
                                      allow("ec2:RunInstances"))])],
    },
    "iam-managed-policy-allow-list": {
        "bad": [Case([role(), R(ATTACH, "att", {"role": "trainer", "policyArn":
                                                "arn:aws:iam::aws:policy/AmazonS3FullAccess"})],
                     "att"),
                Case([role("node", EC2_TRUST), R(ATTACH, "att", {
                    "role": "node", "policyArn": "arn:aws:iam::aws:policy/IAMFullAccess"})],
                     "att", label="node"),
                Case([R(ATTACH, "att", {"role": "elsewhere", "policyArn":
                                        "arn:aws:iam::aws:policy/PowerUserAccess"})], "att",
                     label="role outside the stack")],
        "good": [Case([role("node", EC2_TRUST),
                       R(ATTACH, "att", {"role": "node", "policyArn":
                                         "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy"}),
                       role(), R(ATTACH, "csi", {"role": "trainer", "policyArn":
                                                 "arn:aws:iam::aws:policy/service-role/"
                                                 "AmazonEBSCSIDriverPolicy"})])],
    },
    # -- network -------------------------------------------------------------------------------
    "no-public-ingress-beyond-allow-list": {
        "bad": [Case([sg_in("kubelet", "0.0.0.0/0", 10250)], "kubelet"),
                Case([sg_in("nfs6", "::/0", 2049)], "nfs6", label="ipv6"),
                Case([R(SG, "sg", {"description": "x", "ingress": [
                    {"protocol": "tcp", "fromPort": 443, "toPort": 444,
                     "cidrBlocks": ["0.0.0.0/0"], "description": "x"}]})], "sg",
                     config={"allowedPublicPorts": [443]}, label="range beyond list")],
        "good": [Case([sg_in("https", "10.0.0.0/16", 443)]),
                 Case([sg_in("https", "0.0.0.0/0", 443)], config={"allowedPublicPorts": [443]},
                      label="allow-listed")],
    },
    "flow-log-all-traffic": {
        "bad": [Case([R(FLOW_LOG, "fl", {"vpcId": rid("vpc"), "trafficType": "ACCEPT"})], "fl"),
                Case([R(FLOW_LOG, "fl", {"vpcId": rid("vpc"), "trafficType": "REJECT"})], "fl",
                     label="reject only")],
        "good": [Case([R(FLOW_LOG, "fl", {"vpcId": rid("vpc"), "trafficType": "ALL"})])],
    },
}

AWS_DEPTH_EXTRA_CASES = {
    "no-wildcard-principal": {
        "bad": [Case([R(BPOL, "bp", {"bucket": "b", "policy": doc(
            {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
             "Resource": f"{BUCKET_ARN}/*",
             "Condition": {"Bool": {"aws:SecureTransport": "true"}}})})], "bp",
                     label="secure transport does not restrict"),
                Case([R(BPOL, "bp", {"bucket": "b", "policy": doc(
                    {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "s3:GetObject",
                     "Resource": f"{BUCKET_ARN}/*",
                     "Condition": {"StringNotEquals": {"aws:PrincipalOrgID": "o-abc"}}})})],
                     "bp", label="negated operator"),
                Case([R(BPOL, "bp", {"bucket": "b", "policy": doc(
                    {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                     "Resource": f"{BUCKET_ARN}/*",
                     "Condition": {"StringLike": {"aws:UserAgent": "trainer*"}}})})],
                     "bp", label="user agent")],
        "good": [Case([R(BPOL, "bp", {"bucket": "b", "policy": doc(
            {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
             "Resource": f"{BUCKET_ARN}/*",
             "Condition": {"StringEquals": {"aws:PrincipalOrgID": "o-abc123"}}},
            {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
             "Resource": f"{BUCKET_ARN}/*",
             "Condition": {"StringEquals": {"aws:SourceVpce": "vpce-1a2b"}}})})],
                      label="org id and vpce")],
    },
    "fsx-lustre-cmk": {
        "bad": [Case([R(FSX, "fsx", {"deploymentType": "SCRATCH_2", "storageCapacity": 1200})],
                     "fsx", label="scratch not allowed")],
        "good": [Case([R(FSX, "fsx", {"deploymentType": "SCRATCH_2", "storageCapacity": 1200})],
                      config={"allowScratch": True}, label="scratch allowed")],
    },
    "efs-access-point-posix": {
        "bad": [Case([R("aws:efs/accessPoint:AccessPoint", "ap", {
            "fileSystemId": rid("fs"), "posixUser": {"uid": 0, "gid": 0},
            "rootDirectory": {"path": "/team"}})], "ap", label="root uid"),
                Case([R("aws:efs/accessPoint:AccessPoint", "ap", {
                    "fileSystemId": rid("fs"), "posixUser": {"uid": 1000, "gid": 0.0},
                    "rootDirectory": {"path": "/team"}})], "ap", label="root gid")],
    },
}
