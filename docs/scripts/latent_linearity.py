"""How far each model's latent space is an affine image of the true latents, on unseen perturbations.

    python docs/scripts/latent_linearity.py RESULTS [RESULTS ...]

For every run of the simulation arm under RESULTS (``simulation/<sim>/seed<k>/<method>/<run>``
with a ``latents.npz``), an affine map from the true latents to the learned posterior means is
fitted on the training perturbations' cells and scored (R²) on the held-out perturbations' cells,
which the model never saw. A high held-out R² means that a held-out perturbation's shift of the
true latents is a constant shift of the learned ones too, which the transfer protocol (step 3:
fit a dense μ for each held-out perturbation) can represent whether or not the model is
disentangled. It also prints the regression in the metrics' direction (learned → true, all
cells) for reference, the run's Pearson MCC and I-NLL, and per dataset (simulation and seed) the
Spearman correlation between the held-out R² and the I-NLL over its runs.
"""

import argparse
import json
from pathlib import Path

import anndata as ad
import numpy as np
from scipy.stats import spearmanr
from sklearn.linear_model import LinearRegression


def scores(z_true: np.ndarray, z_learned: np.ndarray, train: np.ndarray) -> tuple[float, float]:
    """(held-out R² of true → learned fitted on training cells, R² of learned → true on all cells)."""
    forward = LinearRegression().fit(z_true[train], z_learned[train])
    # variance-weighted: near-constant (collapsed) learned latents weigh nothing
    heldout = forward.score(z_true[~train], z_learned[~train]) if (~train).any() else float("nan")
    backward = LinearRegression().fit(z_learned, z_true).score(z_learned, z_true)
    return heldout, backward


def runs(results: Path):
    for latents in sorted(results.glob("simulation/*/seed*/*/*/latents.npz")):
        run = latents.parent
        yield run, run.parent.parent / "data.h5ad"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+")
    args = parser.parse_args()
    print("| run | held-out R² (true → learned, affine fit on training cells) | R² learned → true | Pearson MCC | I-NLL |")
    print("|---|---|---|---|---|")
    data, per_dataset = {}, {}
    for results in args.results:
        for run, h5ad in runs(results):
            if h5ad not in data:
                adata = ad.read_h5ad(h5ad)
                data[h5ad] = (np.asarray(adata.obsm["z_true"], float), adata.obs_names.to_numpy(), (adata.obs["split"] == "train").to_numpy())
            z_true, names, train = data[h5ad]
            npz = np.load(run / "latents.npz", allow_pickle=True)
            if not np.array_equal(npz["obs_names"], names):
                raise ValueError(f"{run / 'latents.npz'}: field obs_names: expected the cells of {h5ad} in its order")
            heldout, backward = scores(z_true, np.asarray(npz["z_mean"], float), train)
            metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").exists() else {}
            inll, mcc = metrics.get("inll", float("nan")), metrics.get("mcc_pearson", float("nan"))
            print(f"| {results.name}/{run.relative_to(results)} | {heldout:.3f} | {backward:.3f} | {mcc:.3f} | {inll:.2f} |")
            if np.isfinite(inll):
                per_dataset.setdefault(h5ad, []).append((heldout, inll))
    print()
    for h5ad, pairs in per_dataset.items():
        if len(pairs) > 2:
            rho = spearmanr(*zip(*pairs)).statistic
            print(f"{h5ad.parent}: Spearman(held-out R², I-NLL) = {rho:.2f} over {len(pairs)} runs")


if __name__ == "__main__":
    main()
