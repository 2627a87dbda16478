"""Monitoring: kube-prometheus-stack (Prometheus, Alertmanager, Grafana, node-exporter,
kube-state-metrics), the DCGM exporter on NVIDIA nodes, EFA counters, trainyard's dashboards,
alert rules and the training-throughput PodMonitor. Charts pinned in components/data/charts.yaml.

Everything that is data lives beside this file:
- data/monitoring/*.yaml: Helm values (static parts), the DCGM counters list, the throughput
  exporter sidecar (used by the Kubeflow runtimes);
- data/dashboards/*.json: Grafana dashboards, shipped as ConfigMaps the Grafana sidecar loads;
  data/dashboards/metrics.txt lists every metric the installed exporters provide (the tests
  check each dashboard and alert against it);
- data/alerts/*.yaml: PrometheusRule groups (promtool-checked in the tests): alerts, and in
  cost.yaml the recording rules (`trainyard:*`) of GPU-hours allocated and idle.

Grafana's admin password is a RandomPassword (or a secret from config, when the platform passes
one) stored in a Secret that Grafana reads through `admin.existingSecret`: it never appears in
Helm values, and Pulumi marks it secret, so plans show "[secret]". With `secrets.enabled` (the
default) the platform passes `grafana_admin_from` instead: the Secret is an ExternalSecret that the
External Secrets Operator fills from AWS Secrets Manager (components/services/secrets.py).

Every object depends on `depends_on` (cluster, add-ons, node groups), so `pulumi destroy`
removes it while the cluster still answers. See docs/monitoring.md.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random
import yaml

from components.compute.addons import ChartPin, chart
from components.compute.catalog import Catalog, load_catalog
from components.config import GpuPoolConfig, MonitoringConfig
from components.services import netpol
from components.services.k8s_names import ACCELERATOR_LABEL, GPU_TAINT_KEY, SYSTEM_NAMESPACES

DATA = Path(__file__).resolve().parents[1] / "data"
MONITORING_DATA = DATA / "monitoring"
DASHBOARDS_DIR = DATA / "dashboards"
ALERTS_DIR = DATA / "alerts"

KPS_CHART = "kube-prometheus-stack"
DCGM_CHART = "dcgm-exporter"
GRAFANA_SECRET = "grafana-admin"
"""Secret Grafana reads its admin user and password from (keys admin-user, admin-password)."""
GRAFANA_ADMIN_USER = "admin"
STORAGE_CLASS = "monitoring-gp3"
"""StorageClass the component creates when none is given; not auto-named, claims name it."""
DCGM_COUNTERS_CONFIGMAP = "trainyard-dcgm-counters"
DASHBOARD_LABEL = "grafana_dashboard"
DASHBOARD_FOLDER_ANNOTATION = "grafana_folder"
DASHBOARD_FOLDER = "trainyard"
RETENTION_SIZE_FRACTION = 0.85
"""Prometheus deletes old blocks beyond this share of its volume (before the disk fills)."""


@dataclass(frozen=True)
class MonitoringArgs:
    config: MonitoringConfig
    """Typed `trainyard:monitoring` section (retention, volume sizes) (required)."""
    provider: k8s.Provider
    """Kubernetes provider of the cluster (required)."""
    gpu_pools: Sequence[GpuPoolConfig] = ()
    """The stack's GPU pools: the DCGM exporter is installed when any is NVIDIA. Default none."""
    depends_on: Sequence[pulumi.Resource] = field(default_factory=tuple)
    """Cluster, add-ons and node groups: created first, deleted last. Default none."""
    grafana_admin_password: Optional[pulumi.Input[str]] = None
    """Grafana admin password (wrap it with pulumi.Output.secret). Default: a generated
    32-character RandomPassword. Ignored with `grafana_admin_from`."""
    grafana_admin_from: Optional[Any] = None
    """An ExternalSecretSource (components/services/secrets.py): Grafana's admin Secret is then
    an ExternalSecret from Secrets Manager, and no password passes through Pulumi here. Default
    None: the Secret is created from `grafana_admin_password`."""
    storage_class: Optional[str] = None
    """An existing StorageClass for the Prometheus, Alertmanager and Grafana volumes. Default:
    the component creates `monitoring-gp3` (EBS CSI, gp3, encrypted): EKS >= 1.30 marks no class
    as default, so claims without one would stay Pending."""
    retain_volumes: bool = False
    """Keep the EBS volumes (metrics history, Grafana state) when their claims are deleted.
    Default false; prod sets it from `storage.retainOnDelete`."""
    namespace: str = SYSTEM_NAMESPACES["monitoring"]
    """Namespace of everything here. Default `monitoring`."""
    catalog: Optional[Catalog] = None
    """Instance catalog. Default: components/data/instances.yaml."""


