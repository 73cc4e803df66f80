"""One variational autoencoder, five priors.

The methods of Lopez et al. (2023) differ only in the prior p(z | perturbation):

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

:class:`SparseShiftVAE` owns the encoder, the decoder and the negative-binomial
likelihood; the perturbation label reaches the model only through its prior object.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.distributions import (
    Beta,
    NegativeBinomial,
    Normal,
    kl_divergence,
)
from torch.nn import functional as F

from .methods import DISPLAY_NAMES, METHODS  # noqa: F401 (re-exported)



class RowBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d over the last dimension of an input of any rank: the rows of all leading
    dimensions are the batch (the decoder sees particles x cells x latents in the IWELBO,
    which ``nn.BatchNorm1d`` would read as channels in dimension 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).reshape(x.shape)


def mlp(
    n_in: int, n_hidden: int, n_layers: int, n_out: int, batch_norm: bool = False, dropout: float = 0.0
) -> nn.Sequential:
    """``n_layers`` hidden ReLU layers of width ``n_hidden``, then a linear output.

    ``batch_norm`` and ``dropout`` give the hidden layers of scvi-tools' ``FCLayers`` (the
    released sVAE+ code's networks): Linear, BatchNorm1d (momentum 0.01, eps 0.001), ReLU,
    Dropout.
    """
    layers: list[nn.Module] = []
    width = n_in
    for _ in range(n_layers):
        layers.append(nn.Linear(width, n_hidden))
        if batch_norm:
            layers.append(RowBatchNorm(n_hidden, momentum=0.01, eps=1e-3))
        layers.append(nn.ReLU())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = n_hidden
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


class _StraightThroughStep(torch.autograd.Function):
    """Heaviside step forward, sigmoid derivative backward.

    ``sigmoid(v) > 0.5`` is ``v > 0``; the backward pass uses
    ``sigmoid(v) * sigmoid(-v)``, which stays non-zero in float32 for large |v|
    (autograd through ``torch.sigmoid`` would return exactly 0 once sigmoid(v)
    rounds to 1). Written with ``setup_context`` so that ``torch.func.vmap`` can
    batch it (several models trained as one, :func:`sparseshift.batched.fit_many`).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(v: torch.Tensor) -> torch.Tensor:
        return (v > 0).to(v.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (v,) = ctx.saved_tensors
        return grad * torch.sigmoid(v) * torch.sigmoid(-v)


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
    return _StraightThroughStep.apply((logits + torch.logit(u)) / temperature)


# ----------------------------------------------------------------------------- priors


class Prior(nn.Module):
    """p(z | perturbation) of a cell: N(shift(a), I), plus an optional global term.

    Subclasses override :meth:`shift` (the prior mean of each cell of a minibatch)
    and, where they have one, :meth:`penalty` and :meth:`target_scores`.
    """

    def __init__(self, n_perturbations: int, n_latent: int):
        super().__init__()
        self.n_perturbations = n_perturbations
        self.n_latent = n_latent

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

    # -- the transfer protocol (held-out perturbations); no-ops without perturbation parameters
    def shift_parameter(self) -> nn.Parameter | None:
        """The per-perturbation shifts (n_perturbations, n_latent), if the prior has any."""
        return None

    def binarize_targets(self, held_out: torch.Tensor) -> None:
        """Fix the target graph and give the ``held_out`` perturbations shift 0 (see subclasses)."""

    def mask_parameters(self) -> list[nn.Parameter]:
        """Parameters of the target mask (frozen with the generative model)."""
        return []


class StandardPrior(Prior):
    """N(0, I) whatever the perturbation (VAE, beta-VAE)."""


class ShiftPrior(Prior):
    """N(mu_a, I): a learned mean per perturbation (iVAE).

    Its target graph is the ``graph_top_k`` latents of largest |mu_a| (2 in the paper).
    """

    def __init__(self, n_perturbations: int, n_latent: int, graph_top_k: int = 2):
        super().__init__(n_perturbations, n_latent)
        self.mu = nn.Parameter(torch.randn(n_perturbations, n_latent))
        self.graph_top_k = graph_top_k

    def shift(self, labels: torch.Tensor) -> torch.Tensor:
        return self.mu[labels]

    def target_scores(self) -> torch.Tensor:
        return self.mu.detach().abs()

    def target_graph(self) -> torch.Tensor:
        scores = self.target_scores()
        k = min(self.graph_top_k, self.n_latent)
        top = scores.topk(k, dim=1).indices
        return torch.zeros_like(scores).scatter_(1, top, 1.0)

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
    deterministic graph ``logits > 0``.

    ``sparsity`` selects the global term:

    * ``"l1"`` (sVAE): ``lam * mean(q)`` with q = sigmoid(logits);
    * ``"beta"`` (sVAE+): ``-sum log Beta(q; 1, alpha) / n_obs``, warmed up with the KL.
      This is the spike-and-slab model with the Bernoulli parameter psi fixed to
      E[q(gamma)], as in the paper.
    """

    def __init__(
        self,
        n_perturbations: int,
        n_latent: int,
        sparsity: str,
        lam: float = 1.0,
        alpha: float = 1.0,
        init_logit: float = 5.0,
        temperature: float = 1.0,
    ):
        super().__init__(n_perturbations, n_latent)
        if sparsity not in ("l1", "beta"):
            raise ValueError(f"sparsity must be 'l1' or 'beta', got {sparsity!r}")
        self.sparsity = sparsity
        # The swept weights as (non-persistent) buffers rather than floats: models of one
        # method with different settings can then be stacked (sparseshift.batched), each
        # with its own value; they are rebuilt from the ModelConfig, not saved.
        self.register_buffer("lam", torch.tensor(float(lam)), persistent=False)
        self.register_buffer("alpha", torch.tensor(float(alpha)), persistent=False)
        self.temperature = temperature
        self.logits = nn.Parameter(torch.full((n_perturbations, n_latent), float(init_logit)))
        # Set by binarize_targets(): the mask is then this fixed graph, in training too.
        self.register_buffer("fixed_mask", torch.ones(n_perturbations, n_latent))
        self.register_buffer("mask_frozen", torch.tensor(False))

    @property
    def frozen(self) -> bool:
        return bool(self.mask_frozen)

    def mask(self, labels: torch.Tensor) -> torch.Tensor:
        if self.frozen:
            return self.fixed_mask[labels]
        logits = self.logits[labels]
        if self.training:
            return straight_through_gumbel_sigmoid(logits, self.temperature)
        return (logits > 0).to(logits.dtype)

    def shift(self, labels: torch.Tensor) -> torch.Tensor:
        return self.mu[labels] * self.mask(labels)

    def probabilities(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    def penalty(self, n_obs: int, kl_weight: float) -> torch.Tensor | float:
        if self.frozen:
            return 0.0  # a fixed graph: the sparsity term is a constant
        q = self.probabilities()
        if self.sparsity == "l1":
            return self.lam * q.mean()
        eps = 1e-6
        beta = Beta(torch.ones_like(self.alpha), self.alpha, validate_args=False)
        return -kl_weight * beta.log_prob(q.clamp(eps, 1 - eps)).sum() / n_obs

    def target_scores(self) -> torch.Tensor:
        if self.frozen:
            return self.fixed_mask.clone()
        return self.probabilities().detach()

    def target_graph(self) -> torch.Tensor:
        if self.frozen:
            return self.fixed_mask.clone()
        return (self.logits.detach() > 0).float()

    def mask_density(self) -> float:
        return float(self.target_graph().mean())

    def mask_parameters(self) -> list[nn.Parameter]:
        return [self.logits]

    @torch.no_grad()
    def binarize_targets(self, held_out: torch.Tensor) -> None:
        """Step 2 of the transfer protocol: freeze the mask at its learned graph
        (``logits > 0``); ``held_out`` perturbations target every latent (mask 1) with
        shift 0, as in the paper."""
        self.fixed_mask.copy_(self.target_graph())
        self.fixed_mask[held_out] = 1.0
        super().binarize_targets(held_out)
        self.mask_frozen.fill_(True)
        self.logits.requires_grad_(False)


# ----------------------------------------------------------------------------- model


# The hyper-parameters swept by the paper's grids (beta-VAE's beta, sVAE's lambda, sVAE+'s
# alpha): buffers of the model, so that one stack can hold several settings of a method.
PER_MODEL = ("beta", "alpha", "lam")


@dataclass
class ModelConfig:
    """Everything needed to rebuild a :class:`SparseShiftVAE` (saved beside its weights)."""

    method: str
    n_genes: int
    n_latent: int
    n_perturbations: int
    n_hidden: int = 128
    n_layers: int = 2
    beta: float = 1.0
    alpha: float | None = None
    lam: float | None = None
    init_logit: float = 5.0
    temperature: float = 1.0
    graph_top_k: int = 2
    # The encoder's input: log1p counts centred and scaled per gene on the training cells
    # (True), or plain log1p counts as in the paper and the released code (False).
    standardize_input: bool = True
    # scvi-tools' layers (the released code): BatchNorm in encoder and decoder, dropout in
    # the encoder. Off by default (docs/table1.md lists the measured effect).
    batch_norm: bool = False
    dropout: float = 0.0
    perturbations: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    def stack_key(self) -> dict:
        """The settings models must share to be trained as one stack: all but the swept
        weights (``PER_MODEL``), which the model holds as tensors of its own."""
        return {k: v for k, v in self.to_dict().items() if k not in PER_MODEL}


def build_prior(cfg: ModelConfig) -> Prior:
    """The prior object of ``cfg.method``."""
    k, p = cfg.n_perturbations, cfg.n_latent
    if cfg.method in ("vae", "beta_vae"):
        return StandardPrior(k, p)
    if cfg.method == "ivae":
        return ShiftPrior(k, p, graph_top_k=cfg.graph_top_k)
    common = dict(init_logit=cfg.init_logit, temperature=cfg.temperature)
    if cfg.method == "svae":
        return SparseShiftPrior(k, p, "l1", lam=1.0 if cfg.lam is None else cfg.lam, **common)
    return SparseShiftPrior(k, p, "beta", alpha=1.0 if cfg.alpha is None else cfg.alpha, **common)


class SparseShiftVAE(nn.Module):
    """Encoder on log1p counts, softmax decoder, negative-binomial likelihood.

    x_ig ~ NB(mean = l_i * softmax(f(z_i))_g, inverse dispersion theta_g), with l_i
    the observed library size. The perturbation label enters only through ``prior``.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = mlp(cfg.n_genes, cfg.n_hidden, cfg.n_layers, 2 * cfg.n_latent, cfg.batch_norm, cfg.dropout)
        self.decoder = mlp(cfg.n_latent, cfg.n_hidden, cfg.n_layers, cfg.n_genes, cfg.batch_norm)
        self.log_theta = nn.Parameter(torch.zeros(cfg.n_genes))
        self.prior = build_prior(cfg)
        # beta-VAE's KL weight, per model in a stack (see SparseShiftPrior's lam and alpha)
        self.register_buffer("beta", torch.tensor(float(cfg.beta)), persistent=False)
        # Per-gene centring and scaling of log1p(x) before the encoder: a fixed affine
        # reparameterisation of its first layer that keeps high-count genes (log1p
        # around 7 with a spread of a few tenths) well conditioned.
        self.register_buffer("input_loc", torch.zeros(cfg.n_genes))
        self.register_buffer("input_scale", torch.ones(cfg.n_genes))
        self._shift_hook = None  # set by freeze_all_but_shifts()

    @torch.no_grad()
    def standardize_inputs(self, x: torch.Tensor) -> None:
        """Set the encoder's input centring and scaling from training counts ``x``
        (a no-op unless ``cfg.standardize_input``)."""
        if not self.cfg.standardize_input:
            return
        logx = torch.log1p(x)
        self.input_loc.copy_(logx.mean(0))
        self.input_scale.copy_(logx.std(0).clamp_min(1e-3))

    # -- the two halves
    def encode(self, x: torch.Tensor) -> Normal:
        h = (torch.log1p(x) - self.input_loc) / self.input_scale
        loc, raw_scale = self.encoder(h).chunk(2, dim=-1)
        return Normal(loc, F.softplus(raw_scale) + 1e-4, validate_args=False)

    @staticmethod
    def library_size(x: torch.Tensor) -> torch.Tensor:
        """Observed library size l of each cell, (batch, 1)."""
        return x.sum(-1, keepdim=True).clamp_min(1.0)

    def likelihood(self, z: torch.Tensor, library: torch.Tensor) -> NegativeBinomial:
        """p(x | z, l): ``library`` is (batch, 1) and broadcasts over particles."""
        return NegativeBinomial(
            total_count=self.log_theta.exp(), logits=self._nb_logits(z, library), validate_args=False
        )

    def _nb_logits(self, z: torch.Tensor, library: torch.Tensor) -> torch.Tensor:
        log_mean = torch.log(library) + F.log_softmax(self.decoder(z), dim=-1)
        return log_mean - self.log_theta

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x | z) summed over genes, for ``z`` of shape (..., cells, n_latent).

        Equal to ``likelihood(z, l).log_prob(x).sum(-1)``, written as
        ``c(x) + sum_g [x logits - (x + theta) softplus(logits)]`` so that the log-gamma
        terms c(x), free of z, are evaluated once per cell rather than once per
        particle (they dominate the cost of the NB density).
        """
        theta = self.log_theta.exp()
        logits = self._nb_logits(z, self.library_size(x))
        free = (torch.lgamma(x + theta) - torch.lgamma(theta) - torch.lgamma(x + 1)).sum(-1)
        return free + (x * logits - (x + theta) * F.softplus(logits)).sum(-1)

    # -- objectives
    def loss(
        self,
        x: torch.Tensor,
        labels: torch.Tensor,
        kl_weight: float = 1.0,
        n_obs: int = 1,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Negative ELBO per cell (KL weighted by beta * kl_weight) plus the prior's global term.

        Returns the scalar loss and per-minibatch means of its parts; ``parts["elbo_cells"]``
        is the unweighted ELBO of each cell.
        """
        qz = self.encode(x)
        # The reparameterised draw written out (Normal.rsample's noise cannot be batched
        # over models by vmap); the NB density through log_likelihood, which equals
        # NegativeBinomial.log_prob and costs fewer operations per step.
        z = qz.loc + qz.scale * torch.randn_like(qz.loc)
        recon = -self.log_likelihood(x, z)
        kl = kl_divergence(qz, self.prior.distribution(labels, like=qz.loc)).sum(-1)
        penalty = self.prior.penalty(n_obs, kl_weight)
        loss = (recon + self.beta * kl_weight * kl).mean() + penalty
        elbo_cells = -(recon + kl)
        parts = {
            "recon": recon.mean(),
            "kl": kl.mean(),
            "penalty": torch.as_tensor(penalty, dtype=x.dtype, device=x.device),
            "elbo": elbo_cells.mean(),
            "elbo_cells": elbo_cells,
        }
        return loss, parts

    @torch.no_grad()
    def elbo(
        self, x: torch.Tensor, labels: torch.Tensor, chunk: int = 4096, reduction: str = "mean"
    ) -> torch.Tensor:
        """ELBO of each cell (``reduction="none"``) or their mean: one posterior sample,
        analytic KL, deterministic mask; in chunks of cells."""
        was_training = self.training
        self.eval()
        cells = torch.cat(
            [self.loss(xs, ls)[1]["elbo_cells"] for xs, ls in zip(x.split(chunk), labels.split(chunk))]
        )
        self.train(was_training)
        return cells if reduction == "none" else cells.mean()

    @torch.no_grad()
    def iwelbo(
        self,
        x: torch.Tensor,
        labels: torch.Tensor,
        n_particles: int,
        generator: torch.Generator | None = None,
        memory_mb: float = 64.0,
    ) -> torch.Tensor:
        """Importance-weighted ELBO of each cell (Burda et al. 2016).

        ``log (1/T) sum_t p(x, z_t | a) / q(z_t | x)`` with z_1..z_T ~ q(z | x): a lower
        bound of log p(x | a) that tightens as T grows (T = 1 is an ELBO estimate).
        Particles are a tensor dimension. Cells are processed in blocks so that a block's
        particle-cells fit in about ``memory_mb``; when even one cell's T particles do
        not, particles are split too and the blocks' log-sum-exps are combined, so memory
        stays bounded whatever T is.
        """
        if n_particles < 1:
            raise ValueError(f"n_particles must be at least 1, got {n_particles}")
        was_training = self.training
        self.eval()
        cfg = self.cfg
        # float32 values alive per particle-cell: decoder activations, the gene-wise
        # terms of the NB density and the latent draws.
        floats = 8 * cfg.n_genes + 2 * cfg.n_layers * cfg.n_hidden + 6 * cfg.n_latent
        block = max(1, int(memory_mb * 2**20 / (4 * floats)))
        n_t = min(n_particles, block)
        n_c = max(1, block // n_t)
        # Written in place: small tensors kept alive between the blocks' large temporaries
        # would fragment the allocator's heap, which then grows with the number of cells.
        out = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
        for xs, ls, res in zip(x.split(n_c), labels.split(n_c), out.split(n_c)):
            qz = self.encode(xs)
            pz = self.prior.distribution(ls, like=qz.loc)
            total = torch.full((xs.shape[0],), -math.inf, dtype=xs.dtype, device=xs.device)
            for start in range(0, n_particles, n_t):
                t = min(n_t, n_particles - start)
                eps = torch.randn(
                    (t, *qz.loc.shape), generator=generator, dtype=xs.dtype, device=xs.device
                )
                z = qz.loc + qz.scale * eps
                log_w = self.log_likelihood(xs, z) + (pz.log_prob(z) - qz.log_prob(z)).sum(-1)
                total = torch.logaddexp(total, log_w.logsumexp(0))
            torch.sub(total, math.log(n_particles), out=res)
        self.train(was_training)
        return out

    @torch.no_grad()
    def latent_means(self, x: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
        """Posterior means E[z | x] of every cell, in chunks."""
        return torch.cat([self.encode(xs).loc for xs in x.split(chunk)])

    # -- the transfer protocol to held-out perturbations (Lopez et al. 2023, section 5)
    def binarize_targets(self, held_out: torch.Tensor) -> None:
        """Step 2: fix the learned target graph; ``held_out`` perturbations get mask 1 and
        shift 0 (a no-op for priors without perturbation parameters)."""
        self.prior.binarize_targets(held_out)

    def shift_rows(self, perturbations: torch.Tensor) -> torch.Tensor:
        """The gradient multiplier of step 3 for the shifts: 1 on the rows of ``perturbations``,
        0 elsewhere, shape (n_perturbations, 1)."""
        rows = torch.zeros(self.cfg.n_perturbations, 1, device=perturbations.device)
        rows[perturbations] = 1.0
        return rows

    def freeze_all_but_shifts(self, perturbations: torch.Tensor) -> list[nn.Parameter]:
        """Step 3: freeze the encoder, decoder, dispersion and mask; only the shifts of
        ``perturbations`` stay trainable (the gradient of every other row is zeroed).

        Returns the parameters to optimise: empty when the prior has no shifts.
        """
        for param in self.parameters():
            param.requires_grad_(False)
        mu = self.prior.shift_parameter()
        if mu is None:
            return []
        rows = self.shift_rows(perturbations)
        mu.requires_grad_(True)
        if self._shift_hook is not None:
            self._shift_hook.remove()
        self._shift_hook = mu.register_hook(lambda grad: grad * rows)
        return [mu]

    # -- persistence
    def save(self, weights_path, config_path) -> None:
        """``state_dict`` (loadable with ``weights_only=True``) plus a JSON of the config."""
        torch.save(self.state_dict(), weights_path)
        with open(config_path, "w") as fh:
            json.dump(self.cfg.to_dict(), fh, indent=2)

    @classmethod
    def load(cls, weights_path, config_path, map_location="cpu") -> SparseShiftVAE:
        with open(config_path) as fh:
            cfg = ModelConfig(**json.load(fh))
        model = cls(cfg)
        model.load_state_dict(torch.load(weights_path, map_location=map_location, weights_only=True))
        return model

