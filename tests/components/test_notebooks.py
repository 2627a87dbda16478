"""Notebooks: `trainyard:notebooks` parsed with one-line errors, the JupyterHub values the
component computes (profiles per team, culling, auth, storage), the profile filter the hub runs
(executed here against fake users), and the objects the prod plan declares."""

from __future__ import annotations

import copy
import types
from pathlib import Path

import pytest

from components.compute.catalog import load_catalog
from components.config import ConfigError, load
from components.services import notebooks as nb
from tests.conftest import stack_raw

ROOT = Path(__file__).resolve().parents[2]


def raw(stack: str = "prod") -> dict:
    return stack_raw(stack)


def prod_cfg():
    return load(raw(), "prod")


def values(cfg=None):
    cfg = cfg or prod_cfg()
    return hub_values_for(cfg)


def hub_values_for(cfg):
    return nb.hub_values(cfg.notebooks, [t.name for t in cfg.teams],
                         {p.name: p for p in cfg.gpu_pools}, {"trainyard.io/pool": "system"})


def with_notebooks(edit, stack="prod"):
    r = copy.deepcopy(raw(stack))
    section = r.setdefault("trainyard:notebooks", {"image": "r/x:1"})
    edit(section)
    return r


@pytest.mark.parametrize("edit,needle", [
    (lambda s: s.update(auth={"type": "dummy"}),
     "auth.type: dummy authentication (any name, no password) is for dev stacks only"),
    (lambda s: s.update(gpuPool="x100"), "gpuPool: 'x100' is not a pool of this stack"),
    (lambda s: s.update(gpuCullIdleMinutes=90), "is longer than cullIdleMinutes 60"),
    (lambda s: s.update(image="repo/notebook:latest"), "uses the moving tag :latest"),
    (lambda s: s["auth"].update(tokenUrl="http://login/token"), "is not an https:// URL"),
    (lambda s: s["auth"].pop("clientSecretName"), "auth.clientSecretName: is required"),
    (lambda s: s.update(memory="8GB"), "is not a memory quantity"),
    (lambda s: s.update(maxUser=3), "trainyard:notebooks.maxUser"),
])
def test_bad_notebook_config_is_one_line(edit, needle):
    with pytest.raises(ConfigError) as e:
        load(with_notebooks(edit), "prod")
    assert len(e.value.problems) == 1, e.value.problems
    assert needle in e.value.problems[0]


def test_dummy_auth_is_fine_in_dev():
    cfg = load(with_notebooks(lambda s: s.update(auth={"type": "dummy"}), "dev"), "dev")
    assert cfg.notebooks.enabled and cfg.notebooks.auth.kind == "dummy"


