"""The fast kernels (alexnet_jax/ops.py) against the straightforward lax ops differentiated by JAX.

Tolerances: values and gradients agree to float32 rounding (1e-5 of the largest entry; 1e-4 for
the whole model's gradients): the fast paths reorder sums, so they are not bit-identical.
Max-pool routes gradients to exactly the same entries. The convolution tests run twice: on
oneDNN's kernels (built by `make setup` on Linux x86-64) and on XLA's (ALEXNET_JAX_ONEDNN=0).
"""

import platform

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax import models, onednn, ops, parallel, registry
from alexnet_jax.errors import UserError
from configs import default, imagenet
from tests.conftest import tiny_config

jax.config.update('jax_default_matmul_precision', 'highest')
RTOL = 1e-5
pytestmark = pytest.mark.accelerator  # On a GPU/TPU: the lax path there, ops.py's maths.


@pytest.fixture(params=['onednn', 'xla'])
def conv_backend(request, monkeypatch):
  if request.param == 'onednn' and jax.default_backend() != 'cpu':
    pytest.skip('oneDNN computes on the CPU backend only')
  monkeypatch.setenv('ALEXNET_JAX_ONEDNN', '1' if request.param == 'onednn' else '0')
  assert onednn.available() == (request.param == 'onednn'), onednn.status()
  return request.param


@pytest.fixture
def onednn_requested(monkeypatch):
  """ALEXNET_JAX_ONEDNN=1; True where oneDNN then runs (the CPU backend), for routing tests."""
  monkeypatch.setenv('ALEXNET_JAX_ONEDNN', '1')
  on_cpu = jax.default_backend() == 'cpu'
  assert onednn.available() == on_cpu, onednn.status()
  return on_cpu


def test_onednn_kernels_are_built_where_the_wheel_exists():
  if jax.default_backend() != 'cpu':
    assert not onednn.available(), onednn.status()  # Never on an accelerator's arrays.
  elif platform.system() == 'Linux' and platform.machine() == 'x86_64':
    assert onednn.available(), onednn.status()
  else:
    assert not onednn.available()


def _assert_close(actual, expected, rtol=RTOL):
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  scale = np.max(np.abs(expected))
  assert scale > 0
  np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * scale)


def _value_and_input_grad(fn, x, seed=1):
  @jax.jit  # One compilation instead of one per op.
  def run(x_):
    y, vjp = jax.vjp(fn, x_)
    cotangent = jax.random.normal(jax.random.key(seed), y.shape, y.dtype)
    return y, vjp(cotangent)[0]
  return run(x)


@pytest.mark.parametrize('shape', [(2, 5, 5, 7), (1, 3, 4, 16), (2, 3, 3, 32)])
@pytest.mark.parametrize('beta', [0.75, 0.6])
def test_fused_lrn_matches_reference(shape, beta, conv_backend):
  x = 3.0 * jax.random.normal(jax.random.key(0), shape)
  params = dict(k=2.0, n=5, alpha=0.05, beta=beta)  # A large alpha makes the window matter.
  fast = _value_and_input_grad(lambda v: ops.fused_lrn(v, *params.values()), x)
  ref = _value_and_input_grad(lambda v: ops.reference_lrn(v, **params), x)
  for a, b in zip(fast, ref):
    _assert_close(a, b)
  lowered = jax.jit(lambda v: ops.fused_lrn(v, *params.values())).lower(x).as_text()
  assert ('alexnet_jax_lrn_forward' in lowered) == (conv_backend == 'onednn' and
                                                    shape[-1] % 16 == 0)


@pytest.mark.parametrize('channels, on_onednn', [(24, False), (48, True), (64, True)])
def test_fused_lrn_runs_on_onednn_only_for_whole_blocks_of_channels(channels, on_onednn,
                                                                      onednn_requested):
  # The default config's conv1 towers (24) are faster on XLA's loop, the paper's (48) on oneDNN.
  x = jnp.zeros((2, 3, 3, channels))
  lowered = jax.jit(lambda v: ops.fused_lrn(v, 2.0, 5, 1e-4, 0.75)).lower(x).as_text()
  assert ('alexnet_jax_lrn_forward' in lowered) == (on_onednn and onednn_requested)



