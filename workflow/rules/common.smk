import itertools
import re
import sys
from types import SimpleNamespace
from pathlib import Path

import jsonschema
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

sys.path.insert(0, str(Path(workflow.basedir) / "scripts"))
from sparseshift.methods import DISPLAY_NAMES, METHODS  # torch-free


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


def coerce_cli_numbers():
    """`--config seeds=[0]` passes list items as strings: read numeric ones as numbers
    (and `--config verbose=true` as a boolean)."""

    def number(value):
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                try:
                    return float(value)
                except ValueError:
                    return value
        return value

    for key in ("verbose",):
        if config.get(key) in ("true", "false", "True", "False"):
            config[key] = config[key].lower() == "true"
    if isinstance(config.get("stack_models"), str) and config["stack_models"].isdigit():
        config["stack_models"] = int(config["stack_models"])
    if isinstance(config.get("seeds"), list):
        config["seeds"] = [number(v) for v in config["seeds"]]
    for key, values in (config.get("hyperparameters") or {}).items():
        if isinstance(values, list):
            config["hyperparameters"][key] = [number(v) for v in values]


def check_renamed_keys():
    """Keys of earlier versions, named with what replaces them."""
    if "stack_seeds" in config:
        raise WorkflowError(
            "config key stack_seeds: replaced by stack_models (1: one model per job; N: the "
            "seeds, settings and replicates of a method trained in stacks of up to N models)"
        )


check_renamed_keys()
coerce_cli_numbers()
validate_config()

RESULTS = config["results"]
SIM_DIR = f"{RESULTS}/simulation"
REPLOGLE_DIR = f"{RESULTS}/replogle"
LOG_DIR = f"{RESULTS}/logs"
# A run: one method with one hyper-parameter setting trained with one seed on one
# dataset of an arm (a simulation setting, or a Replogle hold-out fold).
RUN = "{arm}/{dataset}/seed{seed}/{method}/{hp}"
RUN_DIR = f"{RESULTS}/{RUN}"
# Hyper-parameters swept per method, beyond the latent dimension.
METHOD_HYPERPARAMETERS = {
    "beta_vae": ["beta"],
    "svae": ["lambda"],
    "svae_plus": ["alpha"],
}


wildcard_constraints:
    arm="simulation|replogle",
    dataset="[A-Za-z0-9_]+",
    simulation="[A-Za-z0-9_]+",
    seed=r"\d+",
    method="|".join(METHODS),
    hp=r"p\d+[A-Za-z0-9_.\-]*",
    replicate=r"[1-9]\d*",


def check_simulations():
    """Cross-field checks the schema cannot express; each names its key."""
    names = [sim["name"] for sim in config["simulations"]]
    if len(set(names)) != len(names):
        raise WorkflowError(
            f"config key simulations: names must be unique, got {names}"
        )
    for i, sim in enumerate(config["simulations"]):
        key = f"simulations.{i}"
        t_min, t_max = sim["targets_per_perturbation"]
        if t_min > t_max:
            raise WorkflowError(
                f"config key {key}.targets_per_perturbation: min {t_min} exceeds max {t_max}"
            )
        if sim["n_heldout"] >= sim["n_perturbations"]:
            raise WorkflowError(
                f"config key {key}.n_heldout: must be below n_perturbations ({sim['n_perturbations']})"
            )
        if "targets_per_perturbation" in sim.get("heldout", {}):
            h_min, h_max = sim["heldout"]["targets_per_perturbation"]
            if h_min > h_max or (
                sim["target_sampling"] == "without_replacement"
                and h_max > sim["n_latent"]
            ):
                raise WorkflowError(
                    f"config key {key}.heldout.targets_per_perturbation: [{h_min}, {h_max}] "
                    f"needs min <= max <= n_latent ({sim['n_latent']})"
                )
        if sim["target_sampling"] == "without_replacement" and t_max > sim["n_latent"]:
            raise WorkflowError(
                f"config key {key}.targets_per_perturbation: max {t_max} exceeds n_latent "
                f"{sim['n_latent']} (sampling without replacement)"
            )


