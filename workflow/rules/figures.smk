rule run_figures:
    input:
        data=f"{SIM_DIR}/{{dataset}}/seed{{seed}}/data.h5ad",
        runs=seed_run_files,
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
        runs=seed_runs,
        missing=missing_note,
    script:
        "../scripts/run_figure.py"
