"""Resuming a workdir under a changed config (issue 16, parts 1 and 2).

Each kind of change has a row: a change sound to resume across resumes with one line of what was
carried over and what was reset; a change of model is one error naming the keys. No change ever
calls an intact checkpoint unreadable or moves it aside. The rows resume the checkpoint of one
shared 4-step run with num_train_steps=4, so they restore and stop without compiling a step; two
end-to-end runs (the issue's cases) train on.
"""

import json
import logging
import os
import re
import shutil

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow_datasets as tfds

from alexnet_jax import data, metrics, optim, train, workdir
from alexnet_jax.errors import UserError
from alexnet_jax.workdir import Workdir
from tests.conftest import tiny_config

MOCK_EXAMPLES = 96  # 6 steps of batch 16 per epoch.
BASE = {'num_train_steps': 4, 'checkpoint_every_steps': 2, 'eval_every_steps': 4}


def config_with(**overrides) -> ml_collections.ConfigDict:
  """tiny_config with BASE and `overrides`; 'finetune.*' keys get a finetune block first."""
  config = tiny_config(**BASE)
  if any(key.startswith('finetune.') for key in overrides):
    config.finetune = ml_collections.ConfigDict({'init_from': None, 'reinit': (), 'freeze': ()})
  for key, value in overrides.items():
    *parents, leaf = key.split('.')
    target = config
    for parent in parents:
      target = target[parent]
    target[leaf] = value
  return config


def dataset_for(config):
  with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
    return data.create_dataset(config)


@pytest.fixture(scope='module')
def base_run(tmp_path_factory):
  """The issue's first run: 4 steps, checkpoints at steps 2 and 4."""
  path = str(tmp_path_factory.mktemp('base'))
  config = config_with()
  train.train_and_evaluate(config, path, dataset_for(config))
  assert sorted(os.listdir(os.path.join(path, 'checkpoints'))) == ['2', '4']
  return path


def copy_of(path, tmp_path):
  destination = str(tmp_path / 'workdir')
  shutil.copytree(path, destination)
  return destination


def saved_state(path, step=4):
  return ocp.StandardCheckpointer().restore(os.path.join(path, 'checkpoints', str(step), 'state'))


def resume_line(caplog) -> str:
  lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith('Resumed')]
  assert len(lines) == 1, lines
  return lines[0]


def assert_nothing_moved_aside(path, caplog):
  assert not os.path.exists(os.path.join(path, 'checkpoints_unreadable'))
  assert sorted(os.listdir(os.path.join(path, 'checkpoints'))) == ['2', '4']
  assert not any('unreadable' in r.getMessage() for r in caplog.records)


# Change -> (what the line lists as changed, carried over, reset).
RESUMABLE = [
    ({'grad_clip_norm': 1.0}, 'grad_clip_norm 0.0 -> 1.0',
     'parameters, momentum, plateau state', 'nothing'),
    ({'learning_rate': 0.01, 'lr_schedule': 'cosine', 'plateau_patience': 5},
     'learning_rate 0.02 -> 0.01, lr_schedule "constant" -> "cosine", plateau_patience 2 -> 5',
     'parameters, optimizer state, plateau state', None),
    ({'optimizer': 'optax_sgd'}, 'optimizer "paper_sgd" -> "optax_sgd"',
     'parameters, momentum (mapped to optax_sgd: x-50), plateau state', 'nothing'),
    ({'momentum': 0.5, 'weight_decay': 0.0}, 'momentum 0.9 -> 0.5, weight_decay 0.0005 -> 0.0',
     'parameters, optimizer state', None),
    ({'finetune.freeze': ('conv1', 'conv2')},
     'finetune.freeze <absent> -> ["conv1", "conv2"], finetune.init_from <absent> -> null, '
     'finetune.reinit <absent> -> []',
     'parameters, momentum, plateau state',
     'momentum of conv1, conv2 (not trained any more)'),
    ({'nan_policy': 'skip', 'log_every_steps': 2, 'eval_every_steps': 2,
      'checkpoint_every_steps': 1, 'max_checkpoints_to_keep': 5, 'seed': 3},
     'checkpoint_every_steps 2 -> 1, eval_every_steps 4 -> 2, log_every_steps 1 -> 2, '
     'max_checkpoints_to_keep 3 -> 5, nan_policy "stop" -> "skip", seed 0 -> 3',
     'parameters, optimizer state', None),
    ({'batch_size': 32}, 'batch_size 16 -> 32',
     'progress in examples (num_train_steps and the schedule count steps of batch 16)', None),
    ({'model.dtype': 'bfloat16', 'kernels': 'xla'},
     'kernels "auto" -> "xla", model.dtype "float32" -> "bfloat16"',
     'parameters, optimizer state', None),
    ({'mesh.data': 4, 'mesh.model': 2}, 'mesh.data -1 -> 4, mesh.model 1 -> 2',
     'parameters, optimizer state', None),
]


