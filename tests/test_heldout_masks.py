"""Targets of unseen perturbations (issue 29, point 4): step 3 with the held-out perturbations'
masks learned under the method's own sparsity term, and the held-out rows of the target graph
scored for both step-3 variants."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sparseshift.model import SparseShiftVAE
from sparseshift.plan import Plan
from sparseshift.runs import heldout_graph_metrics
from sparseshift.train import TrainConfig
from sparseshift.transfer import TransferConfig, transfer_runs
from test_few_shot import CFG, TRAIN, adata, run_data, trained  # noqa: F401 (fixtures)
from test_plan import filled

REPO = Path(__file__).resolve().parents[1]
LEARN = TransferConfig(**{**vars(CFG), "learn_heldout_masks": True})
HELD = torch.tensor([6, 7])  # the held-out perturbations of the fixture


def learning(model: SparseShiftVAE) -> SparseShiftVAE:
    model.binarize_targets(HELD)
    assert model.learn_heldout_masks(HELD)
    return model


@pytest.mark.parametrize("method", ["svae", "svae_plus"])
def test_only_the_held_out_rows_have_a_sparsity_term(trained, method):
    """The penalty of the learned variant is the method's sparsity term of the held-out rows
    alone: the trained rows' logits do not enter it, the held-out rows' do."""
    model = learning(trained(method))
    prior = model.prior
    base = float(prior.penalty(n_obs=100, kl_weight=1.0))
    with torch.no_grad():
        prior.logits[:6] -= 3.0  # trained rows: fixed, not in the term
    assert float(prior.penalty(n_obs=100, kl_weight=1.0)) == pytest.approx(base, abs=1e-6)
    with torch.no_grad():
        prior.logits[6:] -= 3.0  # held-out rows: sparser, a smaller term
    assert float(prior.penalty(n_obs=100, kl_weight=1.0)) < base - 1e-3
    q = prior.probabilities()[6:]
    if method == "svae":
        assert float(prior.penalty(100, 1.0)) == pytest.approx(float(prior.lam * q.mean()), rel=1e-6)
    # the training term of all rows would differ: the trained rows are excluded
    prior.learning, prior.frozen = False, False
    assert float(prior.penalty(100, 1.0)) != pytest.approx(float(prior.sparsity(q, 100, 1.0)), rel=1e-3)


@pytest.mark.parametrize("method", ["svae", "svae_plus"])
def test_the_mask_is_fixed_on_trained_rows_and_drawn_on_held_out_ones(trained, method):
    model = learning(trained(method))
    prior = model.prior
    fixed = prior.fixed_mask.clone()
    with torch.no_grad():
        prior.logits[6:] = torch.tensor([[9.0, -9.0, 9.0], [-9.0, -9.0, 9.0]])
    model.eval()
    labels = torch.arange(8)
    mask = prior.mask(labels)
    assert torch.equal(mask[:6], fixed[:6])
    assert torch.equal(mask[6:], torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]]))
    graph = prior.target_graph()
    assert torch.equal(graph[:6], fixed[:6]) and torch.equal(graph[6:], mask[6:])


@pytest.mark.parametrize("stacked", [False, True])
@pytest.mark.parametrize("method", ["svae", "svae_plus"])
def test_the_variant_learns_held_out_masks_and_leaves_the_protocol_unchanged(adata, trained, method, stacked):
    """With learn_heldout_masks the full protocol's numbers are those without it; the variant
    moves the held-out rows' shifts and logits only, and is scored on the same cells."""
    def go(cfg):
        if stacked:
            return transfer_runs([trained(method), trained(method)], [run_data(adata), run_data(adata, 1)],
                                 [TRAIN, TrainConfig(**{**vars(TRAIN), "seed": 1})], cfg, stacked=True)[0]
        return transfer_runs([trained(method)], [run_data(adata)], [TRAIN], cfg, stacked=False)[0]

    plain, learned = go(CFG), go(LEARN)
    s = learned.summary
    for key, value in plain.summary.items():
        if not key.endswith("_seconds"):
            assert s[key] == value or (math.isnan(value) and math.isnan(s[key])), key
    assert np.isfinite(s["inll_learned_masks"]) and s["inll_learned_masks"] != s["inll"]
    assert s["learned_masks_epochs_run"] == 3 and "inll_learned_masks" not in plain.summary
    np.testing.assert_array_equal(learned.held_out, [6, 7])
    scores, graph = learned.heldout_targets["heldout"]
    assert (graph == 1).all()  # the standard step 3: held-out masks set to 1
    l_scores, l_graph = learned.heldout_targets["heldout_learned"]
    assert l_scores.shape == (2, 3) and not np.array_equal(l_scores, scores)  # probabilities, learned
    assert s["heldout_mask_density_learned"] == pytest.approx(l_graph.mean())
    assert learned.per_perturbation["inll_learned_masks"].notna().all()


def test_ivae_has_no_mask_to_learn_its_variant_is_step_3(adata, trained):
    model = trained("ivae")
    assert not model.learn_heldout_masks(HELD)
    r = transfer_runs([trained("ivae")], [run_data(adata)], [TRAIN], LEARN, stacked=False)[0]
    assert r.summary["inll_learned_masks"] == r.summary["inll"]
    assert math.isnan(r.summary["heldout_mask_density_learned"])
    for a, b in zip(r.heldout_targets["heldout"], r.heldout_targets["heldout_learned"]):
        np.testing.assert_array_equal(a, b)


def test_vae_has_no_held_out_targets(adata, trained):
    r = transfer_runs([trained("vae")], [run_data(adata)], [TRAIN], LEARN, stacked=False)[0]
    assert r.heldout_targets == {} and "inll_learned_masks" not in r.summary


def test_held_out_graph_metrics_score_the_held_out_rows_against_the_truth(adata):
    """The true latents as the learned ones (a perfect matching): the true rows score F1 1,
    all-ones rows the density as precision and recall 1, and the truth of the training
    perturbations never enters."""
    truth = np.asarray(adata.uns["targets"]).astype(float)
    latents = np.asarray(adata.obsm["z_true"])
    held = np.array([6, 7])
    ones = np.ones((2, 3))
    out = heldout_graph_metrics(adata, latents, held, {"heldout": (ones, ones), "heldout_learned": (truth[held], truth[held])})
    assert out["graph_f1_heldout_learned"] == pytest.approx(1.0)
    assert out["graph_recall_heldout"] == pytest.approx(1.0)
    assert out["graph_precision_heldout"] == pytest.approx(truth[held].mean())
    # no ground truth, nothing to score
    no_truth = adata.copy()
    del no_truth.obsm["z_true"]
    assert heldout_graph_metrics(no_truth, latents, held, {"heldout": (ones, ones)}) == {}


def test_the_option_is_left_out_of_the_jobs_parameters_when_off():
    """Off, a job's parameters are today's (its outputs are not re-made); on, the job gets it."""
    config = filled(REPO / "tests" / "configs" / "tiny.yaml")
    member = Plan(config).members()[0]
    for value in (True, False):
        config["transfer"]["learn_heldout_masks"] = value
        settings = Plan(copy.deepcopy(config)).transfer_settings(member)
        assert settings.get("learn_heldout_masks", False) is value and ("learn_heldout_masks" in settings) is value
        TransferConfig(**settings)
