"""Transferability scores: how well a frozen body's features suit the labels, before any training.

- LogME (You et al., ICML 2021): the log marginal evidence of a Bayesian linear model on the features,
  maximised over the prior precision alpha and noise precision beta by the paper's fixed-point iteration,
  averaged over one-hot class columns (or the standardised target for regression). Vectorised over classes:
  one eigendecomposition of F^T F serves every column.
- kNN: leave-one-out accuracy of a cosine k-nearest-neighbour vote (regression: R² of the neighbours' mean).
- probe: cross-validated accuracy of logistic regression (the linear probe a fit would start from; regression:
  cross-validated R² of ridge regression, the head a regression fit solves).
"""
from __future__ import annotations

import numpy as np

from headstart.train.probe import RIDGE_ALPHAS, single_threaded_blas


def logme(features: np.ndarray, targets: np.ndarray, regression: bool = False, iterations: int = 50) -> float:
    """Mean per-sample log evidence (higher is better); see `logme_details` for alpha, beta per column."""
    return float(logme_details(features, targets, regression, iterations)["evidence"].mean())


def logme_details(features: np.ndarray, targets: np.ndarray, regression: bool = False, iterations: int = 50) -> dict:
    f = np.asarray(features, dtype=np.float64)
    n, d = f.shape
    if regression:
        y = np.asarray(targets, dtype=np.float64).reshape(n, -1)
        y = (y - y.mean(0)) / (y.std(0) + 1e-12)
    else:
        labels = np.asarray(targets)
        y = (labels[:, None] == np.unique(labels)[None, :]).astype(np.float64)  # one-hot, [N, C]
    sigma, v = np.linalg.eigh(f.T @ f)  # F^T F = V diag(sigma) V^T
    sigma = np.clip(sigma, 0.0, None)
    proj = v.T @ (f.T @ y)  # [D, C]: targets seen in the eigenbasis
    yy = (y * y).sum(0)
    alpha, beta = np.ones(y.shape[1]), np.ones(y.shape[1])
    eps = 1e-12
    for _ in range(iterations):
        denom = alpha[None, :] + beta[None, :] * sigma[:, None]  # [D, C]
        gamma = (beta[None, :] * sigma[:, None] / denom).sum(0)
        m_eig = beta[None, :] * proj / denom  # posterior mean in the eigenbasis, [D, C]
        m2 = (m_eig ** 2).sum(0)
        # ||y - F m||^2 = y'y - 2 m'F'y + m'F'F m, all in the eigenbasis
        residual = np.maximum(yy - 2 * (m_eig * proj).sum(0) + (sigma[:, None] * m_eig ** 2).sum(0), 0.0)
        new_alpha = gamma / (m2 + eps)
        new_beta = (n - gamma) / (residual + eps)
        done = np.all(np.abs(new_alpha / alpha - 1) < 1e-6) and np.all(np.abs(new_beta / beta - 1) < 1e-6)
        alpha, beta = new_alpha, new_beta
        if done:
            break
    denom = alpha[None, :] + beta[None, :] * sigma[:, None]
    m_eig = beta[None, :] * proj / denom
    m2 = (m_eig ** 2).sum(0)
    residual = np.maximum(yy - 2 * (m_eig * proj).sum(0) + (sigma[:, None] * m_eig ** 2).sum(0), 0.0)
    evidence = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - 0.5 * np.log(denom).sum(0)
                - beta / 2 * residual - alpha / 2 * m2 - n / 2 * np.log(2 * np.pi)) / n
    return {"evidence": evidence, "alpha": alpha, "beta": beta}


def _neighbours(features: np.ndarray, k: int) -> np.ndarray:
    """Each row's k nearest other rows by cosine similarity, nearest first (leave-one-out)."""
    f = np.asarray(features, dtype=np.float64)
    f = f / (np.linalg.norm(f, axis=1, keepdims=True) + 1e-12)
    sims = f @ f.T
    np.fill_diagonal(sims, -np.inf)  # leave the sample itself out
    return np.argsort(-sims, axis=1)[:, :max(1, min(k, len(f) - 1))]


def knn_accuracy(features: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Leave-one-out accuracy of a cosine k-NN majority vote (ties go to the nearest neighbour's class)."""
    labels = np.asarray(labels)
    votes = labels[_neighbours(features, k)]
    classes = np.unique(labels)
    counts = (votes[:, :, None] == classes[None, None, :]).sum(1) + 1e-3 * (votes[:, :1] == classes[None, :])
    return float((classes[counts.argmax(1)] == labels).mean())


@single_threaded_blas
def probe_accuracy(features: np.ndarray, labels: np.ndarray, seed: int = 0, folds: int = 5) -> float:
    """Stratified cross-validated accuracy of logistic regression on standardised features."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = np.asarray(labels)
    folds = max(2, min(folds, int(np.bincount(np.unique(labels, return_inverse=True)[1]).min())))
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=1000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        scores = cross_val_score(model, features, labels, cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
    return float(scores.mean())


def knn_r2(features: np.ndarray, targets: np.ndarray, k: int = 5) -> float:
    """Leave-one-out R² of predicting each target by the mean of its k cosine-nearest neighbours' (regression)."""
    from sklearn.metrics import r2_score

    y = np.asarray(targets, dtype=np.float64)
    return float(r2_score(y, y[_neighbours(features, k)].mean(1)))


@single_threaded_blas
def probe_r2(features: np.ndarray, targets: np.ndarray, seed: int = 0, folds: int = 5) -> float:
    """R² of cross-validated ridge predictions, strength by inner leave-one-out CV, on the raw features: the head a
    regression fit solves (train/probe.py). Standardising them blew up near-constant features (R² -37 on 41 images)."""
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import r2_score
    from sklearn.model_selection import KFold, cross_val_predict

    y = np.asarray(targets, dtype=np.float64)
    model = RidgeCV(alphas=RIDGE_ALPHAS)
    # pooled out-of-fold predictions: one R² over every row, steadier than a mean of small folds' R²
    preds = cross_val_predict(model, features, y, cv=KFold(max(2, min(folds, len(y))), shuffle=True, random_state=seed))
    return float(r2_score(y, preds))


SCORES = {
    "logme": "LogME log evidence per sample (higher: features fit the labels better)",
    "knn": "leave-one-out 5-NN accuracy (cosine); regression: R² of the 5 neighbours' mean",
    "probe": "5-fold cross-validated logistic-regression accuracy; regression: cross-validated ridge R²",
}
