"""Rule adapter: an arm's summary.tsv (one row per run), selection.tsv (the unsupervised
choice among each method's settings), table1.tsv (mean ± sd), generalisation.tsv (held-out
predictions per method, sVAE+ paired with iVAE and sVAE seed by seed) and regret.tsv with
regret_choices.tsv (what each criterion of that choice costs in Pearson MCC where the truth is
known)."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # this workflow's own sparseshift, not an installed copy

from sparseshift import io  # noqa: E402
from sparseshift.summary import generalisation, load_metrics, regret, table1, with_selection  # noqa: E402

io.setup_rule(snakemake)
by = snakemake.params.by
summary, selection = with_selection(load_metrics(snakemake.input, by=by), by=by,
                                    criterion=snakemake.params.criterion)
io.write_tsv(summary, snakemake.output.summary)
io.write_tsv(selection, snakemake.output.selection)
io.write_tsv(table1(summary, by=by, criterion=snakemake.params.criterion), snakemake.output.table1)
io.write_tsv(generalisation(summary, by=by), snakemake.output.generalisation)
choices, table = regret(summary, by=by)
io.write_tsv(table, snakemake.output.regret)
io.write_tsv(choices, snakemake.output.regret_choices)
