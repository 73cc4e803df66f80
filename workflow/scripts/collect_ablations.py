"""Rule adapter: every finished run of every ablation (its ``metrics.json``) in one table,
``results/ablations/ablations.tsv``, one row per run with its ablation's name."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # this workflow's own sparseshift, not an installed copy

from sparseshift import io  # noqa: E402
from sparseshift.ablations import collect_to_file  # noqa: E402

io.setup_rule(snakemake)
collect_to_file(list(snakemake.input), snakemake.output[0])
