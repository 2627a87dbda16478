"""Pieces shared by every workload: dist setup, checkpoints, preemption, metrics, MFU, CLI errors."""
