"""Rule adapter: a figure of the runs of one simulation and seed (target graphs, learned
shifts, training curves)."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # this workflow's own sparseshift, not an installed copy

from sparseshift import io  # noqa: E402
from sparseshift.run_figures import run_figure_from_files  # noqa: E402

io.setup_rule(snakemake)
with io.atomic_path(snakemake.output.png) as png, io.atomic_path(snakemake.output.pdf) as pdf:
    run_figure_from_files(snakemake.wildcards.figure, snakemake.input.data, snakemake.params.runs, [png, pdf])
