# The paper tables (docs/table1.md) from the results of the other configurations, each made by
# its own command (README.md, "Paper tables"): a run of config/paper.yaml into results/paper, of
# config/config.yaml into results/default, and the ablations (config/ablations/<name>.yaml)
# into results/ablations/<name>. Their folders are fixed: a missing one is a missing input.
from sparseshift.ablations import metrics_paths
from sparseshift.paper_tables import rule_inputs

PAPER_RUN, DEFAULT_RUN = "results/paper", "results/default"
ABLATION_RUNS, PAPER_TABLES = "results/ablations", "results/paper_tables"


rule collect_ablations:
    input:
        lambda wildcards: metrics_paths(Path(ABLATION_RUNS)),
    output:
        f"{ABLATION_RUNS}/ablations.tsv",
    log:
        f"{ABLATION_RUNS}/logs/collect_ablations.log",
    conda:
        "../../envs/tables.yaml"
    script:
        "../scripts/collect_ablations.py"


rule paper_tables:
    input:
        unpack(lambda wildcards: rule_inputs(PAPER_RUN, DEFAULT_RUN, ABLATION_RUNS)),
    output:
        markdown=f"{PAPER_TABLES}/table1.md",
        tables=expand(
            f"{PAPER_TABLES}/{{name}}.tsv",
            name=["table1", "signs", "settings", "selection", "deviations"],
        ),
    log:
        f"{PAPER_TABLES}/logs/paper_tables.log",
    benchmark:
        f"{PAPER_TABLES}/logs/paper_tables.benchmark.tsv"
    conda:
        "../../envs/tables.yaml"
    params:
        written_by="`snakemake --cores all paper_tables`",
    script:
        "../scripts/paper_tables.py"


# docs/table1.md is not an output: Snakemake would remove it before the job, and with it the
# named blocks that other commands own (the job keeps them). The job runs when asked for.
rule docs_table1:
    input:
        f"{PAPER_TABLES}/table1.md",
    log:
        f"{PAPER_TABLES}/logs/docs_table1.log",
    conda:
        "../../envs/tables.yaml"
    params:
        doc="docs/table1.md",
    script:
        "../scripts/docs_table1.py"
