"""Clusters in a pipeline: assigning and updating centroids (`assign`),
and fitting them (`fit_centroids`).
"""
