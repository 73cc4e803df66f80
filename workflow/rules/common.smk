import re
import sys
from pathlib import Path

import jsonschema
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

sys.path.insert(0, str(Path(workflow.basedir) / "scripts"))
# torch-free modules: what the config runs (plan) and where its files live (layout)
from sparseshift.layout import (
    RUN,
    RUN_FIGURES,
    SCREEN_EXPORTS,
    SCREEN_FIGURES,
    SUMMARY_FIGURES,
    TRAIN_FILES,
    TRANSFER_FILES,
    TRANSFER_INPUTS,
    Layout,
)
from sparseshift.methods import METHODS
from sparseshift.plan import ARM_ID, ConfigError, Plan, check_fold_clusters, prepare


def validate_config():
    """Schema validation (fills defaults); a failure names the offending key in one line."""
    try:
        validate(config, "../schemas/config.schema.yaml")
    except WorkflowError as err:
        cause = err.__context__  # snakemake raises while handling the schema error
        if not isinstance(cause, jsonschema.ValidationError):
            raise
        key = ".".join(str(part) for part in cause.absolute_path) or "(top level)"
        raise WorkflowError(
            f"Invalid configuration, key '{key}': {cause.message}"
        ) from None


def plan_and_layout():
    """The checked config's runs and files; a config error names its key in one line."""
    try:
        prepare(config)  # --config values as numbers, renamed keys named
        validate_config()
        plan = Plan(config)  # checks it
        layout = Layout(plan, workflow.basedir)
        table = layout.replogle_table
        if config["replogle"]["enabled"] and Path(table).is_file():
            check_fold_clusters(table, config["replogle"]["folds"])
    except ConfigError as err:
        raise WorkflowError(str(err)) from None
    return plan, layout


PLAN, LAYOUT = plan_and_layout()
RUNS = PLAN.runs
REPLOGLE = config["replogle"]
FOLDS = {fold["name"]: fold for fold in REPLOGLE["folds"]}
RESULTS = LAYOUT.results
SIM_DIR, REPLOGLE_DIR, LOG_DIR = LAYOUT.sim_dir, LAYOUT.replogle_dir, LAYOUT.log_dir
SCREEN_DIR = LAYOUT.screen_dir
# The environment of the training and transfer jobs (--use-conda): conda-forge's CUDA build of
# torch when the config names a CUDA device (device: cuda or cuda:N), else the CPU build.
MODEL_ENV = (
    "../../envs/model-gpu.yaml"
    if config["device"].startswith("cuda")
    else "../../envs/model.yaml"
)
# The Replogle download (66 GB) is something a user asks for: the default target includes the
# arm only when its input is already here; `snakemake replogle` downloads it.
REPLOGLE_IN_ALL = REPLOGLE["enabled"] and Path(LAYOUT.replogle_h5ad).is_file()
RUN_DIR, REPLICATE_DIR = LAYOUT.run_dir, LAYOUT.replicate_dir
ARMS = ("simulation", "replogle", "screens")


wildcard_constraints:
    arm="|".join(ARMS),
    dataset="[A-Za-z0-9_]+",
    simulation="[A-Za-z0-9_]+",
    seed=r"\d+",
    method="|".join(METHODS),
    hp=r"p\d+[A-Za-z0-9_.\-]*",
    replicate=r"[1-9]\d*",


def profile_settings(rule_name):
    """Threads and resources that a profile's set-threads / set-resources give ``rule_name``
    (a step: train or transfer), for the jobs of that step, whose rule names are generated
    (the SLURM profile's GPU partition, for instance)."""
    settings = workflow.resource_settings

    def plain(value):  # Snakemake holds them as Resource objects
        return getattr(value, "raw", value)

    threads = plain(settings.overwrite_threads.get(rule_name))
    resources = {
        key: plain(value)
        for key, value in dict(settings.overwrite_resources.get(rule_name, {})).items()
    }
    return threads, resources


def job_threads(step):
    """Threads of a training or transfer job: the profile's for the step, else the config's."""
    threads, _ = profile_settings(step)
    return threads if isinstance(threads, int) else config["resources"][step]["threads"]


def profile_resources(step):
    """Resources of a training or transfer job: the config's, then the profile's for the step."""
    return {**job_resources(step), **profile_settings(step)[1]}


# Training and transfer jobs (PLAN.jobs): one model each, or stacks (config key stack_models).
STACKED = config["stack_models"] > 1


def job_rule(step, job):
    """The name of a job's rules: train_stack_<job> or train_<job> (transfer likewise)."""
    return f"{step}_stack_{job}" if STACKED else f"{step}_{job}"


def per_run(settings, members):
    """A job's value of each run: a list for a stack, the one run's for a one-model job."""
    return [settings(m) for m in members] if STACKED else settings(members[0])


def job_resources(step):
    """Cluster resources of a job of ``step`` (config key resources.<step>); memory
    grows with each retry."""
    res = config["resources"][step]
    return {
        "gpu": res["gpu"],
        "mem_mb": lambda wildcards, attempt: res["mem_mb"] * attempt,
        "runtime": res["runtime"],
    }


def enrichment_settings(wildcards):
    settings = dict(config["enrichment"])
    for key in ("methods", "libraries", "downloads", "download_dir"):
        del settings[key]
    return {**settings, "seed": int(wildcards.seed)}
