"""Evaluation metrics for learned latents and learned perturbation graphs.

All functions are pure and operate on numpy arrays:

* latent recovery: :func:`match_latents`, :func:`mcc` (mean correlation
  coefficient after Hungarian matching) and :func:`r2_linear` (linear
  identifiability);
* graph recovery: :func:`permute_graph` puts a learned perturbation-to-latent
  graph into the true latent order and :func:`graph_metrics` scores it against
  the ground truth;
* model selection without ground truth: :func:`udr_pair` and :func:`udr`, the
  unsupervised disentanglement ranking of Duan et al. (2020) between models
  trained on the same data from different initialisations.

Two matchings of learned to true latents exist in the literature and both are
available: by ``|correlation|`` (``signed=False``, the default: a latent whose
sign is flipped is still the same latent) and by the signed correlation
(``signed=True``: the released sVAE+ code's graph metrics, where a sign-flipped
latent is matched to another column).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.stats import rankdata
from sklearn.linear_model import LinearRegression
from sklearn.metrics import (
    average_precision_score,
    f1_score,
    precision_score,
    r2_score,
    recall_score,
)

__all__ = [
    "abs_correlation_matrix",
    "correlation_matrix",
    "graph_metrics",
    "match_latents",
    "mcc",
    "permute_graph",
    "r2_linear",
    "udr",
    "udr_pair",
]

CorrelationMethod = Literal["pearson", "spearman"]


def _as_2d_float(x: np.ndarray, name: str) -> np.ndarray:
    """Return ``x`` as a 2-D float64 array, raising if it is not 2-D."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_cells, n_latents), got shape {arr.shape}")
    return arr


def _check_same_cells(z_true: np.ndarray, z_learned: np.ndarray) -> None:
    """Raise if the two latent matrices do not describe the same cells."""
    if z_true.shape[0] != z_learned.shape[0]:
        raise ValueError(
            "z_true and z_learned must have the same number of rows (cells), got "
            f"{z_true.shape[0]} and {z_learned.shape[0]}"
        )


def _standardise_columns(x: np.ndarray) -> np.ndarray:
    """Centre each column and scale it to unit (population) standard deviation.

    Constant columns become all-zero so that their correlation with anything
    is 0 rather than NaN.
    """
    centred = x - x.mean(axis=0, keepdims=True)
    std = np.sqrt(np.mean(centred**2, axis=0, keepdims=True))
    # Treat columns whose spread is at rounding-noise level as constant.
    scale = np.maximum(np.abs(x).max(axis=0, keepdims=True), 1.0)
    constant = std <= 1e-12 * scale
    safe_std = np.where(constant, 1.0, std)
    return np.where(constant, 0.0, centred / safe_std)


def correlation_matrix(
    z_true: np.ndarray,
    z_learned: np.ndarray,
    method: CorrelationMethod = "pearson",
) -> np.ndarray:
    """Correlation between every true and every learned latent.

    Parameters
    ----------
    z_true:
        True latents, shape ``(n_cells, p_true)``.
    z_learned:
        Learned latents, shape ``(n_cells, p_learned)``.
    method:
        ``"pearson"`` or ``"spearman"`` (Pearson on per-column ranks).

    Returns
    -------
    numpy.ndarray
        Matrix of shape ``(p_true, p_learned)`` with entries in ``[-1, 1]``;
        entries involving a constant column are 0.
    """
    zt = _as_2d_float(z_true, "z_true")
    zl = _as_2d_float(z_learned, "z_learned")
    _check_same_cells(zt, zl)
    if method == "spearman":
        zt = rankdata(zt, axis=0)
        zl = rankdata(zl, axis=0)
    elif method != "pearson":
        raise ValueError(f"method must be 'pearson' or 'spearman', got {method!r}")
    corr = _standardise_columns(zt).T @ _standardise_columns(zl) / zt.shape[0]
    return np.clip(corr, -1.0, 1.0)


def abs_correlation_matrix(
    z_true: np.ndarray,
    z_learned: np.ndarray,
    method: CorrelationMethod = "pearson",
) -> np.ndarray:
    """``|correlation_matrix|``: entries in ``[0, 1]``."""
    return np.abs(correlation_matrix(z_true, z_learned, method))


def match_latents(
    z_true: np.ndarray,
    z_learned: np.ndarray,
    method: CorrelationMethod = "pearson",
    signed: bool = False,
) -> tuple[float, np.ndarray, np.ndarray]:
    """Match learned to true latents by maximal total absolute correlation.

    Solves the linear assignment problem on the ``|corr|`` matrix (Hungarian
    algorithm). When ``p_true != p_learned`` only ``min(p_true, p_learned)``
    pairs are matched. ``signed=True`` maximises the total *signed*
    correlation instead (the released sVAE+ code's matching for its graph
    metrics): a learned latent anti-correlated with its true latent is then
    matched elsewhere. The returned score is the mean ``|corr|`` of the
    matched pairs either way.

    Parameters
    ----------
    z_true:
        True latents, shape ``(n_cells, p_true)``.
    z_learned:
        Learned latents, shape ``(n_cells, p_learned)``.
    method:
        ``"pearson"`` or ``"spearman"``.
    signed:
        Match by the signed correlation rather than its absolute value.

    Returns
    -------
    tuple
        ``(mcc, rows, cols)`` where ``mcc`` is the mean ``|corr|`` over the
        matched pairs, ``rows`` are the matched true-latent indices (sorted
        ascending) and ``cols`` the aligned matched learned-latent indices.
    """
    corr = correlation_matrix(z_true, z_learned, method=method)
    rows, cols = linear_sum_assignment(corr if signed else np.abs(corr), maximize=True)
    rows = np.asarray(rows, dtype=np.intp)
    cols = np.asarray(cols, dtype=np.intp)
    score = float(np.abs(corr[rows, cols]).mean()) if rows.size else float("nan")
    return score, rows, cols


