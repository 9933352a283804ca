"""Classification metrics: macro averages over the classes the scored rows hold or the model predicted."""
import numpy as np
import pytest

from headstart.evaluate import classification_metrics


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
