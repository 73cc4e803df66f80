"""The training step replayed as a CUDA graph (``TrainConfig.cuda_graph``, on CUDA).

A paper-size step (one model, batch 128) launches a few hundred small kernels; on a GPU it is
bound by their launch cost, not by arithmetic. :class:`CapturedStep` records one whole step of
a :class:`sparseshift.trainee.Trainee` (zero the gradients, loss, backward, Adam) once as a
``torch.cuda.CUDAGraph`` and replays it for every full minibatch: one launch per step.

What the capture needs, and how it is met:

- Static memory. The minibatch is copied into buffers of one full minibatch (``x``, ``labels``)
  before each replay; the KL weight is a 0-dim device tensor filled once per epoch; the
  gradients are zeroed in place (``set_to_none=False``), so the graph's backward writes the
  same tensors every time; the epoch's loss parts are summed in place into ``sums`` by the
  graph itself, read by the caller once per epoch (no host synchronisation per step).
- The optimiser inside the graph: the trainee's fused Adam is flagged ``capturable`` (the same
  as building it with ``capturable=True``: Adam reads the flag from its parameter groups at
  every step, and fused Adam keeps its step counts on the device either way).
- No host synchronisation in the loss: the sparse-shift prior's ``frozen`` is a Python flag
  (:mod:`sparseshift.priors`), and a float penalty is filled on the device (``model.loss``).
- Warm-up: the first ``warmup`` full minibatches after a (re)capture point run eagerly on a side
  stream (they are real training steps, counted as such; they also create the gradients and
  Adam's moments that the graph then updates in place), then the next one is captured and
  replayed. Capture itself runs nothing and consumes no random numbers, and a replay draws
  from the CUDA generator as the eager step would, so the number of steps and the random
  stream are those of the eager loop.
- The last, partial minibatch (``n_train`` not a multiple of the batch size) has another shape:
  it runs eagerly, with the same optimiser (a capturable Adam steps eagerly too) and the same
  in-place gradients, and is added to ``sums`` after the replays.
- Re-capture: a graph is bound to the tensors of one trainee. When the training loop passes
  another trainee (early stopping's ``select`` makes a new one, with new parameters and a new
  optimiser) or another number of training cells, the step warms up and captures anew.
  Capture happens lazily, in the first epoch of a trainee, so a resumed run (``load_state``
  before the first epoch) captures the loaded weights and optimiser state; whoever calls
  ``load_state`` (which replaces Adam's state tensors) on a trainee already captured must call
  :meth:`CapturedStep.reset`.

``capture=False`` runs the same step (static buffers, tensor KL weight, in-place gradients, the
partial batch apart) eagerly everywhere: on CPU it gives the eager loop's numbers, which the
tests check.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import torch

if TYPE_CHECKING:
    from .trainee import Trainee


def epoch_parts(loss: torch.Tensor, parts: dict) -> torch.Tensor:
    """The minibatch means logged per epoch (loss, recon, kl, penalty, elbo), detached."""
    return torch.stack([loss, parts["recon"], parts["kl"], parts["penalty"], parts["elbo"]]).detach()


def backward(loss: torch.Tensor, scale: float = 1.0) -> None:
    """Back-propagate the models' losses (they share no parameter: each gets its own gradient),
    multiplied by ``scale`` (``TrainConfig.loss_times_cells``) unless it is 1."""
    total = loss.sum()
    (total if scale == 1.0 else total * scale).backward()


def make_capturable(optimiser: torch.optim.Optimizer) -> None:
    """Flag ``optimiser`` (fused Adam) as ``capturable``, as ``capturable=True`` would have:
    its step may then be captured in a CUDA graph."""
    optimiser.defaults["capturable"] = True
    for group in optimiser.param_groups:
        group["capturable"] = True
    # its warm-up and partial-batch steps run uncaptured by design: no warning in every job's log
    optimiser._warned_capturable_if_run_uncaptured = True


class CapturedStep:
    """The training step of :func:`sparseshift.train.train_models` for minibatches of
    ``batch_size``, replayed as a CUDA graph (``capture``, CUDA only) or run eagerly on static
    buffers (``capture=False``). :meth:`epoch` trains one epoch; see the module's docstring."""

    def __init__(self, batch_size: int, capture: bool = True, warmup: int = 3):
        self.batch_size, self.capture, self.warmup = batch_size, capture, warmup
        self.captures = 0  # graphs captured so far (the tests count re-captures)
        self.scale = 1.0  # the loss's multiplier (TrainConfig.loss_times_cells), set by epoch()
        self.reset()

    def reset(self) -> None:
        """Forget the trainee and its graph: the next epoch warms up and captures anew."""
        self.trainee, self.n_obs, self.graph, self.warm = None, None, None, 0

    def _prepare(self, trainee: Trainee, x: torch.Tensor, labels: torch.Tensor, n_obs: int) -> None:
        """Static buffers for ``trainee`` (minibatches shaped like ``x``, ``labels``)."""
        self.reset()
        if self.capture and x.device.type != "cuda":
            raise ValueError(f"CapturedStep: capture needs a CUDA device, the data are on {x.device}")
        self.trainee, self.n_obs = trainee, n_obs
        m, device = x.shape[0], x.device
        self.x = torch.empty((m, self.batch_size, *x.shape[2:]), dtype=x.dtype, device=device)
        self.labels = torch.empty((m, self.batch_size), dtype=labels.dtype, device=device)
        self.kl_weight = torch.zeros((), dtype=x.dtype, device=device)
        self.sums = torch.zeros(m, 5, dtype=x.dtype, device=device)
        if self.capture:
            make_capturable(trainee.optimiser)
            self.side = torch.cuda.Stream(device)

    def _step(self, trainee: Trainee, x: torch.Tensor, labels: torch.Tensor, size: int) -> None:
        """One training step on ``x``, ``labels``, its loss parts added to ``sums``."""
        trainee.optimiser.zero_grad(set_to_none=False)  # the gradients stay where the graph wrote them
        loss, parts = trainee.loss(x, labels, self.kl_weight, self.n_obs)
        backward(loss, self.scale)
        trainee.optimiser.step()
        self.sums += epoch_parts(loss, parts).T * size

    def _warm_up(self, trainee: Trainee) -> None:
        """One eager step on the static buffers: on a side stream before a capture (CUDA)."""
        if not self.capture:
            self._step(trainee, self.x, self.labels, self.batch_size)
            return
        self.side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.side):
            self._step(trainee, self.x, self.labels, self.batch_size)
        torch.cuda.current_stream().wait_stream(self.side)

    def epoch(self, trainee: Trainee, batches: Iterable, kl_weight: float, n_obs: int,
              scale: float = 1.0) -> torch.Tensor:
        """Train ``trainee`` on ``batches`` (cells, labels, size, stacked over its models);
        return the sums over the epoch of each model's loss parts, each minibatch's means
        weighted by its size, shape (models, 5). The tensor is this step's own: read it
        before the next epoch."""
        if trainee is not self.trainee or n_obs != self.n_obs or scale != self.scale:
            self.trainee = None
        self.scale = scale  # read by the step (captured with it)
        started = False
        for x, labels, size in batches:
            if self.trainee is None:
                self._prepare(trainee, x, labels, n_obs)
            if not started:
                self.kl_weight.fill_(kl_weight)
                self.sums.zero_()
                started = True
            if size != self.batch_size:  # the last, partial minibatch: eagerly, after the replays
                self._step(trainee, x, labels, size)
                continue
            self.x.copy_(x)
            self.labels.copy_(labels)
            if self.graph is not None:
                self.graph.replay()
            elif self.warm < self.warmup or not self.capture:
                self._warm_up(trainee)
                self.warm += 1
            else:
                self._capture(trainee)
                self.graph.replay()
        if not started:
            raise ValueError("CapturedStep.epoch: no training cells")
        return self.sums

    def _capture(self, trainee: Trainee) -> None:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._step(trainee, self.x, self.labels, self.batch_size)
        self.graph = graph
        self.captures += 1
