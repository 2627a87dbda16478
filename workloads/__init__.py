"""trainyard training workloads.

Packaged PyTorch jobs that run on the trainyard platform and on a laptop alike:

- ``workloads.common``: distributed setup from torchrun's environment, checkpoints to a directory
  or ``s3://`` (torch.distributed.checkpoint), spot/SIGTERM handling, metrics, MFU.
- ``workloads.llm``: GPT-style pretraining with FSDP2 (``python -m workloads.llm.train``).

Nothing here imports ``pulumi`` or ``components``: a training image carries only torch, numpy,
boto3 and this package (see docs/workloads.md).
"""
