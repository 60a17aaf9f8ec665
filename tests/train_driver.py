"""run.py on mocked Fashion-MNIST with slowed-down batches, for the reliability tests.

The tests start it as a subprocess and kill it at chosen moments; the delay per batch (training
and evaluation) makes "during step N" a window they can hit. A SIGTERM inside an evaluation needs
no window: --sigterm_in_evaluation=N has the process send it to itself while it reads the N-th
evaluation's first batch. Same flags as run.py, plus these two:

  python -m tests.train_driver --config=tests/tiny_config.py --workdir=DIR --seconds_per_batch=0.2
"""

import dataclasses
import itertools
import os
import signal
import time

import tensorflow_datasets as tfds
from absl import flags

import run
from alexnet_jax import cli, data

_SECONDS_PER_BATCH = flags.DEFINE_float('seconds_per_batch', 0.0,
                                        'Sleep before each training and evaluation batch.')
_SIGTERM_IN_EVALUATION = flags.DEFINE_integer(
    'sigterm_in_evaluation', 0, 'Send this process SIGTERM as the N-th evaluation (counted from '
    '1 in this process) reads its first batch; 0: never.')
_evaluations = itertools.count(1)


def _slowly(batches):
  for batch in batches:
    time.sleep(_SECONDS_PER_BATCH.value)
    yield batch


def _evaluation(batches):
  if next(_evaluations) == _SIGTERM_IN_EVALUATION.value:
    os.kill(os.getpid(), signal.SIGTERM)  # Handled (run.py's preemption.STOP) before the yield.
  yield from _slowly(batches)


def _slowed(create_dataset):
  def create(*args, **kwargs) -> data.Dataset:
    dataset = create_dataset(*args, **kwargs)
    return dataclasses.replace(
        dataset, train_batches=lambda position: _slowly(dataset.train_batches(position)),
        eval_batches={name: (lambda b=batches: _evaluation(b()))
                      for name, batches in dataset.eval_batches.items()})
  return create


if __name__ == '__main__':
  data.create_dataset = _slowed(data.create_dataset)
  with tfds.testing.mock_data(num_examples=96):
    cli.run(run.main, log_level='info')
