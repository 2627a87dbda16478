"""Secrets Manager + External Secrets Operator (components/services/secrets.py), `trainyard:secrets`,
and the ESO objects validated against the CRD excerpts in tests/components/data/crds/."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from components.compute.addons import chart
from components.config import SecretsConfig, load
from components.services import secrets as s
from components.services.monitoring import GRAFANA_SECRET
from tests.conftest import STACKS, resources, section_problems, stack_raw, synthesize_program

ROOT = Path(__file__).resolve().parents[2]
CRDS = Path(__file__).parent / "data" / "crds"
STORE_TYPE = "kubernetes:external-secrets.io/v1:ClusterSecretStore"
ES_TYPE = "kubernetes:external-secrets.io/v1:ExternalSecret"
SM = "aws:secretsmanager/secret:Secret"
SM_VERSION = "aws:secretsmanager/secretVersion:SecretVersion"


def raw() -> dict:
    return stack_raw("dev")


def problems(section) -> list[str]:
    return section_problems("dev", "secrets", section)


# -- config ----------------------------------------------------------------------------------
def test_defaults():
    cfg = raw()
    cfg.pop("trainyard:secrets", None)
    c = load(cfg, "dev").secrets
    assert c == SecretsConfig(prefix="trainyard/dev")


@pytest.mark.parametrize("section,expected", [
    ({"grafanaAdminPassword": "plain"},
     "trainyard:secrets.grafanaAdminPassword: 'plain' is not one of generated, operator"),
    ({"prefix": "/lead"}, "trainyard:secrets.prefix: '/lead' is not a usable Secrets Manager"),
    ({"prefix": "a//b"}, "trainyard:secrets.prefix: 'a//b' is not a usable"),
    ({"recoveryWindowDays": 3},
     "trainyard:secrets.recoveryWindowDays: 3 is not allowed (0 to delete at once, or 7-30)"),
    ({"recoveryWindowDays": 31}, "trainyard:secrets.recoveryWindowDays: 31 is above the maximum"),
    ({"enabled": "yes"}, "trainyard:secrets.enabled: expected true or false"),
    ({"vault": {}}, "trainyard:secrets.vault: unknown key"),
])
def test_bad_config_is_one_line_naming_the_key(section, expected):
    (problem,) = problems(section)
    assert problem.startswith(expected), problem
    assert "\n" not in problem


# -- pure documents --------------------------------------------------------------------------
def test_reader_policy_reads_exactly_the_secrets_and_decrypts_only_via_secrets_manager():
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:trainyard/prod/grafana-admin-AbC"
    key = "arn:aws:kms:us-east-1:123456789012:key/k"
    doc = json.loads(s.reader_policy([arn], key, "us-east-1"))
    read, decrypt = doc["Statement"]
    assert read["Action"] == ["secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue"]
    assert read["Resource"] == [arn] and "*" not in json.dumps(read)
    assert decrypt["Action"] == ["kms:Decrypt"] and decrypt["Resource"] == key
    assert decrypt["Condition"] == {"StringEquals": {
        "kms:ViaService": "secretsmanager.us-east-1.amazonaws.com"}}
    assert len(json.loads(s.reader_policy([arn], None, "us-east-1"))["Statement"]) == 1
    with pytest.raises(ValueError):
        s.reader_policy([], key, "us-east-1")


def test_values_bind_the_service_account_and_pin_system_nodes():
    v = s.eso_values()
    assert v["serviceAccount"] == {"create": True, "name": s.SERVICE_ACCOUNT}
    for part in (v, v["webhook"], v["certController"]):
        assert part["nodeSelector"] == {"trainyard.io/pool": "system"}
        assert part["resources"]["requests"]
    assert v["installCRDs"] is True and v["webhook"]["port"] == s.WEBHOOK_PORT


def test_network_policies_deny_by_default_and_reach_only_what_eso_needs():
    p = s.network_policies()
    assert p["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    agent = p["allow-pod-identity-agent"]["egress"][0]
    assert agent == {"to": [{"ipBlock": {"cidr": "169.254.170.23/32"}}],
                     "ports": [{"protocol": "TCP", "port": 80}]}
    assert p["allow-https-egress"]["egress"][0]["ports"] == [{"protocol": "TCP", "port": 443}]
    assert p["allow-webhook"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 10250}]


def test_chart_pin():
    pin = chart(s.CHART)
    assert (pin.repo, pin.version) == ("https://charts.external-secrets.io", "2.14.0")


# -- CRD excerpts (tests/components/data/crds/external-secrets.SOURCE.md) ----------------------
def strict(schema: dict) -> dict:
    """Close every object the excerpt does not mark open (like kubectl --validate=strict)."""
    def walk(node):
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node and \
                    not node.get("x-kubernetes-preserve-unknown-fields"):
                node.setdefault("additionalProperties", False)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    out = json.loads(json.dumps(schema))
    walk(out)
    return out


VALIDATORS = {kind: jsonschema.Draft7Validator(strict(json.loads((CRDS / f).read_text())))
              for kind, f in (("ClusterSecretStore", "external-secrets.io_clustersecretstores_v1.json"),
                              ("ExternalSecret", "external-secrets.io_externalsecrets_v1.json"))}


def errors(obj: dict) -> list[str]:
    return [f"{'/'.join(map(str, e.path))}: {e.message}"
            for e in VALIDATORS[obj["kind"]].iter_errors(obj)]


def as_object(r: dict) -> dict:
    i = r["inputs"]
    return {"apiVersion": i["apiVersion"], "kind": i["kind"], "metadata": i["metadata"],
            "spec": i["spec"]}


@pytest.mark.parametrize("stack", STACKS)
def test_every_eso_object_of_the_plan_validates(plan_for, stack):
    plan = plan_for(stack)
    objs = [as_object(r) for r in resources(plan, STORE_TYPE) + resources(plan, ES_TYPE)]
    assert {o["kind"] for o in objs} == {"ClusterSecretStore", "ExternalSecret"}
    for o in objs:
        assert not errors(o), (o["metadata"], errors(o))


def test_schemas_have_teeth():
    store = s.cluster_secret_store("us-east-1", ["monitoring"])
    assert not errors(store)
    typo = json.loads(json.dumps(store))
    typo["spec"]["provider"]["aws"]["servise"] = "SecretsManager"
    assert errors(typo)
    bad_service = json.loads(json.dumps(store))
    bad_service["spec"]["provider"]["aws"]["service"] = "Vault"
    assert errors(bad_service)
    no_region = json.loads(json.dumps(store))
    del no_region["spec"]["provider"]["aws"]["region"]
    assert errors(no_region)
    es = s.external_secret("x", "monitoring", "trainyard/dev/x", ["a"])
    assert not errors(es)
    es["spec"]["target"]["creationPolicy"] = "Always"
    assert errors(es)
    es = s.external_secret("x", "monitoring", "trainyard/dev/x", ["bad key!"])
    assert errors(es)  # secretKey pattern


# -- the stacks ------------------------------------------------------------------------------
def test_prod_wiring(plan_for):
    plan = plan_for("prod")
    (secret,) = resources(plan, SM)
    assert secret["inputs"]["name"] == "trainyard/prod/grafana-admin"
    (key,) = [k for k in resources(plan, "aws:kms/key:Key") if k["name"] == "trainyard-storage-key"]
    assert secret["inputs"]["kmsKeyId"] == key["outputs"]["arn"]
    assert secret["inputs"]["recoveryWindowInDays"] == 30
    (version,) = resources(plan, SM_VERSION)
    assert version["inputs"]["secretString"] == "[secret]"
    (store,) = resources(plan, STORE_TYPE)
    # every namespace with an ExternalSecret on this store is admitted by it, and no other
    namespaces = {r["inputs"]["metadata"]["namespace"] for r in resources(plan, ES_TYPE)}
    assert store["inputs"]["spec"]["conditions"] == [{"namespaces": sorted(namespaces)}]
    assert store["inputs"]["spec"]["provider"]["aws"] == {"service": "SecretsManager",
                                                          "region": "us-east-1"}
    (es,) = [r for r in resources(plan, ES_TYPE)
             if r["inputs"]["metadata"]["namespace"] == "monitoring"]
    assert es["inputs"]["metadata"] == {"name": GRAFANA_SECRET, "namespace": "monitoring"}
    assert {d["remoteRef"]["key"] for d in es["inputs"]["spec"]["data"]} == {
        "trainyard/prod/grafana-admin"}
    assert store["urn"] in es["dependencies"] and version["urn"] in es["dependencies"]
    kps = next(r for r in resources(plan, "kubernetes:helm.sh/v3:Release")
               if r["inputs"]["chart"] == "kube-prometheus-stack")
    assert es["urn"] in kps["dependencies"]
    assert kps["inputs"]["values"]["grafana"]["admin"]["existingSecret"] == GRAFANA_SECRET
    # No Kubernetes Secret with the password: Pulumi never writes it into the cluster.
    assert not [r for r in resources(plan, "kubernetes:core/v1:Secret")
                if r["inputs"]["metadata"].get("name") == GRAFANA_SECRET]
    assert "grafanaAdminPassword" not in plan["outputs"]
    assert plan["outputs"]["grafanaAdminSecretArn"] == secret["outputs"]["arn"]


def test_role_reads_exactly_the_stack_secret(plan_for):
    plan = plan_for("prod")
    (secret,) = resources(plan, SM)
    (policy,) = [r for r in resources(plan, "aws:iam/rolePolicy:RolePolicy")
                 if r["name"] == "trainyard-secrets-eso"]
    doc = json.loads(policy["inputs"]["policy"])
    readable = doc["Statement"][0]["Resource"]
    assert secret["outputs"]["arn"] in readable
    # any other entry is an operator-made secret an ExternalSecret of the plan names, by name
    others = {r["inputs"]["spec"]["data"][0]["remoteRef"]["key"]
              for r in resources(plan, ES_TYPE)} - {secret["inputs"]["name"]}
    assert sorted(readable) == sorted([secret["outputs"]["arn"]] + [
        s.external_secret_arn("aws", "us-east-1", "123456789012", n) for n in others])
    (assoc,) = [r for r in resources(plan, "aws:eks/podIdentityAssociation:PodIdentityAssociation")
                if r["name"] == "trainyard-secrets-eso"]
    assert (assoc["inputs"]["namespace"], assoc["inputs"]["serviceAccount"]) == (
        s.NAMESPACE, s.SERVICE_ACCOUNT)
    (release,) = [r for r in resources(plan, "kubernetes:helm.sh/v3:Release")
                  if r["inputs"]["chart"] == s.CHART]
    assert assoc["urn"] in release["dependencies"]


def _unit(config: SecretsConfig) -> dict:
    def program():
        import pulumi_kubernetes as k8s

        provider = k8s.Provider("unit-k8s", kubeconfig="{}")
        s.ExternalSecrets("unit-secrets", s.ExternalSecretsArgs(
            config=config, provider=provider, cluster_name="unit", region="us-east-1"))
    return synthesize_program(program)


def test_operator_mode_creates_only_the_container():
    plan = _unit(SecretsConfig(prefix="p", grafana_admin_password="operator"))
    (secret,) = resources(plan, SM)
    assert secret["inputs"]["name"] == "p/grafana-admin"
    assert "kmsKeyId" not in secret["inputs"]  # no key given: aws/secretsmanager
    assert resources(plan, SM_VERSION) == []
    assert resources(plan, "random:index/randomPassword:RandomPassword") == []


def test_generated_password_never_appears_in_the_plan():
    from trainyard.mocks import _h

    plan = _unit(SecretsConfig(prefix="p"))
    (pw,) = resources(plan, "random:index/randomPassword:RandomPassword")
    mock = _h("random:index/randomPassword:RandomPassword", pw["name"], "pw", n=64)[:32]
    assert mock not in json.dumps(plan)
    (version,) = resources(plan, SM_VERSION)
    assert version["inputs"]["secretString"] == "[secret]"


def test_external_names_are_matched_exactly():
    arn = s.external_secret_arn("aws", "us-east-1", "123456789012", "trainyard/prod/oauth")
    assert arn == "arn:aws:secretsmanager:us-east-1:123456789012:secret:trainyard/prod/oauth-??????"
