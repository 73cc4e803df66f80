"""The priors p(z | perturbation): what distinguishes the methods (:mod:`sparseshift.methods`).

=============  ==========================================  ===============================
method         prior of a cell under perturbation a          extra loss term
=============  ==========================================  ===============================
``vae``        N(0, I)                                       -
``beta_vae``   N(0, I), KL weighted by beta                  -
``ivae``       N(mu_a, I)                                    -
``svae``       N(mu_a * m_a, I), m_a a Gumbel-sigmoid mask   lambda * mean(sigmoid(logits))
``svae_plus``  spike and slab, gamma_ak ~ Bernoulli(pi),     -log Beta(q_ak; 1, alpha) / N
               pi ~ Beta(1, alpha)
=============  ==========================================  ===============================

A cell of a combination A of perturbations has the prior mean sum_{a in A} of its members'
shifts (mu_a * m_a, each member its own mask draw; mu_a for iVAE), see
``ModelConfig.combinations``.

Each method's prior class is ``PRIORS[method]`` (one entry per method of the registry,
:mod:`sparseshift.methods`, checked on import). A prior takes explicit sizes and settings, not
the model's configuration: :meth:`sparseshift.model.SparseShiftVAE.__init__` builds it from its
``ModelConfig``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Beta, Normal

from .methods import METHODS


def straight_through_step(v: torch.Tensor) -> torch.Tensor:
    """Heaviside step forward, sigmoid derivative backward.

    ``sigmoid(v) > 0.5`` is ``v > 0``; the backward pass multiplies the incoming gradient
    by ``sigmoid(v)``, then by ``sigmoid(-v)``, which stays non-zero in float32 for large
    |v| (autograd through ``torch.sigmoid`` would return exactly 0 once sigmoid(v) rounds
    to 1). Written with plain tensor operations: the added term is exactly 0 forward,
    and autograd's product rule gives ``(grad * sigmoid(v)) * sigmoid(-v)``, the same
    numbers as an ``autograd.Function`` with that backward, at a fraction of its cost
    under ``torch.func.vmap`` (several models trained as one,
    :func:`sparseshift.batched.fit_many`), which would otherwise trace the Function's
    forward and backward on every call.
    """
    step = (v > 0).to(v.dtype)
    zero = (v - v.detach()) * torch.sigmoid(-v).detach()
    return step + zero * torch.sigmoid(v).detach()


def straight_through_gumbel_sigmoid(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """A hard {0, 1} sample of Bernoulli(sigmoid(logits)) with a relaxed gradient.

    The relaxed (binary Concrete) sample in logit space is
    ``(logits + logit(u)) / temperature`` with u ~ Uniform(0, 1), i.e. Logistic
    noise; the forward value is its sign, the backward pass that of ``sigmoid``
    (the straight-through estimator). ``LogitRelaxedBernoulli`` is not used because
    it clamps its logits to about ±16, which zeroes the gradient beyond.
    """
    eps = torch.finfo(logits.dtype).eps
    u = torch.rand_like(logits).clamp(eps, 1 - eps)
    return straight_through_step((logits + torch.logit(u)) / temperature)


# ----------------------------------------------------------------------------- priors


class Prior(nn.Module):
    """p(z | perturbation) of a cell: N(shift(a), I), plus an optional global term.

    Subclasses override :meth:`shift` (the prior mean of each cell of a minibatch)
    and, where they have one, :meth:`penalty` and :meth:`target_scores`. ``kl_scale``
    weights the KL term of the loss (beta-VAE's beta, 1 otherwise). The swept weights are
    (non-persistent) buffers rather than floats, so that models of one method with different
    settings can be stacked (:mod:`sparseshift.batched`), each with its own value; they are
    rebuilt from the model's configuration, not saved.

    Every prior takes the same arguments: the sizes, ``members`` (the padded member indices
    and their validity mask of every condition, ``ModelConfig.condition_members``; None
    without combinations), the method's swept ``weight`` (beta, lambda or alpha) and the
    settings some priors read (iVAE's ``graph_top_k``; the masks' ``temperature`` and
    ``mask_init_logit``).
    """

    def __init__(self, n_perturbations: int, n_latent: int, members: tuple | None = None,
                 weight: float | None = None, graph_top_k: int = 2, temperature: float = 1.0,
                 mask_init_logit: float = 5.0):
        super().__init__()
        self.n_perturbations = n_perturbations
        self.n_latent = n_latent
        # the settings of the subclasses, read by their own __init__
        self.swept, self.graph_top_k = weight, graph_top_k
        self.temperature, self.mask_init_logit = temperature, float(mask_init_logit)
        self.register_buffer("kl_scale", torch.tensor(1.0), persistent=False)
        # Combinations of perturbations (ModelConfig.combinations): the labels are conditions,
        # each the sum of its members' shifts. Buffers rebuilt from the config (not saved), so
        # that minibatch indexing and vmap (a stack) read them like the labels; without
        # combinations a label is a perturbation and none of this is used.
        self.combined = members is not None
        if self.combined:
            self.register_buffer("members", members[0], persistent=False)
            self.register_buffer("member_valid", members[1], persistent=False)

    def summed(self, labels: torch.Tensor, per_perturbation) -> torch.Tensor:
        """Sum over each cell's member perturbations of ``per_perturbation(rows)``, rows the
        (batch, S) member indices; the padding's terms are zeroed."""
        rows = self.members[labels]
        return (per_perturbation(rows) * self.member_valid[labels].unsqueeze(-1)).sum(-2)

    def shift(self, labels: torch.Tensor) -> torch.Tensor | None:
        """Prior mean of each cell (batch, n_latent), or None for a centred prior."""
        return None

    def distribution(self, labels: torch.Tensor, like: torch.Tensor) -> Normal:
        loc = self.shift(labels)
        if loc is None:
            loc = torch.zeros_like(like)
        return Normal(loc, torch.ones_like(loc), validate_args=False)

    def penalty(self, n_obs: int, kl_weight: float) -> torch.Tensor | float:
        """Global term of the loss, on the per-cell scale (divided by ``n_obs``)."""
        return 0.0

    def target_scores(self) -> torch.Tensor | None:
        """Scores (n_perturbations, n_latent) of the learned target graph, if any."""
        return None

    def target_graph(self) -> torch.Tensor | None:
        """The learned binary target graph (n_perturbations, n_latent), if any."""
        return None

    def mask_density(self) -> float:
        return float("nan")

    def learned_shifts(self) -> torch.Tensor | None:
        """The shift of each perturbation's prior mean (n_perturbations, n_latent), if any."""
        return None

    # -- the transfer protocol (held-out perturbations); no-ops without perturbation parameters
    def shift_parameter(self) -> nn.Parameter | None:
        """The per-perturbation shifts (n_perturbations, n_latent), if the prior has any."""
        return None

    def binarize_targets(self, held_out: torch.Tensor) -> None:
        """Fix the target graph and give the ``held_out`` perturbations shift 0 (see subclasses)."""


class StandardPrior(Prior):
    """N(0, I) whatever the perturbation (VAE)."""


class BetaKLPrior(StandardPrior):
    """N(0, I), the KL term weighted by beta (beta-VAE)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.kl_scale.fill_(self.swept)


class ShiftPrior(Prior):
    """N(mu_a, I): a learned mean per perturbation (iVAE).

    Its target graph is the ``ivae_graph_top_k`` latents of largest |mu_a| (2 in the paper).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.mu = nn.Parameter(torch.randn(self.n_perturbations, self.n_latent))

    def shift(self, labels: torch.Tensor) -> torch.Tensor:
        if self.combined:
            return self.summed(labels, lambda rows: self.mu[rows])
        return self.mu[labels]

    def target_scores(self) -> torch.Tensor:
        return self.mu.detach().abs()

    def target_graph(self) -> torch.Tensor:
        scores = self.target_scores()
        k = min(self.graph_top_k, self.n_latent)
        top = scores.topk(k, dim=1).indices
        return torch.zeros_like(scores).scatter_(1, top, 1.0)

    def learned_shifts(self) -> torch.Tensor:
        return self.mu.detach()

    def shift_parameter(self) -> nn.Parameter:
        return self.mu

    @torch.no_grad()
    def binarize_targets(self, held_out: torch.Tensor) -> None:
        """Reset the shifts of ``held_out`` perturbations (never trained) to 0."""
        self.mu[held_out] = 0.0


class SparseShiftPrior(ShiftPrior):
    """N(mu_a * m_a, I) with a learned Bernoulli mask m_a (sVAE and sVAE+).

    Each cell draws its own straight-through Gumbel-sigmoid mask from
    ``sigmoid(logits[a])`` during training; in evaluation mode the mask is the
    deterministic graph ``logits > 0``. Subclasses give the global sparsity term
    (:meth:`sparsity`) of the mask probabilities q = sigmoid(logits).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.logits = nn.Parameter(torch.full((self.n_perturbations, self.n_latent), self.mask_init_logit))
        # Set by binarize_targets(): the mask is then this fixed graph, in training too.
        self.register_buffer("fixed_mask", torch.ones(self.n_perturbations, self.n_latent))
        # Saved with the weights (models load unchanged), but read through the Python flag
        # ``frozen``: reading the buffer would synchronise with the device in every step, which a
        # CUDA graph cannot capture (:mod:`sparseshift.step`). The flag follows the buffer in
        # binarize_targets() and load_state_dict() (the post hook).
        self.register_buffer("mask_frozen", torch.tensor(False))
        self.frozen = False
        self.register_load_state_dict_post_hook(_read_frozen)
        # Set by learn_masks() (the transfer's step 3 with learned held-out masks): rows whose
        # mask is drawn from their logits under the sparsity term although the graph is frozen.
        # A Python flag like ``frozen``; the rows a buffer (per model in a stack), not saved.
        self.learning = False
        self.register_buffer("learned_rows", torch.zeros(self.n_perturbations, 1), persistent=False)

    def sparsity(self, q: torch.Tensor, n_obs: int, kl_weight: float, rows: torch.Tensor | None = None) -> torch.Tensor:
        """The sparsity term of the mask probabilities ``q``; with ``rows`` (a 0/1 column),
        of those rows only."""
        raise NotImplementedError

    def mask(self, labels: torch.Tensor) -> torch.Tensor:
        if self.frozen and not self.learning:
            return self.fixed_mask[labels]
        logits = self.logits[labels]
        if self.training:
            drawn = straight_through_gumbel_sigmoid(logits, self.temperature)
        else:
            drawn = (logits > 0).to(logits.dtype)
        if self.frozen:  # learning the masks of some rows only, the others fixed
            rows = self.learned_rows[labels]
            return self.fixed_mask[labels] * (1 - rows) + drawn * rows
        return drawn

    def shift(self, labels: torch.Tensor) -> torch.Tensor:
        if self.combined:  # each member its own mask draw
            return self.summed(labels, lambda rows: self.mu[rows] * self.mask(rows))
        return self.mu[labels] * self.mask(labels)

    def probabilities(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    def penalty(self, n_obs: int, kl_weight: float) -> torch.Tensor | float:
        if self.frozen and not self.learning:
            return 0.0  # a fixed graph: the sparsity term is a constant
        if self.frozen:  # the sparsity term of the learned rows only
            return self.sparsity(self.probabilities(), n_obs, kl_weight, self.learned_rows)
        return self.sparsity(self.probabilities(), n_obs, kl_weight)

    def _with_learned(self, learned: torch.Tensor) -> torch.Tensor:
        """The fixed graph, its learned rows (:meth:`learn_masks`) replaced by ``learned``'s."""
        if not self.learning:
            return self.fixed_mask.clone()
        return self.fixed_mask * (1 - self.learned_rows) + learned * self.learned_rows

    def target_scores(self) -> torch.Tensor:
        if self.frozen:
            return self._with_learned(self.probabilities().detach())
        return self.probabilities().detach()

    def target_graph(self) -> torch.Tensor:
        if self.frozen:
            return self._with_learned((self.logits.detach() > 0).float())
        return (self.logits.detach() > 0).float()

    def mask_density(self) -> float:
        return float(self.target_graph().mean())

    def learned_shifts(self) -> torch.Tensor:
        return self.mu.detach() * self.target_graph()

    @torch.no_grad()
    def binarize_targets(self, held_out: torch.Tensor) -> None:
        """Step 2 of the transfer protocol: freeze the mask at its learned graph
        (``logits > 0``); ``held_out`` perturbations target every latent (mask 1) with
        shift 0, as in the paper."""
        self.fixed_mask.copy_(self.target_graph())
        self.fixed_mask[held_out] = 1.0
        super().binarize_targets(held_out)
        self.mask_frozen.fill_(True)
        self.frozen = True
        self.logits.requires_grad_(False)

    @torch.no_grad()
    def learn_masks(self, rows: torch.Tensor, init_logit: float) -> None:
        """The variant of step 3 that identifies the targets of held-out perturbations (issue
        29 point 4): after :meth:`binarize_targets`, the masks of ``rows`` are learned again
        from ``init_logit`` (the initial logit of training) under the method's own sparsity
        term, restricted to those rows; the other rows keep their fixed graph."""
        self.learned_rows.zero_()
        self.learned_rows[rows] = 1.0
        self.logits[rows] = init_logit
        self.learning = True


def _read_frozen(prior: SparseShiftPrior, incompatible_keys) -> None:
    """After load_state_dict: the ``frozen`` flag from the loaded ``mask_frozen`` buffer."""
    prior.frozen = bool(prior.mask_frozen)


class L1MaskPrior(SparseShiftPrior):
    """sVAE: the sparsity term ``lambda * mean(q)``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("lam", torch.tensor(self.swept), persistent=False)

    def sparsity(self, q: torch.Tensor, n_obs: int, kl_weight: float, rows: torch.Tensor | None = None) -> torch.Tensor:
        if rows is None:
            return self.lam * q.mean()
        return self.lam * (q * rows).sum() / (rows.sum() * q.shape[-1])


class BetaMaskPrior(SparseShiftPrior):
    """sVAE+: ``-sum log Beta(q; 1, alpha) / n_obs``, warmed up with the KL. This is the
    spike-and-slab model with the Bernoulli parameter psi fixed to E[q(gamma)], as in the paper."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("alpha", torch.tensor(self.swept), persistent=False)

    def sparsity(self, q: torch.Tensor, n_obs: int, kl_weight: float, rows: torch.Tensor | None = None) -> torch.Tensor:
        eps = 1e-6
        beta = Beta(torch.ones_like(self.alpha), self.alpha, validate_args=False)
        log_prob = beta.log_prob(q.clamp(eps, 1 - eps))
        if rows is not None:
            log_prob = log_prob * rows
        return -kl_weight * log_prob.sum() / n_obs


# Each method's prior class (the method registry is free of torch, so the classes live here).
PRIORS: dict[str, type[Prior]] = {
    "vae": StandardPrior,
    "beta_vae": BetaKLPrior,
    "ivae": ShiftPrior,
    "svae": L1MaskPrior,
    "svae_plus": BetaMaskPrior,
}
if tuple(PRIORS) != METHODS:
    raise ImportError(f"sparseshift.priors: PRIORS {list(PRIORS)} must list the registered methods {list(METHODS)}")
