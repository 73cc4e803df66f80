if not config["stack_seeds"]:

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

else:

    # One job per arm, dataset, method and setting trains the runs of all the arm's
    # seeds together (config key stack_seeds); its outputs are those of the one-run jobs.
    for _arm in ARM_SEEDS:

        rule:
            name:
                f"train_stacked_{_arm}"
            input:
                data=stacked_datasets(_arm),
            output:
                weights=stacked_outputs(_arm, "model.pt"),
                config=stacked_outputs(_arm, "model.json"),
                history=stacked_outputs(_arm, "history.tsv"),
                latents=stacked_outputs(_arm, "latents.npz"),
                info=stacked_outputs(_arm, "train_info.json"),
            log:
                f"{LOG_DIR}/train/{_arm}/{{dataset}}/stacked/{{method}}/{{hp}}.log",
            benchmark:
                f"{LOG_DIR}/train/{_arm}/{{dataset}}/stacked/{{method}}/{{hp}}.benchmark.tsv"
            retries: 1
            conda:
                "../../envs/model.yaml"
            threads: config["resources"]["train"]["threads"]
            resources:
                **job_resources("train"),
            params:
                model=stacked_params(_arm, model_settings),
                train=stacked_params(_arm, train_settings),
                seeds=ARM_SEEDS[_arm],
                device=config["device"],
                checkpoint=f"{RESULTS}/checkpoints/{_arm}/{{dataset}}/stacked/{{method}}/{{hp}}.pt",
            script:
                "../scripts/train_stacked.py"
