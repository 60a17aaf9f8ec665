"""Multiply-adds of a model's convolutions and matrix products, read from its traced jaxpr.

One walk serves the benchmark (FLOPs per image, for GFLOP/s) and the conformance report
(multiply-adds and kernel geometry per layer). Every `conv_general_dilated` and `dot_general` is
recorded with the parameter its kernel is computed from (followed through slices, casts and
reshapes, and into pjit / custom_jvp / custom_vjp / remat calls) and whether it reads the traced
input. The model is traced on XLA's own kernels (`Layout(kernels='xla')`): oneDNN's convolutions
are foreign calls whose insides a jaxpr does not show.
"""

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.extend.core as jex

from alexnet_jax import trees


@dataclasses.dataclass(frozen=True)
class MatmulOp:
  """One convolution or matrix product of a traced function."""
  kind: str  # 'conv' | 'dense'
  macs: int  # Multiply-adds over the whole traced batch.
  parameter: str | None  # Path of the parameter its kernel comes from ('params/conv1/kernel').
  reads_input: bool  # Whether it depends on the traced input (not only on parameters).
  geometry: tuple | None = None  # conv: ((kh, kw), (sh, sw), ((top, bottom), (left, right))).
  groups: int = 1  # conv: feature_group_count.

  @property
  def layer(self) -> str | None:
    """'conv1' for a kernel from 'params/conv1/kernel'; None when no parameter feeds it."""
    if self.parameter is None:
      return None
    parts = self.parameter.split('/')
    return parts[1] if parts[0] == 'params' and len(parts) > 1 else self.parameter


def with_xla_kernels(model: nn.Module) -> nn.Module:
  """`model` computing with plain lax ops, so that a jaxpr shows its convolutions."""
  layout = getattr(model, 'layout', None)
  if layout is None:  # Baselines: flax's own layers, always lax.
    return model
  return model.clone(layout=dataclasses.replace(layout, kernels='xla'))


def forward_ops(model: nn.Module, variables: Any, images: Any) -> list[MatmulOp]:
  """The convolutions and matrix products of `model.apply(variables, images, train=False)`.

  `variables` and `images` may be arrays or ShapeDtypeStructs (nothing is computed). The model
  runs on XLA's kernels whatever its layout says.
  """
  model = with_xla_kernels(model)
  struct = lambda tree: jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)
  closed = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(struct(variables),
                                                                       struct(images))
  return jaxpr_ops(closed.jaxpr, [path for path, _ in trees.flatten(variables)] + [None])


def jaxpr_ops(jaxpr: Any, invar_parameters: Sequence[str | None]) -> list[MatmulOp]:
  """Every convolution and matrix product of `jaxpr`; `invar_parameters[i]` names the parameter
  input i is (None: the input data)."""
  origin, data = {}, set()
  for var, path in zip(jaxpr.invars, invar_parameters):
    if path is None:
      data.add(var)
    else:
      origin[var] = path
  ops: list[MatmulOp] = []
  _walk(jaxpr, origin, data, ops)
  return ops


def multiply_adds(ops: Sequence[MatmulOp]) -> int:
  return sum(op.macs for op in ops)


def _sub_jaxprs(eqn: Any) -> list[Any]:
  """The jaxprs inside `eqn`'s parameters (call bodies, cond branches, ...)."""
  subs = []
  for value in eqn.params.values():
    for item in value if isinstance(value, (tuple, list)) else (value,):
      if isinstance(item, jex.ClosedJaxpr):
        subs.append(item.jaxpr)
      elif isinstance(item, jex.Jaxpr):
        subs.append(item)
  return subs


def _is_call(eqn: Any, subs: list[Any]) -> bool:
  """pjit, custom_jvp/vjp calls, remat: one body whose inputs and outputs are the equation's."""
  return (len(subs) == 1 and len(subs[0].invars) == len(eqn.invars)
          and len(subs[0].outvars) == len(eqn.outvars))


def _link(outer_vars: Sequence[Any], inner_vars: Sequence[Any], origin: dict, data: set) -> None:
  """Carries parameter origin and input dependence from each outer var to its inner twin."""
  for outer, inner in zip(outer_vars, inner_vars):
    if isinstance(outer, jex.Literal) or isinstance(inner, jex.Literal):
      continue
    if outer in data:
      data.add(inner)
    if outer in origin:
      origin[inner] = origin[outer]


def _walk(jaxpr: Any, origin: dict, data: set, ops: list[MatmulOp]) -> None:
  """Appends `jaxpr`'s convolutions and matrix products to `ops`, in order.

  `origin`: var -> parameter path it derives from; `data`: vars that depend on the input. Bodies
  of other higher-order primitives (cond branches, loops) are walked without that information:
  their operations count, unattributed.
  """
  for eqn in jaxpr.eqns:
    subs = _sub_jaxprs(eqn)
    if _is_call(eqn, subs):
      _link(eqn.invars, subs[0].invars, origin, data)
      _walk(subs[0], origin, data, ops)
      _link(subs[0].outvars, eqn.outvars, origin, data)
      continue
    for sub in subs:
      _walk(sub, {}, set(), ops)
    invars = [v for v in eqn.invars if not isinstance(v, jex.Literal)]
    reads_input = any(v in data for v in invars)
    if eqn.primitive.name in ('conv_general_dilated', 'dot_general'):
      lhs, rhs = eqn.invars[:2]
      ops.append(_op(eqn, origin.get(rhs) or origin.get(lhs), reads_input))
    if reads_input:
      data.update(eqn.outvars)
      continue
    sources = {origin[v] for v in invars if v in origin}
    if len(sources) == 1 and len(eqn.outvars) == 1:  # A slice / cast / reshape of one parameter.
      origin[eqn.outvars[0]] = sources.pop()


def _op(eqn: Any, parameter: str | None, reads_input: bool) -> MatmulOp:
  out_shape = eqn.outvars[0].aval.shape
  lhs, rhs = (v.aval.shape for v in eqn.invars[:2])
  if eqn.primitive.name == 'conv_general_dilated':
    rhs_spec = eqn.params['dimension_numbers'].rhs_spec  # (out, in, *spatial) dims of the kernel.
    spatial = tuple(rhs[d] for d in rhs_spec[2:])
    fan_in = rhs[rhs_spec[1]] * math.prod(spatial)
    geometry = (spatial, tuple(eqn.params['window_strides']),
                tuple(tuple(p) for p in eqn.params['padding']))
    return MatmulOp('conv', math.prod(out_shape) * fan_in, parameter, reads_input, geometry,
                    eqn.params['feature_group_count'])
  (contracting, _), _ = eqn.params['dimension_numbers']
  return MatmulOp('dense', math.prod(out_shape) * math.prod(lhs[d] for d in contracting),
                  parameter, reads_input)
