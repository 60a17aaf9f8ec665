"""run.py on mocked Fashion-MNIST with slowed-down training batches, for the reliability tests.

The tests start it as a subprocess and kill it at chosen moments; the delay per batch makes
"during step N" a window they can hit. Same flags as run.py, plus --seconds_per_batch:

  python -m tests.train_driver --config=tests/tiny_config.py --workdir=DIR --seconds_per_batch=0.2
"""

import dataclasses
import time

import tensorflow_datasets as tfds
from absl import app, flags

import run
from alexnet_jax import data

_SECONDS_PER_BATCH = flags.DEFINE_float('seconds_per_batch', 0.0,
                                        'Sleep before each training batch.')


def _slowed(create_dataset):
  def create(*args, **kwargs) -> data.Dataset:
    dataset = create_dataset(*args, **kwargs)

    def train_batches(start_step):
      for batch in dataset.train_batches(start_step):
        time.sleep(_SECONDS_PER_BATCH.value)
        yield batch
    return dataclasses.replace(dataset, train_batches=train_batches)
  return create


if __name__ == '__main__':
  data.create_dataset = _slowed(data.create_dataset)
  with tfds.testing.mock_data(num_examples=96):
    app.run(run.main)
