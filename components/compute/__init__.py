"""Compute layer: the EKS cluster, GPU node groups, Karpenter, device plugins, add-on pins, the
instance catalog and the Kubernetes version calendar."""
