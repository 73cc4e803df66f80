"""Unit tests for ``sparseshift.metrics``."""

from __future__ import annotations

import numpy as np
import pytest
from sparseshift import metrics


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


# --------------------------------------------------------------------------- latents


@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_mcc_invariant_to_permutation_sign_scale_shift(rng: np.random.Generator, method: str) -> None:
    n, p = 2000, 6
    z_true = rng.normal(size=(n, p))
    perm = np.array([3, 0, 5, 1, 4, 2])  # learned column j is true latent perm[j]
    scale = np.array([2.0, -0.5, 10.0, -3.0, 0.1, -1.0])
    shift = np.array([1.0, -2.0, 0.0, 5.0, -7.0, 0.3])
    z_learned = z_true[:, perm] * scale + shift

    score, rows, cols = metrics.match_latents(z_true, z_learned, method=method)

    assert score == pytest.approx(1.0, abs=1e-9)
    assert metrics.mcc(z_true, z_learned, method=method) == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_array_equal(rows, np.arange(p))
    # true latent rows[i] must be matched to the learned column holding it
    np.testing.assert_array_equal(perm[cols], rows)
    np.testing.assert_array_equal(cols, np.argsort(perm))


def test_mcc_of_noise_is_small(rng: np.random.Generator) -> None:
    n, p = 5000, 5
    z_true = rng.normal(size=(n, p))
    noise = rng.normal(size=(n, p))
    assert metrics.mcc(z_true, noise) < 0.1
    assert metrics.mcc(z_true, noise, method="spearman") < 0.1


def test_spearman_invariant_to_monotone_transform_but_pearson_not(rng: np.random.Generator) -> None:
    n, p = 2000, 4
    z_true = rng.normal(size=(n, p))
    z_learned = np.column_stack(
        [np.exp(2.0 * z_true[:, 0]), z_true[:, 1] ** 3, -np.exp(z_true[:, 2]), np.sinh(3.0 * z_true[:, 3])]
    )
    assert metrics.mcc(z_true, z_learned, method="spearman") == pytest.approx(1.0, abs=1e-9)
    assert metrics.mcc(z_true, z_learned, method="pearson") < 0.95


def test_match_latents_rectangular_and_constant_columns(rng: np.random.Generator) -> None:
    n = 1000
    z_true = rng.normal(size=(n, 3))
    z_learned = np.column_stack(
        [np.full(n, 4.2), z_true[:, 2], rng.normal(size=n), -z_true[:, 0], 0.5 * z_true[:, 1]]
    )
    corr = metrics.abs_correlation_matrix(z_true, z_learned)
    assert corr.shape == (3, 5)
    assert np.all(np.isfinite(corr))
    np.testing.assert_array_equal(corr[:, 0], 0.0)

    score, rows, cols = metrics.match_latents(z_true, z_learned)
    assert score == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_array_equal(rows, [0, 1, 2])
    np.testing.assert_array_equal(cols, [3, 4, 1])

    # fewer learned than true latents: only min(p) = 2 pairs are matched; the
    # constant learned column contributes correlation 0 to the mean
    score, rows, cols = metrics.match_latents(z_true, z_learned[:, [3, 0]])
    assert rows.size == cols.size == 2
    assert rows[cols == 0].tolist() == [0]
    assert score == pytest.approx(0.5, abs=1e-9)


def test_match_latents_rejects_bad_input(rng: np.random.Generator) -> None:
    with pytest.raises(ValueError):
        metrics.match_latents(rng.normal(size=(10, 2)), rng.normal(size=(11, 2)))
    with pytest.raises(ValueError):
        metrics.match_latents(rng.normal(size=(10, 2)), rng.normal(size=(10, 2)), method="kendall")


def test_r2_linear(rng: np.random.Generator) -> None:
    n, p = 3000, 5
    z_true = rng.normal(size=(n, p))
    mix = rng.normal(size=(p, p)) + 3.0 * np.eye(p)
    assert abs(np.linalg.det(mix)) > 1e-3
    z_learned = z_true @ mix + rng.normal(size=p)
    assert metrics.r2_linear(z_true, z_learned) > 0.999
    assert metrics.r2_linear(z_true, rng.normal(size=(n, p))) < 0.05


# --------------------------------------------------------------------------- graphs


