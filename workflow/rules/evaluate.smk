if config["stack_models"] == 1:

    rule transfer:
        input:
            **LAYOUT.run_files(TRANSFER_INPUTS),
            data=LAYOUT.dataset,
        output:
            **LAYOUT.run_files(TRANSFER_FILES),
        log:
            f"{LOG_DIR}/transfer/{RUN}.log",
        benchmark:
            f"{LOG_DIR}/transfer/{RUN}.benchmark.tsv"
        conda:
            MODEL_ENV
        threads: config["resources"]["transfer"]["threads"]
        resources:
            **job_resources("transfer"),
        params:
            train=PLAN.train_settings,
            transfer=PLAN.transfer_settings,
            device=config["device"],
            checkpoint=f"{RESULTS}/checkpoints/{RUN}.transfer.pt",
        script:
            "../scripts/transfer.py"

else:

    # The transfer protocol of the runs of a stacked training job's groups, steps 2 and 3
    # trained as one batched model (config key stack_models).
    for _job, _members in PLAN.stacks(transfer=True).items():

        rule:
            name:
                f"transfer_stack_{_job}"
            input:
                **LAYOUT.stack_files(TRANSFER_INPUTS, _members),
                data=[LAYOUT.dataset(m) for m in _members],
            output:
                **LAYOUT.stack_files(TRANSFER_FILES, _members),
            log:
                f"{LOG_DIR}/transfer/stacked/{_job}.log",
            benchmark:
                f"{LOG_DIR}/transfer/stacked/{_job}.benchmark.tsv"
            conda:
                MODEL_ENV
            threads: stacked_threads("transfer")
            resources:
                **stacked_resources("transfer"),
            params:
                train=[PLAN.train_settings(m) for m in _members],
                transfer=PLAN.transfer_settings(_members[0]),
                device=config["device"],
                checkpoint=f"{RESULTS}/checkpoints/stacked/{_job}.transfer.pt",
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
