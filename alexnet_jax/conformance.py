"""Paper conformance report: does the configured AlexNet match Krizhevsky et al. (2012)?

    python -m alexnet_jax.conformance --config=configs/imagenet.py
    python -m alexnet_jax.conformance --config=configs/torchvision.py --checkpoint=/path/to/ckpt

Prints the paper's specification (§3, §4.2, §5 and Fig. 2; see docs/paper.md) next to what is
measured from the model itself, never read from the config:
  - kernel shapes, strides, padding and multiply-adds from the traced convolutions and matrix
    products (`jax.make_jaxpr`), attributed to a layer by the parameter their kernel comes from;
  - output shapes from the layers' inputs and outputs under `jax.eval_shape`;
  - which input channels a layer's kernels see, from the gradient of one output channel per tower;
  - activation, LRN constants and window, pooling and dropout by running what lies between two
    layers on crafted inputs (the layer's output is replaced through `nn.intercept_methods`);
  - parameter count from the parameter tree, init statistics from a freshly initialised model.
Each row is marked match / DIFFERS; the exit status is 0 only when no row differs. See
docs/conformance.md for the tables of the shipped configs.
"""

import dataclasses
import functools
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.extend.core as jex
import jax.numpy as jnp
import ml_collections
import numpy as np
import scipy.optimize

from alexnet_jax import checkpoint as checkpoint_lib
from alexnet_jax import cli, data, onednn, parallel, registry
from alexnet_jax.errors import UserError

# ----------------------------------------------------------------------------------------------
# The paper's specification (docs/paper.md, Architecture (§3.5, Fig. 2); input 227 as Caffe does,
# see docs/paper.md, Input size: 224 or 227).


@dataclasses.dataclass(frozen=True)
class LayerSpec:
  name: str
  features: int  # Kernels (conv) or units (fc), total over the towers.
  split: int  # Towers the kernels are split over (1: one set, e.g. fc8's summed partial products).
  sees: str  # 'all': every input channel; 'own': its own tower's channels only.
  kernel: int = 0  # 0 for fully connected layers.
  stride: int = 0
  padding: int = 0
  activation: str = 'relu'
  lrn: bool = False
  pool: tuple[int, int] | None = None  # (window, stride) of the max-pool after the layer.
  dropout_on_input: float = 0.0
  init_bias: float = 0.0

  @property
  def is_conv(self) -> bool:
    return self.kernel > 0


PAPER_INPUT = (227, 227, 3)
PAPER_LAYERS = (
    LayerSpec('conv1', 96, 2, 'all', 11, 4, 0, lrn=True, pool=(3, 2)),
    LayerSpec('conv2', 256, 2, 'own', 5, 1, 2, lrn=True, pool=(3, 2), init_bias=1.0),
    LayerSpec('conv3', 384, 2, 'all', 3, 1, 1),
    LayerSpec('conv4', 384, 2, 'own', 3, 1, 1, init_bias=1.0),
    LayerSpec('conv5', 256, 2, 'own', 3, 1, 1, pool=(3, 2), init_bias=1.0),
    LayerSpec('fc6', 4096, 2, 'all', init_bias=1.0),
    LayerSpec('fc7', 4096, 2, 'all', dropout_on_input=0.5, init_bias=1.0),
    LayerSpec('fc8', 1000, 1, 'all', activation='none', dropout_on_input=0.5),
)
PAPER_LRN = {'k': 2.0, 'n': 5, 'alpha': 1e-4, 'beta': 0.75}  # §3.3; the window stays in a tower.
PAPER_INIT_STD = 0.01  # §5: every weight ~ N(0, 0.01).

LRN_TOLERANCE = 0.01  # Relative, for fitted k, alpha, beta.
INIT_STD_TOLERANCE = 0.05  # Relative; thousands of samples per layer put the error well below.
DROPOUT_TOLERANCE = 0.01
PROBE_BATCH = 32  # Crafted inputs per layer in one run of the probes.


