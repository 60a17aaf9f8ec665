"""Models by name: ``config.model.name`` picks the module, the other keys are its fields.

``create_model(config.model)`` is ``MODELS[name](**fields)``: a config key is a constructor field,
so every default lives once, in the module (``model_config(name)`` copies them into a config).
Each module class declares what the rest of the code looks up instead of re-deriving it: its
``conv_layers`` and ``fc_layers`` (parameter names; the model-parallel split, converters and
fine-tuning use them), its ``feature_layer`` (whose activation is the image feature) and
``min_input_size()``; its constructor validates its own fields.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import ml_collections

from alexnet_jax import baselines, models, parallel
from alexnet_jax.errors import UserError

MODELS: dict[str, type[nn.Module]] = {
    'alexnet': models.AlexNet,
    'small_cnn': baselines.SmallCNN,
    'lenet5': baselines.LeNet5,
}
_NOT_CONFIG = ('parent', 'name', 'layout')  # Module fields that are not config keys.


def _fields(module: type[nn.Module]) -> list[dataclasses.Field]:
  return [f for f in dataclasses.fields(module) if f.name not in _NOT_CONFIG]


def model_config(name: str, **overrides: Any) -> ml_collections.ConfigDict:
  """``config.model`` for model `name`: its name and every field at its default, then overrides."""
  config = ml_collections.ConfigDict({'name': name})
  for field in _fields(MODELS[name]):
    value = field.default
    config[field.name] = tuple(value) if isinstance(value, list) else value
  for key, value in overrides.items():
    config[key] = value
  return config


def create_model(model_config: ml_collections.ConfigDict, num_classes: int | None = None,
                 layout: parallel.Layout | None = None) -> nn.Module:
  """The module ``config.model`` describes, with `num_classes` outputs when given.

  `layout` (towers' placement and kernels) applies to tower models (AlexNet). Raises UserError
  naming the config key for an unknown model, an unknown key, or a value the module rejects.
  """
  fields = dict(model_config)
  name = fields.pop('name', 'alexnet')
  if name not in MODELS:
    raise UserError(f'config.model.name={name!r} is unknown; expected one of {", ".join(MODELS)}.')
  module = MODELS[name]
  known = {f.name for f in _fields(module)}
  unknown = sorted(set(fields) - known)
  if unknown:
    raise UserError(f'config.model.{unknown[0]} is not a field of the {name} model; its fields '
                    f'are {", ".join(sorted(known))}.')
  fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
  if num_classes:
    fields['num_classes'] = num_classes
  if layout is not None and 'layout' in {f.name for f in dataclasses.fields(module)}:
    fields['layout'] = layout
  try:
    return module(**fields)
  except ValueError as e:
    raise UserError(f'config.model.{e}') from e


def towers(model: nn.Module) -> int:
  """How many towers `model` has (1 for a model without towers)."""
  return getattr(model, 'towers', 1)


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: dict[str, Any]) -> ml_collections.ConfigDict:
  """A copy of `config` with each 'dotted.key' set to its value.

  Setting 'model.name' first replaces the whole model block by that model's defaults (another
  model has other fields); the other overrides then apply on top. A key the config does not have
  is added (e.g. a block only some data sets read), except in the model block, whose keys are the
  module's fields: there it raises UserError.
  """
  config = config.copy_and_resolve_references()
  config.unlock()
  overrides = dict(overrides)
  if 'model.name' in overrides:
    config.model = model_config(overrides.pop('model.name'))
  for key, value in overrides.items():
    *parents, leaf = key.split('.')
    target = config
    for parent in parents:
      target = target[parent]
    if parents == ['model'] and leaf not in target:
      raise UserError(f'config.{key} is not a field of the {target.name} model.')
    target[leaf] = value
  return config
