"""Rule adapter: one figure of a screen (targets per perturbation, latent means)."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # this workflow's own sparseshift, not an installed copy

from sparseshift import io  # noqa: E402
from sparseshift.screen_figures import draw  # noqa: E402

io.setup_rule(snakemake)
draw(snakemake.wildcards.figure, snakemake.params.folder, snakemake.params.methods,
     [snakemake.output.png, snakemake.output.pdf])