def test_permute_graph_square_and_rectangular() -> None:
    g = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    # true 0 <- learned 2, true 1 <- learned 0, true 2 <- learned 1
    out = metrics.permute_graph(g, np.array([0, 1, 2]), np.array([2, 0, 1]), p_true=3)
    np.testing.assert_array_equal(out, [[3.0, 1.0, 2.0], [6.0, 4.0, 5.0]])

    # p_learned > p_true: unmatched learned column 1 is appended
    out = metrics.permute_graph(g, np.array([0, 1]), np.array([2, 0]), p_true=2)
    np.testing.assert_array_equal(out, [[3.0, 1.0, 2.0], [6.0, 4.0, 5.0]])

    # p_learned < p_true: unmatched true latent 1 gets a zero column
    out = metrics.permute_graph(g[:, :2], np.array([0, 2]), np.array([1, 0]), p_true=3)
    np.testing.assert_array_equal(out, [[2.0, 0.0, 1.0], [5.0, 0.0, 4.0]])


def test_graph_metrics_hand_computed_identity() -> None:
    g_true = np.array([[1, 0, 0], [0, 1, 1], [1, 0, 0]])  # 4 edges
    g_learned = np.array([[1, 0, 1], [0, 1, 0], [0, 0, 0]])  # TP (0,0),(1,1); FP (0,2)
    ident = np.arange(3)
    res = metrics.graph_metrics(g_true, g_learned.astype(float), ident, ident)
    assert res["graph_precision"] == pytest.approx(2 / 3)
    assert res["graph_recall"] == pytest.approx(1 / 2)
    assert res["graph_f1"] == pytest.approx(4 / 7)
    assert set(res) == {"graph_precision", "graph_recall", "graph_f1", "graph_auprc"}


def test_graph_metrics_threshold_and_explicit_binary() -> None:
    g_true = np.array([[1, 0], [0, 1]])
    scores = np.array([[0.9, 0.6], [0.2, 0.4]])
    ident = np.arange(2)
    res = metrics.graph_metrics(g_true, scores, ident, ident)  # edges: (0,0),(0,1)
    assert res["graph_precision"] == pytest.approx(1 / 2)
    assert res["graph_recall"] == pytest.approx(1 / 2)
    res = metrics.graph_metrics(g_true, scores, ident, ident, threshold=0.3)
    assert res["graph_recall"] == pytest.approx(1.0)
    assert res["graph_precision"] == pytest.approx(2 / 3)
    res = metrics.graph_metrics(g_true, scores, ident, ident, learned_binary=np.eye(2, dtype=int))
    assert res["graph_f1"] == pytest.approx(1.0)


def test_graph_metrics_applies_matching() -> None:
    g_true = np.array([[1, 0, 0], [0, 1, 1], [1, 0, 0]])
    perm = np.array([2, 0, 1])  # learned column j is true latent perm[j]
    g_learned = g_true[:, perm].astype(float)
    rows = np.arange(3)
    cols = np.argsort(perm)
    res = metrics.graph_metrics(g_true, g_learned, rows, cols)
    assert res["graph_f1"] == pytest.approx(1.0)
    assert res["graph_auprc"] == pytest.approx(1.0)
    # with the (wrong) identity matching the graph does not match perfectly
    wrong = metrics.graph_metrics(g_true, g_learned, rows, rows)
    assert wrong["graph_f1"] < 1.0


def test_graph_metrics_more_learned_than_true_latents() -> None:
    g_true = np.array([[1, 0], [0, 1]])
    # learned latents: 0 -> true 1, 2 -> true 0, 1 unmatched (has one edge)
    g_learned = np.array([[0.0, 0.9, 0.8], [0.7, 0.0, 0.1]])
    rows, cols = np.array([0, 1]), np.array([2, 0])
    res = metrics.graph_metrics(g_true, g_learned, rows, cols)
    assert res["graph_recall"] == pytest.approx(1.0)
    assert res["graph_precision"] == pytest.approx(2 / 3)
    assert res["graph_f1"] == pytest.approx(0.8)


def test_graph_metrics_fewer_learned_than_true_latents() -> None:
    g_true = np.array([[1, 1, 0], [0, 1, 1]])  # 4 edges
    # two learned latents matched to true 0 and 2; true latent 1 unmatched
    g_learned = np.array([[0.9, 0.0], [0.0, 0.9]])
    rows, cols = np.array([0, 2]), np.array([0, 1])
    res = metrics.graph_metrics(g_true, g_learned, rows, cols)
    assert res["graph_precision"] == pytest.approx(1.0)
    assert res["graph_recall"] == pytest.approx(1 / 2)  # both edges of true latent 1 missed
    assert res["graph_f1"] == pytest.approx(2 / 3)


