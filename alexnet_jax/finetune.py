"""Transfer learning: start from a trained checkpoint, replace the classifier, freeze layers.

Configured by a `config.finetune` block (see configs/finetune_fashion_mnist.py):
  init_from: workdir (latest step) or DIR/checkpoints/STEP of the trained source model;
  reinit:    layers that keep their fresh initialisation (the new classifier, e.g. ('fc8',)),
             because their shape or meaning changes with the new classes;
  freeze:    layers whose parameters never change (their updates are exactly zero).
"""

from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections
import optax

from alexnet_jax import checkpoint, data, registry, trained_model
from alexnet_jax.errors import UserError


def frozen_layers(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  block = config.get('finetune')
  return tuple(block.get('freeze') or ()) if block else ()


def with_frozen_layers(make_optimizer: Callable[[Any], optax.GradientTransformation],
                       frozen: Sequence[str]) -> Callable[[Any], optax.GradientTransformation]:
  """Wraps an optimizer factory so that the layers named in `frozen` get zero updates.

  The wrapped factory still takes the learning rate, so optax.inject_hyperparams goes outside
  and the trainer sets the learning rate exactly as without freezing. Weight decay sits inside
  the trainable branch, so it does not touch frozen layers either.
  """
  frozen = tuple(frozen)

  def labels(params):
    unknown = sorted(set(frozen) - set(params))
    if unknown:
      raise UserError(f'config.finetune.freeze names {unknown}, which the model does not have; '
                      f'its layers are {sorted(params)}.')
    return {layer: jax.tree.map(lambda _, f=(layer in frozen): 'frozen' if f else 'trainable',
                                layer_params)
            for layer, layer_params in params.items()}

  def make(learning_rate):
    return optax.multi_transform(
        {'trainable': make_optimizer(learning_rate), 'frozen': optax.set_to_zero()}, labels)
  return make


def pretrained_params(config: ml_collections.ConfigDict, fresh_params: Any) -> Any:
  """`fresh_params` with every layer not in `config.finetune.reinit` taken from `init_from`."""
  block = config.finetune
  workdir, step = trained_model.split_checkpoint_path(block.init_from)
  source_config = trained_model.load_config(workdir, step)
  source_model = registry.create_model(source_config.model,
                                       len(trained_model.class_names(source_config)))
  source_shape = data.image_shape(source_config)
  source = checkpoint.restore_params(f'{workdir}/checkpoints',
                                     trained_model.abstract_params(source_model, source_shape),
                                     step)
  reinit = set(block.get('reinit') or ())
  params = {}
  for layer, fresh in fresh_params.items():
    if layer in reinit:
      params[layer] = fresh
      continue
    if layer not in source:
      raise UserError(f'{block.init_from} has no layer {layer!r}; list it in '
                      'config.finetune.reinit to train it from scratch.')
    shapes = jax.tree.map(lambda a: a.shape, (source[layer], fresh))
    if shapes[0] != shapes[1]:
      raise UserError(f'layer {layer!r} of {block.init_from} has shapes {shapes[0]}, this config '
                      f'needs {shapes[1]}; list it in config.finetune.reinit.')
    params[layer] = source[layer]
  return params
