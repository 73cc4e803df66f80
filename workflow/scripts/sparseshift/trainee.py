"""What the training loop trains, and on what: the :class:`Trainee` protocol, its one-model
implementation :class:`OneModel`, the optimiser of every phase (:func:`adam`) and the cells on
the device (:class:`TrainingData`).

:func:`sparseshift.train.train_models` trains a :class:`Trainee` (the models still training,
batched along a leading dimension) on a :class:`TrainingData`; :func:`sparseshift.train.fit`
builds a :class:`OneModel`, :func:`sparseshift.batched.fit_many` a
:class:`sparseshift.batched.ModelStack`. This module imports neither: train and batched
import it.
"""

from __future__ import annotations

import copy
import operator
from typing import Any, Protocol

import numpy as np
import torch

from .model import SparseShiftVAE


class Trainee(Protocol):
    """The models :func:`sparseshift.train.train_models` trains, seen as one: the ``m`` of them
    still training, batched along a leading dimension (position ``j``); implemented by
    :class:`OneModel` and :class:`sparseshift.batched.ModelStack`. ``loss`` gives model j's loss
    (shape (m,)) and loss parts on ``x[j]``, ``labels[j]``; ``finite`` whether each one's
    trained weights are finite (shape (m,)); ``member`` a method of model j alone; ``weights`` a
    copy of model j's weights, which ``write`` copies into a model; ``select`` the models at
    ``keep`` alone, optimiser state kept; ``state`` / ``load_state`` the weights and optimiser
    of a checkpoint."""

    stacked: bool  # the log lines and errors name a model by its place in a stack
    optimiser: torch.optim.Optimizer  # steps every model's trained parameters

    def train(self, mode: bool = True) -> Any: ...
    def loss(self, x, labels, kl_weight: float, n_obs: int) -> tuple[torch.Tensor, dict]: ...
    def finite(self) -> torch.Tensor: ...
    def member(self, j: int, method: str, *args) -> Any: ...
    def weights(self, j: int) -> dict: ...
    def write(self, model: SparseShiftVAE, weights: dict) -> None: ...
    def select(self, keep: list[int]) -> Trainee: ...
    def state(self) -> dict: ...
    def load_state(self, state: dict) -> None: ...


def adam(params, lr: float, eps: float = 1e-8, weight_decay: float = 0.0) -> torch.optim.Adam:
    """The optimiser of every phase: fused Adam, its weight decay the L2 term added to the
    gradient (torch's Adam, as in scvi-tools' training plan)."""
    return torch.optim.Adam(params, lr=lr, eps=eps, weight_decay=weight_decay, fused=True)


class OneModel:
    """One model as a :class:`Trainee` of one, Adam over ``parameters``. BatchNorm models
    (which a stack refuses) are trained as they are: their weights are full ``state_dict``
    copies, running statistics included."""

    stacked = False

    def __init__(self, model: SparseShiftVAE, lr: float, parameters: list[torch.nn.Parameter],
                 eps: float = 1e-8, weight_decay: float = 0.0):
        self.model, self.parameters = model, parameters
        self.optimiser = adam(parameters, lr, eps, weight_decay)

    def train(self, mode: bool = True) -> OneModel:
        self.model.train(mode)
        return self

    def loss(self, x, labels, kl_weight, n_obs):
        loss, parts = self.model.loss(x[0], labels[0], kl_weight=kl_weight, n_obs=n_obs)
        return loss[None], {k: v[None] for k, v in parts.items()}

    def finite(self) -> torch.Tensor:
        return torch.stack([torch.isfinite(p).all() for p in self.parameters]).all()[None]

    def member(self, j, method, *args):
        return operator.attrgetter(method)(self.model)(*args)

    def weights(self, j) -> dict:
        return copy.deepcopy(self.model.state_dict())

    def select(self, keep) -> OneModel:
        return self  # never called: the one model leaves only by stopping, and nothing trains on

    def state(self) -> dict:
        return {"model": self.model.state_dict(), "optimiser": self.optimiser.state_dict()}

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimiser.load_state_dict(state["optimiser"])

    def write(self, model, weights) -> None:
        model.load_state_dict(weights)


class TrainingData:
    """The cells of every model on the device, each distinct dataset held once (models on the
    same data may pass the same tensors): model i trains on ``xs[i][train_idx[i]]`` and is
    validated on ``xs[i][val_idx[i]]``. The datasets and splits must be of one shape."""

    def __init__(self, xs: list[torch.Tensor], labels: list[torch.Tensor], train_idx: list[np.ndarray],
                 val_idx: list[np.ndarray]):
        self.device = xs[0].device
        distinct: dict[tuple[int, int], int] = {}  # model i reads dataset source[i]
        source = [distinct.setdefault((id(x), id(lab)), len(distinct)) for x, lab in zip(xs, labels)]
        first = [source.index(j) for j in range(len(distinct))]
        self.x, self.labels = (torch.stack([t[i] for i in first]) if len(first) > 1 else t[0][None]  # no copy
                               for t in (xs, labels))
        self.source = torch.as_tensor(source, device=self.device)
        self.train = torch.stack([torch.as_tensor(t, device=self.device) for t in train_idx])
        self.n_train = self.train.shape[1]
        self.vals = [(x[v], lab[v]) for x, lab, v in zip(xs, labels, val_idx)]

    def minibatches(self, active: list[int], generators: list[torch.Generator], batch_size: int):
        """One epoch of the models ``active``: each one's training cells in the order of its
        generator, in minibatches (cells, labels, size) stacked over the models."""
        orders = [torch.randperm(self.n_train, device=self.device, generator=generators[i]) for i in active]
        perm = torch.stack([self.train[i][order] for i, order in zip(active, orders)])
        rows = self.source[active][:, None]
        for batch in perm.split(batch_size, dim=1):
            yield self.x[rows, batch], self.labels[rows, batch], batch.shape[1]
