"""Parameter trees by path: 'conv1/kernel' names for their leaves, and one shape comparison.

Checkpoints (checksums, restore), conversion of pretrained weights and the conformance report all
name leaves and compare a tree with the shapes a model expects; they do it here, the same way.
"""

from collections.abc import Callable
from typing import Any

import jax

from alexnet_jax.errors import UserError


def _key_name(key: Any) -> str:
  # DictKey has .key, GetAttrKey (dataclasses, flax structs) .name, SequenceKey .idx.
  return str(getattr(key, 'key', getattr(key, 'name', getattr(key, 'idx', key))))


def path_name(path: tuple[Any, ...]) -> str:
  """'opt_state/inner_state/2/trace/conv1/kernel' for a jax key path."""
  return '/'.join(_key_name(k) for k in path)


def flatten(tree: Any) -> list[tuple[str, Any]]:
  """[('params/conv1/kernel', leaf), ...] in the tree's leaf order."""
  return [(path_name(path), leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]


def shape_str(shape: Any) -> str:
  """'9216x4096'; 'scalar' for (); 'nothing' for a leaf one tree does not have."""
  return 'nothing' if shape is None else 'x'.join(map(str, shape)) or 'scalar'


def check_same_shapes(got: Any, expected: Any, problem: Callable[[str, str, str], str]) -> None:
  """Raises UserError(problem(path, got's shape, expected's shape)) for the first path (sorted)
  whose leaves differ in shape or that only one tree has; shapes formatted by `shape_str`.

  Leaves may be arrays, ShapeDtypeStructs or checkpoint metadata: anything with a `.shape`.
  """
  got, expected = dict(flatten(got)), dict(flatten(expected))
  for path in sorted(set(got) | set(expected)):
    got_shape = getattr(got.get(path), 'shape', None)
    expected_shape = getattr(expected.get(path), 'shape', None)
    if got_shape is None or expected_shape is None or tuple(got_shape) != tuple(expected_shape):
      raise UserError(problem(path, shape_str(got_shape), shape_str(expected_shape)))
