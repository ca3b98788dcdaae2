import pytest

from embgemma_keras import Task
from embgemma_keras import format_prompts

# The prompts as printed on the EmbeddingGemma model card.
MODEL_CARD_PROMPTS = {
    "query": "task: search result | query: ",
    "document": "title: none | text: ",
    "question_answering": "task: question answering | query: ",
    "fact_checking": "task: fact checking | query: ",
    "classification": "task: classification | query: ",
    "clustering": "task: clustering | query: ",
    "sentence_similarity": "task: sentence similarity | query: ",
    "code_retrieval": "task: code retrieval | query: ",
    "none": "",
}


@pytest.mark.parametrize("name,prefix", MODEL_CARD_PROMPTS.items())
def test_every_task_uses_the_model_card_prompt(name, prefix):
    assert format_prompts(["x"], name) == [prefix + "x"]
    assert format_prompts(["x"], Task(name)) == [prefix + "x"]


def test_every_task_is_covered():
    assert {task.value for task in Task} == set(MODEL_CARD_PROMPTS)


def test_document_titles_fill_in_none_when_missing():
    prompts = format_prompts(["a", "b", "c"], "document",
                             titles=["Mars", None, ""])
    assert prompts == [
        "title: Mars | text: a",
        "title: none | text: b",
        "title: none | text: c",
    ]


def test_unknown_task_lists_the_valid_names():
    with pytest.raises(ValueError, match="sentence_similarity"):
        format_prompts(["x"], "similarity")


def test_titles_are_refused_for_other_tasks_and_wrong_lengths():
    with pytest.raises(ValueError, match="only applies to task='document'"):
        format_prompts(["x"], "query", titles=["t"])
    with pytest.raises(ValueError, match="2 titles for 1 texts"):
        format_prompts(["x"], "document", titles=["t", "u"])
