import numpy as np

from embgemma_keras.labels import evaluation


def test_classification_metrics_match_a_hand_count():
    metrics = evaluation.classification_metrics(
        ["spam", "spam", "ham", "ham"], ["spam", "ham", "ham", "ham"],
        ["ham", "spam"])
    assert metrics["accuracy"] == 0.75
    assert metrics["per_label"]["spam"] == {
        "precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2}
    assert metrics["confusion_matrix"]["rows_true_columns_predicted"] == [
        [2, 0], [1, 1]]


def test_cross_validation_predicts_every_example_once():
    labels = np.array(["a", "b"] * 10)
    seen = []

    def fit_predict(x, y, test):
        seen.extend(test.tolist())
        return ["a"] * len(test)

    metrics = evaluation.cross_validate(fit_predict, np.arange(20), labels,
                                        folds=5)
    assert sorted(seen) == list(range(20))
    assert metrics["accuracy"] == 0.5
    assert metrics["cv"]["folds"] == 5
    assert len(metrics["cv"]["accuracy_per_fold"]) == 5


def test_tfidf_baseline_learns_words():
    texts = ["win a prize now", "free prize claim", "see you at lunch",
             "lunch at noon"] * 5
    labels = ["spam", "spam", "ham", "ham"] * 5
    predicted = evaluation.tfidf_fit_predict(texts, labels,
                                             ["claim your prize"])
    assert list(predicted) == ["spam"]