def paper_shapes() -> list[dict[str, Any]]:
  """Per layer: input channels per kernel, output side, pooled side, params and multiply-adds.

  Arithmetic on the table above, so the report can show the paper's value for every row.
  """
  side, channels, per_tower = PAPER_INPUT[0], PAPER_INPUT[2], PAPER_INPUT[2]
  rows = []
  for spec in PAPER_LAYERS:
    fan_in_channels = per_tower if spec.sees == 'own' else channels
    if spec.is_conv:
      side = (side + 2 * spec.padding - spec.kernel) // spec.stride + 1
      fan_in = spec.kernel * spec.kernel * fan_in_channels
      macs = side * side * spec.features * fan_in
      out_side = side
      if spec.pool:
        side = (side - spec.pool[0]) // spec.pool[1] + 1
    else:
      fan_in = channels * (side * side if side else 1)  # fc6 flattens the pooled maps.
      fan_in_channels, side, out_side = fan_in, 0, 0
      macs = spec.features * fan_in
    rows.append(dict(name=spec.name, fan_in_channels=fan_in_channels, side=out_side,
                     pooled_side=side, macs=macs, params=spec.features * fan_in + spec.features))
    channels, per_tower = spec.features, spec.features // spec.split
  return rows


# ----------------------------------------------------------------------------------------------
# The report.


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


def report(config: ml_collections.ConfigDict, params: Any | None = None,
           measure_init: bool = True) -> list[Row]:
  """The conformance rows for `config`'s model, with `params` (a checkpoint's) when given."""
  model = registry.create_model(config.model, layout=parallel.Layout(kernels='xla'))
  shape = data.image_shape(config)
  images = jax.ShapeDtypeStruct((1,) + shape, jnp.float32)
  abstract = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), images)
  variables = abstract  # Structure is all the probes need; values only for the init rows.
  if params is not None:
    _check_params(params, abstract['params'])
    variables = {**abstract, 'params': jax.tree.map(jnp.asarray, params)}
  probe = _Probe(model, variables, shape)
  ops = _traced_ops(model, variables, images)

  rows = [_row('input', 'image', _shape_str(PAPER_INPUT), _shape_str(probe.traces[0].input_shape),
               tuple(probe.traces[0].input_shape) == PAPER_INPUT)]
  measured_names = [t.name for t in probe.traces]
  if measured_names != [s.name for s in PAPER_LAYERS]:
    rows.append(_row('model', 'layers', ' '.join(s.name for s in PAPER_LAYERS),
                     ' '.join(measured_names), False))
    return rows
  init_stats = _init_stats(model, images) if measure_init and params is None else None
  init_note = 'a checkpoint holds trained weights' if params is not None else 'not requested'
  paper = paper_shapes()
  conv_dropout = []
  for index, (spec, expected) in enumerate(zip(PAPER_LAYERS, paper)):
    trace = probe.traces[index]
    layer_ops = [op for op in ops if op['layer'] == spec.name]
    rows += _layer_rows(spec, expected, trace, layer_ops, probe, index)
    rate = probe.dropout(index - 1) if index else 0.0
    if spec.is_conv:
      conv_dropout.append((spec.name, rate))
    else:
      rows.append(_row(spec.name, 'dropout on input', _rate_str(spec.dropout_on_input),
                       _rate_str(rate), abs(rate - spec.dropout_on_input) <= DROPOUT_TOLERANCE))
    rows.append(_init_row(spec, init_stats, init_note))
  with_dropout = [f'{name} ({_rate_str(rate)})' for name, rate in conv_dropout if rate > 0]
  rows.append(_row('conv1-5', 'dropout on input', 'none', ', '.join(with_dropout) or 'none',
                   not with_dropout))

  count = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(variables['params']))
  paper_count = sum(r['params'] for r in paper)
  rows.append(_row('total', 'parameters', f'{paper_count:,}', f'{count:,}', count == paper_count))
  macs = sum(op['macs'] for op in ops)
  paper_macs = sum(r['macs'] for r in paper)
  rows.append(_row('total', 'multiply-adds per image', f'{paper_macs:,}', f'{macs:,}',
                   macs == paper_macs))
  return rows


