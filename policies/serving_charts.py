"""The serving charts' workloads (cert-manager, KEDA, KServe, the AWS Load Balancer Controller) as
policies/chart_pods.py facts: merged into its CHARTS, read by k8s-pods-schedulable. Imported only
by chart_pods (it imports chart_pods' building blocks)."""

from __future__ import annotations

from .chart_pods import LINUX, Setting, Workload, _std

# ----------------------------------------------------------------------------------------------
# cert-manager: jetstack/cert-manager deploy/charts/cert-manager/values.yaml (v1.1x): controller,
# webhook, cainjector and the startupapicheck Job each take nodeSelector (default
# kubernetes.io/os: linux), tolerations [], affinity {}, resources {} at the root or under
# webhook/cainjector/startupapicheck.
# keda: kedacore/charts keda/values.yaml (2.1x): one nodeSelector/tolerations/affinity for all
# three Deployments; resources under resources.operator / metricServer / webhooks.
# kserve: kserve/kserve charts/kserve-resources values.yaml: kserve.controller.{nodeSelector,
# tolerations, affinity, resources} (resources 100m/300Mi); kserve-crd renders CRDs only.
# aws-load-balancer-controller: aws/eks-charts values.yaml: nodeSelector {}, tolerations [],
# affinity {} (the chart adds a preferred anti-affinity), resources {}.
SERVING_CHARTS: dict[str, tuple[Workload, ...]] = {
    "cert-manager": (
        Workload("cert-manager", "Deployment", **_std("", ns=dict(LINUX))),
        Workload("cert-manager-webhook", "Deployment", **_std("webhook", ns=dict(LINUX))),
        Workload("cert-manager-cainjector", "Deployment",
                 enabled=Setting("cainjector.enabled", True),
                 **_std("cainjector", ns=dict(LINUX))),
        Workload("cert-manager-startupapicheck", "Job",
                 enabled=Setting("startupapicheck.enabled", True),
                 **_std("startupapicheck", ns=dict(LINUX))),
    ),
    "keda": tuple(
        Workload(w, "Deployment", node_selector=Setting("nodeSelector", {}),
                 tolerations=Setting("tolerations", []), affinity=Setting("affinity", {}),
                 resources=Setting(f"resources.{key}", {}))
        for w, key in (("keda-operator", "operator"),
                       ("keda-operator-metrics-apiserver", "metricServer"),
                       ("keda-admission-webhooks", "webhooks"))),
    "kserve-crd": (),
    "kserve": (
        Workload("kserve-controller-manager", "Deployment", **_std(
            "kserve.controller", res={"requests": {"cpu": "100m", "memory": "300Mi"},
                                      "limits": {"cpu": "100m", "memory": "300Mi"}})),
    ),
    "aws-load-balancer-controller": (
        Workload("aws-load-balancer-controller", "Deployment", **_std("")),
    ),
}