# ----------------------------------------------------------------------------------------------
# Pure values
# ----------------------------------------------------------------------------------------------
def _load_yaml(path: Path) -> Any:
    with path.open() as f:
        return yaml.safe_load(f)


def deep_merge(base: Mapping, override: Mapping) -> dict:
    """`override` merged into a copy of `base`; mappings merge, everything else replaces."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def kube_prometheus_stack_values(config: MonitoringConfig,
                                 storage_class: Optional[str] = None) -> dict:
    """Values of the kube-prometheus-stack release: the static file plus what follows from
    the stack config. Holds no secret (Grafana reads its admin password from GRAFANA_SECRET)."""
    static = _load_yaml(MONITORING_DATA / "kube-prometheus-stack.yaml")
    pvc: dict[str, Any] = {"resources": {"requests": {
        "storage": f"{config.prometheus_storage_gib}Gi"}}}
    if storage_class:
        pvc["storageClassName"] = storage_class
    retention_gb = max(1, int(config.prometheus_storage_gib * RETENTION_SIZE_FRACTION))
    computed: dict[str, Any] = {
        "prometheus": {"prometheusSpec": {
            "retention": f"{config.prometheus_retention_days}d",
            "retentionSize": f"{retention_gb}GB",
            "storageSpec": {"volumeClaimTemplate": {"spec": pvc}},
        }},
        "grafana": {
            "admin": {"existingSecret": GRAFANA_SECRET},
            "persistence": {"size": f"{config.grafana_storage_gib}Gi"},
        },
    }
    if storage_class:
        computed["grafana"]["persistence"]["storageClassName"] = storage_class
        computed["alertmanager"] = {"alertmanagerSpec": {"storage": {"volumeClaimTemplate": {
            "spec": {"storageClassName": storage_class}}}}}
    return deep_merge(static, computed)


def nvidia_pools(pools: Sequence[GpuPoolConfig], catalog: Catalog) -> list[GpuPoolConfig]:
    return [p for p in pools if catalog.get(p.instance_types[0]).vendor == "nvidia"]


def dcgm_exporter_values() -> dict:
    """Values of the dcgm-exporter release: NVIDIA nodes only, tolerating the GPU taint."""
    static = _load_yaml(MONITORING_DATA / "dcgm-exporter.yaml")
    return deep_merge(static, {
        "nodeSelector": {ACCELERATOR_LABEL: "nvidia"},
        "tolerations": [{"key": GPU_TAINT_KEY["nvidia"], "operator": "Exists",
                         "effect": "NoSchedule"}],
    })


@functools.lru_cache(maxsize=1)
def dcgm_counters() -> tuple[dict, ...]:
    return tuple(_load_yaml(MONITORING_DATA / "dcgm-counters.yaml")["counters"])


def dcgm_counters_csv() -> str:
    """The exporter's counters file: `DCGM field, Prometheus type, help` per line."""
    lines = ["# DCGM FIELD, Prometheus metric type, help message (components/data/monitoring/"
             "dcgm-counters.yaml)"]
    lines += [f"{c['field']}, {c['type']}, {c['help']}" for c in dcgm_counters()]
    return "\n".join(lines) + "\n"


def dashboards() -> dict[str, str]:
    """File name -> dashboard JSON (compact, as the ConfigMap carries it)."""
    out = {}
    for path in sorted(DASHBOARDS_DIR.glob("*.json")):
        out[path.name] = json.dumps(json.loads(path.read_text()), separators=(",", ":"))
    return out


def alert_rule_files() -> dict[str, dict]:
    """File stem -> PrometheusRule spec ({"groups": [...]})."""
    return {p.stem: _load_yaml(p) for p in sorted(ALERTS_DIR.glob("*.yaml"))}


def recorded_metrics() -> set[str]:
    """Series the shipped recording rules write (`record:` in data/alerts/*.yaml): dashboards
    and alerts read them like exporter metrics."""
    return {rule["record"] for spec in alert_rule_files().values()
            for group in spec["groups"] for rule in group["rules"] if "record" in rule}


