"""Rule adapter: simulate one (simulation, seed) dataset."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # this workflow's own sparseshift, not an installed copy

from sparseshift import io  # noqa: E402
from sparseshift.simulate import simulate_to_file  # noqa: E402

io.setup_rule(snakemake)
simulate_to_file(snakemake.params.settings, snakemake.output[0])