def _layer_rows(spec: LayerSpec, expected: dict[str, Any], trace: '_LayerTrace',
                ops: list[dict[str, Any]], probe: '_Probe', index: int) -> list[Row]:
  name = spec.name
  rows = []
  total = trace.output_channels
  towers, per_tower = trace.kernel_split
  split = towers if towers > 1 and towers * per_tower == total else 1
  label = 'kernels' if spec.is_conv else 'units'
  rows.append(_row(name, label, _split_str(spec.features, spec.split), _split_str(total, split),
                   (total, split) == (spec.features, spec.split)))
  if spec.is_conv:
    geometry = sorted({op['geometry'] for op in ops})
    measured = ', '.join(_geometry_str(g) for g in geometry) or 'no convolution'
    paper_geometry = ((spec.kernel,) * 2, (spec.stride,) * 2, ((spec.padding,) * 2,) * 2)
    rows.append(_row(name, 'kernel, stride, pad', _geometry_str(paper_geometry), measured,
                     geometry == [paper_geometry]))
  rows.append(_sees_row(spec, expected, probe.sees(index), trace.input_channels))
  if spec.is_conv:
    side = expected['side']
    rows.append(_row(name, 'output', _shape_str((side, side, spec.features)),
                     _shape_str(trace.output_shape),
                     tuple(trace.output_shape) == (side, side, spec.features)))
  activation = probe.activation(index)
  rows.append(_row(name, 'activation', spec.activation, activation,
                   activation == spec.activation))
  if spec.is_conv:
    rows += _lrn_rows(spec, probe.lrn(index), trace)
    pool, pooled = probe.pooling(index)
    paper_pool = _pool_str(spec.pool, (expected['pooled_side'],) * 2 + (spec.features,))
    # Window and stride; the sizes have the output rows.
    rows.append(_row(name, 'max-pool', paper_pool, _pool_str(pool, pooled), pool == spec.pool))
  macs = sum(op['macs'] for op in ops)
  rows.append(_row(name, 'multiply-adds', f'{expected["macs"]:,}', f'{macs:,}',
                   macs == expected['macs']))
  return rows


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


def _lrn_rows(spec: LayerSpec, lrn: dict[str, Any] | None, trace: '_LayerTrace') -> list[Row]:
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
    per_tower = spec.features // spec.split
    paper_window = f'within each tower ({spec.split} x {per_tower} channels)'
    groups = lrn['groups']
    if len(groups) == 1:
      measured_window = f'across all {groups[0]} channels'
    elif len(set(groups)) == 1:
      measured_window = f'within each tower ({len(groups)} x {groups[0]} channels)'
    else:
      measured_window = 'within channel groups ' + ' + '.join(map(str, groups))
    # Compared by structure: the window stops at each of the towers' edges.
    rows.append(_row(name, 'LRN window', paper_window, measured_window,
                     len(groups) == spec.split and len(set(groups)) == 1
                     and trace.output_channels == sum(groups)))
  return rows


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


def _check_params(params: Any, expected: Any) -> None:
  got = dict(_flatten(params))
  want = dict(_flatten(expected))
  for name in sorted(set(got) | set(want)):
    got_shape = tuple(np.shape(got[name])) if name in got else None
    want_shape = tuple(want[name].shape) if name in want else None
    if got_shape != want_shape:
      raise UserError(f'the checkpoint does not fit this config (parameter {name}: checkpoint '
                      f'{got_shape}, config {want_shape}); pass the config it was written with.')


def _flatten(tree: Any) -> list[tuple[str, Any]]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return [('/'.join(str(getattr(k, 'key', k)) for k in path), leaf) for path, leaf in leaves]


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


# ----------------------------------------------------------------------------------------------
# Measurements: traced convolutions and matrix products.


def _traced_ops(model: nn.Module, variables: Any, images: jax.ShapeDtypeStruct
                ) -> list[dict[str, Any]]:
  """Every convolution / matrix product whose kernel is derived from a parameter, per image."""
  with onednn.enabled(False):  # Traced on XLA's convolutions: oneDNN's calls are opaque here.
    closed = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(
        jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), variables), images)
  paths = [name for name, _ in _flatten(variables)] + ['<images>']
  origin = {}  # var -> the parameter path it is derived from (through slices, casts, reshapes).
  data = set()  # vars that depend on the images
  for var, path in zip(closed.jaxpr.invars, paths):
    if path == '<images>':
      data.add(var)
    else:
      origin[var] = path
  ops: list[dict[str, Any]] = []
  _walk(closed.jaxpr, origin, data, ops)
  batch = images.shape[0]
  for op in ops:
    op['macs'] //= batch
  return ops