def test_fused_lrn_window_of_one_falls_back_and_even_windows_are_refused(conv_backend):
  # oneDNN 3.2 crashes building its NHWC LRN for a window of 1; XLA's loop computes it.
  x = 3.0 * jax.random.normal(jax.random.key(0), (2, 5, 5, 16))
  fast = _value_and_input_grad(lambda v: ops.fused_lrn(v, 2.0, 1, 0.05, 0.75), x)
  ref = _value_and_input_grad(lambda v: ops.reference_lrn(v, k=2.0, n=1, alpha=0.05, beta=0.75), x)
  for a, b in zip(fast, ref):
    _assert_close(a, b)
  with pytest.raises(ValueError, match='LRN window n=4 must be odd'):
    ops.fused_lrn(x, 2.0, 4, 0.05, 0.75)


def test_a_stale_kernel_library_falls_back_to_xla_and_says_to_rebuild(monkeypatch):
  import _ctypes  # pylint: disable=import-outside-toplevel
  # A shared library without the kernels' symbols, as a .so built from an older source would be.
  monkeypatch.setattr(onednn, 'LIBRARY_PATH', _ctypes.__file__)
  monkeypatch.setattr(onednn, '_registered', False)
  monkeypatch.setattr(onednn, '_load_error', '')
  monkeypatch.setenv('ALEXNET_JAX_ONEDNN', '1')
  assert not onednn.available()
  assert 'is out of date' in onednn.status() and 'make setup' in onednn.status()
  x = jnp.arange(2 * 9 * 9 * 8, dtype=jnp.float32).reshape(2, 9, 9, 8)
  np.testing.assert_array_equal(ops.max_pool(x, 3, 2), ops.reference_max_pool(x, 3, 2))

@pytest.mark.parametrize('channels', [16, 24, 40])
def test_fused_lrn_in_bfloat16_matches_float32(conv_backend, channels):
  # oneDNN's bfloat16 LRN backward is wrong in the last 16 + (count mod 16) channels of a count
  # that is not a multiple of 16 (0.20 of the largest gradient at 24, 0.15 at 40): XLA's loop.
  x = 3.0 * jax.random.normal(jax.random.key(0), (2, 5, 5, channels))
  cotangent = jax.random.normal(jax.random.key(1), x.shape)
  params = (2.0, 5, 0.05, 0.75)

  def value_and_grad(v, g):
    y, vjp = jax.vjp(lambda u: ops.fused_lrn(u, *params), v)
    return y, vjp(g.astype(v.dtype))[0]
  fast = value_and_grad(x.astype(jnp.bfloat16), cotangent)
  ref = value_and_grad(x, cotangent)
  for a, b in zip(fast, ref):
    assert a.dtype == jnp.bfloat16
    _assert_close(np.float32(a), b, rtol=2e-2)


def test_reference_lrn_matches_the_formula_by_hand():
  x = np.arange(1.0, 4.0, dtype=np.float32).reshape(1, 1, 1, 3)  # channels 1, 2, 3; n = 3
  expected = [1 / (2 + 0.1 * (1 + 4)) ** 0.5, 2 / (2 + 0.1 * 14) ** 0.5, 3 / (2 + 0.1 * 13) ** 0.5]
  got = ops.fused_lrn(jnp.asarray(x), 2.0, 3, 0.1, 0.5)
  np.testing.assert_allclose(np.ravel(got), expected, rtol=1e-6)


