"""The shared jaxpr counter (alexnet_jax/flops.py): multiply-adds by hand on tiny functions, each
with the nearest wrong count it must not give, and attribution to parameters through calls."""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from alexnet_jax import flops, parallel, registry
from configs import imagenet

_NHWC = ('NHWC', 'HWIO', 'NHWC')


def _ops(fn, params, x):
  closed = jax.make_jaxpr(fn)(params, x)
  names = [f'params/{name}' for name in sorted(params)] + [None]  # Dicts flatten in key order.
  return flops.jaxpr_ops(closed.jaxpr, names)


def test_grouped_convolution_counts_each_kernels_own_channels():
  params = {'conv': jnp.zeros((3, 3, 2, 6))}  # Two groups of 3 kernels, each sees 2 of 4 maps.
  x = jnp.zeros((2, 8, 8, 4))
  fn = lambda p, x: lax.conv_general_dilated(x, p['conv'], (2, 2), ((1, 1), (1, 1)),
                                             dimension_numbers=_NHWC, feature_group_count=2)
  (op,) = _ops(fn, params, x)
  # 2 images x 4x4 positions x 6 kernels x (3x3 x 2 channels); all 4 channels would be 6,912.
  assert op.macs == 2 * 4 * 4 * 6 * 9 * 2 == 3_456
  assert (op.kind, op.layer, op.reads_input, op.groups) == ('conv', 'conv', True, 2)
  assert op.geometry == ((3, 3), (2, 2), ((1, 1), (1, 1)))


def test_kernels_are_traced_to_their_parameter_through_slices_casts_and_calls():
  params = {'a': jnp.zeros((2, 5, 7)), 'b': jnp.zeros((7, 7)), 'c': jnp.zeros((7, 7))}

  @jax.jit  # A pjit call: its body's variables are the caller's.
  def tower(kernel, x):
    return x @ kernel.astype(jnp.bfloat16).astype(jnp.float32)

  def fn(p, x):
    h = tower(p['a'][1], x)  # Tower 1's slice of 'a'.
    mixed = p['b'] @ p['c']  # Parameters only: no product with the input; of two parameters.
    return h @ mixed

  ops = _ops(fn, params, jnp.zeros((3, 5)))
  assert [(op.layer, op.reads_input, op.macs) for op in ops] == [
      ('a', True, 3 * 5 * 7), ('c', False, 7 * 7 * 7), (None, True, 3 * 7 * 7)]


def test_operations_inside_branches_count_unattributed():
  params = {'w': jnp.zeros((4, 4))}
  fn = lambda p, x: lax.cond(x.sum() > 0, lambda: x @ p['w'], lambda: x)
  (op,) = _ops(fn, params, jnp.zeros((2, 4)))
  assert op.macs == 2 * 4 * 4 and op.layer is None


def test_forward_ops_see_the_same_convolutions_whichever_kernels_the_model_runs():
  # With config.kernels='cpu' the convolutions may be oneDNN calls, opaque to a jaxpr.
  config = imagenet.get_config()
  images = jax.ShapeDtypeStruct((1, 227, 227, 3), jnp.float32)
  counts = {}
  for kernels in ('cpu', 'xla'):
    model = registry.create_model(config.model, layout=parallel.Layout(kernels=kernels))
    variables = jax.eval_shape(model.init, jax.random.key(0), images)
    ops = flops.forward_ops(model, variables, images)
    counts[kernels] = {layer: sum(op.macs for op in ops if op.layer == layer)
                       for layer in model.conv_layers + model.fc_layers}
  assert counts['cpu'] == counts['xla']
  assert sum(counts['xla'].values()) == 724_406_816  # docs/paper.md, Counts.
  assert np.all([macs > 0 for macs in counts['xla'].values()])
