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

import importlib

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
    "Centroids": "centroids",
    "load_centroids": "centroids",
    "LinearHead": "heads",
    "ZeroShotHead": "heads",
    "load_head": "heads",
    "MinHasher": "minhash",
    "ModelNotFoundError": "presets",
    "BadRecord": "records",
    "RecordParser": "records",
    "Task": "tasks",
    "format_prompts": "tasks",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"),
                    name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
