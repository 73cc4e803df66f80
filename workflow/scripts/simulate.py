"""Rule adapter: simulate one (simulation, seed) dataset."""

from sparseshift import io
from sparseshift.simulate import SimulationConfig, simulate

io.configure_logging(snakemake.log[0])
adata = simulate(SimulationConfig(**snakemake.params.settings))
io.write_h5ad(adata, snakemake.output[0])
