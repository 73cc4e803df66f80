rule run_figures:
    input:
        data=f"{SIM_DIR}/{{dataset}}/seed{{seed}}/data.h5ad",
        runs=LAYOUT.seed_run_files,
    output:
        png=report(
            f"{SIM_DIR}/figures/{{dataset}}_seed{{seed}}/{{figure}}.png",
            caption="../report/run_figure.rst",
            category="simulation",
            subcategory="{dataset}, seed {seed}",
        ),
        pdf=f"{SIM_DIR}/figures/{{dataset}}_seed{{seed}}/{{figure}}.pdf",
    log:
        f"{LOG_DIR}/plot/simulation/{{dataset}}_seed{{seed}}_{{figure}}.log",
    wildcard_constraints:
        figure="|".join(RUN_FIGURES),
    conda:
        "../../envs/model.yaml"
    params:
        runs=LAYOUT.seed_runs,
        missing=LAYOUT.missing_note,
    script:
        "../scripts/run_figure.py"


rule plot:
    input:
        summary=f"{RESULTS}/{{arm}}/summary.tsv",
        table1=f"{RESULTS}/{{arm}}/table1.tsv",
    output:
        png=report(
            f"{RESULTS}/{{arm}}/figures/{{figure}}.png",
            caption="../report/summary_figure.rst",
            category="{arm}",
            subcategory="summary",
        ),
        pdf=f"{RESULTS}/{{arm}}/figures/{{figure}}.pdf",
    log:
        f"{LOG_DIR}/plot/{{arm}}/{{figure}}.log",
    wildcard_constraints:
        figure="|".join(SUMMARY_FIGURES),
    conda:
        "../../envs/plot.yaml"
    params:
        by=lambda wildcards: ARM_ID[wildcards.arm],
        paper=lambda wildcards: (
            config["paper_table1"] if wildcards.arm == "simulation" else {}
        ),
        missing=LAYOUT.missing_note,
    script:
        "../scripts/plot.py"
