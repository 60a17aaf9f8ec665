"""The report's rows: the paper's value of each property next to the one measured from the model.

Nothing here reads the model's config fields: shapes and multiply-adds come from the traced
forward pass (`alexnet_jax.flops`), structure from `probes.Probe` runs (`measure`), init from a
freshly initialised model.
"""

import dataclasses
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from alexnet_jax import checkpoint as checkpoint_lib
from alexnet_jax import data, flops, parallel, registry, trees
from alexnet_jax.conformance import measure
from alexnet_jax.conformance.probes import LayerTrace, Probe
from alexnet_jax.conformance.spec import (PAPER_INIT_STD, PAPER_INPUT, PAPER_LAYERS, PAPER_LRN,
                                          LayerSpec, paper_shapes)

LRN_TOLERANCE = 0.01  # Relative, for fitted k, alpha, beta.
INIT_STD_TOLERANCE = 0.05  # Relative; thousands of samples per layer put the error well below.
DROPOUT_TOLERANCE = 0.01


@dataclasses.dataclass(frozen=True)
class Row:
  layer: str
  item: str
  paper: str
  measured: str
  status: str  # 'match' | 'DIFFERS' | 'n/a'
  note: str = ''


def _row(layer: str, item: str, paper: str, measured: str, ok: bool, note: str = '') -> Row:
  return Row(layer, item, paper, measured, 'match' if ok else 'DIFFERS', note)


@dataclasses.dataclass(frozen=True)
class _Measured:
  """Everything measured from one model, per layer index."""
  probe: Probe
  ops: list[flops.MatmulOp]  # Convolutions and matrix products attributed to a layer, per image.
  activations: list[str]
  lrns: dict[int, dict[str, Any] | None]
  poolings: dict[int, tuple[tuple[int, int] | None, tuple[int, ...]]]
  dropouts: list[float]  # After each layer.
  seen: list[list[tuple[int, int]]]

  def layer_ops(self, name: str) -> list[flops.MatmulOp]:
    return [op for op in self.ops if op.layer == name]


def report(config: ml_collections.ConfigDict, params: Any | None = None,
           measure_init: bool = True) -> list[Row]:
  """The conformance rows for `config`'s model, with `params` (a checkpoint's) when given.

  Raises UserError when `params` do not have the shapes of `config`'s model.
  """
  model = registry.create_model(config.model, layout=parallel.Layout(kernels='xla'))
  shape = data.image_shape(config)
  images = jax.ShapeDtypeStruct((1,) + shape, jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), images)
  # Structure is all the probes need; values only for the init rows.
  if params is not None:
    trees.check_same_shapes(params, variables['params'], lambda name, got, want: (
        f'the checkpoint does not fit this config (parameter {name}: checkpoint {got}, config '
        f'{want}); pass the config it was written with.'))
    variables = {**variables, 'params': jax.tree.map(jnp.asarray, params)}
  probe = Probe(model, variables, shape)
  rows = [_row('input', 'image', _shape_str(PAPER_INPUT), _shape_str(probe.traces[0].input_shape),
               tuple(probe.traces[0].input_shape) == PAPER_INPUT)]
  measured_names = [t.name for t in probe.traces]
  if measured_names != [s.name for s in PAPER_LAYERS]:
    return rows + [_row('model', 'layers', ' '.join(s.name for s in PAPER_LAYERS),
                        ' '.join(measured_names), False)]
  measured = _measure(probe, model, variables, images)
  init_stats = _init_stats(model, images) if measure_init and params is None else None
  init_note = 'a checkpoint holds trained weights' if params is not None else 'not requested'
  return rows + _model_rows(measured, init_stats, init_note)


