if config["stack_models"] == 1:

    rule transfer:
        input:
            data=dataset_path,
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
            f"{LOG_DIR}/transfer/{RUN}.log",
        benchmark:
            f"{LOG_DIR}/transfer/{RUN}.benchmark.tsv"
        conda:
            "../../envs/model.yaml"
        threads: config["resources"]["transfer"]["threads"]
        resources:
            **job_resources("transfer"),
        params:
            train=train_settings,
            transfer=transfer_settings,
            device=config["device"],
            checkpoint=f"{RESULTS}/checkpoints/{RUN}.transfer.pt",
        script:
            "../scripts/transfer.py"

else:

    # The transfer protocol of the runs of a stacked training job's groups, steps 2 and 3
    # trained as one batched model (config key stack_models).
    for _job, _members in stacks(True).items():

        rule:
            name:
                f"transfer_stack_{_job}"
            input:
                data=[dataset_path(m) for m in _members],
                weights=[member_path(m, "model.pt") for m in _members],
                config=[member_path(m, "model.json") for m in _members],
                info=[member_path(m, "train_info.json") for m in _members],
            output:
                summary=[member_path(m, "transfer/heldout.json") for m in _members],
                per_perturbation=[
                    member_path(m, "transfer/heldout_perturbations.tsv")
                    for m in _members
                ],
                retrained_weights=[
                    member_path(m, "transfer/retrained.pt") for m in _members
                ],
                retrained_config=[
                    member_path(m, "transfer/retrained.json") for m in _members
                ],
                finetuned_weights=[
                    member_path(m, "transfer/finetuned.pt") for m in _members
                ],
                finetuned_config=[
                    member_path(m, "transfer/finetuned.json") for m in _members
                ],
                retrain_history=[
                    member_path(m, "transfer/retrain_history.tsv") for m in _members
                ],
                finetune_history=[
                    member_path(m, "transfer/finetune_history.tsv") for m in _members
                ],
            log:
                f"{LOG_DIR}/transfer/stacked/{_job}.log",
            benchmark:
                f"{LOG_DIR}/transfer/stacked/{_job}.benchmark.tsv"
            conda:
                "../../envs/model.yaml"
            threads: stacked_threads("transfer")
            resources:
                **stacked_resources("transfer"),
            params:
                train=[train_settings(m) for m in _members],
                transfer=transfer_settings(_members[0]),
                device=config["device"],
                checkpoint=f"{RESULTS}/checkpoints/stacked/{_job}.transfer.pt",
            script:
                "../scripts/transfer_stacked.py"


rule evaluate:
    input:
        data=dataset_path,
        weights=f"{RUN_DIR}/model.pt",
        config=f"{RUN_DIR}/model.json",
        latents=f"{RUN_DIR}/latents.npz",
        info=f"{RUN_DIR}/train_info.json",
        heldout=heldout_scores,
        replicates=replicate_latents,
    output:
        f"{RUN_DIR}/metrics.json",
    log:
        f"{LOG_DIR}/evaluate/{RUN}.log",
    conda:
        "../../envs/model.yaml"
    params:
        record=run_record,
        udr_min_variance=SELECTION["min_variance"],
    script:
        "../scripts/evaluate.py"


rule enrichment:
    input:
        data=dataset_path,
        weights=f"{RUN_DIR}/model.pt",
        config=f"{RUN_DIR}/model.json",
        libraries=enrichment_libraries,
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
        lambda wildcards: run_paths(f"{RUN_DIR}/metrics.json", wildcards.arm),
    output:
        summary=f"{RESULTS}/{{arm}}/summary.tsv",
        table1=f"{RESULTS}/{{arm}}/table1.tsv",
        selection=f"{RESULTS}/{{arm}}/selection.tsv",
    log:
        f"{LOG_DIR}/summarize/{{arm}}.log",
    conda:
        "../../envs/plot.yaml"
    params:
        by=lambda wildcards: ARM_ID[wildcards.arm],
    script:
        "../scripts/summarize.py"


rule plot:
    input:
        summary=f"{RESULTS}/{{arm}}/summary.tsv",
        table1=f"{RESULTS}/{{arm}}/table1.tsv",
    output:
        png=report(
            f"{RESULTS}/{{arm}}/figures/{{figure}}.png",
            caption="../report/summary_figure.rst",
            category="{arm}",
            subcategory="summary",
        ),
        pdf=f"{RESULTS}/{{arm}}/figures/{{figure}}.pdf",
    log:
        f"{LOG_DIR}/plot/{{arm}}/{{figure}}.log",
    wildcard_constraints:
        figure="methods|inll|table1|latent_sweep|alpha_sweep",
    conda:
        "../../envs/plot.yaml"
    params:
        by=lambda wildcards: ARM_ID[wildcards.arm],
        paper=lambda wildcards: (
            config["paper_table1"] if wildcards.arm == "simulation" else {}
        ),
        missing=missing_note,
    script:
        "../scripts/plot.py"
