"""A tiny random-weight EmbeddingGemma for fast tests of code built on it.

It has EmbeddingGemma's shape where it matters to callers (768-d unit
vectors, Matryoshka dims, the Gemma special tokens, sliding-window and
global attention layers, the dense pooling head) and almost none of its
cost: two layers, a 384-piece SentencePiece vocabulary with byte fallback
(so any Unicode text tokenizes), ~0.4M parameters, milliseconds per batch.
Its vectors mean nothing; use it to test plumbing, never quality.

```python
from embgemma_keras import EmbeddingGemma, make_tiny_preset

path = make_tiny_preset("/tmp/tiny-embgemma")
model = EmbeddingGemma.from_preset(path)
model.encode(["hello world"]).shape  # (1, 768)
```
"""

from __future__ import annotations

import io
import os

import numpy as np
import sentencepiece

from embgemma_keras.backend import keras_hub

_VOCABULARY_SIZE = 384
# Text to learn a vocabulary from; what matters is a spread of English
# subwords, the rest falls back to bytes.
_CORPUS = """\
The quick brown fox jumps over the lazy dog near the river bank.
Free entry in a weekly competition to win tickets, text WIN to claim a prize.
I will call you later tonight when I get home from work.
A gripping, funny and warm film that never loses its way.
The movie is a dull, lifeless mess with nothing to say.
Mars is often referred to as the Red Planet because of its color.
Venus is often called Earth's twin because of its similar size.
Jupiter, the largest planet in our solar system, has a red spot.
Saturn, famous for its rings, is sometimes mistaken for the Red Planet.
The company said its quarterly profit rose on strong sales of new phones.
Shares fell sharply after the bank reported losses on its loan portfolio.
Which planet is known as the Red Planet? Search result query document.
task: classification | query: task: clustering | query: title: none | text:
task: sentence similarity | query: task: search result | query:
def encode(texts): return model.predict(texts)  # code retrieval example
Congratulations! You have been selected to receive a cash award today.
Are we still meeting for lunch tomorrow at the usual place?
""" * 4


def make_tiny_preset(directory: str | os.PathLike, seed: int = 0) -> str:
    """Writes a tiny random EmbeddingGemma Keras preset and returns its path.

    The same `seed` always gives the same weights and vocabulary, so
    vectors from it can be compared across processes and runs.
    """
    tokenizer = keras_hub.models.Gemma3Tokenizer(
        proto=_train_vocabulary(), has_vision_tokens=False
    )
    backbone = keras_hub.models.Gemma3Backbone(
        vocabulary_size=_VOCABULARY_SIZE,
        image_size=16,
        num_layers=2,
        num_query_heads=2,
        num_key_value_heads=1,
        hidden_dim=32,
        intermediate_dim=64,
        head_dim=16,
        use_post_ffw_norm=True,
        use_post_attention_norm=True,
        # A 4-token window so the sliding layer differs from the global one
        # even on short test texts.
        use_sliding_window_attention=True,
        sliding_window_size=4,
        use_bidirectional_attention=True,
        is_embedding_model=True,
        pooling_intermediate_dim=64,
        embedding_dim=768,
    )
    rng = np.random.default_rng(seed)
    for variable in backbone.weights:
        variable.assign(rng.normal(0.0, 0.3, variable.shape))
    backbone.save_to_preset(directory)
    tokenizer.save_to_preset(directory)
    return os.fspath(directory)


def _train_vocabulary():
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(_CORPUS.splitlines()),
        model_writer=model,
        vocab_size=_VOCABULARY_SIZE,
        model_type="unigram",
        byte_fallback=True,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3,
        pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>",
        unk_piece="<unk>",
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()
