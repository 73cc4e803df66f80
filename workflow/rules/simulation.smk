rule simulate:
    output:
        DATASET,
    log:
        f"{LOG_DIR}/simulate/{{simulation}}/seed{{seed}}.log",
    benchmark:
        f"{LOG_DIR}/simulate/{{simulation}}/seed{{seed}}.benchmark.tsv"
    conda:
        "../../envs/sparseshift.yaml"
    params:
        settings=simulation_settings,
    script:
        "../scripts/simulate.py"
