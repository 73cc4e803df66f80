"""How far each model's latent space is an affine image of the true latents, on unseen perturbations.

    python docs/scripts/latent_linearity.py RESULTS [RESULTS ...]

For every run of the simulation arm under RESULTS (``simulation/<sim>/seed<k>/<method>/<run>``
with a ``latents.npz``), an affine map from the true latents to the learned posterior means is
fitted on the training perturbations' cells and scored (R²) on the held-out perturbations' cells,
which the model never saw. A high held-out R² means that a held-out perturbation's shift of the
true latents is a constant shift of the learned ones too, which the transfer protocol (step 3:
fit a dense μ for each held-out perturbation) can represent whether or not the model is
disentangled. R² is averaged uniformly over the learned latents. Beside it: the run's own R² in
the metrics' direction (learned → true, training cells; ``metrics.json``), its Pearson MCC and
I-NLL, and per dataset (simulation and seed) the Spearman correlation between the held-out R²
and the I-NLL over its runs.
"""

import argparse
import json
import sys
from pathlib import Path

import anndata as ad
import numpy as np
from scipy.stats import spearmanr
from sklearn.linear_model import LinearRegression

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "workflow" / "scripts"))
from sparseshift.data import load_latents, training_cells  # noqa: E402


def heldout_r2(z_true: np.ndarray, z_learned: np.ndarray, train: np.ndarray) -> float:
    """R² (uniform over the learned latents) on the cells outside ``train`` of the affine map
    from true to learned latents fitted on the cells in ``train``."""
    if train.all():
        return float("nan")
    forward = LinearRegression().fit(z_true[train], z_learned[train])
    return forward.score(z_true[~train], z_learned[~train])


def runs(results: Path):
    for latents in sorted(results.glob("simulation/*/seed*/*/*/latents.npz")):
        run = latents.parent
        yield run, run.parent.parent / "data.h5ad"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+")
    args = parser.parse_args()
    print("| run | held-out R² (true → learned, affine fit on training cells) | R² learned → true (metrics.json) "
          "| Pearson MCC | I-NLL |")
    print("|---|---|---|---|---|")
    data, per_dataset = {}, {}
    for results in args.results:
        for run, h5ad in runs(results):
            if h5ad not in data:
                adata = ad.read_h5ad(h5ad, backed="r")  # the true latents and the split, not the counts
                data[h5ad] = (np.asarray(adata.obsm["z_true"], float), training_cells(adata))
            z_true, train = data[h5ad]
            heldout = heldout_r2(z_true, np.asarray(load_latents(run / "latents.npz"), float), train)
            metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").exists() else {}
            r2, mcc, inll = (metrics.get(k, float("nan")) for k in ("r2", "mcc_pearson", "inll"))
            print(f"| {results.name}/{run.relative_to(results)} | {heldout:.3f} | {r2:.3f} | {mcc:.3f} | {inll:.2f} |")
            if np.isfinite(inll):
                per_dataset.setdefault(h5ad, []).append((heldout, inll))
    print()
    for h5ad, pairs in per_dataset.items():
        if len(pairs) > 2:
            rho = spearmanr(*zip(*pairs)).statistic
            print(f"{h5ad.parent}: Spearman(held-out R², I-NLL) = {rho:.2f} over {len(pairs)} runs")


if __name__ == "__main__":
    main()
