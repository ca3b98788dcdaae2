"""Beam building blocks on EmbeddingGemma: parse, embed, classify, cluster,
deduplicate, with dead letters for what cannot be processed; and the
composite graphs the jobs run (`TagRecords`, `DeduplicateFiles`,
`TrainHead`, `FitCentroids`).

Names are imported on first use, and no module here imports TensorFlow:
the model is loaded on the workers, by the RunInference handler.
"""

from embgemma_keras.lazy import lazy_exports

_EXPORTS = {
    "ClassifyLabels": "classify",
    "AssignClusters": "clusters",
    "UpdateCentroids": "clusters",
    "DeduplicateCorpus": "corpus_dedup",
    "DeduplicateFiles": "corpus_dedup",
    "WithDeadLetters": "dead_letters",
    "ExactDuplicates": "dedup",
    "LexicalDuplicates": "dedup",
    "UniqueIds": "dedup",
    "DEFAULT_PROMPTS": "embed",
    "EmbedRecords": "embed",
    "prompts_for": "embed",
    "ReadRecords": "files",
    "EmbeddingGemmaModelHandler": "model_handler",
    "ParseRecords": "parse",
    "SemanticDuplicates": "semantic_dedup",
    "StreamingNearDuplicates": "streaming_dedup",
    "TagRecords": "tagging",
    "TaggedSinks": "tagging",
    "write_tagged": "tagging",
    "FitCentroids": "training",
    "TrainHead": "training",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
