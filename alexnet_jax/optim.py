"""The optimizer, the learning-rate schedules and how an optimizer state outlives a config change.

`create_optimizer(config)` is SGD with momentum and weight decay (docs/paper.md, §5), the learning
rate injected on every step. `LearningRate` gives that rate: a base schedule (constant, step,
cosine) times the `Plateau` controller's factor. Schedules count *steps of the run's first batch
size*, passed as a float (examples seen / that batch size), so a run resumed at another batch size
continues the same curve. `transfer_state` moves a saved optimizer state into another optimizer's
layout (clipping added, layers frozen, paper_sgd <-> optax_sgd), matching the momentum by
parameter.
"""

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
import optax

from alexnet_jax import finetune, param_rules, trees
from alexnet_jax.errors import UserError


def create_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """SGD with momentum and weight decay; the learning rate is set on every step.

  'paper_sgd' is §5's update, v <- m v - wd lr w - lr g; w <- w + v: the learning rate enters the
  momentum trace. 'optax_sgd' is optax's (and PyTorch's) v <- m v + g + wd w; w <- w - lr v. They
  agree while the learning rate is constant. config.param_rules scales both per parameter.
  """
  make = param_rules.sgd(config)  # learning_rate -> the SGD of config.optimizer.
  if config.grad_clip_norm > 0:  # Off by default: the paper does not clip.
    unclipped = make
    make = lambda learning_rate: optax.chain(
        optax.clip_by_global_norm(config.grad_clip_norm), unclipped(learning_rate))
  if finetune.frozen_layers(config):
    make = finetune.with_frozen_layers(make, finetune.frozen_layers(config))
  return optax.inject_hyperparams(make)(learning_rate=config.learning_rate)


def base_learning_rate_fn(config: ml_collections.ConfigDict, steps_per_epoch: int,
                          total_steps: int) -> Callable[[float], float]:
  """The schedule before any plateau reductions, over steps (fractional ones allowed)."""
  if config.lr_schedule in ('constant', 'plateau'):
    return optax.constant_schedule(config.learning_rate)
  if config.lr_schedule == 'step':  # x lr_step_factor at each boundary (default 0.1).
    every = config.get('lr_step_every_steps', 0)  # Caffe's `stepsize`, in steps.
    boundaries = (range(every, math.ceil(total_steps), every) if every
                  else [int(epoch * steps_per_epoch) for epoch in config.lr_step_epochs])
    return optax.piecewise_constant_schedule(
        config.learning_rate, {step: config.get('lr_step_factor', 0.1) for step in boundaries})
  if config.lr_schedule == 'cosine':
    return optax.cosine_decay_schedule(config.learning_rate, total_steps)
  raise UserError(f'config.lr_schedule={config.lr_schedule!r} is unknown.')


@dataclasses.dataclass
class Plateau:
  """§5: divide the learning rate by 10 when the validation error stops improving.

  Its state (`to_json`) is saved with every checkpoint, so a resumed run keeps its reductions.
  """
  patience: int
  min_delta: float
  max_reductions: int
  best_error: float = math.inf
  evals_without_improvement: int = 0
  reductions: int = 0

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> 'Plateau':
    return cls(config.plateau_patience, config.plateau_min_delta, config.plateau_max_reductions)

  @property
  def factor(self) -> float:
    return 0.1 ** self.reductions

  def update(self, eval_error: float) -> bool:
    """Records an evaluation; True when it reduced the learning rate."""
    if eval_error < self.best_error - self.min_delta:
      self.best_error, self.evals_without_improvement = eval_error, 0
      return False
    self.evals_without_improvement += 1
    if self.evals_without_improvement >= self.patience and self.reductions < self.max_reductions:
      self.reductions += 1
      self.evals_without_improvement = 0
      return True
    return False

  def to_json(self) -> dict[str, Any]:
    return {'best_error': None if math.isinf(self.best_error) else self.best_error,
            'evals_without_improvement': self.evals_without_improvement,
            'reductions': self.reductions}

  def load_json(self, state: dict[str, Any]) -> None:
    best = state.get('best_error')
    self.best_error = math.inf if best is None else best
    self.evals_without_improvement = state['evals_without_improvement']
    self.reductions = state['reductions']


