"""Rule adapter: an arm's summary.tsv (one row per run) and table1.tsv (mean ± sd)."""

from sparseshift import io
from sparseshift.summary import load_metrics, table1

io.configure_logging(snakemake.log[0])
summary = load_metrics(snakemake.input, by=snakemake.params.by)
io.write_tsv(summary, snakemake.output.summary)
io.write_tsv(table1(summary, by=snakemake.params.by), snakemake.output.table1)
