"""AlexNet against the paper's numbers and an independent grouped-convolution reference."""

import math

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from alexnet_jax import models
from tests.conftest import optimized

PAPER_PARAMS = 60_965_224
pytestmark = pytest.mark.accelerator


def _init(model, size=227, channels=3):
  return model.init(jax.random.key(0), jnp.zeros((1, size, size, channels)))['params']


def test_paper_parameter_count():
  params = jax.eval_shape(lambda: _init(models.AlexNet()))
  assert sum(math.prod(p.shape) for p in jax.tree.leaves(params)) == PAPER_PARAMS


def test_ungrouped_and_torchvision_parameter_counts():
  # docs/paper.md, Counts: the same channels without groups would be 62,378,344, which the
  # two-tower layout cannot express; torchvision's single-tower variant has 61,100,840 parameters.
  model = models.AlexNet(towers=1, conv_features=(64, 192, 384, 256, 256), conv1_padding=2)
  params = jax.eval_shape(lambda: _init(model, 224))
  assert sum(math.prod(p.shape) for p in jax.tree.leaves(params)) == 61_100_840


def test_layer_output_shapes_at_227():
  model = models.AlexNet()
  _, variables = jax.eval_shape(lambda: model.init_with_output(
      jax.random.key(0), jnp.zeros((2, 227, 227, 3)), capture_intermediates=True))
  out = {k: v['__call__'][0] for k, v in variables['intermediates'].items() if k != '__call__'}
  assert [o.shape for o in out['conv1']] == [(2, 55, 55, 48)] * 2
  assert [o.shape for o in out['conv2']] == [(2, 27, 27, 128)] * 2
  assert [o.shape for o in out['conv3']] == [(2, 13, 13, 192)] * 2
  assert [o.shape for o in out['conv5']] == [(2, 13, 13, 128)] * 2
  assert [o.shape for o in out['fc6']] == [(2, 2048)] * 2
  assert out['fc8'].shape == (2, 1000)


@pytest.mark.parametrize('k,n,alpha,beta', [(2.0, 5, 1e-4, 0.75), (1.0, 3, 0.5, 0.6)])
def test_lrn_matches_tensorflow(k, n, alpha, beta):
  x = np.random.default_rng(0).normal(size=(2, 5, 5, 16)).astype(np.float32) * 30
  expected = tf.nn.local_response_normalization(x, depth_radius=n // 2, bias=k, alpha=alpha,
                                                beta=beta).numpy()
  got = models.local_response_norm(jnp.asarray(x), k=k, n=n, alpha=alpha, beta=beta)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_lrn_alpha_divided_by_n_is_pytorchs_convention():
  x = np.random.default_rng(1).normal(size=(1, 2, 2, 7)).astype(np.float32) * 50
  # PyTorch's nn.LocalResponseNorm(size=5, alpha, beta, k), written out by hand.
  squares = np.pad(x ** 2, ((0, 0), (0, 0), (0, 0), (2, 2)))
  window_sum = sum(squares[..., i:i + 7] for i in range(5))
  expected = x / (2.0 + 1e-4 / 5 * window_sum) ** 0.75
  got = models.local_response_norm(jnp.asarray(x), alpha_divided_by_n=True)
  np.testing.assert_allclose(got, expected, rtol=1e-5)


# --- An independent reference: the textbook single-device AlexNet with grouped convolutions. ---

def _grouped(kernel):
  """(T, kh, kw, cin, cout) tower kernels -> one (kh, kw, cin, T*cout) grouped-conv kernel."""
  return jnp.concatenate(list(kernel), axis=-1)


def _conv(x, kernel, bias, stride, pad, groups):
  y = jax.lax.conv_general_dilated(x, kernel, (stride, stride), ((pad, pad), (pad, pad)),
                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                   feature_group_count=groups,
                                   precision=jax.lax.Precision.HIGHEST)
  return y + bias.reshape(-1)


