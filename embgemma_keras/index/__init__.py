"""The dedup index, Beam-free: its settings, manifests and segment
format (`format`).
"""
