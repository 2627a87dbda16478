"""Platform services: identity, teams and queues (Kueue), Kubeflow Trainer and its runtimes,
monitoring, and the NetworkPolicy building blocks they share."""
