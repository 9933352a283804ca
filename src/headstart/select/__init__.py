"""Choosing the transfer: transferability scores (scores.py), ranking candidate backbones before training (rank.py),
and transfer vs scratch vs a classical baseline (compare.py). The API re-exports `rank` and `compare` as functions;
nothing is imported here, so reading the score names (`headstart --help`) loads no backbone code."""