def known_metrics() -> set[str]:
    """Every metric the installed exporters provide (data/dashboards/metrics.txt)."""
    names = set()
    for line in (DASHBOARDS_DIR / "metrics.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(line)
    return names


_PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset",
                    "bool", "and", "or", "unless", "inf", "nan", "Inf", "NaN"}
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GRAFANA_VARS = re.compile(r"\$\{[^}]*\}|\$\w+")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*")


def promql_metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression (Grafana variables allowed) selects. A small tokenizer,
    not a parser: it drops strings, `$vars`, label matchers, range selectors and the label lists
    of by/without/on/ignoring/group_*, then keeps every identifier that is not a keyword and not
    followed by `(` (functions and aggregations)."""
    s = _STRINGS.sub('""', expr)
    s = _GRAFANA_VARS.sub(" ", s)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = _LABEL_LISTS.sub(" ", s)
    names = set()
    for m in _IDENT.finditer(s):
        if s[m.end():].lstrip().startswith("(") or m.group() in _PROMQL_KEYWORDS:
            continue
        names.add(m.group())
    return names


def grafana_variable_exprs(query: str) -> list[str]:
    """PromQL inside a Grafana Prometheus variable query: `label_values(expr, label)` ->
    [expr]; `label_values(label)` -> []; `query_result(expr)` -> [expr]."""
    m = re.fullmatch(r"\s*label_values\((.*),\s*[\w.]+\s*\)\s*", query, re.S)
    if m:
        return [m.group(1)]
    if re.fullmatch(r"\s*label_values\(\s*[\w.]+\s*\)\s*", query):
        return []
    m = re.fullmatch(r"\s*query_result\((.*)\)\s*", query, re.S)
    return [m.group(1)] if m else [query]


def dashboard_exprs(dashboard: Mapping) -> list[str]:
    """Every PromQL expression of a dashboard: panel targets (rows' nested panels included) and
    templating variable queries."""
    exprs: list[str] = []

    def panels(items):
        for p in items:
            exprs.extend(t["expr"] for t in p.get("targets", []) if t.get("expr"))
            panels(p.get("panels", []))

    panels(dashboard.get("panels", []))
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            q = var.get("query")
            q = q.get("query", "") if isinstance(q, Mapping) else (q or "")
            exprs.extend(grafana_variable_exprs(q))
    return exprs


def configmap_name(dashboard_file: str) -> str:
    return "trainyard-dashboard-" + Path(dashboard_file).stem


def training_pod_monitor_spec(metrics_label: str, port_name: str) -> dict:
    """PodMonitor for the training-throughput sidecars in every namespace. `trainjob` is the
    JobSet name (= the TrainJob's)."""
    return {
        "namespaceSelector": {"any": True},
        "selector": {"matchLabels": {metrics_label: "true"}},
        "podMetricsEndpoints": [{
            "port": port_name,
            "path": "/metrics",
            "interval": "30s",
            "relabelings": [
                {"sourceLabels": ["__meta_kubernetes_pod_label_jobset_sigs_k8s_io_jobset_name"],
                 "targetLabel": "trainjob", "action": "replace"},
                {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node",
                 "action": "replace"},
            ],
        }],
    }


PROMETHEUS_OPERATOR_WEBHOOK_PORT = 10250
"""Port of the prometheus-operator's admission webhook (PrometheusRule validation)."""


def network_policies() -> dict[str, dict]:
    """NetworkPolicies of the monitoring namespace: default deny; the stack's parts talk to each
    other; egress on every port to the private ranges, because Prometheus scrapes pods (any
    port, any namespace), kubelets and node exporters on the nodes' addresses, and the
    operator, kube-state-metrics and Grafana's sidecar watch the API server (its Service
    ClusterIP and endpoint ENIs are private addresses too); HTTPS anywhere for Alertmanager's
    receivers and a public API endpoint; ingress from outside only to the operator's admission
    webhook, from the private ranges (the API server calls it from ENIs in the cluster's
    subnets). node-exporter runs on the host network, where policies do not apply."""
    return {
        "default-deny": netpol.deny_all(),
        "allow-dns": netpol.allow_dns(),
        "allow-same-namespace": netpol.allow_same_namespace(),
        "allow-egress": netpol.allow_egress_to_cidrs(netpol.PRIVATE_RANGES),
        "allow-https-egress": netpol.allow_egress_to("0.0.0.0/0", [443]),
        "allow-operator-webhook": netpol.allow_ingress_on([PROMETHEUS_OPERATOR_WEBHOOK_PORT]),
    }


def release_chart(pin: ChartPin) -> tuple[str, Optional[k8s.helm.v3.RepositoryOptsArgs]]:
    """(chart, repository options) for a pin: OCI charts are referenced by URL, without a
    repository."""
    if pin.repo.startswith("oci://"):
        return f"{pin.repo.rstrip('/')}/{pin.chart}", None
    return pin.chart, k8s.helm.v3.RepositoryOptsArgs(repo=pin.repo)


# ----------------------------------------------------------------------------------------------
# Component
# ----------------------------------------------------------------------------------------------
class Monitoring(pulumi.ComponentResource):
    namespace: k8s.core.v1.Namespace
    kube_prometheus_stack: k8s.helm.v3.Release
    dcgm_exporter: Optional[k8s.helm.v3.Release]
    grafana_admin_password: Optional[pulumi.Output[str]]

    def __init__(self, name: str, args: MonitoringArgs,
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("trainyard:index:Monitoring", name, None, opts)
        self._name, self._args = name, args
        self._catalog = args.catalog or load_catalog()

        self.namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=args.namespace,
                labels={
                    # node-exporter needs the host network, PID namespace and /sys and the
                    # DCGM exporter SYS_ADMIN: nothing below `privileged` admits them. Only
                    # platform charts run here; teams have no access.
                    "pod-security.kubernetes.io/enforce": "privileged",
                    "pod-security.kubernetes.io/audit": "baseline",
                    "pod-security.kubernetes.io/warn": "baseline",
                }),
            opts=self._opts())
        for policy, spec in network_policies().items():
            k8s.networking.v1.NetworkPolicy(
                f"{name}-{policy}", metadata=self._meta(policy), spec=spec,
                opts=self._opts(self.namespace))
        self._create_storage_class()
        self._create_grafana_secret()
        self._create_kube_prometheus_stack()
        self._create_dcgm_exporter()
        self._create_dashboards()
        self._create_alerts()
        self._create_training_pod_monitor()

        self.register_outputs({
            "namespace": args.namespace,
            "grafanaAdminPassword": self.grafana_admin_password,
            "chartVersions": self.chart_versions(),
        })

    # -- helpers ---------------------------------------------------------------------------
    def _opts(self, *depends_on: pulumi.Resource) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self, provider=self._args.provider,
                                      depends_on=[*self._args.depends_on, *depends_on])

    def _meta(self, name: str, **kw: Any) -> k8s.meta.v1.ObjectMetaArgs:
        return k8s.meta.v1.ObjectMetaArgs(name=name, namespace=self._args.namespace, **kw)

    def chart_versions(self) -> dict[str, str]:
        """Chart -> pinned version of every release this component installs."""
        names = [KPS_CHART] + ([DCGM_CHART] if self.dcgm_exporter is not None else [])
        return {n: chart(n).version for n in names}

    def _release(self, role: str, pin: ChartPin, values: dict,
                 *depends_on: pulumi.Resource) -> k8s.helm.v3.Release:
        chart_ref, repo = release_chart(pin)
        return k8s.helm.v3.Release(
            f"{self._name}-{role}",
            # A fixed release name: it prefixes every object the chart creates (services
            # operators port-forward to, e.g. kube-prometheus-stack-grafana), so it must not
            # carry a random suffix.
            name=pin.chart, chart=chart_ref, version=pin.version, repository_opts=repo,
            namespace=self._args.namespace, values=values,
            max_history=5, timeout=900, atomic=True, cleanup_on_fail=True,
            opts=self._opts(self.namespace, *depends_on))

    # -- parts -----------------------------------------------------------------------------
    def _create_storage_class(self) -> None:
        a = self._args
        self.storage_class_name = a.storage_class or STORAGE_CLASS
        self.storage_class = None
        if a.storage_class:
            return
        self.storage_class = k8s.storage.v1.StorageClass(
            f"{self._name}-storage-class",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=STORAGE_CLASS),
            provisioner="ebs.csi.aws.com",
            parameters={"type": "gp3", "encrypted": "true"},
            reclaim_policy="Retain" if a.retain_volumes else "Delete",
            # Bind where the pod lands: EBS volumes live in one availability zone.
            volume_binding_mode="WaitForFirstConsumer",
            allow_volume_expansion=True,
            opts=self._opts())

    def _create_grafana_secret(self) -> None:
        source = self._args.grafana_admin_from
        if source is not None:
            from components.services.secrets import external_secret

            obj = external_secret(GRAFANA_SECRET, self._args.namespace, source.remote_key,
                                  ["admin-user", "admin-password"], store=source.store)
            self.grafana_admin_password = None
            self.grafana_secret = k8s.apiextensions.CustomResource(
                f"{self._name}-grafana-admin-external", api_version=obj["apiVersion"],
                kind=obj["kind"], metadata=obj["metadata"], spec=obj["spec"],
                opts=self._opts(self.namespace, *source.depends_on))
            return
        password = self._args.grafana_admin_password
        if password is None:
            password = random.RandomPassword(
                f"{self._name}-grafana-admin", length=32, special=False,
                opts=pulumi.ResourceOptions(parent=self)).result
        self.grafana_admin_password = pulumi.Output.secret(password)
        self.grafana_secret = k8s.core.v1.Secret(
            f"{self._name}-grafana-admin",
            metadata=self._meta(GRAFANA_SECRET),
            type="Opaque",
            string_data={"admin-user": GRAFANA_ADMIN_USER,
                         "admin-password": self.grafana_admin_password},
            opts=self._opts(self.namespace))

    def _create_kube_prometheus_stack(self) -> None:
        a = self._args
        deps = [self.grafana_secret, *([self.storage_class] if self.storage_class else [])]
        self.kube_prometheus_stack = self._release(
            "kube-prometheus-stack", chart(KPS_CHART),
            kube_prometheus_stack_values(a.config, self.storage_class_name), *deps)

    def _create_dcgm_exporter(self) -> None:
        self.dcgm_exporter = None
        if not nvidia_pools(self._args.gpu_pools, self._catalog):
            return
        counters = k8s.core.v1.ConfigMap(
            f"{self._name}-dcgm-counters",
            metadata=self._meta(DCGM_COUNTERS_CONFIGMAP),
            data={"counters.csv": dcgm_counters_csv()},
            opts=self._opts(self.namespace))
        # After kube-prometheus-stack: the chart's ServiceMonitor needs its CRDs.
        self.dcgm_exporter = self._release("dcgm-exporter", chart(DCGM_CHART),
                                           dcgm_exporter_values(), counters,
                                           self.kube_prometheus_stack)

    def _create_dashboards(self) -> None:
        self.dashboards = {}
        for file_name, body in dashboards().items():
            self.dashboards[file_name] = k8s.core.v1.ConfigMap(
                f"{self._name}-dashboard-{Path(file_name).stem}",
                metadata=self._meta(configmap_name(file_name),
                                    labels={DASHBOARD_LABEL: "1"},
                                    annotations={DASHBOARD_FOLDER_ANNOTATION: DASHBOARD_FOLDER}),
                data={file_name: body},
                opts=self._opts(self.namespace))

    def _create_alerts(self) -> None:
        self.alert_rules = {}
        for stem, spec in alert_rule_files().items():
            self.alert_rules[stem] = k8s.apiextensions.CustomResource(
                f"{self._name}-alerts-{stem}",
                api_version="monitoring.coreos.com/v1", kind="PrometheusRule",
                metadata=self._meta(f"trainyard-{stem}", labels={"app.kubernetes.io/part-of":
                                                                 "trainyard"}),
                spec=spec,
                opts=self._opts(self.kube_prometheus_stack))

    def _create_training_pod_monitor(self) -> None:
        from components.services.trainjob import METRICS_LABEL, exporter

        self.training_pod_monitor = k8s.apiextensions.CustomResource(
            f"{self._name}-training-podmonitor",
            api_version="monitoring.coreos.com/v1", kind="PodMonitor",
            metadata=self._meta("trainyard-training",
                                labels={"app.kubernetes.io/part-of": "trainyard"}),
            spec=training_pod_monitor_spec(METRICS_LABEL, exporter()["port_name"]),
            opts=self._opts(self.kube_prometheus_stack))
