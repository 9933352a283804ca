"""Choosing the transfer: transferability scores and ranking candidate backbones before training."""
from headstart.select.compare import compare
from headstart.select.rank import rank
from headstart.select.scores import knn_accuracy, logme, probe_accuracy

__all__ = ["compare", "rank", "logme", "knn_accuracy", "probe_accuracy"]
