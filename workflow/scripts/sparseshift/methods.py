"""The method registry: every layer (config, rules, model, metrics, tables, figures) reads
what a method is from here.

A method is the one variational autoencoder of :mod:`sparseshift.model` with one prior
(:mod:`sparseshift.priors`). Adding a method is one :class:`Method` entry below and its prior
class in ``sparseshift.priors.PRIORS`` (plus its line in config/README.md). Kept free of torch so that summaries and figures
need no deep-learning stack.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    """One method of the pipeline.

    ``id`` names it in the config, paths and tables; ``name`` is its display name.
    ``hyperparameter`` is the config key (``hyperparameters.<key>``) of the weight it sweeps,
    ``None`` when it has none; the model reads the value under the same key
    (``ModelConfig.hyperparameters``), and ``default`` when a model is built without it: the
    one default of the weight, that of the config schema too (a test checks they agree).
    ``learns_graph``: the prior learns a perturbation-target graph (graph metrics, target
    figures); ``learns_mask``: that graph is a learned Bernoulli mask (mask density).
    """

    id: str
    name: str
    hyperparameter: str | None = None
    default: float | None = None
    learns_graph: bool = False
    learns_mask: bool = False


# In the paper's order.
REGISTRY: dict[str, Method] = {
    m.id: m
    for m in (
        Method("vae", "VAE"),
        Method("beta_vae", "β-VAE", hyperparameter="beta", default=8.0),
        Method("ivae", "iVAE", learns_graph=True),
        Method("svae", "sVAE", hyperparameter="lambda", default=1.0, learns_graph=True,
               learns_mask=True),
        Method("svae_plus", "sVAE+", hyperparameter="alpha", default=100.0,
               learns_graph=True, learns_mask=True),
    )
}
METHODS: tuple[str, ...] = tuple(REGISTRY)
DISPLAY_NAMES: dict[str, str] = {m.id: m.name for m in REGISTRY.values()}
# Every swept weight, by its config key; the KL weight beta is one for the methods without it.
HYPERPARAMETERS: tuple[str, ...] = tuple(m.hyperparameter for m in REGISTRY.values() if m.hyperparameter)
GRAPH_METHODS: tuple[str, ...] = tuple(m.id for m in REGISTRY.values() if m.learns_graph)


def method(method_id: str) -> Method:
    """The registered method ``method_id``; a ValueError lists the known ones."""
    try:
        return REGISTRY[method_id]
    except KeyError:
        raise ValueError(f"unknown method {method_id!r}: one of {', '.join(METHODS)}") from None


def with_hyperparameter(key: str) -> list[str]:
    """The methods that sweep the weight ``key`` (e.g. ``alpha``: sVAE+)."""
    return [m.id for m in REGISTRY.values() if m.hyperparameter == key]
