# Your own screens (config key screens): any perturbation h5ad made into a training dataset;
# training, transfer, evaluation and enrichment are the shared rules (arm "screens"); then each
# method's answers for the user (latents.h5ad, targets.tsv) and the screen's figures.


rule prepare_screen:
    input:
        h5ad=LAYOUT.screen_h5ad,
        genes=LAYOUT.screen_gene_list,
    output:
        f"{SCREEN_DIR}/{{dataset}}/data.h5ad",
    log:
        f"{LOG_DIR}/screens/prepare_{{dataset}}.log",
    benchmark:
        f"{LOG_DIR}/screens/prepare_{{dataset}}.benchmark.tsv"
    conda:
        "../../envs/data.yaml"
    threads: config["resources"]["preprocess"]["threads"]
    resources:
        **job_resources("preprocess"),
    params:
        settings=lambda wildcards: PLAN.screen_data_settings(wildcards.dataset),
    script:
        "../scripts/prepare_screen.py"


rule export_screen:
    input:
        unpack(LAYOUT.screen_candidates),
        data=f"{SCREEN_DIR}/{{dataset}}/data.h5ad",
        selection=f"{SCREEN_DIR}/selection.tsv",
    output:
        **{
            key: f"{SCREEN_DIR}/{{dataset}}/{{method}}/{file}"
            for key, file in SCREEN_EXPORTS.items()
        },
    log:
        f"{LOG_DIR}/screens/export_{{dataset}}_{{method}}.log",
    conda:
        "../../envs/model.yaml"
    params:
        seed=lambda wildcards: PLAN.seeds_of("screens", wildcards.dataset)[0],
        settings=lambda wildcards: PLAN.screens[wildcards.dataset],
    script:
        "../scripts/export_screen.py"


rule screen_figures:
    input:
        LAYOUT.screen_exports,
    output:
        png=report(
            f"{SCREEN_DIR}/{{dataset}}/figures/{{figure}}.png",
            caption="../report/screen_figure.rst",
            category="screens",
            subcategory="{dataset}",
        ),
        pdf=f"{SCREEN_DIR}/{{dataset}}/figures/{{figure}}.pdf",
    log:
        f"{LOG_DIR}/plot/screens/{{dataset}}_{{figure}}.log",
    wildcard_constraints:
        figure="|".join(SCREEN_FIGURES),
    conda:
        "../../envs/model.yaml"
    params:
        methods=lambda wildcards: LAYOUT.screen_methods(wildcards.dataset),
        folder=lambda wildcards: f"{SCREEN_DIR}/{wildcards.dataset}",
    script:
        "../scripts/screen_figure.py"
