"""Fast CPU kernels for AlexNet's layers, each with a hand-written gradient (`jax.custom_vjp`).

XLA:CPU runs the forward passes of these layers well but their automatic gradients badly: the
transpose of LRN's padded window sum, max-pool's `select_and_scatter` and the weight gradient of
conv1's strided 11x11 convolution each take several times their forward's time (measurements in
docs/performance.md). The functions here compute exactly the same values and gradients in forms
XLA:CPU fuses or runs as large matrix products; the convolutions, max-pools and the LRNs over
whole blocks of 16 channels (ONEDNN_LRN_CHANNEL_BLOCK) go to oneDNN's kernels when that library
is built (onednn.py). `tests/ops_test.py` checks them against the straightforward path (plain
`lax` ops differentiated by JAX).
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax

from alexnet_jax import onednn

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


# oneDNN's NHWC LRN is fast only for whole blocks of 16 channels. The default config's conv1
# towers have 24: oneDNN took 2.3 ns per value there against 0.85 ns at conv2's 64, and XLA's
# loop (which also fuses the ReLU before it) made that config's training step 1.06-1.09x faster
# (AMD EPYC, AVX-512; docs/performance.md; the CIFAR-10 config's: no change, 0.97-1.03x). The
# paper's 48 and 128 stay on oneDNN (XLA: 0.98x). Such counts are also where oneDNN's bfloat16
# LRN backward goes wrong, in the last 16 + (count mod 16) channels (all 24 of 24: 0.20 of the
# largest gradient; 16-39 of 40: 0.15; tests/ops_test.py).
ONEDNN_LRN_CHANNEL_BLOCK = 16


def fused_lrn(x: Array, k: float, n: int, alpha: float, beta: float) -> Array:
  """Paper §3.3 LRN over the last axis, x / (k + alpha * sum_{|j-i|<=n/2} x_j^2)^beta.

  On oneDNN's kernels for NHWC input with a multiple of ONEDNN_LRN_CHANNEL_BLOCK channels where
  available, else one fused XLA loop with the hand-written gradient below. Raises ValueError for
  an even window `n` (the window must be centred; AlexNet's config check allows odd n only).
  """
  if n % 2 == 0:
    raise ValueError(f'LRN window n={n} must be odd (centred on the channel).')
  # oneDNN 3.2 crashes building its NHWC LRN kernels for a window of 1: XLA takes that case.
  if (onednn.available() and x.ndim == 4 and n >= 3 and
      x.shape[-1] % ONEDNN_LRN_CHANNEL_BLOCK == 0 and
      onednn.lrn_workspace_bytes(x.shape, n, alpha, beta, k, x.dtype) >= 0):
    return _onednn_lrn(x, k, n, alpha, beta)
  return _xla_lrn(x, k, n, alpha, beta)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _onednn_lrn(x: Array, k: float, n: int, alpha: float, beta: float) -> Array:
  return onednn.lrn_forward(x, n, alpha, beta, k)[0]


def _onednn_lrn_fwd(x, k, n, alpha, beta):
  y, workspace = onednn.lrn_forward(x, n, alpha, beta, k)
  return y, (x, workspace)


def _onednn_lrn_bwd(k, n, alpha, beta, residuals, g):
  x, workspace = residuals
  return (onednn.lrn_backward(x, g, workspace, n, alpha, beta, k),)


_onednn_lrn.defvjp(_onednn_lrn_fwd, _onednn_lrn_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _xla_lrn(x: Array, k: float, n: int, alpha: float, beta: float) -> Array:
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


_xla_lrn.defvjp(_fused_lrn_fwd, _fused_lrn_bwd)


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


def max_pool(x: Array, window: int, stride: int) -> Array:
  """VALID max-pool over H and W of NHWC input; the same values and gradient as
  `reference_max_pool` for inputs without NaN (each window's gradient goes to its first maximum
  in row-major order).

  On oneDNN's kernels where available (its backward is one pass over the workspace its forward
  kept), else XLA's reduce_window with the tap-by-tap gradient below. oneDNN's max skips NaN
  where XLA's propagates it, and gives -3.4e38 for a window of only -inf or NaN (XLA: -inf, NaN).
  """
  out_h, out_w = ((size - window) // stride + 1 for size in x.shape[1:3])
  if min(out_h, out_w) <= 0:  # No window fits: an empty result, nothing to route.
    return reference_max_pool(x, window, stride)
  # oneDNN wants the windows to cover the input exactly: drop the rows and columns no window
  # reaches (their gradient is zero, as the slice's transpose pads it).
  covered = x[:, :(out_h - 1) * stride + window, :(out_w - 1) * stride + window]
  if onednn.available() and onednn.max_pool_workspace_bytes(
      covered.shape, (x.shape[0], out_h, out_w, x.shape[3]), window, stride, x.dtype) >= 0:
    return _onednn_max_pool(covered, window, stride)
  return _xla_max_pool(x, window, stride)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _onednn_max_pool(x: Array, window: int, stride: int) -> Array:
  return _onednn_max_pool_fwd(x, window, stride)[0]


def _onednn_max_pool_fwd(x, window, stride):
  out_shape = (x.shape[0], *((size - window) // stride + 1 for size in x.shape[1:3]), x.shape[3])
  y, workspace = onednn.max_pool_forward(x, out_shape, window, stride)
  return y, (workspace, jax.ShapeDtypeStruct(x.shape, x.dtype))


def _onednn_max_pool_bwd(window, stride, residuals, g):
  workspace, x = residuals
  return (onednn.max_pool_backward(g, workspace, x.shape, window, stride),)


_onednn_max_pool.defvjp(_onednn_max_pool_fwd, _onednn_max_pool_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _xla_max_pool(x: Array, window: int, stride: int) -> Array:
  return reference_max_pool(x, window, stride)


def _max_pool_fwd(x, window, stride):
  y = reference_max_pool(x, window, stride)
  return y, (x, y)


def _max_pool_bwd(window, stride, residuals, g):
  # Route each output's gradient to the first tap equal to the window maximum, tap by tap
  # (instead of XLA:CPU's slow select_and_scatter), then place the taps back phase by phase: the
  # input rows h = stride * i + p (and columns likewise) receive only from taps a = p + stride * k,
  # each shifted by k outputs, so each phase is a sum of edge-padded tap arrays, and the phases
  # interleave by one stack and reshape. Each entry sums the same values in the same tap order
  # as placing every tap at its strided positions with interior-padded `pad`s over the whole
  # input; that measured 20-30% slower (docs/performance.md).
  x, y = residuals
  batch, height, width, channels = x.shape
  out_h, out_w = y.shape[1:3]
  taken = jnp.zeros(y.shape, bool)
  zero = jnp.zeros((), g.dtype)
  routed = {}
  for a, b, tap in _window_taps(x, window, stride, out_h, out_w):
    hit = (tap == y) & ~taken
    taken = taken | hit
    routed[a, b] = jnp.where(hit, g, zero)
  rows, cols = -(-height // stride), -(-width // stride)  # Of each phase, padded to the most.
  phase_rows = []
  for p in range(stride):
    phases = []
    for q in range(stride):
      phase = jnp.zeros((batch, rows, cols, channels), g.dtype)
      for (a, b), tap_g in routed.items():
        if a % stride == p and b % stride == q:
          k, l = a // stride, b // stride
          phase = phase + lax.pad(tap_g, zero, ((0, 0, 0), (k, rows - out_h - k, 0),
                                                (l, cols - out_w - l, 0), (0, 0, 0)))
      phases.append(phase)
    phase_rows.append(jnp.stack(phases, axis=3))  # [B, rows, cols, q, C]
  dx = jnp.stack(phase_rows, axis=2)  # [B, rows, p, cols, q, C]: row h = stride * i + p.
  dx = dx.reshape(batch, rows * stride, cols * stride, channels)
  return (dx[:, :height, :width],)


_xla_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


_NHWC = ('NHWC', 'HWIO', 'NHWC')


def reference_conv(x: Array, kernel: Array, stride: int, padding: int) -> Array:
  """2-D NHWC x HWIO convolution, differentiated by JAX (XLA's own gradient convolutions)."""
  return lax.conv_general_dilated(x, kernel, (stride, stride), ((padding, padding),) * 2,
                                  dimension_numbers=_NHWC)


def _space_to_depth(x: Array, block: int) -> Array:
  """[B, H, W, C] -> [B, H/block, W/block, block*block*C], (row, column, channel) minor order."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // block, block, w // block, block, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // block, w // block, block * block * c)


def strided_conv_kernel_grad(x: Array, g: Array, kernel_size: int, stride: int,
                             padding: int) -> Array:
  """d loss / d kernel of `reference_conv(x, kernel, stride, padding)` given g = d loss / d out.

  XLA:CPU runs this weight gradient at a few % of peak for conv1 (11x11, stride 4, 3 channels).
  Here the input is rearranged space-to-depth so that the strided 11x11 window becomes a 3x3 window
  of stride 1 over 48 channels (the kernel is padded to 12x12 with zeros; their gradient is
  discarded), and each of the 9 taps is one batched matrix product summed over the batch.
  """
  batch, _, _, channels = x.shape
  out_h, out_w, features = g.shape[1:]
  taps = -(-kernel_size // stride)  # Window size in space-to-depth blocks.
  span = stride * taps
  # Zero-pad so the blocked input covers every window: (out - 1) * stride + span rows.
  rows, cols = (out_h - 1) * stride + span, (out_w - 1) * stride + span
  x = jnp.pad(x, ((0, 0), (padding, 0), (padding, 0), (0, 0)))
  x = jnp.pad(x[:, :rows, :cols], ((0, 0), (0, rows - min(rows, x.shape[1])),
                                   (0, cols - min(cols, x.shape[2])), (0, 0)))
  blocks = _space_to_depth(x, stride)
  g_flat = g.reshape(batch, out_h * out_w, features)
  tap_grads = []
  for i in range(taps):
    for j in range(taps):
      window = blocks[:, i:i + out_h, j:j + out_w].reshape(batch, out_h * out_w, -1)
      # A batched product then a sum over the batch runs far faster on XLA:CPU than a single
      # product contracting over batch x positions.
      tap_grads.append(jnp.einsum('bnc,bno->bco', window, g_flat).sum(0))
  grad = jnp.stack(tap_grads).reshape(taps, taps, stride, stride, channels, features)
  grad = grad.transpose(0, 2, 1, 3, 4, 5).reshape(span, span, channels, features)
  return grad[:kernel_size, :kernel_size]


def _onednn_runs(x: Array, kernel: Array, stride: int, padding: int) -> bool:
  """Whether this convolution goes to oneDNN (on the CPU with the library built)."""
  return onednn.available() and onednn.supports(x, kernel, stride, padding)


def conv(x: Array, kernel: Array, stride: int, padding: int) -> Array:
  """`reference_conv` computed by oneDNN's kernels where available (onednn.py), else by XLA
  with a faster weight gradient for strided convolutions (conv1).

  Inside shard_map the kernel is first typed as varying over every mesh axis `x` varies over:
  the hand-written gradient returns the kernel's gradient with x's variation, and the cast lets
  autodiff sum it over the data axis, where it belongs.
  """
  missing = tuple(sorted(onednn.varying_axes(x) - onednn.varying_axes(kernel)))
  if missing:
    kernel = lax.pcast(kernel, missing, to='varying')
  return _conv(x, kernel, stride, padding)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x: Array, kernel: Array, stride: int, padding: int) -> Array:
  if _onednn_runs(x, kernel, stride, padding):
    return onednn.conv_forward(x, kernel, stride, padding)
  return reference_conv(x, kernel, stride, padding)


def _summed_like(grad: Array, primal: Array) -> Array:
  """Inside shard_map: `grad` summed over the mesh axes it varies over and `primal` does not
  (the towers' shared input gets the sum of their gradients), as JAX's own transpose does."""
  extra = onednn.varying_axes(grad) - onednn.varying_axes(primal)
  return lax.psum(grad, tuple(sorted(extra))) if extra else grad


def _conv_fwd(x, kernel, stride, padding):
  return _conv(x, kernel, stride, padding), (x, kernel)


def _conv_bwd(stride, padding, residuals, g):
  x, kernel = residuals
  if _onednn_runs(x, kernel, stride, padding) and g.dtype == x.dtype:
    # conv1's input gradient is unused (its input is the image) and removed by XLA.
    return (_summed_like(onednn.conv_backward_data(g, kernel, x.shape, stride, padding), x),
            _summed_like(onednn.conv_backward_weights(x, g, kernel.shape, stride, padding),
                         kernel))
  _, input_grad_fn = jax.vjp(lambda x_: reference_conv(x_, kernel, stride, padding), x)
  (x_grad,) = input_grad_fn(g)  # Dead code for conv1, whose input is the image.
  if stride == 1:  # XLA's own weight gradient is as fast as the alternatives measured here.
    _, kernel_grad_fn = jax.vjp(lambda k_: reference_conv(x, k_, stride, padding), kernel)
    (kernel_grad,) = kernel_grad_fn(g)
  else:
    kernel_grad = strided_conv_kernel_grad(x, g, kernel.shape[0], stride, padding)
  return x_grad, kernel_grad.astype(kernel.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)
