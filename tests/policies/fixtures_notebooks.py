"""Fixtures of the notebook rules (policies/notebooks.py); merged into policy_fixtures.FIXTURES."""

from __future__ import annotations

from policy_fixtures import Case, R

HELM = "kubernetes:helm.sh/v3:Release"


def hub(auth="generic-oauth", service=None, cull=None) -> dict:
    values = {"hub": {"config": {"JupyterHub": {"authenticator_class": auth}}},
              "proxy": {"service": service or {"type": "ClusterIP"}},
              "cull": cull or {"enabled": True, "timeout": 3600}}
    return R(HELM, "hub", {"chart": "jupyterhub", "version": "4.3.3", "namespace": "notebooks",
                           "repositoryOpts": {"repo": "https://hub.jupyter.org/helm-chart/"},
                           "values": values})


NOTEBOOK_FIXTURES = {
    "notebooks-real-auth": {
        "bad": [Case([hub(auth="dummy")], expect="hub"),
                Case([hub(auth="jupyterhub.auth.NullAuthenticator")], expect="hub",
                     label="null")],
        "good": [Case([hub()]), Case([hub(auth="github")], label="github"),
                 Case([hub(auth="dummy")], label="dev", config={"allowDummy": True})],
    },
    "notebooks-not-public": {
        "bad": [Case([hub(service={"type": "LoadBalancer"})], expect="hub")],
        "good": [Case([hub()]),
                 Case([hub(service={"type": "LoadBalancer", "annotations": {
                     "service.beta.kubernetes.io/aws-load-balancer-scheme": "internal"}})],
                      label="internal"),
                 Case([hub(service={"type": "LoadBalancer"})], label="allowed",
                      config={"allowPublic": True})],
    },
    "notebooks-culled": {
        "bad": [Case([hub(cull={"enabled": False})], expect="hub")],
        "good": [Case([hub()])],
    },
}
