"""Measurements on a `Probe`: each one a list or dict over the probe's layers (by index).

- activations: ratios of constant inputs classify f in next_input = f(layer output);
- lrns: one channel swept over 1e-2..1e4 fitted to a / (k + alpha a^2)^beta; a large value in one
  channel over a small background shows the window n and where it stops (tower edges);
  lrn_inputs: whether a large negative neighbour still normalizes (LRN before the ReLU);
- same_map_norms: one channel's plane swept the same way, at an interior and a corner position;
- poolings: single spikes show a max-pool's window and stride;
- dropouts: train=True against train=False shows the zeroed fraction and the scale of the rest;
- channels_seen: each layer on its own, all-ones weights, the input channels the gradient of one
  output channel per tower reaches.
Every measurement runs all layers in one compiled call (batches of `probes.PROBE_BATCH`).
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

from alexnet_jax.conformance.probes import Probe, concat_leaves


def activations(probe: Probe) -> list[str]:
  """'relu' | 'tanh' | 'none' | 'unknown' per layer, from constant inputs small enough that an
  LRN in between is linear to ~1e-3."""
  levels = np.array([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0])
  crafted = {i: probe.constant(i, np.repeat(levels[:, None], t.output_channels, axis=1))
             for i, t in enumerate(probe.traces)}
  candidates = {'relu': lambda v: np.maximum(v, 0), 'tanh': np.tanh, 'none': lambda v: v}
  result = []
  for out in probe.between(crafted).values():
    response = np.median(out.reshape(len(levels), -1), axis=1)
    reference = response[list(levels).index(1.0)]
    name = 'unknown'
    for candidate, fn in candidates.items():
      if reference != 0 and np.allclose(response / reference, fn(levels) / fn(1.0), atol=0.02):
        name = candidate
        break
    result.append(name)
  return result


def _lrn_model(probe: Probe) -> nn.Module:
  # The LRN follows the activation; a ReLU passes the large probe values a saturating
  # activation would squash, so the LRN is probed with the activation switched to ReLU (and
  # without cuda-convnet2's same-map normalization, which large values would also trigger).
  return probe.variant(activation='relu', conv2_rnorm=False)


def lrns(probe: Probe) -> dict[int, dict[str, Any] | None]:
  """Per conv layer: k, alpha, beta of b = a / (k + alpha * sum of squares in the window)^beta,
  the window n and the channel groups the window stays in ('groups'); None when b == a, and
  {'error': ...} when b is not of that form."""
  model = _lrn_model(probe)
  conv = [i for i, t in enumerate(probe.traces) if t.is_spatial]
  result = _lrn_constants(probe, model, conv)
  spatial = [i for i in conv if result[i] and 'error' not in result[i]
             and len(probe.next_input_shape(i)) == 3]
  if spatial:
    half = _lrn_windows(probe, model, spatial, result)
    _lrn_groups(probe, model, half, result)
  return result


def _centre(probe: Probe, index: int) -> int:
  """The middle channel of the first tower."""
  return jax.tree.leaves(probe.traces[index].outputs)[0].shape[-1] // 2


AMPLITUDES = np.logspace(-2, 4, 25)  # Swept values: from linear to deep in the power law.


def _swept_centre(probe: Probe, layers: list[int], model: nn.Module) -> dict[int, np.ndarray]:
  """For each of `layers`: its centre channel a constant plane at each of AMPLITUDES (the other
  channels zero), through what follows it in `model`."""
  crafted = {}
  for i in layers:
    values = np.zeros((len(AMPLITUDES), probe.traces[i].output_channels))
    values[:, _centre(probe, i)] = AMPLITUDES
    crafted[i] = probe.constant(i, values)
  return probe.between(crafted, model=model)


def _lrn_constants(probe: Probe, model: nn.Module, conv: list[int]
                   ) -> dict[int, dict[str, Any] | None]:
  """One non-zero channel: the window sum is a^2 whatever the window; fits k, alpha, beta."""
  outputs = _swept_centre(probe, conv, model)
  result: dict[int, dict[str, Any] | None] = {}
  for i in conv:
    ratio = outputs[i].reshape(len(AMPLITUDES), -1).max(axis=1) / AMPLITUDES
    if np.allclose(ratio, 1.0, rtol=1e-5):
      result[i] = None
      continue
    fit = fit_lrn(AMPLITUDES, ratio)
    result[i] = {'error': 'not of the LRN form'} if fit is None else dict(
        zip(('k', 'alpha', 'beta'), fit), n=0, groups=[])
  return result


def _lrn_windows(probe: Probe, model: nn.Module, spatial: list[int],
                 result: dict[int, dict[str, Any] | None]) -> dict[int, int]:
  """Sets each layer's window n from the channels a large value in the centre channel reaches
  (everything else a small background); returns the half-widths."""
  reached = _reached(probe, {i: [[_centre(probe, i)]] for i in spatial}, model)
  half = {}
  for i in spatial:
    c, reach, channels = _centre(probe, i), reached[i][0], probe.traces[i].output_channels
    left = next(d for d in range(1, c + 2) if c - d < 0 or c - d not in reach)
    right = next(d for d in range(1, channels + 1) if c + d >= channels or c + d not in reach)
    result[i]['n'] = left + right - 1
    half[i] = max(left, right) - 1
  return half


def _lrn_groups(probe: Probe, model: nn.Module, half: dict[int, int],
                result: dict[int, dict[str, Any] | None]) -> None:
  """Sets each layer's channel groups: where the window stops, i.e. the channels c whose spike
  does not reach c + 1 (spikes spaced beyond the window, every offset once)."""
  channels = {i: probe.traces[i].output_channels for i in half}
  spikes = {i: [list(range(start, channels[i], 2 * half[i] + 3))
                for start in range(2 * half[i] + 3)] for i in half}
  reached = _reached(probe, spikes, model)
  for i in half:
    boundaries = [c + 1 for group, reach in zip(spikes[i], reached[i]) for c in group
                  if c + 1 < channels[i] and c + 1 not in reach]
    edges = [0] + sorted(boundaries) + [channels[i]]
    result[i]['groups'] = ([hi - lo for lo, hi in zip(edges, edges[1:])] if half[i]
                           else [1] * channels[i])


def _reached(probe: Probe, spikes: dict[int, list[list[int]]], model: nn.Module
             ) -> dict[int, list[set[int]]]:
  """Per layer and spike set: the channels whose output drops by >1% when the spikes (1e3) are
  added to a small background (1e-2)."""
  crafted = {}
  for i, groups in spikes.items():
    values = np.full((len(groups) + 1, probe.traces[i].output_channels), 1e-2)
    for row, group in enumerate(groups, start=1):
      values[row, group] = 1e3
    crafted[i] = probe.constant(i, values)
  outputs = probe.between(crafted, model=model)
  result = {}
  for i, out in outputs.items():
    at_origin = out[(slice(None),) + (0,) * (out.ndim - 2)]  # [batch, channels]
    result[i] = [set(np.flatnonzero(at_origin[row] < 0.99 * at_origin[0]))
                 for row in range(1, len(spikes[i]) + 1)]
  return result


def lrn_inputs(probe: Probe, lrns_: dict[int, dict[str, Any] | None]) -> dict[int, str]:
  """Per layer with an LRN: 'ReLU outputs', or 'signed responses' when the LRN comes before the
  ReLU (cuda-convnet2's conv1): then a large negative neighbour still divides a channel."""
  layers = [i for i, lrn in lrns_.items() if lrn and 'error' not in lrn]
  crafted = {}
  for i in layers:
    values = np.zeros((2, probe.traces[i].output_channels))
    values[:, _centre(probe, i)] = 1.0
    values[1, _centre(probe, i) + 1] = -1e3  # Within any window of n >= 3.
    crafted[i] = probe.constant(i, values)
  outputs = probe.between(crafted, model=_lrn_model(probe))
  result = {}
  for i in layers:
    at_origin = outputs[i][(slice(None),) + (0,) * (outputs[i].ndim - 2)]
    centre = at_origin[:, _centre(probe, i)]
    result[i] = 'signed responses' if centre[1] < 0.99 * centre[0] else 'ReLU outputs'
  return result


def same_map_norms(probe: Probe) -> dict[int, dict[str, float] | None]:
  """Per conv layer: cuda-convnet2's `rnorm` constants (size, scale, pow, min_div) of a
  normalization within each map, b = a / (min_div + scale / size^2 * sum of a^2 over the size x
  size neighbourhood)^pow; None when there is none.

  One channel is a constant plane swept over 1e-2..1e4 (the LRN switched off): an interior
  position's window holds size^2 values, the corner's (size // 2 + 1)^2, so fitted alphas of
  scale and scale (size // 2 + 1)^2 / size^2 give both. After a max-pool the least normalized
  position of a cell wins, which is the corner of the corner cell.
  """
  conv = _spatially_normalized(probe)
  if not conv:
    return {i: None for i, t in enumerate(probe.traces) if t.is_spatial}
  outputs = _swept_centre(probe, conv, probe.variant(activation='relu', lrn=False))
  result: dict[int, dict[str, float] | None] = {
      i: None for i, t in enumerate(probe.traces) if t.is_spatial}
  for i in conv:
    out = outputs[i][..., _centre(probe, i)]  # [amplitudes, H, W]
    middle = tuple(d // 2 for d in out.shape[1:])
    interior = fit_lrn(AMPLITUDES, out[(slice(None),) + middle] / AMPLITUDES)
    corner = fit_lrn(AMPLITUDES, out[:, 0, 0] / AMPLITUDES)
    if np.allclose(out[(slice(None),) + middle] / AMPLITUDES, 1.0, rtol=1e-5):
      result[i] = None
    elif interior is None or corner is None:
      result[i] = {'error': 'not of the rnorm form'}
    else:
      result[i] = _rnorm_constants(interior, corner[1])
  return result


def _spatially_normalized(probe: Probe) -> list[int]:
  """The conv layers after which a constant plane does not stay constant: everything else that
  lies between layers (activation, LRN, pooling) treats every position alike. Runs the model as
  it is, already compiled for the other probes."""
  conv = [i for i, t in enumerate(probe.traces) if t.is_spatial
          and len(probe.next_input_shape(i)) == 3]
  crafted = {}
  for i in conv:
    values = np.zeros((2, probe.traces[i].output_channels))
    values[:, _centre(probe, i)] = (1e2, 1e3)
    crafted[i] = probe.constant(i, values)
  outputs = probe.between(crafted)
  return [i for i in conv
          if not np.allclose(outputs[i], outputs[i][:, :1, :1], rtol=1e-5, atol=0)]


def _rnorm_constants(interior: tuple[float, float, float], corner_alpha: float
                     ) -> dict[str, float]:
  k, alpha, beta = interior
  ratio = alpha / corner_alpha  # size^2 / (size // 2 + 1)^2
  size = next((s for s in range(3, 16, 2) if abs(s * s / (s // 2 + 1) ** 2 / ratio - 1) < 0.02),
              0)
  return {'size': size, 'scale': alpha, 'pow': beta, 'min_div': k}


def fit_lrn(amplitudes: np.ndarray, ratio: np.ndarray) -> tuple[float, float, float] | None:
  """k, alpha, beta of ratio = (k + alpha * a^2)^-beta, or None if that does not fit."""
  if np.any(ratio <= 0):
    return None
  log_ratio = np.log(ratio)
  log_a = np.log(amplitudes)
  beta = -(log_ratio[-1] - log_ratio[-2]) / (2 * (log_a[-1] - log_a[-2]))  # (alpha a^2)^-beta
  beta = max(beta, 1e-3)
  k = float(ratio[0] ** (-1 / beta))
  alpha = max(float(ratio[-1] ** (-1 / beta) - k) / amplitudes[-1] ** 2, 1e-12)
  residual = lambda p: -p[2] * np.log(np.exp(p[0]) + np.exp(p[1]) * amplitudes ** 2) - log_ratio
  result = scipy.optimize.least_squares(residual, [np.log(k), np.log(alpha), beta],
                                        xtol=1e-12, ftol=1e-12)
  if np.max(np.abs(result.fun)) > 1e-3:
    return None
  return float(np.exp(result.x[0])), float(np.exp(result.x[1])), float(result.x[2])


def poolings(probe: Probe) -> dict[int, tuple[tuple[int, int] | None, tuple[int, ...]]]:
  """Per conv layer: (window, stride) of the max-pool before the next layer (None: no pool;
  (0, 0): no window and stride fits) and the pooled shape.

  A single positive value at row r (column 0) of one channel shows up in as many pooled
  positions as windows cover row r; the (window, stride) that predicts these counts and the
  pooled size is the pool.
  """
  conv = [i for i, t in enumerate(probe.traces) if t.is_spatial]
  crafted, rows_probed = {}, {}
  for i in conv:
    shape = probe.traces[i].output_shape
    rows_probed[i] = min(shape[0], 12)
    crafted[i] = np.zeros((rows_probed[i] + 1,) + shape, np.float32)
    for row in range(rows_probed[i]):
      crafted[i][row + 1, row, 0, 0] = 1.0
  outputs = probe.between(crafted)
  result = {}
  for i in conv:
    shape = probe.traces[i].output_shape
    out = outputs[i].reshape(rows_probed[i] + 1, -1)
    counts = [int(np.sum(out[row + 1] != out[0])) for row in range(rows_probed[i])]
    nxt = probe.next_input_shape(i)
    # Flattened into fc6: the pooled side from the feature count.
    pooled = nxt[0] if len(nxt) == 3 else math.isqrt(out.shape[1] // shape[-1])
    result[i] = (_pool_fitting(shape[0], pooled, counts), (pooled, pooled, shape[-1]))
  return result


def _pool_fitting(side: int, pooled: int, counts: list[int]) -> tuple[int, int] | None:
  """The (window, stride) from `side` to `pooled` under which row r lies in as many windows as
  `counts[r]` / `counts[0]` says; None for (1, 1) (no pool), (0, 0) when none fits."""
  for window, stride in ((w, s) for w in range(1, side + 1) for s in range(1, w + 2)):
    if (side - window) // stride + 1 != pooled:
      continue
    covering = lambda r: sum(p * stride <= r < p * stride + window for p in range(pooled))
    if [covering(r) * covering(0) for r in range(len(counts))] == counts:
      return None if (window, stride) == (1, 1) else (window, stride)
  return (0, 0)


def dropouts(probe: Probe) -> list[float]:
  """The dropout rate after each layer: positive constant layer outputs, train=True against
  train=False: the zeroed fraction, confirmed by the scale of what is kept (inverted dropout
  scales by 1 / (1 - rate))."""
  crafted = {i: probe.constant(i, np.ones((8, t.output_channels)))
             for i, t in enumerate(probe.traces)}
  train = probe.between(crafted, train=True)
  test = probe.between(crafted)
  rates = []
  for i in range(len(probe.traces)):
    live = test[i] != 0
    dropped = float(np.mean(train[i][live] == 0))
    kept = live & (train[i] != 0)
    if dropped == 0 or not kept.any():
      rates.append(dropped)
      continue
    rate = 1.0 - 1.0 / float(np.median(train[i][kept] / test[i][kept]))
    rates.append(rate if abs(rate - dropped) < 0.05 else dropped)
  return rates


def channels_seen(probe: Probe) -> list[list[tuple[int, int]]]:
  """Per layer, for one output channel per tower: the range [lo, hi) of input channels its
  gradient reaches.

  Each layer runs on its own with all-ones parameters, so that only its structure (which
  inputs a kernel is connected to) decides, not the values of its weights."""
  traces = probe.traces
  params = {t.name: {'params': jax.tree.map(lambda a: jnp.ones(a.shape, a.dtype),
                                            probe.variables['params'][t.name])} for t in traces}
  inputs = {t.name: jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), t.inputs) for t in traces}
  probed = {}
  for t in traces:
    towers, per_tower = t.kernel_split
    probed[t.name] = ([c * per_tower for c in range(towers)]
                      if towers * per_tower == t.output_channels else [0])

  @jax.jit  # Parameters and inputs are arguments: as constants XLA would fold the convs.
  def input_grads(params, inputs):
    result = {}
    for t in traces:
      apply = lambda xs, t=t: concat_leaves(t.module.apply(params[t.name], xs))
      outputs, vjp = jax.vjp(apply, inputs[t.name])
      centre = tuple(d // 2 for d in outputs.shape[1:-1])
      cotangents = jnp.stack([jnp.zeros_like(outputs).at[(0,) + centre + (c,)].set(1.0)
                              for c in probed[t.name]])
      grads = jax.vmap(lambda ct: concat_leaves(vjp(ct)[0]))(cotangents)
      result[t.name] = jnp.abs(grads).reshape(len(cotangents), -1, grads.shape[-1]).sum(1)
    return result

  grads = input_grads(params, inputs)
  seen = []
  for t in traces:
    per_output = []
    for reached_C in np.asarray(grads[t.name]):
      reached = np.flatnonzero(reached_C)
      per_output.append((int(reached.min()), int(reached.max()) + 1) if reached.size else (0, 0))
    seen.append(per_output)
  return seen
