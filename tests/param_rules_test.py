"""config.param_rules: per-parameter lr and weight-decay multipliers in both SGD forms, checked
against the update formulas written out in numpy, over steps whose learning rate changes."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from alexnet_jax import checkpoint, optim, param_rules, train
from alexnet_jax.errors import UserError

MOMENTUM, WEIGHT_DECAY = 0.9, 0.05  # A large decay, so that a wrong multiplier shows.
LEARNING_RATES = (0.1, 0.03, 0.01)  # Changes every step: the two forms then differ.
CAFFE_BIASES = (('.*/bias', 2.0, 0.0),)


def _config(optimizer, rules=(), **overrides):
  config = ml_collections.ConfigDict({
      'optimizer': optimizer, 'momentum': MOMENTUM, 'weight_decay': WEIGHT_DECAY,
      'learning_rate': LEARNING_RATES[0], 'grad_clip_norm': 0.0, 'param_rules': rules})
  config.update(overrides)
  return config


def _params():
  rng = np.random.default_rng(0)
  shapes = {'conv1': {'kernel': (2, 3), 'bias': (3,)}, 'fc8': {'kernel': (3, 2), 'bias': (2,)}}
  return {layer: {name: jnp.asarray(rng.normal(size=shape), jnp.float32)
                  for name, shape in kinds.items()} for layer, kinds in shapes.items()}


def _grads(step):
  rng = np.random.default_rng(100 + step)
  return jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), _params())


def _run(config, steps=len(LEARNING_RATES), tx=None, params=None, state=None, first=0):
  """Steps with the learning rate injected as the trainer does; returns (params, state)."""
  tx = tx or optim.create_optimizer(config)
  params = _params() if params is None else params
  state = tx.init(params) if state is None else state
  for step in range(first, steps):
    state.hyperparams['learning_rate'] = jnp.asarray(LEARNING_RATES[step])
    updates, state = tx.update(_grads(step), state, params)
    params = optax.apply_updates(params, updates)
  return params, state


def _reference(form, multipliers, clip=0.0, frozen=()):
  """The formulas of the param_rules docstring in numpy; multipliers: {path: (lr, wd)}."""
  params = jax.tree.map(np.asarray, _params())
  velocity = jax.tree.map(np.zeros_like, params)
  for step, lr in enumerate(LEARNING_RATES):
    grads = jax.tree.map(np.asarray, _grads(step))
    if clip:
      norm = np.sqrt(sum(np.sum(np.square(g)) for g in jax.tree.leaves(grads)))
      grads = jax.tree.map(lambda g: g * min(1.0, clip / norm), grads)
    for layer in params:
      if layer in frozen:
        continue
      for name, w in params[layer].items():
        a, d = multipliers.get(f'{layer}/{name}', (1.0, 1.0))
        g, v = grads[layer][name], velocity[layer][name]
        if form == 'paper_sgd':
          v = MOMENTUM * v - a * lr * (g + d * WEIGHT_DECAY * w)
          params[layer][name] = w + v
        else:
          v = MOMENTUM * v + g + d * WEIGHT_DECAY * w
          params[layer][name] = w - a * lr * v
        velocity[layer][name] = v
  return params


def _assert_close(got, expected):
  jax.tree.map(lambda g, e: np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6), got, expected)


BIASES_2X_NO_DECAY = {'conv1/bias': (2.0, 0.0), 'fc8/bias': (2.0, 0.0)}


@pytest.mark.parametrize('form', ['paper_sgd', 'optax_sgd'])
@pytest.mark.parametrize('rules,multipliers', [
    ((), {}),  # The paper: every parameter alike, biases decayed.
    (CAFFE_BIASES, BIASES_2X_NO_DECAY),  # Only the biases' rule differs.
    ((('fc8/bias', 3.0, 1.0), ('.*/bias', 2.0, 0.0), ('conv1/.*', 0.5, 2.0)),  # First match wins.
     {'fc8/bias': (3.0, 1.0), 'conv1/bias': (2.0, 0.0), 'conv1/kernel': (0.5, 2.0)}),
], ids=['none', 'biases', 'first_match'])
def test_updates_follow_the_formulas(form, rules, multipliers):
  got, _ = _run(_config(form, rules))
  _assert_close(got, _reference(form, multipliers))


@pytest.mark.parametrize('form', ['paper_sgd', 'optax_sgd'])
def test_nearest_wrong_readings_fail(form):
  got, _ = _run(_config(form, CAFFE_BIASES))
  wrong = {
      'rule ignored': {},
      'bias rule applied to the weights too': {f'{l}/{n}': (2.0, 0.0) for l in ('conv1', 'fc8')
                                               for n in ('kernel', 'bias')},
      'lr multiplier only': {'conv1/bias': (2.0, 1.0), 'fc8/bias': (2.0, 1.0)},
      'decay multiplier only': {'conv1/bias': (1.0, 0.0), 'fc8/bias': (1.0, 0.0)},
  }
  for name, multipliers in wrong.items():
    expected = _reference(form, multipliers)
    differs = any(not np.allclose(g, e, rtol=1e-4, atol=1e-5)
                  for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected)))
    assert differs, name
  other_form = _reference({'paper_sgd': 'optax_sgd', 'optax_sgd': 'paper_sgd'}[form],
                          BIASES_2X_NO_DECAY)
  assert not np.allclose(got['fc8']['kernel'], other_form['fc8']['kernel'], rtol=1e-4)


@pytest.mark.parametrize('form', ['paper_sgd', 'optax_sgd'])
def test_rules_compose_with_clipping_and_frozen_layers(form):
  clipped, _ = _run(_config(form, CAFFE_BIASES, grad_clip_norm=0.5))
  _assert_close(clipped, _reference(form, BIASES_2X_NO_DECAY, clip=0.5))
  config = _config(form, CAFFE_BIASES)
  config.finetune = ml_collections.ConfigDict({'freeze': ('conv1',)})
  frozen, _ = _run(config)
  _assert_close(frozen, _reference(form, BIASES_2X_NO_DECAY, frozen=('conv1',)))
  jax.tree.map(np.testing.assert_array_equal, frozen['conv1'], _params()['conv1'])


def test_state_has_the_structure_of_the_optimizer_without_rules():
  # Checkpoints written before param_rules existed hold this structure: they must still restore.
  params = _params()
  for form in ('paper_sgd', 'optax_sgd'):
    with_rules = optim.create_optimizer(_config(form, CAFFE_BIASES)).init(params)
    old = {'paper_sgd': lambda learning_rate: optax.chain(
               optax.add_decayed_weights(WEIGHT_DECAY), optax.scale_by_learning_rate(learning_rate),
               optax.trace(decay=MOMENTUM)),
           'optax_sgd': lambda learning_rate: optax.chain(
               optax.add_decayed_weights(WEIGHT_DECAY),
               optax.sgd(learning_rate, momentum=MOMENTUM))}[form]
    before = optax.inject_hyperparams(old)(learning_rate=0.1).init(params)
    assert jax.tree.structure(with_rules) == jax.tree.structure(before), form


@pytest.mark.parametrize('form', ['paper_sgd', 'optax_sgd'])
def test_resuming_from_a_checkpoint_continues_the_same_updates(form, tmp_path):
  config = _config(form, CAFFE_BIASES)
  tx = optim.create_optimizer(config)
  params, state = _run(config, steps=2, tx=tx)
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  ckpt.save(2, train.TrainState(jnp.asarray(2), params, state), {'step': 2}, {})
  ckpt.wait_until_finished()
  abstract = jax.eval_shape(lambda: train.TrainState(jnp.asarray(0), params, tx.init(params)))
  _, restored, _, _ = ckpt.restore_latest(abstract)
  ckpt.close()
  resumed, _ = _run(config, tx=tx, params=restored.params, state=restored.opt_state, first=2)
  _assert_close(resumed, _reference(form, BIASES_2X_NO_DECAY))


@pytest.mark.parametrize('rules,message', [
    ((('.*/bias', 2.0),), 'must be'),
    ((('(', 1.0, 1.0),), 'not a regular expression'),
    ((('.*/bias', -1.0, 0.0),), '>= 0'),
    ((('bias', 2.0, 0.0),), 'matches no parameter'),  # fullmatch: 'bias' is not 'fc8/bias'.
])
def test_bad_rules_are_user_errors(rules, message):
  with pytest.raises(UserError, match=message):
    optim.create_optimizer(_config('paper_sgd', rules)).init(_params())


def test_rules_read_back_from_config_json_lists():
  assert param_rules.parse([['.*/bias', 2, 0]]) == (('.*/bias', 2.0, 0.0),)


def test_config_checks_reject_a_malformed_rule_before_any_compute():
  from alexnet_jax import config_checks
  from tests.conftest import tiny_config
  config = tiny_config(param_rules=(('.*/bias', 2.0),))
  with pytest.raises(UserError, match=r'config.param_rules\[0\]'):
    config_checks.validate(config)
