"""LeNet-5: parameter count by hand, shapes, and training through the same runner."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax import baselines, config_checks, metrics, registry
from alexnet_jax.errors import UserError
from configs import lenet5
from tests.trained_helpers import train_tiny


@pytest.mark.parametrize('shape', [(5, 5, 6, 16), (400, 120)], ids=['conv', 'dense'])
def test_kernels_are_flax_default_init_drawn_flat(shape):
  """The kernels are drawn flat and shaped (a fraction of the compile time): the values must be
  flax's default lecun_normal's for the shaped draw, with the whole fan-in (5 * 5 * 6, 400)."""
  key = jax.random.key(5)
  drawn = lambda init: jax.jit(init, static_argnums=1)(key, shape)
  np.testing.assert_array_equal(drawn(baselines.lecun_normal),
                                drawn(nn.initializers.lecun_normal()))


def test_parameter_count_matches_hand_arithmetic():
  model = registry.create_model(lenet5.get_config().model, num_classes=10)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 1))))
  count = sum(math.prod(p.shape) for p in jax.tree.leaves(params))
  # conv 5x5: 1->6, 6->16 (all C3 connections); dense 16*5*5->120->84->10, each with biases.
  by_hand = (6 * (5 * 5 * 1 + 1) + 16 * (5 * 5 * 6 + 1) + 120 * (16 * 5 * 5 + 1)
             + 84 * (120 + 1) + 10 * (84 + 1))
  assert by_hand == 61_706
  assert count == by_hand


def test_config_is_valid_and_other_sizes_are_rejected():
  config = lenet5.get_config()
  config_checks.validate(config)
  config.input.image_size = 28
  with pytest.raises(UserError, match='at least 32'):
    config_checks.validate(config)


def test_trains_with_the_same_runner(tmp_path):
  workdir = train_tiny(str(tmp_path), **{'model.name': 'lenet5', 'model.activation': 'tanh',
                                         'input.image_size': 32})
  rows = metrics.read_jsonl(f'{workdir}/metrics.jsonl')
  assert [r['step'] for r in rows if 'eval/top1_error' in r] == [2]
  assert all(math.isfinite(r['train/loss']) for r in rows if 'train/loss' in r)
