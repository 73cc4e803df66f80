"""Is lower precision accurate enough for the likelihood? A trained model's per-cell
log p(x | z) in float32, bfloat16 and float16, against float64.

Usage: python docs/scripts/precision_check.py RUN_DIR DATA.h5ad

RUN_DIR holds a trained run (``model.pt``, ``model.json``); the latents are the posterior
means of the dataset's cells. Prints the mean and largest absolute error per cell (nats) of
each precision, computed with torch.autocast (CPU) as mixed-precision training would.
"""

import sys
from pathlib import Path

import numpy as np
import torch
from sparseshift.io import read_dataset
from sparseshift.model import SparseShiftVAE
from sparseshift.data import count_matrix


def main(run_dir, data_path):
    run = Path(run_dir)
    model = SparseShiftVAE.load(run / "model.pt", run / "model.json").eval()
    x = torch.as_tensor(count_matrix(read_dataset(data_path)))[:5000]
    with torch.no_grad():
        z = model.latent_means(x)
        ref = model.double().log_likelihood(x.double(), z.double())
        model.float()
        rows = [("float32", model.log_likelihood(x, z))]
        for dtype in (torch.bfloat16, torch.float16):
            with torch.autocast("cpu", dtype=dtype):
                rows.append((str(dtype).split(".")[1], model.log_likelihood(x, z).double()))
    print(f"# {x.shape[0]} cells x {x.shape[1]} genes; mean log p(x | z) {float(ref.mean()):.2f} nats per cell")
    print("precision\tmean_abs_error_nats\tmax_abs_error_nats")
    for name, value in rows:
        err = (value.double() - ref).abs().numpy()
        print(f"{name}\t{np.mean(err):.4g}\t{np.max(err):.4g}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
