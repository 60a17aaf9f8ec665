"""The optimizer, the learning-rate schedules in examples, and optimizer state across a change."""

import importlib
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from alexnet_jax import optim, registry
from tests.conftest import tiny_config


def _sgd_run(optimizer, learning_rates, grads, w0, momentum=0.9, weight_decay=5e-4):
  config = tiny_config(optimizer=optimizer, momentum=momentum, weight_decay=weight_decay)
  tx = optim.create_optimizer(config)
  params = jnp.asarray(w0)
  state = tx.init(params)
  for lr, g in zip(learning_rates, grads):
    state.hyperparams['learning_rate'] = lr
    updates, state = tx.update(jnp.asarray(g), state, params)
    params = optax.apply_updates(params, updates)
  return np.asarray(params)


def test_paper_and_optax_sgd_follow_their_formulas():
  rng = np.random.default_rng(0)
  w0 = rng.normal(size=3).astype(np.float32)
  grads = rng.normal(size=(4, 3)).astype(np.float32)
  lrs = [0.1, 0.1, 0.01, 0.01]  # The two forms differ once the learning rate changes.
  w, v = w0.copy(), np.zeros(3, np.float32)
  for lr, g in zip(lrs, grads):  # §5: v <- 0.9 v - 0.0005 lr w - lr g; w <- w + v.
    v = 0.9 * v - 5e-4 * lr * w - lr * g
    w = w + v
  np.testing.assert_allclose(_sgd_run('paper_sgd', lrs, grads, w0), w, rtol=1e-5)
  w, v = w0.copy(), np.zeros(3, np.float32)
  for lr, g in zip(lrs, grads):  # optax / PyTorch: v <- 0.9 v + g + wd w; w <- w - lr v.
    v = 0.9 * v + g + 5e-4 * w
    w = w - lr * v
  np.testing.assert_allclose(_sgd_run('optax_sgd', lrs, grads, w0), w, rtol=1e-5)
  assert not np.allclose(_sgd_run('paper_sgd', lrs, grads, w0), w)


def test_plateau_divides_by_ten_at_most_three_times():
  plateau = optim.Plateau(patience=2, min_delta=0.01, max_reductions=3)
  errors = [0.5, 0.4, 0.395, 0.41, 0.3, 0.3, 0.3] + [0.3] * 10
  reductions = [plateau.update(e) for e in errors]
  assert reductions[:7] == [False, False, False, True, False, False, True]
  assert plateau.reductions == 3 and plateau.factor == pytest.approx(1e-3)
  restored = optim.Plateau(2, 0.01, 3)
  restored.load_json(json.loads(json.dumps(plateau.to_json())))
  assert restored == plateau



def test_step_schedule_drops_at_epoch_boundaries():
  config = tiny_config(lr_schedule='step', learning_rate=0.01, lr_step_epochs=(1, 2))
  lr = optim.base_learning_rate_fn(config, steps_per_epoch=10, total_steps=30)
  np.testing.assert_allclose([lr(0), lr(9), lr(10), lr(19), lr(20)],
                             [0.01, 0.01, 0.001, 0.001, 0.0001], rtol=1e-6)


