"""Sparse mechanism shift sandbox (simulation of Lopez et al., CLeaR 2023).

Generative process
------------------
* ``K`` perturbations, each targeting between ``targets_per_perturbation = [min, max]``
  of the ``p`` latent dimensions. The last ``n_heldout``
  perturbation indices form the "heldout" split, the others "train".
* For each target latent ``k`` of perturbation ``a`` the mean shift is
  ``mu[a, k] = s * m`` with ``m ~ Normal(effect_mean, effect_sd)`` and a random
  sign ``s``; off-target entries are zero.
* Each cell ``i`` of perturbation ``a_i`` has ``z_i ~ N(mu[a_i], I_p)``.
* Optionally (``combinations: {count, size, heldout}``) ``count`` combinations of ``size``
  distinct training perturbations, ``cells_per_perturbation`` cells each, with
  ``z_i ~ N(sum of the members' mu, I_p)``: their true targets are the union of their
  members'. The last ``heldout`` combinations form part of the "heldout" split (every
  member trained: a zero-shot test). Their cells follow the single perturbations' and are
  drawn after everything else, so the single perturbations' cells are those of the same
  configuration without combinations (the decoder's logits standardised, and for
  ``softmax_over: cells`` normalised, with the single perturbations' cells).
* A random MLP decoder (orthogonal weights, no biases, LeakyReLU(0.2) after
  every hidden layer) maps ``z_i`` to gene logits; a softmax gives the
  proportions ``rho_i`` and counts are ``x_ig ~ Poisson(library_size * rho_ig)``.

All randomness comes from a single ``np.random.default_rng(cfg.seed)`` consumed
in a fixed order (targets, decoder, latents, counts; then the combinations' members,
latents and counts), so a configuration
determines the simulated data exactly.

The configuration, its fields and their checks are
:class:`sparseshift.simulation_config.SimulationConfig`; this module draws the data from it.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.special

from .io import write_h5ad
from .simulation_config import SimulationConfig

LEAKY_RELU_SLOPE: float = 0.2


def sample_targets(
    cfg: SimulationConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw the targeted latents and their mean shifts for every perturbation.

    Held-out perturbations use the held-out settings when the configuration sets them.
    For each perturbation (in index order) the generator is consumed as:
    number of draws ``t`` (uniform on ``[targets_min, targets_max]``), the
    ``t`` target indices (with or without replacement; duplicates collapse),
    then one magnitude and one sign per distinct target (in increasing latent
    order).

    Args:
        cfg: Simulation configuration.
        rng: Random generator (advanced in place).

    Returns:
        ``(targets, shifts)``: a boolean ``(K, p)`` target mask and a float
        ``(K, p)`` matrix of mean shifts, zero off target.
    """
    n_pert, n_latent = cfg.n_perturbations, cfg.n_latent
    targets = np.zeros((n_pert, n_latent), dtype=bool)
    shifts = np.zeros((n_pert, n_latent), dtype=np.float64)
    replace = cfg.target_sampling == "with_replacement"
    for a in range(n_pert):
        held_out = a >= cfg.n_train
        low, high = cfg.targets_range(held_out)
        n_draws = int(rng.integers(low, high + 1))
        idx = np.unique(rng.choice(n_latent, size=n_draws, replace=replace))
        magnitude = rng.normal(cfg.effect(held_out), cfg.effect_sd, size=idx.size)
        sign = rng.choice(np.array([-1.0, 1.0]), size=idx.size)
        targets[a, idx] = True
        shifts[a, idx] = sign * magnitude
    return targets, shifts


