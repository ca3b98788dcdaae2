import json

import pytest

from embgemma_keras import load_centroids
from pipelines import fit_clusters
from tests.helpers import read_outputs


@pytest.mark.slow
def test_fit_clusters_job(tmp_path, tiny_preset, tiny_model):
    source = tmp_path / "corpus.txt"
    texts = [f"note {i} about {'planets' if i % 2 else 'food'}"
             for i in range(30)]
    source.write_bytes("\n".join(texts).encode() + b"\n\xff bad line")
    out = tmp_path / "out"
    fit_clusters.main(["--input", str(source), "--output", str(out),
                       "--model", tiny_preset, "--k", "3"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["records"] == 30 and sum(metrics["sizes"]) == 30
    centroids = load_centroids(out, expect=tiny_model.identity,
                               task="clustering", dim=768)
    assert centroids.centroids.shape == (3, 768)
    dead = read_outputs(out, "dead_letters")
    assert [d["error"] for d in dead] == ["not valid UTF-8 at byte 0"]
