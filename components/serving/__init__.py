"""Serving layer: KServe (raw Kubernetes mode), KEDA, cert-manager, the AWS Load Balancer
Controller, and the served models (docs/serving.md)."""
