"""The trainer: its units (NaN policy, progress report, evaluator), learning, exact resume, metrics."""

import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from alexnet_jax import data, metrics, optim, parallel, preemption, registry, train
from alexnet_jax.errors import UserError
from tests.conftest import tiny_config


class _Writer:
  """A metric writer that keeps the rows."""

  def __init__(self):
    self.rows = []

  def write_scalars(self, step, scalars):
    self.rows.append((step, dict(scalars)))


class _Checkpointer:
  directory = '/w/checkpoints'

  def __init__(self, newest):
    self.newest, self.waited = newest, False

  def wait_until_finished(self):
    self.waited = True

  def latest_step(self):
    return self.newest


def _sums(count=16, nonfinite=0, first=train.NO_NONFINITE_STEP):
  return {'loss': 2.0 * count, 'top1_error': 0.5 * count, 'top5_error': 0.25 * count,
          'count': count, 'nonfinite_steps': nonfinite, 'first_nonfinite_step': first}


def _dataset(**fields):
  values = dict(num_classes=10, image_shape=(8, 8, 1), num_train_examples=96, num_eval_examples=8,
                class_names=(), train_batches=None, eval_batches={})
  values.update(fields)
  return data.Dataset(**values)


def test_nan_policy_stop_names_the_step_and_the_intact_checkpoint():
  ckpt = _Checkpointer(newest=12)
  assert train.NanPolicy('stop', ckpt).check(_sums()) == 0
  with pytest.raises(UserError, match=r'^non-finite loss or gradients at step 14; '
                     r'training stopped without applying it \(the newest checkpoint, step 12 in '
                     r'/w/checkpoints, is intact\)\. Lower config.learning_rate'):
    train.NanPolicy('stop', ckpt).check(_sums(0, nonfinite=2, first=14))
  assert ckpt.waited  # A save in flight finished first: it holds a finite state.
  assert train.NanPolicy('skip', ckpt).check(_sums(0, nonfinite=2, first=14)) == 2


@pytest.mark.parametrize('policy', ['stop', 'skip'])
def test_parameters_an_update_overflowed_stop_training_under_either_policy(policy):
  ckpt = _Checkpointer(newest=12)
  finite = {'a': {'kernel': jnp.ones((2, 3))}, 'b': jnp.zeros(4)}
  train.NanPolicy(policy, ckpt).check_params(finite, 15)  # Nothing to say.
  assert not ckpt.waited
  overflowed = {'a': {'kernel': jnp.ones((2, 3))}, 'b': jnp.zeros(4).at[2].set(jnp.inf)}
  with pytest.raises(UserError, match=r'^the parameters are not finite at step 15: an update '
                     r'from finite gradients overflowed float32 \(at this step or since the last '
                     r'check\); training stopped without saving them \(the newest checkpoint, '
                     r'step 12 in /w/checkpoints, is intact\)\. Lower config.learning_rate'):
    train.NanPolicy(policy, ckpt).check_params(overflowed, 15)
  assert ckpt.waited


def test_progress_report_counts_training_time_only(caplog):
  now = [100.0]
  writer = _Writer()
  dataset = _dataset(corrupt_image_counts=lambda: {'train': 3})
  report = train.ProgressReport(writer, dataset, train.NanPolicy('skip', _Checkpointer(None)),
                                batch_size=16, start_step=20, total_steps=50,
                                clock=lambda: now[0])
  now[0] += 4.0  # 4 s of training...
  with report.paused():
    now[0] += 30.0  # ...30 s of evaluation, not counted...
  now[0] += 6.0  # ...6 s more: 10 steps of 16 images in 10 s.
  with caplog.at_level(logging.INFO):
    report(30, _sums(count=160), np.float32(0.01))
  step, row = writer.rows[0]
  assert step == 30 and row['train/images_per_sec'] == 16.0
  assert row['input/corrupt_images_train'] == 3 and row['train/skipped_steps'] == 0
  assert row['train/loss'] == 2.0 and row['train/learning_rate'] == pytest.approx(0.01)
  # 20 steps left at 1 s each.
  assert caplog.records[-1].getMessage() == ('step 30/50 | loss 2.0000 | top1_err 0.5000 | '
                                             'lr 0.01 | 16 img/s | ETA 0m20s')
  assert train.format_duration(3 * 3600 + 5 * 60 + 7) == '3h05m'


