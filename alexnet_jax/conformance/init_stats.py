"""Init rows: a freshly initialised model's kernels and biases beside a source's init.

The source gives each layer's weights as N(0, std) or U(+-1/sqrt(fan_in)) (PyTorch's default) and
its biases as a constant or the same uniform (models.WEIGHT_INITS' vocabulary). Measured: the kernel's std,
mean, largest magnitude and excess kurtosis (0 for a normal, -1.2 for a uniform), the biases'
range. The distribution's kind counts: a uniform of the right std is not N(0, std).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from alexnet_jax import models

INIT_STD_TOLERANCE = 0.05  # Relative; thousands of samples per layer put the error well below.
# Excess kurtosis -0.6 splits normal (0) from uniform (-1.2); a layer's thousands of weights
# measure it to ~0.05.
UNIFORM_KURTOSIS = -0.6


def _expected_str(weight: Any, bias: Any, fan_in: int) -> str:
  bound = f'U(±{fan_in ** -0.5:.4f})'
  weights = bound if weight == models.FAN_IN_UNIFORM else f'N(0, {weight:g})'
  return f'{weights}, bias {bound if bias == models.FAN_IN_UNIFORM else f"{bias:g}"}'


def init_row(make_row: Any, name: str, expected: tuple[Any, Any], fan_in: int,
             stats: dict[str, float] | None, note: str = '', source: str = '') -> Any:
  """A layer's freshly initialised kernel (distribution, scale) and biases (`stats`, as
  `init_stats` gives them; None: not measured, for `note`'s reason) beside the source's.

  The distribution's kind counts: a uniform of the right std is not N(0, std)."""
  reference = _expected_str(*expected, fan_in)
  if stats is None:
    return make_row(name, 'init', reference, 'not measured', None, note or 'not measured', source)
  uniform = stats['kurtosis'] < UNIFORM_KURTOSIS
  lo, hi = stats['bias_min'], stats['bias_max']
  bias = f'{lo:g}' if lo == hi else f'{lo:.3g}..{hi:.3g}'
  if uniform:
    text = f'U(±{stats["max_abs"]:.4f}) (std {stats["std"]:.4f}), bias {bias}'
  else:
    text = f'std {stats["std"]:.4f} (mean {stats["mean"]:+.1e}), bias {bias}'
  return make_row(name, 'init', reference, text,
              _weights_fit(expected[0], stats, uniform, fan_in)
              and _biases_fit(expected[1], lo, hi, fan_in), source=source)


def _weights_fit(expected: Any, stats: dict[str, float], uniform: bool, fan_in: int) -> bool:
  if expected == models.FAN_IN_UNIFORM:
    bound = fan_in ** -0.5
    return (uniform and abs(stats['max_abs'] / bound - 1) <= INIT_STD_TOLERANCE
            and abs(stats['std'] * 3 ** 0.5 / bound - 1) <= INIT_STD_TOLERANCE)
  return (not uniform and abs(stats['std'] / expected - 1) <= INIT_STD_TOLERANCE
          and abs(stats['mean']) <= 0.1 * stats['std'])


def _biases_fit(expected: Any, lo: float, hi: float, fan_in: int) -> bool:
  if expected == models.FAN_IN_UNIFORM:
    return lo < hi and max(-lo, hi) <= fan_in ** -0.5 * (1 + 1e-6)
  return lo == hi == float(np.float32(expected))


def layer_stats(layer: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """A layer's kernel std, mean, largest magnitude and excess kurtosis (0 for a normal, -1.2 for
  a uniform); its bias min and max. Scalars; traceable, float32 like the layer.

  Centred before squaring: E[x^2] - E[x]^2 in float32 loses the variance of weights whose mean
  is large beside their spread. XLA's float32 reductions agree with float64 to ~1e-7 on the
  paper's fc6 (37.7M weights)."""
  kernel, bias = layer['kernel'], layer['bias']
  mean = jnp.mean(kernel)
  squares = jnp.square(kernel - mean)
  variance = jnp.mean(squares)
  return dict(std=jnp.sqrt(variance), mean=mean, max_abs=jnp.max(jnp.abs(kernel)),
              kurtosis=jnp.mean(jnp.square(squares)) / jnp.square(variance) - 3,
              bias_min=jnp.min(bias), bias_max=jnp.max(bias))


def init_stats(model: nn.Module, images: jax.ShapeDtypeStruct) -> dict[str, dict[str, float]]:
  """Per layer of a freshly initialised model: `layer_stats`, as Python floats."""
  # The 'rbg' generator draws the same distributions several times faster on CPU than threefry.
  key = jax.random.key(0, impl='rbg')

  # The statistics run in the init's compiled call, so only scalars leave it: the paper
  # model's 61M weights, copied out and measured in float64 numpy, took 5 s.
  @jax.jit
  def initialise_and_measure():
    params = model.init(key, jnp.zeros(images.shape, images.dtype))['params']
    return {name: layer_stats(layer) for name, layer in params.items()}

  return jax.tree.map(float, jax.device_get(initialise_and_measure()))
