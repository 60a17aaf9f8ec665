"""The Fig. 1 network (baselines.SmallCNN) selected by config.model.name='small_cnn'."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from alexnet_jax import baselines, config_checks, registry
from alexnet_jax.errors import UserError
from alexnet_jax.parallel import Layout
from tests.conftest import tiny_config


def _small_cnn_config(**overrides):
  return tiny_config(**{'model.name': 'small_cnn', 'input.image_size': 32, **overrides})


def test_layers_and_parameter_count_by_hand():
  """layers-conv-local-13pct.cfg on 32x32x3: two 5x5 convs of 64 (pools 32 -> 16 -> 8), two
  unshared 3x3 local layers of 32 with a kernel and a bias per position, fc10."""
  config = _small_cnn_config()
  config_checks.validate(config)
  model = registry.create_model(config.model, num_classes=10)
  params = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))['params']
  expected = {'conv1': 5 * 5 * 3 * 64 + 64, 'conv2': 5 * 5 * 64 * 64 + 64,
              'local3': 8 * 8 * (3 * 3 * 64 * 32 + 32), 'local4': 8 * 8 * (3 * 3 * 32 * 32 + 32),
              'fc10': 8 * 8 * 32 * 10 + 10}
  counts = {name: sum(int(np.prod(p.shape)) for p in jax.tree.leaves(layer))
            for name, layer in params.items()}
  assert counts == expected
  # The layer file's initW: conv1's weights are 100x smaller than conv2's; biases start at 0.
  assert float(params['conv1']['kernel'].std()) == pytest.approx(1e-4, rel=0.1)
  assert float(params['local3']['kernel'].std()) == pytest.approx(0.04, rel=0.05)
  assert not any(np.any(params[n]['bias']) for n in params)


def test_ceil_mode_pool_keeps_the_overhanging_window():
  """cuda-convnet's pool output side is ceil((n - 3) / 2) + 1: 6 -> 3 and 32 -> 16, where a
  VALID pool gives 2 and 15 and never sees the last row and column."""
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 6, 6, 3)), jnp.float32)
  x = x.at[0, 5, 5, 1].set(1000.0)  # Seen only by the overhanging last window.
  y = baselines.ceil_max_pool(x, 3, 2, Layout())
  assert y.shape == (2, 3, 3, 3) and float(y[0, 2, 2, 1]) == 1000.0
  reference = lax.reduce_window(x, -jnp.inf, lax.max, (1, 3, 3, 1), (1, 2, 2, 1),
                                ((0, 0), (0, 1), (0, 1), (0, 0)))
  np.testing.assert_array_equal(y, reference)
  assert baselines.ceil_max_pool(jnp.zeros((1, 32, 32, 1)), 3, 2, Layout()).shape == (1, 16, 16, 1)
  assert baselines.ceil_max_pool(jnp.zeros((1, 5, 5, 1)), 3, 2, Layout()).shape == (1, 2, 2, 1)


def test_local_layer_is_a_convolution_with_one_kernel_per_position():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 6, 6, 4)), jnp.float32)
  layer = baselines.LocallyConnected(features=5, kernel_size=3)
  params = layer.init(jax.random.key(0), x)['params']
  assert params['kernel'].shape == (6, 6, 3, 3, 4, 5) and params['bias'].shape == (6, 6, 5)
  # Every position holding the same kernel: exactly a padded ('SAME') convolution.
  shared = jnp.asarray(rng.normal(size=(3, 3, 4, 5)), jnp.float32)
  bias = jnp.asarray(rng.normal(size=(5,)), jnp.float32)
  tiled = {'kernel': jnp.broadcast_to(shared, (6, 6, 3, 3, 4, 5)),
           'bias': jnp.broadcast_to(bias, (6, 6, 5))}
  conv = lax.conv_general_dilated(x, shared, (1, 1), 'SAME',
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC')) + bias
  np.testing.assert_allclose(layer.apply({'params': tiled}, x), conv, rtol=1e-5, atol=1e-5)
  # A different kernel at position (2, 4) changes that output position and no other.
  changed = dict(tiled, kernel=tiled['kernel'].at[2, 4].add(1.0))
  difference = np.abs(np.asarray(layer.apply({'params': changed}, x) - conv)).sum(axis=(0, 3))
  assert difference[2, 4] > 1.0 and np.count_nonzero(difference > 1e-4) == 1


def test_activation_switch_changes_the_output():
  images = jax.random.normal(jax.random.key(1), (2, 32, 32, 3)) * 60.0
  outputs = {}
  for activation in ('relu', 'tanh'):
    model = registry.create_model(_small_cnn_config(**{'model.activation': activation}).model, 10)
    params = model.init(jax.random.key(0), images)['params']
    outputs[activation] = model.apply({'params': params}, images)
    assert outputs[activation].shape == (2, 10)
  assert not np.allclose(outputs['relu'], outputs['tanh'])


def test_cpu_kernels_give_xlas_gradients():
  """The oneDNN convolutions and hand-written pool gradient ('cpu') against plain lax ('xla'),
  at weights of about fan-in scale. (At the layer file's initW, conv1 std 1e-4, the two conv layers'
  kernel gradients at init differ by up to 2% of their largest element, XLA's being within 1e-6
  of a float64 reference: summation order under cancellation, far below minibatch noise.)"""
  images = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
  models = {k: registry.create_model(_small_cnn_config().model, 10, Layout(kernels=k))
            for k in ('xla', 'cpu')}
  params = models['xla'].init(jax.random.key(0), images)['params']
  keys = iter(jax.random.split(jax.random.key(2), len(jax.tree.leaves(params))))
  # Every weight and bias redrawn at std 0.05, about fan-in scale for each of these layers.
  params = jax.tree.map(lambda a: 0.05 * jax.random.normal(next(keys), a.shape), params)
  grads = {k: jax.jit(jax.grad(lambda p, m=m: jnp.sum(m.apply({'params': p}, images) ** 2)))(
      params) for k, m in models.items()}
  for a, b in zip(jax.tree.leaves(grads['xla']), jax.tree.leaves(grads['cpu'])):
    np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-4 * float(jnp.abs(a).max()))


def test_smallest_input_keeps_every_map_non_empty():
  model = baselines.SmallCNN(features=(4, 4, 4, 4), num_classes=3)
  assert model.min_input_size() == 4  # 4 -> pools 2 -> 1; 3 -> 1 -> 0.
  fc10_rows = lambda size: jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(
      (1, size, size, 3)))['params']['fc10']['kernel'].shape[0]
  assert fc10_rows(4) == 4 and fc10_rows(3) == 0  # 1x1x4 features, or none at all.
  with pytest.raises(UserError, match='image_size'):
    config_checks.validate(_small_cnn_config(**{'input.image_size': 3}))
  config_checks.validate(_small_cnn_config(**{'input.image_size': 4}))


def test_validation_checks_the_small_cnn_fields_not_alexnets():
  config_checks.validate(_small_cnn_config(**{'input.image_size': 28}))  # Too small for AlexNet.
  with pytest.raises(UserError, match='config.model.features'):
    config_checks.validate(_small_cnn_config(**{'model.features': (64, 64, 32, 0)}))
  with pytest.raises(UserError, match='config.model.features'):
    config_checks.validate(_small_cnn_config(**{'model.features': (32, 32, 64)}))
