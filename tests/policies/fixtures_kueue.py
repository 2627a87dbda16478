"""Fixtures of the Kueue rules (policies/queues.py); merged into policy_fixtures.FIXTURES."""

from __future__ import annotations

from typing import Optional

from policy_fixtures import NG, QUOTA, Case, R, ng_props, ns

API = "kueue.x-k8s.io/v1beta2"
CQ = f"kubernetes:{API}:ClusterQueue"
RF = f"kubernetes:{API}:ResourceFlavor"
LQ = f"kubernetes:{API}:LocalQueue"
COHORT = f"kubernetes:{API}:Cohort"
NODEPOOL = "kubernetes:karpenter.sh/v1:NodePool"
POOL = "trainyard.io/pool"
GPU, EFA, HP = "nvidia.com/gpu", "vpc.amazonaws.com/efa", "hugepages-2Mi"
EFA_COVERED = ["cpu", "memory", GPU, EFA, HP]


def pool_ng(name: str = "a100", max_size: int = 2, efa: bool = True) -> dict:
    """A p4d node group (8 GPUs a node) labelled as pool `name`."""
    labels = {POOL: name, "trainyard.io/accelerator": "nvidia"}
    if efa:
        labels["trainyard.io/efa"] = "true"
    return R(NG, f"ng-{name}", ng_props(lt=None, labels=labels,
                                        scalingConfig={"minSize": 0, "desiredSize": 0,
                                                       "maxSize": max_size}))


def nodepool(name: str = "spot", gpu_limit: Optional[str] = "8") -> dict:
    labels = {POOL: name, "trainyard.io/accelerator": "nvidia"}
    spec = {"template": {"metadata": {"labels": labels}, "spec": {"requirements": []}}}
    if gpu_limit is not None:
        spec["limits"] = {GPU: gpu_limit, "cpu": "1000"}
    return R(NODEPOOL, f"np-{name}", {"apiVersion": "karpenter.sh/v1", "kind": "NodePool",
                                      "metadata": {"name": name}, "spec": spec})


def flavor(pool: str = "a100") -> dict:
    return R(RF, f"rf-{pool}", {"apiVersion": API, "kind": "ResourceFlavor",
                                "metadata": {"name": pool},
                                "spec": {"nodeLabels": {POOL: pool}}})


def quotas(covered: list, flavors: dict) -> list:
    """resourceGroups: flavor -> {resource: (nominal, borrowingLimit or None)}; resources not
    given get 0."""
    out = []
    for name, res in flavors.items():
        entries = []
        for r in covered:
            nominal, limit = res.get(r, (0, None))
            e = {"name": r, "nominalQuota": str(nominal)}
            if limit is not None:
                e["borrowingLimit"] = str(limit)
            entries.append(e)
        out.append({"name": name, "resources": entries})
    return [{"coveredResources": list(covered), "flavors": out}]


def cluster_queue(team: str = "research", flavors: Optional[dict] = None,
                  covered: Optional[list] = None, cohort: Optional[str] = "trainyard",
                  selector: Optional[dict] = None) -> dict:
    flavors = flavors if flavors is not None else {"a100": {GPU: (8, 8)}}
    spec = {"namespaceSelector": selector if selector is not None else
            {"matchLabels": {"kubernetes.io/metadata.name": team}},
            "resourceGroups": quotas(covered or EFA_COVERED, flavors)}
    if cohort:
        spec["cohortName"] = cohort
    return R(CQ, f"cq-{team}", {"apiVersion": API, "kind": "ClusterQueue",
                                "metadata": {"name": team}, "spec": spec})


def local_queue(team: str = "research", target: Optional[str] = None) -> dict:
    return R(LQ, f"lq-{team}", {"apiVersion": API, "kind": "LocalQueue",
                                "metadata": {"name": "gpu", "namespace": team},
                                "spec": {"clusterQueue": target or team}})


def cohort_obj(flavors: dict, covered: Optional[list] = None) -> dict:
    return R(COHORT, "cohort", {"apiVersion": API, "kind": "Cohort",
                                "metadata": {"name": "trainyard"},
                                "spec": {"resourceGroups": quotas(covered or EFA_COVERED,
                                                                  flavors)}})


