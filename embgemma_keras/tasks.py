"""EmbeddingGemma task prompts, exactly as published on the model card.

EmbeddingGemma was trained with a short text prefix that names the use of
the embedding. Vectors made with the wrong prefix (or none) still work, but
measurably worse, so every entry point asks for a `Task`.

>>> format_prompts(["Which planet is red?"], Task.QUERY)
['task: search result | query: Which planet is red?']
>>> format_prompts(["Mars is red."], "document", titles=["Mars"])
['title: Mars | text: Mars is red.']
"""

from __future__ import annotations

import enum


class Task(str, enum.Enum):
    """What an embedding is for; its value is the name accepted by `task=`."""

    QUERY = "query"
    DOCUMENT = "document"
    QUESTION_ANSWERING = "question_answering"
    FACT_CHECKING = "fact_checking"
    CLASSIFICATION = "classification"
    CLUSTERING = "clustering"
    SENTENCE_SIMILARITY = "sentence_similarity"
    CODE_RETRIEVAL = "code_retrieval"
    NONE = "none"

    @classmethod
    def parse(cls, task: Task | str) -> Task:
        """Returns the `Task` named by `task` (a `Task` or its string value)."""
        if isinstance(task, cls):
            return task
        try:
            return cls(task)
        except ValueError:
            names = ", ".join(t.value for t in cls)
            raise ValueError(
                f"Unknown task {task!r}; expected one of: {names}."
            ) from None

    @property
    def prefix(self) -> str:
        """The prompt put before each text ('' for `NONE`).

        For `DOCUMENT` this is the untitled form; `format_prompts` fills in
        per-text titles.
        """
        return _PREFIXES[self]


_PREFIXES = {
    Task.QUERY: "task: search result | query: ",
    Task.DOCUMENT: "title: none | text: ",
    Task.QUESTION_ANSWERING: "task: question answering | query: ",
    Task.FACT_CHECKING: "task: fact checking | query: ",
    Task.CLASSIFICATION: "task: classification | query: ",
    Task.CLUSTERING: "task: clustering | query: ",
    Task.SENTENCE_SIMILARITY: "task: sentence similarity | query: ",
    Task.CODE_RETRIEVAL: "task: code retrieval | query: ",
    Task.NONE: "",
}


def format_prompts(texts: list[str], task: Task | str,
                   titles: list[str | None] | None = None) -> list[str]:
    """Prefixes each text with the prompt of `task`.

    Args:
        texts: a list of strings.
        task: a `Task` or its name.
        titles: optional list (same length as `texts`) of document titles;
            only meaningful for `Task.DOCUMENT`, where a missing or empty
            title becomes "none" as on the model card.
    """
    task = Task.parse(task)
    if titles is None:
        return [task.prefix + text for text in texts]
    if task is not Task.DOCUMENT:
        raise ValueError(
            f"titles= only applies to task='document', not {task.value!r}."
        )
    if len(titles) != len(texts):
        raise ValueError(
            f"Got {len(titles)} titles for {len(texts)} texts; pass one "
            "title (or None) per text."
        )
    return [
        f"title: {title or 'none'} | text: {text}"
        for text, title in zip(texts, titles, strict=True)
    ]
