"""The plan of a configuration: its checks, its runs and the settings its jobs receive."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from snakemake.utils import update_config, validate
from sparseshift.methods import METHODS, REGISTRY
from sparseshift.model import ModelConfig
from sparseshift.plan import ConfigError, Plan
from sparseshift.simulate import SimulationConfig
from sparseshift.train import TrainConfig
from sparseshift.transfer import TransferConfig

REPO = Path(__file__).resolve().parents[1]
CONFIGS = [REPO / "config" / "config.yaml", REPO / "config" / "paper.yaml", REPO / "config" / "generalisation.yaml",
           REPO / "tests" / "configs" / "tiny.yaml"]


def filled(*paths) -> dict:
    """Config files as the Snakefile reads them: each updates the previous, then the schema's
    defaults are filled in."""
    config: dict = {}
    for path in paths:
        update_config(config, yaml.safe_load(Path(path).read_text()))
    validate(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    return config


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_job_of_the_shipped_configs_builds_its_dataclass(path):
    """The settings a job receives are the config keys of the dataclass it fills (an unknown key,
    such as a simulation's own `methods`, would fail here before any job runs)."""
    plan = Plan(filled(path))
    for name in plan.simulations:
        SimulationConfig(**plan.simulation_settings(SimpleNamespace(simulation=name, seed=0)))
    members = plan.members(replicates=True)
    assert members
    for m in members:
        cfg = ModelConfig(n_genes=10, n_perturbations=4, **plan.model_settings(m))
        assert cfg.weight() == plan.runs[(m.arm, m.dataset, m.method, m.hp)].get(REGISTRY[m.method].hyperparameter)
        TrainConfig(**plan.train_settings(m))
        TransferConfig(**plan.transfer_settings(m))


def test_paper_config_runs_the_grid_of_each_method():
    plan = Plan(filled(REPO / "config" / "paper.yaml"))
    paper = {m: sorted(hp for (a, d, method, hp) in plan.runs if d == "paper" and method == m) for m in METHODS}
    assert paper["vae"] == ["p15"] and paper["ivae"] == ["p15"]
    assert len(paper["beta_vae"]) == 3 and len(paper["svae"]) == 3 and len(paper["svae_plus"]) == 6
    # a method with several settings trains replicates for the selection, one with one setting none
    assert plan.n_replicates("simulation", "paper", "svae_plus", "p15_alpha100") == 3
    assert plan.n_replicates("simulation", "paper", "vae", "p15") == 1


@pytest.mark.parametrize(
    "change, key",
    [
        (lambda c: c["methods"].append("foo"), "methods.5"),
        (lambda c: c["simulations"][0].update(n_heldout=200), "simulations.0.n_heldout"),
        (lambda c: c["simulations"][0].update(targets_per_perturbation=[3, 1]), "simulations.0.targets_per_perturbation"),
        (lambda c: c["simulations"][0].update(heldout={"targets_per_perturbation": [9, 20]}),
         "simulations.0.heldout.targets_per_perturbation"),
        (lambda c: c.update(stack_models=4) or c["model"].update(batch_norm=True), "model.batch_norm"),
        # the agreement of learned masks cannot choose among the beta-VAE's betas
        (lambda c: c["selection"].update(criterion="mask_agreement") or c["hyperparameters"].update(beta=[4, 8]),
         "selection.criterion"),
    ],
)
def test_a_config_error_names_its_key(change, key):
    config = copy.deepcopy(filled(REPO / "config" / "config.yaml"))
    change(config)
    with pytest.raises(ConfigError) as err:
        Plan(config)
    assert err.value.key == key


def job_settings(config: dict) -> dict:
    plan = Plan(config)
    settings = {}
    for transfer in (False, True):
        for job, members in plan.jobs(transfer=transfer).items():
            for m in members:
                key = (transfer, job, m.dataset, m.method, m.seed, m.hp, m.replicate)
                settings[key] = (plan.model_settings(m), plan.train_settings(m),
                                 plan.transfer_settings(m) if transfer else None)
    return settings


@pytest.mark.parametrize("name", ["paper.yaml", "generalisation.yaml", "regret.yaml"])
def test_the_default_demonstrations_cuts_do_not_reach_the_full_configurations(name):
    """config/config.yaml narrows the MLPs and shortens the transfer for its short demonstration;
    a full configuration given after it (Snakemake reads config/config.yaml first) trains and
    transfers exactly as when read alone, so its recorded runs stay valid."""
    full = REPO / "config" / name
    alone = job_settings(filled(full))
    after_default = job_settings(filled(REPO / "config" / "config.yaml", full))
    assert alone and alone == after_default
    # the demonstration does differ from the schema's defaults, so the check has something to catch
    assert filled(REPO / "config" / "config.yaml")["model"]["n_hidden"] != filled(full)["model"]["n_hidden"]


def test_each_weight_has_one_default_the_registry_and_the_schema_agree():
    """The registry's default of every swept weight is the schema's default value of its key,
    so a model built without the key and a configuration without it use the same weight."""
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    swept = schema["properties"]["hyperparameters"]["properties"]
    for spec in REGISTRY.values():
        if spec.hyperparameter is not None:
            assert swept[spec.hyperparameter]["default"] == [spec.default], spec.id
            assert ModelConfig(method=spec.id, n_genes=2, n_latent=2, n_perturbations=2).weight() == spec.default


def test_every_registered_method_has_its_prior_class():
    from sparseshift.model import SparseShiftVAE
    from sparseshift.priors import PRIORS

    assert tuple(PRIORS) == METHODS
    for method in METHODS:
        model = SparseShiftVAE(ModelConfig(method=method, n_genes=4, n_latent=3, n_perturbations=5,
                                           ivae_graph_top_k=1, mask_init_logit=2.0))
        assert type(model.prior) is PRIORS[method] and model.prior.n_perturbations == 5
        if REGISTRY[method].learns_mask:
            assert (model.prior.logits == 2.0).all()
        if method == "ivae":
            assert model.prior.target_graph().sum(1).eq(1).all()  # its top k = 1


@pytest.mark.parametrize("stack_models", [1, 4])
def test_the_jobs_hold_every_run_once_one_model_jobs_named_by_their_run(stack_models):
    """Plan.jobs: the training jobs hold every run and replicate once, the transfer jobs every
    run once; with stack_models 1 a job is one model, named by its run path, and its files,
    log and checkpoint are the run's own; with more, the stacks and their stacked/<job> files."""
    from sparseshift.layout import Layout

    config = filled(REPO / "tests" / "configs" / "tiny.yaml") | {"stack_models": stack_models, "results": "res"}
    plan = Plan(config)
    layout = Layout(plan, REPO / "workflow")
    key = lambda m: (m.arm, m.dataset, m.method, m.hp, m.seed, m.replicate)  # noqa: E731
    for transfer in (False, True):
        jobs = plan.jobs(transfer)
        members = [m for ms in jobs.values() for m in ms]
        assert sorted(map(key, members)) == sorted(map(key, (m for ms in plan.stacks(transfer).values() for m in ms)))
        assert len(set(map(key, members))) == len(members)
        assert all(len(ms) <= stack_models for ms in jobs.values())
    jobs = plan.jobs(transfer=False)
    if stack_models == 1:
        assert "simulation_tiny_seed0_svae_plus_p4_alpha30_replicate2" in jobs
        (m,) = jobs["simulation_tiny_seed0_svae_plus_p4_alpha30_replicate2"]
        assert (m.hp, m.replicate) == ("p4_alpha30", 2)
        assert layout.job_path("res/logs/train", "x", [m], ".log") == \
            "res/logs/train/simulation/tiny/seed0/svae_plus/p4_alpha30/replicate2.log"
        assert layout.job_files({"model": "model.pt"}, [m]) == \
            {"model": "res/simulation/tiny/seed0/svae_plus/p4_alpha30/replicate2/model.pt"}
    else:
        job, ms = next(iter(jobs.items()))
        assert layout.job_path("res/checkpoints", job, ms, ".pt") == f"res/checkpoints/stacked/{job}.pt"
        assert layout.job_files({"model": "model.pt"}, ms)["model"] == [layout.member(m, "model.pt") for m in ms]


def test_stack_methods_puts_a_datasets_methods_in_one_training_stack():
    """stack_methods: the training jobs of a dataset hold every method (at most stack_models
    models each, every run and replicate once); methods whose training settings differ stack
    apart, named by their methods; the transfer stays one method per job."""
    config = filled(REPO / "tests" / "configs" / "tiny.yaml") | {"stack_models": 64, "stack_methods": True}
    plan = Plan(config)
    jobs = plan.jobs(transfer=False)
    assert list(jobs) == ["simulation_tiny_p4"]
    (members,) = jobs.values()
    assert {m.method for m in members} == set(config["methods"])
    assert len(members) == len(plan.members(replicates=True))
    assert all(len({m.method for m in ms}) == 1 for ms in plan.jobs(transfer=True).values())
    parts = Plan(config | {"stack_models": 5}).jobs(transfer=False)
    assert len(parts) > 1 and max(map(len, parts.values())) <= 5
    assert sum(map(len, parts.values())) == len(members)
    config["train"] = dict(config["train"], loss_times_cells=["svae_plus"])
    apart = Plan(config).jobs(transfer=False)
    others = "_".join(m for m in config["methods"] if m != "svae_plus")
    assert sorted(apart) == sorted([f"simulation_tiny_{others}_p4", "simulation_tiny_svae_plus_p4"])
    assert {m.method for m in apart["simulation_tiny_svae_plus_p4"]} == {"svae_plus"}


def test_the_gpu_overlay_trains_the_paper_grid_in_one_process():
    """config/gpu.yaml over config/paper.yaml: one training job per dataset and latent dimension
    holds all its models (Table 1's grid: 190 models, every method) and the transfers keep one
    method per job."""
    config = filled(REPO / "config" / "paper.yaml", REPO / "config" / "gpu.yaml")  # as --configfile merges
    plan = Plan(config)
    jobs = plan.jobs(transfer=False)
    grid = [m for m in plan.members(replicates=True) if (m.arm, m.dataset) == ("simulation", "paper")]
    assert len(jobs["simulation_paper_p15"]) == len(grid) == 190
    assert {m.method for m in grid} == set(config["methods"])
    assert len(jobs) == len({(m.arm, m.dataset) for m in plan.members(replicates=True)})
    assert all(len({m.method for m in ms}) == 1 for ms in plan.jobs(transfer=True).values())
    assert config["device"] == "cuda" and config["transfer"]["iwelbo_memory_mb"] == 2048
    assert config["transfer"]["particles"] == 5000  # the rest of the section is the paper's
    # the GPU jobs hold the gpu resource (--resources gpu=1 runs them one at a time), the others not
    assert config["resources"]["train"]["gpu"] == config["resources"]["transfer"]["gpu"] == 1
    assert config["resources"]["enrichment"]["gpu"] == 0
