"""Fixtures of the in-cluster rules: pod specs everywhere (policies/pods.py), NetworkPolicy content
(policies/netpol.py), RBAC and EKS access (policies/rbac.py); merged into
policy_fixtures.FIXTURES."""

from __future__ import annotations

import json
from typing import Optional

from policy_fixtures import ADDON, CLUSTER, CRB, CROLE, HELM, NETPOL, Case, R, helm, netpol, ns

DEP = "kubernetes:apps/v1:Deployment"
POD = "kubernetes:core/v1:Pod"
ROLE = "kubernetes:rbac.authorization.k8s.io/v1:Role"
RB = "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding"
SA = "kubernetes:core/v1:ServiceAccount"
TRAINJOB = "kubernetes:trainer.kubeflow.org/v1alpha1:TrainJob"
ISVC = "kubernetes:serving.kserve.io/v1beta1:InferenceService"
APA = "aws:eks/accessPolicyAssociation:AccessPolicyAssociation"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/trainyard-train:0.1.0"
SAFE = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
RES = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}


def container(**over) -> dict:
    c = {"name": "main", "image": IMAGE, "resources": RES, "securityContext": dict(SAFE)}
    c.update(over)
    return c


def deployment(name: str = "app", namespace: str = "research", spec: Optional[dict] = None,
               **container_over) -> dict:
    pod = {"serviceAccountName": "trainer", "automountServiceAccountToken": False,
           "containers": [container(**container_over)]}
    pod.update(spec or {})
    return R(DEP, name, {"apiVersion": "apps/v1", "kind": "Deployment",
                         "metadata": {"name": name, "namespace": namespace},
                         "spec": {"selector": {}, "template": {"spec": pod}}})


def chart(values: dict, name: str = "rel", chart_name: str = "some-chart") -> dict:
    r = helm(name, chart_name, "1.0.0", "https://charts.example.com", namespace="tools")
    r["inputs"]["values"] = values
    return r


def addon(name: str, values: Optional[dict]) -> dict:
    inputs = {"clusterName": "cluster-name", "addonName": name}
    if values is not None:
        inputs["configurationValues"] = json.dumps(values)
    return R(ADDON, f"addon-{name}", inputs)


def policy(name: str, namespace: str, spec: dict, rname: Optional[str] = None) -> dict:
    return R(NETPOL, rname or f"np-{namespace}-{name}", {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace}, "spec": spec})


def role(name: str, rules: list, namespace: Optional[str] = None) -> dict:
    meta = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return R(ROLE if namespace else CROLE, f"role-{name}", {"metadata": meta, "rules": rules})