@pytest.mark.parametrize('overrides, changed, carried, reset', RESUMABLE,
                         ids=[','.join(o) for o, *_ in RESUMABLE])
def test_a_change_sound_to_resume_across_resumes_with_one_line(
    tmp_path, caplog, base_run, overrides, changed, carried, reset):
  path = copy_of(base_run, tmp_path)
  config = config_with(**overrides)
  with caplog.at_level(logging.INFO):
    state = train.train_and_evaluate(config, path, dataset_for(config))
  line = resume_line(caplog)
  assert line.startswith(f'Resumed from checkpoint step 4 in {path}/checkpoints; config changes: '
                         f'{changed}; carried over: '), line
  assert carried in line and '\n' not in line
  if reset:
    assert line.endswith(f'; reset: {reset}.'), line
  assert_nothing_moved_aside(path, caplog)
  history = Workdir(path).history()
  assert [entry['step'] for entry in history] == [4]
  assert workdir.flatten(Workdir(path).config()) == workdir.flatten(config)
  saved = saved_state(path)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params), saved['params'])


def test_the_momentum_follows_the_optimizer_change(tmp_path, base_run):
  saved = optim.momentum(saved_state(base_run)['opt_state'])
  for overrides, scale in (({'grad_clip_norm': 1.0}, 1.0), ({'optimizer': 'optax_sgd'}, -50.0)):
    path = copy_of(base_run, tmp_path / str(scale))
    config = config_with(**overrides)
    state = train.train_and_evaluate(config, path, dataset_for(config))
    momentum = jax.device_get(optim.momentum(state.opt_state))
    assert sorted(momentum) == sorted(saved)
    for name, value in momentum.items():
      np.testing.assert_allclose(value, saved[name] * scale, rtol=1e-6)
    assert any(np.abs(value).max() > 0 for value in momentum.values())


@pytest.mark.parametrize('overrides', [{'optimizer': 'optax_sgd'},
                                       {'model.fc_features': (64, 64),
                                        'resume_with_changed_model': True}],
                         ids=['optimizer', 'model'])
def test_a_resume_that_saved_nothing_leaves_the_checkpoints_config_in_force(
    tmp_path, caplog, base_run, overrides):
  """A finished run rerun with a change trains and saves nothing; rerun with the config that wrote
  the checkpoint, it sees no change: nothing mapped (the momentum as saved), no model error."""
  path = copy_of(base_run, tmp_path)
  changed = config_with(**overrides)
  train.train_and_evaluate(changed, path, dataset_for(changed))
  assert [entry['step'] for entry in Workdir(path).history()] == [4]
  original = config_with()
  caplog.clear()
  with caplog.at_level(logging.INFO):
    state = train.train_and_evaluate(original, path, dataset_for(original))
  assert resume_line(caplog) == f'Resumed from checkpoint step 4 in {path}/checkpoints.'
  assert Workdir(path).history() == []  # Superseded by the resume from the same step.
  saved = saved_state(path)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(optim.momentum(state.opt_state)),
               optim.momentum(saved['opt_state']))


