"""Does a larger minibatch keep the quality? sVAE+ on one simulated dataset at several batch sizes.

Usage: python docs/scripts/batch_quality.py DATA.h5ad [--batch-sizes 128 256 512 1024]
       [--epochs 300] [--alpha 100] [--threads 1] [--scale-lr]

Trains the pipeline's sVAE+ (``train_runs``, the paper configuration's settings: 300 epochs,
50 warm-up epochs, lr 0.001, alpha 100) on ``DATA.h5ad`` once per batch size and prints, per
batch size, the Pearson MCC, the graph F1 on the training perturbations, the validation ELBO,
the mask density and the seconds per epoch of the minibatch loop. ``--scale-lr`` multiplies
the learning rate by sqrt(batch / 128) (the mask logits move about one learning rate per
Adam step, and a larger batch takes fewer steps per epoch).
"""

import argparse
import math
import sys

import pandas as pd
import torch
from sparseshift.io import read_dataset
from sparseshift.model import ModelConfig
from sparseshift.data import perturbation_labels
from sparseshift.runs import evaluate_run, train_runs
from sparseshift.train import TrainConfig


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 256, 512, 1024])
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--alpha", type=float, default=100.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--scale-lr", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    adata = read_dataset(args.data)
    _, names = perturbation_labels(adata)
    rows = []
    for batch in args.batch_sizes:
        lr = 1e-3 * (math.sqrt(batch / 128) if args.scale_lr else 1.0)
        model_cfg = ModelConfig(method="svae_plus", n_genes=adata.n_vars, n_latent=adata.uns["simulation"]["n_latent"],
                                n_perturbations=len(names), hyperparameters={"alpha": args.alpha})
        train_cfg = TrainConfig(epochs=args.epochs, batch_size=batch, lr=lr, warmup_epochs=50, seed=0)
        (model, history, latents, info), = train_runs([adata], [model_cfg], [train_cfg], "cpu", stacked=False)
        m = evaluate_run(adata, model, latents)
        rows.append({
            "batch_size": batch, "lr": lr, "mcc_pearson": round(m["mcc_pearson"], 3),
            "graph_f1": round(m["graph_f1"], 3), "elbo_val": round(info["elbo_val"], 2),
            "mask_density": round(float(history["mask_density"].iloc[-1]), 3),
            "s_per_epoch": round(float(history["train_seconds"].iloc[1:].median()), 3),
        })
        print(pd.DataFrame(rows[-1:]).to_csv(sep="\t", index=False, header=len(rows) == 1), end="", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
