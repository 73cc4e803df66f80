"""Rule adapter: the methods figure (MCC and graph F1 across seeds)."""

import pandas as pd

from sparseshift import io
from sparseshift.plots import plot_methods

io.configure_logging(snakemake.log[0])
summary = pd.read_csv(snakemake.input[0], sep="\t")
with io.atomic_path(snakemake.output.png) as png, io.atomic_path(snakemake.output.pdf) as pdf:
    plot_methods(summary, [png, pdf])
