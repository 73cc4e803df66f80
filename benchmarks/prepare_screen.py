"""Benchmark of a screen's preparation (sparseshift.screens.prepare.prepare_screen) on a large CSR input.

Usage::

    python benchmarks/prepare_screen.py --cells 100000 --genes 30000 --nnz 1000 --workdir /tmp/screen_bench

Generates, if absent, a screen in the scPerturb layout (current anndata h5ad, CSR float32
integer counts in ``X``, ``obs["perturbation"]`` with 1,000 perturbations and ``control``), about
``--nnz`` stored values per cell, written block by block so that the generation never holds the
matrix; then prepares it (2,000 highly variable genes by scanpy's seurat_v3, every block's counts
checked) in a child process and prints cells x genes in and out, the input's size, seconds and
the child's peak resident memory (``resource.getrusage(RUSAGE_CHILDREN)``: the preparation alone).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))  # this checkout's sparseshift, not an installed copy


def write_screen(path: Path, n_cells: int, n_genes: int, nnz: int, seed: int = 0, block: int = 5000) -> None:
    """A CSR screen written with h5py block by block (anndata's on-disk encoding)."""
    import anndata
    import h5py
    import pandas as pd
    from anndata.io import write_elem

    rng = np.random.default_rng(seed)
    n_perts = 1000
    labels = np.where(rng.random(n_cells) < 0.05, "control", rng.integers(0, n_perts, n_cells).astype(str))
    labels = np.char.add(np.where(labels == "control", "", "P"), labels)
    labels[labels == "Pcontrol"] = "control"
    tmp = path.with_suffix(".part")
    with h5py.File(tmp, "w") as f:
        f.attrs["encoding-type"], f.attrs["encoding-version"] = "anndata", "0.1.0"
        write_elem(f, "obs", pd.DataFrame({"perturbation": pd.Categorical(labels)},
                                          index=[f"cell{i}" for i in range(n_cells)]))
        write_elem(f, "var", pd.DataFrame(index=[f"GENE{g:05d}" for g in range(n_genes)]))
        x = f.create_group("X")
        x.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": (n_cells, n_genes)})
        data = x.create_dataset("data", shape=(0,), maxshape=(None,), dtype=np.float32, chunks=(1 << 20,))
        indices = x.create_dataset("indices", shape=(0,), maxshape=(None,), dtype=np.int32, chunks=(1 << 20,))
        indptr = [np.zeros(1, dtype=np.int64)]
        for start in range(0, n_cells, block):
            rows = min(block, n_cells - start)
            cols = np.sort(rng.integers(0, n_genes, size=(rows, nnz)), axis=1)
            keep = np.ones_like(cols, dtype=bool)
            keep[:, 1:] = cols[:, 1:] != cols[:, :-1]  # each column once per row
            vals = (rng.poisson(1.0, size=cols.shape) + 1).astype(np.float32)
            n = data.shape[0]
            data.resize(n + keep.sum(), axis=0)
            indices.resize(n + keep.sum(), axis=0)
            data[n:] = vals[keep]
            indices[n:] = cols[keep]
            indptr.append(indptr[-1][-1] + np.cumsum(keep.sum(1)))
        x.create_dataset("indptr", data=np.concatenate(indptr))
        for key in ("layers", "obsm", "varm", "obsp", "varp", "uns"):
            write_elem(f, key, {})
    anndata.read_h5ad(tmp, backed="r").file.close()  # a readable h5ad
    tmp.rename(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=100_000)
    parser.add_argument("--genes", type=int, default=30_000)
    parser.add_argument("--nnz", type=int, default=1000, help="stored values per cell (before duplicates)")
    parser.add_argument("--n-genes", type=int, default=2000, help="highly variable genes kept")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/screen_bench"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    src = args.workdir / f"screen_{args.cells}x{args.genes}_{args.nnz}.h5ad"
    out = args.workdir / "prepared.h5ad"
    if args.child:  # the measured process: the preparation alone
        from sparseshift.screens.prepare import prepare_screen

        settings = {"name": "bench", "perturbation_key": "perturbation", "control": "control",
                    "combination_separator": None, "counts": None, "n_genes": args.n_genes, "genes": None,
                    "gene_symbols": None, "min_cells": 5, "max_cells": None, "batch_key": None,
                    "heldout": 0.1, "controls_in_training": True, "seed": 0}
        print(json.dumps(prepare_screen(src, settings, out)))
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    if not src.exists():
        tic = time.perf_counter()
        write_screen(src, args.cells, args.genes, args.nnz)
        print(f"generated {src} ({src.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - tic:.0f} s")
    print(f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    tic = time.perf_counter()
    res = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--child"], capture_output=True, text=True)
    if res.returncode:
        sys.exit(res.stderr)
    seconds = time.perf_counter() - tic
    report = json.loads(res.stdout.strip().splitlines()[-1])
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # kB -> GB
    print(f"input {report['n_cells_in']:,} cells x {report['n_genes_in']:,} genes, CSR, "
          f"{src.stat().st_size / 1e9:.2f} GB; output {report['n_cells_out']:,} cells x {report['n_genes_out']:,} "
          f"genes ({report['gene_selection']}), {report['n_perturbations']} perturbations, "
          f"{report['n_heldout']} held out")
    print(f"prepare_screen: {seconds:.1f} s (child process, imports included), peak RSS {peak:.2f} GB")


if __name__ == "__main__":
    main()