def _measure(probe: Probe, model: nn.Module, variables: Any,
             images: jax.ShapeDtypeStruct) -> _Measured:
  ops = [op for op in flops.forward_ops(model, variables, images)
         if op.layer is not None and op.reads_input]
  batch = images.shape[0]
  ops = [dataclasses.replace(op, macs=op.macs // batch) for op in ops]
  return _Measured(probe, ops, measure.activations(probe), measure.lrns(probe),
                   measure.poolings(probe), measure.dropouts(probe), measure.channels_seen(probe))


def _model_rows(measured: _Measured, init_stats: dict[str, Any] | None,
                init_note: str) -> list[Row]:
  """Every layer's rows, then dropout on the convolutions' inputs and the totals."""
  paper = paper_shapes()
  rows, conv_dropout = [], []
  for index, (spec, expected) in enumerate(zip(PAPER_LAYERS, paper)):
    rows += _layer_rows(spec, expected, index, measured)
    rate = measured.dropouts[index - 1] if index else 0.0
    if spec.is_conv:
      conv_dropout.append((spec.name, rate))
    else:
      rows.append(_row(spec.name, 'dropout on input', _rate_str(spec.dropout_on_input),
                       _rate_str(rate), abs(rate - spec.dropout_on_input) <= DROPOUT_TOLERANCE))
    rows.append(_init_row(spec, init_stats, init_note))
  with_dropout = [f'{name} ({_rate_str(rate)})' for name, rate in conv_dropout if rate > 0]
  rows.append(_row('conv1-5', 'dropout on input', 'none', ', '.join(with_dropout) or 'none',
                   not with_dropout))
  count = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(
      measured.probe.variables['params']))
  paper_count = sum(r['params'] for r in paper)
  rows.append(_row('total', 'parameters', f'{paper_count:,}', f'{count:,}', count == paper_count))
  macs = flops.multiply_adds(measured.ops)
  paper_macs = sum(r['macs'] for r in paper)
  rows.append(_row('total', 'multiply-adds per image', f'{paper_macs:,}', f'{macs:,}',
                   macs == paper_macs))
  return rows


def _layer_rows(spec: LayerSpec, expected: dict[str, Any], index: int,
                measured: _Measured) -> list[Row]:
  name, trace = spec.name, measured.probe.traces[index]
  ops = measured.layer_ops(name)
  rows = [_width_row(spec, trace)]
  if spec.is_conv:
    geometry = sorted({op.geometry for op in ops})
    paper_geometry = ((spec.kernel,) * 2, (spec.stride,) * 2, ((spec.padding,) * 2,) * 2)
    rows.append(_row(name, 'kernel, stride, pad', _geometry_str(paper_geometry),
                     ', '.join(_geometry_str(g) for g in geometry) or 'no convolution',
                     geometry == [paper_geometry]))
  rows.append(_sees_row(spec, expected, measured.seen[index], trace.input_channels))
  if spec.is_conv:
    side = expected['side']
    rows.append(_row(name, 'output', _shape_str((side, side, spec.features)),
                     _shape_str(trace.output_shape),
                     tuple(trace.output_shape) == (side, side, spec.features)))
  activation = measured.activations[index]
  rows.append(_row(name, 'activation', spec.activation, activation,
                   activation == spec.activation))
  if spec.is_conv:
    rows += _lrn_rows(spec, measured.lrns[index], trace)
    pool, pooled = measured.poolings[index]
    paper_pool = _pool_str(spec.pool, (expected['pooled_side'],) * 2 + (spec.features,))
    # Window and stride; the sizes have the output rows.
    rows.append(_row(name, 'max-pool', paper_pool, _pool_str(pool, pooled), pool == spec.pool))
  macs = flops.multiply_adds(ops)
  rows.append(_row(name, 'multiply-adds', f'{expected["macs"]:,}', f'{macs:,}',
                   macs == expected['macs']))
  return rows


def _width_row(spec: LayerSpec, trace: LayerTrace) -> Row:
  """Kernels (or units) in total and how many towers they are split over."""
  total = trace.output_channels
  towers, per_tower = trace.kernel_split
  split = towers if towers > 1 and towers * per_tower == total else 1
  return _row(spec.name, 'kernels' if spec.is_conv else 'units',
              _split_str(spec.features, spec.split), _split_str(total, split),
              (total, split) == (spec.features, spec.split))


def _channels(count: int) -> str:
  return f'{count} channel' + ('s' if count != 1 else '')


def _sees_row(spec: LayerSpec, expected: dict[str, Any], seen: list[tuple[int, int]],
              input_channels: int) -> Row:
  """Which input channels each tower's kernels see, from the layer's gradient.

  Compared by structure (all channels, or each tower its own); the widths have their own rows."""
  fan_in = expected['fan_in_channels']
  paper_total = fan_in * (spec.split if spec.sees == 'own' else 1)
  image = 'the image: ' if spec.name == 'conv1' else ''
  if spec.sees == 'own':
    paper = f'own tower: {fan_in} of {_channels(paper_total)}'
  else:
    paper = f'{image}all {_channels(paper_total)}'
  widths = {hi - lo for lo, hi in seen}
  if all(lo == 0 and hi == input_channels for lo, hi in seen):
    measured, kind = f'{image}all {_channels(input_channels)}', 'all'
  elif len(widths) == 1 and [lo for lo, _ in seen] == [t * min(widths) for t in range(len(seen))]:
    measured, kind = f'own tower: {min(widths)} of {_channels(input_channels)}', 'own'
  else:
    measured, kind = 'channels ' + ', '.join(f'[{lo}, {hi})' for lo, hi in seen), 'other'
  ok = kind == spec.sees and (kind != 'own' or len(seen) == spec.split)
  return _row(spec.name, 'kernels see', paper, measured, ok)


def _lrn_rows(spec: LayerSpec, lrn: dict[str, Any] | None, trace: LayerTrace) -> list[Row]:
  name = spec.name
  paper = (f'k={PAPER_LRN["k"]:g} n={PAPER_LRN["n"]} alpha={PAPER_LRN["alpha"]:g} '
           f'beta={PAPER_LRN["beta"]:g}' if spec.lrn else 'none')
  if lrn is None:
    return [_row(name, 'LRN', paper, 'none', not spec.lrn)]
  if 'error' in lrn:
    return [_row(name, 'LRN', paper, lrn['error'], False)]
  measured = f'k={lrn["k"]:.4g} n={lrn["n"]} alpha={lrn["alpha"]:.4g} beta={lrn["beta"]:.4g}'
  close = lambda key: abs(lrn[key] / PAPER_LRN[key] - 1) <= LRN_TOLERANCE
  note = ''
  if not close('alpha') and abs(lrn['alpha'] * lrn['n'] / PAPER_LRN['alpha'] - 1) <= LRN_TOLERANCE:
    note = 'alpha is divided by n (PyTorch/Caffe convention); the paper does not divide'
  rows = [_row(name, 'LRN', paper, measured,
               spec.lrn and close('k') and close('alpha') and close('beta')
               and lrn['n'] == PAPER_LRN['n'], note)]
  if spec.lrn:
    rows.append(_lrn_window_row(spec, lrn['groups'], trace))
  return rows


def _lrn_window_row(spec: LayerSpec, groups: list[int], trace: LayerTrace) -> Row:
  """Compared by structure: the window stops at each of the towers' edges."""
  paper = f'within each tower ({spec.split} x {spec.features // spec.split} channels)'
  if len(groups) == 1:
    measured = f'across all {groups[0]} channels'
  elif len(set(groups)) == 1:
    measured = f'within each tower ({len(groups)} x {groups[0]} channels)'
  else:
    measured = 'within channel groups ' + ' + '.join(map(str, groups))
  return _row(spec.name, 'LRN window', paper, measured,
              len(groups) == spec.split and len(set(groups)) == 1
              and trace.output_channels == sum(groups))


def _init_row(spec: LayerSpec, stats: dict[str, Any] | None, note: str) -> Row:
  paper = f'N(0, {PAPER_INIT_STD:g}), bias {spec.init_bias:g}'
  if stats is None:
    return Row(spec.name, 'init', paper, 'not measured', 'n/a', note)
  std, mean, bias_lo, bias_hi = stats[spec.name]
  bias = f'{bias_lo:g}' if bias_lo == bias_hi else f'{bias_lo:.3g}..{bias_hi:.3g}'
  ok = (abs(std / PAPER_INIT_STD - 1) <= INIT_STD_TOLERANCE and abs(mean) <= 0.1 * std
        and bias_lo == bias_hi == spec.init_bias)
  return _row(spec.name, 'init', paper, f'std {std:.4f} (mean {mean:+.1e}), bias {bias}', ok)


def _init_stats(model: nn.Module, images: jax.ShapeDtypeStruct
                ) -> dict[str, tuple[float, float, float, float]]:
  """Per layer: kernel std and mean, bias min and max of a freshly initialised model."""
  # The 'rbg' generator draws the same distributions several times faster on CPU than threefry.
  key = jax.random.key(0, impl='rbg')
  params = jax.jit(lambda: model.init(key, jnp.zeros(images.shape, images.dtype)))()['params']
  stats = {}
  for name, layer in params.items():
    kernel = np.asarray(layer['kernel'], np.float64)
    bias = np.asarray(layer['bias'])
    stats[name] = (float(kernel.std()), float(kernel.mean()), float(bias.min()),
                   float(bias.max()))
  return stats


# ----------------------------------------------------------------------------------------------
# Formatting.


def _shape_str(shape: Sequence[int]) -> str:
  return 'x'.join(map(str, shape))


def _split_str(total: int, split: int) -> str:
  return f'{total} = {split} x {total // split}' if split > 1 else f'{total}'


def _rate_str(rate: float) -> str:
  return f'dropout {rate:.2f}' if rate > 0 else 'none'


def _geometry_str(geometry: tuple) -> str:
  kernel, stride, padding = geometry
  pads = {p for pair in padding for p in pair}
  pad = f'p{pads.pop()}' if len(pads) == 1 else f'pad {padding}'
  stride_str = f's{stride[0]}' if len(set(stride)) == 1 else f's{stride}'
  return f'{_shape_str(kernel)} {stride_str} {pad}'


def _pool_str(pool: tuple[int, int] | None, pooled_shape: Sequence[int]) -> str:
  if pool is None:
    return 'none'
  if pool == (0, 0):
    return f'not a max-pool -> {_shape_str(pooled_shape)}'
  return f'{pool[0]}x{pool[0]} s{pool[1]} -> {_shape_str(pooled_shape)}'


def format_rows(rows: list[Row]) -> str:
  """A Markdown table, readable as plain text too."""
  header = ('layer', 'property', 'paper', 'this model', 'status')
  cells = [header] + [(r.layer, r.item, r.paper, r.measured + (f' ({r.note})' if r.note else ''),
                       r.status) for r in rows]
  widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
  line = lambda c: '| ' + ' | '.join(s.ljust(w) for s, w in zip(c, widths)) + ' |'
  return '\n'.join([line(header), '|' + '|'.join('-' * (w + 2) for w in widths) + '|']
                   + [line(c) for c in cells[1:]])


def summary(rows: list[Row]) -> str:
  differs = [f'{r.layer} {r.item}' for r in rows if r.status == 'DIFFERS']
  checked = sum(r.status != 'n/a' for r in rows)
  if not differs:
    return f'conformance: all {checked} measured rows match the paper.'
  return (f'conformance: {len(differs)} of {checked} measured rows differ from the paper: '
          + '; '.join(differs) + '.')


def exit_status(rows: list[Row]) -> int:
  return 0 if all(r.status != 'DIFFERS' for r in rows) else 1


def run(config: ml_collections.ConfigDict, checkpoint: str | None = None,
        title: str = '') -> int:
  """Prints the report; returns the exit status: 0 when every row matches, 1 otherwise."""
  params = checkpoint_lib.read_params(checkpoint) if checkpoint else None
  rows = report(config, params)
  source = f'checkpoint {checkpoint}' if checkpoint else 'freshly initialised'
  print(f'AlexNet paper conformance: {title} ({source})\n')
  print(format_rows(rows))
  print()
  print(summary(rows))
  return exit_status(rows)
