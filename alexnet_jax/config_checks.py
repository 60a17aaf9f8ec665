"""Checks a config before any compute starts; each problem becomes a one-line `UserError`."""

import ml_collections

from alexnet_jax import data, param_rules, parallel, registry
from alexnet_jax.errors import UserError

OPTIMIZERS = ('paper_sgd', 'optax_sgd')
LR_SCHEDULES = ('plateau', 'step', 'cosine', 'constant')
NAN_POLICIES = ('stop', 'skip')


def _require(condition: bool, message: str) -> None:
  if not condition:
    raise UserError(message)


def _one_of(config: ml_collections.ConfigDict, key: str, choices, prefix: str = 'config') -> None:
  value = config[key]
  _require(value in choices,
           f'{prefix}.{key}={value!r} is unknown; expected one of {", ".join(map(str, choices))}.')


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises UserError naming the key and the fix for the first invalid value."""
  for key in ('batch_size', 'eval_batch_size', 'log_every_steps', 'eval_every_steps',
              'checkpoint_every_steps', 'num_train_steps', 'num_eval_steps', 'seed',
              'max_checkpoints_to_keep', 'plateau_patience', 'plateau_max_reductions'):
    _require(isinstance(config[key], int) and not isinstance(config[key], bool),
             f'config.{key}={config[key]!r} must be a whole number.')
  for key in ('batch_size', 'eval_batch_size', 'log_every_steps', 'eval_every_steps',
              'checkpoint_every_steps', 'max_checkpoints_to_keep', 'plateau_patience'):
    _require(config[key] > 0, f'config.{key}={config[key]} must be positive.')
  for key in ('num_train_steps', 'num_eval_steps'):
    _require(config[key] == -1 or config[key] > 0,
             f'config.{key}={config[key]} must be positive, or -1 for the whole '
             f'{"training (num_epochs)" if key == "num_train_steps" else "validation split"}.')
  _one_of(config, 'dataset', data.DATASETS)
  _require(config.learning_rate > 0,
           f'config.learning_rate={config.learning_rate} must be positive (the paper uses 0.01).')
  _require(0 <= config.momentum < 1, f'config.momentum={config.momentum} must be in [0, 1).')
  _require(config.weight_decay >= 0, f'config.weight_decay={config.weight_decay} must be >= 0.')
  _require(config.num_train_steps > 0 or config.num_epochs > 0,
           'config.num_epochs must be positive when config.num_train_steps is -1.')
  _one_of(config, 'optimizer', OPTIMIZERS)
  _one_of(config, 'lr_schedule', LR_SCHEDULES)
  if config.lr_schedule == 'step':
    every, factor = config.get('lr_step_every_steps', 0), config.get('lr_step_factor', 0.1)
    _require(isinstance(every, int) and every >= 0,
             f'config.lr_step_every_steps={every!r} must be a whole number of steps, or 0 to use '
             'config.lr_step_epochs.')
    _require(0 < factor <= 1, f'config.lr_step_factor={factor} must be in (0, 1] (Caffe: 0.1).')
    epochs = tuple(config.lr_step_epochs)
    _require(every or (all(e > 0 for e in epochs) and list(epochs) == sorted(set(epochs))),
             f'config.lr_step_epochs={epochs} must be increasing positive epochs, e.g. (30, 60).')
  param_rules.parse(config.get('param_rules'))  # Raises UserError for a malformed rule.
  _require(config.plateau_max_reductions >= 0,
           f'config.plateau_max_reductions={config.plateau_max_reductions} must be >= 0.')
  _require(0 <= config.stop_at_train_error <= 1,
           f'config.stop_at_train_error={config.stop_at_train_error} must be in [0, 1] (0: off).')
  _one_of(config, 'nan_policy', NAN_POLICIES)
  _require(config.grad_clip_norm >= 0,
           f'config.grad_clip_norm={config.grad_clip_norm} must be >= 0 (0 turns clipping off).')
  for axis in ('data', 'model'):
    size = config.mesh[axis]
    _require(isinstance(size, int) and (size == -1 or size > 0),
             f'config.mesh.{axis}={size!r} must be a positive device count, or -1 to fill.')

  _one_of(config, 'kernels', parallel.KERNELS)
  model = registry.create_model(config.model)  # The module checks its own fields.
  size, smallest = config.input.image_size, model.min_input_size()
  _require(size >= smallest, f'config.input.image_size={size} is too small for the '
           f'{config.model.name} model as configured; use at least {smallest}.')
