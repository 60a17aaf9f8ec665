"""Names of the leaves of parameter and state trees: 'params/conv1/kernel', spelt one way.

Checkpoint checksums, the shape checks and the optimizer-state mapping all name a leaf by its path
with '/' between the dict keys, attribute names and list indices on the way to it.
"""

from typing import Any

import jax


def path_name(path: tuple[Any, ...]) -> str:
  """'opt_state/inner_state/2/trace/conv1/kernel' for a jax key path."""
  return '/'.join(str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k)))) for k in path)


def flatten(tree: Any) -> list[tuple[str, Any]]:
  """[(path name, leaf), ...] in jax's leaf order."""
  return [(path_name(path), leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]


def shape_str(shape: tuple[int, ...] | None) -> str:
  """'2x11x11x3x48'; 'scalar' for (); 'nothing' for a missing leaf."""
  return 'nothing' if shape is None else 'x'.join(map(str, shape)) or 'scalar'
