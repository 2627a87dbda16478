"""Pod specs everywhere (policies/pods.py): the pure judgements, Helm values with values unknown at
preview, the allow-list, cluster-scoped kinds, and the committed stacks staying clean for the
right reason. Per-rule violating/compliant fixtures: fixtures_pods.py (run by test_policies.py)."""

from __future__ import annotations

import json

import policy_fixtures  # noqa: F401  (first: it imports fixtures_pods at its end)
import pytest
from fixtures_pods import chart, deployment
from policy_fixtures import R
from pulumi_policy import Policy
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

from policies import POLICIES, by_name, netpol, rbac
from policies import pod_settings as S
from policies import pods as P
from policies.kubernetes import CLUSTER_SCOPED
from trainyard.check import CONFIG_DIR, PolicyConfig, parse_policy_config, run_checks

MINE = [p for m in (P, netpol, rbac) for p in vars(m).values() if isinstance(p, Policy)]


def _run(resources, names, config=None):
    policies = [by_name()[n] for n in names]
    cfg = PolicyConfig(source="test", properties=config or {})
    return run_checks({"project": "trainyard", "stack": "test", "resources": resources}, cfg,
                      policies)


@pytest.mark.parametrize("path,exposed", [
    ("/run/containerd/containerd.sock", True), ("/var/run/docker.sock", True),
    ("/var/run/crio/crio.sock", True), ("/var/run", True), ("/", True), ("/var/lib", True),
    ("/var/run/containerd", True), ("/host/run/k3s/containerd/containerd.sock", True),
    ("/var/lib/kubelet/device-plugins", False), ("/dev/infiniband", False),
    ("/var/lib/kubelet/pod-resources", False), ("/sys", False)])
def test_runtime_socket_paths(path, exposed):
    assert S.runtime_socket(path) is exposed


@pytest.mark.parametrize("name,value,secret", [
    ("DB_PASSWORD", "x", True), ("WANDB_API_KEY", "abc", True), ("HF_TOKEN", "hf_x", True),
    ("AWS_SECRET_ACCESS_KEY", "k", True), ("api-key", "k", True), ("GITHUB_TOKEN", "", False),
    ("TORCH_NCCL_DUMP_ON_TIMEOUT", "1", False), ("NCCL_SOCKET_IFNAME", "^lo", False),
    ("KEYCLOAK_URL", "https://x", False), ("MONKEY", "1", False),
    ("DB_PASSWORD", "$(FROM_ENV)", False), ("TOKENIZERS_PARALLELISM", "false", False)])
def test_secret_env_names_are_word_delimited(name, value, secret):
    assert S.secret_literal(name, value) is secret


@pytest.mark.parametrize("image,ok", [
    ("123456789012.dkr.ecr.us-east-1.amazonaws.com/trainyard-train:0.1.0", True),
    ("public.ecr.aws/docker/library/python:3.12.8-slim", True),
    ("nvcr.io/nvidia/tritonserver:25.01-py3", True), ("kserve/huggingfaceserver:v0.16.0", True),
    ("ghcr.io/kubeflow/trainer:v2", True), ("ghcr.io/someone/miner:1", False),
    ("busybox:1.36", False), ("docker.io/library/nginx:1.27", False),
    ("evil.dkr.ecr.us-east-1.amazonaws.com.attacker.io/x:1", False)])
def test_registry_allow_list(image, ok):
    assert S.registry_allowed(image, P.DEFAULT_REGISTRIES) is ok


def test_chart_image_mappings_compose_like_charts_do():
    assert S.image_of({"registry": "nvcr.io", "repository": "nvidia/dcgm", "tag": "4.2"}) == \
        "nvcr.io/nvidia/dcgm:4.2"
    assert S.image_of({"repository": "kueue"}) == "kueue"
    assert S.image_of({"repository": "r/x", "digest": "sha256:" + "a" * 64}).endswith(
        "@sha256:" + "a" * 64)
    assert S.image_of({"pullPolicy": "IfNotPresent"}) is None


def test_every_allow_list_entry_says_why():
    for name, e in S.EXEMPT.items():
        assert len(e.reason) > 20, name
        assert all(p.startswith("/") for p in e.host_paths), name