def test_caffe_stepsize_is_gamma_to_the_floor_of_iter_over_stepsize():
  # Caffe's "step" policy (sgd_solver.cpp lines 32-37): base_lr * gamma ^ floor(iter / stepsize),
  # iter counted from 0 as the trainer counts steps. configs/bvlc_alexnet.py: stepsize 100,000.
  config = tiny_config(lr_schedule='step', learning_rate=0.01, lr_step_every_steps=3,
                       lr_step_factor=0.5)
  lr = optim.base_learning_rate_fn(config, steps_per_epoch=100, total_steps=10)
  caffe = [0.01 * 0.5 ** (step // 3) for step in range(10)]
  np.testing.assert_allclose([lr(step) for step in range(10)], caffe, rtol=1e-6)
  # The nearest wrong readings: one step late (a drop after iter == stepsize), factor 0.1.
  assert not np.allclose([lr(step) for step in range(10)],
                         [0.01 * 0.5 ** (max(step - 1, 0) // 3) for step in range(10)])
  bvlc = importlib.import_module('configs.bvlc_alexnet').get_config()
  bvlc_lr = optim.base_learning_rate_fn(bvlc, steps_per_epoch=10_009, total_steps=450_000)
  np.testing.assert_allclose([bvlc_lr(s) for s in (99_999, 100_000, 199_999, 200_000)],
                             [0.01, 0.001, 0.001, 0.0001], rtol=1e-5)


def test_the_learning_rate_goes_on_in_examples_when_the_batch_size_changes():
  config = tiny_config(lr_schedule='cosine', learning_rate=0.1)
  length = optim.TrainingLength.from_config(config, epoch_size=96, step_batch_size=16)
  assert (length.steps_per_epoch, length.total_steps, length.total_examples) == (6, 6, 96)
  lr = optim.LearningRate(config, optim.Plateau.from_config(config), length)
  cosine = lambda fraction: 0.1 * 0.5 * (1 + np.cos(np.pi * fraction))
  # Same batch size: the step count itself (bit for bit what optax gives for step 4).
  assert lr(4 * 16) == np.float32(optax.cosine_decay_schedule(0.1, 6)(4))
  # 64 examples at batch 16, then batch 32: 96 - 64 = 32 left, one step at 4 of 6 steps of 16.
  assert length.steps_left(64, 32) == 1 and length.steps_left(64, 16) == 2
  np.testing.assert_allclose(lr(64), cosine(4 / 6), rtol=1e-6)
  np.testing.assert_allclose(lr(80), cosine(5 / 6), rtol=1e-6)  # Half way through a step of 16.
  assert length.steps_left(90, 32) == 1 and length.steps_left(96, 32) == 0  # Ends past the last.
  by_steps = optim.TrainingLength.from_config(tiny_config(num_train_steps=10), 96, 16)
  assert by_steps.total_examples == 160 and by_steps.steps_left(64, 32) == 3


def test_plateau_reductions_scale_only_the_plateau_schedule():
  config = tiny_config(lr_schedule='plateau', learning_rate=0.01)
  plateau = optim.Plateau(patience=1, min_delta=0.0, max_reductions=3)
  lr = optim.LearningRate(config, plateau, optim.TrainingLength.from_config(config, 96, 16))
  plateau.update(0.5)
  plateau.update(0.6)
  assert lr(0) == np.float32(0.001)
  constant = optim.LearningRate(tiny_config(lr_schedule='constant', learning_rate=0.01), plateau,
                                optim.TrainingLength.from_config(config, 96, 16))
  assert constant(0) == np.float32(0.01)


def _params():
  rng = np.random.default_rng(0)
  return {'conv1': {'kernel': jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)},
          'fc8': {'bias': jnp.asarray(rng.normal(size=4), jnp.float32)}}


def _grads(count):
  rng = np.random.default_rng(1)
  return [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), _params())
          for _ in range(count)]


def _steps(tx, params, state, grads, lr=0.05):
  for g in grads:
    state.hyperparams['learning_rate'] = lr
    updates, state = tx.update(g, state, params)
    params = optax.apply_updates(params, updates)
  return params, state


@pytest.mark.parametrize('new_settings', [{'optimizer': 'optax_sgd'}, {'grad_clip_norm': 1e6}],
                         ids=['paper_to_optax_sgd', 'clipping_on'])
def test_a_transferred_state_continues_the_same_trajectory(new_settings):
  """paper_sgd for 6 steps = paper_sgd for 3, then the new optimizer from the transferred state.

  Both hold at a constant learning rate (optax_sgd and paper_sgd agree there; a clipping norm of
  1e6 never clips). Restarting the momentum from zero (the nearest wrong answer) does not.
  """
  grads = _grads(6)
  paper = optim.create_optimizer(tiny_config())
  new = optim.create_optimizer(tiny_config(**new_settings))
  expected, _ = _steps(paper, _params(), paper.init(_params()), grads)
  params, saved = _steps(paper, _params(), paper.init(_params()), grads[:3])
  scale = optim.momentum_scale('paper_sgd', tiny_config(**new_settings).optimizer, 0.05)
  state, report = optim.transfer_state(saved, new.init(params), scale)
  assert report.momentum_carried == ['conv1/kernel', 'fc8/bias'] and not report.momentum_reset
  got, _ = _steps(new, params, state, grads[3:])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5), got, expected)
  reset, _ = optim.transfer_state(saved, new.init(params), None)
  restarted, _ = _steps(new, params, reset, grads[3:])
  assert not np.allclose(restarted['fc8']['bias'], expected['fc8']['bias'], rtol=1e-3)


