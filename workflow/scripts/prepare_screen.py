"""Rule adapter: a user's screen made into the training dataset (cells, perturbations, genes,
held-out choice)."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # this workflow's own sparseshift, not an installed copy

from sparseshift import io  # noqa: E402
from sparseshift.screens.prepare import prepare_from_files  # noqa: E402

io.setup_rule(snakemake)
prepare_from_files(snakemake.input.h5ad, snakemake.params.settings, snakemake.output[0],
                   genes=snakemake.input.genes[0] if snakemake.input.genes else None)
