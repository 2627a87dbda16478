"""Kubeflow Trainer v2: the per-pool ClusterTrainingRuntimes (pure builders in trainyard/jobspec.py)
and what the Kubeflow component puts in the prod plan."""

from __future__ import annotations

import copy
import importlib.metadata
import json

import pytest

from components.compute.addons import chart
from components.config import GpuPoolConfig
from components.services.k8s_names import (
    EFA_HUGEPAGES,
    EFA_LABEL,
    EFA_RESOURCE,
    GPU_RESOURCE,
    HUGEPAGES_RESOURCE,
    POOL_LABEL,
    TRAINING_SERVICE_ACCOUNT,
)
from components.services.kubeflow import TRAINER_CHART, runtimes, trainer_values
from tests.conftest import resources
from trainyard import jobspec

RUNTIME_TYPE = "kubernetes:trainer.kubeflow.org/v1alpha1:ClusterTrainingRuntime"
RELEASE_TYPE = "kubernetes:helm.sh/v3:Release"


def pool(name, types, efa=False, capacity="ON_DEMAND", max_size=4):
    return GpuPoolConfig(name=name, instance_types=tuple(types), capacity_type=capacity,
                         min_size=0, desired_size=0, max_size=max_size,
                         availability_zones=("us-east-1a",), efa=efa)


P4D = pool("a100", ["p4d.24xlarge"], efa=True, max_size=16)
P5 = pool("h100", ["p5.48xlarge"], efa=True)
G5 = pool("eval", ["g5.12xlarge", "g6.12xlarge"], capacity="SPOT")
TRN = pool("trn", ["trn1.32xlarge"], efa=True)


def pod_spec(runtime):
    (job,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    assert job["name"] == "node"
    assert job["template"]["metadata"]["labels"][jobspec.ANCESTOR_LABEL] == "trainer"
    return job["template"]["spec"]["template"]["spec"]


def node_container(runtime):
    (container,) = pod_spec(runtime)["containers"]
    assert container["name"] == "node"
    return container


def env_of(container):
    return {e["name"]: e["value"] for e in container["env"]}


EXPECTED_ENV = {
    "NCCL_SOCKET_IFNAME": "^docker,lo,veth",
    "NCCL_DEBUG": "WARN",
    "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
    "TORCH_NCCL_DUMP_ON_TIMEOUT": "1",
    "TORCH_NCCL_TRACE_BUFFER_SIZE": "2000",
    "PYTHONUNBUFFERED": "1",
    "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "90",  # torchrun's share of the Spot budget
}


# ----------------------------------------------------------------------------------------------
# EFA pool (p4d): resources, environment, volumes, scheduling
# ----------------------------------------------------------------------------------------------
def test_efa_runtime_requests_gpus_efa_and_huge_pages_from_the_pool_facts():
    rt = jobspec.cluster_training_runtime(jobspec.pool_facts(P4D), "img:1")
    assert rt["apiVersion"] == "trainer.kubeflow.org/v1alpha1"
    assert rt["kind"] == "ClusterTrainingRuntime"
    assert rt["metadata"]["name"] == "torch-efa-a100"
    res = node_container(rt)["resources"]
    extended = {GPU_RESOURCE["nvidia"]: "8", EFA_RESOURCE: "4", HUGEPAGES_RESOURCE: "5120Mi"}
    # memory limited to its request (no CPU limit: policies/config requireCpuLimit says why)
    assert res["limits"] == {**extended, "memory": res["requests"]["memory"]}
    assert {k: res["requests"][k] for k in extended} == extended  # requests == limits
    assert EFA_HUGEPAGES == "5120Mi"
    # Huge pages need a cpu or memory request; both leave room for DaemonSets.
    assert 0 < int(res["requests"]["cpu"]) < 96
    assert 0 < int(res["requests"]["memory"].removesuffix("Gi")) < 1152 - 10


def test_p5_runtime_requests_all_32_efa_devices():
    res = node_container(jobspec.cluster_training_runtime(jobspec.pool_facts(P5), "i"))["resources"]
    assert res["limits"][EFA_RESOURCE] == "32"
    assert res["limits"][GPU_RESOURCE["nvidia"]] == "8"


def test_efa_runtime_environment_is_pinned():
    env = env_of(node_container(jobspec.cluster_training_runtime(jobspec.pool_facts(P4D), "i")))
    assert env == EXPECTED_ENV
    for forbidden in ("FI_EFA_USE_DEVICE_RDMA", "FI_PROVIDER", "NCCL_PROTO", "RDMAV_FORK_SAFE"):
        assert forbidden not in env
    info = env_of(node_container(
        jobspec.cluster_training_runtime(jobspec.pool_facts(P4D), "i", nccl_debug="INFO")))
    assert info["NCCL_DEBUG"] == "INFO"


def test_efa_runtime_volumes_scheduling_and_identity():
    rt = jobspec.cluster_training_runtime(jobspec.pool_facts(P4D), "img:1")
    spec = pod_spec(rt)
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    assert volumes["dshm"]["emptyDir"]["sizeLimit"] == "64Gi"
    mounts = {m["mountPath"]: m["name"] for m in node_container(rt)["volumeMounts"]}
    assert mounts["/dev/shm"] == "dshm"
    # No /dev/infiniband (or any) hostPath: the EFA device plugin mounts what it allocates.
    assert "hostPath" not in json.dumps(rt)
    assert "/dev/infiniband" not in json.dumps(rt)
    assert spec["nodeSelector"] == {POOL_LABEL: "a100", EFA_LABEL: "true"}
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists",
                                    "effect": "NoSchedule"}]
    assert spec["serviceAccountName"] == TRAINING_SERVICE_ACCOUNT
    assert spec["terminationGracePeriodSeconds"] >= 90  # spot's 2-minute notice
    assert rt["spec"]["mlPolicy"] == {"numNodes": 1, "torch": {}}
    assert rt["spec"]["template"]["spec"]["failurePolicy"]["maxRestarts"] == 3


