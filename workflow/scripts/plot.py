"""Rule adapter: one figure of an arm's summary (sparseshift.plots.FIGURES)."""

import pandas as pd

from sparseshift import io
from sparseshift.plots import FIGURES

io.configure_logging(snakemake.log[0])
summary = pd.read_csv(snakemake.input[0], sep="\t")
with io.atomic_path(snakemake.output.png) as png, io.atomic_path(snakemake.output.pdf) as pdf:
    FIGURES[snakemake.wildcards.figure](summary, [png, pdf], by=snakemake.params.by)
