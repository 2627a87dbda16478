"""Fixtures of the schedulability rule (policies/schedulability.py); merged into
policy_fixtures.FIXTURES.

Every case has a system pool (m6i.2xlarge, untainted) and tainted GPU pools, like the committed
stacks: a p4d pool attaching 4 EFA interfaces, a g5.12xlarge pool without EFA and, where needed, a
Capacity Block style p5 pool whose instance type comes from its launch template.
"""

from __future__ import annotations

import json

from policy_fixtures import CTR, LT, NG, Case, R, daemonset, helm, lt_props, ng_props

DEPLOY = "kubernetes:apps/v1:Deployment"
ADDON = "aws:eks/addon:Addon"
NODE_POOL = "kubernetes:karpenter.sh/v1:NodePool"
GPU_TAINT = [{"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}]
TOLERATE_GPU = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def _labels(pool: str, efa: bool = False, accelerator: str | None = "nvidia") -> dict:
    out = {"trainyard.io/pool": pool, "trainyard.io/efa": str(efa).lower()}
    if accelerator:
        out["trainyard.io/accelerator"] = accelerator
    return out


def system_pool() -> list:
    return [R(LT, "system-lt", lt_props()),
            R(NG, "system", ng_props(types=("m6i.2xlarge",), lt="system-lt",
                                     amiType="AL2023_x86_64_STANDARD", taints=None,
                                     labels={"trainyard.io/pool": "system"}))]


def a100_pool() -> list:
    return [R(LT, "a100-lt", lt_props(efa=4)),
            R(NG, "a100", ng_props(types=("p4d.24xlarge",), lt="a100-lt", taints=GPU_TAINT,
                                   labels=_labels("a100", efa=True)))]


def eval_pool() -> list:
    return [R(LT, "eval-lt", lt_props()),
            R(NG, "eval", ng_props(types=("g5.12xlarge", "g6.12xlarge"), capacity="SPOT",
                                   lt="eval-lt", taints=GPU_TAINT, labels=_labels("eval")))]


def h100_pool(efa: int = 16) -> list:
    """Capacity Block style: no instanceTypes on the node group, the type is the template's."""
    return [R(LT, "h100-lt", lt_props(instance="p5.48xlarge", efa=efa)),
            R(NG, "h100", ng_props(types=(), lt="h100-lt", capacity="CAPACITY_BLOCK",
                                   taints=GPU_TAINT, labels=_labels("h100", efa=True)))]


def pools() -> list:
    return system_pool() + a100_pool() + eval_pool()


def deployment(name: str, spec: dict) -> dict:
    return R(DEPLOY, name, {"apiVersion": "apps/v1", "kind": "Deployment",
                            "metadata": {"name": name, "namespace": "research"},
                            "spec": {"replicas": 1, "template": {"spec": spec}}})


def container(requests: dict | None = None, limits: dict | None = None) -> dict:
    resources = {}
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    return {"name": "main", "image": "public.ecr.aws/x/trainer:1.2.3", "resources": resources}


def gpu_spec(gpus: int = 1, tolerate: bool = True, **over) -> dict:
    spec = {"containers": [container({"cpu": "4", "memory": "16Gi"},
                                     {"nvidia.com/gpu": str(gpus)})]}
    if tolerate:
        spec["tolerations"] = TOLERATE_GPU
    spec.update(over)
    return spec


def runtime(name: str, pool: str, efa: int, gpus: int = 8, cpu: str = "90",
            memory: str = "900Gi") -> dict:
    """A Trainer runtime shaped like components/services/kubeflow.py's: pinned to its pool, the GPU
    toleration, GPUs/EFA/huge pages as requests and limits, a metrics sidecar."""
    requests = {"cpu": cpu, "memory": memory, "nvidia.com/gpu": str(gpus),
                "vpc.amazonaws.com/efa": str(efa), "hugepages-2Mi": "5120Mi"}
    spec = {"nodeSelector": {"trainyard.io/pool": pool},
            "tolerations": TOLERATE_GPU,
            "containers": [container(requests, {k: v for k, v in requests.items()
                                                if k not in ("cpu", "memory")})],
            "initContainers": [{**container({"cpu": "10m", "memory": "32Mi"},
                                            {"memory": "64Mi"}), "name": "metrics",
                                "restartPolicy": "Always"}]}
    return R(CTR, name, {"apiVersion": "trainer.kubeflow.org/v1alpha1",
                         "kind": "ClusterTrainingRuntime", "metadata": {"name": name},
                         "spec": {"mlPolicy": {"numNodes": 1, "torch": {}}, "template": {"spec": {
                             "replicatedJobs": [{"name": "node", "template": {"spec": {
                                 "template": {"spec": spec}}}}]}}}})


def monitoring_addon(config: dict | None) -> dict:
    inputs = {"clusterName": "cluster-name", "addonName": "eks-node-monitoring-agent"}
    if config is not None:
        inputs["configurationValues"] = json.dumps(config)
    return R(ADDON, "node-monitoring", inputs)


NVIDIA_PLUGIN_VALUES = {
    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "trainyard.io/accelerator", "operator": "In", "values": ["nvidia"]}]}]}}},
    "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}, *TOLERATE_GPU],
}