def gpu_quota(team: str = "research", gpus: int = 16) -> dict:
    return R(QUOTA, f"quota-{team}", {"metadata": {"name": "gpu-quota", "namespace": team},
                                      "spec": {"hard": {f"requests.{GPU}": str(gpus)}}})


TEAM = ns("research", "baseline", team=True)
BASE = [TEAM, pool_ng(), flavor(), local_queue()]

KUEUE_FIXTURES = {
    "team-queue-covers-flavors": {
        "bad": [
            Case(BASE, "ns-research", label="no ClusterQueue"),
            Case(BASE[:-1] + [cluster_queue()], "ns-research", label="no LocalQueue"),
            Case(BASE + [cluster_queue(selector={"matchLabels": {"team": "other"}})],
                 "ns-research", label="selector admits another namespace"),
            Case(BASE + [pool_ng("h100", efa=False), flavor("h100"), cluster_queue()],
                 "cq-research", label="a pool without a flavor in the queue"),
            Case(BASE + [nodepool("spot"), cluster_queue()], "cq-research",
                 label="a Karpenter pool without any flavor"),
            Case(BASE + [cluster_queue(covered=["cpu", "memory", GPU])], "cq-research",
                 label="EFA pool, no EFA quota"),
        ],
        "good": [
            Case(BASE + [cluster_queue()]),
            Case(BASE + [pool_ng("h100"), flavor("h100"), cluster_queue()],
                 config={"teamPools": {"research": ["a100"]}}, label="pool not allowed"),
            Case(BASE + [pool_ng("small", efa=False), flavor("small"),
                         cluster_queue(flavors={"a100": {GPU: (8, 0)}, "small": {GPU: (8, 0)}})],
                 label="two pools"),
        ],
    },
    "team-quota-admits-queue": {
        "bad": [
            Case([TEAM, gpu_quota(gpus=8), cluster_queue(flavors={"a100": {GPU: (8, 8)}}),
                  cohort_obj({"a100": {GPU: (8, None)}})], "quota-research",
                 label="borrowing beyond the quota"),
            Case([TEAM, gpu_quota(gpus=8), cluster_queue(flavors={"a100": {GPU: (8, None)}}),
                  cohort_obj({"a100": {GPU: (24, None)}})], "quota-research",
                 label="no borrowing limit: the whole cohort"),
        ],
        "good": [
            Case([TEAM, gpu_quota(gpus=16), cluster_queue(flavors={"a100": {GPU: (8, 8)}}),
                  cohort_obj({"a100": {GPU: (8, None)}})]),
            Case([TEAM, gpu_quota(gpus=8), cluster_queue(flavors={"a100": {GPU: (8, 100)}},
                                                          cohort=None)],
                 label="no cohort, nothing to borrow"),
            Case([TEAM, gpu_quota(gpus=10), cluster_queue(flavors={"a100": {GPU: (8, 100)}}),
                  cohort_obj({"a100": {GPU: (2, None)}})], label="cohort holds less"),
        ],
    },
    "queue-quota-fits-capacity": {
        "bad": [
            Case([pool_ng(max_size=2), flavor(),
                  cluster_queue(flavors={"a100": {GPU: (24, None)}})], "cq-research",
                 label="node group at maxSize"),
            Case([nodepool("spot", "8"), flavor("spot"),
                  cluster_queue("a", flavors={"spot": {GPU: (8, None)}}),
                  cluster_queue("b", flavors={"spot": {GPU: (16, None)}})], "cq-b",
                 label="NodePool at its GPU limit"),
            Case([pool_ng(max_size=2), flavor(), pool_ng("big", max_size=10), flavor("big"),
                  cluster_queue(flavors={"a100": {GPU: (24, None)}})], "cq-research",
                 label="fits in total, not in the pool"),
        ],
        "good": [
            Case([pool_ng(max_size=2), flavor(), nodepool("spot", "8"), flavor("spot"),
                  cluster_queue(flavors={"a100": {GPU: (16, None)}, "spot": {GPU: (8, None)}})]),
            Case([nodepool("spot", None), flavor("spot"),
                  cluster_queue(flavors={"spot": {GPU: (800, None)}})],
                 label="no GPU limit: unbounded"),
        ],
    },
}
