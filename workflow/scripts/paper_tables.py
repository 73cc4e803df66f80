"""Rule adapter: the paper tables (``sparseshift.paper_tables``) from the paper run, the default
run and the ablations: ``table1.md`` (what docs/table1.md shows) and its tables as TSV."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # this workflow's own sparseshift, not an installed copy

from sparseshift import io  # noqa: E402
from sparseshift.paper_tables import tables_from_files  # noqa: E402

io.setup_rule(snakemake)
tables_from_files(dict(snakemake.input.items()), snakemake.output.markdown, list(snakemake.output.tables),
                  snakemake.params.written_by)
