from setuptools import find_packages
from setuptools import setup

# Beam is pinned: the Dataflow worker image and the Flex Template launcher
# must run the same SDK version as the job that is submitted.
BEAM_VERSION = "2.77.0"

setup(
    name="embgemma-beam",
    version="0.1.0",
    description=(
        "Streaming classification and near-duplicate detection on Apache "
        "Beam with EmbeddingGemma on keras-hub."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["embgemma_keras*", "transforms*",
                                    "pipelines*"]),
    install_requires=[
        f"apache-beam[gcp]=={BEAM_VERSION}",
        "tensorflow>=2.18,<2.22",
        "keras>=3.10",
        "keras-hub==0.32.0",
        # keras-hub reads Hugging Face checkpoints with it but does not
        # declare it.
        "safetensors>=0.4",
        # The default model is fetched from the Hugging Face Hub with it.
        "huggingface-hub>=0.30",
        "sentencepiece>=0.2",
        # datasketch 2.0 changed its hash scheme; signatures from another
        # major version are not comparable.
        "datasketch==2.0.0",
        "scikit-learn>=1.5",
        "numpy>=1.26",
        "tqdm>=4.60",
    ],
    extras_require={
        # Pillow reads the browser's screenshot of report.html.
        "test": ["pytest>=8", "hypothesis>=6.100", "pillow>=10"],
        # Peer for benchmarks only; never a runtime dependency.
        "bench": ["torch==2.13.0", "sentence-transformers>=5.1"],
    },
)
