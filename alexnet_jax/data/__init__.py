"""Input pipelines. `create_dataset(config)` returns the `Dataset` named by `config.dataset`.

Every pipeline yields host-local numpy batches: {'image': float32 [B, H, W, C], 'label': int32 [B]}
for training, plus 'mask' (bool [B], False on padding) for evaluation. An evaluation image batch may
carry a crop axis, [B, crops, H, W, C]: the trainer averages the softmax over the crops.
Training data order is a pure function of (seed, step), so resuming at step N continues exactly.
"""

import dataclasses
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
