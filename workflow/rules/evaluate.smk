# Transfer jobs (PLAN.jobs): the transfer protocol, steps 2 and 3, of one run, or of the runs
# of a stacked training job's groups trained as one batched model (config key stack_models);
# one rule per job, jobs.transfer_from_files through the adapter transfer.py, named by its
# link transfer_stacked.py and nested by arm and job, as for training (train.smk).
for _arm in ARMS:
    for _job, _members in PLAN.jobs(transfer=True, arm=_arm).items():

        rule:
            name:
                job_rule("transfer", _job)
            input:
                **LAYOUT.job_files(TRANSFER_INPUTS, _members),
                data=per_run(LAYOUT.dataset, _members),
            output:
                **LAYOUT.job_files(TRANSFER_FILES, _members),
            log:
                LAYOUT.job_path(f"{LOG_DIR}/transfer", _job, _members, ".log"),
            benchmark:
                LAYOUT.job_path(f"{LOG_DIR}/transfer", _job, _members, ".benchmark.tsv")
            # transfers and evaluations first: the tables wait for them; the enrichments
            # and figures of single runs fill the cores beside them
            priority: 1
            conda:
                MODEL_ENV
            threads: job_threads("transfer")
            resources:
                **profile_resources("transfer"),
            params:
                train=per_run(PLAN.train_settings, _members),
                transfer=PLAN.transfer_settings(_members[0]),
                device=config["device"],
                checkpoint=LAYOUT.job_path(
                    f"{RESULTS}/checkpoints", _job, _members, ".transfer.pt"
                ),
            script:
                "../scripts/transfer_stacked.py"


rule evaluate:
    input:
        data=LAYOUT.dataset,
        weights=f"{RUN_DIR}/model.pt",
        config=f"{RUN_DIR}/model.json",
        latents=f"{RUN_DIR}/latents.npz",
        info=f"{RUN_DIR}/train_info.json",
        heldout=LAYOUT.heldout_scores,
        replicates=LAYOUT.replicate_latents,
    output:
        f"{RUN_DIR}/metrics.json",
    log:
        f"{LOG_DIR}/evaluate/{RUN}.log",
    priority: 1
    conda:
        "../../envs/model.yaml"
    params:
        record=PLAN.record,
        udr_min_variance=config["selection"]["min_variance"],
    script:
        "../scripts/evaluate.py"


rule enrichment:
    input:
        data=LAYOUT.dataset,
        weights=f"{RUN_DIR}/model.pt",
        config=f"{RUN_DIR}/model.json",
        libraries=LAYOUT.enrichment_libraries,
    output:
        scores=f"{RUN_DIR}/enrichment/latent_gene_scores.tsv",
        gsea=f"{RUN_DIR}/enrichment/gsea.tsv",
        targets=f"{RUN_DIR}/enrichment/latent_targets.tsv",
        dotplot_png=report(
            f"{RUN_DIR}/enrichment/gsea_dotplot.png",
            caption="../report/enrichment.rst",
            category="{arm}",
            subcategory="enrichment",
        ),
        dotplot_pdf=f"{RUN_DIR}/enrichment/gsea_dotplot.pdf",
        targets_png=report(
            f"{RUN_DIR}/enrichment/latent_targets.png",
            caption="../report/enrichment.rst",
            category="{arm}",
            subcategory="enrichment",
        ),
        targets_pdf=f"{RUN_DIR}/enrichment/latent_targets.pdf",
    log:
        f"{LOG_DIR}/enrichment/{RUN}.log",
    conda:
        "../../envs/enrichment.yaml"
    threads: config["resources"]["enrichment"]["threads"]
    resources:
        **job_resources("enrichment"),
    params:
        settings=enrichment_settings,
    script:
        "../scripts/enrichment.py"


rule summarize:
    input:
        lambda wildcards: LAYOUT.run_paths(f"{RUN_DIR}/metrics.json", wildcards.arm),
    output:
        summary=f"{RESULTS}/{{arm}}/summary.tsv",
        table1=f"{RESULTS}/{{arm}}/table1.tsv",
        selection=f"{RESULTS}/{{arm}}/selection.tsv",
        generalisation=f"{RESULTS}/{{arm}}/generalisation.tsv",
        regret=f"{RESULTS}/{{arm}}/regret.tsv",
        regret_choices=f"{RESULTS}/{{arm}}/regret_choices.tsv",
    log:
        f"{LOG_DIR}/summarize/{{arm}}.log",
    conda:
        "../../envs/plot.yaml"
    params:
        by=lambda wildcards: ARM_ID[wildcards.arm],
        criterion=config["selection"]["criterion"],
    script:
        "../scripts/summarize.py"
