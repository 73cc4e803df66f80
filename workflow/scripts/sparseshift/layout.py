"""Where the pipeline's files live: the inputs and outputs of each job of a :class:`~sparseshift.plan.Plan`.

The rules (workflow/rules/*.smk) name their files through one :class:`Layout`; its methods
that take ``wildcards`` are input functions. Free of torch.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from .methods import DISPLAY_NAMES, METHODS
from .plan import Plan

# A run: one method with one setting trained with one seed on one dataset of an arm (a
# simulation setting, or a Replogle hold-out fold); its replicate r >= 1 the same with another
# training seed, for the unsupervised selection among a method's settings (UDR).
RUN = "{arm}/{dataset}/seed{seed}/{method}/{hp}"
# The files a training and a transfer job write per run, by output name.
TRAIN_FILES = {
    "weights": "model.pt",
    "config": "model.json",
    "history": "history.tsv",
    "latents": "latents.npz",
    "info": "train_info.json",
}
TRANSFER_INPUTS = {k: TRAIN_FILES[k] for k in ("weights", "config", "info")}
TRANSFER_FILES = {
    "summary": "transfer/heldout.json",
    "per_perturbation": "transfer/heldout_perturbations.tsv",
    "retrained_weights": "transfer/retrained.pt",
    "retrained_config": "transfer/retrained.json",
    "finetuned_weights": "transfer/finetuned.pt",
    "finetuned_config": "transfer/finetuned.json",
    "retrain_history": "transfer/retrain_history.tsv",
    "finetune_history": "transfer/finetune_history.tsv",
}
# Figures drawn from an arm's summary (rule plot), and of the runs of one simulation and seed
# (rule run_figures); each is the function plot_<name> of sparseshift.figures.
SUMMARY_FIGURES = ("methods", "inll", "table1", "latent_sweep", "alpha_sweep")
RUN_FIGURES = ("target_graphs", "shift_heatmap", "training_curves")
# What a user gets per screen and method (rule export_screen), and the figures of a screen
# (rule screen_figures, the functions plot_<name> of sparseshift.screen_figures).
SCREEN_EXPORTS = {"latents": "latents.h5ad", "targets": "targets.tsv", "factors": "factors.tsv"}
SCREEN_FIGURES = ("targets", "latent_means")


class Layout:
    """The paths of ``plan``'s jobs under its config's ``results`` folder; ``basedir`` is the
    workflow's folder (for the resources shipped beside it)."""

    def __init__(self, plan: Plan, basedir):
        config = plan.config
        self.plan, self.config, self.basedir = plan, config, Path(basedir)
        self.results = config["results"]
        self.sim_dir = f"{self.results}/simulation"
        self.replogle_dir = f"{self.results}/replogle"
        self.screen_dir = f"{self.results}/screens"
        self.log_dir = f"{self.results}/logs"
        self.run_dir = f"{self.results}/{RUN}"
        self.replicate_dir = f"{self.run_dir}/replicate{{replicate}}"
        replogle, enrichment = config["replogle"], config["enrichment"]
        # Downloadable inputs by file name, and the two inputs of the Replogle arm: the user's
        # own files when the config names them, else where the download rule puts them.
        self.downloads = {f"{replogle['data_dir']}/{d['file']}": d for d in replogle["downloads"].values()} | {
            f"{enrichment['download_dir']}/{d['file']}": d for d in enrichment["downloads"].values()
        } | {
            f"{s['data_dir']}/{s['name']}.h5ad": {"file": f"{s['name']}.h5ad", "url": s["url"], "size": s["size"],
                                                 "md5": s["md5"]}
            for s in config["screens"] if "url" in s
        }
        self.replogle_h5ad = (
            replogle["h5ad"] or f"{replogle['data_dir']}/{replogle['downloads'][replogle['dataset']]['file']}"
        )
        self.replogle_table = (
            replogle["table_s3"] or f"{replogle['data_dir']}/{replogle['downloads']['table_s3']['file']}"
        )

    # ------------------------------------------------------------------ runs
    def dataset(self, wildcards) -> str:
        """The dataset a run trains on: a simulation is drawn per seed, a fold is not."""
        if wildcards.arm == "simulation":
            return f"{self.sim_dir}/{wildcards.dataset}/seed{wildcards.seed}/data.h5ad"
        if wildcards.arm == "screens":
            return f"{self.screen_dir}/{wildcards.dataset}/data.h5ad"
        return f"{self.replogle_dir}/{wildcards.dataset}/data.h5ad"

    def member(self, member, name: str) -> str:
        """File ``name`` of a run or replicate (wildcards with ``replicate``)."""
        values = dict(member.items()) if hasattr(member, "items") else vars(member)  # wildcards, dict or member
        folder = self.replicate_dir if int(values.get("replicate", 0)) else self.run_dir
        return f"{folder}/{name}".format(**values)

    def run_files(self, files: dict, replicate: bool = False) -> dict:
        """Named files of a one-model job, as patterns."""
        folder = self.replicate_dir if replicate else self.run_dir
        return {key: f"{folder}/{name}" for key, name in files.items()}

    def stack_files(self, files: dict, members: list) -> dict:
        """Named files of a stacked job: per name, one path per model."""
        return {key: [self.member(m, name) for m in members] for key, name in files.items()}

    def job_files(self, files: dict, members: list) -> dict:
        """Named files of a training or transfer job (:meth:`Plan.jobs`): per name, one path per
        model for a stack, the one model's path for a one-model job."""
        if self.config["stack_models"] > 1:
            return self.stack_files(files, members)
        return {key: self.member(members[0], name) for key, name in files.items()}

    def job_path(self, folder: str, job: str, members: list, suffix: str) -> str:
        """A job's own file under ``folder`` (its log, benchmark or checkpoint): ``stacked/<job>``
        for a stack, the path of its run (and replicate) for a one-model job."""
        if self.config["stack_models"] > 1:
            return f"{folder}/stacked/{job}{suffix}"
        m = members[0]
        replicate = f"/replicate{m.replicate}" if m.replicate else ""
        return f"{folder}/{RUN}{replicate}{suffix}".format(**vars(m))

    def run_paths(self, pattern: str, arm: str, methods=None) -> list[str]:
        """``pattern`` formatted for every run and seed of ``arm`` (of ``methods``, if given)."""
        return [pattern.format(**vars(m)) for m in self.plan.members(arm, methods)]

    def heldout_scores(self, wildcards):
        """A run's held-out scores (its transfer job's), unless its simulation setting has
        ``transfer: false``."""
        if not self.plan.transfers(wildcards.arm, wildcards.dataset):
            return []
        return self.member(wildcards, TRANSFER_FILES["summary"])

    def replicate_latents(self, wildcards) -> list[str]:
        """Latents of a run's replicates 1.. (none when it has no competitor)."""
        w = dict(wildcards.items())
        n = self.plan.n_replicates(w["arm"], w["dataset"], w["method"], w["hp"])
        return [self.member({**w, "replicate": r}, "latents.npz") for r in range(1, n)]

    # ------------------------------------------------------------------ enrichment
    def library(self, path: str) -> str:
        """A GMT library: as given when it exists or is downloaded, else the copy shipped in the
        repository's resources/ (so that runs from another working directory find it)."""
        if Path(path).is_absolute() or path in self.downloads or Path(path).exists():
            return path
        shipped = self.basedir.parent / path
        return str(shipped) if shipped.exists() else path

    def enrichment_libraries(self, wildcards) -> list[str]:
        """GMT libraries of an arm's gene symbols (simulated genes have none: their own sets), and
        a screen's own."""
        if wildcards.arm == "simulation":
            return []
        own = self.plan.screens[wildcards.dataset]["gene_sets"] if wildcards.arm == "screens" else []
        return [self.library(path) for path in [*self.config["enrichment"]["libraries"], *own]]

    # ------------------------------------------------------------------ screens
    def screen_h5ad(self, wildcards) -> str:
        """A screen's input: the user's file, or where the download rule puts it."""
        screen = self.plan.screens[wildcards.dataset]
        return screen.get("h5ad") or f"{screen['data_dir']}/{screen['name']}.h5ad"

    def screen_gene_list(self, wildcards) -> list[str]:
        genes = self.plan.screens[wildcards.dataset]["genes"]
        return [genes] if genes else []

    def screen_candidates(self, wildcards) -> dict[str, list[str]]:
        """The runs of a screen's method on its first seed, each setting one (export_screen
        reads the one selected): their weights, configs, latents and enrichment."""
        seed = self.plan.seeds_of("screens", wildcards.dataset)[0]
        runs = [hp for (arm, dataset, method, hp) in self.plan.runs
                if (arm, dataset, method) == ("screens", wildcards.dataset, wildcards.method)]
        return {
            name: [self.member({"arm": "screens", "dataset": wildcards.dataset, "seed": seed,
                                "method": wildcards.method, "hp": hp}, file) for hp in runs]
            for name, file in (("weights", "model.pt"), ("config", "model.json"), ("latents", "latents.npz"),
                               ("gsea", "enrichment/gsea.tsv"))
            if name != "gsea" or wildcards.method in self.config["enrichment"]["methods"]
        }

    def screen_exports(self, wildcards) -> list[str]:
        """Every method's exports of a screen (the figures read them)."""
        return [f"{self.screen_dir}/{wildcards.dataset}/{method}/{file}" for method in self.screen_methods(
            wildcards.dataset) for file in SCREEN_EXPORTS.values()]

    def screen_methods(self, name: str) -> list[str]:
        return list(dict.fromkeys(m for (arm, dataset, m, _) in self.plan.runs if (arm, dataset) == ("screens", name)))

    def screen_outputs(self, name: str) -> list[str]:
        """What a user gets for one screen: each method's latents and targets, the screen's figures
        and the enrichment of each run."""
        folder = f"{self.screen_dir}/{name}"
        figures = [f"{folder}/figures/{fig}.{ext}" for fig in SCREEN_FIGURES for ext in ("png", "pdf")]
        enrichment = [path for path in self.run_paths(f"{self.run_dir}/enrichment/gsea.tsv", "screens",
                                                      self.config["enrichment"]["methods"])
                      if path.startswith(f"{folder}/")]
        return self.screen_exports(SimpleNamespace(dataset=name)) + figures + enrichment

    # ------------------------------------------------------------------ figures and outputs
    def summary_figures(self, arm: str) -> list[str]:
        """An arm's summary figures; the sweeps' only when the configuration sweeps them (Table 4:
        the latent dimension, Figure 4: sVAE+'s alpha)."""
        if arm == "replogle":
            return ["inll", "table1"]
        if arm == "screens":
            return ["table1"] + (["inll"] if any(self.plan.transfers(arm, s) for s in self.plan.screens) else [])
        runs = self.plan.runs.values()
        swept = {
            "latent_sweep": len({run["n_latent"] for run in runs}) > 1,
            "alpha_sweep": len({run["alpha"] for run in runs if "alpha" in run}) > 1,
        }
        return [name for name in SUMMARY_FIGURES if swept.get(name, True)]

    def missing_note(self, wildcards=None) -> str:
        """What a figure of this configuration cannot show, for its caption."""
        absent = [DISPLAY_NAMES[m] for m in METHODS if m not in self.config["methods"]]
        return f"Not in this configuration, so not drawn: {', '.join(absent)}." if absent else ""

    def seed_runs(self, wildcards) -> dict[str, str]:
        """The run folder of each method on one simulation and seed (its first setting)."""
        runs: dict[str, str] = {}
        for arm, dataset, method, hp in self.plan.runs:
            if arm == "simulation" and dataset == wildcards.dataset:
                runs.setdefault(method, self.run_dir.format(arm=arm, dataset=dataset, seed=wildcards.seed,
                                                            method=method, hp=hp))
        return runs

    def seed_run_files(self, wildcards) -> list[str]:
        names = ["model.pt", "model.json", "latents.npz", "history.tsv"]
        return [f"{run}/{name}" for run in self.seed_runs(wildcards).values() for name in names]

    def arm_summary(self, arm: str) -> list[str]:
        """An arm's summary, Table 1 layout, generalisation table and the figures drawn from them."""
        figures = [f"{self.results}/{arm}/figures/{name}.{ext}" for name in self.summary_figures(arm)
                   for ext in ("png", "pdf")]
        tables = [f"{self.results}/{arm}/{name}.tsv" for name in ("summary", "table1", "generalisation")]
        return tables + figures

    def arm_outputs(self, arm: str) -> list[str]:
        """What an arm delivers: summary, Table 1 layout, figures and enrichment."""
        run_figures = [
            f"{self.sim_dir}/figures/{sim['name']}_seed{self.config['seeds'][0]}/{name}.{ext}"
            for sim in (self.config["simulations"] if arm == "simulation" else [])
            for name in RUN_FIGURES
            for ext in ("png", "pdf")
        ]
        enrichment = self.run_paths(f"{self.run_dir}/enrichment/gsea.tsv", arm, self.config["enrichment"]["methods"])
        screens = [path for name in (self.plan.screens if arm == "screens" else []) for path in self.screen_outputs(name)]
        return self.arm_summary(arm) + run_figures + enrichment + screens
