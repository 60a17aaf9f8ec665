"""The Fig. 1 network (models.SmallCNN) selected by config.model.name='small_cnn'."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax import config_checks, registry
from alexnet_jax.errors import UserError
from tests.conftest import tiny_config


def _small_cnn_config(**overrides):
  return tiny_config(**{'model.name': 'small_cnn', 'input.image_size': 32, **overrides})


def test_layers_and_parameter_count_by_hand():
  config = _small_cnn_config()
  config_checks.validate(config)
  model = registry.create_model(config.model, num_classes=10)
  params = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)))['params']
  # 5x5 convs of 32, 32, 64 kernels; three 3/2 ceil-mode pools: 32 -> 16 -> 8 -> 4.
  expected = {'conv1': 5 * 5 * 1 * 32 + 32, 'conv2': 5 * 5 * 32 * 32 + 32,
              'conv3': 5 * 5 * 32 * 64 + 64, 'fc': 4 * 4 * 64 * 10 + 10}
  counts = {name: sum(int(np.prod(p.shape)) for p in jax.tree.leaves(layer))
            for name, layer in params.items()}
  assert counts == expected


def test_activation_switch_changes_the_output():
  images = jax.random.normal(jax.random.key(1), (2, 32, 32, 1))
  outputs = {}
  for activation in ('relu', 'tanh'):
    model = registry.create_model(_small_cnn_config(**{'model.activation': activation}).model, 10)
    params = model.init(jax.random.key(0), images)['params']
    outputs[activation] = model.apply({'params': params}, images)
    assert outputs[activation].shape == (2, 10)
  assert not np.allclose(outputs['relu'], outputs['tanh'])


def test_validation_checks_the_small_cnn_fields_not_alexnets():
  config_checks.validate(_small_cnn_config(**{'input.image_size': 28}))  # Too small for AlexNet.
  with pytest.raises(UserError, match='config.model.features'):
    config_checks.validate(_small_cnn_config(**{'model.features': (32, 0)}))
