"""The report's rows: a source's value of each property beside the one measured from the model.

`measure(config)` measures the model once: shapes and multiply-adds from the traced forward pass
(`alexnet_jax.flops`), structure from `probes.Probe` runs (`measure`), init from a freshly
initialised model; nothing is read from config.model. `compare(measurement, config, reference)`
sets it beside one source (`alexnet_jax.recipes.RECIPES`), adding the training recipe's rows
(`training`): the optimizer measured, the rest read from the config.
"""

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from alexnet_jax import data, flops, models, parallel, registry, trees
from alexnet_jax.conformance import measure as measure_lib
from alexnet_jax.conformance import training
from alexnet_jax.conformance.init_stats import init_row, init_stats
from alexnet_jax.conformance.probes import LayerTrace, Probe
from alexnet_jax.conformance.spec import LayerSpec, ModelSpec, reference_spec, shapes

LRN_TOLERANCE = 0.01  # Relative, for fitted k, alpha, beta.
DROPOUT_TOLERANCE = 0.01


@dataclasses.dataclass(frozen=True)
class Row:
  layer: str
  item: str
  reference: str  # The source's value.
  measured: str
  status: str  # 'match' | 'DIFFERS' | 'n/a'
  note: str = ''
  source: str = ''  # Where the source says it (alexnet_jax/recipes.py's citation).


def make_row(layer: str, item: str, reference: str, measured: str, ok: bool | None,
             note: str = '', source: str = '') -> Row:
  """ok None: not compared (`note` says why)."""
  status = 'n/a' if ok is None else 'match' if ok else 'DIFFERS'
  return Row(layer, item, reference, measured, status, note, source)


@dataclasses.dataclass(frozen=True)
class Measurement:
  """Everything measured from one model (layer lists are by layer index)."""
  probe: Probe
  abstract_params: Any
  ops: list[flops.MatmulOp]  # Convolutions and matrix products attributed to a layer, per image.
  activations: list[str]
  lrns: dict[int, dict[str, Any] | None]
  lrn_inputs: dict[int, str]
  same_map_norms: dict[int, dict[str, float] | None]
  poolings: dict[int, tuple[tuple[int, int] | None, tuple[int, ...]]]
  dropouts: list[float]  # After each layer.
  seen: list[list[tuple[int, int]]]
  init: dict[str, dict[str, float]] | None  # None: not measured.
  init_note: str

  def layer_ops(self, name: str) -> list[flops.MatmulOp]:
    return [op for op in self.ops if op.layer == name]

  @property
  def traces(self) -> list[LayerTrace]:
    return self.probe.traces