def test_runtime_carries_the_throughput_sidecar_as_a_native_sidecar():
    rt = jobspec.cluster_training_runtime(jobspec.pool_facts(P4D), "img:1")
    spec = pod_spec(rt)
    (sidecar,) = spec["initContainers"]
    assert sidecar["restartPolicy"] == "Always"  # never holds a finished pod open
    assert sidecar["ports"][0]["containerPort"] == jobspec.exporter()["port"]
    assert sidecar["securityContext"]["runAsNonRoot"] is True
    template_labels = rt["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"][
        "template"]["metadata"]["labels"]
    assert template_labels[jobspec.METRICS_LABEL] == "true"
    shared = {m["name"] for m in sidecar["volumeMounts"]} & \
        {m["name"] for m in node_container(rt)["volumeMounts"]}
    assert shared == {"train-metrics"}


# ----------------------------------------------------------------------------------------------
# Non-EFA pool (g5/g6 Spot)
# ----------------------------------------------------------------------------------------------
def test_non_efa_runtime_has_no_efa_devices_or_huge_pages():
    rt = jobspec.cluster_training_runtime(jobspec.pool_facts(G5), "img:1")
    assert rt["metadata"]["name"] == "torch-eval"
    res = node_container(rt)["resources"]
    assert res["limits"] == {GPU_RESOURCE["nvidia"]: "4", "memory": res["requests"]["memory"]}
    assert EFA_RESOURCE not in res["requests"] and HUGEPAGES_RESOURCE not in res["requests"]
    assert env_of(node_container(rt)) == EXPECTED_ENV
    spec = pod_spec(rt)
    assert spec["nodeSelector"] == {POOL_LABEL: "eval"}
    # Diversified pool: sized for the smaller of g5.12xlarge / g6.12xlarge (both 48 vCPU, 192 GiB).
    assert int(res["requests"]["cpu"]) <= 48
    assert rt["spec"]["template"]["spec"]["failurePolicy"]["maxRestarts"] == 10  # Spot


def test_partial_node_scales_cpu_and_memory():
    facts = jobspec.pool_facts(G5)
    full, half = jobspec.node_resources(facts), jobspec.node_resources(facts, 2)
    assert half["limits"] == {GPU_RESOURCE["nvidia"]: "2", "memory": half["requests"]["memory"]}
    assert int(half["requests"]["cpu"]) <= int(full["requests"]["cpu"]) // 2


def test_neuron_pools_get_no_torch_runtime():
    facts = jobspec.pool_facts(TRN)
    assert not jobspec.supports_runtime(facts)
    with pytest.raises(ValueError, match="NVIDIA pools only"):
        jobspec.cluster_training_runtime(facts, "img")


# ----------------------------------------------------------------------------------------------
# Validation against kubeflow-trainer-api
# ----------------------------------------------------------------------------------------------
def test_trainer_api_package_matches_the_chart_version():
    assert importlib.metadata.version("kubeflow-trainer-api") == chart(TRAINER_CHART).version
    assert jobspec.TRAINER_CHART_VERSION == chart(TRAINER_CHART).version == "2.3.0"