def _sub_jaxprs(eqn: Any) -> list[Any]:
  subs = []
  for value in eqn.params.values():
    if isinstance(value, jex.ClosedJaxpr):
      subs.append(value.jaxpr)
    elif isinstance(value, jex.Jaxpr):
      subs.append(value)
  return subs


def _walk(jaxpr: Any, origin: dict, data: set, ops: list[dict[str, Any]]) -> None:
  for eqn in jaxpr.eqns:
    invars = [v for v in eqn.invars if not isinstance(v, jex.Literal)]
    subs = _sub_jaxprs(eqn)
    if len(subs) == 1 and len(subs[0].invars) == len(eqn.invars) and len(
        subs[0].outvars) == len(eqn.outvars):  # pjit, custom_jvp/vjp calls, remat: positional.
      inner = subs[0]
      for outer, var in zip(eqn.invars, inner.invars):
        if isinstance(outer, jex.Literal):
          continue
        if outer in data:
          data.add(var)
        if outer in origin:
          origin[var] = origin[outer]
      _walk(inner, origin, data, ops)
      for var, outer in zip(inner.outvars, eqn.outvars):
        if isinstance(var, jex.Literal):
          continue
        if var in data:
          data.add(outer)
        if var in origin:
          origin[outer] = origin[var]
      continue
    is_data = any(v in data for v in invars)
    name = eqn.primitive.name
    if name in ('conv_general_dilated', 'dot_general') and is_data:
      lhs, rhs = eqn.invars[:2]
      param = origin.get(rhs) or origin.get(lhs)
      if param is not None:
        ops.append(_op(eqn, param.split('/')[1] if param.startswith('params/') else param))
    if is_data:
      data.update(eqn.outvars)
      continue
    sources = {origin[v] for v in invars if v in origin}
    if len(sources) == 1 and len(eqn.outvars) == 1:  # A slice / cast / reshape of one parameter.
      origin[eqn.outvars[0]] = sources.pop()


def _op(eqn: Any, layer: str) -> dict[str, Any]:
  out_shape = eqn.outvars[0].aval.shape
  lhs, rhs = (v.aval.shape for v in eqn.invars[:2])
  if eqn.primitive.name == 'conv_general_dilated':
    rhs_spec = eqn.params['dimension_numbers'].rhs_spec  # (out, in, *spatial) dims of the kernel
    spatial = tuple(rhs[d] for d in rhs_spec[2:])
    fan_in = rhs[rhs_spec[1]] * math.prod(spatial)
    geometry = (spatial, tuple(eqn.params['window_strides']),
                tuple(tuple(p) for p in eqn.params['padding']))
    return dict(layer=layer, kind='conv', geometry=geometry,
                groups=eqn.params['feature_group_count'],
                macs=math.prod(out_shape) * fan_in)
  (contracting, _), _ = eqn.params['dimension_numbers']
  fan_in = math.prod(lhs[d] for d in contracting)
  return dict(layer=layer, kind='dense', geometry=None, groups=1,
              macs=math.prod(out_shape) * fan_in)


# ----------------------------------------------------------------------------------------------
# Measurements: what each layer sees and what lies between two layers, on crafted inputs.


@dataclasses.dataclass
class _LayerTrace:
  name: str
  module: nn.Module  # An unbound copy of the layer, to run it on its own.
  inputs: Any  # Pytree of ShapeDtypeStruct, batch 1.
  outputs: Any

  @property
  def input_shape(self) -> tuple[int, ...]:
    leaves = jax.tree.leaves(self.inputs)
    return tuple(leaves[0].shape[1:-1]) + (self.input_channels,)

  @property
  def input_channels(self) -> int:
    return sum(leaf.shape[-1] for leaf in jax.tree.leaves(self.inputs))

  @property
  def output_shape(self) -> tuple[int, ...]:
    leaves = jax.tree.leaves(self.outputs)
    return tuple(leaves[0].shape[1:-1]) + (self.output_channels,)

  @property
  def output_channels(self) -> int:
    return sum(leaf.shape[-1] for leaf in jax.tree.leaves(self.outputs))

  kernel_split: tuple[int, int] = (1, 0)  # (towers, kernels per tower) of the kernel parameter.


