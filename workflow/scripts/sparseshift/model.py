"""One variational autoencoder; the methods differ only in its prior (:mod:`sparseshift.priors`).

:class:`SparseShiftVAE` owns the encoder, the decoder and the negative-binomial
likelihood; the perturbation label reaches the model only through its prior object.
:class:`ModelConfig` is everything needed to rebuild one; its fields are the config keys
of the ``model`` section, plus the method's swept weight under its config key.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.distributions import NegativeBinomial, Normal, kl_divergence
from torch.nn import functional as F

from .methods import HYPERPARAMETERS
from .methods import method as registered
from .priors import PRIORS


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


# ----------------------------------------------------------------------------- model


# The ModelConfig field that may differ between the models of one stack: the swept weights
# (beta-VAE's beta, sVAE's lambda, sVAE+'s alpha), buffers of the model's prior.
PER_MODEL = ("hyperparameters",)
# Keys of model.json files written before the config keys and these fields were made equal.
_LEGACY_KEYS = {"init_logit": "mask_init_logit", "graph_top_k": "ivae_graph_top_k"}
_LEGACY_WEIGHTS = {"beta": "beta", "alpha": "alpha", "lam": "lambda"}


@dataclass
class ModelConfig:
    """Everything needed to rebuild a :class:`SparseShiftVAE` (saved beside its weights).

    The fields after the sizes are the config keys of the ``model`` section (config/README.md);
    ``hyperparameters`` holds the method's swept weight under its config key (e.g.
    ``{"alpha": 100}`` for sVAE+, see :mod:`sparseshift.methods`).
    """

    method: str
    n_genes: int
    n_latent: int
    n_perturbations: int
    n_hidden: int = 128
    n_layers: int = 2
    mask_init_logit: float = 5.0
    temperature: float = 1.0
    ivae_graph_top_k: int = 2
    # The encoder's input: log1p counts centred and scaled per gene on the training cells
    # (True), or plain log1p counts as in the paper and the released code (False).
    standardize_input: bool = True
    # scvi-tools' layers (the released code): BatchNorm in encoder and decoder, dropout in
    # the encoder. Off by default (docs/table1.md lists the measured effect).
    batch_norm: bool = False
    dropout: float = 0.0
    hyperparameters: dict[str, float] = field(default_factory=dict)
    perturbations: list[str] = field(default_factory=list)
    # The conditions beyond the single perturbations: combination label -> its member
    # perturbations (labels of ``perturbations``). Condition c < n_perturbations is perturbation
    # c, condition n_perturbations + i the i-th combination, whose prior mean is the sum of its
    # members' shifts. Empty (older model.json files): every condition is one perturbation.
    combinations: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self):
        registered(self.method)  # a ValueError names the known methods
        unknown = set(self.hyperparameters) - set(HYPERPARAMETERS)
        if unknown:
            raise ValueError(f"hyperparameters: unknown {sorted(unknown)}, known {list(HYPERPARAMETERS)}")
        if self.combinations:
            if len(self.perturbations) != self.n_perturbations:
                raise ValueError("combinations need the perturbations' labels (ModelConfig.perturbations)")
            known = set(self.perturbations)
            for label, members in self.combinations.items():
                absent = [m for m in members if m not in known]
                if not members or absent or len(set(members)) != len(members):
                    raise ValueError(f"combination {label!r}: members {list(members)} must be distinct "
                                     f"perturbations of the model (unknown: {absent})")

    @property
    def n_conditions(self) -> int:
        """Single perturbations and combinations: the number of distinct cell labels."""
        return self.n_perturbations + len(self.combinations)

    def condition_members(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The member perturbations of every condition as a padded (n_conditions, S) index
        matrix (S: the most members of a combination; padding index 0) and its (n_conditions, S)
        float validity mask; None without combinations."""
        if not self.combinations:
            return None
        index = {name: i for i, name in enumerate(self.perturbations)}
        rows = [[a] for a in range(self.n_perturbations)]
        rows += [[index[m] for m in members] for members in self.combinations.values()]
        width = max(len(r) for r in rows)
        members = torch.tensor([r + [0] * (width - len(r)) for r in rows], dtype=torch.int64)
        valid = torch.tensor([[1.0] * len(r) + [0.0] * (width - len(r)) for r in rows])
        return members, valid

    def weight(self) -> float | None:
        """The value of the method's swept weight (its registry default when not given);
        None for a method without one."""
        spec = registered(self.method)
        if spec.hyperparameter is None:
            return None
        return float(self.hyperparameters.get(spec.hyperparameter, spec.default))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        """A config from its :meth:`to_dict` (also that of an older model.json)."""
        values = {_LEGACY_KEYS.get(k, k): v for k, v in values.items()}
        legacy = {_LEGACY_WEIGHTS[k]: values.pop(k) for k in list(values) if k in _LEGACY_WEIGHTS}
        if legacy and "hyperparameters" not in values:
            key = registered(values["method"]).hyperparameter
            values["hyperparameters"] = {key: legacy[key]} if key and legacy.get(key) is not None else {}
        return cls(**values)

    def stack_key(self) -> dict:
        """The settings models must share to be trained as one stack: all but the swept
        weights (``PER_MODEL``), which the model holds as tensors of its own, and of the
        combinations their number and largest size."""
        key = {k: v for k, v in self.to_dict().items() if k not in PER_MODEL}
        if self.combinations:
            # the prior's buffers of members, which models of one shape may each hold their own
            # of (the seeds of a simulation draw their own combinations): their shape only
            key["combinations"] = [len(self.combinations), max(len(m) for m in self.combinations.values())]
        return key


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
        self.prior = PRIORS[cfg.method](cfg.n_perturbations, cfg.n_latent, cfg.condition_members(), cfg.weight(),
                                        cfg.ivae_graph_top_k, cfg.temperature, cfg.mask_init_logit)
        # Per-gene centring and scaling of log1p(x) before the encoder: a fixed affine
        # reparameterisation of its first layer that keeps high-count genes (log1p
        # around 7 with a spread of a few tenths) well conditioned.
        self.register_buffer("input_loc", torch.zeros(cfg.n_genes))
        self.register_buffer("input_scale", torch.ones(cfg.n_genes))
        self._shift_hooks: list = []  # set by freeze_all_but_shifts()

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
        kl_weight: float | torch.Tensor = 1.0,
        n_obs: int = 1,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Negative ELBO per cell (KL weighted by the prior's kl_scale * kl_weight) plus the prior's global term.
        ``kl_weight`` may be a 0-dim tensor (that of the captured step, :mod:`sparseshift.step`).

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
        loss = (recon + self.prior.kl_scale * kl_weight * kl).mean() + penalty
        elbo_cells = -(recon + kl)
        parts = {
            "recon": recon.mean(),
            "kl": kl.mean(),
            # a float penalty (0 without a sparsity term) filled on the device, not copied from
            # the host: a copy would not be captured in a CUDA graph (sparseshift.step)
            "penalty": penalty if torch.is_tensor(penalty) else torch.full((), penalty, dtype=x.dtype, device=x.device),
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

    def learn_heldout_masks(self, perturbations: torch.Tensor) -> bool:
        """The variant of step 3 with learned masks (after :meth:`binarize_targets`): the masks
        of ``perturbations`` learned afresh under the prior's sparsity term. False (nothing
        changed) for a prior without masks."""
        if not hasattr(self.prior, "learn_masks"):
            return False
        self.prior.learn_masks(perturbations, self.cfg.mask_init_logit)
        return True

    def freeze_all_but_shifts(self, perturbations: torch.Tensor) -> list[nn.Parameter]:
        """Step 3: freeze the encoder, decoder, dispersion and mask; only the shifts of
        ``perturbations`` stay trainable (the gradient of every other row is zeroed), and
        their mask logits too when they are learned (:meth:`learn_heldout_masks`).

        Returns the parameters to optimise: empty when the prior has no shifts.
        """
        for param in self.parameters():
            param.requires_grad_(False)
        mu = self.prior.shift_parameter()
        if mu is None:
            return []
        rows = self.shift_rows(perturbations)
        params = [mu]
        if getattr(self.prior, "learning", False):
            params.append(self.prior.logits)
        for hook in self._shift_hooks:
            hook.remove()
        self._shift_hooks = []
        for param in params:
            param.requires_grad_(True)
            self._shift_hooks.append(param.register_hook(lambda grad: grad * rows))
        return params

    # -- persistence
    def save(self, weights_path, config_path) -> None:
        """``state_dict`` (loadable with ``weights_only=True``) plus a JSON of the config."""
        torch.save(self.state_dict(), weights_path)
        with open(config_path, "w") as fh:
            json.dump(self.cfg.to_dict(), fh, indent=2)

    @classmethod
    def load(cls, weights_path, config_path, map_location="cpu") -> SparseShiftVAE:
        with open(config_path) as fh:
            cfg = ModelConfig.from_dict(json.load(fh))
        model = cls(cfg)
        model.load_state_dict(torch.load(weights_path, map_location=map_location, weights_only=True))
        return model

