"""Fast CPU kernels for AlexNet's layers, each with a hand-written gradient (`jax.custom_vjp`).

XLA:CPU runs the forward passes of these layers well but their automatic gradients badly: the
transpose of LRN's padded window sum, max-pool's `select_and_scatter` and the weight gradient of
conv1's strided 11x11 convolution each take several times their forward's time (measurements in
docs/performance.md). The functions here compute exactly the same values and gradients in forms
XLA:CPU fuses or runs as large matrix products. `tests/ops_test.py` checks them against the
straightforward path (plain `lax` ops differentiated by JAX).
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array


def _window_sum(values: Array, n: int) -> Array:
  """sum_{|j-i| <= n//2} values_j over the last axis, zero outside; n shifted slices fuse into
  one elementwise loop (a windowed reduce does not)."""
  half = n // 2
  channels = values.shape[-1]
  padded = jnp.pad(values, ((0, 0),) * (values.ndim - 1) + ((half, half),))
  total = padded[..., :channels]
  for i in range(1, n):
    total = total + padded[..., i:i + channels]
  return total


def _negative_power(base: Array, beta: float) -> Array:
  """base ** -beta; beta = 0.75 (the paper's) as rsqrt(base * sqrt(base)), cheaper than exp/log."""
  if beta == 0.75:
    return lax.rsqrt(base * lax.sqrt(base))
  return lax.pow(base, jnp.asarray(-beta, base.dtype))


def reference_lrn(x: Array, *, k: float, n: int, alpha: float, beta: float) -> Array:
  """The paper's LRN written plainly (JAX differentiates it): the reference for the fast one."""
  return x * lax.pow(k + alpha * _window_sum(jnp.square(x), n), jnp.asarray(-beta, x.dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def fused_lrn(x: Array, k: float, n: int, alpha: float, beta: float) -> Array:
  """Paper §3.3 LRN over the last axis, x / (k + alpha * sum_{|j-i|<=n/2} x_j^2)^beta."""
  return x * _negative_power(k + alpha * _window_sum(jnp.square(x), n), beta)


def _fused_lrn_fwd(x, k, n, alpha, beta):
  denominator = k + alpha * _window_sum(jnp.square(x), n)
  return x * _negative_power(denominator, beta), (x, denominator)


def _fused_lrn_bwd(k, n, alpha, beta, residuals, g):
  # y_i = x_i d_i^-beta with d_i = k + alpha sum_{j in W(i)} x_j^2 and a symmetric window W, so
  # dx_j = g_j d_j^-beta - 2 alpha beta x_j sum_{i in W(j)} g_i y_i / d_i.
  del k
  x, denominator = residuals
  scale = _negative_power(denominator, beta)
  return (g * scale - (2.0 * alpha * beta) * x * _window_sum(g * x * scale / denominator, n),)


fused_lrn.defvjp(_fused_lrn_fwd, _fused_lrn_bwd)


def reference_max_pool(x: Array, window: int, stride: int) -> Array:
  """VALID max-pool over H and W of NHWC input, differentiated by JAX (`select_and_scatter`)."""
  return lax.reduce_window(x, -jnp.inf, lax.max, (1, window, window, 1), (1, stride, stride, 1),
                           'VALID')


def _window_taps(x: Array, window: int, stride: int, out_h: int, out_w: int):
  """The window*window strided views of x, in row-major window order (one per window tap)."""
  for a in range(window):
    for b in range(window):
      yield a, b, lax.slice(x, (0, a, b, 0),
                            (x.shape[0], a + stride * (out_h - 1) + 1,
                             b + stride * (out_w - 1) + 1, x.shape[3]),
                            (1, stride, stride, 1))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def max_pool(x: Array, window: int, stride: int) -> Array:
  """VALID max-pool over H and W of NHWC input; the same values and gradient as
  `reference_max_pool` (each window's gradient goes to its first maximum in row-major order)."""
  return reference_max_pool(x, window, stride)


def _max_pool_fwd(x, window, stride):
  y = reference_max_pool(x, window, stride)
  return y, (x, y)


def _max_pool_bwd(window, stride, residuals, g):
  # Route each output's gradient to the first tap equal to the window maximum, tap by tap, and
  # place it back at that tap's strided positions with an interior-padded `pad` (fuses with the
  # sum), instead of XLA:CPU's slow select_and_scatter.
  x, y = residuals
  batch, height, width, channels = x.shape
  out_h, out_w = y.shape[1:3]
  taken = jnp.zeros(y.shape, bool)
  dx = jnp.zeros_like(x)
  zero = jnp.zeros((), g.dtype)
  for a, b, tap in _window_taps(x, window, stride, out_h, out_w):
    hit = (tap == y) & ~taken
    taken = taken | hit
    routed = jnp.where(hit, g, zero)
    pad_h = (a, height - a - stride * (out_h - 1) - 1, stride - 1)
    pad_w = (b, width - b - stride * (out_w - 1) - 1, stride - 1)
    dx = dx + lax.pad(routed, zero, ((0, 0, 0), pad_h, pad_w, (0, 0, 0)))
  del batch, channels
  return (dx,)


max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)