def _lrn_reference(x, towers, scope):
  def tf_lrn(v):
    return tf.nn.local_response_normalization(np.asarray(v), 2, 2.0, 1e-4, 0.75).numpy()
  if scope == 'across_towers' or towers == 1:
    return tf_lrn(x)
  return np.concatenate([tf_lrn(part) for part in np.split(np.asarray(x), towers, -1)], -1)


def reference_forward(params, x, *, towers=2, activation='relu', lrn=True,
                      lrn_scope='per_tower', pooling='overlapping', conv1_padding=0):
  act = {'relu': jax.nn.relu, 'tanh': jnp.tanh}[activation]
  window, stride = models.POOLINGS[pooling]
  pool = lambda v: jax.lax.reduce_window(v, -jnp.inf, jax.lax.max, (1, window, window, 1),
                                         (1, stride, stride, 1), 'VALID')
  norm = (lambda v: _lrn_reference(v, towers, lrn_scope)) if lrn else (lambda v: v)
  p = params
  h = pool(norm(act(_conv(x, _grouped(p['conv1']['kernel']), p['conv1']['bias'], 4,
                          conv1_padding, 1))))
  h = pool(norm(act(_conv(h, _grouped(p['conv2']['kernel']), p['conv2']['bias'], 1, 2, towers))))
  h = act(_conv(h, _grouped(p['conv3']['kernel']), p['conv3']['bias'], 1, 1, 1))
  h = act(_conv(h, _grouped(p['conv4']['kernel']), p['conv4']['bias'], 1, 1, towers))
  h = pool(act(_conv(h, _grouped(p['conv5']['kernel']), p['conv5']['bias'], 1, 1, towers)))
  h = h.reshape(h.shape[0], -1)
  h = act(h @ _grouped(p['fc6']['kernel']) + p['fc6']['bias'].reshape(-1))
  h = act(h @ _grouped(p['fc7']['kernel']) + p['fc7']['bias'].reshape(-1))
  fc8 = jnp.concatenate(list(p['fc8']['kernel']), axis=0)  # Tower row blocks, stacked.
  return h @ fc8 + p['fc8']['bias']


SMALL = dict(num_classes=7, conv_features=(8, 16, 24, 24, 16), fc_features=(32, 32),
             weight_init='he')
SWITCHES = [
    {},
    {'activation': 'tanh'},
    {'lrn': False},
    {'lrn_scope': 'across_towers'},
    {'pooling': 'non_overlapping'},
    {'towers': 1},
    {'conv1_padding': 2},
]


@pytest.mark.parametrize('switch', SWITCHES, ids=lambda s: ','.join(f'{k}={v}' for k, v in
                                                                  s.items()) or 'paper')
def test_forward_matches_grouped_conv_reference(switch):
  model = models.AlexNet(**SMALL, **switch)
  x = jax.random.normal(jax.random.key(1), (2, 67, 67, 3)) * 20  # Large enough for LRN to act.
  params = _init(model, 67)
  got = model.apply({'params': params}, x)
  expected = reference_forward(params, x, **switch)
  np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-4)


def test_switches_change_the_output():
  x = jax.random.normal(jax.random.key(1), (2, 67, 67, 3)) * 20
  base = models.AlexNet(**SMALL)
  params = _init(base, 67)
  base_out = base.apply({'params': params}, x)
  for switch in SWITCHES[1:5]:  # Same parameter shapes, different computation.
    out = models.AlexNet(**SMALL, **switch).apply({'params': params}, x)
    assert not np.allclose(out, base_out, atol=1e-4), switch


def test_two_towers_see_each_other_only_at_conv3_and_fc():
  # Perturbing tower 1's conv2 kernel must leave tower 0's conv2 output unchanged.
  model = models.AlexNet(**SMALL)
  x = jax.random.normal(jax.random.key(2), (1, 67, 67, 3))
  params = flax.core.unfreeze(_init(model, 67))
  outputs = lambda p: model.apply({'params': p}, x, capture_intermediates=True)[1][
      'intermediates']
  before = outputs(params)
  params['conv2']['kernel'] = params['conv2']['kernel'].at[1].add(1.0)
  after = outputs(params)
  np.testing.assert_array_equal(before['conv2']['__call__'][0][0], after['conv2']['__call__'][0][0])
  assert not np.allclose(before['conv2']['__call__'][0][1], after['conv2']['__call__'][0][1])
  assert not np.allclose(before['conv3']['__call__'][0][0], after['conv3']['__call__'][0][0])