@dataclasses.dataclass(frozen=True)
class TrainingLength:
  """How long the run trains, in steps of `step_batch_size` (the batch size the run started with).

  config.num_train_steps when positive, else config.num_epochs x the steps of one epoch. Counting
  steps of the first batch size means counting examples: a run resumed at another batch size
  trains until it has seen `total_examples`, and its schedule goes on in the same units.
  """
  step_batch_size: int
  steps_per_epoch: int
  total_steps: int

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, epoch_size: int,
                  step_batch_size: int) -> 'TrainingLength':
    steps_per_epoch = epoch_size // step_batch_size
    total_steps = (config.num_train_steps if config.num_train_steps > 0
                   else int(config.num_epochs * steps_per_epoch))
    return cls(step_batch_size, steps_per_epoch, total_steps)

  @property
  def total_examples(self) -> int:
    return self.total_steps * self.step_batch_size

  def steps_left(self, examples_seen: int, batch_size: int) -> int:
    """Steps of `batch_size` until `total_examples` are seen (the last may go past it)."""
    return max(0, -(-(self.total_examples - examples_seen) // batch_size))


@dataclasses.dataclass
class LearningRate:
  """The learning rate after a given number of examples: the base schedule x the plateau factor.

  The base schedule is evaluated at examples / length.step_batch_size: the step count itself
  while the batch size is unchanged, the same curve when a resumed run changed it.
  """
  config: ml_collections.ConfigDict
  plateau: Plateau
  length: TrainingLength

  def __post_init__(self):
    self._base = base_learning_rate_fn(self.config, self.length.steps_per_epoch,
                                       self.length.total_steps)

  def __call__(self, examples_seen: int) -> np.float32:
    factor = self.plateau.factor if self.config.lr_schedule == 'plateau' else 1.0
    return np.float32(self._base(examples_seen / self.length.step_batch_size) * factor)


# --- Optimizer state across a config change ---------------------------------------------------


def _momentum_of(name: str) -> str | None:
  """'conv1/kernel' for a leaf named '.../trace/conv1/kernel' (optax.trace's), else None."""
  parts = name.split('/')
  if 'trace' not in parts:
    return None
  return '/'.join(parts[len(parts) - parts[::-1].index('trace'):])


def momentum(opt_state: Any) -> dict[str, Any]:
  """{'conv1/kernel': trace, ...}: the momentum of each parameter.

  Found by name wherever the optimizer's wrappers (clipping, frozen layers) put it, in an optax
  state or in the nested dicts a checkpoint restores.
  """
  return {_momentum_of(name): leaf for name, leaf in trees.flatten(opt_state)
          if _momentum_of(name) is not None}


def momentum_scale(saved_optimizer: str, optimizer: str, learning_rate: float) -> float | None:
  """What a saved momentum trace is multiplied by to serve `optimizer`; None: it cannot be.

  paper_sgd's trace is the step itself (w <- w + v), optax_sgd's is in gradient units
  (w <- w - lr v): v_optax = -v_paper / lr, exact for a constant learning rate, with lr the one
  of the last step. A zero learning rate leaves nothing to divide by.
  """
  if saved_optimizer == optimizer:
    return 1.0
  if not learning_rate:
    return None
  return {('paper_sgd', 'optax_sgd'): -1.0 / learning_rate,
          ('optax_sgd', 'paper_sgd'): -learning_rate}[(saved_optimizer, optimizer)]


@dataclasses.dataclass
class Transfer:
  """What `transfer_state` took over from the saved state and what it started fresh."""
  momentum_carried: list[str] = dataclasses.field(default_factory=list)  # Parameter names.
  momentum_reset: list[str] = dataclasses.field(default_factory=list)  # Fresh (zero) momentum.
  momentum_dropped: list[str] = dataclasses.field(default_factory=list)  # No momentum any more.
  other_carried: list[str] = dataclasses.field(default_factory=list)  # E.g. 'count'.
  other_reset: list[str] = dataclasses.field(default_factory=list)


def transfer_state(saved: Any, fresh: Any, scale: float | None,
                   reset_params: frozenset[str] = frozenset()) -> tuple[Any, Transfer]:
  """`fresh` (a new optimizer's initial state) with what `saved` (another layout's) still fits.

  A momentum trace is matched by parameter and multiplied by `scale` (None: not carried); every
  other leaf (step counters, the injected learning rate) by its full name. Leaves without a
  match of the same shape and dtype, and the momentum of `reset_params`, keep their fresh value.
  """
  saved_momentum = momentum(saved)
  saved_leaves = dict(trees.flatten(saved))
  report = Transfer()

  def fits(old, new) -> bool:
    return old is not None and old.shape == new.shape and old.dtype == new.dtype

  def take(path, new):
    name = trees.path_name(path)
    param = _momentum_of(name)
    if param is None:
      old = saved_leaves.get(name)
      (report.other_carried if fits(old, new) else report.other_reset).append(name)
      return old if fits(old, new) else new
    old = saved_momentum.get(param)
    if scale is None or param in reset_params or not fits(old, new):
      report.momentum_reset.append(param)
      return new
    report.momentum_carried.append(param)
    return old if scale == 1.0 else (old * scale).astype(new.dtype)

  state = jax.tree_util.tree_map_with_path(take, fresh)
  report.momentum_dropped = sorted(set(saved_momentum) - set(momentum(state)))
  return state, report
