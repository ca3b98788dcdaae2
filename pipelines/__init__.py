"""Runnable Beam jobs: options and wiring, nothing else."""
