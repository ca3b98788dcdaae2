"""Writes the reference vectors the real-weight tests compare against.

Run once, with sentence-transformers and torch installed (`pip install -e
.[bench]`) and EMBGEMMA_MODEL pointing at the Sentence-Transformers
snapshot:

    python tests/data/make_reference.py

It embeds `reference_texts.json` (short and long texts, non-English, code;
each with its task) with sentence-transformers in float32 on the CPU and
writes `reference_vectors.npy`.
"""

import json
import os
import pathlib

import numpy as np
import torch
from sentence_transformers import SentenceTransformer

HERE = pathlib.Path(__file__).parent
# Task name -> the snapshot's own prompt name (config_sentence_transformers).
ST_PROMPTS = {
    "query": "query",
    "document": "document",
    "classification": "Classification",
    "clustering": "Clustering",
    "sentence_similarity": "STS",
    "code_retrieval": "InstructionRetrieval",
}


def main():
    model = SentenceTransformer(
        os.environ["EMBGEMMA_MODEL"], device="cpu",
        model_kwargs={"torch_dtype": torch.float32},
    )
    items = json.loads((HERE / "reference_texts.json").read_text())
    vectors = np.stack([
        model.encode(item["text"], prompt_name=ST_PROMPTS[item["task"]],
                     normalize_embeddings=True)
        for item in items
    ]).astype(np.float32)
    np.save(HERE / "reference_vectors.npy", vectors)
    print(f"wrote {vectors.shape} vectors")


if __name__ == "__main__":
    main()
