rule download:
    output:
        "{download}",
    log:
        f"{LOG_DIR}/download/{{download}}.log",
    wildcard_constraints:
        download="|".join(re.escape(path) for path in LAYOUT.downloads),
    conda:
        "../../envs/data.yaml"
    params:
        url=lambda wildcards: LAYOUT.downloads[wildcards.download]["url"],
        size=lambda wildcards: LAYOUT.downloads[wildcards.download]["size"],
        md5=lambda wildcards: LAYOUT.downloads[wildcards.download]["md5"],
    script:
        "../scripts/download.py"


# Cheap checks of the inputs (no retry: a bad input stays bad), in a job of their own so that
# a bad input fails before Snakemake clears processed.h5ad of an earlier run.
rule check_replogle_inputs:
    input:
        h5ad=LAYOUT.replogle_h5ad,
        table=LAYOUT.replogle_table,
    output:
        f"{REPLOGLE_DIR}/inputs_checked.json",
    log:
        f"{LOG_DIR}/replogle/check_inputs.log",
    conda:
        "../../envs/data.yaml"
    params:
        folds=REPLOGLE["folds"],
    script:
        "../scripts/check_replogle_inputs.py"


rule preprocess_replogle:
    input:
        h5ad=LAYOUT.replogle_h5ad,
        table=LAYOUT.replogle_table,
        # ancient: a run preprocessed before this check existed is not redone for it
        checked=ancient(f"{REPLOGLE_DIR}/inputs_checked.json"),
    output:
        f"{REPLOGLE_DIR}/processed.h5ad",
    log:
        f"{LOG_DIR}/replogle/preprocess.log",
    benchmark:
        f"{LOG_DIR}/replogle/preprocess.benchmark.tsv"
    conda:
        "../../envs/data.yaml"
    threads: config["resources"]["preprocess"]["threads"]
    resources:
        **job_resources("preprocess"),
    params:
        max_controls=REPLOGLE["max_controls"],
    script:
        "../scripts/preprocess_replogle.py"


rule replogle_fold:
    input:
        data=f"{REPLOGLE_DIR}/processed.h5ad",
        table=LAYOUT.replogle_table,
    output:
        f"{REPLOGLE_DIR}/{{dataset}}/data.h5ad",
    log:
        f"{LOG_DIR}/replogle/fold_{{dataset}}.log",
    conda:
        "../../envs/data.yaml"
    threads: config["resources"]["preprocess"]["threads"]
    resources:
        **job_resources("preprocess"),
    params:
        fold=lambda wildcards: FOLDS[wildcards.dataset],
        n_effect=REPLOGLE["n_effect"],
        n_pcs=REPLOGLE["n_pcs"],
        controls_in_training=REPLOGLE["controls_in_training"],
    script:
        "../scripts/replogle_fold.py"
