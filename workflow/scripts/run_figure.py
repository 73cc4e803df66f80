"""Rule adapter: a figure of the runs of one simulation and seed (target graphs, learned
shifts, training curves)."""

from sparseshift import io
from sparseshift.run import run_figure_from_files

io.configure_logging(snakemake.log[0])
with io.atomic_path(snakemake.output.png) as png, io.atomic_path(snakemake.output.pdf) as pdf:
    run_figure_from_files(snakemake.wildcards.figure, snakemake.input.data, snakemake.params.runs, [png, pdf])
