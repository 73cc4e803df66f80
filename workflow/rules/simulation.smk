rule simulate:
    output:
        f"{SIM_DIR}/{{simulation}}/seed{{seed}}/data.h5ad",
    log:
        f"{LOG_DIR}/simulate/{{simulation}}/seed{{seed}}.log",
    benchmark:
        f"{LOG_DIR}/simulate/{{simulation}}/seed{{seed}}.benchmark.tsv"
    conda:
        "../../envs/data.yaml"
    params:
        settings=PLAN.simulation_settings,
    script:
        "../scripts/simulate.py"
