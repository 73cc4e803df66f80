"""Rule adapter: an arm's summary.tsv (one row per run), selection.tsv (the unsupervised
choice among each method's settings) and table1.tsv (mean ± sd)."""

from sparseshift import io
from sparseshift.summary import load_metrics, table1, with_selection

io.configure_logging(snakemake.log[0])
by = snakemake.params.by
summary, selection = with_selection(load_metrics(snakemake.input, by=by), by=by)
io.write_tsv(summary, snakemake.output.summary)
io.write_tsv(selection, snakemake.output.selection)
io.write_tsv(table1(summary, by=by), snakemake.output.table1)
