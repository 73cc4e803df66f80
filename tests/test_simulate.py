"""Tests for the sparse mechanism shift simulation (sparseshift.simulate)."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from sparseshift.io import write_h5ad as write_h5ad_atomic
from sparseshift.simulate import (
    SimulationConfig,
    decode,
    random_decoder,
    sample_targets,
    simulate,
)

SMALL = dict(
    n_latent=5,
    n_perturbations=6,
    n_heldout=2,
    cells_per_perturbation=40,
    n_genes=30,
    decoder_hidden=16,
    decoder_layers=3,
)


def small_config(**overrides: object) -> SimulationConfig:
    """A small, fast configuration with optional overrides."""
    return SimulationConfig(**{**SMALL, **overrides})


@pytest.fixture(scope="module")
def small_adata() -> ad.AnnData:
    return simulate(small_config(seed=1))


# --------------------------------------------------------------------- targets


@pytest.mark.parametrize("t_min,t_max", [(1, 3), (2, 2), (1, 5)])
def test_targets_without_replacement_in_range(t_min: int, t_max: int) -> None:
    cfg = SimulationConfig(
        n_latent=8, n_perturbations=400, n_heldout=0, targets_per_perturbation=(t_min, t_max)
    )
    targets, _ = sample_targets(cfg, np.random.default_rng(0))
    assert targets.shape == (400, 8) and targets.dtype == bool
    n_targets = targets.sum(axis=1)
    assert n_targets.min() >= t_min and n_targets.max() <= t_max
    # every count in the range occurs (distinct draws are never lost)
    assert set(np.unique(n_targets)) == set(range(t_min, t_max + 1))


def test_targets_without_replacement_exact() -> None:
    cfg = SimulationConfig(
        n_latent=3, n_perturbations=200, n_heldout=0, targets_per_perturbation=(3, 3)
    )
    targets, _ = sample_targets(cfg, np.random.default_rng(0))
    assert np.all(targets.sum(axis=1) == 3)


def test_targets_with_replacement_collapse() -> None:
    cfg = SimulationConfig(
        n_latent=3,
        n_perturbations=200,
        n_heldout=0,
        targets_per_perturbation=(3, 3),
        target_sampling="with_replacement",
    )
    targets, shifts = sample_targets(cfg, np.random.default_rng(0))
    n_targets = targets.sum(axis=1)
    assert n_targets.max() <= 3 and n_targets.min() >= 1
    assert np.any(n_targets < 3)
    assert np.any(n_targets == 3)
    assert np.all((shifts != 0) == targets)


def test_with_replacement_allows_targets_max_above_n_latent() -> None:
    """Drawing 1-4 targets among 2 latents is refused without replacement; with replacement
    (the released code) it is allowed, and repeated draws collapse: every perturbation ends
    with 1 or 2 distinct targets, both occurring."""
    settings = dict(n_latent=2, n_perturbations=50, n_heldout=0, targets_per_perturbation=(1, 4))
    with pytest.raises(ValueError, match="must not exceed n_latent"):
        SimulationConfig(**settings, target_sampling="without_replacement")
    cfg = SimulationConfig(**settings, target_sampling="with_replacement")
    targets, shifts = sample_targets(cfg, np.random.default_rng(3))
    assert set(targets.sum(axis=1)) == {1, 2}
    assert np.all((shifts != 0) == targets)


def test_shift_distribution() -> None:
    cfg = SimulationConfig(
        n_latent=10, n_perturbations=3000, n_heldout=0, targets_per_perturbation=(1, 3),
        effect_mean=5.0, effect_sd=0.5,
    )
    targets, shifts = sample_targets(cfg, np.random.default_rng(7))
    assert shifts.shape == targets.shape
    assert np.all(shifts[~targets] == 0.0)
    on = shifts[targets]
    assert np.all(on != 0.0)
    mag = np.abs(on)
    assert abs(mag.mean() - 5.0) < 0.1
    assert abs(mag.std() - 0.5) < 0.05
    frac_pos = np.mean(on > 0)
    assert 0.45 < frac_pos < 0.55


# --------------------------------------------------------------------- decoder


def test_decoder_weights_orthogonal() -> None:
    cfg = small_config()
    weights = random_decoder(cfg, np.random.default_rng(0))
    assert len(weights) == cfg.decoder_layers + 1
    shapes = [w.shape for w in weights]
    assert shapes[0] == (cfg.n_latent, cfg.decoder_hidden)
    assert shapes[-1] == (cfg.decoder_hidden, cfg.n_genes)
    assert all(s == (cfg.decoder_hidden, cfg.decoder_hidden) for s in shapes[1:-1])
    for w in weights:
        small = min(w.shape)
        gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
        np.testing.assert_allclose(gram, np.eye(small), atol=1e-10)


def test_decoder_linear_when_no_hidden_layers() -> None:
    cfg = small_config(decoder_layers=0)
    weights = random_decoder(cfg, np.random.default_rng(0))
    assert [w.shape for w in weights] == [(cfg.n_latent, cfg.n_genes)]


def test_decode_proportions_sum_to_one_and_stable() -> None:
    cfg = small_config()
    rng = np.random.default_rng(0)
    weights = random_decoder(cfg, rng)
    z = rng.standard_normal((50, cfg.n_latent)) * 5.0
    z[0] = 1e4  # huge logits must not overflow
    rho = decode(weights, z)
    assert rho.shape == (50, cfg.n_genes)
    assert np.all(np.isfinite(rho)) and np.all(rho >= 0)
    np.testing.assert_allclose(rho.sum(axis=1), 1.0, atol=1e-12)


def test_decode_standardized_logits_and_softmax_over_cells() -> None:
    cfg = small_config()
    rng = np.random.default_rng(3)
    weights = random_decoder(cfg, rng)
    z = rng.standard_normal((200, cfg.n_latent))
    plain = np.log(decode(weights, z))
    scaled = np.log(decode(weights, z, standardize_logits=True))
    # log-proportions are logits minus a per-cell constant: centre each row to compare
    plain -= plain.mean(axis=1, keepdims=True)
    scaled -= scaled.mean(axis=1, keepdims=True)
    ratio = scaled / plain
    np.testing.assert_allclose(ratio, ratio.flat[0], rtol=1e-8)  # one global rescaling
    assert ratio.flat[0] > 1.0  # the raw logits of an orthogonal MLP vary little
    over_cells = decode(weights, z, standardize_logits=True, softmax_over="cells")
    np.testing.assert_allclose(over_cells.sum(axis=0), 1.0, atol=1e-12)


def test_softmax_over_cells_gives_library_size_per_gene() -> None:
    a = simulate(small_config(softmax_over="cells", library_size=1e5))
    col_sums = a.X.astype(np.float64).sum(axis=0)
    assert np.all(np.abs(col_sums / 1e5 - 1.0) < 0.02)


def test_decode_applies_leaky_relu() -> None:
    w1 = np.array([[1.0, -1.0]])
    w2 = np.eye(2)
    rho = decode([w1, w2], np.array([[2.0]]))
    # hidden = [2, -2] -> leaky -> [2, -0.4]; softmax
    logits = np.array([2.0, -0.4])
    expected = np.exp(logits) / np.exp(logits).sum()
    np.testing.assert_allclose(rho[0], expected)


# ------------------------------------------------------------------ simulation


def test_simulate_structure(small_adata: ad.AnnData) -> None:
    cfg = small_config(seed=1)
    a = small_adata
    assert a.shape == (cfg.n_perturbations * cfg.cells_per_perturbation, cfg.n_genes)
    assert isinstance(a.X, np.ndarray) and a.X.dtype == np.float32
    assert a.obs_names[0] == "cell_000000" and a.obs_names[-1] == "cell_000239"
    assert list(a.var_names[:2]) == ["gene_000", "gene_001"]
    names = [f"pert_{i:03d}" for i in range(cfg.n_perturbations)]
    assert list(a.obs["perturbation"].cat.categories) == names
    assert list(a.uns["perturbations"]) == names
    np.testing.assert_array_equal(
        np.asarray(a.obs["perturbation"].cat.codes), a.obs["perturbation_index"].to_numpy()
    )
    assert np.issubdtype(a.obs["perturbation_index"].dtype, np.integer)
    assert a.obsm["z_true"].shape == (a.n_obs, cfg.n_latent)
    assert a.obsm["z_true"].dtype == np.float32
    assert a.uns["targets"].dtype == np.int8 and a.uns["targets"].shape == (6, 5)
    assert set(np.unique(a.uns["targets"])) <= {0, 1}
    assert a.uns["shifts"].dtype == np.float32 and a.uns["shifts"].shape == (6, 5)
    np.testing.assert_array_equal(a.uns["shifts"] != 0, a.uns["targets"] == 1)
    assert a.uns["simulation"] == cfg.to_dict()


def test_perturbation_name_width_grows() -> None:
    a = simulate(small_config(n_perturbations=1001, n_heldout=1, cells_per_perturbation=1,
                              n_genes=5, decoder_layers=1, decoder_hidden=4))
    cats = list(a.obs["perturbation"].cat.categories)
    assert cats[0] == "pert_0000" and cats[-1] == "pert_1000"


def test_split_sizes(small_adata: ad.AnnData) -> None:
    cfg = small_config(seed=1)
    split = small_adata.obs["split"]
    assert set(split.cat.categories) == {"train", "heldout"}
    heldout = (split == "heldout").to_numpy()
    assert heldout.sum() == cfg.n_heldout * cfg.cells_per_perturbation
    idx = small_adata.obs["perturbation_index"].to_numpy()
    expected_heldout = set(range(cfg.n_perturbations - cfg.n_heldout, cfg.n_perturbations))
    assert set(np.unique(idx[heldout])) == expected_heldout
    assert set(np.unique(idx[~heldout])) == set(range(cfg.n_perturbations - cfg.n_heldout))
    # every perturbation has exactly cells_per_perturbation cells
    assert np.all(np.bincount(idx) == cfg.cells_per_perturbation)


def test_latent_means_match_shifts() -> None:
    cfg = small_config(n_perturbations=10, n_heldout=3, cells_per_perturbation=200, seed=4)
    a = simulate(cfg)
    idx = a.obs["perturbation_index"].to_numpy()
    z = a.obsm["z_true"].astype(np.float64)
    counts = np.bincount(idx)
    means = np.stack([np.bincount(idx, weights=z[:, k]) for k in range(cfg.n_latent)], 1)
    means /= counts[:, None]
    assert np.max(np.abs(means - a.uns["shifts"])) < 0.3
    # residual noise is unit variance
    resid = z - a.uns["shifts"][idx]
    assert abs(resid.std() - 1.0) < 0.05


@pytest.mark.parametrize("library_size", [1e5, 1e6])
def test_counts_are_poisson_integers(library_size: float) -> None:
    a = simulate(small_config(library_size=library_size, seed=2))
    x = a.X
    assert np.all(x >= 0)
    np.testing.assert_array_equal(x, np.round(x))
    row_sums = x.astype(np.float64).sum(axis=1)
    assert np.all(np.abs(row_sums / library_size - 1.0) < 0.01)


def test_counts_follow_decoded_proportions() -> None:
    cfg = small_config(seed=5)
    a = simulate(cfg)
    rng = np.random.default_rng(cfg.seed)
    sample_targets(cfg, rng)
    weights = random_decoder(cfg, rng)
    rho = decode(weights, a.obsm["z_true"].astype(np.float64), cfg.standardize_logits, cfg.softmax_over)
    expected = cfg.library_size * rho
    x = a.X.astype(np.float64)
    # Pearson residuals of a Poisson are ~unit variance (z_true is float32-rounded)
    resid = (x - expected) / np.sqrt(np.maximum(expected, 1.0))
    assert abs(resid.mean()) < 0.05
    assert 0.8 < resid.std() < 1.2


# ----------------------------------------------------------------- determinism


def test_same_seed_identical() -> None:
    cfg = small_config(seed=11)
    a, b = simulate(cfg), simulate(cfg)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.obsm["z_true"], b.obsm["z_true"])
    np.testing.assert_array_equal(a.uns["targets"], b.uns["targets"])
    np.testing.assert_array_equal(a.uns["shifts"], b.uns["shifts"])


def test_different_seed_differs() -> None:
    a, b = simulate(small_config(seed=11)), simulate(small_config(seed=12))
    assert not np.array_equal(a.X, b.X)
    assert not np.array_equal(a.obsm["z_true"], b.obsm["z_true"])


def test_written_files_identical_for_same_seed(tmp_path: Path) -> None:
    cfg = small_config(seed=21)
    p1, p2 = tmp_path / "a.h5ad", tmp_path / "b.h5ad"
    write_h5ad_atomic(simulate(cfg), p1)
    write_h5ad_atomic(simulate(cfg), p2)
    assert p1.read_bytes() == p2.read_bytes()  # same seed => same file, byte for byte
    r1, r2 = ad.read_h5ad(p1), ad.read_h5ad(p2)
    np.testing.assert_array_equal(r1.X, r2.X)
    np.testing.assert_array_equal(r1.obsm["z_true"], r2.obsm["z_true"])
    np.testing.assert_array_equal(r1.uns["targets"], r2.uns["targets"])
    np.testing.assert_array_equal(r1.uns["shifts"], r2.uns["shifts"])
    assert r1.obs.equals(r2.obs)


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "overrides,field",
    [
        (dict(n_latent=15, targets_per_perturbation=(1, 16)), "targets_max"),
        (dict(targets_per_perturbation=(3, 2)), "targets_min"),
        (dict(targets_per_perturbation=(0, 3)), "targets_min"),
        (dict(n_perturbations=10, n_heldout=10), "n_heldout"),
        (dict(n_heldout=-1), "n_heldout"),
        (dict(n_latent=0), "n_latent"),
        (dict(n_perturbations=0), "n_perturbations"),
        (dict(cells_per_perturbation=0), "cells_per_perturbation"),
        (dict(n_genes=-5), "n_genes"),
        (dict(decoder_hidden=0), "decoder_hidden"),
        (dict(decoder_layers=-1), "decoder_layers"),
        (dict(library_size=0.0), "library_size"),
        (dict(effect_sd=-0.1), "effect_sd"),
        (dict(target_sampling="sometimes"), "target_sampling"),
        (dict(seed=-1), "seed"),
        (dict(n_latent=2.5), "n_latent"),
    ],
)
def test_invalid_config_raises(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SimulationConfig(**overrides)


def test_default_config_valid_and_frozen() -> None:
    cfg = SimulationConfig()
    assert cfg.library_size == 1e5 and cfg.target_sampling == "without_replacement"
    with pytest.raises(AttributeError):
        cfg.seed = 3  # type: ignore[misc]


# ------------------------------------------------------------------- h5ad I/O


def test_h5ad_round_trip(tmp_path: Path, small_adata: ad.AnnData) -> None:
    path = tmp_path / "sub" / "sim.h5ad"
    write_h5ad_atomic(small_adata, path)
    assert path.exists()
    assert [p.name for p in path.parent.iterdir()] == ["sim.h5ad"]  # no temp left
    r = ad.read_h5ad(path)
    np.testing.assert_array_equal(r.X, small_adata.X)
    np.testing.assert_array_equal(r.uns["targets"], small_adata.uns["targets"])
    assert r.uns["targets"].dtype == np.int8
    np.testing.assert_array_equal(r.uns["shifts"], small_adata.uns["shifts"])
    np.testing.assert_array_equal(r.obsm["z_true"], small_adata.obsm["z_true"])
    for col in ("perturbation", "perturbation_index", "split"):
        assert r.obs[col].equals(small_adata.obs[col])
    assert list(r.obs["perturbation"].cat.categories) == list(
        small_adata.obs["perturbation"].cat.categories
    )
    assert list(r.uns["perturbations"]) == list(small_adata.uns["perturbations"])
    sim = {k: (v.item() if isinstance(v, np.generic) else v.tolist() if isinstance(v, np.ndarray) else v)
           for k, v in r.uns["simulation"].items()}
    assert sim == small_adata.uns["simulation"]


def test_write_atomic_cleans_up_on_failure(
    tmp_path: Path, small_adata: ad.AnnData, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "sim.h5ad"
    path.write_bytes(b"previous")

    def boom(src: object, dst: object) -> None:
        raise OSError("simulated failure")

    monkeypatch.setattr("sparseshift.io.os.replace", boom)
    with pytest.raises(OSError, match="simulated failure"):
        write_h5ad_atomic(small_adata, path)
    assert path.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["sim.h5ad"]


def test_out_of_domain_heldout_perturbations():
    """Held-out perturbations drawn with their own sparsity and effect size; the training
    perturbations' targets are those of the in-domain simulation with the same seed."""
    common = dict(n_latent=8, n_perturbations=30, n_heldout=10, cells_per_perturbation=3, n_genes=12, seed=4)
    base = simulate(SimulationConfig(**common))
    ood = simulate(SimulationConfig(**common, heldout={"targets_per_perturbation": (5, 6), "effect_mean": 1.0}))
    t_base, t_ood = np.asarray(base.uns["targets"]), np.asarray(ood.uns["targets"])
    assert np.array_equal(t_base[:20], t_ood[:20])
    assert t_base[20:].sum(1).max() <= 3 and t_ood[20:].sum(1).min() >= 5
    shifts = np.abs(np.asarray(ood.uns["shifts"])[20:][t_ood[20:] == 1])
    assert abs(shifts.mean() - 1.0) < 0.3
    with pytest.raises(ValueError, match="heldout_targets_max"):
        SimulationConfig(**common, heldout={"targets_per_perturbation": (2, 9)})
