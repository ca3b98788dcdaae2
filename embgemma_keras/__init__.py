"""EmbeddingGemma-300m on keras-hub: prompts, Matryoshka dims, fast encoding.

```python
from embgemma_keras import EmbeddingGemma
model = EmbeddingGemma.from_preset()   # reads $EMBGEMMA_MODEL
vectors = model.encode(["Is this spam?"], task="classification", dim=256)
```
"""

from embgemma_keras.embedding_gemma import MATRYOSHKA_DIMS
from embgemma_keras.embedding_gemma import EmbeddingGemma
from embgemma_keras.embedding_gemma import EncodeStats
from embgemma_keras.embedding_gemma import truncate_embeddings
from embgemma_keras.artifacts import ArtifactMismatchError
from embgemma_keras.artifacts import ModelIdentity
from embgemma_keras.clusters import Centroids
from embgemma_keras.clusters import load_centroids
from embgemma_keras.heads import LinearHead
from embgemma_keras.heads import ZeroShotHead
from embgemma_keras.heads import load_head
from embgemma_keras.presets import ModelNotFoundError
from embgemma_keras.tasks import Task
from embgemma_keras.tasks import format_prompts
from embgemma_keras.tiny import make_tiny_preset

__all__ = [
    "Centroids",
    "EmbeddingGemma",
    "EncodeStats",
    "ArtifactMismatchError",
    "LinearHead",
    "MATRYOSHKA_DIMS",
    "ModelIdentity",
    "ModelNotFoundError",
    "Task",
    "ZeroShotHead",
    "format_prompts",
    "load_centroids",
    "load_head",
    "make_tiny_preset",
    "truncate_embeddings",
]
