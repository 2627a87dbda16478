"""RBAC and EKS access rules (policies/rbac.py) beyond the per-rule fixtures: Kubernetes' own
subjects, aggregated verbs, and the admin principals of the committed prod config."""

from __future__ import annotations

import json

from policy_fixtures import CRB, R

from policies import by_name
from trainyard.check import CONFIG_DIR, PolicyConfig, run_checks


def _run(resources, name, config=None):
    cfg = PolicyConfig(source="test", properties={name: config} if config else {})
    return run_checks({"project": "trainyard", "stack": "test", "resources": resources}, cfg,
                      [by_name()[name]])


def _binding(subjects):
    return R(CRB, "crb", {"metadata": {"name": "b"}, "subjects": subjects,
                          "roleRef": {"kind": "ClusterRole", "name": "cluster-admin"}})


def test_cluster_admin_for_system_groups_is_kubernetes_own():
    ok = _binding([{"kind": "Group", "name": "system:masters"}])
    assert not _run([ok], "k8s-no-cluster-admin-binding").violations
    mixed = _binding([{"kind": "Group", "name": "system:masters"},
                      {"kind": "ServiceAccount", "name": "ci", "namespace": "ci"}])
    assert _run([mixed], "k8s-no-cluster-admin-binding").violations
    impostor = _binding([{"kind": "ServiceAccount", "name": "system:ci", "namespace": "ci"}])
    assert _run([impostor], "k8s-no-cluster-admin-binding").violations


def test_wildcard_verbs_on_secrets_are_reads():
    role = R("kubernetes:rbac.authorization.k8s.io/v1:ClusterRole", "r", {
        "metadata": {"name": "r"}, "rules": [{"apiGroups": [""], "resources": ["secrets"],
                                              "verbs": ["*"]}]})
    assert _run([role], "rbac-no-secret-read").violations


def test_prod_config_names_exactly_the_stack_admin_roles(plan_for):
    cfg = json.loads((CONFIG_DIR / "prod.json").read_text())
    admins = cfg["eks-access-no-admin-for-workloads"]["adminPrincipals"]
    plan = plan_for("prod")
    associated = {r["inputs"]["principalArn"] for r in plan["resources"]
                  if r["type"] == "aws:eks/accessPolicyAssociation:AccessPolicyAssociation"}
    assert associated == set(admins)
