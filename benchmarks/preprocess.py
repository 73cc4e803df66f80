"""Benchmark of the Replogle preprocessing (sparseshift.replogle.preprocessing.preprocess).

Usage::

    python benchmarks/preprocess.py --gb 5 --workdir /tmp/replogle_bench

Generates, if absent, a synthetic input in the real file's schema and layout
(anndata 0.7 legacy h5ad, dense float32 X, 8,248 genes like
``K562_gwps_raw_singlecell_01.h5ad``, as many cells as needed for at least
``--gb`` GB) and a Table S3 workbook with the real file's proportions (about 7 %
of the perturbations in clusters, 1,186 program symbols, ~4 % control cells), then
times :func:`preprocess` on them and prints the input size, cells x genes in and
out, seconds, read throughput and the peak resident memory of this process
(``resource.getrusage``; the generation runs in a child process so that it does
not count).

Peak RSS of the whole process is best measured from outside, on a run whose
inputs already exist (a first run generates them)::

    /usr/bin/time -v python benchmarks/preprocess.py --gb 5 --workdir /tmp/replogle_bench

("Maximum resident set size" in kB). Expected: about output + one block of X
(≤ 512 MB) + obs. Throughput is that of the page cache when the input was just
written and fits in RAM; for disk throughput use an input larger than RAM or a
cold cache.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))  # this checkout's sparseshift, not an installed copy
sys.path.insert(0, str(ROOT / "tests"))  # the synthetic inputs of the tests (fixtures/)

from fixtures.replogle_synthetic import synthetic_genes, write_legacy_h5ad, write_table_s3  # noqa: E402
from sparseshift.io import atomic_path, configure_logging  # noqa: E402
from sparseshift.replogle.preprocessing import preprocess  # noqa: E402

N_GENES = 8248  # columns of K562_gwps_raw_singlecell_01.h5ad
N_PROGRAM_GENES = 1186
CLUSTER_FRACTION = 681 / 9866  # perturbations in Table S3 clusters / perturbations of the genome-wide screen
CONTROL_FRACTION = 0.04
CELLS_PER_PERTURBATION = 200


def inputs_for(gb: float, workdir: Path) -> tuple[Path, Path]:
    tag = f"{gb:g}GB"
    return workdir / f"synthetic_gwps_{tag}.h5ad", workdir / f"table_s3_{tag}.xlsx"


def generate(gb: float, workdir: Path, seed: int = 0) -> dict:
    """Write the synthetic h5ad (≥ ``gb`` GB of X) and its Table S3 atomically."""
    h5ad, xlsx = inputs_for(gb, workdir)
    n_cells = max(1000, math.ceil(gb * 1e9 / (N_GENES * 4)))
    n_perts = max(100, n_cells // CELLS_PER_PERTURBATION)
    genes = synthetic_genes(N_GENES)
    rng = np.random.default_rng(seed)
    symbols = [s for _, s in genes]
    pool = list(dict.fromkeys(symbols))  # targets: measured genes first, made-up ones beyond
    pool += [f"T{i:05d}" for i in range(max(0, n_perts - len(pool)))]
    perts = [pool[i] for i in rng.permutation(len(pool))[:n_perts]]
    n_clustered = max(20, round(n_perts * CLUSTER_FRACTION))
    clustered = perts[:n_clustered]
    groups = np.array_split(clustered, max(2, n_clustered // 10))
    clusters = {f"synthetic cluster {k}": list(c) for k, c in enumerate(groups)}
    # TBCE (two Ensembl ids) is a program gene, HSPA14 not: 1,186 symbols → 1,187 columns as in the paper
    program_syms = sorted({"TBCE", *rng.choice(symbols[4:], N_PROGRAM_GENES - 1, replace=False)})
    programs = {f"program {k}": list(p) for k, p in enumerate(np.array_split(program_syms, 30))}
    controls = round(n_cells * CONTROL_FRACTION)
    tic = time.perf_counter()
    with atomic_path(h5ad) as tmp:
        info = write_legacy_h5ad(tmp, n_cells, genes, perts, controls=controls, seed=seed,
                                 strong=clustered[:5])
    with atomic_path(xlsx) as tmp:
        write_table_s3(tmp, clusters, programs)
    info.pop("perturbation_of_cell")
    info["generate_seconds"] = time.perf_counter() - tic
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=5.0, help="minimum size of the synthetic X (GB)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/replogle_bench"))
    ap.add_argument("--chunk-rows", type=int, default=16384)
    ap.add_argument("--max-controls", type=int, default=None)
    ap.add_argument("--no-controls", action="store_true", help="drop the non-targeting cells")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    h5ad, xlsx = inputs_for(args.gb, args.workdir)

    if args.generate_only:
        print(json.dumps(generate(args.gb, args.workdir, args.seed)))
        return 0
    if not (h5ad.exists() and xlsx.exists()):
        print(f"generating {h5ad} (≥ {args.gb:g} GB) and {xlsx} …", flush=True)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--gb", str(args.gb),
               "--workdir", str(args.workdir), "--seed", str(args.seed), "--generate-only"]
        subprocess.run(cmd, check=True)

    configure_logging(None)
    logging.getLogger().setLevel(logging.WARNING)
    out = args.workdir / f"processed_{args.gb:g}GB.h5ad"
    tic = time.perf_counter()
    report = preprocess(h5ad, xlsx, out, chunk_rows=args.chunk_rows, keep_controls=not args.no_controls,
                        max_controls=args.max_controls, seed=args.seed)
    seconds = time.perf_counter() - tic
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    out_mb = report["n_cells_out"] * report["n_genes_out"] * 4 / 1e6
    block_mb = min(report["chunk_rows"], report["n_cells_in"]) * report["n_genes_in"] * 4 / 1e6
    print(f"machine            {platform.node()} ({os.cpu_count()} CPUs), python {platform.python_version()}")
    print(f"input              {h5ad} ({report['input_bytes'] / 1e9:.3f} GB)")
    print(f"cells x genes in   {report['n_cells_in']:,} x {report['n_genes_in']:,}")
    print(f"cells x genes out  {report['n_cells_out']:,} x {report['n_genes_out']:,} "
          f"({report['n_controls_out']:,} controls; X {out_mb:.0f} MB)")
    print(f"block              {report['chunk_rows']:,} rows ({block_mb:.0f} MB)")
    print(f"seconds            {seconds:.1f} (streaming X {report['x_seconds']:.2f})")
    print(f"read throughput    {report['bytes_read'] / 1e6 / report['x_seconds']:.0f} MB/s "
          f"({report['bytes_read'] / 1e9:.2f} GB read)")
    print(f"peak RSS           {peak_mb:.0f} MB "
          f"(this process; output + one block = {out_mb + block_mb:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
