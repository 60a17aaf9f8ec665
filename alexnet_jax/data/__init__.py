"""Input pipelines. `create_dataset(config)` returns the `Dataset` named by `config.dataset`.

Every pipeline yields host-local numpy batches: {'image': float32 [B, H, W, C], 'label': int32 [B]}
for training, plus 'mask' (bool [B], False on padding) for evaluation. An evaluation image batch may
carry a crop axis, [B, crops, H, W, C]: the trainer averages the softmax over the crops.
Training data order is a pure function of (seed, step), so resuming at step N continues exactly.
"""

import dataclasses
import json
import os
import re
from collections.abc import Callable, Iterator

import ml_collections
import numpy as np

from alexnet_jax.errors import UserError

Batch = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Dataset:
  num_classes: int
  image_shape: tuple[int, int, int]  # (H, W, C) as the model sees it.
  num_train_examples: int
  num_eval_examples: int
  class_names: tuple[str, ...]
  # start_step -> an endless iterator of training batches, continuing the data order at that step.
  train_batches: Callable[[int], Iterator[Batch]]
  # Named evaluations over the evaluation split; '' is the main one (metrics under 'eval/').
  eval_batches: dict[str, Callable[[], Iterator[Batch]]]
  # Images of this process that failed to decode so far, by pipeline ('train', 'eval', ...):
  # training replaced them by other rows of their batch, evaluation masked them out.
  corrupt_image_counts: Callable[[], dict[str, int]] = dict
  # One decoded uint8 image [H, W, C] of any size -> the evaluation input [crops, H, W, C], with
  # the same preprocessing as `eval_batches` (used by alexnet_jax.predict); None if not offered.
  preprocess_image: Callable[[np.ndarray], np.ndarray] | None = None


DATASETS = ('fashion_mnist', 'imagenet2012')


def tfds_builder(name: str, data_dir: str | None):
  """`tfds.builder(name, data_dir)`; an unusable data_dir or damaged metadata is a UserError."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from google.protobuf import json_format  # pylint: disable=import-outside-toplevel
  try:
    return tfds.builder(name, data_dir=data_dir)
  except PermissionError as e:
    raise UserError(f'cannot create the TFDS data_dir {data_dir!r} ({e.strerror}); '
                    'set --config.data_dir to a writable directory.') from e
  except (json_format.ParseError, json.JSONDecodeError) as e:  # Its dataset_info.json.
    where = os.path.join(data_dir or tfds.core.constants.DATA_DIR, name)
    reason = str(e).rpartition('": ')[2].strip().rstrip('.')  # After TFDS's builder_kwargs dump.
    raise UserError(f'the prepared {name} in {where} is damaged ({reason}); delete that '
                    'directory and run again to prepare it anew.') from e


def read_prepared(ds, directory: str) -> Iterator[Batch]:
  """`tfds.as_numpy(ds)` of a prepared data set; damaged or missing record files in `directory`
  (TFRecord checksums, truncation) become one UserError instead of a TensorFlow traceback."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  try:
    yield from tfds.as_numpy(ds)
  except (tf.errors.DataLossError, tf.errors.NotFoundError) as e:
    # TensorFlow's message: '{{function_node ...}} corrupted record at 1234 [Op:...] name: '.
    reason = re.sub(r'\{\{.*?\}\}|\[Op:.*', '', e.message).strip() or type(e).__name__
    raise UserError(f'the prepared data in {directory} is damaged ({reason}); delete that '
                    'directory and run again to prepare it anew from its source files.') from e


def create_dataset(config: ml_collections.ConfigDict, process_index: int = 0,
                   process_count: int = 1) -> Dataset:
  """The data set of `config.dataset`, each process feeding its share of the global batch."""
  if config.batch_size % process_count:
    raise UserError(f'batch_size={config.batch_size} is not divisible by the number of processes '
                    f'({process_count}); set --config.batch_size to a multiple of it.')
  if config.dataset == 'fashion_mnist':
    from alexnet_jax.data import fashion_mnist
    return fashion_mnist.create_dataset(config, process_index, process_count)
  if config.dataset == 'imagenet2012':
    try:
      from alexnet_jax.data import imagenet
    except ImportError as e:
      raise UserError('the imagenet2012 input pipeline is not available in this version '
                      f'({e}); use --config=configs/default.py.') from e
    return imagenet.create_dataset(config, process_index, process_count)
  raise UserError(f'config.dataset={config.dataset!r} is unknown; expected one of {DATASETS}.')