def _paper_size_init(model):
  """`_init` at 227x227, jitted with the optimisations on: 2 s instead of 5 s eager."""
  with optimized():
    return jax.jit(lambda key: _init(model))(jax.random.key(0))


def test_paper_init():
  params = _paper_size_init(models.AlexNet(weight_init='paper'))
  for name in ('conv1', 'conv3', 'fc6'):
    assert abs(float(jnp.std(params[name]['kernel'])) - 0.01) < 5e-4
  for name, bias in [('conv1', 0), ('conv2', 1), ('conv3', 0), ('conv4', 1), ('conv5', 1),
                     ('fc6', 1), ('fc7', 1), ('fc8', 0)]:
    np.testing.assert_array_equal(params[name]['bias'], bias)


def test_he_init_scales_with_fan_in():
  params = _paper_size_init(models.AlexNet(weight_init='he'))
  # A unit's inputs: conv2 reads its own tower's 48 maps; fc8 sums both towers' 2,048 features.
  for name, fan_in in [('conv1', 11 * 11 * 3), ('conv2', 5 * 5 * 48), ('fc7', 4096),
                       ('fc8', 4096)]:
    std = float(jnp.std(params[name]['kernel']))
    assert abs(std - math.sqrt(2 / fan_in)) < 0.05 * math.sqrt(2 / fan_in)
    np.testing.assert_array_equal(params[name]['bias'], 0)


@pytest.mark.parametrize('scheme', sorted(models.WEIGHT_INITS))
def test_parameters_are_drawn_as_the_libraries_initializers_draw_them(scheme):
  # The kernels are drawn flat and shaped (compiles in a tenth of the time): the values must be
  # what flax's initializers and jax.random give for the shaped draw, so seeds keep their runs.
  # conv2's 5-D kernel; fc8's 3-D one, whose fan-in ('he', 'pytorch') sums both towers.
  key, bias_key = jax.random.key(7), jax.random.key(8)
  for layer, shape, summed_towers in (('conv2', (2, 5, 5, 48, 64), 1), ('fc8', (2, 576, 100), 2)):
    std, bias = models.WEIGHT_INITS[scheme][layer]
    fan_in = math.prod(shape[1:-1])
    bound = (summed_towers * fan_in) ** -0.5
    if std is None:
      reference = flax.linen.initializers.variance_scaling(
          2.0 / summed_towers, 'fan_in', 'normal', in_axis=-2, out_axis=-1, batch_axis=(0,))
    elif std == models.FAN_IN_UNIFORM:
      reference = lambda key, shape: jax.random.uniform(key, shape, minval=-bound, maxval=bound)
    else:
      reference = flax.linen.initializers.normal(std)
    kernel_init, bias_init = models._initializers(scheme, layer, summed_towers)
    drawn = lambda init, *args: jax.jit(init, static_argnums=range(1, 1 + len(args)))(key, *args)
    np.testing.assert_array_equal(drawn(kernel_init, shape), drawn(reference, shape),
                                  err_msg=f'{scheme} {layer}')
    biases = jax.jit(bias_init, static_argnums=(1, 2))(bias_key, shape[-1:], fan_in)
    if bias == models.FAN_IN_UNIFORM:
      expected = jax.jit(lambda k: jax.random.uniform(k, shape[-1:], minval=-fan_in ** -0.5,
                                                      maxval=fan_in ** -0.5))(bias_key)
    else:
      expected = np.full(shape[-1:], bias, np.float32)
    np.testing.assert_array_equal(biases, expected, err_msg=f'{scheme} {layer} bias')


