"""Rule adapter: docs/table1.md is the paper tables' markdown, followed by the named blocks
(``<!-- NAME -->`` ... ``<!-- /NAME -->``) that other commands wrote into the file it replaces."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # this workflow's own sparseshift, not an installed copy

from sparseshift import io  # noqa: E402
from sparseshift.markdown import copy_with_blocks  # noqa: E402

io.setup_rule(snakemake)
copy_with_blocks(snakemake.input[0], snakemake.params.doc)