def test_graph_auprc() -> None:
    g_true = np.array([[1, 0, 0], [0, 1, 1], [1, 0, 0]])
    ident = np.arange(3)
    perfect = np.where(g_true == 1, 0.6, 0.4) + np.arange(9).reshape(3, 3) * 1e-3
    assert metrics.graph_metrics(g_true, perfect, ident, ident)["graph_auprc"] == pytest.approx(1.0)

    constant = np.full((3, 3), 0.5)
    auprc = metrics.graph_metrics(g_true, constant, ident, ident)["graph_auprc"]
    assert auprc < 1.0
    assert auprc == pytest.approx(4 / 9)

    inverted = 1.0 - perfect
    assert metrics.graph_metrics(g_true, inverted, ident, ident)["graph_auprc"] < 4 / 9

    empty = metrics.graph_metrics(np.zeros((3, 3), dtype=int), perfect, ident, ident)
    assert np.isnan(empty["graph_auprc"])


# --------------------------------------------------------------------------- signed matching


def test_signed_matching_sends_flipped_latents_elsewhere(rng: np.random.Generator) -> None:
    """The released code's convention: with 7 of 15 latents sign-flipped, a perfect graph is
    scored below 1 after the signed matching and exactly 1 after the |r| matching."""
    n, p, k = 3000, 15, 100
    z_true = rng.normal(size=(n, p))
    flips = np.where(np.arange(p) < 7, -1.0, 1.0)
    z_learned = z_true * flips
    g_true = np.zeros((k, p), dtype=int)
    for i in range(k):
        g_true[i, rng.choice(p, size=rng.integers(1, 4), replace=False)] = 1
    mcc_abs, rows, cols = metrics.match_latents(z_true, z_learned)
    mcc_signed, rows_s, cols_s = metrics.match_latents(z_true, z_learned, signed=True)
    assert mcc_abs == pytest.approx(1.0)
    np.testing.assert_array_equal(cols, np.arange(p))
    assert not np.array_equal(cols_s, np.arange(p))  # flipped latents moved
    np.testing.assert_array_equal(cols_s[7:], np.arange(7, p))  # unflipped kept
    assert mcc_signed < 0.6  # 8 of 15 pairs right, the flipped ones matched to other latents
    f1_abs = metrics.graph_metrics(g_true, g_true, rows, cols)["graph_f1"]
    f1_signed = metrics.graph_metrics(g_true, g_true, rows_s, cols_s)["graph_f1"]
    assert f1_abs == pytest.approx(1.0)
    assert f1_signed < 0.8


def test_signed_and_abs_matching_agree_without_flips(rng: np.random.Generator) -> None:
    z_true = rng.normal(size=(2000, 5))
    perm = np.array([4, 2, 0, 1, 3])
    z_learned = 2.0 * z_true[:, perm] + 1.0
    a = metrics.match_latents(z_true, z_learned)
    s = metrics.match_latents(z_true, z_learned, signed=True)
    np.testing.assert_array_equal(a[2], s[2])
    assert a[0] == pytest.approx(s[0])


# --------------------------------------------------------------------------- UDR


def test_udr_ranks_same_above_entangled_above_unrelated(rng: np.random.Generator) -> None:
    """A permuted, monotonely rescaled copy scores near 1 (below it only by the sample
    correlations of independent latents), a rotated copy far lower, noise near 0."""
    z = rng.normal(size=(10000, 6))
    perm = np.array([5, 3, 1, 0, 2, 4])
    same = np.exp(z[:, perm]) * np.array([1, -2, 3, -1, 0.5, 4])  # monotone per latent
    rotated = z @ np.linalg.qr(rng.normal(size=(6, 6)))[0]
    score_same = metrics.udr_pair(z, same)
    assert score_same > 0.9
    assert metrics.udr_pair(same, z) == pytest.approx(score_same)  # symmetric
    assert metrics.udr_pair(z, rotated) < 0.6
    assert metrics.udr_pair(z, rng.normal(size=z.shape)) < 0.05
    # a setting: the median over its pairs
    assert metrics.udr([z, same, -z]) == pytest.approx(np.median(
        [metrics.udr_pair(z, same), metrics.udr_pair(z, -z), metrics.udr_pair(same, -z)]))


def test_udr_ignores_collapsed_latents(rng: np.random.Generator) -> None:
    z = rng.normal(size=(2000, 4))
    padded = np.column_stack([z, np.zeros(2000), np.full(2000, 0.3)])
    np.testing.assert_array_equal(metrics.informative_latents(padded), [True] * 4 + [False] * 2)
    assert metrics.udr_pair(z, padded[:, ::-1]) == pytest.approx(metrics.udr_pair(z, z[:, ::-1]))
    assert metrics.udr_pair(z, np.zeros((2000, 3))) == 0.0
    with pytest.raises(ValueError, match="at least 2"):
        metrics.udr([z])