def _concat_leaves(tree: Any) -> jax.Array:
  leaves = jax.tree.leaves(tree)
  return jnp.concatenate(leaves, axis=-1) if len(leaves) > 1 else leaves[0]


def _split_like(full: jax.Array, like: Any) -> Any:
  leaves, treedef = jax.tree.flatten(like)
  bounds = np.cumsum([leaf.shape[-1] for leaf in leaves])[:-1]
  parts = jnp.split(full, bounds, axis=-1)
  return jax.tree.unflatten(treedef, [p.astype(leaf.dtype) for p, leaf in zip(parts, leaves)])


def _layer_name(context: Any, names: Sequence[str]) -> str | None:
  path = getattr(context.module, 'path', ())
  if context.method_name == '__call__' and len(path) == 1 and path[0] in names:
    return path[0]
  return None


class _Probe:
  """Runs pieces of the model on crafted inputs: each layer on its own, or what lies between each
  layer and the next. Every probe measures all layers in one compiled run."""

  def __init__(self, model: nn.Module, variables: Any, image_shape: tuple[int, int, int]):
    # Probes compute in float32 whatever the training dtype, so that fits are not bfloat16-limited.
    self.model = model.clone(dtype=jnp.float32) if hasattr(model, 'dtype') else model
    self.variables = variables
    self.image_shape = image_shape
    self.traces = self._trace()
    self._compiled: dict[tuple, Callable] = {}
    self._cache: dict[str, Any] = {}

  def _trace(self) -> list[_LayerTrace]:
    names = list(self.variables['params'])
    traces: list[_LayerTrace] = []
    struct = lambda tree: jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)

    def record(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      name = _layer_name(context, names)
      if name is not None:
        kernel = self.variables['params'][name]['kernel']
        traces.append(_LayerTrace(name, context.module.clone(parent=None, name=None),
                                  struct(args[0]), struct(out),
                                  (kernel.shape[0], kernel.shape[-1])))
      return out

    images = jax.ShapeDtypeStruct((1,) + self.image_shape, jnp.float32)
    with nn.intercept_methods(record):
      jax.eval_shape(lambda v, x: self.model.apply(v, x, train=False), self.variables, images)
    return traces

  def _cached(self, key: str, compute: Callable[[], Any]) -> Any:
    if key not in self._cache:
      self._cache[key] = compute()
    return self._cache[key]

  def next_input_shape(self, index: int) -> tuple[int, ...]:
    if index + 1 < len(self.traces):
      return self.traces[index + 1].input_shape
    return ()

  # -- What lies between layers.

  def between(self, crafted: dict[int, np.ndarray], *, train: bool = False,
              model: nn.Module | None = None) -> dict[int, np.ndarray]:
    """Layer i outputs `crafted[i]` (its towers' channels concatenated, any batch size); returns
    for each such i the next layer's input (channels concatenated), or the model's output after
    the last layer. Layers without crafted outputs output zeros; no layer is computed."""
    model = model or self.model
    key = (train, id(model))
    if key not in self._compiled:
      self._compiled[key] = jax.jit(functools.partial(self._between, train, model))
    rows = max(len(v) for v in crafted.values())
    outputs: dict[int, list[np.ndarray]] = {i: [] for i in crafted}
    for start in range(0, rows, PROBE_BATCH):
      batch = []
      for i, trace in enumerate(self.traces):
        padded = np.zeros((PROBE_BATCH,) + trace.output_shape, np.float32)
        chunk = crafted[i][start:start + PROBE_BATCH] if i in crafted else padded[:0]
        padded[:len(chunk)] = chunk
        batch.append(padded)
      result = self._compiled[key](batch)
      for i in crafted:
        outputs[i].append(np.asarray(result[i]))
    return {i: np.concatenate(outputs[i])[:len(crafted[i])] for i in crafted}

  def _between(self, train: bool, model: nn.Module, crafted: list[jax.Array]) -> list[jax.Array]:
    names = [t.name for t in self.traces]
    inputs: dict[int, jax.Array] = {}

    def intercept(next_fun, args, kwargs, context):
      name = _layer_name(context, names)
      if name is None:
        return next_fun(*args, **kwargs)
      i = names.index(name)
      if i > 0:
        inputs[i - 1] = _concat_leaves(args[0])
      return _split_like(crafted[i], self.traces[i].outputs)

    images = jnp.zeros((PROBE_BATCH,) + self.image_shape, jnp.float32)
    with nn.intercept_methods(intercept):
      logits = model.apply(self.variables, images, train=train,
                           rngs={'dropout': jax.random.key(0)})
    inputs[len(names) - 1] = logits
    return [inputs[i] for i in range(len(names))]

  def _constant(self, index: int, values_BC: np.ndarray) -> np.ndarray:
    """Per batch element, the channel values `values_BC` at every spatial position of layer
    `index`'s output."""
    shape = self.traces[index].output_shape
    values = np.asarray(values_BC, np.float32)
    return np.broadcast_to(values.reshape((values.shape[0],) + (1,) * (len(shape) - 1) + (
        shape[-1],)), (values.shape[0],) + shape)

  def activation(self, index: int) -> str:
    return self._cached('activation', self._activations)[index]

  def _activations(self) -> list[str]:
    """Classifies f in next_input = f(layer output) from constant inputs small enough that an LRN
    in between is linear to ~1e-3."""
    probes = np.array([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0])
    crafted = {i: self._constant(i, np.repeat(probes[:, None], t.output_channels, axis=1))
               for i, t in enumerate(self.traces)}
    result = []
    for out in self.between(crafted).values():
      response = np.median(out.reshape(len(probes), -1), axis=1)
      reference = response[list(probes).index(1.0)]
      candidates = {'relu': lambda v: np.maximum(v, 0), 'tanh': np.tanh, 'none': lambda v: v}
      name = 'unknown'
      for candidate, fn in candidates.items():
        if reference != 0 and np.allclose(response / reference, fn(probes) / fn(1.0), atol=0.02):
          name = candidate
          break
      result.append(name)
    return result

  def _lrn_model(self) -> nn.Module:
    # The LRN follows the activation; a ReLU passes the large probe values a saturating
    # activation would squash, so the LRN is probed with the activation switched to ReLU.
    if getattr(self.model, 'activation', 'relu') == 'relu':
      return self.model
    return self._cached('lrn_model', lambda: self.model.clone(activation='relu'))

  def lrn(self, index: int) -> dict[str, Any] | None:
    return self._cached('lrn', self._lrns)[index]

  def _lrns(self) -> dict[int, dict[str, Any] | None]:
    """Per conv layer: k, alpha, beta of b = a / (k + alpha * sum of squares in the window)^beta,
    the window n and the channel groups the window stays in; None when b == a."""
    model = self._lrn_model()
    conv = [i for i, t in enumerate(self.traces) if len(t.output_shape) == 3]
    channels = {i: self.traces[i].output_channels for i in conv}
    centre = {i: jax.tree.leaves(self.traces[i].outputs)[0].shape[-1] // 2 for i in conv}
    # 1) One non-zero channel: the window sum is a^2, whatever the window.
    amplitudes = np.logspace(-2, 4, 25)
    crafted = {}
    for i in conv:
      values = np.zeros((len(amplitudes), channels[i]))
      values[:, centre[i]] = amplitudes
      crafted[i] = self._constant(i, values)
    outputs = self.between(crafted, model=model)
    result: dict[int, dict[str, Any] | None] = {}
    for i in conv:
      ratio = outputs[i].reshape(len(amplitudes), -1).max(axis=1) / amplitudes
      if np.allclose(ratio, 1.0, rtol=1e-5):
        result[i] = None
        continue
      fit = _fit_lrn(amplitudes, ratio)
      result[i] = {'error': 'not of the LRN form'} if fit is None else dict(
          zip(('k', 'alpha', 'beta'), fit), n=0, groups=[])
    # 2) Which channels a large value in `centre` reaches (everything else a small background).
    spatial = [i for i in conv if result[i] and 'error' not in result[i]
               and len(self.next_input_shape(i)) == 3]
    if not spatial:
      return result
    reached = self._reached({i: [[centre[i]]] for i in spatial}, model)
    half = {}
    for i in spatial:
      c, reach = centre[i], reached[i][0]
      left = next(d for d in range(1, c + 2) if c - d < 0 or c - d not in reach)
      right = next(d for d in range(1, channels[i] + 1)
                   if c + d >= channels[i] or c + d not in reach)
      result[i]['n'] = left + right - 1
      half[i] = max(left, right) - 1
    # 3) Where the window stops: does channel c reach c + 1? Spikes spaced beyond the window.
    spikes = {i: [list(range(start, channels[i], 2 * half[i] + 3))
                  for start in range(2 * half[i] + 3)] for i in spatial}
    reached = self._reached(spikes, model)
    for i in spatial:
      boundaries = [c + 1 for group, reach in zip(spikes[i], reached[i]) for c in group
                    if c + 1 < channels[i] and c + 1 not in reach]
      edges = [0] + sorted(boundaries) + [channels[i]]
      result[i]['groups'] = ([hi - lo for lo, hi in zip(edges, edges[1:])] if half[i]
                             else [1] * channels[i])
    return result

  def _reached(self, spikes: dict[int, list[list[int]]], model: nn.Module
               ) -> dict[int, list[set[int]]]:
    """Per layer and spike set: the channels whose output drops by >1% when the spikes (1e3) are
    added to a small background (1e-2)."""
    crafted = {}
    for i, groups in spikes.items():
      values = np.full((len(groups) + 1, self.traces[i].output_channels), 1e-2)
      for row, group in enumerate(groups, start=1):
        values[row, group] = 1e3
      crafted[i] = self._constant(i, values)
    outputs = self.between(crafted, model=model)
    result = {}
    for i, out in outputs.items():
      at_origin = out[(slice(None),) + (0,) * (out.ndim - 2)]  # [batch, channels]
      result[i] = [set(np.flatnonzero(at_origin[row] < 0.99 * at_origin[0]))
                   for row in range(1, len(spikes[i]) + 1)]
    return result

  def pooling(self, index: int) -> tuple[tuple[int, int] | None, tuple[int, ...]]:
    """(window, stride) of a max-pool between layer `index` and the next (None: no pool), and
    the pooled shape."""
    return self._cached('pooling', self._poolings)[index]

  def _poolings(self) -> dict[int, tuple[tuple[int, int] | None, tuple[int, ...]]]:
    """A single positive value at row i (column 0) of one channel shows up in as many pooled
    positions as windows cover row i; the (window, stride) that predicts these counts and the
    pooled size is the pool."""
    conv = [i for i, t in enumerate(self.traces) if len(t.output_shape) == 3]
    crafted, rows_probed = {}, {}
    for i in conv:
      shape = self.traces[i].output_shape
      rows_probed[i] = min(shape[0], 12)
      crafted[i] = np.zeros((rows_probed[i] + 1,) + shape, np.float32)
      for row in range(rows_probed[i]):
        crafted[i][row + 1, row, 0, 0] = 1.0
    outputs = self.between(crafted)
    result = {}
    for i in conv:
      shape = self.traces[i].output_shape
      out = outputs[i].reshape(rows_probed[i] + 1, -1)
      counts = [int(np.sum(out[row + 1] != out[0])) for row in range(rows_probed[i])]
      nxt = self.next_input_shape(i)
      # Flattened into fc6: the pooled side from the feature count.
      pooled = nxt[0] if len(nxt) == 3 else math.isqrt(out.shape[1] // shape[-1])
      result[i] = ((0, 0), (pooled, pooled, shape[-1]))  # (0, 0): no window and stride fits.
      for window, stride in ((w, s) for w in range(1, shape[0] + 1) for s in range(1, w + 2)):
        if (shape[0] - window) // stride + 1 != pooled:
          continue
        covering = lambda r: sum(p * stride <= r < p * stride + window for p in range(pooled))
        if [covering(r) * covering(0) for r in range(rows_probed[i])] == counts:
          result[i] = (None if (window, stride) == (1, 1) else (window, stride),
                       (pooled, pooled, shape[-1]))
          break
    return result

  def dropout(self, index: int) -> float:
    """The dropout rate between layer `index` and the next."""
    return self._cached('dropout', self._dropouts)[index]

  def _dropouts(self) -> list[float]:
    """Positive constant layer outputs, train=True against train=False: the zeroed fraction and
    the scale of what is kept (inverted dropout scales by 1 / (1 - rate))."""
    crafted = {i: self._constant(i, np.ones((8, t.output_channels)))
               for i, t in enumerate(self.traces)}
    train = self.between(crafted, train=True)
    test = self.between(crafted)
    rates = []
    for i in range(len(self.traces)):
      live = test[i] != 0
      dropped = float(np.mean(train[i][live] == 0))
      kept = live & (train[i] != 0)
      if dropped == 0 or not kept.any():
        rates.append(dropped)
        continue
      rate = 1.0 - 1.0 / float(np.median(train[i][kept] / test[i][kept]))
      rates.append(rate if abs(rate - dropped) < 0.05 else dropped)
    return rates

  # -- Each layer on its own.

  def sees(self, index: int) -> list[tuple[int, int]]:
    return self._cached('sees', self._sees)[index]

  def _sees(self) -> list[list[tuple[int, int]]]:
    """For one output channel per tower: the range of input channels its gradient reaches.

    Each layer runs on its own with all-ones parameters, so that only its structure (which
    inputs a kernel is connected to) decides, not the values of its weights."""
    params = {t.name: {'params': jax.tree.map(lambda a: jnp.ones(a.shape, a.dtype),
                                              self.variables['params'][t.name])}
              for t in self.traces}
    inputs = {t.name: jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), t.inputs)
              for t in self.traces}
    probed = {}
    for t in self.traces:
      towers, per_tower = t.kernel_split
      probed[t.name] = ([c * per_tower for c in range(towers)]
                        if towers * per_tower == t.output_channels else [0])

    @jax.jit  # Parameters and inputs are arguments: as constants XLA would fold the convs.
    def input_grads(params, inputs):
      result = {}
      for t in self.traces:
        apply = lambda xs, t=t: _concat_leaves(t.module.apply(params[t.name], xs))
        outputs, vjp = jax.vjp(apply, inputs[t.name])
        centre = tuple(d // 2 for d in outputs.shape[1:-1])
        cotangents = jnp.stack([jnp.zeros_like(outputs).at[(0,) + centre + (c,)].set(1.0)
                                for c in probed[t.name]])
        grads = jax.vmap(lambda ct: _concat_leaves(vjp(ct)[0]))(cotangents)
        result[t.name] = jnp.abs(grads).reshape(len(cotangents), -1, grads.shape[-1]).sum(1)
      return result

    grads = input_grads(params, inputs)
    seen = []
    for t in self.traces:
      per_output = []
      for reached_C in np.asarray(grads[t.name]):
        reached = np.flatnonzero(reached_C)
        per_output.append((int(reached.min()), int(reached.max()) + 1) if reached.size else (0, 0))
      seen.append(per_output)
    return seen


def _fit_lrn(amplitudes: np.ndarray, ratio: np.ndarray) -> tuple[float, float, float] | None:
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


# ----------------------------------------------------------------------------------------------
# Checkpoints and the command line.


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


def exit_status(rows: list[Row]) -> int:
  return 0 if all(r.status != 'DIFFERS' for r in rows) else 1


def main(argv: Sequence[str]) -> int:
  """The command: 0 when every row matches, 1 otherwise (2 for a UserError, via cli.run)."""
  del argv
  from absl import flags  # pylint: disable=import-outside-toplevel
  config = cli.config_value(example='configs/imagenet.py')
  return run(config, flags.FLAGS.checkpoint, title=' '.join(sys.argv[1:]))


def define_flags() -> None:
  from absl import flags  # pylint: disable=import-outside-toplevel
  cli.define_config_flag(None, 'Config file, e.g. configs/imagenet.py.')
  flags.DEFINE_string('checkpoint', None, 'Report on the params of this Orbax checkpoint (a '
                      'workdir, its checkpoints/ directory, or one step directory).')


if __name__ == '__main__':
  cli.run(main, define_flags)
