"""The training recipe beside a source's: the optimizer measured, the rest read from the config.

The optimizer is the one the trainer builds (`optim.create_optimizer(config)`), run on a tiny
tree with the model's parameter paths (every leaf kept at its rank, 1-2 elements per axis): from
zero parameters a gradient step gives each leaf's learning rate, from unit parameters and zero
gradients its weight decay, a second step the momentum, and a step with the learning rate cut
tenfold the update form (the paper's velocity keeps the old rate; PyTorch's rescales). Every
other item of the source (schedule, batch, input convention, augmentation, test views) is the
config key of that name.
"""

import dataclasses
import math
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from alexnet_jax import trees
from alexnet_jax.conformance.spec import MODEL_FACTS, ModelSpec

_GRADIENT = 1e-3  # Small: far below any gradient clipping norm.
_RELATIVE = 1e-4  # Tolerance of measured rates (float32 arithmetic on tiny values).
_KINDS = {'kernel': 'weights', 'bias': 'biases'}
_FORMS = {'paper_sgd': 'paper: v <- m v - lr (g + wd w); w <- w + v',
          'optax_sgd': 'PyTorch: v <- m v + g + wd w; w <- w - lr v'}


@dataclasses.dataclass(frozen=True)
class LeafRates:
  learning_rate: float
  weight_decay: float
  momentum: float
  form: str  # 'paper_sgd' | 'optax_sgd' | 'either (no momentum)' | 'frozen'


def _tiny(abstract_params: Any) -> Any:
  return jax.tree.map(lambda a: jnp.zeros(tuple(min(d, 2) for d in a.shape), jnp.float32),
                      abstract_params)


def measure_optimizer(tx: Any, abstract_params: Any) -> dict[str, LeafRates]:
  """Per parameter path ('conv1/bias'): what `tx` (an optax.inject_hyperparams transform with a
  'learning_rate') does to it. Raises ValueError when `tx` has no injected learning rate."""
  zeros = _tiny(abstract_params)
  ones = jax.tree.map(jnp.ones_like, zeros)
  grads = jax.tree.map(lambda z: jnp.full_like(z, _GRADIENT), zeros)
  start = tx.init(zeros)
  hyper = getattr(start, 'hyperparams', None)
  if not hyper or 'learning_rate' not in hyper:
    raise ValueError('the optimizer has no injected learning rate')
  step, after_step = tx.update(grads, start, zeros)
  decayed, _ = tx.update(jax.tree.map(jnp.zeros_like, zeros), start, ones)
  second, _ = tx.update(grads, after_step, zeros)
  slower = after_step._replace(hyperparams={**after_step.hyperparams,
                                            'learning_rate': hyper['learning_rate'] / 10})
  coasting, _ = tx.update(jax.tree.map(jnp.zeros_like, zeros), slower, zeros)
  leaves = [dict(trees.flatten(t)) for t in (step, decayed, second, coasting)]
  return {path: _leaf_rates(*(float(np.ravel(tree[path])[0]) for tree in leaves))
          for path in leaves[0]}


def _leaf_rates(step: float, decayed: float, second: float, coasting: float) -> LeafRates:
  """From one element's updates (see the module docstring)."""
  if step == 0:
    return LeafRates(0.0, 0.0, 0.0, 'frozen')
  learning_rate = -step / _GRADIENT
  momentum = second / step - 1
  form = 'either (no momentum)'
  if abs(momentum) > _RELATIVE:
    kept = coasting / (momentum * step)  # 1: the velocity keeps the old rate; 0.1: rescaled.
    form = 'paper_sgd' if abs(kept - 1) < 0.05 else 'optax_sgd' if abs(kept - 0.1) < 0.05 else (
        f'unknown (kept {kept:.3g} of the velocity)')
  return LeafRates(learning_rate, -decayed / learning_rate, momentum, form)


def cite(spec: ModelSpec, *keys: str) -> str:
  """The sources (and how they write it) of the facts `keys`, as one string."""
  facts = [spec.source(key) for key in keys]
  return '; '.join(dict.fromkeys(f.source + (f' ({f.note})' if f.note else '')
                                 for f in facts if f is not None))


def expected_rates(spec: ModelSpec, paths: list[str]) -> dict[str, tuple[float, float]]:
  """Per parameter path: (learning rate, weight decay) the source gives it: its base values times
  the multipliers of the first `param_rules` rule whose regex matches the whole path."""
  lr, wd = spec.source('learning_rate').value, spec.source('weight_decay').value
  rules = spec.source('param_rules').value if spec.source('param_rules') else ()
  rates = {}
  for path in paths:
    lr_mult, wd_mult = next(((a, d) for regex, a, d in rules if re.fullmatch(regex, path)),
                            (1.0, 1.0))
    rates[path] = (lr * lr_mult, wd * wd_mult)
  return rates