def test_freezing_drops_a_layers_momentum_and_thawing_starts_it_from_zero():
  frozen_config = tiny_config()
  frozen_config.finetune = ml_collections.ConfigDict({'freeze': ('conv1',)})
  plain, frozen = optim.create_optimizer(tiny_config()), optim.create_optimizer(frozen_config)
  params, saved = _steps(plain, _params(), plain.init(_params()), _grads(2))
  state, report = optim.transfer_state(saved, frozen.init(params), 1.0)
  assert report.momentum_carried == ['fc8/bias'] and report.momentum_dropped == ['conv1/kernel']
  np.testing.assert_array_equal(optim.momentum(state)['fc8/bias'],
                                optim.momentum(saved)['fc8/bias'])
  thawed, report = optim.transfer_state(state, plain.init(params), 1.0)
  assert report.momentum_reset == ['conv1/kernel'] and report.momentum_carried == ['fc8/bias']
  assert not np.any(optim.momentum(thawed)['conv1/kernel'])
  assert report.other_carried == ['count', 'hyperparams/learning_rate']


def test_the_momentum_is_found_in_a_checkpoints_nested_dicts():
  restored = {'count': 3, 'hyperparams': {'learning_rate': 0.1},
              'inner_state': [None, [None, {'trace': {'conv1': {'kernel': 1.0}}}]]}
  assert optim.momentum(restored) == {'conv1/kernel': 1.0}
  assert optim.momentum_scale('optax_sgd', 'paper_sgd', 0.1) == -0.1
  assert optim.momentum_scale('paper_sgd', 'optax_sgd', 0.0) is None  # Nothing to divide by.


# Per config: (lr multiplier, weight-decay multiplier) of the biases, from the sources each config
# follows: the paper decays every parameter alike (docs/paper.md, "Training (§5)"); Caffe's
# bvlc_alexnet and cuda-convnet2 give biases twice the rate and no decay ("Caffe bvlc_alexnet",
# "Where Krizhevsky's code differs from the paper"); torchvision decays them (one parameter group).
BIAS_MULTIPLIERS = {'imagenet': (1.0, 1.0), 'default': (1.0, 1.0), 'torchvision': (1.0, 1.0),
                    'bvlc_alexnet': (2.0, 0.0), 'cuda_convnet2': (2.0, 0.0)}


@pytest.mark.parametrize('name', sorted(BIAS_MULTIPLIERS))
@pytest.mark.parametrize('optimizer', ['paper_sgd', 'optax_sgd'])
def test_biases_are_decayed_where_the_configs_source_decays_them(name, optimizer):
  config = importlib.import_module(f'configs.{name}').get_config()
  config.optimizer = optimizer
  # The real parameter tree of the config's model (shapes only), filled with random values.
  shapes = jax.eval_shape(lambda: registry.create_model(config.model).init(
      jax.random.key(0), jnp.zeros((1, 227, 227, 3)))['params'])
  leaves, treedef = jax.tree.flatten(shapes)
  rng = np.random.default_rng(0)
  params = jax.tree.unflatten(treedef, [jnp.asarray(rng.normal(size=l.shape), jnp.float32)
                                        for l in leaves])
  tx = optim.create_optimizer(config)
  state = tx.init(params)
  lr = 0.1
  state.hyperparams['learning_rate'] = jnp.float32(lr)
  # Zero gradients: the first step is the weight decay alone, -a lr d wd w in both SGD forms.
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), state, params)
  a, d = BIAS_MULTIPLIERS[name]
  wd = config.weight_decay
  assert wd > 0
  for layer in ('conv1', 'conv2', 'fc7', 'fc8'):
    np.testing.assert_allclose(updates[layer]['bias'], -a * lr * d * wd * params[layer]['bias'],
                               rtol=1e-5, atol=1e-12, err_msg=f'{name} {layer}/bias')
    np.testing.assert_allclose(updates[layer]['kernel'], -lr * wd * params[layer]['kernel'],
                               rtol=1e-5, err_msg=f'{name} {layer}/kernel')
