"""ResNet image classification with DDP and mixed precision (``python -m workloads.vision.train``);
see train.py's docstring."""
