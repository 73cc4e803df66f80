"""Rule adapter: one figure of an arm's summary (methods, I-NLL, Table 1, sweeps)."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # this workflow's own sparseshift, not an installed copy

import logging  # noqa: E402

import pandas as pd  # noqa: E402

from sparseshift import io  # noqa: E402
from sparseshift.arm_figures import FIGURES, plot_table1  # noqa: E402

io.setup_rule(snakemake)
summary = pd.read_csv(snakemake.input.summary, sep="\t")
by = snakemake.params.by
figure = snakemake.wildcards.figure
with io.atomic_path(snakemake.output.png) as png, io.atomic_path(snakemake.output.pdf) as pdf:
    if figure == "table1":
        table1 = pd.read_csv(snakemake.input.table1, sep="\t")
        note = plot_table1(table1, [png, pdf], paper=snakemake.params.paper or None, by=by)
    else:
        note = FIGURES[figure](summary, [png, pdf], by=by)
if note:
    logging.getLogger("plot").warning("%s: %s", figure, note)