def test_max_pool_with_a_window_larger_than_the_input_is_empty(conv_backend):
  x = jnp.ones((1, 3, 3, 2))
  assert ops.max_pool(x, 4, 2).shape == (1, 0, 0, 2)
  assert jax.grad(lambda v: ops.max_pool(v, 4, 2).sum())(x).shape == x.shape


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
@pytest.mark.parametrize('window,stride', [(3, 2), (2, 2), (2, 3)])
def test_max_pool_matches_reference_including_ties(window, stride, dtype, conv_backend):
  # Integer-valued inputs have many ties: the gradient must still go to the first maximum only.
  # (2, 2) and (2, 3) leave the last row or column outside every window (oneDNN gets the rest).
  x = jnp.round(2.0 * jax.random.normal(jax.random.key(0), (2, 9, 7, 3))).astype(dtype)
  fast = _value_and_input_grad(lambda v: ops.max_pool(v, window, stride), x)
  ref = _value_and_input_grad(lambda v: ops.reference_max_pool(v, window, stride), x)
  np.testing.assert_array_equal(fast[0], ref[0])
  # Same routing (the same entries receive gradient); overlapping windows sum in another order.
  np.testing.assert_array_equal(fast[1] != 0, ref[1] != 0)
  np.testing.assert_allclose(np.float32(fast[1]), np.float32(ref[1]),
                             rtol=1e-6 if dtype == 'float32' else 1e-2)
  calls = jax.jit(lambda v: jax.vjp(lambda u: ops.max_pool(u, window, stride), v)[1](
      ops.max_pool(v, window, stride))).lower(x).as_text()
  assert ('alexnet_jax_max_pool_backward' in calls) == (conv_backend == 'onednn')


@pytest.mark.parametrize('size,kernel_size,stride,padding', [
    (23, 11, 4, 0),  # conv1's geometry, small.
    (20, 11, 4, 2),  # torchvision's padded conv1.
    (9, 3, 2, 1),
    (7, 3, 1, 1),  # Stride 1 keeps XLA's gradient.
    (8, 5, 1, 2),  # conv2's geometry, small.
    (26, 11, 4, 0),  # The last window skips the last rows: oneDNN sees negative padding.
    (1, 5, 1, 2),  # Kernel larger than the input: XLA's convolution (onednn.supports).
])
def test_conv_matches_reference(size, kernel_size, stride, padding, conv_backend):
  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], (2, size, size, 3))
  # Scaled like trained kernels: sin of pre-activations in the tens would turn their float32
  # rounding (~1e-6 relative, different in each summation order) into 1e-4 gradient noise.
  kernel = 0.1 * jax.random.normal(keys[1], (kernel_size, kernel_size, 3, 5))
  loss = lambda conv_fn: lambda x_, k_: jnp.sum(
      jnp.sin(conv_fn(x_, k_, stride, padding)))  # Non-uniform cotangent.
  _assert_close(ops.conv(x, kernel, stride, padding),
                ops.reference_conv(x, kernel, stride, padding))
  fast = jax.jit(jax.grad(loss(ops.conv), argnums=(0, 1)))(x, kernel)
  ref = jax.jit(jax.grad(loss(ops.reference_conv), argnums=(0, 1)))(x, kernel)
  for a, b in zip(fast, ref):
    _assert_close(a, b)


