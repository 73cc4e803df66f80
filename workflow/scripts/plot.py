"""Rule adapter: one figure of an arm's summary (methods, I-NLL, Table 1, sweeps)."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # this workflow's own sparseshift, not an installed copy

from sparseshift import io  # noqa: E402
from sparseshift.arm_figures import plot_from_files  # noqa: E402

io.setup_rule(snakemake)
plot_from_files(snakemake.wildcards.figure, snakemake.input, snakemake.output, snakemake.params.by,
                paper=snakemake.params.paper)
