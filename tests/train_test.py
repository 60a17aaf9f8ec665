"""The trainer: optimizer maths, plateau schedule, learning, exact resume, metrics files."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alexnet_jax import metrics, registry, train
from tests.conftest import tiny_config


def _sgd_run(optimizer, learning_rates, grads, w0, momentum=0.9, weight_decay=5e-4):
  config = tiny_config(optimizer=optimizer, momentum=momentum, weight_decay=weight_decay)
  tx = train.create_optimizer(config)
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
  plateau = train.Plateau(patience=2, min_delta=0.01, max_reductions=3)
  errors = [0.5, 0.4, 0.395, 0.41, 0.3, 0.3, 0.3] + [0.3] * 10
  reductions = [plateau.update(e) for e in errors]
  assert reductions[:7] == [False, False, False, True, False, False, True]
  assert plateau.reductions == 3 and plateau.factor == pytest.approx(1e-3)
  restored = train.Plateau(2, 0.01, 3)
  restored.load_json(json.loads(json.dumps(plateau.to_json())))
  assert restored == plateau


def test_step_schedule_drops_at_epoch_boundaries():
  config = tiny_config(lr_schedule='step', learning_rate=0.01, lr_step_epochs=(1, 2))
  lr = train.base_learning_rate_fn(config, steps_per_epoch=10, total_steps=30)
  np.testing.assert_allclose([lr(0), lr(9), lr(10), lr(19), lr(20)],
                             [0.01, 0.01, 0.001, 0.001, 0.0001], rtol=1e-6)


def test_top_k_errors_against_hand_checked_case():
  logits = jnp.array([[0.1, 0.9, 0.0, 0.0, 0.0, 0.0, 0.0],
                      [0.9, 0.1, 0.2, 0.3, 0.4, 0.5, 0.0]])
  labels = jnp.array([1, 6])  # First: top-1 right. Second: ranked last, so top-5 wrong too.
  sums = metrics.classification_sums(logits, labels)
  assert float(sums['top1_error']) == 1.0 and float(sums['top5_error']) == 1.0
  masked = metrics.classification_sums(logits, labels, jnp.array([True, False]))
  assert float(masked['top1_error']) == 0.0 and float(masked['count']) == 1.0
  # A crop axis averages probabilities: mean of softmaxes, not of logits.
  crops = jnp.stack([logits, logits[::-1]], axis=1)
  probs = (jax.nn.softmax(crops[:, 0]) + jax.nn.softmax(crops[:, 1])) / 2
  expected_loss = -np.log(np.asarray(probs)[[0, 1], [1, 6]]).sum()
  np.testing.assert_allclose(metrics.classification_sums(crops, labels)['loss'], expected_loss,
                             rtol=1e-5)


@pytest.mark.accelerator
def test_a_few_steps_lower_the_loss_on_a_tiny_batch():
  config = tiny_config()
  model = registry.create_model(config.model)
  tx = train.create_optimizer(config)
  state = train.create_train_state(model, tx, jax.random.key(0), (67, 67, 1))
  batch = {'image': jax.random.normal(jax.random.key(1), (8, 67, 67, 1)),
           'label': jnp.arange(8) % 10}
  step = jax.jit(lambda s, b: train.train_step(s, b, jnp.float32(0.01), jax.random.key(2),
                                              model=model, tx=tx))
  losses = []
  for _ in range(15):
    state, sums = step(state, batch)
    losses.append(float(sums['loss'] / sums['count']))
  assert losses[-1] < 0.5 * losses[0], losses


def _losses(workdir):
  rows = metrics.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  return {r['step']: r['train/loss'] for r in rows if 'train/loss' in r}


@pytest.mark.accelerator
@pytest.mark.slow
def test_resume_is_exact(tmp_path, mock_fashion_mnist):
  straight, resumed = str(tmp_path / 'straight'), str(tmp_path / 'resumed')
  train.train_and_evaluate(tiny_config(), straight)
  train.train_and_evaluate(tiny_config(num_train_steps=3), resumed)
  assert sorted(os.listdir(os.path.join(resumed, 'checkpoints'))) == ['3']
  train.train_and_evaluate(tiny_config(), resumed)
  expected, got = _losses(straight), _losses(resumed)
  assert sorted(got) == list(range(1, 7))
  assert got == expected  # Bit-for-bit: same data order, dropout keys and parameters.


@pytest.mark.slow
def test_metrics_files(tmp_path, mock_fashion_mnist):
  workdir = str(tmp_path)
  train.train_and_evaluate(tiny_config(), workdir)
  rows = metrics.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  train_rows = [r for r in rows if 'train/loss' in r]
  eval_rows = [r for r in rows if 'eval/loss' in r]
  assert [r['step'] for r in eval_rows] == [3, 6]
  for r in eval_rows:
    assert 0 <= r['eval/top5_error'] <= r['eval/top1_error'] <= 1
  assert {'train/learning_rate', 'train/images_per_sec', 'train/top1_error'} <= set(train_rows[0])
  assert any(name.startswith('events.out.tfevents') for name in os.listdir(workdir))
  assert json.load(open(os.path.join(workdir, 'config.json')))['batch_size'] == 16
