rule evaluate:
    input:
        data=f"{SIM_DIR}/{{simulation}}/seed{{seed}}/data.h5ad",
        weights=f"{RUN_DIR}/model.pt",
        config=f"{RUN_DIR}/model.json",
        latents=f"{RUN_DIR}/latents.npz",
        info=f"{RUN_DIR}/train_info.json",
    output:
        f"{RUN_DIR}/metrics.json",
    log:
        f"{LOG_DIR}/evaluate/{{simulation}}/seed{{seed}}/{{method}}/{{hp}}.log",
    conda:
        "../../envs/sparseshift.yaml"
    params:
        record=run_record,
    script:
        "../scripts/evaluate.py"


rule summarize:
    input:
        run_paths(f"{RUN_DIR}/metrics.json"),
    output:
        summary=f"{SIM_DIR}/summary.tsv",
        table1=f"{SIM_DIR}/table1.tsv",
    log:
        f"{LOG_DIR}/summarize.log",
    conda:
        "../../envs/sparseshift.yaml"
    script:
        "../scripts/summarize.py"


rule plot_methods:
    input:
        f"{SIM_DIR}/summary.tsv",
    output:
        png=f"{SIM_DIR}/figures/methods.png",
        pdf=f"{SIM_DIR}/figures/methods.pdf",
    log:
        f"{LOG_DIR}/plot_methods.log",
    conda:
        "../../envs/sparseshift.yaml"
    script:
        "../scripts/plot_methods.py"
