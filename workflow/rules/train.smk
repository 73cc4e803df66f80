# Training jobs (PLAN.jobs): one rule per job. With stack_models: 1 a job trains one run or
# one replicate (another training seed of a run, the same data and setting, for the
# unsupervised selection among a method's settings, config key selection); with more, a job
# trains several runs and replicates of one method on one dataset and latent dimension (seeds
# and swept settings) as one batched model. Either way the outputs are the runs' files, and
# the job is jobs.train_from_files through the adapter train_model.py, named by its link
# train_stacked.py. Snakemake's code trigger compares the text of a rule's script directive,
# indentation included, with the one a result was made with: this name and nesting (arm, job)
# are those the stacked results (the default's, the paper's) recorded. A one-model job's
# params keep their form (one run's settings, not a list of one).
for _arm in ARMS:
    for _job, _members in PLAN.jobs(transfer=False, arm=_arm).items():

        rule:
            name:
                job_rule("train", _job)
            input:
                data=per_run(LAYOUT.dataset, _members),
            output:
                **LAYOUT.job_files(TRAIN_FILES, _members),
            log:
                LAYOUT.job_path(f"{LOG_DIR}/train", _job, _members, ".log"),
            benchmark:
                LAYOUT.job_path(f"{LOG_DIR}/train", _job, _members, ".benchmark.tsv")
            conda:
                MODEL_ENV
            threads: job_threads("train")
            resources:
                **profile_resources("train"),
            params:
                model=per_run(PLAN.model_settings, _members),
                train=per_run(PLAN.train_settings, _members),
                device=config["device"],
                # Not a declared output: Snakemake would delete it when a job fails,
                # and a rerun resumes from it.
                checkpoint=LAYOUT.job_path(
                    f"{RESULTS}/checkpoints", _job, _members, ".pt"
                ),
            script:
                "../scripts/train_stacked.py"
