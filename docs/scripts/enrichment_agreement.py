"""Do a simulation's enrichment tables name the true latent each learned latent matches?

Usage: python docs/scripts/enrichment_agreement.py RESULTS_DIR SIMULATION SEED [SEED ...]

For every run of the simulation, learned latents are matched to true latents by the Pearson
MCC matching (as in the metrics); a learned latent "agrees" when its top gene set in gsea.tsv
(lowest FDR, then largest |NES|) is one of its matched true latent's programs (``true z<j>
up/down``), and when its most over-represented perturbation group in latent_targets.tsv
(lowest p) is ``targets of true z<j>``. Prints the shares per method, averaged over seeds.
"""

import re
import sys
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
from sparseshift import metrics


def true_latent(name: str) -> int:
    return int(re.search(r"z(\d+)", name).group(1))


def main(results, simulation, seeds):
    rows = []
    for seed in seeds:
        base = Path(results) / "simulation" / simulation / f"seed{seed}"
        data = anndata.read_h5ad(base / "data.h5ad")
        train = (data.obs["split"] == "train").to_numpy()
        z_true = np.asarray(data.obsm["z_true"])[train]
        for run in sorted(p for p in base.glob("*/*") if (p / "enrichment").is_dir()):
            z_hat = np.load(run / "latents.npz")["z_mean"][train]
            _, r, c = metrics.match_latents(z_true, z_hat, "pearson")
            match = dict(zip(c, r))
            row = {"method": run.parent.name, "seed": seed}
            gsea = pd.read_csv(run / "enrichment" / "gsea.tsv", sep="\t")
            top = gsea.assign(a=-gsea["nes"].abs()).sort_values(["latent", "fdr", "a"]).groupby("latent").head(1)
            row["gene_set_agrees"] = np.mean([true_latent(t) == match[k] for k, t in zip(top["latent"], top["term"])])
            row["gene_set_fdr<0.05"] = (top["fdr"] < 0.05).mean()
            targets = pd.read_csv(run / "enrichment" / "latent_targets.tsv", sep="\t")
            if len(targets):
                top = targets.sort_values(["latent", "pval"]).groupby("latent").head(1)
                row["targets_agree"] = np.mean([true_latent(g) == match[k] for k, g in zip(top["latent"], top["group"])])
                row["targets_fdr<0.05"] = (top["fdr"] < 0.05).mean()
            rows.append(row)
    table = pd.DataFrame(rows).groupby("method", sort=False).mean(numeric_only=True).drop(columns="seed")
    print(table.round(2).to_string())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3:]])