def measure(config: ml_collections.ConfigDict, params: Any | None = None,
            measure_init: bool = True) -> Measurement:
  """Measures `config`'s model, with `params` (a checkpoint's) when given.

  Raises UserError when `params` do not have the shapes of `config`'s model.
  """
  model = registry.create_model(config.model, layout=parallel.Layout(kernels='xla'))
  shape = data.image_shape(config)
  images = jax.ShapeDtypeStruct((1,) + shape, jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), images)
  abstract_params = variables['params']
  # Structure is all the probes need; values only for the init rows.
  if params is not None:
    trees.check_same_shapes(params, abstract_params, lambda name, got, want: (
        f'the checkpoint does not fit this config (parameter {name}: checkpoint {got}, config '
        f'{want}); pass the config it was written with.'))
    variables = {**variables, 'params': jax.tree.map(jnp.asarray, params)}
  probe = Probe(model, variables, shape)
  batch = images.shape[0]
  ops = [dataclasses.replace(op, macs=op.macs // batch)
         for op in flops.forward_ops(model, variables, images)
         if op.layer is not None and op.reads_input]
  alexnet = models.AlexNet.conv_layers + models.AlexNet.fc_layers
  if tuple(t.name for t in probe.traces) != alexnet:  # Not an AlexNet: nothing to probe.
    return Measurement(probe, abstract_params, ops, [], {}, {}, {}, {}, [], [], None, '')
  lrns = measure_lib.lrns(probe)
  init = init_stats(model, images) if measure_init and params is None else None
  return Measurement(probe, abstract_params, ops, measure_lib.activations(probe), lrns,
                     measure_lib.lrn_inputs(probe, lrns), measure_lib.same_map_norms(probe),
                     measure_lib.poolings(probe), measure_lib.dropouts(probe),
                     measure_lib.channels_seen(probe), init,
                     'a checkpoint holds trained weights' if params is not None
                     else 'not requested')


def report(config: ml_collections.ConfigDict, params: Any | None = None,
           measure_init: bool = True, reference: str = 'paper') -> list[Row]:
  """The conformance rows of `config` against `reference` (a key of recipes.RECIPES)."""
  return compare(measure(config, params, measure_init), config, reference)


def compare(measured: Measurement, config: ml_collections.ConfigDict,
            reference: str = 'paper') -> list[Row]:
  """`measured` (of `config`'s model) beside the source `reference`."""
  spec = reference_spec(reference)
  source = lambda *keys: training.cite(spec, *keys)
  first = measured.traces[0]
  rows = [make_row('input', 'image', _shape_str(spec.input_shape), _shape_str(first.input_shape),
                   tuple(first.input_shape) == spec.input_shape,
                   source=source('input.image_size'))]
  names = [t.name for t in measured.traces]
  if names != [layer.name for layer in spec.layers]:
    return rows + [make_row('model', 'layers', ' '.join(layer.name for layer in spec.layers),
                            ' '.join(names), False)]
  rows += _model_rows(measured, spec, source)
  rows += training.optimizer_rows(config, measured.abstract_params, spec, make_row)
  return rows + training.config_rows(config, spec, make_row)


def _model_rows(measured: Measurement, spec: ModelSpec, source: Any) -> list[Row]:
  """Every layer's rows, then dropout on the convolutions' inputs and the totals."""
  expected_shapes = shapes(spec)
  rows, conv_dropout = [], []
  dropout_source = source('model.dropout_placement')
  for index, (layer, expected) in enumerate(zip(spec.layers, expected_shapes)):
    rows += _layer_rows(layer, expected, index, measured, spec, source)
    rate = measured.dropouts[index - 1] if index else 0.0
    if layer.is_conv:
      conv_dropout.append((layer.name, rate))
    else:
      rows.append(make_row(layer.name, 'dropout on input', _rate_str(layer.dropout_on_input),
                           _rate_str(rate), abs(rate - layer.dropout_on_input) <= DROPOUT_TOLERANCE,
                           source=dropout_source))
    stats = measured.init[layer.name] if measured.init else None
    rows.append(init_row(make_row, layer.name, spec.init[layer.name], expected['fan_in'], stats,
                         measured.init_note, source('model.weight_init')))
  with_dropout = [f'{name} ({_rate_str(rate)})' for name, rate in conv_dropout if rate > 0]
  rows.append(make_row('conv1-5', 'dropout on input', 'none', ', '.join(with_dropout) or 'none',
                       not with_dropout, source=dropout_source))
  count = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(measured.abstract_params))
  expected_count = sum(r['params'] for r in expected_shapes)
  rows.append(make_row('total', 'parameters', f'{expected_count:,}', f'{count:,}',
                       count == expected_count))
  macs = flops.multiply_adds(measured.ops)
  expected_macs = sum(r['macs'] for r in expected_shapes)
  rows.append(make_row('total', 'multiply-adds per image', f'{expected_macs:,}', f'{macs:,}',
                       macs == expected_macs))
  return rows


def _layer_rows(layer: LayerSpec, expected: dict[str, Any], index: int, measured: Measurement,
                spec: ModelSpec, source: Any) -> list[Row]:
  name, trace = layer.name, measured.traces[index]
  rows = [_width_row(layer, trace, source)]
  if layer.is_conv:
    rows.append(_geometry_row(layer, measured.layer_ops(name),
                              source('model.conv1_padding') if name == 'conv1' else ''))
  rows.append(_sees_row(layer, expected, measured.seen[index], trace.input_channels,
                        source('model.towers')))
  if layer.is_conv:
    side = expected['side']
    rows.append(make_row(name, 'output', _shape_str((side, side, layer.features)),
                         _shape_str(trace.output_shape),
                         tuple(trace.output_shape) == (side, side, layer.features)))
  activation = measured.activations[index]
  rows.append(make_row(name, 'activation', layer.activation, activation,
                       activation == layer.activation, source=source('model.activation')))
  if layer.is_conv:
    rows += _normalization_rows(layer, index, measured, spec, source)
    pool, pooled = measured.poolings[index]
    expected_pool = _pool_str(layer.pool, (expected['pooled_side'],) * 2 + (layer.features,))
    # Window and stride; the sizes have the output rows.
    rows.append(make_row(name, 'max-pool', expected_pool, _pool_str(pool, pooled),
                         pool == layer.pool, source=source('model.pooling')))
  macs = flops.multiply_adds(measured.layer_ops(name))
  rows.append(make_row(name, 'multiply-adds', f'{expected["macs"]:,}', f'{macs:,}',
                       macs == expected['macs']))
  return rows


