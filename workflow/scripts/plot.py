"""Rule adapter: one figure of an arm's summary (methods, I-NLL, Table 1, sweeps)."""

import logging

import pandas as pd

from sparseshift import figures, io, plots

io.configure_logging(snakemake.log[0])
summary = pd.read_csv(snakemake.input.summary, sep="\t")
table1 = pd.read_csv(snakemake.input.table1, sep="\t")
by = snakemake.params.by
draw = {
    "methods": lambda paths: plots.plot_methods(summary, paths, by=by),
    "inll": lambda paths: plots.plot_inll(summary, paths, by=by),
    "table1": lambda paths: figures.plot_table1(table1, paths, paper=snakemake.params.paper or None, by=by),
    "latent_sweep": lambda paths: figures.plot_latent_sweep(summary, paths),
    "alpha_sweep": lambda paths: figures.plot_alpha_sweep(summary, paths),
}[snakemake.wildcards.figure]
with io.atomic_path(snakemake.output.png) as png, io.atomic_path(snakemake.output.pdf) as pdf:
    note = draw([png, pdf])
if note:
    logging.getLogger("plot").warning("%s: %s", snakemake.wildcards.figure, note)