@pytest.mark.parametrize("p", [P4D, P5, G5], ids=lambda p: p.name)
def test_runtimes_validate_against_the_trainer_models(p):
    jobspec.validate_runtime(jobspec.cluster_training_runtime(jobspec.pool_facts(p), "img:1"))


def test_validation_rejects_fields_the_model_does_not_know():
    rt = jobspec.cluster_training_runtime(jobspec.pool_facts(P4D), "img:1")
    bad = copy.deepcopy(rt)
    pod_spec(bad)["nodeSelectr"] = {"x": "y"}  # a typo the generated model would drop silently
    with pytest.raises(ValueError, match="nodeSelectr"):
        jobspec.validate_runtime(bad)
    bad = copy.deepcopy(rt)
    bad["spec"]["mlPolicy"]["numNodes"] = "one"
    with pytest.raises(ValueError, match="ClusterTrainingRuntime"):
        jobspec.validate_runtime(bad)


def test_runtimes_helper_skips_neuron_pools():
    from components.config import KubeflowConfig

    built = runtimes(KubeflowConfig(), [P4D, G5, TRN])
    assert set(built) == {"a100", "eval"}


# ----------------------------------------------------------------------------------------------
# The prod plan
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prod(plan_for):
    return plan_for("prod")


def test_prod_plan_installs_the_pinned_oci_trainer_chart(prod):
    (release,) = [r for r in resources(prod, RELEASE_TYPE)
                  if r["inputs"]["chart"].endswith("kubeflow-trainer")]
    i = release["inputs"]
    assert i["chart"] == "oci://ghcr.io/kubeflow/charts/kubeflow-trainer"
    assert i["version"] == "2.3.0"
    assert "repositoryOpts" not in i
    assert i["namespace"] == "kubeflow-system"
    assert i["values"]["runtimes"]["defaultEnabled"] is True
    assert i["values"]["jobset"]["install"] is True
    assert i["values"] == trainer_values()
    assert release["dependencies"], "must wait for the cluster and node groups"


def test_prod_plan_has_one_runtime_per_nvidia_pool(prod):
    runtimes_ = {r["inputs"]["metadata"]["name"]: r for r in resources(prod, RUNTIME_TYPE)}
    assert set(runtimes_) == {"torch-efa-a100", "torch-efa-h100", "torch-efa-g-spot",
                              "torch-eval-spot"}
    assert prod["outputs"]["trainingRuntimes"] == {
        "a100": "torch-efa-a100", "h100": "torch-efa-h100", "g-spot": "torch-efa-g-spot",
        "eval-spot": "torch-eval-spot"}
    release = next(r for r in resources(prod, RELEASE_TYPE)
                   if r["inputs"]["chart"].endswith("kubeflow-trainer"))
    for r in runtimes_.values():
        assert release["urn"] in r["dependencies"]  # CRDs and webhook first
        assert r["inputs"]["apiVersion"] == "trainer.kubeflow.org/v1alpha1"
        jobspec.validate_runtime(r["inputs"])
    a100 = runtimes_["torch-efa-a100"]["inputs"]
    res = a100["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"][
        "template"]["spec"]["containers"][0]["resources"]
    assert res["limits"] == {"nvidia.com/gpu": "8", "vpc.amazonaws.com/efa": "4",
                             "hugepages-2Mi": "5120Mi", "memory": res["requests"]["memory"]}
    eval_res = runtimes_["torch-eval-spot"]["inputs"]["spec"]["template"]["spec"][
        "replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["containers"][0][
        "resources"]
    assert eval_res["limits"] == {"nvidia.com/gpu": "4", "memory": eval_res["requests"]["memory"]}


def test_kubeflow_namespace_has_pod_security_labels(prod):
    ns = next(r for r in resources(prod, "kubernetes:core/v1:Namespace")
              if r["inputs"]["metadata"]["name"] == "kubeflow-system")
    assert ns["inputs"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "baseline"


def test_kubeflow_namespace_denies_by_default_and_admits_webhooks(prod):
    pols = {r["inputs"]["metadata"]["name"]: r["inputs"]["spec"]
            for r in resources(prod, "kubernetes:networking.k8s.io/v1:NetworkPolicy")
            if r["inputs"]["metadata"]["namespace"] == "kubeflow-system"}
    assert pols["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    assert pols["allow-webhooks"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 9443}]
    assert pols["allow-https-egress"]["egress"][0]["ports"] == [{"protocol": "TCP", "port": 443}]
    assert set(pols) == {"default-deny", "allow-dns", "allow-same-namespace",
                         "allow-https-egress", "allow-webhooks", "allow-monitoring-scrape"}
