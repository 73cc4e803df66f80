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

    # A replicate of a run (another training seed, the same data and setting) for the
    # unsupervised selection among a method's settings (config key selection).
    use rule train as train_replicate with:
        output:
            weights=f"{REPLICATE_DIR}/model.pt",
            config=f"{REPLICATE_DIR}/model.json",
            history=f"{REPLICATE_DIR}/history.tsv",
            latents=f"{REPLICATE_DIR}/latents.npz",
            info=f"{REPLICATE_DIR}/train_info.json",
        log:
            f"{LOG_DIR}/train/{RUN}/replicate{{replicate}}.log",
        benchmark:
            f"{LOG_DIR}/train/{RUN}/replicate{{replicate}}.benchmark.tsv"
        params:
            model=model_settings,
            train=replicate_train_settings,
            device=config["device"],
            checkpoint=f"{RESULTS}/checkpoints/{RUN}/replicate{{replicate}}.pt",

else:

    # One job per arm, dataset, method and setting trains the runs of all the arm's
    # seeds together (config key stack_seeds), a second one their replicates (when the
    # setting competes with others of its method); the outputs are those of the one-run jobs.
    for _arm in ARM_SEEDS:
        for _replicates in (False, True):
            _members = stacked_members(_arm, _replicates)
            _name = f"{_arm}/{{dataset}}/stacked/{{method}}/{{hp}}" + (
                "_replicates" if _replicates else ""
            )

            rule:
                name:
                    f"train_stacked_{_arm}" + ("_replicates" if _replicates else "")
                input:
                    data=stacked_datasets(_arm, _members),
                output:
                    weights=stacked_outputs(_arm, _members, "model.pt"),
                    config=stacked_outputs(_arm, _members, "model.json"),
                    history=stacked_outputs(_arm, _members, "history.tsv"),
                    latents=stacked_outputs(_arm, _members, "latents.npz"),
                    info=stacked_outputs(_arm, _members, "train_info.json"),
                log:
                    f"{LOG_DIR}/train/{_name}.log",
                benchmark:
                    f"{LOG_DIR}/train/{_name}.benchmark.tsv"
                conda:
                    "../../envs/model.yaml"
                threads: config["resources"]["train"]["threads"]
                resources:
                    **job_resources("train"),
                params:
                    model=stacked_params(_arm, model_settings),
                    train=stacked_params(_arm, train_settings),
                    seeds=[replicate_seed(seed, r) for seed, r in _members],
                    device=config["device"],
                    checkpoint=f"{RESULTS}/checkpoints/{_name}.pt",
                script:
                    "../scripts/train_stacked.py"
