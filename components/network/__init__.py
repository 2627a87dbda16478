"""Network layer: the VPC for distributed training, subnet carving and the EFA NIC layout."""