def check_stacking():
    """Stacked training (stack_models > 1) has no BatchNorm: say which key conflicts."""
    if config["stack_models"] > 1 and config["model"]["batch_norm"]:
        raise WorkflowError(
            "config key model.batch_norm: BatchNorm is not available in stacked jobs "
            "(its running statistics are not kept in a stack; set stack_models to 1)"
        )


check_simulations()
check_stacking()
SIMULATIONS = {sim["name"]: sim for sim in config["simulations"]}
REPLOGLE = config["replogle"]
# Downloadable inputs by file name, and the two inputs of the Replogle arm: the
# user's own files when the config names them, else where the download rule puts them.
ENRICHMENT = config["enrichment"]
DOWNLOADS = {
    f"{REPLOGLE['data_dir']}/{d['file']}": d for d in REPLOGLE["downloads"].values()
} | {
    f"{ENRICHMENT['download_dir']}/{d['file']}": d
    for d in ENRICHMENT["downloads"].values()
}
REPLOGLE_H5AD = (
    REPLOGLE["h5ad"]
    or f"{REPLOGLE['data_dir']}/{REPLOGLE['downloads'][REPLOGLE['dataset']]['file']}"
)
REPLOGLE_TABLE = (
    REPLOGLE["table_s3"]
    or f"{REPLOGLE['data_dir']}/{REPLOGLE['downloads']['table_s3']['file']}"
)
FOLDS = {fold["name"]: fold for fold in REPLOGLE["folds"]}


def check_replogle():
    """Cross-field checks of the Replogle section; each names its key."""
    if not REPLOGLE["enabled"]:
        return
    names = [fold["name"] for fold in REPLOGLE["folds"]]
    if len(set(names)) != len(names):
        raise WorkflowError(
            f"config key replogle.folds: names must be unique, got {names}"
        )
    for i, fold in enumerate(REPLOGLE["folds"]):
        if fold["effect"] == ("cluster" in fold):
            raise WorkflowError(
                f"config key replogle.folds.{i}: give either 'cluster' (a Table S3 "
                "description) or 'effect: true', not both or neither"
            )
    for key in ("h5ad", "table_s3"):
        path = REPLOGLE[key]
        if path and not Path(path).is_file():
            raise WorkflowError(
                f"config key replogle.{key}: {path} is not a file (set it to null to "
                f"download it to {REPLOGLE['data_dir']})"
            )
    if Path(REPLOGLE_TABLE).is_file():
        check_fold_clusters()


def check_fold_clusters():
    """Every fold's cluster in Table S3, when the workbook is local (else the job
    check_replogle_inputs checks them, before preprocessing)."""
    from sparseshift.io import InputError
    from sparseshift.replogle.table_s3 import find_cluster, read_table_s3

    try:
        clusters, _ = read_table_s3(REPLOGLE_TABLE)
    except InputError as err:
        raise WorkflowError(f"config key replogle.table_s3: {err}") from None
    for i, fold in enumerate(REPLOGLE["folds"]):
        try:
            if "cluster" in fold:
                find_cluster(clusters, fold)
        except InputError as err:
            raise WorkflowError(
                f"config key replogle.folds.{i}.cluster: {err}"
            ) from None


check_replogle()


def _tag(n_latent, hp):
    return "_".join([f"p{n_latent}"] + [f"{k}{v:g}" for k, v in hp.items()])


def build_runs():
    """Every training run: arm x dataset x method x hyper-parameters (x seed)."""
    runs = {}
    datasets = []
    for sim in config["simulations"]:
        grid = {**config["hyperparameters"], **sim.get("hyperparameters", {})}
        latents = grid["n_latent"] or [sim["n_latent"]]
        methods = sim.get("methods", config["methods"])
        datasets.append(("simulation", sim["name"], latents, grid, methods))
    if REPLOGLE["enabled"]:
        grid = {**config["hyperparameters"], **REPLOGLE.get("hyperparameters", {})}
        for fold in REPLOGLE["folds"]:
            datasets.append(
                (
                    "replogle",
                    fold["name"],
                    [REPLOGLE["n_latent"]],
                    grid,
                    config["methods"],
                )
            )
    for arm, dataset, latents, grid, methods in datasets:
        for method in methods:
            names = METHOD_HYPERPARAMETERS.get(method, [])
            for p, values in itertools.product(
                latents, itertools.product(*(grid[n] for n in names))
            ):
                hp = dict(zip(names, values))
                runs[(arm, dataset, method, _tag(p, hp))] = {"n_latent": p, **hp}
    return runs


