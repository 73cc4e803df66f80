"""What a configuration runs: its checks, its runs, replicates and stacked jobs, and the
settings each job receives.

The Snakefile (workflow/rules/common.smk) builds one :class:`Plan` when it parses the
config; every rule asks it. The schema (workflow/schemas/config.schema.yaml) checks each
key's type and range and fills the defaults; :meth:`Plan.check` is the one place for what a
schema cannot say (names known to the method registry, fields that depend on each other),
each failure naming its config key. The settings handed to a job carry the config keys
unchanged, as the dataclasses they fill name them (:class:`~sparseshift.model.ModelConfig`,
:class:`~sparseshift.simulate.SimulationConfig`, :class:`~sparseshift.train.TrainConfig`).
Free of torch, so that parsing the workflow stays quick.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from types import SimpleNamespace

from .methods import HYPERPARAMETERS, METHODS, REGISTRY

# The KL weight of the models of every method that does not sweep it (summary columns).
RECORD_DEFAULTS = {"beta": 1.0}
# The column that names an arm's datasets in its metrics and tables.
ARM_ID = {"simulation": "simulation", "replogle": "fold", "screens": "screen"}
# The keys of a simulation entry that are not SimulationConfig fields.
_SIMULATION_ONLY = ("name", "transfer", "methods", "hyperparameters")
# The keys of a screen entry that concern its models, not its data.
_SCREEN_TRAINING = ("seeds", "n_latent", "methods", "gene_sets", "hyperparameters", "train", "transfer")


class ConfigError(ValueError):
    """A configuration the pipeline cannot run, naming the key."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"config key {key}: {message}")


def _number(value):
    if isinstance(value, str):
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                pass
    return value


def prepare(config: dict) -> None:
    """Before the schema: ``--config`` passes list items and numbers as strings (read numeric
    ones as numbers, ``verbose=true`` as a boolean); keys of earlier versions are named with
    what replaces them."""
    if "stack_seeds" in config:
        raise ConfigError("stack_seeds", "replaced by stack_models (1: one model per job; N: the seeds, "
                          "settings and replicates of a method trained in stacks of up to N models)")
    for key in ("verbose", "stack_methods"):
        if config.get(key) in ("true", "false", "True", "False"):
            config[key] = config[key].lower() == "true"
    if isinstance(config.get("stack_models"), str) and config["stack_models"].isdigit():
        config["stack_models"] = int(config["stack_models"])
    if isinstance(config.get("seeds"), list):
        config["seeds"] = [_number(v) for v in config["seeds"]]
    for key, values in (config.get("hyperparameters") or {}).items():
        if isinstance(values, list):
            config["hyperparameters"][key] = [_number(v) for v in values]
    for screen in config.get("screens") or []:
        if isinstance(screen, dict):  # a screen's train and transfer inherit the top level's keys
            for section in ("train", "transfer"):
                screen[section] = {**(config.get(section) or {}), **(screen.get(section) or {})}


def tag(n_latent: int, hp: dict) -> str:
    """The folder of a run's setting, e.g. ``p15_alpha100``."""
    return "_".join([f"p{n_latent}"] + [f"{k}{v:g}" for k, v in hp.items()])


def replicate_seed(seed, replicate) -> int:
    """Seed of a run's replicate: replicate 0 is the run itself."""
    return int(seed) + 1000 * int(replicate)


