"""Tests of the figures (``sparseshift.arm_figures``, ``sweep_figures``, ``run_figures``): every
figure is written (PNG and PDF), the note is empty when nothing is missing and names what is
missing otherwise; ``permute_to_truth``."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from sparseshift import summary as summary_mod
from sparseshift.arm_figures import plot_table1
from sparseshift.methods import METHODS
from sparseshift.run_figures import (
    GRAPH_METHODS, _elbo_limits, permute_to_truth, plot_shift_heatmap, plot_target_graphs, plot_training_curves,
)
from sparseshift.sweep_figures import plot_alpha_sweep, plot_latent_sweep

SEEDS = (0, 1, 2)


def _summary(p_values=(15,), alphas=(100,), seeds=SEEDS, methods=METHODS, simulation="sim") -> pd.DataFrame:
    """A summary.tsv-like frame: every method at every p (sVAE+ at every α), every seed."""
    rng = np.random.default_rng(0)
    rows = []
    for p in p_values:
        for method in methods:
            for alpha in alphas if method == "svae_plus" else (np.nan,):
                for seed in seeds:
                    graph = method in GRAPH_METHODS
                    rows.append({
                        "simulation": simulation, "method": method, "seed": seed,
                        "run": f"p{p}" + (f"_alpha{alpha:g}" if method == "svae_plus" else ""),
                        "n_latent": p, "alpha": alpha, "beta": 1.0, "lambda": np.nan,
                        "mcc_pearson": rng.uniform(0.4, 0.9), "mcc_spearman": rng.uniform(0.3, 0.8),
                        "r2": rng.uniform(0.8, 0.9),
                        "graph_precision": rng.uniform() if graph else np.nan,
                        "graph_recall": rng.uniform() if graph else np.nan,
                        "graph_f1": rng.uniform() if graph else np.nan,
                        "graph_auprc": rng.uniform() if graph else np.nan,
                        "elbo_val": rng.normal(-350, 5), "inll": rng.normal(330, 5),
                    })
    df = pd.DataFrame(rows)
    for col in summary_mod.ID_COLUMNS + summary_mod.METRIC_COLUMNS:
        if col not in df:
            df[col] = np.nan
    return df


@pytest.fixture
def drawn(monkeypatch) -> list:
    """The figures saved during a test, in order (their axes can be read after saving)."""
    from matplotlib.figure import Figure

    figures, save = [], Figure.savefig

    def record(self, *args, **kwargs):
        if not figures or figures[-1] is not self:
            figures.append(self)
        return save(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", record)
    return figures


def _matrix(ax) -> np.ndarray:
    """The matrix a heatmap panel draws."""
    return np.asarray(ax.collections[0].get_array()).reshape(ax.collections[0].get_array().shape)


def _paths(tmp_path, name):
    return [tmp_path / f"{name}.png", tmp_path / f"{name}.pdf"]


def _written(paths) -> None:
    for path in paths:
        assert path.exists() and path.stat().st_size > 0, path
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths[1].read_bytes()[:5] == b"%PDF-"


# --------------------------------------------------------------------------- Table 1

PAPER = {
    "VAE": {"Pearson MCC": "0.46 ± 0.02", "I-NLL": "327.10 ± 2.81"},
    "sVAE+": {"Pearson MCC": "0.88 ± 0.04", "F1": "0.51 ± 0.09", "I-NLL": "315.43 ± 2.46", "seeds": "5"},
}


@pytest.mark.parametrize("paper", [None, PAPER])
def test_table1_complete(tmp_path, paper) -> None:
    table = summary_mod.table1(pd.concat([_summary(), _summary(simulation="other")]))
    paths = _paths(tmp_path, "table1")
    assert plot_table1(table, paths, paper=paper) == ""
    _written(paths)


def test_table1_notes_missing_method_seed_and_column(tmp_path) -> None:
    summary = _summary()
    svae_seed2 = (summary["method"] == "svae") & (summary["seed"] == 2)
    summary = summary[(summary["method"] != "ivae") & ~svae_seed2]
    table = summary_mod.table1(summary).drop(columns=["I-NLL"])
    paths = _paths(tmp_path, "table1")
    note = plot_table1(table, paths, paper=PAPER)
    _written(paths)
    assert "no row of iVAE" in note
    assert "sVAE p15: 2 of 3 seeds" in note
    assert "I-NLL" in note


def test_table1_metric_missing_for_one_method(tmp_path) -> None:
    summary = _summary()
    summary.loc[summary["method"] == "svae_plus", "inll"] = np.nan
    note = plot_table1(summary_mod.table1(summary), _paths(tmp_path, "t"))
    assert note == "no I-NLL for sVAE+"


def test_table1_empty(tmp_path) -> None:
    table = summary_mod.table1(_summary()).iloc[:0]
    paths = _paths(tmp_path, "empty")
    assert plot_table1(table, paths) == "no row in table 1"
    _written(paths)


# --------------------------------------------------------------------------- latent sweep (Table 4)


def test_latent_sweep_complete(tmp_path) -> None:
    paths = _paths(tmp_path, "latent")
    assert plot_latent_sweep(_summary(p_values=(5, 10, 15)), paths) == ""
    _written(paths)


def test_latent_sweep_notes(tmp_path) -> None:
    summary = _summary(p_values=(5, 10))
    summary = summary[~((summary["method"] == "ivae") & (summary["n_latent"] == 10))]
    drop = (summary["method"] == "svae_plus") & (summary["n_latent"] == 5) & (summary["seed"] == 0)
    summary = summary[~drop]
    summary = summary[summary["method"] != "vae"]
    paths = _paths(tmp_path, "latent")
    note = plot_latent_sweep(summary, paths, metric="r2")
    _written(paths)
    assert "no run of VAE" in note
    assert "iVAE: no p = 10" in note
    assert "sVAE+ p = 5: 2 of 3 seeds" in note


def test_latent_sweep_single_p_and_missing_metric(tmp_path) -> None:
    paths = _paths(tmp_path, "one")
    assert plot_latent_sweep(_summary(), paths) == "only p = 15 (no sweep)"
    _written(paths)
    paths = _paths(tmp_path, "none")
    note = plot_latent_sweep(_summary().drop(columns=["mcc_pearson"]), paths)
    assert "mcc_pearson" in note
    _written(paths)


# --------------------------------------------------------------------------- α sweep (Figure 4)


def test_alpha_sweep_complete(tmp_path) -> None:
    alphas = (1, 10, 100, 1000)
    summary = pd.concat([_summary(alphas=alphas), _summary(alphas=alphas, simulation="b")])
    paths = _paths(tmp_path, "alpha")
    assert plot_alpha_sweep(summary, paths) == ""
    _written(paths)


def test_alpha_sweep_without_svae_plus(tmp_path) -> None:
    summary = _summary(alphas=(10, 20))
    paths = _paths(tmp_path, "alpha")
    assert plot_alpha_sweep(summary[summary["method"] != "svae_plus"], paths) == "no sVAE+ run"
    _written(paths)


def test_alpha_sweep_notes(tmp_path) -> None:
    summary = _summary(alphas=(10, 20, 40))
    summary = summary[~((summary["alpha"] == 40) & (summary["seed"] > 0))]
    summary["inll"] = np.nan
    paths = _paths(tmp_path, "alpha")
    note = plot_alpha_sweep(summary, paths)
    _written(paths)
    assert "α = 40: 1 of 3 seeds" in note
    assert "no I-NLL" in note
    assert plot_alpha_sweep(_summary(alphas=(100,)), paths) == "only α = 100 (no sweep)"


# --------------------------------------------------------------------------- target graphs


def _graphs(k: int, p: int, rng):
    truth = np.zeros((k, p), dtype=bool)
    for a in range(k):
        truth[a, rng.choice(p, size=rng.integers(1, 4), replace=False)] = True
    learned = {m: (rng.uniform(size=(k, p)) < 0.2).astype(float) for m in GRAPH_METHODS}
    return truth, learned, [f"pert_{a:03d}" for a in range(k)]


@pytest.mark.parametrize("k", [12, 100])
def test_target_graphs_complete(tmp_path, k, drawn) -> None:
    truth, learned, perts = _graphs(k, 8, np.random.default_rng(1))
    paths = _paths(tmp_path, f"graphs{k}")
    assert plot_target_graphs(truth, learned, perts, paths, heldout=perts[-k // 5:]) == ""
    _written(paths)
    panels = [ax for ax in drawn[-1].axes if ax.collections]
    assert [ax.get_title() for ax in panels] == ["truth", "iVAE", "sVAE", "sVAE+"]
    assert _matrix(panels[0]).shape == (k, 8) and _matrix(panels[0]).sum() == truth.sum()
    for ax, method in zip(panels[1:], GRAPH_METHODS):  # each learned graph drawn, edge for edge
        assert _matrix(ax).sum() == learned[method].sum()


def test_target_graphs_notes(tmp_path) -> None:
    truth, learned, perts = _graphs(20, 6, np.random.default_rng(2))
    del learned["ivae"]
    learned["svae"] = learned["svae"][:15]  # wrong height: not drawn
    learned["svae_plus"] = np.hstack([learned["svae_plus"], np.ones((20, 2))])  # unmatched latents
    learned["vae"] = None  # no graph, as expected of a VAE
    paths = _paths(tmp_path, "graphs")
    note = plot_target_graphs(truth, learned, perts, paths, heldout=["pert_019", "nope"])
    _written(paths)
    assert "no graph of iVAE" in note
    assert "sVAE graph has shape (15, 6)" in note
    assert "1 held-out name(s) not among the perturbations" in note
    assert "VAE" not in note.replace("iVAE", "").replace("sVAE", "")


def test_permute_to_truth_undoes_permutation_sign_and_scale() -> None:
    rng = np.random.default_rng(3)
    n, p, k = 1500, 6, 25
    z_true = rng.normal(size=(n, p))
    perm = np.array([4, 2, 0, 5, 1, 3])  # learned latent j is true latent perm[j]
    scale = np.array([2.0, -0.5, 3.0, -1.5, 0.3, -4.0])
    z_learned = z_true[:, perm] * scale + rng.normal(scale=0.05, size=(n, p))
    truth = (rng.uniform(size=(k, p)) < 0.3).astype(int)
    learned_graph = truth[:, perm]  # the same graph, columns in the learned order
    out = permute_to_truth(z_true, z_learned, learned_graph)
    np.testing.assert_array_equal(out, truth)

    # A learned latent matched to nothing (pure noise, p_learned > p_true) is appended last.
    extra = rng.normal(size=(n, 1))
    graph_extra = np.hstack([learned_graph[:, :2], np.full((k, 1), 7), learned_graph[:, 2:]])
    z_extra = np.hstack([z_learned[:, :2], extra, z_learned[:, 2:]])
    out = permute_to_truth(z_true, z_extra, graph_extra)
    assert out.shape == (k, p + 1)
    np.testing.assert_array_equal(out[:, :p], truth)
    assert (out[:, p] == 7).all()


# --------------------------------------------------------------------------- shift heatmap (Figure 2)


def test_shift_heatmap(tmp_path, drawn) -> None:
    rng = np.random.default_rng(4)
    shifts = rng.normal(0, 3, size=(30, 8)) * (rng.uniform(size=(30, 8)) < 0.2)
    perts = [f"g{a}" for a in range(30)]
    paths = _paths(tmp_path, "shifts")
    assert plot_shift_heatmap(shifts, perts, paths, heldout=perts[-5:]) == ""
    _written(paths)
    heatmap = next(ax for ax in drawn[-1].axes if ax.collections and ax.collections[0].get_array() is not None
                   and _matrix(ax).shape == (30, 8))
    assert heatmap.get_xlabel() == "latent" and heatmap.get_ylabel() == "perturbation (* held out)"
    # clustered: rows reordered, every shift drawn once
    np.testing.assert_allclose(np.sort(_matrix(heatmap).ravel()), np.sort(shifts.ravel()))

    paths = _paths(tmp_path, "one")
    assert "not clustered" in plot_shift_heatmap(shifts[:1], perts[:1], paths)
    _written(paths)

    shifts[0, 0] = np.nan
    paths = _paths(tmp_path, "nan")
    assert "1 missing shift value" in plot_shift_heatmap(shifts, perts, paths)
    _written(paths)

    paths = _paths(tmp_path, "empty")
    assert plot_shift_heatmap(np.zeros((0, 8)), [], paths) == "no learned shift"
    _written(paths)


# --------------------------------------------------------------------------- training curves


def _history(method: str, epochs: int = 60, warmup: int = 10) -> pd.DataFrame:
    epoch = np.arange(1, epochs + 1)
    elbo = -350 - 2000 * np.exp(-epoch / 3)  # the first epochs' huge negative ELBOs
    sparse = method in ("svae", "svae_plus")
    return pd.DataFrame({
        "epoch": epoch, "kl_weight": np.minimum(1.0, (epoch - 1) / warmup), "loss": -elbo, "recon": -elbo,
        "kl": 10.0, "penalty": 0.0, "elbo_train": elbo, "elbo_val": elbo - 3,
        "mask_density": np.linspace(1, 0.1, epochs) if sparse else np.nan, "train_seconds": 0.1,
    })


def test_training_curves_complete(tmp_path, drawn) -> None:
    paths = _paths(tmp_path, "curves")
    histories = {m: _history(m) for m in METHODS}
    histories["svae_plus"] = [_history("svae_plus"), _history("svae_plus")]  # several seeds
    assert plot_training_curves(histories, paths) == ""
    _written(paths)
    elbo, density = drawn[-1].axes[:2]
    assert elbo.get_xlabel() == "epoch" and "ELBO" in elbo.get_ylabel()
    assert len([line for line in elbo.lines if len(line.get_xdata()) == 60]) >= 6  # a curve per model
    assert len(density.lines) == 3  # the mask density of sVAE and of sVAE+'s two seeds
    lo, hi = _elbo_limits([_history("vae")])
    assert lo > -450 and hi < -340  # the warm-up epochs (down to -2,000) do not set the y range


def test_training_curves_notes(tmp_path) -> None:
    histories = {m: _history(m) for m in ("vae", "svae")}
    histories["svae"]["mask_density"] = np.nan
    histories["ivae"] = _history("ivae").drop(columns=["elbo_val"])
    paths = _paths(tmp_path, "curves")
    note = plot_training_curves(histories, paths)
    _written(paths)
    assert "no history of β-VAE, sVAE+" in note
    assert "no validation ELBO for iVAE" in note
    assert "no mask density for sVAE" in note

    paths = _paths(tmp_path, "nothing")
    assert plot_training_curves({}, paths) == "no history of VAE, β-VAE, iVAE, sVAE, sVAE+"
    _written(paths)
