"""A screen's answers from one method, for the user: ``latents.h5ad`` (the dataset's cells with
the posterior means in ``obsm["X_<method>"]``, readable by scanpy as it is), ``targets.tsv``
(perturbation x latent: the shift, the mask probability and whether the latent is called a
target) and ``factors.tsv`` (per latent: the perturbations that target it and its most enriched
gene sets). The run exported is the method's selected setting (UDR, as on the simulations) on the
screen's first seed."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from .. import io
from ..data import load_latents
from ..io import CONSOLE, InputError, read_dataset
from ..methods import DISPLAY_NAMES
from ..model import SparseShiftVAE
from ..summary import CRITERION_NAMES

log = logging.getLogger(__name__)

TARGET_COLUMNS = ["perturbation", "split", "latent", "shift", "mask_probability", "target"]
FACTOR_COLUMNS = ["latent", "n_targeted_by", "targeted_by", "top_terms"]
TOP_TERMS, TERM_FDR = 3, 0.25  # gene sets named per factor: the most enriched with an FDR below


def selected_run(selection: pd.DataFrame, screen: str, seed: int, method: str, path) -> pd.Series:
    """The row of ``selection.tsv`` selected for a screen's method on ``seed``."""
    rows = selection[(selection["screen"].astype(str) == screen) & (selection["seed"] == seed)
                     & (selection["method"] == method) & selection["selected"]]
    if len(rows) != 1:
        raise InputError(path, "selected", f"one selected run of {method} on screen {screen!r}, seed {seed}",
                         f"{len(rows)}")
    return rows.iloc[0]


def target_table(model: SparseShiftVAE, perturbations: list[str], heldout) -> pd.DataFrame:
    """Perturbation x latent, long: the learned shift (iVAE, sVAE, sVAE+), the mask probability
    (sVAE, sVAE+) and whether the latent is a target of the perturbation (the learned graph);
    no rows for a method without perturbation parameters (VAE, β-VAE)."""
    prior = model.prior
    mu = prior.shift_parameter()
    if mu is None:
        return pd.DataFrame(columns=TARGET_COLUMNS)
    shift = mu.detach().cpu().numpy()
    graph = prior.target_graph().cpu().numpy().astype(bool)
    scores = prior.target_scores().cpu().numpy()
    probability = scores if getattr(prior, "logits", None) is not None else np.full_like(shift, np.nan)
    n, p = shift.shape
    held = set(heldout)
    return pd.DataFrame({
        "perturbation": np.repeat(perturbations, p),
        "split": np.repeat(["heldout" if name in held else "train" for name in perturbations], p),
        "latent": np.tile(np.arange(p), n),
        "shift": shift.ravel(),
        "mask_probability": probability.ravel(),
        "target": graph.ravel(),
    }, columns=TARGET_COLUMNS)


def factor_table(targets: pd.DataFrame, gsea: pd.DataFrame | None, n_latent: int) -> pd.DataFrame:
    """What each latent factor means, in one row: the training perturbations that target it and
    its most enriched gene sets (preranked GSEA of its gene scores, FDR < 0.25, by |NES|)."""
    rows = []
    for k in range(n_latent):
        hits = targets[(targets["latent"] == k) & targets["target"].astype(bool) & (targets["split"] == "train")]
        terms = ""
        if gsea is not None and len(gsea):
            best = gsea[(gsea["latent"] == k) & (gsea["fdr"] < TERM_FDR)]
            best = best.reindex(best["nes"].abs().sort_values(ascending=False).index).head(TOP_TERMS)
            terms = "; ".join(f"{t} (NES {n:+.2f}, FDR {f:.2g})" for t, n, f in zip(best["term"], best["nes"], best["fdr"]))
        rows.append({"latent": k, "n_targeted_by": len(hits), "targeted_by": ", ".join(hits["perturbation"]),
                     "top_terms": terms})
    return pd.DataFrame(rows, columns=FACTOR_COLUMNS)


def export_from_files(inputs: dict, wildcards, seed: int, settings: dict, outputs: dict) -> None:
    """The export job of one screen and method: read the selection, the selected run's model and
    latents and the dataset; write ``latents.h5ad`` and ``targets.tsv``."""
    screen, method = wildcards.dataset, wildcards.method
    selection = pd.read_csv(inputs["selection"], sep="\t")
    chosen = selected_run(selection, screen, seed, method, inputs["selection"])
    run = str(chosen["run"])
    index = [Path(p).parent.name for p in inputs["weights"]].index(run)
    model = SparseShiftVAE.load(inputs["weights"][index], inputs["config"][index])
    latents = load_latents(inputs["latents"][index])
    adata = read_dataset(inputs["data"])
    if latents.shape[0] != adata.n_obs:
        raise InputError(inputs["latents"][index], "z_mean", f"{adata.n_obs} rows, one per cell of the dataset",
                         f"{latents.shape[0]}")
    adata.obsm[f"X_{method}"] = latents.astype(np.float32)
    adata.uns["sparseshift"] = {
        "method": method, "method_name": DISPLAY_NAMES[method], "screen": screen, "seed": int(seed), "run": run,
        "n_latent": int(model.cfg.n_latent), "hyperparameters": dict(model.cfg.hyperparameters),
        "selected_by": CRITERION_NAMES[chosen["criterion"]] if int(chosen["candidates"]) > 1 else "one setting",
        "udr": float(chosen["udr"]) if pd.notna(chosen["udr"]) else "none",
        "candidates": int(chosen["candidates"]), "train": settings["train"], "code_version": io.code_version(),
    }
    heldout = [str(p) for p in adata.uns.get("heldout_perturbations", [])]
    targets = target_table(model, [str(p) for p in model.cfg.perturbations], heldout)
    gsea = pd.read_csv(inputs["gsea"][index], sep="\t") if inputs.get("gsea") else None
    io.write_h5ad(adata, outputs["latents"])
    io.write_tsv(targets, outputs["targets"])
    io.write_tsv(factor_table(targets, gsea, latents.shape[1]), outputs["factors"])
    log.info("screen %s, %s: run %s (seed %d, %s) exported: %d cells x %d latents, %d targets called", screen,
             method, run, seed, adata.uns["sparseshift"]["selected_by"], adata.n_obs, latents.shape[1],
             int(targets["target"].sum()) if len(targets) else 0, extra=CONSOLE)