def test_model_loss_gradients_agree_fast_vs_straightforward(conv_backend):
  config = default.get_config().model
  # conv2's 16 channels per tower take oneDNN's LRN, conv1's 4 XLA's loop (a block is 16).
  config.conv_features = (8, 32, 8, 8, 8)
  config.fc_features = (16, 16)
  config.num_classes = 5
  images = jax.random.normal(jax.random.key(0), (2, 67, 67, 3))
  labels = jnp.array([1, 3])
  fast_model = registry.create_model(config, layout=parallel.Layout(kernels='cpu'))
  reference_model = registry.create_model(config, layout=parallel.Layout(kernels='xla'))
  params = jax.jit(reference_model.init)(jax.random.key(1), images)['params']

  def loss(model):
    def fn(p):
      logits = model.apply({'params': p}, images, train=True, rngs={'dropout': jax.random.key(2)})
      return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))
    return jax.jit(jax.value_and_grad(fn))

  lowered = loss(fast_model).lower(params).as_text()
  assert lowered.count('alexnet_jax_lrn_forward') == (2 if conv_backend == 'onednn' else 0)
  fast_loss, fast_grads = loss(fast_model)(params)
  ref_loss, ref_grads = loss(reference_model)(params)
  np.testing.assert_allclose(fast_loss, ref_loss, rtol=1e-6)
  assert jax.tree.structure(fast_grads) == jax.tree.structure(ref_grads)
  for a, b in zip(jax.tree.leaves(fast_grads), jax.tree.leaves(ref_grads)):
    _assert_close(a, b, rtol=1e-4)


@pytest.mark.parametrize('height, width, kernel_size, stride, padding, on_onednn', [
    (1, 1, 5, 1, 2, False),  # Kernel larger than the input (oneDNN corrupted the heap).
    (2, 2, 5, 1, 2, False),
    (5, 1, 5, 1, 2, False),  # One side too small is enough.
    (5, 7, 5, 1, 2, True),  # conv2's geometry on a small map.
    (3, 3, 3, 1, 2, False),  # More than 'same' padding (heap corrupted).
    (3, 3, 3, 1, 1, True),  # conv3-5 on the smallest map AlexNet allows.
    (7, 7, 11, 4, 2, False),
    (15, 15, 11, 4, 2, True),  # torchvision's conv1, small.
])
@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
def test_degenerate_convolutions_stay_off_onednn(height, width, kernel_size, stride, padding,
                                                 on_onednn, dtype, onednn_requested):
  x = jnp.ones((2, height, width, 3), dtype)
  kernel = jnp.ones((kernel_size, kernel_size, 3, 8), dtype)
  grad = jax.grad(lambda k: jnp.sum(ops.conv(x, k, stride, padding).astype(jnp.float32)))
  lowered = jax.jit(grad).lower(kernel).as_text()
  assert ('alexnet_jax_conv' in lowered) == (on_onednn and onednn_requested)


@pytest.mark.parametrize('kernel_size,stride,padding', [(11, 4, 0), (5, 1, 2)])
def test_bfloat16_conv_matches_float32_on_the_same_inputs(kernel_size, stride, padding,
                                                         conv_backend):
  """bfloat16 in and out (oneDNN accumulates in float32): within bfloat16's 8-bit mantissa."""
  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], (2, 23, 23, 8)).astype(jnp.bfloat16)
  kernel = (0.1 * jax.random.normal(keys[1], (kernel_size, kernel_size, 8, 6))).astype(
      jnp.bfloat16)
  loss = lambda conv_fn, dtype: lambda x_, k_: jnp.sum(
      jnp.sin(conv_fn(x_.astype(dtype), k_.astype(dtype), stride, padding).astype(jnp.float32)))
  fast = jax.jit(jax.value_and_grad(loss(ops.conv, jnp.bfloat16), argnums=(0, 1)))(x, kernel)
  ref = jax.jit(jax.value_and_grad(loss(ops.reference_conv, jnp.float32), argnums=(0, 1)))(
      x.astype(jnp.float32), kernel.astype(jnp.float32))
  assert fast[1][0].dtype == jnp.bfloat16 and fast[1][1].dtype == jnp.bfloat16
  y = ops.conv(x, kernel, stride, padding)
  assert y.dtype == jnp.bfloat16
  _assert_close(y, ops.reference_conv(x.astype(jnp.float32), kernel.astype(jnp.float32), stride,
                                      padding), rtol=1e-2)
  for a, b in zip(fast[1], ref[1]):
    _assert_close(a, b, rtol=2e-2)


