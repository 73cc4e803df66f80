"""Rule adapter: a screen's answers from one method (its selected run): latents.h5ad and
targets.tsv."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # this workflow's own sparseshift, not an installed copy

from sparseshift import io  # noqa: E402
from sparseshift.screens.export import export_from_files  # noqa: E402

io.setup_rule(snakemake)
export_from_files(dict(snakemake.input.items()), snakemake.wildcards, snakemake.params.seed,
                  snakemake.params.settings, dict(snakemake.output.items()))
