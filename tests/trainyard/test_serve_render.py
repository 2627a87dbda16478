"""`trainyard serve render MODEL --stack S`: one served model's objects as the stack creates them,
each validated (InferenceServices with the kserve SDK's models, ScaledObjects against the KEDA
CRD excerpt in tests/components/data/crds/, built-in kinds against the Kubernetes schema, strict),
the same as the plan's; an A/B split renders two variants behind one weighted forward action;
bad input is one line, exit 2."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.components.kserve_models import kserve_problems
from trainyard.cli import main

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "tests" / "components" / "data" / "crds" / "keda.sh_scaledobjects_v1alpha1.json"
SCALEDOBJECT = "kubernetes:keda.sh/v1alpha1:ScaledObject"
ISVC = "kubernetes:serving.kserve.io/v1beta1:InferenceService"


def closed(schema):
    """Objects without x-kubernetes-preserve-unknown-fields refuse unknown fields."""
    if isinstance(schema, dict):
        out = {k: closed(v) for k, v in schema.items()}
        if out.get("type") == "object" and "properties" in out and \
                "additionalProperties" not in out and \
                not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [closed(v) for v in schema]
    return schema


SCALEDOBJECT_SCHEMA = jsonschema.Draft7Validator(closed(json.loads(CRD.read_text())))


def scaledobject_problems(obj: dict) -> list[str]:
    return [f"{'/'.join(map(str, e.path))}: {e.message}"
            for e in SCALEDOBJECT_SCHEMA.iter_errors(obj)]


def render(capsys, *argv) -> tuple[int, str, str]:
    code = main(["serve", "render", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def prod_objects(capsys, *argv) -> list[dict]:
    code, out, err = render(capsys, "llm", *argv)
    assert code == 0, err
    return list(yaml.safe_load_all(out))


def valid(obj: dict) -> None:
    kind = obj["kind"]
    if kind in ("InferenceService", "ClusterServingRuntime"):
        assert kserve_problems(obj) == [], obj["metadata"]["name"]
    elif kind == "ScaledObject":
        assert scaledobject_problems(obj) == [], obj["metadata"]["name"]
    elif obj["apiVersion"] in ("v1", "networking.k8s.io/v1"):
        kubernetes_validate.validate(obj, "1.33", strict=True)
    else:
        assert kind in ("PodMonitor", "PrometheusRule"), kind  # operator CRDs, not kept here


def test_prod_llm_renders_every_object_valid(capsys):
    docs = prod_objects(capsys, "--stack", "prod")
    kinds = [d["kind"] for d in docs]
    assert kinds[:5] == ["ServiceAccount", "InferenceService", "ScaledObject", "Ingress",
                         "PrometheusRule"]
    assert kinds.count("NetworkPolicy") == 6 and kinds[-1] == "PodMonitor"
    for d in docs:
        valid(d)
    isvc, so, ing = docs[1], docs[2], docs[3]
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == \
        "s3://${checkpointsBucket}/models/llm-125m/2026-11-20/"
    assert so["spec"]["scaleTargetRef"]["name"] == "llm-predictor"
    assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]) == (2, 6)
    assert ing["spec"]["rules"][0]["host"] == "llm.serving.ml.example.internal"
    assert ing["metadata"]["annotations"]["alb.ingress.kubernetes.io/scheme"] == "internal"


def test_json_is_a_list_of_the_same_objects(capsys):
    docs = prod_objects(capsys, "--stack", "prod")
    code, out, err = render(capsys, "llm", "--stack", "prod", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert (doc["apiVersion"], doc["kind"]) == ("v1", "List") and doc["items"] == docs


def test_render_is_what_the_plan_creates(capsys, plan_for):
    """The InferenceService and ScaledObject bodies equal the plan's (the bucket aside, a
    placeholder here and the mock's name there), and every ScaledObject of the plan validates
    against the CRD."""
    docs = {(d["kind"], d["metadata"]["name"]): d for d in prod_objects(capsys, "--stack", "prod")}
    plan = plan_for("prod")
    planned = {r["type"]: r["inputs"] for r in plan["resources"]
               if r["type"] in (SCALEDOBJECT, ISVC) and r["inputs"]["metadata"]["name"] in
               ("llm", "llm-predictor")}  # prod also serves `vision`
    assert set(planned) == {SCALEDOBJECT, ISVC}
    for r in (r for r in plan["resources"] if r["type"] == SCALEDOBJECT):
        assert scaledobject_problems(r["inputs"]) == []
    so = planned[SCALEDOBJECT]
    assert so["spec"] == docs[("ScaledObject", "llm")]["spec"]
    isvc = copy.deepcopy(planned[ISVC]["spec"])
    uri = isvc["predictor"]["model"].pop("storageUri")
    rendered = copy.deepcopy(docs[("InferenceService", "llm")]["spec"])
    assert uri.endswith(rendered["predictor"]["model"].pop("storageUri").split("}", 1)[1])
    assert isvc == rendered


def test_the_crd_check_has_teeth(capsys):
    so = prod_objects(capsys, "--stack", "prod")[2]
    for mutate in (lambda s: s.update(minReplicas=1),                       # unknown field
                   lambda s: s["scaleTargetRef"].pop("name"),               # required
                   lambda s: s["triggers"][0]["metadata"].update(threshold=16),  # not a string
                   lambda s: s["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
                   ["scaleDown"].update(stabilizationWindowSeconds=7200)):  # over 3600
        bad = copy.deepcopy(so)
        mutate(bad["spec"])
        assert scaledobject_problems(bad)


def ab_stack(tmp_path) -> Path:
    doc = yaml.safe_load((ROOT / "stacks" / "Pulumi.prod.yaml").read_text())
    models = doc["config"]["trainyard:serving"]["models"]
    m = models[0]  # llm; vision is dropped so the split has the pool to itself
    models[1:] = []
    del m["source"]
    m["traffic"] = {"a": "models/llm-125m/2026-11-20/", "b": "models/llm-125m/2026-11-27/",
                    "weights": {"a": 90, "b": 10}}
    m["replicas"] = {"min": 1, "max": 3}  # per variant: 6 GPUs at max, the pool's 6 nodes
    path = tmp_path / "Pulumi.ab.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_an_ab_split_renders_two_variants_behind_one_weighted_action(capsys, tmp_path):
    docs = prod_objects(capsys, "--stack-file", str(ab_stack(tmp_path)))
    for d in docs:
        valid(d)
    isvcs = [d for d in docs if d["kind"] == "InferenceService"]
    assert [d["metadata"]["name"] for d in isvcs] == ["llm-a", "llm-b"]
    assert {d["metadata"]["labels"]["servedModelName"] for d in isvcs} == {"llm"}
    assert [d["spec"]["scaleTargetRef"]["name"] for d in docs if d["kind"] == "ScaledObject"] \
        == ["llm-a-predictor", "llm-b-predictor"]
    (ing,) = [d for d in docs if d["kind"] == "Ingress"]
    action = json.loads(ing["metadata"]["annotations"]["alb.ingress.kubernetes.io/actions.llm-split"])
    assert [(g["serviceName"], g["weight"]) for g in action["forwardConfig"]["targetGroups"]] == \
        [("llm-a-predictor", 90), ("llm-b-predictor", 10)]
    backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "llm-split", "port": {"name": "use-annotation"}}


@pytest.mark.parametrize("argv, message", [
    (["nope", "--stack", "prod"], "error: unknown model 'nope' in stack 'prod' (served: llm, vision)"),
    (["llm", "--stack", "dev"], "error: stack 'dev' serves no models (trainyard:serving.enabled "
                                "is false)"),
    (["llm", "--stack", "nosuch"], "error: unknown stack 'nosuch'"),
])
def test_bad_input_is_one_line_exit_2(capsys, argv, message):
    code, out, err = render(capsys, *argv)
    assert code == 2 and not out
    assert err.startswith(message) and err.count("\n") == 1, err


def test_a_bad_serving_key_is_named(capsys, tmp_path):
    doc = yaml.safe_load((ROOT / "stacks" / "Pulumi.prod.yaml").read_text())
    doc["config"]["trainyard:serving"]["models"][0]["replicas"] = {"min": 3, "max": 2}
    path = tmp_path / "Pulumi.bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    code, out, err = render(capsys, "llm", "--stack-file", str(path))
    assert code == 2 and not out
    assert err.count("\n") == 1 and "trainyard:serving.models[0].replicas.min" in err, err


# ----------------------------------------------------------------------------------------------
# `trainyard cost` and `trainyard review` of served models
# ----------------------------------------------------------------------------------------------
def test_cost_prices_the_inference_pool_at_the_models_minimum(plan_for):
    """The inference pool is a Karpenter pool (no standing size of its own), but the models'
    replicas.min (llm 2, vision 1) keep three 1-GPU nodes up: min and desired are 3 nodes, not
    0; each model is priced at replicas.min and replicas.max."""
    from trainyard.cost import estimate

    plan = plan_for("prod")
    est = estimate(plan)
    (pool,) = [p for p in est["pools"] if p["pool"] == "inference"]
    assert pool["provisioner"] == "karpenter"
    assert pool["sizes"] == {"min": 3, "desired": 3, "max": 8}
    node = pool["price_per_node_hour"]["effective"]
    llm, vision = est["serving"]["models"]
    assert vision["model"] == "vision" and vision["nodes"] == {"min": 1, "max": 2}
    assert (llm["model"], llm["pool"], llm["variants"]) == ("llm", "inference", ["llm"])
    assert llm["nodes"] == {"min": 2, "max": 6} and llm["gpus"] == {"min": 2, "max": 6}
    assert llm["hourly"]["min"] == pytest.approx(2 * node, abs=1e-3)
    assert llm["hourly"]["max"] == pytest.approx(6 * node, abs=1e-3)
    assert pool["hourly"]["min"]["effective"] == pytest.approx(
        llm["hourly"]["min"] + vision["hourly"]["min"], abs=1e-3)
    # Without served models the same pool stands at 0.
    plan["resources"] = [r for r in plan["resources"]
                         if r["type"] != "kubernetes:serving.kserve.io/v1beta1:InferenceService"]
    bare = estimate(plan)
    (pool,) = [p for p in bare["pools"] if p["pool"] == "inference"]
    assert pool["sizes"]["min"] == 0 and bare["serving"] is None
    assert est["totals"]["min"]["hourly"] > bare["totals"]["min"]["hourly"]


def test_cost_report_shows_serving_at_min_and_max(capsys):
    assert main(["cost", "--stack", "prod"]) == 0
    out = capsys.readouterr().out
    assert "Served models" in out
    (row,) = [ln for ln in out.splitlines() if ln.strip().startswith("llm ")]
    assert "inference" in row and "2-6" in row


def _ingress(traffic):
    import dataclasses

    from components.serving import objects
    from trainyard.synth import load_config

    serving = load_config("prod").serving
    model = dataclasses.replace(serving.models[0], source="" if traffic else "models/x/1/",
                                traffic=traffic)
    return {"type": "kubernetes:networking.k8s.io/v1:Ingress", "name": "ing", "urn": "urn::ing",
            "inputs": objects.ingress(model, serving, ["subnet-1"], {}, "10.0.0.0/16")}


def test_review_names_a_traffic_split_change():
    from components.config.types import TrafficSplit
    from trainyard.review_serving import serving_changes

    def split(a, b):
        return {"resources": [_ingress(TrafficSplit(a="models/x/1/", b="models/x/2/",
                                                    weight_a=a, weight_b=b))]}
    single = {"resources": [_ingress(None)]}
    assert serving_changes(split(90, 10), split(50, 50)) == [
        "model llm: traffic split llm-a 90% / llm-b 10% → llm-a 50% / llm-b 50%"]
    assert serving_changes(single, split(90, 10)) == [
        "model llm: A/B split started: traffic split llm-a 90% / llm-b 10%"]
    assert serving_changes(split(0, 100), single) == [
        "model llm: A/B split ended (was llm-a 0% / llm-b 100%); one variant takes all traffic"]
    assert serving_changes(split(90, 10), split(90, 10)) == []


def test_review_report_has_a_serving_section(plan_for):
    """prod: llm's Ingress becomes a 90/10 split and its replicas 2-6 -> 1-4; the report says
    so in its own section."""
    from components.compute.catalog import load_catalog
    from components.config.types import TrafficSplit
    from trainyard import review as R

    base = plan_for("prod")
    head = copy.deepcopy(base)
    for r in head["resources"]:
        if r["type"] == "kubernetes:networking.k8s.io/v1:Ingress" and \
                r["inputs"]["metadata"]["name"] == "llm":
            r["inputs"]["metadata"]["annotations"] = _ingress(TrafficSplit(
                a="models/x/1/", b="models/x/2/", weight_a=90, weight_b=10)
            )["inputs"]["metadata"]["annotations"]
        if r["type"] == ISVC and r["inputs"]["metadata"]["name"] == "llm":
            r["inputs"]["spec"]["predictor"].update(minReplicas=1, maxReplicas=4)

    def side(p):
        return R.Side(present=True, plan=p, violations=[], policies_run=1,
                      monthly={"desired": 0.0, "max": 0.0})
    sr = R.build_stack_review("prod", side(base), side(head), load_catalog())
    assert sr.serving == ["model llm: A/B split started: traffic split llm-a 90% / llm-b 10%",
                          "model llm: llm replicas 2-6 → 1-4"]
    assert sr.to_json()["serving"] == sr.serving
    review = R.Review("origin/main", "a" * 40, "", "working tree", "b" * 40, "", False, [sr], 0.1)
    text = R.render_markdown(review)
    assert "**Serving** (traffic split, exports, replicas)" in text
    assert "- model llm: A/B split started: traffic split llm-a 90% / llm-b 10%" in text