def optimizer_rows(config: ml_collections.ConfigDict, abstract_params: Any, spec: ModelSpec,
                   make_row: Callable) -> list:
  """weights / biases learning rate and weight decay, momentum and update form."""
  from alexnet_jax import optim  # pylint: disable=import-outside-toplevel  # Heavy; only here.
  try:
    rates = measure_optimizer(optim.create_optimizer(config), abstract_params)
  except ValueError as e:
    return [make_row('optimizer', 'update', 'sgd', f'not measurable: {e}', False)]
  expected = expected_rates(spec, list(rates))
  rows = []
  for name, kind in _KINDS.items():
    paths = [p for p in rates if p.rpartition('/')[2] == name]
    for index, (field, label, key) in enumerate((('learning_rate', 'learning rate',
                                                  'learning_rate'),
                                                 ('weight_decay', 'weight decay',
                                                  'weight_decay'))):
      want = {p.rpartition('/')[0]: expected[p][index] for p in paths}
      got = {p.rpartition('/')[0]: getattr(rates[p], field) for p in paths}
      rows.append(make_row(kind, label, _per_layer(want), _per_layer(got), _close(got, want),
                           source=cite(spec, key, 'param_rules')))
  momentum = spec.source('momentum').value
  got = {path: leaf.momentum for path, leaf in rates.items()}
  rows.append(make_row('optimizer', 'momentum', f'{momentum:g}', _per_layer(got),
                       _close(got, dict.fromkeys(got, momentum)), source=cite(spec, 'momentum')))
  forms = sorted({leaf.form for leaf in rates.values()} - {'frozen'})
  form = spec.source('optimizer').value
  rows.append(make_row('optimizer', 'update form', _FORMS.get(form, form),
                       ', '.join(_FORMS.get(f, f) for f in forms) or 'frozen', forms == [form],
                       source=cite(spec, 'optimizer')))
  return rows


def _close(got: dict[str, float], want: dict[str, float]) -> bool:
  return bool(got) and got.keys() == want.keys() and all(
      math.isclose(got[k], want[k], rel_tol=_RELATIVE, abs_tol=1e-12) for k in got)


def _per_layer(values: dict[str, float]) -> str:
  """One value when every layer has it, else each value with its layers."""
  distinct = sorted({round(v, 12) + 0.0 for v in values.values()})  # + 0.0: no '-0'.
  if len(distinct) <= 1:
    return f'{distinct[0]:g}' if distinct else 'no such parameters'
  return ', '.join(f'{v:g} ({" ".join(k for k, x in values.items() if round(x, 12) == v)})'
                   for v in distinct)


# ----------------------------------------------------------------------------------------------
# Items read from the config.

_MISSING = object()
OPTIMIZER_FACTS = ('optimizer', 'learning_rate', 'momentum', 'weight_decay', 'param_rules')


def _config_value(config: ml_collections.ConfigDict, key: str) -> Any:
  node: Any = config
  for part in key.split('.'):
    if not hasattr(node, 'get') or part not in node:
      return _MISSING
    node = node[part]
  return node


def _same(got: Any, want: Any) -> bool:
  if isinstance(want, (tuple, list)) and isinstance(got, (tuple, list)):
    return len(got) == len(want) and all(_same(g, w) for g, w in zip(got, want))
  if isinstance(want, bool) or isinstance(got, bool) or want is None or got is None:
    return got is want or got == want
  if isinstance(want, (int, float)) and isinstance(got, (int, float)):
    return math.isclose(got, want, rel_tol=1e-9)
  return got == want


def _show(value: Any) -> str:
  if value is _MISSING:
    return 'not in the config'
  if isinstance(value, (tuple, list)):
    return '(' + ', '.join(_show(v) for v in value) + ')'
  return 'none' if value is None else f'{value:.6g}' if isinstance(value, float) else str(value)


def config_rows(config: ml_collections.ConfigDict, spec: ModelSpec, make_row: Callable) -> list:
  """One row per fact of the source that is not measured: the config key of that name."""
  rows = []
  for key, fact in spec.facts.items():
    if key in MODEL_FACTS or key in OPTIMIZER_FACTS:
      continue
    got = _config_value(config, key)
    rows.append(make_row('config', key, _show(fact.value), _show(got),
                         got is not _MISSING and _same(got, fact.value), source=cite(spec, key)))
  return rows
