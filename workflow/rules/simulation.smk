rule simulate:
    output:
        f"{SIM_DIR}/{{simulation}}/seed{{seed}}/data.h5ad",
    params:
        settings=simulation_settings,
    log:
        f"{LOG_DIR}/simulate/{{simulation}}/seed{{seed}}.log",
    benchmark:
        f"{LOG_DIR}/simulate/{{simulation}}/seed{{seed}}.benchmark.tsv"
    conda:
        "../../envs/sparseshift.yaml"
    script:
        "../scripts/simulate.py"
