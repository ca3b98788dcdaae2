"""EmbeddingGemma-300m on keras-hub, and the Beam-free math on its vectors.

```python
from embgemma_keras import EmbeddingGemma
model = EmbeddingGemma.from_preset()   # reads $EMBGEMMA_MODEL
vectors = model.encode(["Is this spam?"], task="classification", dim=256)
```

Names are imported on first use: `from embgemma_keras import MinHasher`
loads neither TensorFlow nor keras-hub; only the model (`EmbeddingGemma`,
`make_tiny_preset`) does.
"""

from embgemma_keras.lazy import lazy_exports

_EXPORTS = {
    "EmbeddingGemma": "embedding_gemma",
    "EncodeStats": "embedding_gemma",
    "truncate_embeddings": "embedding_gemma",
    "make_tiny_preset": "tiny",
    "MATRYOSHKA_DIMS": "config",
    "DedupConfig": "config",
    "EmbedConfig": "config",
    "MinHashConfig": "config",
    "SemanticDedupConfig": "config",
    "StreamConfig": "config",
    "StreamDedupConfig": "config",
    "ArtifactMismatchError": "artifacts",
    "ModelIdentity": "artifacts",
    "Centroids": "clusters.centroids",
    "load_centroids": "clusters.centroids",
    "LinearHead": "labels.heads",
    "ZeroShotHead": "labels.heads",
    "load_head": "labels.heads",
    "MinHasher": "dedup.minhash",
    "ModelNotFoundError": "presets",
    "BadRecord": "records.validation",
    "RecordParser": "records.validation",
    "Task": "tasks",
    "format_prompts": "tasks",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
