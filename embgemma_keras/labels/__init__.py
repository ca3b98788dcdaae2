"""Label heads on EmbeddingGemma vectors: trained or zero-shot heads
(`heads`), fitting them (`fitting`) and their metrics (`evaluation`).
"""