def mcc(
    z_true: np.ndarray,
    z_learned: np.ndarray,
    method: CorrelationMethod = "pearson",
) -> float:
    """Mean correlation coefficient after optimal matching (see :func:`match_latents`)."""
    return match_latents(z_true, z_learned, method=method)[0]


def r2_linear(z_true: np.ndarray, z_learned: np.ndarray) -> float:
    """Coefficient of determination of a linear map from learned to true latents.

    Fits an ordinary least-squares regression (with intercept) of ``z_true``
    on ``z_learned`` and scores it on the same cells, averaging R^2 uniformly
    over the true latents.

    Parameters
    ----------
    z_true:
        True latents, shape ``(n_cells, p_true)``.
    z_learned:
        Learned latents, shape ``(n_cells, p_learned)``.

    Returns
    -------
    float
        Uniform-average R^2 (1 means the true latents are an exact affine
        function of the learned ones).
    """
    zt = _as_2d_float(z_true, "z_true")
    zl = _as_2d_float(z_learned, "z_learned")
    _check_same_cells(zt, zl)
    prediction = LinearRegression().fit(zl, zt).predict(zl)
    return float(r2_score(zt, prediction, multioutput="uniform_average"))


def _matching_indices(rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate and return a matching as two aligned 1-D integer arrays."""
    r = np.asarray(rows, dtype=np.intp).ravel()
    c = np.asarray(cols, dtype=np.intp).ravel()
    if r.shape != c.shape:
        raise ValueError(f"rows and cols must have the same length, got {r.size} and {c.size}")
    if np.unique(r).size != r.size or np.unique(c).size != c.size:
        raise ValueError("rows and cols must not contain repeated indices")
    return r, c


def permute_graph(
    g_learned: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    p_true: int,
) -> np.ndarray:
    """Reorder the latent columns of a learned graph into the true latent order.

    Parameters
    ----------
    g_learned:
        Learned graph scores, shape ``(n_perturbations, p_learned)`` (mask
        probabilities or a binary matrix).
    rows, cols:
        Matching from :func:`match_latents`: true latent ``rows[i]`` is
        matched to learned latent ``cols[i]``.
    p_true:
        Number of true latents.

    Returns
    -------
    numpy.ndarray
        Array of shape ``(n_perturbations, p_true + n_unmatched_learned)``.
        Column ``rows[i]`` holds ``g_learned[:, cols[i]]``; unmatched true
        latents get a zero column; unmatched learned latents are appended
        (in increasing index order) after the ``p_true`` true columns, where
        the ground truth is all zero.
    """
    g = np.asarray(g_learned)
    if g.ndim != 2:
        raise ValueError(f"g_learned must be 2-D (n_perturbations, p_learned), got shape {g.shape}")
    r, c = _matching_indices(rows, cols)
    p_learned = g.shape[1]
    if r.size and (r.min() < 0 or r.max() >= p_true):
        raise ValueError("rows contains indices outside [0, p_true)")
    if c.size and (c.min() < 0 or c.max() >= p_learned):
        raise ValueError("cols contains indices outside [0, p_learned)")
    unmatched = np.setdiff1d(np.arange(p_learned), c)
    out = np.zeros((g.shape[0], p_true + unmatched.size), dtype=g.dtype)
    out[:, r] = g[:, c]
    out[:, p_true:] = g[:, unmatched]
    return out


def graph_metrics(
    g_true: np.ndarray,
    g_score: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    threshold: float = 0.5,
    learned_binary: np.ndarray | None = None,
) -> dict[str, float]:
    """Score a learned perturbation-to-latent graph against the ground truth.

    Parameters
    ----------
    g_true:
        Binary ground-truth graph, shape ``(K, p_true)``.
    g_score:
        Continuous learned scores, shape ``(K, p_learned)``.
    rows, cols:
        Latent matching from :func:`match_latents`.
    threshold:
        Edges are ``g_score > threshold`` unless ``learned_binary`` is given.
    learned_binary:
        Optional explicit binary learned graph, shape ``(K, p_learned)``.

    Returns
    -------
    dict
        ``graph_precision``, ``graph_recall``, ``graph_f1`` (zero division
        gives 0) and ``graph_auprc`` (average precision of the permuted scores;
        NaN when the truth has no edges).
    """
    truth = np.asarray(g_true)
    scores = np.asarray(g_score, dtype=np.float64)
    if truth.ndim != 2 or scores.ndim != 2:
        raise ValueError("g_true and g_score must be 2-D (n_perturbations, n_latents)")
    if truth.shape[0] != scores.shape[0]:
        raise ValueError(
            "g_true and g_score must have the same number of perturbations, got "
            f"{truth.shape[0]} and {scores.shape[0]}"
        )
    binary = scores > threshold if learned_binary is None else np.asarray(learned_binary)
    if binary.shape != scores.shape:
        raise ValueError(
            f"learned_binary must have shape {scores.shape}, got {binary.shape}"
        )

    p_true = truth.shape[1]
    perm_scores = permute_graph(scores, rows, cols, p_true)
    perm_binary = permute_graph(binary.astype(np.int64), rows, cols, p_true)
    padded_truth = np.zeros(perm_scores.shape, dtype=np.int64)
    padded_truth[:, :p_true] = truth != 0

    y_true = padded_truth.ravel()
    y_pred = (perm_binary != 0).astype(np.int64).ravel()
    auprc = (
        float(average_precision_score(y_true, perm_scores.ravel()))
        if y_true.any()
        else float("nan")
    )
    return {
        "graph_precision": float(precision_score(y_true, y_pred, zero_division=0)),
        "graph_recall": float(recall_score(y_true, y_pred, zero_division=0)),
        "graph_f1": float(f1_score(y_true, y_pred, zero_division=0)),
        "graph_auprc": auprc,
    }


# ----------------------------------------------------------------------------- UDR


def informative_latents(z: np.ndarray, min_variance: float = 0.01) -> np.ndarray:
    """Latents whose posterior means vary across cells (variance above ``min_variance``).

    A collapsed latent's posterior does not depend on the cell: its means are
    constant. Duan et al. (2020) threshold the KL to the prior at 0.01 nats; the
    variance of the posterior means (prior scale 1) is the analogue available from
    the means alone.
    """
    return _as_2d_float(z, "z").var(axis=0) > min_variance


def udr_pair(z_a: np.ndarray, z_b: np.ndarray, min_variance: float = 0.01) -> float:
    """Unsupervised disentanglement ranking score of two models (Duan et al. 2020, eq. 3).

    ``z_a`` and ``z_b`` are the posterior means of the same cells under two models.
    R is the ``|Spearman correlation|`` between their informative latents; the
    score rewards every latent of one model being similar to exactly one latent of
    the other:

    ``(sum_b r_b^2 / sum_a R_ab + sum_a r_a^2 / sum_b R_ab) / (d_a + d_b)``

    with ``r_a = max_b R_ab``, ``r_b = max_a R_ab`` and d the numbers of
    informative latents. 1: the two representations are the same up to
    permutation and monotone rescaling of each latent; near ``1 / d``: entangled
    differently. 0 when either model has no informative latent.
    """
    keep_a, keep_b = informative_latents(z_a, min_variance), informative_latents(z_b, min_variance)
    d_a, d_b = int(keep_a.sum()), int(keep_b.sum())
    if d_a == 0 or d_b == 0:
        return 0.0
    r = abs_correlation_matrix(np.asarray(z_a)[:, keep_a], np.asarray(z_b)[:, keep_b], "spearman")
    col_sum, row_sum = r.sum(axis=0), r.sum(axis=1)
    cols = np.divide(r.max(axis=0) ** 2, col_sum, out=np.zeros(d_b), where=col_sum > 0)
    rows = np.divide(r.max(axis=1) ** 2, row_sum, out=np.zeros(d_a), where=row_sum > 0)
    return float((cols.sum() + rows.sum()) / (d_a + d_b))


def udr(latents: list[np.ndarray], min_variance: float = 0.01) -> float:
    """UDR of a hyper-parameter setting: the median :func:`udr_pair` over every pair
    of its models (trained on the same cells from different initialisations).

    Needs at least two models; a setting whose models agree with each other up to
    permutation and rescaling of the latents scores near 1.
    """
    return udr_of_first(latents, [len(latents)], min_variance)[len(latents)]


def udr_of_first(latents: list[np.ndarray], counts, min_variance: float = 0.01) -> dict[int, float]:
    """:func:`udr` of the first r models of ``latents`` for each r in ``counts`` (2 <= r <=
    ``len(latents)``), each pair scored once: how the score depends on the number of replicates."""
    if len(latents) < 2:
        raise ValueError(f"UDR compares models pairwise: needs at least 2, got {len(latents)}")
    counts = sorted(set(int(r) for r in counts))
    if not counts or counts[0] < 2 or counts[-1] > len(latents):
        raise ValueError(f"UDR of the first r models: r from 2 to {len(latents)}, got {counts}")
    n = counts[-1]
    pairs = {(i, j): udr_pair(latents[i], latents[j], min_variance)
             for i in range(n) for j in range(i + 1, n)}
    return {r: float(np.median([v for (i, j), v in pairs.items() if j < r])) for r in counts}
