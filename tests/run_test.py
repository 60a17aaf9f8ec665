"""run.py and the bad inputs of the issue: each gives one clear line and writes nothing over."""

import os
import subprocess
import sys

import pytest

from alexnet_jax import train
from alexnet_jax.errors import UserError
from tests.conftest import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, 'run.py', *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=300, env={**os.environ, 'XLA_FLAGS': ''})


def _last_line(stderr: str) -> str:
  return stderr.strip().splitlines()[-1]


def test_summary_prints_the_paper_total():
  result = _run('--config=configs/imagenet.py', '--summary')
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip().splitlines()[-1].split()[-1] == '60,965,224'
  assert 'conv3' in result.stdout and 'Traceback' not in result.stderr


@pytest.mark.parametrize('override,expected', [
    ('--config.no_such_key=1', "field the config does not have"),
    ('--config.batch_size=abc', 'batch_size'),
    ('--config.learning_rate=-1', 'config.learning_rate=-1.0 must be positive'),
])
def test_bad_command_lines_give_one_line(tmp_path, override, expected):
  result = _run('--config=configs/default.py', f'--workdir={tmp_path}', override)
  assert result.returncode == 2
  assert 'Traceback' not in result.stderr
  last = _last_line(result.stderr)
  assert last.startswith('error:') and expected in last
  assert not os.path.exists(tmp_path / 'checkpoints')


def test_batch_not_divisible_by_devices(tmp_path):
  with pytest.raises(UserError, match=r'config.batch_size=12 is not divisible by the 8'):
    train.train_and_evaluate(tiny_config(batch_size=12), str(tmp_path))


def test_workdir_not_writable(tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('')
  with pytest.raises(UserError, match='not writable'):
    train.train_and_evaluate(tiny_config(), str(blocker / 'workdir'))


@pytest.mark.slow
def test_checkpoint_of_a_different_model(tmp_path, mock_fashion_mnist):
  workdir = str(tmp_path)
  train.train_and_evaluate(tiny_config(num_train_steps=1, checkpoint_every_steps=1), workdir)
  checkpoints = sorted(os.listdir(tmp_path / 'checkpoints'))
  wider = tiny_config(num_train_steps=2, **{'model.fc_features': (64, 64)})
  with pytest.raises(UserError, match=r'different model \(config.model.fc_features: \[32, 32\] '
                     r'there, \[64, 64\] here\)'):
    train.train_and_evaluate(wider, workdir)
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == checkpoints  # Nothing written over.