RUNS = build_runs()
# Per arm: the seeds of its runs, and the summary column naming its datasets.
ARM_SEEDS = {"simulation": config["seeds"], "replogle": REPLOGLE["seeds"]}
ARM_ID = {"simulation": "simulation", "replogle": "fold"}
SELECTION = config["selection"]
# Replicate r >= 1 of a run: the same dataset and setting, trained with another seed, for
# the unsupervised selection among a method's settings (UDR). Replicate 0 is the run.
REPLICATE_DIR = f"{RUN_DIR}/replicate{{replicate}}"


def candidates(arm, dataset, method, n_latent):
    """The settings of ``method`` on one dataset and latent dimension: selection chooses
    among them."""
    return [
        hp
        for (a, d, m, hp), run in RUNS.items()
        if (a, d, m) == (arm, dataset, method) and run["n_latent"] == n_latent
    ]


def n_replicates(arm, dataset, method, hp):
    """Models trained per run and seed: several when the run competes with other
    settings of its method (selection compares each setting's replicates), else one."""
    n_latent = RUNS[(arm, dataset, method, hp)]["n_latent"]
    return (
        SELECTION["replicates"]
        if len(candidates(arm, dataset, method, n_latent)) > 1
        else 1
    )


def replicate_seed(seed, replicate):
    """Seed of a run's replicate: replicate 0 is the run itself."""
    return int(seed) + 1000 * int(replicate)


def heldout_scores(wildcards):
    """A run's held-out scores (the transfer job's), unless its simulation setting has
    ``transfer: false``."""
    if not transfers(wildcards.arm, wildcards.dataset):
        return []
    return f"{RUN_DIR}/transfer/heldout.json".format(**dict(wildcards.items()))


def replicate_latents(wildcards):
    """Latents of a run's replicates 1.. (none when it has no competitor)."""
    n = n_replicates(wildcards.arm, wildcards.dataset, wildcards.method, wildcards.hp)
    return [
        f"{REPLICATE_DIR}/latents.npz".format(**dict(wildcards.items()), replicate=r)
        for r in range(1, n)
    ]


def run_paths(pattern, arm, methods=None):
    """``pattern`` formatted for every run and seed of ``arm`` (of ``methods``, if given)."""
    return [
        pattern.format(arm=a, dataset=dataset, method=method, hp=hp, seed=seed)
        for (a, dataset, method, hp) in RUNS
        if a == arm and (methods is None or method in methods)
        for seed in ARM_SEEDS[arm]
    ]


def dataset_path(wildcards):
    """The dataset a run trains on: a simulation is drawn per seed, a fold is not."""
    if wildcards.arm == "simulation":
        return f"{SIM_DIR}/{wildcards.dataset}/seed{wildcards.seed}/data.h5ad"
    return f"{REPLOGLE_DIR}/{wildcards.dataset}/data.h5ad"


def transfers(arm, dataset):
    """Whether the runs on ``dataset`` go through the transfer protocol (a simulation setting
    with ``transfer: false`` does not)."""
    return arm != "simulation" or SIMULATIONS[dataset]["transfer"]