def test_profiles_per_team_gpu_ones_queued_tolerating_and_culled_sooner():
    cfg = prod_cfg()
    profs = nb.profiles(cfg.notebooks, ["research", "applied"],
                        {p.name: p for p in cfg.gpu_pools}, load_catalog())
    assert [p["slug"] for p in profs] == ["research-cpu", "research-gpu", "applied-cpu",
                                          "applied-gpu"]
    gpu = next(p for p in profs if p["slug"] == "research-gpu")["kubespawner_override"]
    assert gpu["namespace"] == "research" and gpu["service_account"] == "notebook"
    assert gpu["extra_resource_limits"] == {"nvidia.com/gpu": "1"}
    assert gpu["node_selector"] == {"trainyard.io/pool": "eval-spot"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in \
        gpu["tolerations"]
    assert gpu["extra_labels"] == {"kueue.x-k8s.io/queue-name": "gpu"}
    assert "--ServerApp.shutdown_no_activity_timeout=1200" in gpu["args"]
    cpu = next(p for p in profs if p["slug"] == "research-cpu")["kubespawner_override"]
    assert "extra_resource_limits" not in cpu and cpu["cpu_limit"] == 2.0


def test_values_private_culled_secret_from_the_store_home_on_efs():
    v = values()
    assert v["proxy"]["service"]["type"] == "ClusterIP"
    assert v["cull"]["enabled"] and v["cull"]["timeout"] == 3600
    assert v["hub"]["config"]["JupyterHub"]["active_server_limit"] == 20
    assert v["hub"]["config"]["JupyterHub"]["authenticator_class"] == "generic-oauth"
    assert "client_secret" not in str(v["hub"]["config"])
    assert v["hub"]["extraEnv"]["OAUTH_CLIENT_SECRET"]["valueFrom"]["secretKeyRef"]["name"] \
        == nb.OAUTH_SECRET
    assert v["singleuser"]["storage"]["dynamic"]["storageClass"] == "trainyard-efs"
    assert v["singleuser"]["uid"] == 1000  # non-root; each claim is its own EFS access point
    assert v["singleuser"]["networkPolicy"]["egressAllowRules"]["cloudMetadataServer"] is False
    assert v["prePuller"]["continuous"]["enabled"] is False
    assert v["scheduling"]["userPlaceholder"]["enabled"] is False


def test_public_only_when_asked():
    cfg = load(with_notebooks(lambda s: s.update(public=True)), "prod")
    v = hub_values_for(cfg)
    assert v["proxy"]["service"]["type"] == "LoadBalancer"


def _run_filter(v, user_groups, admin=False):
    code = v["hub"]["extraConfig"]["trainyard-profiles"]
    c = types.SimpleNamespace(KubeSpawner=types.SimpleNamespace())
    exec(compile(code, "extraConfig", "exec"), {"c": c})
    user = types.SimpleNamespace(admin=admin,
                                 groups=[types.SimpleNamespace(name=g) for g in user_groups])
    return [p["slug"] for p in c.KubeSpawner.profile_list(types.SimpleNamespace(user=user))]


def test_the_hub_shows_each_team_only_its_own_profiles():
    v = values()
    assert _run_filter(v, ["research"]) == ["research-cpu", "research-gpu"]
    assert _run_filter(v, ["applied", "other"]) == ["applied-cpu", "applied-gpu"]
    assert _run_filter(v, []) == []
    assert len(_run_filter(v, [], admin=True)) == 4
    # profiles handed to KubeSpawner carry no trainyard-only keys
    c = types.SimpleNamespace(KubeSpawner=types.SimpleNamespace())
    exec(compile(v["hub"]["extraConfig"]["trainyard-profiles"], "x", "exec"), {"c": c})
    user = types.SimpleNamespace(admin=True, groups=[])
    assert all("trainyard_team" not in p for p in
               c.KubeSpawner.profile_list(types.SimpleNamespace(user=user)))


def test_github_teams_are_org_colon_team():
    cfg = load(with_notebooks(lambda s: s.update(auth={
        "type": "github", "clientId": "x", "clientSecretName": "s",
        "callbackUrl": "https://nb.example.com/hub/oauth_callback", "organization": "acme"})),
        "prod")
    v = hub_values_for(cfg)
    assert v["hub"]["config"]["GitHubOAuthenticator"]["allowed_organizations"] == [
        "acme:research", "acme:applied"]
    assert _run_filter(v, ["acme:research"]) == ["research-cpu", "research-gpu"]


def test_prod_plan_declares_hub_team_access_and_identity(plan_for):
    plan = plan_for("prod")
    rs = [r for r in plan["resources"] if "Notebooks" in r["urn"]]
    by_type: dict[str, list] = {}
    for r in rs:
        by_type.setdefault(r["type"], []).append(r)
    (release,) = by_type["kubernetes:helm.sh/v3:Release"]
    assert release["inputs"]["chart"] == "jupyterhub"
    assert release["inputs"]["version"] == "4.3.3"
    bindings = by_type["kubernetes:rbac.authorization.k8s.io/v1:RoleBinding"]
    assert {(b["inputs"]["metadata"]["namespace"], b["inputs"]["subjects"][0]["name"])
            for b in bindings} == {("research", "hub"), ("research", "notebook"),
                                   ("applied", "hub"), ("applied", "notebook")}
    roles = by_type["kubernetes:rbac.authorization.k8s.io/v1:Role"]
    verbs = {v for r in roles for rule in r["inputs"]["rules"] for v in rule["verbs"]}
    assert "*" not in verbs and not any("secrets" in rule["resources"] for r in roles
                                        for rule in r["inputs"]["rules"])
    assoc = by_type["aws:eks/podIdentityAssociation:PodIdentityAssociation"]
    assert {a["inputs"]["namespace"] for a in assoc} == {"research", "applied"}
    assert all(a["inputs"]["serviceAccount"] == "notebook" for a in assoc)
    (es,) = [r for r in rs if r["inputs"].get("kind") == "ExternalSecret"]
    assert es["inputs"]["spec"]["data"][0]["remoteRef"]["key"] == "trainyard/prod/notebooks-oauth"


def test_every_notebook_mounts_the_stack_outputs_job_render_reads(plan_for):
    """`trainyard job render --outputs /etc/trainyard/outputs.json --submit` from a notebook:
    the ConfigMap holds the deployed outputs job rendering needs, mounted in every profile."""
    plan = plan_for("prod")
    cms = [r for r in plan["resources"] if r["type"] == "kubernetes:core/v1:ConfigMap"
           and r["inputs"]["metadata"].get("name") == nb.OUTPUTS_CONFIGMAP]
    assert {c["inputs"]["metadata"]["namespace"] for c in cms} == {"research", "applied"}
    import json
    outputs = json.loads(cms[0]["inputs"]["data"]["outputs.json"])
    assert {"checkpointsBucket", "trainingRuntimes", "trainingServiceAccount"} <= set(outputs)
    profs = nb.profiles(prod_cfg().notebooks, ["research"],
                        {p.name: p for p in prod_cfg().gpu_pools}, load_catalog())
    assert all(p["kubespawner_override"]["volume_mounts"][0]["mountPath"] == "/etc/trainyard"
               for p in profs)


def test_cost_prices_gpu_notebooks_at_the_server_limit(plan_for):
    from trainyard.cost import estimate

    est = estimate(plan_for("prod"))
    nbk = est["notebooks"]
    pool = next(p for p in est["pools"] if p["pool"] == "eval-spot")
    assert nbk["max_servers"] == 20 and nbk["gpus_per_server"] == 1
    assert nbk["hourly_at_max"] == pytest.approx(20 * pool["usd_per_gpu_hour"]["effective"],
                                                 rel=1e-3)
