"""Input pipelines. `create_dataset(config)` returns the `Dataset` named by `config.dataset`.

Every pipeline yields host-local numpy batches: {'image': float32 [B, H, W, C], 'label': int32 [B]}
for training, plus 'mask' (bool [B], False on padding) for evaluation. An evaluation image batch may
carry a crop axis, [B, crops, H, W, C]: the trainer averages the softmax over the crops.
Training data order is a pure function of (seed, `Position`), so a resumed run continues exactly,
also at another batch size.
"""

import dataclasses
import functools
import os
from collections.abc import Callable, Iterator, Sequence

import ml_collections
import numpy as np
from absl import logging

from alexnet_jax.errors import UserError

Batch = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Position:
  """Where training stands in the data; saved with every checkpoint (its 'input' item).

  `step` batches and `examples` examples were trained so far (examples = step x batch size,
  unless a resumed run changed the batch size); the next batch starts at example `offset` of
  epoch `epoch`'s order. An epoch's order holds `epoch_size` examples and a batch never wraps
  around it: when fewer than a batch are left, the batch starts the next epoch (the tail is
  dropped; the order, so the tail, is different each epoch).
  """
  step: int = 0
  examples: int = 0
  epoch: int = 0
  offset: int = 0

  def batch_start(self, batch_size: int, epoch_size: int) -> tuple[int, int]:
    """(epoch, offset) of the next batch of `batch_size`."""
    if self.offset + batch_size > epoch_size:
      return self.epoch + 1, 0
    return self.epoch, self.offset

  def after_batch(self, batch_size: int, epoch_size: int) -> 'Position':
    epoch, offset = self.batch_start(batch_size, epoch_size)
    return Position(self.step + 1, self.examples + batch_size, epoch, offset + batch_size)

  @classmethod
  def at_step(cls, step: int, batch_size: int, epoch_size: int) -> 'Position':
    """The position after `step` batches of one size: `after_batch` applied `step` times."""
    if step == 0:
      return cls()
    epoch, index = divmod(step - 1, epoch_size // batch_size)
    return cls(step, step * batch_size, epoch, (index + 1) * batch_size)


def shuffled_epochs(num_examples: int, global_batch: int, seed: int,
                    start: Position) -> Iterator[tuple[np.ndarray, int]]:
  """(example indices, step) of each global batch from `start` on, for a split held in memory.

  Epoch e's order is the permutation of the examples seeded by (seed, e); batches follow
  `Position.batch_start`, so they depend on the position, not on the batch sizes that led there.
  """
  position, permutation, permutation_epoch = start, None, -1
  while True:
    epoch, offset = position.batch_start(global_batch, num_examples)
    if epoch != permutation_epoch:
      permutation = np.random.default_rng([seed, epoch]).permutation(num_examples)
      permutation_epoch = epoch
    yield permutation[offset:offset + global_batch], position.step
    position = position.after_batch(global_batch, num_examples)


def padded_eval_batches(images: np.ndarray, labels: np.ndarray, eval_batch_size: int,
                        process_index: int, process_count: int,
                        preprocess: Callable[[np.ndarray], np.ndarray]) -> Iterator[Batch]:
  """This process's share of each evaluation batch of a split held in memory, in order.

  `images` uint8 [N, H, W, C], `labels` int [N]; `eval_batch_size` is global (a multiple of
  `process_count`). The last batch is padded with zero images whose `mask` is False, so every
  batch has the same shape and padding is never counted. Yields {'image': preprocess(uint8
  [local batch, H, W, C]), 'label', 'mask'}.
  """
  local_eval = eval_batch_size // process_count
  for start in range(0, len(images), eval_batch_size):
    first = start + process_index * local_eval
    chunk, chunk_labels = images[first:first + local_eval], labels[first:first + local_eval]
    pad = local_eval - len(chunk)
    yield {'image': preprocess(np.concatenate([chunk, np.zeros((pad,) + images.shape[1:],
                                                               images.dtype)])),
           'label': np.concatenate([chunk_labels, np.zeros((pad,), labels.dtype)]),
           'mask': np.arange(local_eval) < len(chunk)}


@dataclasses.dataclass(frozen=True)
class Dataset:
  num_classes: int
  image_shape: tuple[int, int, int]  # (H, W, C) as the model sees it.
  num_train_examples: int
  num_eval_examples: int
  class_names: tuple[str, ...]
  # A Position -> an endless iterator of training batches of config.batch_size from there on.
  train_batches: Callable[[Position], Iterator[Batch]]
  # Named evaluations over the evaluation split; '' is the main one (metrics under 'eval/').
  eval_batches: dict[str, Callable[[], Iterator[Batch]]]
  # Images of this process that failed to decode so far, by pipeline ('train', 'eval', ...):
  # training replaced them by other rows of their batch, evaluation masked them out.
  corrupt_image_counts: Callable[[], dict[str, int]] = dict
  # One decoded uint8 image [H, W, C] of any size -> the evaluation input [crops, H, W, C], with
  # the same preprocessing as `eval_batches` (used by alexnet_jax.predict); None if not offered.
  preprocess_image: Callable[[np.ndarray], np.ndarray] | None = None
  # Examples one epoch's training order holds, over all processes (Position.batch_start); 0:
  # num_train_examples. Differs where processes read equal shares of an uneven split.
  train_epoch_size: int = 0

  @property
  def epoch_size(self) -> int:
    return self.train_epoch_size or self.num_train_examples


@dataclasses.dataclass(frozen=True)
class DatasetEntry:
  """What the rest of the code needs to know of a data set without preparing it."""
  tfds_name: str  # The TFDS builder (its metadata holds the class names).
  channels: int  # Of the images the model sees.
  create: Callable[..., Dataset]  # (config, process_index, process_count) -> Dataset.
  # Where TFDS's class names are IDs: a TSV of ID -> English name (`english_names`).
  english_names_file: str | None = None


# The pipelines import TensorFlow: each is imported only when its data set is used.
def _fashion_mnist(*args) -> Dataset:
  from alexnet_jax.data import fashion_mnist
  return fashion_mnist.create_dataset(*args)


def _cifar10(*args) -> Dataset:
  from alexnet_jax.data import cifar10
  return cifar10.create_dataset(*args)


def _imagenet(*args) -> Dataset:
  from alexnet_jax.data import imagenet
  return imagenet.create_dataset(*args)


DATASETS = {
    'fashion_mnist': DatasetEntry('fashion_mnist', 1, _fashion_mnist),
    'cifar10': DatasetEntry('cifar10', 3, _cifar10),
    'imagenet2012': DatasetEntry('imagenet2012', 3, _imagenet,
                                 os.path.join(os.path.dirname(__file__),
                                              'imagenet_class_names.tsv')),
}


def entry(config: ml_collections.ConfigDict) -> DatasetEntry:
  if config.dataset not in DATASETS:
    raise UserError(f'config.dataset={config.dataset!r} is unknown; expected one of '
                    f'{", ".join(DATASETS)}.')
  return DATASETS[config.dataset]


@functools.cache
def english_names(path: str) -> dict[str, str]:
  """{class ID: short English name} from a TSV such as imagenet_class_names.tsv (ILSVRC-2012's
  WordNet IDs, 'n02123045': 'tabby'; torchvision's unique names, its header says where from)."""
  with open(path, encoding='utf-8') as f:
    rows = [line.rstrip('\n').split('\t') for line in f if not line.startswith('#')]
  return dict(rows)


def readable_class_names(config: ml_collections.ConfigDict,
                         names: Sequence[str]) -> tuple[str, ...]:
  """The label names `names` of config's data set as a person reads them: IDs with their English
  name, ImageNet's 'tabby (n02123045)'; the names of a data set without IDs unchanged."""
  path = entry(config).english_names_file
  if path is None:
    return tuple(names)
  english = english_names(path)
  return tuple(f'{english[name]} ({name})' if name in english else name for name in names)


def keep_tensorflow_off_accelerators() -> None:
  """Hides every GPU from TensorFlow, which here only feeds data, so that JAX has the
  accelerators and their memory to itself. `create_dataset` calls it before any pipeline starts,
  whichever tool reads the data (training creates its data before its TensorBoard writer); code
  that runs TensorFlow earlier calls it first (the accelerator check, the tests). TensorFlow
  lets the same setting be made twice. Imports TensorFlow (2-4 s): `alexnet_jax.data` itself does
  not (a pipeline imports it with its data set), so that a --help, a config mistake or a process
  that never reads data does not wait for it. Where TensorFlow already ran on a GPU it is too
  late: a warning says so, and training goes on."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError as e:  # "Visible devices cannot be modified after being initialized".
    logging.warning('TensorFlow started on the GPU before it could be hidden (%s); it may hold '
                    'memory JAX needs.', e)


def image_shape(config: ml_collections.ConfigDict) -> tuple[int, int, int]:
  """(H, W, C) of the images the model of `config` takes: the one place this is derived."""
  size = config.input.image_size
  return (size, size, entry(config).channels)


def create_dataset(config: ml_collections.ConfigDict, process_index: int = 0,
                   process_count: int = 1) -> Dataset:
  """The data set of `config.dataset`, each process feeding its share of the global batch.

  TensorFlow (the pipelines' tf.data) is kept off any GPU first, whichever tool reads the data.
  """
  if config.batch_size % process_count:
    raise UserError(f'batch_size={config.batch_size} is not divisible by the number of processes '
                    f'({process_count}); set --config.batch_size to a multiple of it.')
  keep_tensorflow_off_accelerators()
  return entry(config).create(config, process_index, process_count)
