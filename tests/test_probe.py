import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

from headstart.heads import build_head, sole_linear_layer
from headstart.train.probe import fit_logistic_head


def blobs(n_classes: int, n: int = 60, d: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (n_classes, d))
    y = np.arange(n) % n_classes
    x = centers[y] + rng.normal(0, 1, (n, d))
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


def test_multiclass_head_matches_logistic_regression():
    x, y = blobs(3)
    layer = nn.Linear(16, 3)
    chosen = fit_logistic_head(layer, x, y, seed=0)
    reference = LogisticRegression(C=chosen["C"], max_iter=2000).fit(x.double().numpy(), y.numpy())
    ours = torch.softmax(layer(x), 1).detach().numpy()
    assert np.abs(ours - reference.predict_proba(x.double().numpy())).max() < 1e-4
    assert chosen["cv_folds"] == 5 and set(chosen["cv_neg_log_loss"]) and (ours.argmax(1) == y.numpy()).mean() > 0.95


def test_binary_head_gives_two_logits_with_sigmoid_probabilities():
    x, y = blobs(2)
    layer = nn.Linear(16, 2)
    chosen = fit_logistic_head(layer, x, y, seed=0)
    reference = LogisticRegression(C=chosen["C"], max_iter=2000).fit(x.double().numpy(), y.numpy())
    ours = torch.softmax(layer(x), 1).detach().numpy()
    assert np.abs(ours - reference.predict_proba(x.double().numpy())).max() < 1e-4


def test_random_labels_pick_strong_regularisation():
    x, _ = blobs(2, n=80)
    y = torch.tensor(np.random.default_rng(1).integers(0, 2, 80))
    separable = fit_logistic_head(nn.Linear(16, 2), *blobs(2, n=80), seed=0)
    noise = fit_logistic_head(nn.Linear(16, 2), x, y, seed=0)
    assert noise["C"] < separable["C"]


def test_only_plain_linear_heads_are_solved():
    assert isinstance(sole_linear_layer(build_head("linear", 8, 3)), nn.Linear)
    assert sole_linear_layer(build_head("mlp", 8, 3)) is None


def test_few_rows_many_features_solve_in_the_row_space_to_the_same_optimum():
    from sklearn.linear_model import LogisticRegression

    from headstart.train.probe import logistic, project, row_space

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 200)), np.arange(30) % 3  # few-shot: rows << features
    basis = row_space(x)
    assert basis.shape == (200, 30) and np.allclose(basis.T @ basis, np.eye(30))
    reduced = LogisticRegression(C=0.3, max_iter=5000, tol=1e-10).fit(project(x, basis), y)
    full = LogisticRegression(C=0.3, max_iter=5000, tol=1e-10).fit(x, y)
    assert np.abs(reduced.coef_ @ basis.T - full.coef_).max() < 1e-5, "the same optimum, mapped back from the row space"
    unseen = rng.normal(size=(10, 200))
    assert np.abs(reduced.predict_proba(project(unseen, basis)) - full.predict_proba(unseen)).max() < 1e-5
    quick = logistic(project(x, basis), y, 0.3, 500, None)  # the head's own solve, at scikit-learn's tolerance
    assert np.abs(quick.predict_proba(project(unseen, basis)) - full.predict_proba(unseen)).max() < 1e-2
    assert row_space(rng.normal(size=(300, 200))) is None, "more rows than features: the features as they are"


def cold_scores(x: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0) -> dict:
    """Every C of the grid, each fit from scratch: what cross_validated_scores's path must agree with."""
    from sklearn.metrics import log_loss
    from sklearn.model_selection import StratifiedKFold

    from headstart.train.probe import C_GRID

    splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y))
    return {c: -float(np.mean([log_loss(y[h], LogisticRegression(C=c, max_iter=5000).fit(x[t], y[t]).predict_proba(x[h]))
                               for t, h in splits])) for c in C_GRID}


def test_the_penalty_path_stops_after_two_rises_and_chooses_what_the_whole_grid_chooses():
    from headstart.train.probe import C_GRID, cross_validated_scores

    x, _ = blobs(2, n=80)
    noise = np.random.default_rng(1).integers(0, 2, 80)  # held-out loss rises as the penalty weakens
    xs = x.double().numpy()
    path, cold = cross_validated_scores(xs, noise, 5, 0, None), cold_scores(xs, noise)
    assert len(path) < len(C_GRID)
    assert max(path, key=path.get) == max(cold, key=cold.get)
    assert all(abs(path[c] - cold[c]) < 1e-3 for c in path)  # warm starts reach the same optima

    x, y = blobs(3, n=90)  # separable: the loss falls all the way, every C is tried
    xs = x.double().numpy()
    path, cold = cross_validated_scores(xs, y.numpy(), 5, 0, None), cold_scores(xs, y.numpy())
    assert list(path) == list(C_GRID) and max(path, key=path.get) == max(cold, key=cold.get)


def test_multilabel_head_picks_its_strength_on_held_out_rows():
    """Unit-length features (as text embeddings are) with labels that a weak penalty separates: the cross-validated C
    is weaker than 1 and more of the labels clear 0.5 than at the old fixed C = 1."""
    from sklearn.metrics import f1_score

    from headstart.train.probe import fit_one_vs_rest_head

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 24))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = np.stack([x[:, 0] > 0, x[:, 1] > 0.1, x[:, 2] + x[:, 3] > 0, np.zeros(120)], axis=1).astype(np.float32)
    feats, targets = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    layer = nn.Linear(24, 4)
    chosen = fit_one_vs_rest_head(layer, feats[:80], targets[:80], seed=0)
    assert chosen["C"] > 1 and chosen["constant_labels"] == [3]
    ours = (torch.sigmoid(layer(feats[80:])) > 0.5).numpy()
    fixed = np.stack([LogisticRegression(C=1.0).fit(x[:80], y[:80, j]).predict(x[80:]) for j in range(3)], axis=1)
    assert not ours[:, 3].any(), "a label never seen is never predicted"
    assert f1_score(y[80:, :3], ours[:, :3], average="micro") > f1_score(y[80:, :3], fixed, average="micro")
