"""Rule adapter: resumable, md5-verified download of one public input file."""

from sparseshift import io
from sparseshift.download import download

io.configure_logging(snakemake.log[0])
download(snakemake.params.url, snakemake.output[0], size=snakemake.params.size, md5=snakemake.params.md5)
