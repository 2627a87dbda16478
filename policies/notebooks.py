"""Notebook rules (JupyterHub releases): real authentication outside dev, no internet-facing hub
unless the policy config allows it, idle servers culled. Plus the jupyterhub chart's workloads as
policies/chart_pods.py facts (so k8s-pods-schedulable can place the hub and proxy).

Facts: jupyterhub/zero-to-jupyterhub-k8s jupyterhub/values.yaml (4.x): the hub Deployment takes
hub.nodeSelector / hub.tolerations / hub.resources, the proxy (configurable-http-proxy)
proxy.chp.*; both default to none (the chart adds a *preferred* node affinity for
hub.jupyter.org/node-purpose=core and tolerations for its own dedicated-node taints, which never
prevent scheduling). User servers are spawned by the hub at run time, not rendered by the chart.
"""

from __future__ import annotations

from pulumi_policy import Severity

from .chart_pods import CHARTS, Workload, _std
from .common import ADVISORY, MANDATORY, Refs, get, plain, resource_rule, schema

HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
CHART = "jupyterhub"
DUMMY_AUTHENTICATORS = {"dummy", "null", "dummyauthenticator.DummyAuthenticator",
                        "jupyterhub.auth.DummyAuthenticator", "jupyterhub.auth.NullAuthenticator"}

CHARTS.setdefault(CHART, (
    Workload("hub", "Deployment", **_std("hub")),
    Workload("proxy", "Deployment", **_std("proxy.chp")),
))


def _is_hub(props) -> bool:
    chart = str(get(props, "chart", "") or "")
    return chart.rstrip("/").rsplit("/", 1)[-1] == CHART


@resource_rule(
    name="notebooks-real-auth",
    description="JupyterHub releases authenticate users (OIDC, GitHub, ...): the dummy and null "
                "authenticators (any name, no password) only where the policy config allows "
                "them (dev).",
    family="kubernetes", types=(HELM_RELEASE,), level=MANDATORY, severity=Severity.CRITICAL,
    refs=Refs(other=("z2jh docs: Authentication (DummyAuthenticator is for testing only)",)),
    config=schema(allowDummy={"type": "boolean", "default": False,
                              "description": "Allow the dummy authenticator (dev stacks)."}),
    remediation="Set trainyard:notebooks.auth.type to oidc or github (docs/notebooks.md).")
def notebooks_real_auth(args, cfg, report):
    if not _is_hub(args.props) or cfg["allowDummy"]:
        return
    values = plain(get(args.props, "values", {})) or {}
    kind = str(get(values, "hub.config.JupyterHub.authenticator_class", "dummy") or "dummy")
    if kind in DUMMY_AUTHENTICATORS:
        report(f"JupyterHub uses the {kind!r} authenticator: anyone who reaches the hub can log "
               "in as anyone and run code with the team's data access; configure OIDC or "
               "GitHub OAuth.")


@resource_rule(
    name="notebooks-not-public",
    description="The JupyterHub proxy is not exposed through an internet-facing load balancer "
                "unless the policy config allows it.",
    family="kubernetes", types=(HELM_RELEASE,), level=MANDATORY, severity=Severity.HIGH,
    refs=Refs(checkov=("CKV_K8S_21",), other=("z2jh docs: Security (proxy.service.type)",)),
    config=schema(allowPublic={"type": "boolean", "default": False,
                               "description": "Allow an internet-facing hub."}),
    remediation="Keep proxy.service.type ClusterIP (reach it with kubectl port-forward or an "
                "internal ingress), or allow it in the policy config with a reason.")
def notebooks_not_public(args, cfg, report):
    if not _is_hub(args.props) or cfg["allowPublic"]:
        return
    values = plain(get(args.props, "values", {})) or {}
    svc = get(values, "proxy.service", {}) or {}
    scheme = (svc.get("annotations") or {}).get(
        "service.beta.kubernetes.io/aws-load-balancer-scheme", "")
    if svc.get("type") == "LoadBalancer" and scheme != "internal":
        report("the JupyterHub proxy is a LoadBalancer service without the internal scheme: "
               "the hub would answer on the internet.")


@resource_rule(
    name="notebooks-culled",
    description="JupyterHub culls idle servers (cull.enabled with a timeout), so forgotten "
                "notebooks do not hold GPUs.",
    family="kubernetes", types=(HELM_RELEASE,), level=ADVISORY, severity=Severity.MEDIUM,
    refs=Refs(other=("jupyterhub-idle-culler",)),
    remediation="Set trainyard:notebooks.cullIdleMinutes (and gpuCullIdleMinutes).")
def notebooks_culled(args, cfg, report):
    if not _is_hub(args.props):
        return
    values = plain(get(args.props, "values", {})) or {}
    if get(values, "cull.enabled", True) is False or not get(values, "cull.timeout", 3600):
        report("idle culling is off: idle servers (and their GPUs) run until someone stops them.")