def chunks(members: list, size: int) -> list[list]:
    """``members`` cut into the fewest consecutive chunks of at most ``size``, of near-equal size."""
    n = -(-len(members) // size)
    return [members[i * len(members) // n : (i + 1) * len(members) // n] for i in range(n)]


class Plan:
    """The runs of a config as the schema filled it, checked first (:meth:`check`).

    A run is one method with one setting (latent dimension and swept weight) trained with
    one seed on one dataset of an arm (a simulation setting, or a Replogle hold-out fold),
    keyed by ``(arm, dataset, method, tag)``; its replicates (another training seed each)
    serve the unsupervised selection among the settings of a method (UDR).
    """

    def __init__(self, config: dict):
        self.config = config
        self.simulations = {sim["name"]: sim for sim in config["simulations"]}
        self.replogle = config["replogle"]
        self.screens = {screen["name"]: screen for screen in config["screens"]}
        self.seeds = {"simulation": config["seeds"], "replogle": self.replogle["seeds"]}
        self.check()
        self.runs = self._runs()

    # ------------------------------------------------------------------ checks
    def check(self) -> None:
        """Everything the schema cannot check; a :class:`ConfigError` names the key."""
        from .simulation_config import SimulationConfig  # numpy: only where needed

        config = self.config
        for key, methods in [("methods", config["methods"]), ("enrichment.methods", config["enrichment"]["methods"])] + [
            (f"simulations.{i}.methods", sim["methods"]) for i, sim in enumerate(config["simulations"]) if "methods" in sim
        ] + [("train.loss_times_cells", config["train"].get("loss_times_cells", []))]:
            for j, name in enumerate(methods):
                if name not in REGISTRY:
                    raise ConfigError(f"{key}.{j}", f"{name!r} is not one of {', '.join(METHODS)}")
        names = list(self.simulations)
        if len(names) != len(config["simulations"]):
            raise ConfigError("simulations", f"names must be unique, got {[s['name'] for s in config['simulations']]}")
        for i, sim in enumerate(config["simulations"]):
            try:
                SimulationConfig(**self.simulation_settings(SimpleNamespace(simulation=sim["name"], seed=0)))
            except ValueError as err:
                field = re.match(r"[\w.]+", str(err)).group()
                raise ConfigError(f"simulations.{i}.{field}", str(err)) from None
        if config["stack_models"] > 1 and config["model"]["batch_norm"]:
            raise ConfigError("model.batch_norm", "BatchNorm is not available in stacked jobs (its running "
                              "statistics are not kept in a stack; set stack_models to 1)")
        if config["selection"]["criterion"] == "mask_agreement":
            for name in config["methods"]:
                weight = REGISTRY[name].hyperparameter
                if weight and not REGISTRY[name].learns_mask and len(config["hyperparameters"][weight]) > 1:
                    raise ConfigError("selection.criterion", f"mask_agreement needs a learned mask, but {name} "
                                      f"(no mask) has several values of hyperparameters.{weight} to choose from")
        self._check_replogle()
        self._check_screens()

    def _check_screens(self) -> None:
        screens = self.config["screens"]
        names = [screen["name"] for screen in screens]
        for i, screen in enumerate(screens):
            if names.index(screen["name"]) != i:
                raise ConfigError(f"screens.{i}.name", f"{screen['name']!r} is the name of screen "
                                  f"{names.index(screen['name'])} too: names must be unique")
            for j, name in enumerate(screen.get("methods", [])):
                if name not in REGISTRY:
                    raise ConfigError(f"screens.{i}.methods.{j}", f"{name!r} is not one of {', '.join(METHODS)}")
            if ("h5ad" in screen) == ("url" in screen):
                raise ConfigError(f"screens.{i}", "give either 'h5ad' (a local file) or 'url' (with md5) to "
                                  "download it, not both or neither")
            if "h5ad" in screen and not Path(screen["h5ad"]).is_file():
                raise ConfigError(f"screens.{i}.h5ad", f"{screen['h5ad']} is not a file")
            if screen["genes"] is not None and not Path(screen["genes"]).is_file():
                raise ConfigError(f"screens.{i}.genes", f"{screen['genes']} is not a file")
            for j, path in enumerate(screen["gene_sets"]):
                if not Path(path).is_file():
                    raise ConfigError(f"screens.{i}.gene_sets.{j}", f"{path} is not a file")

    def _check_replogle(self) -> None:
        replogle = self.replogle
        if not replogle["enabled"]:
            return
        names = [fold["name"] for fold in replogle["folds"]]
        if len(set(names)) != len(names):
            raise ConfigError("replogle.folds", f"names must be unique, got {names}")
        for i, fold in enumerate(replogle["folds"]):
            if fold["effect"] == ("cluster" in fold):
                raise ConfigError(f"replogle.folds.{i}", "give either 'cluster' (a Table S3 description) or "
                                  "'effect: true', not both or neither")
        for key in ("h5ad", "table_s3"):
            path = replogle[key]
            if path and not Path(path).is_file():
                raise ConfigError(f"replogle.{key}", f"{path} is not a file (set it to null to download it to "
                                  f"{replogle['data_dir']})")

    # ------------------------------------------------------------------ runs
    def _runs(self) -> dict[tuple, dict]:
        """Every training run: arm x dataset x method x setting (x seed)."""
        config = self.config
        datasets = []
        for sim in config["simulations"]:
            grid = {**config["hyperparameters"], **sim.get("hyperparameters", {})}
            datasets.append(("simulation", sim["name"], grid["n_latent"] or [sim["n_latent"]], grid,
                             sim.get("methods", config["methods"])))
        if self.replogle["enabled"]:
            grid = {**config["hyperparameters"], **self.replogle.get("hyperparameters", {})}
            for fold in self.replogle["folds"]:
                datasets.append(("replogle", fold["name"], [self.replogle["n_latent"]], grid, config["methods"]))
        for name, screen in self.screens.items():
            grid = {**config["hyperparameters"], **screen.get("hyperparameters", {})}
            datasets.append(("screens", name, [screen["n_latent"]], grid, screen.get("methods", config["methods"])))
        runs = {}
        for arm, dataset, latents, grid, methods in datasets:
            for method in methods:
                key = REGISTRY[method].hyperparameter
                for n_latent, value in itertools.product(latents, grid[key] if key else [None]):
                    hp = {key: value} if key else {}
                    runs[(arm, dataset, method, tag(n_latent, hp))] = {"n_latent": n_latent, **hp}
        return runs

    def candidates(self, arm, dataset, method, n_latent) -> list[str]:
        """The settings of ``method`` on one dataset and latent dimension: selection chooses among them."""
        return [hp for (a, d, m, hp), run in self.runs.items()
                if (a, d, m) == (arm, dataset, method) and run["n_latent"] == n_latent]

    def n_replicates(self, arm, dataset, method, hp) -> int:
        """Models trained per run and seed: several when the run competes with other settings
        of its method (selection compares each setting's replicates), else one."""
        n_latent = self.runs[(arm, dataset, method, hp)]["n_latent"]
        several = len(self.candidates(arm, dataset, method, n_latent)) > 1
        return self.config["selection"]["replicates"] if several else 1

    def transfers(self, arm, dataset) -> bool:
        """Whether the runs on ``dataset`` go through the transfer protocol (a simulation setting
        with ``transfer: false`` does not, nor a screen without held-out perturbations)."""
        if arm == "screens":
            return self.screens[dataset]["heldout"] not in (None, "none")
        return arm != "simulation" or self.simulations[dataset]["transfer"]

    def seeds_of(self, arm, dataset) -> list[int]:
        """The training seeds of a dataset: its arm's, or a screen's own."""
        if arm == "screens":
            return self.screens[dataset].get("seeds", self.config["seeds"])
        return self.seeds[arm]

    def members(self, arm=None, methods=None, replicates: bool = False) -> list[SimpleNamespace]:
        """Every run (and, with ``replicates``, replicate) and seed, as wildcards (of ``arm`` and
        ``methods`` only, when given)."""
        return [
            SimpleNamespace(arm=a, dataset=dataset, method=method, hp=hp, seed=seed, replicate=r)
            for (a, dataset, method, hp) in self.runs
            if (arm is None or a == arm) and (methods is None or method in methods)
            for seed in self.seeds_of(a, dataset)
            for r in range(self.n_replicates(a, dataset, method, hp) if replicates else 1)
        ]

    def jobs(self, transfer: bool, arm: str | None = None) -> dict[str, list[SimpleNamespace]]:
        """Every training (or, with ``transfer``, transfer) job (of ``arm`` only, when given):
        job id -> its models. With ``stack_models: 1`` a job is one run or replicate, named
        after it; else :meth:`stacks`."""
        stacks = {job: ms for job, ms in self.stacks(transfer).items() if arm is None or ms[0].arm == arm}
        if self.config["stack_models"] > 1:
            return stacks
        return {re.sub(r"\W", "_", f"{m.arm}_{m.dataset}_seed{m.seed}_{m.method}_{m.hp}"
                       + (f"_replicate{m.replicate}" if m.replicate else "")): [m]
                for members in stacks.values() for m in members}

    def stacks(self, transfer: bool) -> dict[str, list[SimpleNamespace]]:
        """The stacked jobs (config key stack_models): job id -> its models, each the wildcards
        of one run or replicate. A job holds the seeds, settings and replicates of one method on
        one dataset and latent dimension (for the transfer, the runs only), at most
        stack_models of them; with ``stack_methods``, a training job those of every method
        whose training settings are the same (``<arm>_<dataset>_p<latents>``, or
        ``<arm>_<dataset>_<methods>_p<latents>`` where the methods' settings differ)."""
        groups: dict[tuple, list] = {}
        mixed = self.config["stack_methods"] and not transfer
        for member in self.members(replicates=not transfer):
            if transfer and not self.transfers(member.arm, member.dataset):
                continue
            n_latent = self.runs[(member.arm, member.dataset, member.method, member.hp)]["n_latent"]
            # the training settings but the seed (those of one method differ by the seed alone)
            how = json.dumps({**self.train_settings(member), "seed": None}, sort_keys=True) if mixed else member.method
            groups.setdefault((member.arm, member.dataset, n_latent, how), []).append(member)
        jobs = {}
        for (arm, dataset, n_latent, how), group in groups.items():
            named = list(dict.fromkeys(m.method for m in group))
            if mixed and sum(key[:3] == (arm, dataset, n_latent) for key in groups) == 1:
                named = []
            parts = chunks(group, self.config["stack_models"])
            for k, part in enumerate(parts):
                part_id = f"_part{k + 1}" if len(parts) > 1 else ""
                jobs["_".join([arm, dataset, *named, f"p{n_latent}{part_id}"])] = part
        return jobs

    # ------------------------------------------------------------------ settings of the jobs
    def _hp(self, wildcards) -> dict:
        return self.runs[(wildcards.arm, wildcards.dataset, wildcards.method, wildcards.hp)]

    def simulation_settings(self, wildcards) -> dict:
        """SimulationConfig of one simulation setting and seed."""
        sim = self.simulations[wildcards.simulation]
        return {k: v for k, v in sim.items() if k not in _SIMULATION_ONLY} | {"seed": int(wildcards.seed)}

    def model_settings(self, wildcards) -> dict:
        """ModelConfig of a run but the dataset's sizes: the ``model`` section, the method and
        its setting."""
        hp = dict(self._hp(wildcards))
        n_latent = hp.pop("n_latent")
        return {"method": wildcards.method, "n_latent": n_latent, **self.config["model"], "hyperparameters": hp}

    def screen_data_settings(self, name: str) -> dict:
        """What the prepare_screen job of a screen needs: its data keys (not its training ones,
        so that a new learning rate does not prepare the data again)."""
        return {k: v for k, v in self.screens[name].items() if k not in _SCREEN_TRAINING}

    def arm_config(self, wildcards) -> dict:
        """The configuration section of a run's train and transfer settings: the top level's,
        the Replogle arm's, or a screen's own (which inherits the top level's keys)."""
        if wildcards.arm == "screens":
            return self.screens[wildcards.dataset]
        return self.config if wildcards.arm == "simulation" else self.replogle

    def train_settings(self, wildcards) -> dict:
        """TrainConfig of a run, or of its replicate (seed s + 1000 r); ``loss_times_cells``
        (a list of methods) becomes the run's own flag, present only when set."""
        seed = replicate_seed(wildcards.seed, getattr(wildcards, "replicate", 0))
        settings = {**self.arm_config(wildcards)["train"], "seed": seed}
        if wildcards.method in settings.pop("loss_times_cells", []):
            settings["loss_times_cells"] = True
        return settings

    def transfer_settings(self, wildcards) -> dict:
        """TransferConfig of a run; the options that are off (``few_shot: []``,
        ``learn_heldout_masks: false``) left out, so that a configuration without them gives
        the jobs today's parameters."""
        settings = dict(self.arm_config(wildcards)["transfer"])
        for key in ("few_shot", "learn_heldout_masks"):
            if key in settings and not settings[key]:
                del settings[key]
        return settings

    def record(self, wildcards) -> dict:
        """Identifiers and setting of a run, as they appear in its metrics and summary.tsv."""
        hp = self._hp(wildcards)
        weights = {key: hp.get(key, RECORD_DEFAULTS.get(key)) for key in HYPERPARAMETERS}
        return {
            ARM_ID[wildcards.arm]: wildcards.dataset,
            "method": wildcards.method,
            "seed": int(wildcards.seed),
            "run": wildcards.hp,
            "n_latent": hp["n_latent"],
            **weights,
        }


def check_fold_clusters(table_s3, folds: list[dict]) -> None:
    """Every fold's cluster found in Table S3 (``table_s3``, a local workbook)."""
    from .io import InputError
    from .replogle.table_s3 import find_cluster, read_table_s3

    try:
        clusters, _ = read_table_s3(table_s3)
    except InputError as err:
        raise ConfigError("replogle.table_s3", str(err)) from None
    for i, fold in enumerate(folds):
        try:
            if "cluster" in fold:
                find_cluster(clusters, fold)
        except InputError as err:
            raise ConfigError(f"replogle.folds.{i}.cluster", str(err)) from None
