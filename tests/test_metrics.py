"""Classification and multi-label metrics: macro averages over the classes the scored rows hold or the model predicted."""
import numpy as np
import pytest

from headstart.evaluate import classification_metrics, multilabel_metrics


def one_hot(predicted: list[int], n: int) -> np.ndarray:
    return np.eye(n)[predicted]


def test_a_class_neither_scored_nor_predicted_does_not_count_as_zero():
    classes = ["a", "b", "c", "d"]
    m = classification_metrics(np.array([0, 0, 1, 1]), one_hot([0, 0, 1, 1], 4), classes)
    assert m["precision_macro"] == m["recall_macro"] == m["f1_macro"] == 1.0  # counting c and d as 0 gave 0.5
    assert m["macro_classes"] == 2
    assert [c["support"] for c in m["per_class"]] == [2, 2, 0, 0], "the per-class table still lists every class"


def test_a_predicted_class_that_is_not_there_counts_against_precision():
    m = classification_metrics(np.array([0, 0, 1, 1]), one_hot([0, 2, 1, 1], 4), ["a", "b", "c", "d"])
    assert m["macro_classes"] == 3
    assert m["precision_macro"] == pytest.approx((1 + 1 + 0) / 3)  # c: predicted once, never right
    assert m["recall_macro"] == pytest.approx((0.5 + 1 + 0) / 3)


def test_multilabel_macro_f1_leaves_out_labels_neither_scored_nor_predicted():
    y = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0]])
    probs = np.array([[0.9, 0.1, 0.1, 0.1], [0.2, 0.8, 0.1, 0.1], [0.7, 0.3, 0.6, 0.1]])  # misses b, predicts c once
    m = multilabel_metrics(y, probs, ["a", "b", "c", "d"])
    assert m["macro_classes"] == 3, "d: neither there nor predicted"
    assert m["f1_macro"] == pytest.approx((1 + 2 / 3 + 0) / 3)  # counting d as 0 gave 0.417
    assert [c["support"] for c in m["per_class"]] == [2, 2, 0, 0], "the per-label table still lists every label"


def test_the_baseline_leads_only_by_what_the_summary_prints():
    from headstart.evaluate import baseline_comparison

    tie = {"r2": 0.84901, "baseline": {"metric": "r2", "score": 0.84904}}  # printed 0.8490 against 0.8490
    said, ahead = baseline_comparison(tie)
    assert not ahead and said.endswith("this model did at least as well")
    assert baseline_comparison({"r2": 0.8490, "baseline": {"metric": "r2", "score": 0.8512}})[1]
