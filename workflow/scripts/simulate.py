"""Rule adapter: simulate one (simulation, seed) dataset."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # this workflow's own sparseshift, not an installed copy

from sparseshift import io  # noqa: E402
from sparseshift.simulate import SimulationConfig, simulate  # noqa: E402

io.setup_rule(snakemake)
adata = simulate(SimulationConfig(**snakemake.params.settings))
io.write_h5ad(adata, snakemake.output[0])