def nvidia_plugin(values: dict) -> dict:
    r = helm("nvidia-plugin", "nvidia-device-plugin", "0.18.2",
             "https://nvidia.github.io/k8s-device-plugin")
    r["inputs"]["values"] = values
    return r


def gpu_daemonset(tolerate: bool) -> dict:
    ds = daemonset("gpu-health", namespace="kube-system")
    spec = ds["inputs"]["spec"]["template"]["spec"]
    spec["nodeSelector"] = {"trainyard.io/accelerator": "nvidia"}
    if tolerate:
        spec["tolerations"] = [{"operator": "Exists"}]
    return ds


def karpenter_pool() -> dict:
    return R(NODE_POOL, "karpenter-a100", {
        "apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": "a100-burst"},
        "spec": {"template": {
            "metadata": {"labels": _labels("a100-burst", efa=True)},
            "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "true",
                                 "effect": "NoSchedule"}],
                     "requirements": [{"key": "node.kubernetes.io/instance-type",
                                       "operator": "In", "values": ["p4d.24xlarge"]},
                                      {"key": "karpenter.sh/capacity-type", "operator": "In",
                                       "values": ["spot", "on-demand"]}],
                     "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass",
                                      "name": "gpu"}}}}})


SCHEDULABILITY_FIXTURES: dict = {
    "k8s-pods-schedulable": {
        "bad": [
            Case(pools() + [deployment("train", gpu_spec(tolerate=False))], "train",
                 label="gpu-deployment-without-taint-toleration"),
            Case(pools() + [deployment("pinned", gpu_spec(
                nodeSelector={"trainyard.io/pool": "h200"}))], "pinned",
                 label="nodeselector-to-missing-pool"),
            Case(pools() + [deployment("big", gpu_spec(
                gpus=8, nodeSelector={"trainyard.io/pool": "eval"}))], "big",
                 label="8-gpus-on-a-4-gpu-pool"),
            Case(pools() + [gpu_daemonset(tolerate=False)], "gpu-health",
                 label="gpu-daemonset-object-without-tolerations"),
            Case(pools() + [monitoring_addon(None)], "node-monitoring",
                 label="node-monitoring-addon-dcgm-server-untolerated"),
            Case(pools() + [monitoring_addon({"nodeAgent": {"tolerations": [
                {"operator": "Exists"}]}})], "node-monitoring",
                 label="node-monitoring-addon-only-node-agent-tolerates"),
            Case(pools() + [nvidia_plugin({**NVIDIA_PLUGIN_VALUES, "tolerations": []})],
                 "nvidia-plugin", label="helm-device-plugin-tolerations-removed"),
            Case(pools() + [nvidia_plugin({})], "nvidia-plugin",
                 label="helm-device-plugin-default-affinity-needs-nfd-labels"),
            Case(system_pool() + h100_pool(efa=16) + [runtime("torch-h100", "h100", efa=32)],
                 "torch-h100", label="runtime-requests-more-efa-than-attached"),
            Case(pools() + [runtime("torch-eval", "eval", efa=1, gpus=4, cpu="40",
                                    memory="150Gi")], "torch-eval",
                 label="runtime-efa-on-a-pool-without-efa"),
            Case(pools() + [karpenter_pool(), deployment("burst", gpu_spec(
                tolerate=False, nodeSelector={"trainyard.io/pool": "a100-burst"}))], "burst",
                 label="karpenter-pool-taint-not-tolerated"),
        ],
        "good": [
            Case(pools() + [deployment("web", {"containers": [container(
                {"cpu": "500m", "memory": "1Gi"})]})], label="cpu-deployment-on-system"),
            Case(pools() + [deployment("train", gpu_spec(
                gpus=4, nodeSelector={"trainyard.io/pool": "eval"}))],
                 label="gpu-deployment-tolerates-and-fits"),
            Case(pools() + [runtime("torch-a100", "a100", efa=4)], label="runtime-fits-its-pool"),
            Case(system_pool() + h100_pool(efa=32) + [runtime("torch-h100", "h100", efa=32)],
                 label="capacity-block-pool-type-from-launch-template"),
            Case(pools() + [gpu_daemonset(tolerate=True)], label="gpu-daemonset-tolerates"),
            Case(pools() + [monitoring_addon({"dcgmAgent": {"tolerations": TOLERATE_GPU}})],
                 label="node-monitoring-addon-dcgm-tolerates-gpu-taint"),
            Case(pools() + [nvidia_plugin(NVIDIA_PLUGIN_VALUES)], label="helm-device-plugin"),
            Case(pools() + [karpenter_pool(), deployment("burst", gpu_spec(
                nodeSelector={"trainyard.io/pool": "a100-burst"}))],
                 label="karpenter-pool"),
        ],
    },
}
