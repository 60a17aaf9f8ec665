"""Checks a config before any compute starts; each problem becomes a one-line `UserError`."""

import ml_collections

from alexnet_jax import data, models
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


def min_input_size(model_config: ml_collections.ConfigDict) -> int:
  """Smallest square input for which every layer still has a non-empty output."""
  window, stride = models.POOLINGS[model_config.pooling]
  size = window  # After pool5 at least 1 pixel: conv5 output >= window.
  size = (size - 1) * stride + window  # pool2 input (conv2 output, conv3-5 keep the size).
  size = (size - 1) * stride + window  # pool1 input (conv1 output).
  return (size - 1) * 4 + 11 - 2 * model_config.get('conv1_padding', 0)  # conv1 11x11/4.


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
    epochs = tuple(config.lr_step_epochs)
    _require(all(e > 0 for e in epochs) and list(epochs) == sorted(set(epochs)),
             f'config.lr_step_epochs={epochs} must be increasing positive epochs, e.g. (30, 60).')
  _require(config.plateau_max_reductions >= 0,
           f'config.plateau_max_reductions={config.plateau_max_reductions} must be >= 0.')
  _one_of(config, 'nan_policy', NAN_POLICIES)
  _require(config.grad_clip_norm >= 0,
           f'config.grad_clip_norm={config.grad_clip_norm} must be >= 0 (0 turns clipping off).')
  for axis in ('data', 'model'):
    size = config.mesh[axis]
    _require(isinstance(size, int) and (size == -1 or size > 0),
             f'config.mesh.{axis}={size!r} must be a positive device count, or -1 to fill.')

  model = config.model
  _one_of(model, 'name', models.MODEL_NAMES, 'config.model')
  if model.get('name', 'alexnet') == 'small_cnn':
    _validate_small_cnn(config)
    return
  if model.get('name', 'alexnet') == 'lenet5':
    _one_of(model, 'lenet_activation', tuple(models.ACTIVATIONS), 'config.model')
    _require(config.input.image_size == 32,
             f'config.input.image_size={config.input.image_size}: LeNet-5 takes 32x32 inputs.')
    return
  _one_of(model, 'activation', tuple(models.ACTIVATIONS), 'config.model')
  _one_of(model, 'pooling', tuple(models.POOLINGS), 'config.model')
  _one_of(model, 'lrn_scope', models.LRN_SCOPES, 'config.model')
  _one_of(model, 'init', models.INITS, 'config.model')
  _one_of(model, 'dtype', ('float32', 'bfloat16'), 'config.model')
  _require(model.towers in (1, 2), f'config.model.towers={model.towers} must be 1 or 2.')
  _require(isinstance(model.lrn_n, int) and model.lrn_n > 0,
           f'config.model.lrn_n={model.lrn_n!r} must be a positive window size (the paper: 5).')
  _require(0 <= model.dropout_rate < 1,
           f'config.model.dropout_rate={model.dropout_rate} must be in [0, 1).')
  widths = tuple(model.conv_features) + tuple(model.fc_features)
  _require(len(model.conv_features) == 5 and len(model.fc_features) == 2,
           'config.model.conv_features needs 5 widths and config.model.fc_features 2.')
  _require(all(w > 0 and w % model.towers == 0 for w in widths),
           f'config.model widths {widths} must be positive multiples of towers={model.towers}.')
  size = config.input.image_size
  smallest = min_input_size(model)
  _require(size >= smallest, f'config.input.image_size={size} is too small for AlexNet with '
           f'{model.pooling} pooling; use at least {smallest}.')


def _validate_small_cnn(config: ml_collections.ConfigDict) -> None:
  """The Fig. 1 network (models.SmallCNN): activation, widths and an input it can pool."""
  model = config.model
  _one_of(model, 'activation', tuple(models.ACTIVATIONS), 'config.model')
  _one_of(model, 'dtype', ('float32', 'bfloat16'), 'config.model')
  widths = tuple(model.get('small_cnn_features', (32, 32, 64)))
  _require(len(widths) > 0 and all(w > 0 for w in widths),
           f'config.model.small_cnn_features={widths} must be positive widths.')
  _require(config.input.image_size >= 1, 'config.input.image_size must be positive.')
