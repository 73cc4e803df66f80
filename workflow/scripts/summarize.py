"""Rule adapter: an arm's summary.tsv (one row per run), selection.tsv (the unsupervised
choice among each method's settings), table1.tsv (mean ± sd), generalisation.tsv (held-out
predictions per method, sVAE+ paired with iVAE and sVAE seed by seed) and regret.tsv with
regret_choices.tsv (what each criterion of that choice costs in Pearson MCC where the truth is
known)."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # this workflow's own sparseshift, not an installed copy

from sparseshift import io  # noqa: E402
from sparseshift.summary import summarize_from_files  # noqa: E402

io.setup_rule(snakemake)
summarize_from_files(snakemake.input, snakemake.output, snakemake.params.by, snakemake.params.criterion)
