"""Checks a config before any compute starts; each problem becomes a one-line `UserError`."""

import ml_collections

from alexnet_jax import models
from alexnet_jax.errors import UserError

OPTIMIZERS = ('paper_sgd', 'optax_sgd')
LR_SCHEDULES = ('plateau', 'step', 'cosine', 'constant')


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
              'checkpoint_every_steps'):
    _require(config[key] > 0, f'config.{key}={config[key]} must be positive.')
  _require(config.learning_rate > 0,
           f'config.learning_rate={config.learning_rate} must be positive (the paper uses 0.01).')
  _require(0 <= config.momentum < 1, f'config.momentum={config.momentum} must be in [0, 1).')
  _require(config.weight_decay >= 0, f'config.weight_decay={config.weight_decay} must be >= 0.')
  _require(config.num_train_steps > 0 or config.num_epochs > 0,
           'config.num_epochs must be positive when config.num_train_steps is -1.')
  _one_of(config, 'optimizer', OPTIMIZERS)
  _one_of(config, 'lr_schedule', LR_SCHEDULES)

  model = config.model
  _one_of(model, 'name', models.MODEL_NAMES, 'config.model')
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
