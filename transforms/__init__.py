"""Beam building blocks on EmbeddingGemma: parse, embed, classify, cluster,
deduplicate, with dead letters for what cannot be processed."""

from transforms.classify import LABELS
from transforms.classify import ClassifyLabels
from transforms.clusters import CLUSTER
from transforms.clusters import AssignClusters
from transforms.clusters import UpdateCentroids
from transforms.dead_letters import DEAD_LETTERS
from transforms.dead_letters import WithDeadLetters
from transforms.dead_letters import dead_letter
from transforms.dedup import ExactDuplicates
from transforms.dedup import LexicalDuplicates
from transforms.embed import DEFAULT_PROMPTS
from transforms.embed import EMBEDDINGS
from transforms.embed import EmbedRecords
from transforms.embed import embed_once
from transforms.json_lines import to_json_line
from transforms.model_handler import EmbeddingGemmaModelHandler
from transforms.records import ParseRecords
from transforms.records import record_id
from transforms.semantic_dedup import SemanticDuplicates
from transforms.streaming_dedup import LexicalSketch
from transforms.streaming_dedup import SemanticSketch
from transforms.streaming_dedup import StreamingNearDuplicates

__all__ = [
    "AssignClusters",
    "CLUSTER",
    "LABELS",
    "ClassifyLabels",
    "DEAD_LETTERS",
    "DEFAULT_PROMPTS",
    "EMBEDDINGS",
    "EmbedRecords",
    "EmbeddingGemmaModelHandler",
    "ExactDuplicates",
    "LexicalDuplicates",
    "LexicalSketch",
    "ParseRecords",
    "SemanticDuplicates",
    "SemanticSketch",
    "StreamingNearDuplicates",
    "UpdateCentroids",
    "WithDeadLetters",
    "dead_letter",
    "embed_once",
    "record_id",
    "to_json_line",
]
