"""The workdir's config record: the first config kept, each resume's changes appended."""

import json
import os

import ml_collections
import pytest

from alexnet_jax import workdir
from alexnet_jax.errors import UserError
from alexnet_jax.workdir import Workdir


def _config(**values) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict({'batch_size': 1000, 'learning_rate': 0.01,
                                      'model': {'towers': 2, 'fc_features': (4096, 4096)}})
  config.update(values)
  return config


def test_the_config_in_force_at_each_step_replays_the_history(tmp_path):
  run = Workdir(str(tmp_path))
  run.write_config(_config())
  run.record_resume(20, {'batch_size': (1000, 2000)})
  run.record_resume(30, {'learning_rate': (0.01, 0.001), 'batch_size': (2000, 500)})
  run.record_resume(40, {})  # An unchanged resume writes nothing.
  assert len(run.history()) == 2
  assert json.load(open(run.config_file))['batch_size'] == 1000  # The first config, kept.
  # Checkpoint 20 was written before the resume from 20 changed anything.
  assert [run.config(step).batch_size for step in (0, 20, 21, 30, 31)] == [1000, 1000, 2000, 2000,
                                                                          500]
  assert run.config().learning_rate == 0.001 and run.config(30).learning_rate == 0.01
  assert run.config().model.fc_features == [4096, 4096]


def test_a_resume_supersedes_the_record_of_resumes_from_its_step_or_later(tmp_path):
  run = Workdir(str(tmp_path))
  run.write_config(_config())
  run.record_resume(20, {'batch_size': (1000, 2000)})
  run.record_resume(30, {'learning_rate': (0.01, 0.001)})  # Saved nothing after 30, say.
  run.record_resume(30, {'momentum': (0.9, 0.5)})  # Rerun from 30: the line above is stale.
  assert [(e['step'], list(e['changes'])) for e in run.history()] == [(20, ['batch_size']),
                                                                      (30, ['momentum'])]
  assert run.config().learning_rate == 0.01 and run.config().momentum == 0.5
  run.record_resume(20, {})  # Back to checkpoint 20, unchanged: the lines from step 20 on go.
  assert [e['step'] for e in run.history()] == []
  assert run.config().batch_size == 1000


def test_differences_name_dotted_keys_and_absent_ones():
  old = _config()
  new = _config(batch_size=2000)
  new.model.fc_features = (64, 64)
  new.finetune = ml_collections.ConfigDict({'freeze': ('conv1',)})
  assert workdir.differences(old, new) == {
      'batch_size': (1000, 2000),
      'finetune.freeze': (workdir.ABSENT, ['conv1']),
      'model.fc_features': ([4096, 4096], [64, 64])}
  assert workdir.differences(old, _config()) == {}  # Tuples and lists compare as JSON does.


def test_a_key_added_then_removed_by_the_history(tmp_path):
  run = Workdir(str(tmp_path))
  run.write_config(_config())
  run.record_resume(5, {'finetune.freeze': (workdir.ABSENT, ['conv1'])})
  assert run.config().finetune.freeze == ['conv1']
  run.record_resume(9, {'finetune.freeze': (['conv1'], workdir.ABSENT)})
  assert 'freeze' not in run.config().finetune


def test_a_start_from_scratch_rewrites_the_record(tmp_path):
  run = Workdir(str(tmp_path))
  run.write_config(_config())
  run.record_resume(20, {'batch_size': (1000, 2000)})
  run.write_config(_config(batch_size=64))
  assert run.history() == [] and run.config().batch_size == 64


def test_a_torn_last_line_is_skipped_and_a_damaged_one_named(tmp_path):
  run = Workdir(str(tmp_path))
  run.write_config(_config())
  run.record_resume(20, {'batch_size': (1000, 2000)})
  with open(run.history_file, 'a', encoding='utf-8') as f:
    f.write('{"step": 30, "chan')  # Killed while writing.
  assert run.config().batch_size == 2000
  with open(run.history_file, 'a', encoding='utf-8') as f:
    f.write('\n')
  with pytest.raises(UserError, match=r'line 2 of .*config_history.jsonl is not JSON'):
    run.config()


def test_a_missing_or_damaged_config_is_one_line(tmp_path):
  run = Workdir(str(tmp_path))
  with pytest.raises(UserError, match='config.json does not exist; --workdir must be a directory '
                     'written by run.py or alexnet_jax.convert'):
    run.config()
  with open(run.config_file, 'w', encoding='utf-8') as f:
    f.write('{"batch_size": 10')
  with pytest.raises(UserError, match=r'config.json is damaged \(JSONDecodeError: '):
    run.config()
  assert run.saved_config() is None  # Training goes on comparing the checkpoint's shapes.


def test_paths_are_defined_here_once(tmp_path):
  run = Workdir(str(tmp_path))
  assert run.checkpoints == os.path.join(str(tmp_path), 'checkpoints')
  assert run.metrics_file == os.path.join(str(tmp_path), 'metrics.jsonl')
  blocker = tmp_path / 'a_file'
  blocker.write_text('')
  with pytest.raises(UserError, match='not writable'):
    Workdir(str(blocker / 'workdir')).check_writable()
