"""Tiny trained workdirs shared by the tests of the commands that use a trained model."""

import atexit
import shutil
import tempfile

import tensorflow_datasets as tfds

from alexnet_jax import train
from tests.conftest import tiny_config

MOCK_EXAMPLES = 96
_trained: dict[tuple, str] = {}


def train_tiny(workdir: str, **overrides) -> str:
  """Trains tiny_config for 2 steps on mocked Fashion-MNIST into `workdir`; returns it."""
  settings = dict(num_train_steps=2, eval_every_steps=2, checkpoint_every_steps=2)
  settings.update(overrides)
  with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
    train.train_and_evaluate(tiny_config(**settings), workdir)
  return workdir


def shared_tiny_workdir(**overrides) -> str:
  """Like train_tiny, trained once per test session for each set of overrides (read-only use)."""
  key = tuple(sorted(overrides.items()))
  if key not in _trained:
    workdir = tempfile.mkdtemp(prefix='alexnet_jax_trained_')
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    _trained[key] = train_tiny(workdir, **overrides)
  return _trained[key]
