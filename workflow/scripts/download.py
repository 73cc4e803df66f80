"""Rule adapter: resumable, md5-verified download of one public input file."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # this workflow's own sparseshift, not an installed copy

from sparseshift import io  # noqa: E402
from sparseshift.download import download  # noqa: E402

io.setup_rule(snakemake)
download(snakemake.params.url, snakemake.output[0], size=snakemake.params.size, md5=snakemake.params.md5)