def _width_row(layer: LayerSpec, trace: LayerTrace, source: Any) -> Row:
  """Kernels (or units) in total and how many towers they are split over."""
  total = trace.output_channels
  towers, per_tower = trace.kernel_split
  split = towers if towers > 1 and towers * per_tower == total else 1
  item = ('model.conv_features' if layer.is_conv else 'model.num_classes' if layer.name == 'fc8'
          else 'model.fc_features')
  return make_row(layer.name, 'kernels' if layer.is_conv else 'units',
                  _split_str(layer.features, layer.split), _split_str(total, split),
                  (total, split) == (layer.features, layer.split),
                  source=source(item, 'model.towers'))


def _geometry_row(layer: LayerSpec, ops: list[flops.MatmulOp], source: str) -> Row:
  geometry = sorted({op.geometry for op in ops})
  expected = ((layer.kernel,) * 2, (layer.stride,) * 2, ((layer.padding,) * 2,) * 2)
  return make_row(layer.name, 'kernel, stride, pad', _geometry_str(expected),
                  ', '.join(_geometry_str(g) for g in geometry) or 'no convolution',
                  geometry == [expected], source=source)


def _channels(count: int) -> str:
  return f'{count} channel' + ('s' if count != 1 else '')


def _sees_row(layer: LayerSpec, expected: dict[str, Any], seen: list[tuple[int, int]],
              input_channels: int, source: str) -> Row:
  """Which input channels each tower's kernels see, from the layer's gradient.

  Compared by structure (all channels, or each tower its own); the widths have their own rows."""
  fan_in = expected['fan_in_channels']
  expected_total = fan_in * (layer.split if layer.sees == 'own' else 1)
  image = 'the image: ' if layer.name == 'conv1' else ''
  if layer.sees == 'own':
    reference = f'own tower: {fan_in} of {_channels(expected_total)}'
  else:
    reference = f'{image}all {_channels(expected_total)}'
  widths = {hi - lo for lo, hi in seen}
  if all(lo == 0 and hi == input_channels for lo, hi in seen):
    measured, kind = f'{image}all {_channels(input_channels)}', 'all'
  elif len(widths) == 1 and [lo for lo, _ in seen] == [t * min(widths) for t in range(len(seen))]:
    measured, kind = f'own tower: {min(widths)} of {_channels(input_channels)}', 'own'
  else:
    measured, kind = 'channels ' + ', '.join(f'[{lo}, {hi})' for lo, hi in seen), 'other'
  ok = kind == layer.sees and (kind != 'own' or len(seen) == layer.split)
  return make_row(layer.name, 'kernels see', reference, measured, ok, source=source)


def _normalization_rows(layer: LayerSpec, index: int, measured: Measurement, spec: ModelSpec,
                        source: Any) -> list[Row]:
  """LRN (constants, window, input) and, where the source or the model has one, a same-map
  normalization."""
  lrn = measured.lrns[index]
  rows = _lrn_rows(layer, lrn, measured.traces[index], spec, source)
  if lrn and 'error' not in lrn:
    signed = layer.name in spec.lrn_sees_signed
    got = measured.lrn_inputs[index]
    want = 'signed responses' if signed else 'ReLU outputs'
    if signed or got != 'ReLU outputs':
      rows.append(make_row(layer.name, 'LRN input', want, got, got == want,
                           source=source('model.conv1_relu_after_pool')))
  expected, got = spec.same_map_norm.get(layer.name), measured.same_map_norms.get(index)
  if expected or got:
    rows.append(make_row(layer.name, 'same-map norm', _rnorm_str(expected), _rnorm_str(got),
                         _rnorm_close(expected, got), source=source('model.conv2_rnorm')))
  return rows


