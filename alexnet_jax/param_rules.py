"""Per-parameter learning-rate and weight-decay multipliers (`config.param_rules`), and the SGD
that applies them in either update form.

`config.param_rules` is a tuple of rules (path regex, lr multiplier, weight-decay multiplier). A
parameter's path is its place in the parameter tree joined by '/', e.g. 'conv1/kernel' or
'fc8/bias'. The first rule whose regex matches the whole path (`re.fullmatch`) gives the
parameter's multipliers; a parameter no rule matches gets 1 and 1. The empty tuple is the paper,
which treats every parameter alike (docs/paper.md, "Training (§5)"); Caffe and cuda-convnet2 give
biases twice the learning rate and no weight decay: (('.*/bias', 2.0, 0.0),).

With lr multiplier a and weight-decay multiplier d for a parameter w with gradient g:
  'paper_sgd' (§5; Caffe's sgd_solver.cpp lines 162, 228-234):
      v <- m v - a lr (g + d wd w);  w <- w + v
  'optax_sgd' (optax.sgd; PyTorch's SGD with one parameter group per rule):
      b <- m b + g + d wd w;  w <- w - a lr b
The multipliers are constants, so scaling before or after the momentum trace gives the same
steps; they sit where each form's reference puts them, so the saved momentum means what it means
there. The optimizer state has the same structure with or without rules (the rule transforms keep
no state), so a checkpoint written before `param_rules` existed still restores.
"""

import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from alexnet_jax.errors import UserError

Rule = tuple[str, float, float]  # (path regex, lr multiplier, weight-decay multiplier).


def parse(rules: Sequence[Sequence[Any]] | None) -> tuple[Rule, ...]:
  """`config.param_rules` (tuples, or the lists config.json gives back) checked and normalised.

  Raises UserError naming the rule for a malformed rule, a bad regex or a negative multiplier.
  """
  parsed = []
  for i, rule in enumerate(rules or ()):
    where = f'config.param_rules[{i}]={tuple(rule) if isinstance(rule, list) else rule!r}'
    if isinstance(rule, str) or len(rule) != 3:
      raise UserError(f'{where} must be (path regex, lr multiplier, weight-decay multiplier), '
                      "e.g. ('.*/bias', 2.0, 0.0).")
    pattern, lr_mult, wd_mult = rule
    try:
      re.compile(pattern)
    except (re.error, TypeError) as e:
      raise UserError(f'{where}: {pattern!r} is not a regular expression ({e}).') from e
    if not all(isinstance(m, (int, float)) and not isinstance(m, bool) and m >= 0
               for m in (lr_mult, wd_mult)):
      raise UserError(f'{where}: the multipliers must be numbers >= 0.')
    parsed.append((pattern, float(lr_mult), float(wd_mult)))
  return tuple(parsed)


def path_name(path: Sequence[Any]) -> str:
  """'conv1/kernel' for a tree path of dict keys (or attribute names, sequence indices)."""
  parts = []
  for key in path:
    for attribute in ('key', 'name', 'idx'):
      if hasattr(key, attribute):
        parts.append(str(getattr(key, attribute)))
        break
    else:
      parts.append(str(key))
  return '/'.join(parts)


def multipliers(rules: Sequence[Rule], path: str) -> tuple[float, float]:
  """(lr multiplier, weight-decay multiplier) of the parameter at `path`: the first match wins."""
  for pattern, lr_mult, wd_mult in rules:
    if re.fullmatch(pattern, path):
      return lr_mult, wd_mult
  return 1.0, 1.0


def _leaves(tree: Any) -> list[tuple[str, Any]]:
  """(path, leaf) of every parameter, counting a layer masked out of this branch (frozen) too."""
  is_masked = lambda x: isinstance(x, optax.MaskedNode)
  flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_masked)
  return [(path_name(path), leaf) for path, leaf in flat]


def check_rules_match(rules: Sequence[Rule], params: Any) -> None:
  """Raises UserError for a rule that matches no parameter (a typo would otherwise pass)."""
  paths = [path for path, _ in _leaves(params)]
  for pattern, _, _ in rules:
    if not any(re.fullmatch(pattern, path) for path in paths):
      raise UserError(f'config.param_rules: {pattern!r} matches no parameter; the parameters are '
                      f'{", ".join(paths)} (the regex must match a whole path).')


def _map(fn: Callable[..., jax.Array], tree: Any, *rest: Any) -> Any:
  """fn(path name, leaf, *the same leaf of each of `rest`) over `tree`."""
  return jax.tree_util.tree_map_with_path(lambda path, *x: fn(path_name(path), *x), tree, *rest)


def add_decayed_weights(weight_decay: float, rules: Sequence[Rule]
                        ) -> optax.GradientTransformation:
  """updates + d * weight_decay * params, d the weight-decay multiplier of each parameter."""

  def init(params):
    check_rules_match(rules, params)
    return optax.EmptyState()

  def update(updates, state, params):
    if params is None:
      raise ValueError('add_decayed_weights needs the parameters.')
    decay = lambda path, u, p: u + multipliers(rules, path)[1] * weight_decay * p
    return _map(decay, updates, params), state

  return optax.GradientTransformation(init, update)


def scale_by_learning_rate(learning_rate: Any, rules: Sequence[Rule]
                           ) -> optax.GradientTransformation:
  """updates * (-a * learning_rate), a the lr multiplier of each parameter (a traced scalar
  learning rate, as optax.inject_hyperparams passes it, is fine)."""

  def update(updates, state, params=None):
    del params
    step = lambda path, u: u * jnp.asarray(-multipliers(rules, path)[0] * learning_rate, u.dtype)
    return _map(step, updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def sgd(config: ml_collections.ConfigDict) -> Callable[[Any], optax.GradientTransformation]:
  """learning_rate -> SGD with momentum and weight decay of `config.optimizer`'s form, each
  parameter scaled by its `config.param_rules` multipliers (see the module docstring)."""
  rules = parse(config.get('param_rules'))
  decay = add_decayed_weights(config.weight_decay, rules)

  def paper_sgd(learning_rate):
    return optax.chain(decay, scale_by_learning_rate(learning_rate, rules),
                       optax.trace(decay=config.momentum))

  def optax_sgd(learning_rate):  # optax.sgd(lr, momentum) is chain(trace, scale by -lr).
    return optax.chain(decay, optax.chain(optax.trace(decay=config.momentum),
                                          scale_by_learning_rate(learning_rate, rules)))

  return {'paper_sgd': paper_sgd, 'optax_sgd': optax_sgd}[config.optimizer]