@pytest.mark.parametrize('placement', ['after', 'before'])
def test_dropout(placement):
  x = jax.random.normal(jax.random.key(3), (4, 67, 67, 3))
  model = models.AlexNet(**SMALL, dropout_placement=placement)
  params = _init(model, 67)
  rngs = {'dropout': jax.random.key(4)}
  eval_out = model.apply({'params': params}, x)
  no_drop = models.AlexNet(**SMALL, dropout_rate=0.0).apply({'params': params}, x, train=True,
                                                             rngs=rngs)
  np.testing.assert_allclose(no_drop, eval_out, rtol=1e-6)
  drop = model.apply({'params': params}, x, train=True, rngs=rngs)
  assert not np.allclose(drop, eval_out, atol=1e-4)


def test_dropout_rate_is_the_fraction_dropped():
  model = models.AlexNet(**SMALL, dropout_rate=0.5)
  xs = (jnp.ones((64, 1000)),)
  out = model.bind({}, rngs={'dropout': jax.random.key(0)})._dropout(xs, train=True)[0]
  assert abs(float(jnp.mean(out == 0)) - 0.5) < 0.01
  np.testing.assert_allclose(np.unique(out), [0.0, 2.0])


def test_num_classes_and_input_size():
  model = models.AlexNet(**{**SMALL, 'num_classes': 3})
  for size in (67, 99):
    params = _init(model, size, channels=1)
    assert model.apply({'params': params}, jnp.zeros((2, size, size, 1))).shape == (2, 3)


def _dense_calls(model, params, x, train):
  """{layer: (its input towers, its output)} of fc6, fc7 and fc8 in one forward pass."""
  calls = {}

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name == '__call__' and context.module.name in ('fc6', 'fc7', 'fc8'):
      calls[context.module.name] = (args[0], out)
    return out

  with flax.linen.intercept_methods(record):
    model.apply({'params': params}, x, train=train, rngs={'dropout': jax.random.key(5)})
  return calls


# Which layers' inputs dropout touches at rate 0.5 (docs/paper.md, "Dropout (§4.2)"): the paper
# drops fc6's and fc7's outputs, i.e. the inputs of fc7 and fc8; torchvision drops the inputs of fc6
# and fc7. The nearest wrong models (no dropout after fc7, or one layer off) fail here.
@pytest.mark.parametrize('placement,dropped_inputs', [('after', {'fc7', 'fc8'}),
                                                      ('before', {'fc6', 'fc7'})])
def test_dropout_masks_exactly_the_inputs_of_the_right_layers(placement, dropped_inputs):
  model = models.AlexNet(**SMALL, dropout_placement=placement)
  x = jax.random.normal(jax.random.key(3), (8, 67, 67, 3))
  params = _init(model, 67)
  clean = _dense_calls(model, params, x, train=False)
  dropped = _dense_calls(model, params, x, train=True)
  previous = {'fc7': 'fc6', 'fc8': 'fc7'}
  for layer in ('fc6', 'fc7', 'fc8'):
    # What the layer would read without dropout: the ReLU of the previous layer's output (its
    # towers side by side), or conv5's pooled features for fc6 (the eval pass's input).
    if layer == 'fc6':
      undropped = np.concatenate([np.asarray(t) for t in clean['fc6'][0]], -1)
    else:
      undropped = np.maximum(np.concatenate([np.asarray(t) for t in dropped[previous[layer]][1]],
                                            -1), 0)
    got = np.concatenate([np.asarray(t) for t in dropped[layer][0]], -1)
    if layer not in dropped_inputs:
      np.testing.assert_allclose(got, undropped, rtol=1e-6, err_msg=f'{placement}: {layer} input')
      continue
    # Inverted dropout at rate 0.5: each unit is either 0 or twice its value, about half are 0.
    live = undropped != 0
    kept = np.isclose(got, 2 * undropped, rtol=1e-5, atol=1e-6)
    assert np.all(kept | (got == 0)), f'{placement}: {layer} input is not 0 or 2x'
    fraction = 1 - kept[live].mean()
    assert 0.4 < fraction < 0.6, f'{placement}: {layer} input dropped {fraction:.2f}, not 0.5'