def _lrn_str(lrn: dict[str, Any], alpha: float, detail: str = '') -> str:
  return f'k={lrn["k"]:g} n={lrn["n"]} alpha={alpha:g}{detail} beta={lrn["beta"]:g}'


def _lrn_rows(layer: LayerSpec, lrn: dict[str, Any] | None, trace: LayerTrace, spec: ModelSpec,
              source: Any) -> list[Row]:
  name, want = layer.name, spec.lrn
  cited = source(*(f'model.lrn_{key}' for key in ('k', 'n', 'alpha', 'alpha_divided_by_n',
                                                   'beta')))
  if not layer.lrn:
    reference = 'none'
  else:
    divided = f' ({want["alpha"]:g} / n)' if want['alpha_divided_by_n'] else ''
    reference = _lrn_str(want, spec.lrn_alpha_on_sum, divided)
  if lrn is None:
    return [make_row(name, 'LRN', reference, 'none', not layer.lrn, source=source('model.lrn'))]
  if 'error' in lrn:
    return [make_row(name, 'LRN', reference, lrn['error'], False, source=cited)]
  measured = f'k={lrn["k"]:.4g} n={lrn["n"]} alpha={lrn["alpha"]:.4g} beta={lrn["beta"]:.4g}'
  if not layer.lrn:
    return [make_row(name, 'LRN', reference, measured, False, source=source('model.lrn'))]
  alpha = spec.lrn_alpha_on_sum
  close = lambda got, expected: abs(got / expected - 1) <= LRN_TOLERANCE
  rows = [make_row(name, 'LRN', reference, measured,
                   close(lrn['k'], want['k']) and close(lrn['alpha'], alpha)
                   and close(lrn['beta'], want['beta']) and lrn['n'] == want['n'],
                   _alpha_note(lrn, alpha, spec), source=cited)]
  return rows + [_lrn_window_row(layer, lrn['groups'], trace, want['scope'],
                                 source('model.lrn_scope'))]


def _alpha_note(lrn: dict[str, Any], alpha: float, spec: ModelSpec) -> str:
  """Names the convention when the measured alpha is the source's divided, or multiplied, by n."""
  if abs(lrn['alpha'] / alpha - 1) <= LRN_TOLERANCE:
    return ''
  if abs(lrn['alpha'] * lrn['n'] / alpha - 1) <= LRN_TOLERANCE:
    if spec.title == 'the paper':
      return 'alpha is divided by n (PyTorch/Caffe convention); the paper does not divide'
    return f'alpha is divided by n; {spec.title} does not divide'
  if abs(lrn['alpha'] / lrn['n'] / alpha - 1) <= LRN_TOLERANCE:
    return f'alpha is not divided by n; {spec.title} divides it'
  return ''


def _lrn_window_row(layer: LayerSpec, groups: list[int], trace: LayerTrace, scope: str,
                    source: str) -> Row:
  """Compared by structure: the window stops at each of the towers' edges, or at none."""
  if scope == 'across_towers' or layer.split == 1:
    reference, ok = f'across all {layer.features} channels', len(groups) == 1
  else:
    reference = f'within each tower ({layer.split} x {layer.features // layer.split} channels)'
    ok = len(groups) == layer.split and len(set(groups)) == 1
  if len(groups) == 1:
    measured = f'across all {groups[0]} channels'
  elif len(set(groups)) == 1:
    measured = f'within each tower ({len(groups)} x {groups[0]} channels)'
  else:
    measured = 'within channel groups ' + ' + '.join(map(str, groups))
  return make_row(layer.name, 'LRN window', reference, measured,
                  ok and trace.output_channels == sum(groups), source=source)


def _rnorm_str(rnorm: dict[str, float] | None) -> str:
  if not rnorm:
    return 'none'
  if 'error' in rnorm:
    return rnorm['error']
  return (f'{rnorm["size"]}x{rnorm["size"]} scale={rnorm["scale"]:.4g} pow={rnorm["pow"]:.4g} '
          f'minDiv={rnorm["min_div"]:.4g}')


def _rnorm_close(expected: dict[str, float] | None, got: dict[str, float] | None) -> bool:
  if not expected or not got:
    return not expected and not got
  return 'error' not in got and got['size'] == expected['size'] and all(
      abs(got[key] / expected[key] - 1) <= LRN_TOLERANCE for key in ('scale', 'pow', 'min_div'))


# ----------------------------------------------------------------------------------------------
# Formatting of values.


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