def _primitives(jaxpr) -> set[str]:
  """Names of every primitive in `jaxpr`, nested jaxprs (custom_vjp, pjit, ...) included."""
  names = set()
  for eqn in jaxpr.eqns:
    names.add(eqn.primitive.name)
    for param in eqn.params.values():
      for sub in param if isinstance(param, (list, tuple)) else (param,):
        inner = getattr(sub, 'jaxpr', sub)
        if hasattr(inner, 'eqns'):
          names |= _primitives(inner)
  return names


@pytest.mark.parametrize('setting,platform,expected', [
    ('auto', 'cpu', 'cpu'), ('auto', 'gpu', 'xla'), ('auto', 'tpu', 'xla'), ('auto', 'cuda', 'xla'),
    ('xla', 'cpu', 'xla'), ('cpu', 'gpu', 'cpu')])
def test_the_platform_decides_the_kernels_and_the_config_overrides(setting, platform, expected):
  assert parallel.platform_kernels(setting, platform) == expected


@pytest.mark.parametrize('platform', ['cpu', 'gpu', 'tpu'])
def test_each_platform_traces_its_own_kernels(platform, conv_backend, monkeypatch):
  """The headline config (configs/imagenet.py, kernels='auto') on each backend JAX could report.

  On 'cpu' the training gradient runs ops.py's custom gradients (and oneDNN's calls where it is
  built); on an accelerator, plain lax ops only: XLA's own convolutions, reduce_window pools."""
  assert imagenet.get_config().kernels == 'auto'
  monkeypatch.setattr(jax, 'default_backend', lambda: platform)  # What the backend decides from.
  config = default.get_config().model
  config.conv_features, config.fc_features = (8, 8, 8, 8, 8), (16, 16)
  layout = parallel.Layout(kernels=imagenet.get_config().kernels)
  model = registry.create_model(config, layout=layout)
  images = jnp.zeros((2, 67, 67, 3))
  params = jax.eval_shape(model.init, jax.random.key(0), images)['params']
  loss = lambda p: jnp.sum(model.apply({'params': p}, images, train=True,
                                       rngs={'dropout': jax.random.key(1)}))
  names = _primitives(jax.make_jaxpr(jax.grad(loss))(params).jaxpr)
  custom = {n for n in names if n.startswith('custom_vjp')}
  if platform == 'cpu':
    assert custom, names
    assert ('ffi_call' in names) == onednn.available()
    assert 'select_and_scatter_add' not in names  # max-pool's gradient is ops.py's.
  else:
    assert not onednn.available()
    assert not custom and 'ffi_call' not in names, names
    assert 'conv_general_dilated' in names and 'select_and_scatter_add' in names


AMD_EPYC_FLAGS = frozenset({'avx2', 'avx512f', 'avx512_bf16'})  # This project's VM: no AMX.
SAPPHIRE_RAPIDS_FLAGS = frozenset({'avx512f', 'avx512_bf16', 'amx_tile', 'amx_bf16', 'amx_int8'})


@pytest.mark.parametrize('setting,kernels,platform,flags,onednn_built,expected', [
    ('auto', 'auto', 'cpu', SAPPHIRE_RAPIDS_FLAGS, True, 'bfloat16'),  # AMX: oneDNN uses it.
    ('auto', 'auto', 'cpu', AMD_EPYC_FLAGS, True, 'float32'),  # avx512_bf16 alone: slower.
    ('auto', 'auto', 'cpu', SAPPHIRE_RAPIDS_FLAGS, False, 'float32'),  # XLA's convs: slower.
    ('auto', 'xla', 'cpu', SAPPHIRE_RAPIDS_FLAGS, True, 'float32'),
    ('auto', 'auto', 'cpu', frozenset({'amx_tile'}), True, 'float32'),  # No bf16 unit.
    ('auto', 'auto', 'gpu', SAPPHIRE_RAPIDS_FLAGS, True, 'float32'),  # Not measured there.
    ('auto', 'auto', 'tpu', frozenset(), True, 'float32'),
    ('bfloat16', 'auto', 'cpu', AMD_EPYC_FLAGS, True, 'bfloat16'),  # Explicit settings win.
    ('float32', 'auto', 'cpu', SAPPHIRE_RAPIDS_FLAGS, True, 'float32'),
])
def test_auto_dtype_is_bfloat16_only_on_amx_with_the_cpu_kernels(
    setting, kernels, platform, flags, onednn_built, expected, monkeypatch):
  monkeypatch.setattr(parallel.onednn, 'available', lambda: onednn_built)
  assert parallel.platform_dtype(setting, kernels, platform, flags) == expected


