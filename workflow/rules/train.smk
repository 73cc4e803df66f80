if config["stack_models"] == 1:

    rule train:
        input:
            data=LAYOUT.dataset,
        output:
            **LAYOUT.run_files(TRAIN_FILES),
        log:
            f"{LOG_DIR}/train/{RUN}.log",
        benchmark:
            f"{LOG_DIR}/train/{RUN}.benchmark.tsv"
        conda:
            MODEL_ENV
        threads: config["resources"]["train"]["threads"]
        resources:
            **job_resources("train"),
        params:
            model=PLAN.model_settings,
            train=PLAN.train_settings,
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
            **LAYOUT.run_files(TRAIN_FILES, replicate=True),
        log:
            f"{LOG_DIR}/train/{RUN}/replicate{{replicate}}.log",
        benchmark:
            f"{LOG_DIR}/train/{RUN}/replicate{{replicate}}.benchmark.tsv"
        params:
            model=PLAN.model_settings,
            train=PLAN.train_settings,
            device=config["device"],
            checkpoint=f"{RESULTS}/checkpoints/{RUN}/replicate{{replicate}}.pt",

else:

    # Stacked jobs (config key stack_models): each trains several runs and replicates of one
    # method on one dataset and latent dimension (seeds and swept settings) as one batched
    # model; the outputs are those of the one-model jobs.
    for _job, _members in PLAN.stacks(transfer=False).items():

        rule:
            name:
                f"train_stack_{_job}"
            input:
                data=[LAYOUT.dataset(m) for m in _members],
            output:
                **LAYOUT.stack_files(TRAIN_FILES, _members),
            log:
                f"{LOG_DIR}/train/stacked/{_job}.log",
            benchmark:
                f"{LOG_DIR}/train/stacked/{_job}.benchmark.tsv"
            conda:
                MODEL_ENV
            threads: stacked_threads("train")
            resources:
                **stacked_resources("train"),
            params:
                model=[PLAN.model_settings(m) for m in _members],
                train=[PLAN.train_settings(m) for m in _members],
                device=config["device"],
                checkpoint=f"{RESULTS}/checkpoints/stacked/{_job}.pt",
            script:
                "../scripts/train_stacked.py"
