"""Local model servers: KServe's ModelServer with predictors that batch concurrent requests.

``llm_server`` serves a Hugging Face Llama export (transformers, greedy), ``vision_server`` an
ONNX image model (onnxruntime); both share ``batcher.DynamicBatcher`` and ``server.serve``.
Measure them with ``trainyard serve bench`` (docs/serving.md, "Locally").
"""
