"""The parameters of the simulation (:mod:`sparseshift.simulate`): :class:`SimulationConfig`,
its fields the keys of a config's ``simulation`` entries, checked when it is built (each error
names its field), and their HDF5-ready form (:meth:`SimulationConfig.to_dict`, kept in the
simulated data's ``uns["simulation"]``). It needs numpy only; :mod:`sparseshift.simulate`
imports it (never the reverse).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

TargetSampling = Literal["without_replacement", "with_replacement"]
_TARGET_SAMPLING_CHOICES: tuple[str, ...] = ("without_replacement", "with_replacement")


def _is_int(value: object) -> bool:
    """Return True for integers (numpy included) but not for booleans."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _plain(value):
    """``value`` as HDF5 attributes take it: numpy scalars as Python ones, tuples as lists."""
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _is_real(value: object) -> bool:
    """Return True for finite real numbers (not booleans)."""
    return (
        isinstance(value, (int, float, np.integer, np.floating))
        and not isinstance(value, (bool, np.bool_))
        and bool(np.isfinite(value))
    )


@dataclass(frozen=True)
class SimulationConfig:
    """Parameters of the sparse mechanism shift simulation.

    Attributes:
        n_latent: Number of latent dimensions ``p``.
        n_perturbations: Total number of perturbations ``K`` (train + heldout).
        n_heldout: Number of held-out perturbations (the last indices).
        cells_per_perturbation: Cells simulated per perturbation.
        n_genes: Number of genes (decoder output dimension).
        targets_per_perturbation: ``(targets_min, targets_max)``, the least and most targets
            drawn per perturbation.
        effect_mean: Mean of the shift magnitude.
        effect_sd: Standard deviation of the shift magnitude.
        library_size: Expected total count per cell (paper: 1e5; code: 1e6).
        target_sampling: ``"without_replacement"`` (distinct targets, paper) or
            ``"with_replacement"`` (duplicates collapse, released code).
        decoder_hidden: Width of the decoder's hidden layers.
        decoder_layers: Number of hidden layers (0 gives a linear decoder).
        standardize_logits: Divide the decoder's logits by their standard deviation
            over the whole dataset before the softmax (as the released code does);
            without it the logits of a random orthogonal MLP vary little and the
            proportions are almost uniform.
        softmax_over: ``"genes"`` (each cell's proportions sum to 1, counts have
            expected total ``library_size`` per cell; the paper) or ``"cells"``
            (each gene's proportions sum to 1 over the cells, expected total
            ``library_size`` per gene; the released code).
        heldout: the held-out perturbations' own ``targets_per_perturbation`` and
            ``effect_mean`` (the paper's out-of-domain scenarios: test perturbations sparser /
            denser or weaker / stronger than the training ones); unset keys follow the
            training settings.
        combinations: ``{count, size, heldout}``: ``count`` combinations of ``size`` (default
            2) distinct training perturbations, the last ``heldout`` (default 0) held out;
            empty (default): none.
        seed: Seed of the single random generator.
    """

    n_latent: int = 15
    n_perturbations: int = 100
    n_heldout: int = 20
    cells_per_perturbation: int = 250
    n_genes: int = 100
    targets_per_perturbation: tuple[int, int] = (1, 3)
    effect_mean: float = 5.0
    effect_sd: float = 0.5
    library_size: float = 1e5
    target_sampling: TargetSampling = "without_replacement"
    decoder_hidden: int = 40
    decoder_layers: int = 3
    standardize_logits: bool = True
    softmax_over: Literal["genes", "cells"] = "genes"
    heldout: dict = field(default_factory=dict)
    combinations: dict = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        """Validate the fields; raise ``ValueError`` naming the offending field."""
        for name in (
            "n_latent",
            "n_perturbations",
            "cells_per_perturbation",
            "n_genes",
            "decoder_hidden",
        ):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("n_heldout", "decoder_layers", "seed"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if self.n_heldout >= self.n_perturbations:
            raise ValueError(
                f"n_heldout ({self.n_heldout}) must be smaller than "
                f"n_perturbations ({self.n_perturbations})"
            )
        if self.target_sampling not in _TARGET_SAMPLING_CHOICES:
            raise ValueError(
                f"target_sampling must be one of {_TARGET_SAMPLING_CHOICES}, "
                f"got {self.target_sampling!r}"
            )
        unknown = set(self.heldout) - {"targets_per_perturbation", "effect_mean"}
        if unknown:
            raise ValueError(f"heldout: unknown keys {sorted(unknown)} (targets_per_perturbation, effect_mean)")
        for prefix in ("", "heldout_"):
            key = "heldout.targets_per_perturbation" if prefix else "targets_per_perturbation"
            pair = self.heldout.get("targets_per_perturbation", (1, 1)) if prefix else self.targets_per_perturbation
            if len(pair) != 2:
                raise ValueError(f"{key} must be [min, max], got {pair!r}")
            low, high = self.targets_range(held_out=bool(prefix))
            for name, value in ((f"{prefix}targets_min", low), (f"{prefix}targets_max", high)):
                if not _is_int(value) or value < 1:
                    raise ValueError(f"{key}: {name} must be a positive integer, got {value!r}")
            if low > high:
                raise ValueError(f"{key}: {prefix}targets_min ({low}) must not exceed {prefix}targets_max ({high})")
            if self.target_sampling == "without_replacement" and high > self.n_latent:
                raise ValueError(
                    f"{key}: {prefix}targets_max ({high}) must not exceed n_latent "
                    f"({self.n_latent}) when target_sampling is 'without_replacement'"
                )
        for name, value in (("effect_mean", self.effect_mean), ("heldout.effect_mean", self.effect(True))):
            if not _is_real(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if not _is_real(self.effect_sd) or self.effect_sd < 0:
            raise ValueError(
                f"effect_sd must be a finite non-negative number, got {self.effect_sd!r}"
            )
        if self.softmax_over not in ("genes", "cells"):
            raise ValueError(f"softmax_over must be 'genes' or 'cells', got {self.softmax_over!r}")
        if not isinstance(self.standardize_logits, bool):
            raise ValueError(f"standardize_logits must be true or false, got {self.standardize_logits!r}")
        if not _is_real(self.library_size) or self.library_size <= 0:
            raise ValueError(
                f"library_size must be a finite positive number, got {self.library_size!r}"
            )
        self._check_combinations()

    def _check_combinations(self) -> None:
        unknown = set(self.combinations) - {"count", "size", "heldout"}
        if unknown:
            raise ValueError(f"combinations: unknown keys {sorted(unknown)} (count, size, heldout)")
        count, size, held = self.combination_count, self.combination_size, self.combination_heldout
        for name, value, least in (("count", count, 0), ("size", size, 2), ("heldout", held, 0)):
            if not _is_int(value) or value < least:
                raise ValueError(f"combinations.{name} must be an integer of at least {least}, got {value!r}")
        if count and size > self.n_train:
            raise ValueError(f"combinations.size ({size}) must not exceed the training perturbations ({self.n_train})")
        if count > math.comb(self.n_train, size):
            raise ValueError(f"combinations.count ({count}) exceeds the {math.comb(self.n_train, size)} distinct "
                             f"combinations of {size} of the {self.n_train} training perturbations")
        if held > count:
            raise ValueError(f"combinations.heldout ({held}) must not exceed combinations.count ({count})")

    @property
    def combination_count(self) -> int:
        return self.combinations.get("count", 0)

    @property
    def combination_size(self) -> int:
        return self.combinations.get("size", 2)

    @property
    def combination_heldout(self) -> int:
        return self.combinations.get("heldout", 0)

    def targets_range(self, held_out: bool = False) -> tuple[int, int]:
        """[min, max] targets of a training (or held-out) perturbation."""
        low, high = self.targets_per_perturbation
        if held_out and "targets_per_perturbation" in self.heldout:
            low, high = self.heldout["targets_per_perturbation"]
        return low, high

    def effect(self, held_out: bool = False) -> float:
        """Mean shift magnitude of a training (or held-out) perturbation."""
        if held_out and "effect_mean" in self.heldout:
            return self.heldout["effect_mean"]
        return self.effect_mean

    @property
    def n_train(self) -> int:
        """Number of training perturbations."""
        return self.n_perturbations - self.n_heldout

    @property
    def n_cells(self) -> int:
        """Total number of simulated cells (single perturbations and combinations)."""
        return (self.n_perturbations + self.combination_count) * self.cells_per_perturbation

    def to_dict(self) -> dict[str, int | float | str]:
        """Return the fields as a JSON-serialisable dict of Python scalars (``combinations``
        only when set, as before it existed)."""
        out: dict[str, int | float | str] = {}
        for spec in dataclasses.fields(self):
            if spec.name == "combinations" and not self.combinations:
                continue
            out[spec.name] = _plain(getattr(self, spec.name))
        return out
