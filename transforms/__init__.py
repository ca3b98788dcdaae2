"""Beam building blocks on EmbeddingGemma: parse, embed, classify, cluster,
deduplicate, with dead letters for what cannot be processed; and the
composite graphs the jobs run (`TagRecords`, `DeduplicateFiles`,
`TrainHead`, `FitCentroids`).

Names are imported on first use, and no module here imports TensorFlow:
the model is loaded on the workers, by the RunInference handler.
"""

from embgemma_keras.lazy import lazy_exports

_EXPORTS = {
    "ClassifyLabels": "labels.classify",
    "AssignClusters": "clusters.assign",
    "UpdateCentroids": "clusters.assign",
    "DeduplicateCorpus": "dedup.corpus",
    "DeduplicateFiles": "dedup.corpus",
    "WithDeadLetters": "records.dead_letters",
    "ExactDuplicates": "dedup.exact_and_lexical",
    "LexicalDuplicates": "dedup.exact_and_lexical",
    "UniqueIds": "dedup.exact_and_lexical",
    "DEFAULT_PROMPTS": "embedding.embed",
    "EmbedRecords": "embedding.embed",
    "prompts_for": "embedding.embed",
    "ReadRecords": "records.files",
    "ReadRecordsAsStream": "records.replay",
    "EmbeddingGemmaModelHandler": "embedding.model_handler",
    "ParseRecords": "records.parse",
    "SemanticDuplicates": "dedup.semantic",
    "StreamingNearDuplicates": "dedup.streaming",
    "TagRecords": "tagging",
    "TaggedSinks": "tagging",
    "write_tagged": "tagging",
    "FitCentroids": "clusters.fit_centroids",
    "TrainHead": "labels.train_head",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