def _evaluator(plateau, writer, batches):
  mesh = parallel.create_mesh(tiny_config().mesh, towers=1)  # 8 data shards of a batch of 8.
  eval_fn = lambda params, batch: {'loss': jnp.sum(batch['label'] * 1.0),
                                   'top1_error': jnp.sum(batch['label'] * params),
                                   'top5_error': jnp.float32(0), 'count': jnp.float32(
                                       batch['label'].shape[0])}
  return train.Evaluator(_dataset(eval_batches={'': batches}), eval_fn, mesh, -1, writer,
                         plateau, 'plateau')


def test_evaluator_records_feeds_the_plateau_and_gives_way_to_a_signal():
  batches = lambda: iter([{'label': np.ones(8, np.float32)}, {'label': np.zeros(8, np.float32)}])
  writer, plateau = _Writer(), optim.Plateau(patience=1, min_delta=0.0, max_reductions=3)
  evaluate = _evaluator(plateau, writer, batches)
  stop = preemption.StopRequest()
  assert evaluate(jnp.float32(0.5), 6, stop) == {'eval/loss': 0.5, 'eval/top1_error': 0.25,
                                                  'eval/top5_error': 0.0}
  assert writer.rows == [(6, {'eval/loss': 0.5, 'eval/top1_error': 0.25, 'eval/top5_error': 0.0})]
  evaluate(jnp.float32(0.5), 12, stop)  # No improvement: the learning rate is divided by 10.
  assert plateau.reductions == 1
  stop.signal_name = 'SIGTERM'  # As the signal handler sets it.
  assert evaluate(jnp.float32(0.5), 18, stop) is None and len(writer.rows) == 2


def test_top1_and_top5_differ_where_the_label_ranks_between():
  # Labels ranked 1st, 3rd, 5th, 6th and 7th of 7 classes: top-1 misses four, top-5 two. Top-5
  # computed with any k but 5 (k=1: the top-1 count) gives another count.
  logits = jnp.array([[0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]] * 5)
  labels = jnp.array([0, 2, 4, 5, 6])
  sums = metrics.classification_sums(logits, labels)
  assert (float(sums['top1_error']), float(sums['top5_error'])) == (4.0, 2.0)
  by_k = [float(jnp.sum(metrics.top_k_error_count(logits, labels, k))) for k in range(1, 8)]
  assert by_k == [4.0, 4.0, 3.0, 3.0, 2.0, 1.0, 0.0]


def test_crops_vote_by_their_mean_probability():
  # Two crops of one image: the mean of the softmaxes ranks class 1 first (0.48 vs 0.27); the
  # nearest wrong readings, the mean of the logits and the first crop alone, rank class 0 first.
  crops = jnp.array([[[6.0, 0.0, 5.9], [0.0, 4.0, 0.0]]])  # [batch 1, 2 crops, 3 classes].
  sums = metrics.classification_sums(crops, jnp.array([1]))
  assert float(sums['top1_error']) == 0.0
  assert int(jnp.argmax(crops.mean(axis=1))) == 0 and int(jnp.argmax(crops[0, 0])) == 0


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


def test_one_init_program_serves_every_learning_rate():
  """The rate given to create_train_state is an argument of the jitted init, not a constant: a
  sweep's grid of rates lowers to one init program (compiled once with the persistent cache).
  Built into `tx`, each rate makes its own program."""
  config = tiny_config()
  model = registry.create_model(config.model)
  tx = optim.create_optimizer(config)
  init = jax.jit(lambda key, lr: train.create_train_state(model, tx, key, (67, 67, 1), lr))
  key = jax.random.key(0)
  rates = (0.05, 0.07)  # Neither is the config's: the state must hold the argument.
  assert config.learning_rate not in rates
  lowered = [init.lower(key, np.float32(lr)).as_text() for lr in rates]
  assert lowered[0] == lowered[1]
  for lr in rates:
    state = init(key, np.float32(lr))
    assert state.opt_state.hyperparams['learning_rate'] == np.float32(lr)
  assert jax.typeof(state.opt_state.hyperparams['learning_rate']) == jax.typeof(
      tx.init(state.params).hyperparams['learning_rate'])  # What a checkpoint holds.
  built_in = []
  for lr in (0.01, 0.02):
    tx = optim.create_optimizer(registry.apply_overrides(config, {'learning_rate': lr}))
    init = jax.jit(lambda key, tx=tx: train.create_train_state(model, tx, key, (67, 67, 1)))
    built_in.append(init.lower(key).as_text())
  assert built_in[0] != built_in[1]


