"""Serving: `trainyard:serving` parsing (one-line errors with key paths), the objects of
components/serving/objects.py (InferenceServices checked with the kserve SDK's own models), the
read-only model role and the load balancer controller's policy."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from components.config import load
from components.config.types import ServedModelConfig, ServingAutoscaling, TrafficSplit
from components.serving import objects
from components.serving.alb_controller import controller_policy
from tests.components.kserve_models import kserve_problems
from tests.conftest import section_problems, stack_raw

ROOT = Path(__file__).resolve().parents[2]


def prod_raw() -> dict:
    return stack_raw("prod")


def problems(serving: dict) -> list[str]:
    return [p for p in section_problems("prod", "serving", serving)
            if p.startswith("trainyard:serving")]


def model(**over) -> dict:
    m = {"name": "llm", "runtime": "huggingface-vllm", "source": "models/llm/v1/",
         "pool": "inference"}
    m.update(over)
    return m


def serving(*models: dict, **over) -> dict:
    s = {"enabled": True, "ingress": copy.deepcopy(prod_raw()["trainyard:serving"]["ingress"]),
         "models": list(models)}
    s.update(over)
    return s


def test_committed_prod_serves_the_llm_and_vision_exports():
    cfg = load(prod_raw(), "prod").serving
    assert cfg.enabled and [m.name for m in cfg.models] == ["llm", "vision"]
    llm, vision = cfg.models
    assert llm.runtime == "huggingface-vllm" and llm.source.startswith("models/") and llm.pool
    assert vision.runtime == "triton" and vision.pool == llm.pool


@pytest.mark.parametrize("serving_cfg, where, text", [
    (serving(model(runtime="tgi")), "models[0].runtime", "is not one of"),
    (serving(model(source="s3://x/models/llm/")), "models[0].source", "export prefix"),
    (serving(model(source="checkpoints/x/")), "models[0].source", "export prefix"),
    (serving(model(pool="nope")), "models[0].pool", "is not a GPU pool"),
    (serving(model(pool="")), "models[0].pool", "is required for the huggingface-vllm"),
    (serving(model(replicas={"min": 3, "max": 2})), "models[0].replicas.min", "above"),
    (serving(model(replicas={"min": 0, "max": 2})), "models[0].replicas.min", "below"),
    (serving(model(autoscaling={"signal": "cpu"})), "models[0].autoscaling.signal",
     "is not a signal"),
    (serving(model(runtime="huggingface-cpu", pool="", resources={"gpus": 1})),
     "models[0].resources.gpus", "must be 0"),
    (serving(model(resources={"gpus": 2})), "models[0].resources.gpus", "do not fit"),
    (serving(model(resources={"memory": "lots"})), "models[0].resources.memory", "quantity"),
    (serving(model(replicas={"min": 1, "max": 99})), "models", "need 99 GPUs"),
    (serving(model(colour="red")), "models[0].colour", "unknown key"),
    (serving(model(traffic={"a": "models/a/", "b": "models/b/",
                            "weights": {"a": 90, "b": 10}})), "models[0].source",
     "goes with traffic"),
    (serving(model(source=None, traffic={"a": "models/a/", "b": "models/b/",
                                         "weights": {"a": 90, "b": 20}})),
     "models[0].traffic.weights", "sum to 100"),
    (serving(model(source=None, traffic={"a": "models/a/", "b": "models/a/",
                                         "weights": {"a": 50, "b": 50}})),
     "models[0].traffic.b", "same source"),
    (serving(model(), model()), "models", "duplicate model names"),
    (serving(model(), ingress={"scheme": "public"}), "ingress.scheme", "is not one of"),
    (serving(model(), ingress={"scheme": "internal", "domain": "x.example.internal"}),
     "ingress.certificateArn", "is required"),
    (serving(model(), ingress={"scheme": "internet-facing", "domain": "x.example.internal",
                               "certificateArn": prod_raw()["trainyard:serving"]["ingress"][
                                   "certificateArn"]}), "ingress.allowedCidrs", "is required"),
    (serving(model(), ingress={"allowedCidrs": ["0.0.0.0/0"]}), "ingress.allowedCidrs[0]",
     "whole internet"),
    (serving(namespace="research"), "namespace", "team namespace"),
    (serving(namespace="kube-system"), "namespace", "not a usable"),
])
def test_bad_serving_config_is_one_line_naming_the_key(serving_cfg, where, text):
    found = problems(serving_cfg)
    assert any(p.startswith(f"trainyard:serving.{where}: ") and text in p for p in found), found
    assert all("\n" not in p for p in found)


def test_traffic_split_and_disabled_stacks_parse():
    raw = prod_raw()
    raw["trainyard:serving"] = serving(model(source=None, traffic={
        "a": "models/llm/v1/", "b": "models/llm/v2/", "weights": {"a": 90, "b": 10}}))
    (m,) = load(raw, "prod").serving.models
    assert m.traffic == TrafficSplit("models/llm/v1/", "models/llm/v2/", 90, 10)
    assert m.sources == ("models/llm/v1/", "models/llm/v2/")
    raw["trainyard:serving"] = {"enabled": False}
    assert load(raw, "prod").serving.models == ()


# ----------------------------------------------------------------------------------------------
# Objects
# ----------------------------------------------------------------------------------------------
def split_model() -> ServedModelConfig:
    return ServedModelConfig(name="chat", runtime="huggingface-vllm", pool="inference",
                             traffic=TrafficSplit("models/chat/v1/", "models/chat/v2/", 80, 20))


def configs():
    cfg = load(prod_raw(), "prod").serving
    return cfg, [*cfg.models, split_model(),
                 ServedModelConfig(name="small", runtime="huggingface-cpu",
                                   source="models/small/v1/",
                                   autoscaling=ServingAutoscaling("cpu", 70)),
                 ServedModelConfig(name="vit", runtime="triton", source="models/vit/v1/",
                                   pool="inference")]


def test_every_inference_service_is_valid_for_the_kserve_sdk():
    cfg, models = configs()
    for m in models:
        for isvc, source in objects.variants(m).items():
            body = objects.inference_service(m, isvc, source, cfg.namespace, "bucket")
            assert kserve_problems(body) == [], (isvc, kserve_problems(body))
            ann = body["metadata"]["annotations"]
            assert ann["serving.kserve.io/deploymentMode"] == "Standard"
            assert ann["serving.kserve.io/autoscalerClass"] == "external"
    for key in objects.runtimes():
        assert kserve_problems(objects.cluster_serving_runtime(key)) == []


def test_the_sdk_check_has_teeth():
    cfg, (m, *_) = configs()
    body = objects.inference_service(m, m.name, m.source, cfg.namespace, "bucket")
    bad = copy.deepcopy(body)
    bad["spec"]["predictor"]["modle"] = bad["spec"]["predictor"].pop("model")
    assert any("modle" in p for p in kserve_problems(bad))
    runtime = objects.cluster_serving_runtime("huggingface-vllm")
    del runtime["spec"]["containers"][0]["name"]  # V1Container.name is required
    assert any("name" in p for p in kserve_problems(runtime))


def test_scaled_objects_target_the_predictor_on_the_servers_metric():
    cfg, models = configs()
    by_name = {m.name: m for m in models}
    so = objects.scaled_object(by_name["llm"], "llm", "serving")
    assert so["spec"]["scaleTargetRef"]["name"] == "llm-predictor"
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metadata"]["threshold"] == "16"
    assert trigger["metadata"]["query"] == \
        'sum(vllm:num_requests_running{namespace="serving", isvc="llm"})'
    assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]) == (2, 6)
    cpu = objects.scaled_object(by_name["small"], "small", "serving")["spec"]["triggers"][0]
    assert cpu == {"type": "cpu", "metricType": "Utilization", "metadata": {"value": "70"}}


def test_ab_split_is_an_alb_forward_action_over_two_services():
    cfg, _ = configs()
    m = split_model()
    ing = objects.ingress(m, cfg, ["subnet-a"], {"owner": "x"}, "10.30.0.0/16")
    action = json.loads(ing["metadata"]["annotations"][
        "alb.ingress.kubernetes.io/actions.chat-split"])
    assert [(g["serviceName"], g["weight"]) for g in action["forwardConfig"]["targetGroups"]] \
        == [("chat-a-predictor", 80), ("chat-b-predictor", 20)]
    backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "chat-split", "port": {"name": "use-annotation"}}
    assert ing["spec"]["rules"][0]["host"] == "chat.serving.ml.example.internal"
    # both variants answer to the model's name
    for isvc in ("chat-a", "chat-b"):
        body = objects.inference_service(m, isvc, "models/x/", "serving", "b")
        assert body["metadata"]["labels"][objects.SERVED_NAME_LABEL] == "chat"


def test_model_reader_reads_exactly_its_prefixes():
    doc = json.loads(objects.model_reader_policy("arn:aws:s3:::b", "arn:aws:kms:k", "us-east-1",
                                                 ["models/llm/v1/", "models/llm/v2/"]))
    actions = {a for s in doc["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str)
                                                      else s["Action"])}
    assert actions == {"s3:GetObject", "s3:ListBucket", "kms:Decrypt"}
    read = next(s for s in doc["Statement"] if s["Sid"] == "ReadExport")
    assert read["Resource"] == ["arn:aws:s3:::b/models/llm/v1/*", "arn:aws:s3:::b/models/llm/v2/*"]
    with pytest.raises(ValueError):
        objects.model_reader_policy("arn:aws:s3:::b", "k", "us-east-1", ["checkpoints/"])


def test_load_balancer_controller_policy_is_scoped_to_the_cluster():
    doc = json.loads(controller_policy("aws", "us-east-1", "123456789012", "c1", "vpc-1"))
    for s in doc["Statement"]:
        mutating = [a for a in s["Action"] if not a.split(":")[1].startswith(("Describe", "Get",
                                                                             "List"))]
        if mutating and s["Sid"] != "ElbServiceLinkedRole":
            assert s["Resource"] != "*", s["Sid"]
        for cond in s.get("Condition", {}).values():
            for key, value in cond.items():
                if key.endswith("elbv2.k8s.aws/cluster") and value != "true":
                    assert value == "c1", s["Sid"]
    acts = {a for s in doc["Statement"] for a in s["Action"]}
    assert not {a for a in acts if a.startswith(("waf", "shield", "cognito"))}


def test_network_policies_admit_only_the_lb_subnets_and_monitoring():
    pols = objects.network_policies(["10.30.192.0/24"], "monitoring")
    assert pols["default-deny"]["policyTypes"] == ["Ingress", "Egress"]
    lb = pols["allow-load-balancer"]["ingress"][0]
    assert lb["from"] == [{"ipBlock": {"cidr": "10.30.192.0/24"}}]
    ingress_sources = [p for name, p in pols.items() if "Ingress" in p["policyTypes"]
                       and name != "default-deny"]
    assert len(ingress_sources) == 2
