import itertools

import jsonschema
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate


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
    """`--config seeds=[0]` passes list items as strings: read numeric ones as numbers."""

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

    if isinstance(config.get("seeds"), list):
        config["seeds"] = [number(v) for v in config["seeds"]]
    for key, values in (config.get("hyperparameters") or {}).items():
        if isinstance(values, list):
            config["hyperparameters"][key] = [number(v) for v in values]


coerce_cli_numbers()
validate_config()

RESULTS = config["results"]
SIM_DIR = f"{RESULTS}/simulation"
# The dataset a run trains on (its obs["split"] says which perturbations are held out)
# and the folder of the run's outputs.
DATASET = f"{SIM_DIR}/{{simulation}}/seed{{seed}}/data.h5ad"
RUN_DIR = f"{SIM_DIR}/{{simulation}}/seed{{seed}}/{{method}}/{{hp}}"
LOG_DIR = f"{RESULTS}/logs"
# Hyper-parameters swept per method, beyond the latent dimension.
METHOD_HYPERPARAMETERS = {
    "beta_vae": ["beta"],
    "svae": ["lambda"],
    "svae_plus": ["alpha"],
}


wildcard_constraints:
    simulation="[A-Za-z0-9_]+",
    seed=r"\d+",
    method="|".join(config["methods"]),
    hp=r"p\d+[A-Za-z0-9_.\-]*",


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
        if sim["target_sampling"] == "without_replacement" and t_max > sim["n_latent"]:
            raise WorkflowError(
                f"config key {key}.targets_per_perturbation: max {t_max} exceeds n_latent "
                f"{sim['n_latent']} (sampling without replacement)"
            )


check_simulations()
SIMULATIONS = {sim["name"]: sim for sim in config["simulations"]}


def _tag(n_latent, hp):
    return "_".join([f"p{n_latent}"] + [f"{k}{v:g}" for k, v in hp.items()])


def build_runs():
    """Every training run: simulation x method x hyper-parameters x seed."""
    runs = {}
    grid = config["hyperparameters"]
    for settings in config["simulations"]:
        sim = settings["name"]
        latents = grid["n_latent"] or [settings["n_latent"]]
        for method in config["methods"]:
            names = METHOD_HYPERPARAMETERS.get(method, [])
            for p, values in itertools.product(
                latents, itertools.product(*(grid[n] for n in names))
            ):
                hp = dict(zip(names, values))
                runs[(sim, method, _tag(p, hp))] = {"n_latent": p, **hp}
    return runs


RUNS = build_runs()


def run_paths(pattern):
    """``pattern`` formatted for every run and seed."""
    return [
        pattern.format(simulation=sim, method=method, hp=hp, seed=seed)
        for (sim, method, hp) in RUNS
        for seed in config["seeds"]
    ]


def simulation_settings(wildcards):
    sim = dict(SIMULATIONS[wildcards.simulation])
    del sim["name"]
    sim["targets_min"], sim["targets_max"] = sim.pop("targets_per_perturbation")
    sim["seed"] = int(wildcards.seed)
    return sim


def model_settings(wildcards):
    hp = RUNS[(wildcards.simulation, wildcards.method, wildcards.hp)]
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
    }


def train_settings(wildcards):
    return {**config["train"], "seed": int(wildcards.seed)}


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
    hp = RUNS[(wildcards.simulation, wildcards.method, wildcards.hp)]
    return {
        "simulation": wildcards.simulation,
        "method": wildcards.method,
        "seed": int(wildcards.seed),
        "run": wildcards.hp,
        "n_latent": hp["n_latent"],
        "beta": hp.get("beta", 1.0),
        "alpha": hp.get("alpha"),
        "lambda": hp.get("lambda"),
    }


# Figures drawn from summary.tsv (sparseshift.plots.FIGURES).
FIGURES = ["methods", "inll"]
SUMMARY_OUTPUTS = [f"{SIM_DIR}/summary.tsv", f"{SIM_DIR}/table1.tsv"] + [
    f"{SIM_DIR}/figures/{figure}.{ext}" for figure in FIGURES for ext in ("png", "pdf")
]