def test_a_run_compiles_its_train_step_once(tmp_path, mock_fashion_mnist, monkeypatch):
  """The fresh state's types are those of the state a step returns (the learning rate in the
  optimizer state not weakly typed), so the second step reuses the first step's program."""
  created = []
  create_step_fns = train.create_step_fns
  monkeypatch.setattr(train, 'create_step_fns',
                      lambda *args: created.append(create_step_fns(*args)) or created[-1])
  train.train_and_evaluate(tiny_config(num_train_steps=3, eval_every_steps=100), str(tmp_path))
  p_train_step, _ = created[0]
  assert p_train_step._cache_size() == 1  # pylint: disable=protected-access


@pytest.mark.accelerator
def test_a_few_steps_lower_the_loss_on_a_tiny_batch():
  config = tiny_config()
  model = registry.create_model(config.model)
  tx = optim.create_optimizer(config)
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


def tensorboard_scalars(workdir: str) -> dict[tuple[int, str], float]:
  """{(step, tag): value} of the scalars in workdir's one TensorBoard event file."""
  [events] = [name for name in os.listdir(workdir) if name.startswith('events.out.tfevents')]
  scalars = {}
  for record in tf.data.TFRecordDataset(os.path.join(workdir, events)):
    event = tf.compat.v1.Event.FromString(record.numpy())
    for value in event.summary.value:
      array = tf.make_ndarray(value.tensor)
      if array.ndim == 0 and array.dtype.kind == 'f':  # Scalars (hyper-parameters are text).
        scalars[event.step, value.tag] = float(array)
  return scalars


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
  assert json.load(open(os.path.join(workdir, 'config.json')))['batch_size'] == 16
  # TensorBoard's event file holds every value of metrics.jsonl, at the same step.
  tensorboard = tensorboard_scalars(workdir)
  jsonl = {(r['step'], key): value for r in rows for key, value in r.items() if key != 'step'}
  assert set(jsonl) <= set(tensorboard) and len(jsonl) > 20
  for key, value in jsonl.items():
    assert tensorboard[key] == pytest.approx(value, rel=1e-6), key


def test_reached_train_error_only_at_or_below_a_positive_target():
  assert train.reached_train_error({'train/top1_error': 0.25}, 0.25, 1)
  assert not train.reached_train_error({'train/top1_error': 0.2501}, 0.25, 1)
  assert not train.reached_train_error({'train/top1_error': 0.0}, 0.0, 1)  # 0: the stop is off.
  assert not train.reached_train_error({}, 0.25, 1)  # An interval without examples.


@pytest.mark.slow
def test_training_stops_at_the_target_train_error(tmp_path, mock_fashion_mnist):
  """The first logged interval at or below the target ends training, evaluated and saved."""
  workdir = str(tmp_path)
  train.train_and_evaluate(tiny_config(stop_at_train_error=1.0), workdir)  # Any error is <= 1.
  rows = metrics.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  assert [r['step'] for r in rows if 'train/loss' in r] == [1]
  assert [r['step'] for r in rows if 'eval/loss' in r] == [1]
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['1']


def _learning_rates(workdir):
  rows = metrics.read_metrics(os.path.join(workdir, 'metrics.jsonl'))
  return {step: row['train/learning_rate'] for step, row in rows.items()
          if 'train/learning_rate' in row}


@pytest.mark.slow
def test_a_resumed_plateau_schedule_keeps_its_state(tmp_path, mock_fashion_mnist):
  # An evaluation after every step, none of which improves by min_delta=1: with patience 2 the
  # rate is divided by 10 after the 3rd and 5th evaluations. The checkpoint at step 4 holds all
  # three parts of the plateau state (best error, 1 evaluation without improvement, 1 reduction);
  # losing any of them moves the second reduction (or undoes the first).
  plateau = lambda steps: tiny_config(num_train_steps=steps, lr_schedule='plateau',
                                      learning_rate=0.01, eval_every_steps=1, plateau_patience=2,
                                      plateau_min_delta=1.0, plateau_max_reductions=3)
  straight, resumed = str(tmp_path / 'straight'), str(tmp_path / 'resumed')
  train.train_and_evaluate(plateau(6), straight)
  expected = _learning_rates(straight)
  np.testing.assert_allclose([expected[s] for s in range(1, 7)],
                             [0.01, 0.01, 0.01, 0.001, 0.001, 0.0001], rtol=1e-6)
  train.train_and_evaluate(plateau(4), resumed)
  assert sorted(os.listdir(os.path.join(resumed, 'checkpoints'))) == ['3', '4']
  train.train_and_evaluate(plateau(6), resumed)
  assert _learning_rates(resumed) == expected
  assert _losses(resumed) == _losses(straight)