def test_auto_dtype_reads_this_machines_flags_and_the_model_computes_in_it(monkeypatch):
  monkeypatch.setattr(parallel.onednn, 'available', lambda: True)
  model = registry.create_model(tiny_config(**{'model.dtype': 'auto'}).model)
  images = jnp.zeros((1, 67, 67, 1))
  dtypes = {}
  for name, flags in (('amx', SAPPHIRE_RAPIDS_FLAGS), ('no_amx', AMD_EPYC_FLAGS)):
    monkeypatch.setattr(parallel, 'cpu_flags', lambda flags=flags: flags)
    jaxpr = jax.make_jaxpr(lambda x: model.init_with_output(jax.random.key(0), x)[0])(images)
    dtypes[name] = 'bf16[' in str(jaxpr)
  assert dtypes == {'amx': True, 'no_amx': False}
  with pytest.raises(UserError, match='config.model.dtype'):
    parallel.platform_dtype('float16')


def test_cpu_flags_are_read_from_linux():
  flags = parallel.cpu_flags()
  if platform.system() == 'Linux' and platform.machine() == 'x86_64':
    assert {'fpu', 'sse2'} <= flags
  assert isinstance(flags, frozenset)


def _lrn_by_hand(x, n, k=2.0, alpha=1e-4, beta=0.75):
  """§3.3 in numpy, loops over channels: a_i / (k + alpha sum_{max(0,i-n/2)}^{min(N-1,i+n/2)} a_j^2)^beta."""
  channels = x.shape[-1]
  out = np.empty_like(x, dtype=np.float64)
  for i in range(channels):
    window = range(max(0, i - n // 2), min(channels - 1, i + n // 2) + 1)
    total = sum(np.float64(x[..., j]) ** 2 for j in window)
    out[..., i] = x[..., i] / (k + alpha * total) ** beta
  return out


@pytest.mark.parametrize('lrn', ['reference_lrn', 'fused_lrn', 'layout_cpu', 'layout_xla',
                                 'model_default'])
def test_lrn_window_is_five_channels(lrn):
  # Large inputs, so that two more channels in the window (n=7 instead of the paper's 5) change
  # every output by far more than the tolerance.
  x = np.random.default_rng(3).normal(size=(2, 3, 3, 16)).astype(np.float32) * 100
  paper = dict(k=2.0, n=5, alpha=1e-4, beta=0.75)
  fn = {'reference_lrn': lambda v: ops.reference_lrn(v, **paper),
        'fused_lrn': lambda v: ops.fused_lrn(v, *paper.values()),
        'layout_cpu': lambda v: parallel.Layout(kernels='cpu').lrn(v, *paper.values()),
        'layout_xla': lambda v: parallel.Layout(kernels='xla').lrn(v, *paper.values()),
        # The model's own defaults (config.model.lrn_*), which must be the paper's.
        'model_default': lambda v: models.AlexNet()._lrn((v,))[0]}[lrn]
  got = np.asarray(fn(jnp.asarray(x)))
  np.testing.assert_allclose(got, _lrn_by_hand(x, 5), rtol=1e-5)
  assert not np.allclose(got, _lrn_by_hand(x, 7), rtol=1e-3)  # The nearest wrong window.
  assert not np.allclose(got, _lrn_by_hand(x, 3), rtol=1e-3)
