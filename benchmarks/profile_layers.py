"""Where the JAX training step's time goes: each layer of the paper model timed on its own.

    PYTHONPATH=. python -m benchmarks.profile_layers --batch_size=32 [--reference]

Each row jits one layer (both towers) at the shapes it has inside AlexNet and times its forward and
its forward + backward (gradients for the input and the weights, with a random cotangent), plus
the SGD update of all 61M parameters. `--reference` uses the straightforward lax ops instead of
alexnet_jax/ops.py. The rows add up to roughly the whole step: they leave out fusion across layers.
"""

import os
import statistics
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
from absl import flags

# Run as a script too (python benchmarks/profile_layers.py): the repository root on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from alexnet_jax import cli, ops  # noqa: E402  pylint: disable=wrong-import-position

_BATCH_SIZE = flags.DEFINE_integer('batch_size', 32, 'Images per step.')
_STEPS = flags.DEFINE_integer('steps', 3, 'Timed repetitions (median).')
_REFERENCE = flags.DEFINE_bool('reference', False, 'Time the straightforward ops instead.')


def _median_seconds(fn: Callable, *args, steps: int) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _layers(batch: int, reference: bool):
  """(name, fn(x, w), x shape, w shape or None, towers, matmul FLOPs of one tower's forward)."""
  conv = ops.reference_conv if reference else ops.conv
  lrn = (lambda x, w: ops.reference_lrn(jax.nn.relu(x), k=2.0, n=5, alpha=1e-4, beta=0.75)) \
      if reference else (lambda x, w: ops.fused_lrn(jax.nn.relu(x), 2.0, 5, 1e-4, 0.75))
  pool = (lambda x, w: (ops.reference_max_pool if reference else ops.max_pool)(x, 3, 2))
  conv_flops = lambda hw, k, c, o: 2.0 * batch * hw * hw * k * k * c * o
  conv1_towers = 2 if reference else 1  # The fast path runs conv1 once for both towers.
  return [
      ('conv1', lambda x, w: conv(x, w, 4, 0), (batch, 227, 227, 3),
       (11, 11, 3, 96 // conv1_towers), conv1_towers, conv_flops(55, 11, 3, 96 // conv1_towers)),
      ('relu+lrn1', lrn, (batch, 55, 55, 48), None, 2, 0.0),
      ('pool1', pool, (batch, 55, 55, 48), None, 2, 0.0),
      ('conv2', lambda x, w: conv(x, w, 1, 2), (batch, 27, 27, 48), (5, 5, 48, 128), 2,
       conv_flops(27, 5, 48, 128)),
      ('relu+lrn2', lrn, (batch, 27, 27, 128), None, 2, 0.0),
      ('pool2', pool, (batch, 27, 27, 128), None, 2, 0.0),
      ('conv3', lambda x, w: conv(x, w, 1, 1), (batch, 13, 13, 256), (3, 3, 256, 192), 2,
       conv_flops(13, 3, 256, 192)),
      ('conv4', lambda x, w: conv(x, w, 1, 1), (batch, 13, 13, 192), (3, 3, 192, 192), 2,
       conv_flops(13, 3, 192, 192)),
      ('conv5', lambda x, w: conv(x, w, 1, 1), (batch, 13, 13, 192), (3, 3, 192, 128), 2,
       conv_flops(13, 3, 192, 128)),
      ('pool5', pool, (batch, 13, 13, 128), None, 2, 0.0),
      ('fc6', lambda x, w: x @ w, (batch, 9216), (9216, 2048), 2, 2.0 * batch * 9216 * 2048),
      ('fc7', lambda x, w: x @ w, (batch, 4096), (4096, 2048), 2, 2.0 * batch * 4096 * 2048),
      ('fc8', lambda x, w: x @ w, (batch, 2048), (2048, 1000), 2, 2.0 * batch * 2048 * 1000),
  ]


def profile(batch: int, reference: bool, steps: int) -> list[dict]:
  rows = []
  key = jax.random.key(0)
  for name, fn, x_shape, w_shape, towers, flops in _layers(batch, reference):
    x = jax.random.normal(key, x_shape)
    w = 0.01 * jax.random.normal(key, w_shape) if w_shape else jnp.zeros(())
    forward = jax.jit(fn)
    cotangent = jax.random.normal(key, jax.eval_shape(fn, x, w).shape)
    needs_input_grad = name != 'conv1'  # conv1's input is the image.

    @jax.jit
    def train(x_, w_, g_, fn=fn, has_weights=bool(w_shape), needs_input_grad=needs_input_grad):
      # The output is returned too: the next layer needs it, and a linear layer's gradients do
      # not, so without it XLA would drop the forward pass from the timing.
      if has_weights and needs_input_grad:
        y, vjp = jax.vjp(fn, x_, w_)
      elif has_weights:
        y, vjp = jax.vjp(lambda k: fn(x_, k), w_)
      else:
        y, vjp = jax.vjp(lambda v: fn(v, w_), x_)
      return y, vjp(g_)

    forward_seconds = towers * _median_seconds(forward, x, w, steps=steps)
    train_seconds = towers * _median_seconds(train, x, w, cotangent, steps=steps)
    rows.append({'layer': name, 'forward_ms': 1e3 * forward_seconds,
                 'train_ms': 1e3 * train_seconds,
                 'train_gflops_per_sec': (3 if needs_input_grad else 2) * towers * flops
                                         / train_seconds / 1e9 if flops else None})
  # SGD with momentum and weight decay over all parameters (one flat array: the same traffic).
  def sgd_update(w, v, g):
    v = 0.9 * v - 5e-6 * w - 0.01 * g
    return w + v, v

  sgd = jax.jit(sgd_update, donate_argnums=(0, 1))
  state = [jnp.zeros((60_965_224,)), jnp.zeros((60_965_224,))]
  grads = jnp.ones((60_965_224,))

  def sgd_step():
    state[:] = sgd(*state, grads)
    return state[0]

  rows.append({'layer': 'sgd update', 'forward_ms': 0.0,
               'train_ms': 1e3 * _median_seconds(sgd_step, steps=steps),
               'train_gflops_per_sec': None})
  return rows


def main(argv):
  del argv
  rows = profile(_BATCH_SIZE.value, _REFERENCE.value, _STEPS.value)
  total = sum(r['train_ms'] for r in rows)
  print(f'{"layer":<12}{"fwd ms":>9}{"train ms":>10}{"% train":>9}{"GFLOP/s":>9}')
  for r in rows:
    gflops = f'{r["train_gflops_per_sec"]:.0f}' if r['train_gflops_per_sec'] else ''
    print(f'{r["layer"]:<12}{r["forward_ms"]:>9.1f}{r["train_ms"]:>10.1f}'
          f'{100 * r["train_ms"] / total:>9.1f}{gflops:>9}')
  print(f'{"total":<12}{sum(r["forward_ms"] for r in rows):>9.1f}{total:>10.1f}')


if __name__ == '__main__':
  cli.run(main, log_level='info')
