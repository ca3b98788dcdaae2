"""The dedup index in a pipeline: opened, read and committed
(`read_commit`).
"""