# Change -> the keys the error names.
MODEL_CHANGES = [
    ({'model.fc_features': (64, 64)}, ['config.model.fc_features: [32, 32] there, [64, 64] here']),
    ({'model.activation': 'tanh', 'model.lrn': False},
     ['config.model.activation: "relu" there, "tanh" here',
      'config.model.lrn: true there, false here']),
    ({'input.image_size': 99}, ['config.input.image_size: 67 there, 99 here']),
    ({'input.classes': (5, 6, 7, 8, 9)},
     ['config.input.classes: <absent> there, [5, 6, 7, 8, 9] here']),
    ({'dataset': 'imagenet2012'},
     ['config.dataset: "fashion_mnist" there, "imagenet2012" here']),
]


@pytest.mark.parametrize('overrides, named', MODEL_CHANGES,
                         ids=[','.join(o) for o, _ in MODEL_CHANGES])
def test_a_change_of_model_is_one_error_naming_the_keys(tmp_path, caplog, base_run, overrides,
                                                        named):
  path = copy_of(base_run, tmp_path)
  config = config_with(**overrides)
  dataset = dataset_for(config_with(**{k: v for k, v in overrides.items() if k != 'dataset'}))
  with pytest.raises(UserError) as error:
    train.train_and_evaluate(config, path, dataset)
  message = str(error.value)
  assert message.startswith(f'{path} holds a checkpoint of a different model (')
  for text in named:
    assert text in message
  assert message.endswith('); use a new --workdir or the config that wrote it, or pass '
                          '--config.resume_with_changed_model=True to resume anyway (parameters '
                          'whose shapes still fit are kept, the others start fresh).')
  assert '\n' not in message
  assert_nothing_moved_aside(path, caplog)
  assert not os.path.exists(Workdir(path).history_file)


def test_an_accepted_change_of_model_keeps_what_still_fits(tmp_path, caplog, base_run):
  path = copy_of(base_run, tmp_path)
  config = config_with(**{'model.fc_features': (64, 64), 'resume_with_changed_model': True})
  with caplog.at_level(logging.INFO):
    state = train.train_and_evaluate(config, path, dataset_for(config))
  line = resume_line(caplog)
  assert ('carried over: parameters of conv1, conv2, conv3, conv4, conv5, fc8/bias, momentum of '
          'conv1, conv2, conv3, conv4, conv5, fc8/bias, plateau state') in line, line
  assert line.endswith('reset: parameters of fc6, fc7, fc8/kernel (shapes or layers changed), '
                       'momentum of fc6, fc7, fc8/kernel.'), line
  saved = saved_state(path)
  params = jax.device_get(state.params)
  np.testing.assert_array_equal(params['conv5']['kernel'], saved['params']['conv5']['kernel'])
  assert params['fc6']['kernel'].shape == (2, 16, 32)
  assert Workdir(path).config().model.fc_features == [64, 64]
  assert Workdir(path).config(step=4).model.fc_features == [32, 32]


