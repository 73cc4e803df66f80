rule train:
    input:
        data=dataset_path,
    output:
        weights=f"{RUN_DIR}/model.pt",
        config=f"{RUN_DIR}/model.json",
        history=f"{RUN_DIR}/history.tsv",
        latents=f"{RUN_DIR}/latents.npz",
        info=f"{RUN_DIR}/train_info.json",
    log:
        f"{LOG_DIR}/train/{RUN}.log",
    benchmark:
        f"{LOG_DIR}/train/{RUN}.benchmark.tsv"
    retries: 1
    conda:
        "../../envs/model.yaml"
    threads: config["resources"]["train"]["threads"]
    resources:
        **job_resources("train"),
    params:
        model=model_settings,
        train=train_settings,
        device=config["device"],
        # Not a declared output: Snakemake would delete it when a job fails,
        # and a rerun resumes from it.
        checkpoint=f"{RESULTS}/checkpoints/{RUN}.pt",
    script:
        "../scripts/train_model.py"