def chunks(members, size):
    """``members`` cut into the fewest consecutive chunks of at most ``size``, of near-equal size."""
    n = -(-len(members) // size)
    return [
        members[i * len(members) // n : (i + 1) * len(members) // n] for i in range(n)
    ]


def stacks(transfer):
    """The stacked jobs (config key stack_models): job id -> its models, each the
    wildcards of one run or replicate. A job holds the seeds, settings and replicates of one
    method on one dataset and latent dimension (for the transfer, the runs only), at most
    stack_models of them."""
    groups = {}
    for (arm, dataset, method, hp), run in RUNS.items():
        if transfer and not transfers(arm, dataset):
            continue
        replicates = 1 if transfer else n_replicates(arm, dataset, method, hp)
        for seed in ARM_SEEDS[arm]:
            for r in range(replicates):
                member = SimpleNamespace(
                    arm=arm,
                    dataset=dataset,
                    method=method,
                    hp=hp,
                    seed=seed,
                    replicate=r,
                )
                key = (arm, dataset, method, run["n_latent"])
                groups.setdefault(key, []).append(member)
    jobs = {}
    for (arm, dataset, method, n_latent), members in groups.items():
        parts = chunks(members, config["stack_models"])
        for k, part in enumerate(parts):
            part_id = f"_part{k + 1}" if len(parts) > 1 else ""
            jobs[f"{arm}_{dataset}_{method}_p{n_latent}{part_id}"] = part
    return jobs


def member_path(member, name):
    """File ``name`` of a run or replicate of a stacked job."""
    folder = REPLICATE_DIR if member.replicate else RUN_DIR
    return f"{folder}/{name}".format(**vars(member))


def profile_settings(rule_name):
    """Threads and resources that a profile's set-threads / set-resources give ``rule_name``
    (the one-model job of a step), for the stacked jobs of that step, whose names are
    generated (the SLURM profile's GPU partition, for instance)."""
    settings = workflow.resource_settings

    def plain(value):  # Snakemake holds them as Resource objects
        return getattr(value, "raw", value)

    threads = plain(settings.overwrite_threads.get(rule_name))
    resources = {
        key: plain(value)
        for key, value in dict(settings.overwrite_resources.get(rule_name, {})).items()
    }
    return threads, resources


def stacked_threads(step):
    threads, _ = profile_settings(step)
    return threads if isinstance(threads, int) else config["resources"][step]["threads"]


def stacked_resources(step):
    return {**job_resources(step), **profile_settings(step)[1]}


def simulation_settings(wildcards):
    sim = dict(SIMULATIONS[wildcards.simulation])
    del sim["name"]
    sim.pop("hyperparameters", None)
    sim.pop("transfer")
    heldout = sim.pop("heldout", {})
    if "targets_per_perturbation" in heldout:
        low, high = heldout["targets_per_perturbation"]
        sim["heldout_targets_min"], sim["heldout_targets_max"] = low, high
    sim["heldout_effect_mean"] = heldout.get("effect_mean")
    sim["targets_min"], sim["targets_max"] = sim.pop("targets_per_perturbation")
    sim["seed"] = int(wildcards.seed)
    return sim


def run_hyperparameters(wildcards):
    return RUNS[(wildcards.arm, wildcards.dataset, wildcards.method, wildcards.hp)]


def model_settings(wildcards):
    hp = run_hyperparameters(wildcards)
    m = config["model"]
    return {
        "method": wildcards.method,
        "n_latent": hp["n_latent"],
        "beta": hp.get("beta", 1.0),
        "alpha": hp.get("alpha"),
        "lam": hp.get("lambda"),
        "n_hidden": m["n_hidden"],
        "n_layers": m["n_layers"],
        "init_logit": m["mask_init_logit"],
        "temperature": m["temperature"],
        "graph_top_k": m["ivae_graph_top_k"],
        "standardize_input": m["standardize_input"],
        "batch_norm": m["batch_norm"],
        "dropout": m["dropout"],
    }


def arm_config(wildcards):
    """The arm's own configuration section (train, transfer)."""
    return config if wildcards.arm == "simulation" else REPLOGLE


def train_settings(wildcards):
    """The training settings of a run, or of its replicate (seed s + 1000 r)."""
    seed = replicate_seed(wildcards.seed, getattr(wildcards, "replicate", 0))
    return {**arm_config(wildcards)["train"], "seed": seed}


def transfer_settings(wildcards):
    return arm_config(wildcards)["transfer"]


def enrichment_settings(wildcards):
    settings = dict(ENRICHMENT)
    for key in ("methods", "libraries", "downloads", "download_dir"):
        del settings[key]
    return {**settings, "seed": int(wildcards.seed)}


def library_path(path):
    """A GMT library: as given when it exists or is downloaded, else the copy shipped in
    the repository's resources/ (so that runs from another working directory find it).
    """
    if Path(path).is_absolute() or path in DOWNLOADS or Path(path).exists():
        return path
    shipped = Path(workflow.basedir).parent / path
    return str(shipped) if shipped.exists() else path


def enrichment_libraries(wildcards):
    """GMT libraries of an arm's gene symbols (simulated genes have none: their own sets)."""
    if wildcards.arm != "replogle":
        return []
    return [library_path(path) for path in ENRICHMENT["libraries"]]


def job_resources(step):
    """Cluster resources of a job of ``step`` (config key resources.<step>); memory
    grows with each retry."""
    res = config["resources"][step]
    return {
        "gpu": res["gpu"],
        "mem_mb": lambda wildcards, attempt: res["mem_mb"] * attempt,
        "runtime": res["runtime"],
    }


def run_record(wildcards):
    """Identifiers and hyper-parameters of a run, as they appear in summary.tsv."""
    hp = run_hyperparameters(wildcards)
    return {
        ARM_ID[wildcards.arm]: wildcards.dataset,
        "method": wildcards.method,
        "seed": int(wildcards.seed),
        "run": wildcards.hp,
        "n_latent": hp["n_latent"],
        "beta": hp.get("beta", 1.0),
        "alpha": hp.get("alpha"),
        "lambda": hp.get("lambda"),
    }


def swept(values):
    return len(set(values)) > 1


# Figures drawn from an arm's summary (sparseshift.arm_figures.FIGURES); the sweeps' only
# when the configuration sweeps them (Table 4: the latent dimension, Figure 4: sVAE+'s alpha).
FIGURES = {
    "simulation": ["methods", "inll", "table1"]
    + (["latent_sweep"] if swept(run["n_latent"] for run in RUNS.values()) else [])
    + (
        ["alpha_sweep"]
        if swept(run["alpha"] for run in RUNS.values() if "alpha" in run)
        else []
    ),
    "replogle": ["inll", "table1"],
}
# Figures of the runs of one simulation and seed (the first seed).
RUN_FIGURES = ["target_graphs", "shift_heatmap", "training_curves"]


def missing_note(wildcards=None):
    """What a figure of this configuration cannot show, for its caption."""
    absent = [m for m in METHODS if m not in config["methods"]]
    if not absent:
        return ""
    names = ", ".join(DISPLAY_NAMES[m] for m in absent)
    return f"Not in this configuration, so not drawn: {names}."


def seed_runs(wildcards):
    """The run folder of each method on one simulation and seed (its first setting)."""
    runs = {}
    for arm, dataset, method, hp in RUNS:
        if arm == "simulation" and dataset == wildcards.dataset:
            runs.setdefault(
                method, f"{SIM_DIR}/{dataset}/seed{wildcards.seed}/{method}/{hp}"
            )
    return runs


def seed_run_files(wildcards):
    names = ["model.pt", "model.json", "latents.npz", "history.tsv"]
    return [f"{run}/{name}" for run in seed_runs(wildcards).values() for name in names]


def arm_outputs(arm):
    """What an arm delivers: summary, Table 1 layout and figures."""
    return (
        [f"{RESULTS}/{arm}/summary.tsv", f"{RESULTS}/{arm}/table1.tsv"]
        + [
            f"{RESULTS}/{arm}/figures/{figure}.{ext}"
            for figure in FIGURES[arm]
            for ext in ("png", "pdf")
        ]
        + [
            f"{SIM_DIR}/figures/{sim['name']}_seed{config['seeds'][0]}/{figure}.{ext}"
            for sim in (config["simulations"] if arm == "simulation" else [])
            for figure in RUN_FIGURES
            for ext in ("png", "pdf")
        ]
        + run_paths(f"{RUN_DIR}/enrichment/gsea.tsv", arm, ENRICHMENT["methods"])
    )