@pytest.mark.parametrize('record', ['missing', 'damaged'])
def test_without_a_saved_config_the_checkpoints_shapes_decide(tmp_path, caplog, base_run, record):
  path = copy_of(base_run, tmp_path)
  os.remove(Workdir(path).config_file)
  if record == 'damaged':
    open(Workdir(path).config_file, 'wb').write(b'{"model": {"na')
  config = config_with(**{'model.fc_features': (64, 64)})
  with pytest.raises(UserError, match=r'holds a checkpoint of a different model \(parameter '
                     r'fc6/bias: saved 2x16, this config 2x32\); use a new --workdir'):
    train.train_and_evaluate(config, path, dataset_for(config))
  config = config_with(grad_clip_norm=1.0)
  with caplog.at_level(logging.INFO):
    train.train_and_evaluate(config, path, dataset_for(config))
  assert 'carried over: parameters, momentum, plateau state' in resume_line(caplog)
  assert_nothing_moved_aside(path, caplog)
  assert Workdir(path).config().grad_clip_norm == 1.0  # The record starts here.
  if record == 'damaged':
    assert any('config.json is damaged (JSONDecodeError' in r.getMessage() and 'written anew'
               in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_the_issues_clipping_case_trains_on_from_both_checkpoints(tmp_path, caplog, base_run):
  """Rerun with --config.num_train_steps=8 --config.grad_clip_norm=1.0 (issue 16, case 1)."""
  path = copy_of(base_run, tmp_path)
  config = config_with(num_train_steps=8, grad_clip_norm=1.0)
  with caplog.at_level(logging.INFO):
    train.train_and_evaluate(config, path, dataset_for(config))
  assert 'config changes: grad_clip_norm 0.0 -> 1.0, num_train_steps 4 -> 8' in resume_line(caplog)
  assert not os.path.exists(os.path.join(path, 'checkpoints_unreadable'))
  assert sorted(os.listdir(os.path.join(path, 'checkpoints'))) == ['4', '6', '8']
  rows = metrics.read_metrics(Workdir(path).metrics_file)
  assert all(np.isfinite(rows[step]['train/loss']) for step in range(5, 9))


@pytest.mark.slow
def test_a_new_batch_size_goes_on_with_the_examples_not_yet_seen(tmp_path, caplog, base_run):
  """Issue 16, case 2, shrunk: an epoch of 6 steps of 16 stopped at step 4, rerun at batch 32.

  The 32 examples left in the epoch make one step; the cosine schedule goes on from 64 of 96
  examples. Counted in steps (before), the epoch was 3 steps of 32, fewer than the 4 done: the
  run ended at once, the last 32 examples never seen.
  """
  path = copy_of(base_run, tmp_path)
  config = config_with(batch_size=32, num_train_steps=-1, num_epochs=1, lr_schedule='cosine',
                       log_every_steps=1)
  with caplog.at_level(logging.INFO):
    train.train_and_evaluate(config, path, dataset_for(config))
  training = [r.getMessage() for r in caplog.records if r.getMessage().startswith('Training')]
  assert training == ['Training fashion_mnist to step 5: 1 steps of batch 32 from step 4 (64 of '
                      '96 examples seen).']
  restored = ocp.CheckpointManager(os.path.join(path, 'checkpoints'), item_handlers={
      'input': ocp.JsonCheckpointHandler()}).restore(5, args=ocp.args.Composite(
          input=ocp.args.JsonRestore()))['input']
  assert restored == {'step': 5, 'examples': 96, 'epoch': 0, 'offset': 96}
  rows = metrics.read_metrics(Workdir(path).metrics_file)
  expected_lr = 0.02 * 0.5 * (1 + np.cos(np.pi * 4 / 6))  # Cosine at 4 of 6 steps of 16.
  assert rows[5]['train/learning_rate'] == pytest.approx(expected_lr, rel=1e-6)
  # config.json keeps the run's first batch size; the history says where it changed.
  assert json.load(open(Workdir(path).config_file))['batch_size'] == 16
  assert Workdir(path).history()[0]['changes']['batch_size'] == [16, 32]
  assert Workdir(path).config(step=4).batch_size == 16
  assert Workdir(path).config(step=5).batch_size == 32


def test_checkpoints_without_the_examples_count_resume_at_the_same_position():
  """Checkpoints written before positions counted examples hold {'step': N} only."""
  assert data.Position.at_step(0, 16, 96) == data.Position()
  position = data.Position()
  for step in range(1, 14):
    position = position.after_batch(16, 96)
    assert data.Position.at_step(step, 16, 96) == position
  assert position.batch_start(16, 96) == (2, 16)
  assert re.fullmatch(r'Position\(step=13, examples=208, epoch=2, offset=16\)', repr(position))
