rule transfer:
    input:
        data=DATASET,
        weights=f"{RUN_DIR}/model.pt",
        config=f"{RUN_DIR}/model.json",
        info=f"{RUN_DIR}/train_info.json",
    output:
        summary=f"{RUN_DIR}/transfer/heldout.json",
        per_perturbation=f"{RUN_DIR}/transfer/heldout_perturbations.tsv",
        retrained_weights=f"{RUN_DIR}/transfer/retrained.pt",
        retrained_config=f"{RUN_DIR}/transfer/retrained.json",
        finetuned_weights=f"{RUN_DIR}/transfer/finetuned.pt",
        finetuned_config=f"{RUN_DIR}/transfer/finetuned.json",
        retrain_history=f"{RUN_DIR}/transfer/retrain_history.tsv",
        finetune_history=f"{RUN_DIR}/transfer/finetune_history.tsv",
    log:
        f"{LOG_DIR}/transfer/{{simulation}}/seed{{seed}}/{{method}}/{{hp}}.log",
    benchmark:
        f"{LOG_DIR}/transfer/{{simulation}}/seed{{seed}}/{{method}}/{{hp}}.benchmark.tsv"
    retries: 1
    conda:
        "../../envs/sparseshift.yaml"
    threads: config["resources"]["transfer"]["threads"]
    resources:
        **job_resources("transfer"),
    params:
        train=train_settings,
        transfer=config["transfer"],
        device=config["device"],
        checkpoint=f"{RESULTS}/checkpoints/{{simulation}}/seed{{seed}}/{{method}}/{{hp}}.transfer.pt",
    script:
        "../scripts/transfer.py"


rule evaluate:
    input:
        data=DATASET,
        weights=f"{RUN_DIR}/model.pt",
        config=f"{RUN_DIR}/model.json",
        latents=f"{RUN_DIR}/latents.npz",
        info=f"{RUN_DIR}/train_info.json",
        heldout=f"{RUN_DIR}/transfer/heldout.json",
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


rule plot:
    input:
        f"{SIM_DIR}/summary.tsv",
    output:
        png=f"{SIM_DIR}/figures/{{figure}}.png",
        pdf=f"{SIM_DIR}/figures/{{figure}}.pdf",
    log:
        f"{LOG_DIR}/plot/{{figure}}.log",
    wildcard_constraints:
        figure="|".join(FIGURES),
    conda:
        "../../envs/sparseshift.yaml"
    script:
        "../scripts/plot.py"