def sample_combinations(cfg: SimulationConfig, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """``combinations.count`` distinct combinations (sorted member indices) of
    ``combinations.size`` distinct training perturbations: one ``rng.choice`` per draw, a
    combination drawn again redrawn."""
    chosen: list[tuple[int, ...]] = []
    seen: set[tuple[int, ...]] = set()
    while len(chosen) < cfg.combination_count:
        members = tuple(sorted(int(a) for a in rng.choice(cfg.n_train, size=cfg.combination_size, replace=False)))
        if members not in seen:
            seen.add(members)
            chosen.append(members)
    return chosen


def combination_name(names: list[str], members) -> str:
    """A combination's label: its members' names joined with ``+``."""
    return "+".join(names[a] for a in members)


def _combination_cells(cfg: SimulationConfig, rng: np.random.Generator, weights, shifts, z_single):
    """The combinations' members, latents and counts, scaled like the single perturbations'
    cells (their logits' standard deviation; with ``softmax_over: cells``, their per-gene
    normaliser)."""
    combos = sample_combinations(cfg, rng)
    n = cfg.cells_per_perturbation
    mean = np.stack([shifts[list(c)].sum(0) for c in combos])
    z = np.repeat(mean, n, axis=0) + rng.standard_normal((len(combos) * n, cfg.n_latent))
    ref = decoder_logits(weights, z_single)
    logits = decoder_logits(weights, z)
    if cfg.standardize_logits:
        scale = ref.std()
        ref, logits = ref / scale, logits / scale
    if cfg.softmax_over == "genes":
        rho = scipy.special.softmax(logits, axis=1)
    else:
        rho = np.exp(logits - scipy.special.logsumexp(ref, axis=0, keepdims=True))
    counts = rng.poisson(cfg.library_size * rho)
    return combos, z, counts


def _random_orthogonal(n_in: int, n_out: int, rng: np.random.Generator) -> np.ndarray:
    """Draw an ``(n_in, n_out)`` matrix with orthonormal rows or columns.

    Uses the QR decomposition of a Gaussian matrix (with the sign fix that
    makes the result Haar-distributed). Columns are orthonormal when
    ``n_in >= n_out`` (``W.T @ W = I``), rows otherwise (``W @ W.T = I``).
    """
    big, small = max(n_in, n_out), min(n_in, n_out)
    gauss = rng.standard_normal((big, small))
    q, r = np.linalg.qr(gauss)
    d = np.sign(np.diag(r))
    d[d == 0] = 1.0
    q = q * d
    return q if n_in >= n_out else q.T


def random_decoder(cfg: SimulationConfig, rng: np.random.Generator) -> list[np.ndarray]:
    """Draw the weight matrices of the random MLP decoder.

    Args:
        cfg: Simulation configuration.
        rng: Random generator (advanced in place).

    Returns:
        ``decoder_layers + 1`` matrices of shapes ``(p, H)``, ``(H, H)``, ...,
        ``(H, n_genes)`` (or a single ``(p, n_genes)`` matrix when
        ``decoder_layers == 0``), to be applied as ``h @ W``.
    """
    dims = [cfg.n_latent] + [cfg.decoder_hidden] * cfg.decoder_layers + [cfg.n_genes]
    return [_random_orthogonal(d_in, d_out, rng) for d_in, d_out in zip(dims[:-1], dims[1:])]


def _leaky_relu(x: np.ndarray, slope: float = LEAKY_RELU_SLOPE) -> np.ndarray:
    """Elementwise LeakyReLU."""
    return np.where(x >= 0, x, slope * x)


def decode(
    weights: list[np.ndarray],
    z: np.ndarray,
    standardize_logits: bool = False,
    softmax_over: str = "genes",
) -> np.ndarray:
    """Map latents to proportions with the decoder ``weights``.

    LeakyReLU(0.2) follows every layer except the last, whose logits
    (optionally divided by their overall standard deviation) go through a
    softmax over genes (rows sum to 1) or over cells (columns sum to 1).
    """
    logits = decoder_logits(weights, z)
    if standardize_logits:
        logits = logits / logits.std()
    return scipy.special.softmax(logits, axis=1 if softmax_over == "genes" else 0)


def decoder_logits(weights: list[np.ndarray], z: np.ndarray) -> np.ndarray:
    """The decoder's output before normalisation: LeakyReLU(0.2) layers, linear last."""
    if not weights:
        raise ValueError("weights must contain at least one matrix")
    h = np.asarray(z, dtype=np.float64)
    for w in weights[:-1]:
        h = _leaky_relu(h @ w)
    return h @ weights[-1]


def latent_gene_programs(
    weights: list[np.ndarray], z: np.ndarray, genes: list[str], n_top: int
) -> dict[str, list[str]]:
    """The genes each true latent drives: ``true z<j> up`` / ``true z<j> down``, the ``n_top`` genes
    whose decoder logit rises / falls most when z_j moves by one prior standard deviation
    (central difference, averaged over the cells ``z``).

    These are the simulation's own gene sets: enrichment of a learned latent's gene
    scores in ``true z<j> up`` says which true latent it captured.
    """
    out = {}
    for j in range(z.shape[1]):
        step = np.zeros(z.shape[1])
        step[j] = 0.5
        effect = (decoder_logits(weights, z + step) - decoder_logits(weights, z - step)).mean(0)
        order = np.argsort(-effect, kind="stable")
        out[f"true z{j} up"] = [genes[g] for g in order[:n_top]]
        out[f"true z{j} down"] = [genes[g] for g in order[::-1][:n_top]]
    return out


def _names(prefix: str, n: int, min_width: int) -> list[str]:
    """Zero-padded names ``prefix_000, ...`` (width at least ``min_width``)."""
    width = max(min_width, len(str(n - 1)))
    return [f"{prefix}_{i:0{width}d}" for i in range(n)]


def perturbation_names(n_perturbations: int) -> list[str]:
    """Names ``pert_000, pert_001, ...`` (at least three digits)."""
    return _names("pert", n_perturbations, 3)


def simulate(cfg: SimulationConfig) -> ad.AnnData:
    """Simulate a perturbation data set.

    Args:
        cfg: Simulation configuration.

    Returns:
        AnnData with dense float32 counts in ``X`` (cells ordered by
        perturbation), ``obs`` columns ``perturbation`` (categorical),
        ``perturbation_index`` (int) and ``split`` (categorical
        ``train``/``heldout``), ``obsm["z_true"]`` (float32 latents) and
        ``uns`` entries ``targets`` (int8 ``K x p``), ``shifts`` (float32
        ``K x p``), ``perturbations`` (names), ``simulation`` (config) and
        ``gene_sets`` (the genes each true latent drives, see
        :func:`latent_gene_programs`). With combinations, their cells follow
        (``perturbation`` their label ``pert_a+pert_b``, ``perturbation_index`` their
        condition index K + i), and ``uns["combinations"]`` maps each label to its members;
        ``targets`` and ``shifts`` stay one row per single perturbation.
    """
    rng = np.random.default_rng(cfg.seed)
    targets, shifts = sample_targets(cfg, rng)
    weights = random_decoder(cfg, rng)

    pert_index = np.repeat(np.arange(cfg.n_perturbations), cfg.cells_per_perturbation)
    z = shifts[pert_index] + rng.standard_normal((len(pert_index), cfg.n_latent))
    rho = decode(weights, z, cfg.standardize_logits, cfg.softmax_over)
    counts = rng.poisson(cfg.library_size * rho)

    pert_names = perturbation_names(cfg.n_perturbations)
    is_heldout = pert_index >= cfg.n_train
    categories, z_genes, extra = pert_names, z, {}
    if cfg.combination_count:
        combos, z_combo, counts_combo = _combination_cells(cfg, rng, weights, shifts, z)
        combo_names = [combination_name(pert_names, c) for c in combos]
        combo_index = np.repeat(np.arange(len(combos)), cfg.cells_per_perturbation)
        categories = pert_names + combo_names
        is_heldout = np.concatenate([is_heldout, combo_index >= len(combos) - cfg.combination_heldout])
        pert_index = np.concatenate([pert_index, cfg.n_perturbations + combo_index])
        z = np.concatenate([z, z_combo])
        counts = np.concatenate([counts, counts_combo])
        extra["combinations"] = {name: [pert_names[a] for a in c] for name, c in zip(combo_names, combos)}
    obs = pd.DataFrame(
        {
            "perturbation": pd.Categorical.from_codes(pert_index, categories=categories),
            "perturbation_index": pert_index.astype(np.int64),
            "split": pd.Categorical.from_codes(
                is_heldout.astype(np.int8), categories=["train", "heldout"]
            ),
        },
        index=pd.Index(_names("cell", cfg.n_cells, 6)),
    )
    genes = _names("gene", cfg.n_genes, 3)
    var = pd.DataFrame(index=pd.Index(genes))
    programs = latent_gene_programs(weights, z_genes, genes, n_top=max(5, cfg.n_genes // 10))

    return ad.AnnData(
        X=counts.astype(np.float32),
        obs=obs,
        var=var,
        obsm={"z_true": z.astype(np.float32)},
        uns={
            "targets": targets.astype(np.int8),
            "shifts": shifts.astype(np.float32),
            "perturbations": pert_names,
            "simulation": cfg.to_dict(),
            "gene_sets": programs,
            **extra,
        },
    )


def simulate_to_file(settings: dict, path) -> None:
    """The simulate job: the dataset of ``settings`` (``SimulationConfig``'s fields) written to ``path``."""
    write_h5ad(simulate(SimulationConfig(**settings)), path)