WEBHOOK_FROM_VPC = {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{
    "from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"protocol": "TCP", "port": 9443}]}]}
HTTPS_ANYWHERE = {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{
    "to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"protocol": "TCP", "port": 443}]}]}
OPEN_EGRESS = {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}
EXCEPTION = [{"namespace": "research", "policy": "https", "reason": "S3 via gateway endpoint"}]
CNI_ON = {"enableNetworkPolicy": "true", "env": {"WARM_IP_TARGET": "5"}}
SECRETS_READ = [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}]
ADMIN = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"


def association(principal: str, policy_arn: str = ADMIN) -> dict:
    return R(APA, "assoc", {"clusterName": "c", "principalArn": principal,
                            "policyArn": policy_arn, "accessScope": {"type": "cluster"}})


POD_FIXTURES: dict[str, dict[str, list[Case]]] = {
    # -- pod specs ---------------------------------------------------------------------------
    "pod-no-host-pid": {
        "bad": [Case([deployment(spec={"hostPID": True})], "app"),
                Case([chart({"agent": {"hostPID": True}})], "rel", label="helm values")],
        "good": [Case([deployment(), chart({"hostPID": False})]),
                 Case([chart({"prometheus-node-exporter": {"hostPID": True}},
                             chart_name="kube-prometheus-stack")], label="allow-listed subchart"),
                 Case([deployment(name="scanner", spec={"hostPID": True})],
                      config={"exemptWorkloads": [{"name": "scanner", "reason": "audit agent"}]},
                      label="config allow-list")],
    },
    "pod-no-host-network-ipc": {
        "bad": [Case([deployment(spec={"hostNetwork": True})], "app"),
                Case([chart({"hostIPC": True}, chart_name="kube-prometheus-stack")], "rel",
                     label="outside the allow-listed subchart")],
        "good": [Case([deployment(), addon("eks-pod-identity-agent", {"hostNetwork": True})])],
    },
    "k8s-no-privileged-containers": {
        "bad": [Case([deployment(securityContext={"privileged": True})], "app"),
                Case([chart({"controller": {"containerSecurityContext": {"privileged": True}}})],
                     "rel", label="helm values"),
                Case([R(TRAINJOB, "job", {"metadata": {"name": "j", "namespace": "research"},
                                          "spec": {"runtimePatches": [{"trainingRuntimeSpec": {
                                              "template": {"spec": {"containers": [container(
                                                  securityContext={"privileged": True})]}}}}]}})],
                     "job", label="TrainJob runtime patch")],
        "good": [Case([deployment()]),
                 Case([chart({"securityContext": {"privileged": True}},
                             chart_name="aws-efa-k8s-device-plugin")], label="device plugin")],
    },
    "pod-no-runtime-socket": {
        "bad": [Case([deployment(spec={"volumes": [{"name": "sock", "hostPath": {
                    "path": "/run/containerd/containerd.sock"}}]})], "app"),
                Case([chart({"extraVolumes": [{"name": "d", "hostPath": {
                    "path": "/var/run/docker.sock"}}]}, chart_name="dcgm-exporter")], "rel",
                     label="allow-listed workload, not this path"),
                Case([deployment(spec={"volumes": [{"name": "run", "hostPath": {
                    "path": "/var/run"}}]})], "app", label="parent directory")],
        "good": [Case([deployment(spec={"volumes": [{"name": "pr", "hostPath": {
                    "path": "/var/lib/kubelet/pod-resources"}}]})])],
    },
    "pod-hostpath-restricted": {
        "bad": [Case([deployment(spec={"volumes": [{"name": "etc", "hostPath": {
                    "path": "/etc"}}]})], "app"),
                Case([chart({"volumes": [{"name": "root", "hostPath": {"path": "/etc"}}]},
                            chart_name="nvidia-device-plugin")], "rel",
                     label="device plugin beyond its paths")],
        "good": [Case([deployment(), chart({"volumes": [{"name": "dp", "hostPath": {
                    "path": "/var/lib/kubelet/device-plugins"}}]},
                    chart_name="nvidia-device-plugin")])],
    },
    "pod-no-added-capabilities": {
        "bad": [Case([deployment(securityContext={**SAFE, "capabilities": {
                    "add": ["SYS_ADMIN"], "drop": ["ALL"]}})], "app"),
                Case([chart({"securityContext": {"capabilities": {"add": ["NET_RAW"]}}})],
                     "rel", label="helm values")],
        "good": [Case([deployment(securityContext={**SAFE, "capabilities": {
                    "add": ["NET_BIND_SERVICE"], "drop": ["ALL"]}}),
                       chart({"securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}},
                             chart_name="dcgm-exporter")])],
    },
    "pod-no-root-or-escalation": {
        "bad": [Case([deployment(securityContext={})], "app", label="no securityContext"),
                Case([deployment(securityContext={**SAFE, "runAsUser": 0})], "app",
                     label="root"),
                Case([chart({"podSecurityContext": {"runAsNonRoot": False}})], "rel",
                     label="helm values"),
                Case([R(ISVC, "isvc", {"metadata": {"name": "m", "namespace": "serving"},
                                       "spec": {"predictor": {"model": {
                                           "modelFormat": {"name": "huggingface"}}}}})],
                     "isvc", label="KServe model container")],
        "good": [Case([deployment(), chart({"securityContext": {"runAsUser": 1000,
                                                                "runAsNonRoot": True}})])],
    },
    "pod-resources-set": {
        "bad": [Case([deployment(resources={"requests": {"cpu": "1", "memory": "1Gi"}})],
                     "app"),
                Case([R(TRAINJOB, "job", {"metadata": {"name": "j", "namespace": "research"},
                                          "spec": {"trainer": {"image": IMAGE,
                                                               "resourcesPerNode": {"limits": {
                                                                   "nvidia.com/gpu": "8"}}}}})],
                     "job", label="TrainJob resourcesPerNode"),
                Case([chart({"controller": {"resources": {"requests": {"cpu": "1"}}}})], "rel",
                     label="helm values")],
        "good": [Case([deployment(), chart({"persistence": {"resources": {
                    "requests": {"storage": "20Gi"}}}, "resources": RES})])],
    },
    "pod-no-plaintext-secret-env": {
        "bad": [Case([deployment(env=[{"name": "WANDB_API_KEY", "value": "abc123"}])], "app"),
                Case([chart({"grafana": {"adminPassword": "hunter2"}})], "rel",
                     label="helm values key"),
                Case([addon("some-addon", {"env": {"DB_PASSWORD": "x"}})], "addon-some-addon",
                     label="add-on env map")],
        "good": [Case([deployment(env=[
                    {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf",
                                                                        "key": "token"}}},
                    {"name": "NCCL_SOCKET_IFNAME", "value": "^lo"}]),
                       chart({"grafana": {"admin": {"existingSecret": "grafana-admin",
                                                    "passwordKey": "admin-password"}}}),
                       addon("vpc-cni", CNI_ON)])],
    },
    "pod-image-registry-allowed": {
        "bad": [Case([deployment(image="evil.example.com/miner:1.0")], "app"),
                Case([chart({"image": {"repository": "nvcr.io/nvidia/k8s-device-plugin",
                                       "tag": "latest"}})], "rel", label="values :latest"),
                Case([deployment(image="busybox:1.36")], "app", label="Docker Hub short name")],
        "good": [Case([deployment(), chart({"image": {"repository": "nvcr.io/nvidia/dcgm",
                                                      "tag": "4.2.3"}},
                                           name="a"),
                       chart({"image": {"repository": "kueue"}}, name="b")])],
    },
    "pod-service-account-token": {
        "bad": [Case([deployment(spec={"automountServiceAccountToken": None,
                                       "serviceAccountName": "runner"})], "app"),
                Case([deployment(spec={"automountServiceAccountToken": None}),
                      R(SA, "sa", {"metadata": {"name": "trainer", "namespace": "research"},
                                   "automountServiceAccountToken": True})], "app",
                     label="account mounts it")],
        "good": [Case([deployment()]),
                 Case([deployment(spec={"automountServiceAccountToken": None}),
                       R(SA, "sa", {"metadata": {"name": "trainer", "namespace": "research"},
                                    "automountServiceAccountToken": False})],
                      label="account opts out")],
    },
    # -- network policies --------------------------------------------------------------------
    "netpol-default-deny": {
        "bad": [Case([ns("research"), policy("default-deny", "research", OPEN_EGRESS)],
                     "np-research-default-deny", label="rewritten deny"),
                Case([ns("research"), policy("only-ingress", "research",
                                             {"podSelector": {}, "policyTypes": ["Ingress"]})],
                     "ns-research", label="egress not denied"),
                Case([helm("tools", "some-chart", "1.0.0", "https://charts.example.com",
                           namespace="tools")], "tools", label="Helm namespace")],
        "good": [Case([ns("research"), netpol("research"), ns("kube-system"),
                       helm("plugin", "nvidia-device-plugin", "0.18.2",
                            "https://nvidia.github.io/k8s-device-plugin")])],
    },
    "netpol-no-open-ingress": {
        "bad": [Case([policy("webhooks", "kueue-system", {
                    "podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{
                        "from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}],
                        "ports": [{"protocol": "TCP", "port": 9443}]}]})],
                     "np-kueue-system-webhooks"),
                Case([policy("allow-all", "research", {"podSelector": {}, "ingress": [{}]})],
                     "np-research-allow-all", label="empty rule"),
                Case([policy("v6", "research", {"podSelector": {}, "ingress": [{
                    "from": [{"ipBlock": {"cidr": "::/0"}}]}]})], "np-research-v6",
                     label="ipv6")],
        "good": [Case([policy("webhooks", "kueue-system", WEBHOOK_FROM_VPC), netpol("research"),
                       policy("scrape", "research", {"podSelector": {}, "ingress": [{
                           "from": [{"namespaceSelector": {"matchLabels": {
                               "kubernetes.io/metadata.name": "monitoring"}}}]}]})])],
    },
    "netpol-no-open-egress": {
        "bad": [Case([policy("allow-egress", "monitoring", OPEN_EGRESS)],
                     "np-monitoring-allow-egress"),
                Case([policy("out", "research", {"podSelector": {}, "policyTypes": ["Egress"],
                                                 "egress": [{"to": [{"ipBlock": {
                                                     "cidr": "0.0.0.0/0"}}]}]})],
                     "np-research-out", label="0.0.0.0/0 every port")],
        "good": [Case([policy("https", "research", HTTPS_ANYWHERE), netpol("research")]),
                 Case([policy("allow-egress", "monitoring", OPEN_EGRESS)],
                      config={"allowedOpenEgress": [{"namespace": "monitoring",
                                                     "policy": "allow-egress",
                                                     "reason": "scrapes everything"}]},
                      label="excepted")],
    },
    "netpol-egress-anywhere-on-ports": {
        "bad": [Case([policy("https", "research", HTTPS_ANYWHERE)], "np-research-https"),
                Case([policy("https", "applied", HTTPS_ANYWHERE)], "np-applied-https",
                     config={"allowedOpenEgress": EXCEPTION}, label="other namespace")],
        "good": [Case([policy("https", "research", HTTPS_ANYWHERE)],
                      config={"allowedOpenEgress": EXCEPTION}),
                 Case([policy("api", "kueue-system", {
                     "podSelector": {}, "policyTypes": ["Egress"], "egress": [{
                         "to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}],
                         "ports": [{"protocol": "TCP", "port": 443}]}]})],
                      label="private ranges")],
    },
    "vpc-cni-network-policy-enabled": {
        "bad": [Case([netpol("research"), addon("vpc-cni", {"env": {"WARM_IP_TARGET": "5"}})],
                     "addon-vpc-cni", label="removed"),
                Case([netpol("research"), addon("vpc-cni", {"enableNetworkPolicy": "false"})],
                     "addon-vpc-cni", label="false"),
                Case([netpol("research"), R(CLUSTER, "cluster", {"name": "c"})], "cluster",
                     label="no CNI add-on")],
        "good": [Case([netpol("research"), addon("vpc-cni", CNI_ON)]),
                 Case([netpol("research"), helm("cni", "cilium", "1.18.0",
                                                "https://helm.cilium.io")], label="Cilium"),
                 Case([addon("vpc-cni", None)], label="no policies")],
    },
    # -- RBAC and EKS access -----------------------------------------------------------------
    "rbac-no-secret-read": {
        "bad": [Case([role("reader", SECRETS_READ, "research")], "role-reader"),
                Case([role("all", [{"apiGroups": ["*"], "resources": ["*"],
                                    "verbs": ["watch"]}])], "role-all", label="wildcards")],
        "good": [Case([role("one", [{"apiGroups": [""], "resources": ["secrets"],
                                     "resourceNames": ["hf-token"], "verbs": ["get"]}],
                            "research"),
                       role("pods", [{"apiGroups": [""], "resources": ["pods"],
                                      "verbs": ["get", "list"]}])]),
                 Case([role("eso", SECRETS_READ)],
                      config={"allowedRoles": [{"name": "eso", "reason": "syncs secrets"}]},
                      label="allowed")],
    },
    "rbac-no-escalation-verbs": {
        "bad": [Case([role("binder", [{"apiGroups": ["rbac.authorization.k8s.io"],
                                       "resources": ["clusterroles"],
                                       "verbs": ["bind", "escalate"]}])], "role-binder"),
                Case([role("sudo", [{"apiGroups": [""], "resources": ["serviceaccounts"],
                                     "verbs": ["impersonate"]}], "research")], "role-sudo",
                     label="impersonate")],
        "good": [Case([role("viewer", [{"apiGroups": ["rbac.authorization.k8s.io"],
                                        "resources": ["roles"], "verbs": ["get", "list"]}])])],
    },
    "rbac-no-exec-attach": {
        "bad": [Case([role("debug", [{"apiGroups": [""], "resources": ["pods/exec"],
                                      "verbs": ["create"]}], "research")], "role-debug"),
                Case([role("proxy", [{"apiGroups": [""], "resources": ["nodes/proxy"],
                                      "verbs": ["get"]}])], "role-proxy", label="nodes/proxy")],
        "good": [Case([role("logs", [{"apiGroups": [""], "resources": ["pods/log", "pods"],
                                      "verbs": ["get", "list"]}], "research")])],
    },
    "rbac-no-kube-system-workloads": {
        "bad": [Case([role("deployer", [{"apiGroups": ["apps"], "resources": ["daemonsets"],
                                         "verbs": ["create", "patch"]}], "kube-system")],
                     "role-deployer"),
                Case([role("runner", [{"apiGroups": [""], "resources": ["pods"],
                                       "verbs": ["create"]}]),
                      R(CRB, "crb", {"metadata": {"name": "ci"}, "roleRef": {
                          "kind": "ClusterRole", "name": "runner"}, "subjects": [{
                              "kind": "ServiceAccount", "name": "ci", "namespace": "ci"}]})],
                     "crb", label="cluster-wide binding")],
        "good": [Case([role("runner", [{"apiGroups": [""], "resources": ["pods"],
                                        "verbs": ["create"]}]),
                       R(RB, "rb", {"metadata": {"name": "ci", "namespace": "research"},
                                    "roleRef": {"kind": "ClusterRole", "name": "runner"},
                                    "subjects": [{"kind": "ServiceAccount", "name": "ci",
                                                  "namespace": "research"}]}),
                       role("reader", [{"apiGroups": [""], "resources": ["pods"],
                                        "verbs": ["get"]}], "kube-system")])],
    },
    "eks-access-no-admin-for-workloads": {
        "bad": [Case([association("arn:aws:iam::123456789012:role/trainyard-node")], "assoc",
                     config={"adminPrincipals": ["arn:aws:iam::123456789012:role/platform-admins"]}),
                Case([association("arn:aws:iam::123456789012:role/ci",
                                  "arn:aws:eks::aws:cluster-access-policy/AmazonEKSAdminPolicy")],
                     "assoc", label="AmazonEKSAdminPolicy, no admins configured")],
        "good": [Case([association("arn:aws:iam::123456789012:role/platform-admins")],
                      config={"adminPrincipals": ["arn:aws:iam::*:role/platform-admins"]}),
                 Case([association("arn:aws:iam::123456789012:role/ci",
                                   "arn:aws:eks::aws:cluster-access-policy/AmazonEKSViewPolicy")],
                      label="view policy")],
    },
}

__all__ = ["POD_FIXTURES", "HELM"]
