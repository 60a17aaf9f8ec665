"""Reading data TFDS prepared: a damaged file is one UserError naming where it is, not a traceback.

Every pipeline opens its builder with `builder` and reads records with `as_numpy`. TFRecord files
carry a CRC per record, so a flipped bit or a cut file is found when read (tf.errors.DataLossError);
a damaged dataset_info.json when the builder is made. The fix is the same: prepare again.

The in-memory data sets (Fashion-MNIST, CIFAR-10) read a whole split with `load_split`; inside
`splits_kept_in_memory()` (an in-process sweep) each split is decoded once for all its runs.
"""

import contextlib
import json
import os
import re
from collections.abc import Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from google.protobuf import json_format

from alexnet_jax.errors import UserError


def builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
  """`tfds.builder(name, data_dir)`; an unusable data_dir or damaged metadata is a UserError."""
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


def as_numpy(ds: tf.data.Dataset, directory: str) -> Iterator[dict[str, np.ndarray]]:
  """`tfds.as_numpy(ds)` of a prepared data set; damaged or missing record files in `directory`
  (TFRecord checksums, truncation) become one UserError instead of a TensorFlow traceback."""
  try:
    yield from tfds.as_numpy(ds)
  except (tf.errors.DataLossError, tf.errors.NotFoundError) as e:
    # TensorFlow's message: '{{function_node ...}} corrupted record at 1234 [Op:...] name: '.
    reason = re.sub(r'\{\{.*?\}\}|\[Op:.*', '', e.message).strip() or type(e).__name__
    raise UserError(f'the prepared data in {directory} is damaged ({reason}); delete that '
                    'directory and run again to prepare it anew from its source files.') from e


# (data set directory, split) -> (images, labels), while `splits_kept_in_memory` is active.
_kept_splits: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] | None = None


@contextlib.contextmanager
def splits_kept_in_memory() -> Iterator[None]:
  """Within it, `load_split` decodes each split once and hands later callers the same arrays.

  For several runs in one process on the same data (an in-process sweep): TFDS decodes the
  records one by one, ~3 s per Fashion-MNIST run on a 2-core machine. The arrays are read-only
  either way, so no run can change another's data. Nested use keeps the outer cache. The key is
  the builder's data_dir: two `tfds.testing.mock_data` contexts (one directory, TFDS's metadata)
  inside one would share the first one's examples.
  """
  global _kept_splits
  if _kept_splits is not None:
    yield
    return
  _kept_splits = {}
  try:
    yield
  finally:
    _kept_splits = None


def load_split(builder: tfds.core.DatasetBuilder, split: str) -> tuple[np.ndarray, np.ndarray]:
  """A whole split in TFDS's (deterministic) order: images uint8 [N, H, W, C], labels int32 [N],
  both read-only. Raises UserError where the records are damaged or missing (`as_numpy`)."""
  key = (builder.data_dir, split)
  if _kept_splits is not None and key in _kept_splits:
    return _kept_splits[key]
  ds = builder.as_dataset(split=split, as_supervised=True).batch(10000)
  batches = list(as_numpy(ds, builder.data_dir))
  images = np.concatenate([images for images, _ in batches])
  labels = np.concatenate([labels for _, labels in batches]).astype(np.int32)
  images.flags.writeable = labels.flags.writeable = False
  if _kept_splits is not None:
    _kept_splits[key] = images, labels
  return images, labels
