"""Embedding in a pipeline: the RunInference model handler
(`model_handler`) and `EmbedRecords` (`embed`).
"""