def test_cluster_scoped_kinds_include_the_platform_crds():
    for kind in ("ClusterQueue", "ResourceFlavor", "Cohort", "WorkloadPriorityClass", "Topology",
                 "NodePool", "EC2NodeClass", "ClusterTrainingRuntime", "ClusterServingRuntime",
                 "ClusterStorageContainer", "ClusterIssuer", "ClusterTriggerAuthentication",
                 "ClusterSecretStore"):
        assert kind in CLUSTER_SCOPED, kind
    crs = [R(f"kubernetes:{api}:{kind}", kind.lower(), {"metadata": {"name": "x"}, "spec": {}})
           for api, kind in [("kueue.x-k8s.io/v1beta2", "Topology"),
                             ("serving.kserve.io/v1alpha1", "ClusterStorageContainer"),
                             ("keda.sh/v1alpha1", "ClusterTriggerAuthentication"),
                             ("external-secrets.io/v1", "ClusterSecretStore")]]
    assert not _run(crs, ["k8s-no-default-namespace"]).violations


def test_helm_values_with_an_unknown_name_are_still_judged():
    """An unknown value elsewhere in the values (a queue name, a role ARN) does not stop the
    rule; a privileged flag is still found."""
    rel = chart({"settings": {"interruptionQueue": UNKNOWN_STRING_VALUE},
                 "securityContext": {"privileged": True}})
    report = _run([rel], ["k8s-no-privileged-containers"])
    assert [v["urn"] for v in report.violations] == [rel["urn"]]
    assert not report.cannot_judge and not report.errors


def test_an_unknown_value_on_a_judged_key_is_cannot_judge():
    rel = chart({"securityContext": {"privileged": UNKNOWN_STRING_VALUE}})
    report = _run([rel], ["k8s-no-privileged-containers"])
    assert not report.errors and not report.violations and report.cannot_judge


def test_add_on_yaml_configuration_values_are_read():
    addon = R("aws:eks/addon:Addon", "a", {"addonName": "x",
                                            "configurationValues": "hostPID: true\n"})
    assert _run([addon], ["pod-no-host-pid"]).violations


def test_config_allow_list_needs_a_reason():
    dep = deployment(securityContext={"privileged": True})
    no_reason = {"k8s-no-privileged-containers": {"exemptWorkloads": [{"name": "app",
                                                                        "reason": ""}]}}
    assert _run([dep], ["k8s-no-privileged-containers"], no_reason).violations


def test_serving_runtime_pods_are_not_asked_for_a_token_setting():
    rt = R("kubernetes:serving.kserve.io/v1alpha1:ClusterServingRuntime", "rt", {
        "metadata": {"name": "hf"}, "spec": {"containers": [{"name": "kserve-container",
                                                              "image": "kserve/x:1"}]}})
    assert not _run([rt], ["pod-service-account-token"]).violations


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_committed_stacks_are_clean_under_the_in_cluster_rules(plan_for, stack):
    raw = json.loads((CONFIG_DIR / f"{stack}.json").read_text())
    config = parse_policy_config(raw, POLICIES, f"{stack}.json")
    report = run_checks(plan_for(stack), config, MINE)
    assert not report.errors, report.errors
    mandatory = [v for v in report.violations if v["level"] == "mandatory"]
    assert not mandatory, mandatory
    # The training runtimes are clean for the right reason: they set what the rules ask.
    runtimes = [v for v in report.violations if "ClusterTrainingRuntime" in v["urn"]]
    assert not runtimes, runtimes


def test_training_runtime_sets_a_security_context_and_a_memory_limit(plan_for):
    plan = plan_for("prod")
    rt = next(r for r in plan["resources"] if r["type"].endswith(":ClusterTrainingRuntime"))
    pod = rt["inputs"]["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"][
        "template"]["spec"]
    node = pod["containers"][0]
    assert node["securityContext"]["allowPrivilegeEscalation"] is False
    assert node["securityContext"]["capabilities"]["drop"] == ["ALL"]
    res = node["resources"]
    assert res["limits"]["memory"] == res["requests"]["memory"]
    assert "cpu" not in res["limits"]
