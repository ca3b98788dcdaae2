"""k-means clusters of EmbeddingGemma vectors (`centroids`).
"""
