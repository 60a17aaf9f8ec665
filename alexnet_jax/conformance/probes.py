"""Runs pieces of a model on crafted inputs: what lies between two layers, or one layer alone.

The layers are the model's top-level submodules that own parameters (conv1 ... fc8). A `Probe`
records each layer's input and output structure once (under `jax.eval_shape`), then replaces the
layers' outputs with crafted values through `flax.linen.intercept_methods`, so that what runs is
only what lies between them: activation, LRN, pooling, dropout, flattening. `measure.py` turns
those runs into measurements.
"""

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

PROBE_BATCH = 32  # Crafted inputs per layer in one run.


@dataclasses.dataclass
class LayerTrace:
  """One layer's structure as the model calls it (towers as a tuple of arrays)."""
  name: str
  module: nn.Module  # An unbound copy of the layer, to run it on its own.
  inputs: Any  # Pytree of ShapeDtypeStruct, batch 1.
  outputs: Any
  kernel_split: tuple[int, int] = (1, 0)  # (towers, kernels per tower) of the kernel parameter.

  @property
  def input_shape(self) -> tuple[int, ...]:
    return _shape(self.inputs)

  @property
  def input_channels(self) -> int:
    return _channels(self.inputs)

  @property
  def output_shape(self) -> tuple[int, ...]:
    return _shape(self.outputs)

  @property
  def output_channels(self) -> int:
    return _channels(self.outputs)

  @property
  def is_spatial(self) -> bool:
    """A convolution's output: [H, W, C]."""
    return len(self.output_shape) == 3


def _channels(towers: Any) -> int:
  return sum(leaf.shape[-1] for leaf in jax.tree.leaves(towers))


def _shape(towers: Any) -> tuple[int, ...]:
  """[H, W, C] (or [C]) of one example, C summed over the towers."""
  return tuple(jax.tree.leaves(towers)[0].shape[1:-1]) + (_channels(towers),)


def concat_leaves(tree: Any) -> jax.Array:
  """The towers' arrays joined along channels."""
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


def _struct(tree: Any) -> Any:
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)


class Probe:
  """A model's layers, and runs of what lies between them on crafted layer outputs."""

  def __init__(self, model: nn.Module, variables: Any, image_shape: tuple[int, int, int]):
    # Probes compute in float32 whatever the training dtype, so that fits are not bfloat16-limited.
    self.model = model.clone(dtype=jnp.float32) if hasattr(model, 'dtype') else model
    self.variables = variables
    self.image_shape = image_shape
    self.traces = self._trace()
    self._compiled: dict[tuple, Callable] = {}  # (train, id(model)) -> compiled `_between`.
    self._variants: dict[tuple, nn.Module] = {}  # Kept alive: their ids key `_compiled`.

  def _trace(self) -> list[LayerTrace]:
    names = list(self.variables['params'])
    traces: list[LayerTrace] = []

    def record(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      name = _layer_name(context, names)
      if name is not None:
        kernel = self.variables['params'][name]['kernel']
        traces.append(LayerTrace(name, context.module.clone(parent=None, name=None),
                                 _struct(args[0]), _struct(out),
                                 (kernel.shape[0], kernel.shape[-1])))
      return out

    images = jax.ShapeDtypeStruct((1,) + self.image_shape, jnp.float32)
    with nn.intercept_methods(record):
      jax.eval_shape(lambda v, x: self.model.apply(v, x, train=False), self.variables, images)
    return traces

  def variant(self, **fields: Any) -> nn.Module:
    """The model with those of `fields` it has (e.g. activation='relu', lrn=False), so that one
    part is probed without another; the same object for the same fields."""
    fields = {k: v for k, v in sorted(fields.items())
              if hasattr(self.model, k) and getattr(self.model, k) != v}
    key = tuple(fields.items())
    if key not in self._variants:
      self._variants[key] = self.model.clone(**fields) if fields else self.model
    return self._variants[key]

  def next_input_shape(self, index: int) -> tuple[int, ...]:
    """The input shape of the layer after `index`; () after the last."""
    if index + 1 < len(self.traces):
      return self.traces[index + 1].input_shape
    return ()

  def constant(self, index: int, values_BC: np.ndarray) -> np.ndarray:
    """Per batch element, the channel values `values_BC` at every spatial position of layer
    `index`'s output."""
    shape = self.traces[index].output_shape
    values = np.asarray(values_BC, np.float32)
    return np.broadcast_to(values.reshape((values.shape[0],) + (1,) * (len(shape) - 1) + (
        shape[-1],)), (values.shape[0],) + shape)

  def between(self, crafted: dict[int, np.ndarray], *, train: bool = False,
              model: nn.Module | None = None) -> dict[int, np.ndarray]:
    """Layer i outputs `crafted[i]` (its towers' channels concatenated, any batch size); returns
    for each such i the next layer's input (channels concatenated), or the model's output after
    the last layer. Layers without crafted outputs output zeros; no layer is computed."""
    if not crafted:
      return {}
    run = self._compiled_between(train, model or self.model)
    rows = max(len(v) for v in crafted.values())
    outputs: dict[int, list[np.ndarray]] = {i: [] for i in crafted}
    for start in range(0, rows, PROBE_BATCH):
      batch = []
      for i, trace in enumerate(self.traces):
        padded = np.zeros((PROBE_BATCH,) + trace.output_shape, np.float32)
        chunk = crafted[i][start:start + PROBE_BATCH] if i in crafted else padded[:0]
        padded[:len(chunk)] = chunk
        batch.append(padded)
      result = run(batch)
      for i in crafted:
        outputs[i].append(np.asarray(result[i]))
    return {i: np.concatenate(outputs[i])[:len(crafted[i])] for i in crafted}

  def _compiled_between(self, train: bool, model: nn.Module) -> Callable:
    key = (train, id(model))
    if key not in self._compiled:
      self._compiled[key] = jax.jit(functools.partial(self._between, train, model))
    return self._compiled[key]

  def _between(self, train: bool, model: nn.Module, crafted: list[jax.Array]) -> list[jax.Array]:
    names = [t.name for t in self.traces]
    inputs: dict[int, jax.Array] = {}

    def intercept(next_fun, args, kwargs, context):
      name = _layer_name(context, names)
      if name is None:
        return next_fun(*args, **kwargs)
      i = names.index(name)
      if i > 0:
        inputs[i - 1] = concat_leaves(args[0])
      return _split_like(crafted[i], self.traces[i].outputs)

    images = jnp.zeros((PROBE_BATCH,) + self.image_shape, jnp.float32)
    with nn.intercept_methods(intercept):
      logits = model.apply(self.variables, images, train=train,
                           rngs={'dropout': jax.random.key(0)})
    inputs[len(names) - 1] = logits
    return [inputs[i] for i in range(len(names))]
