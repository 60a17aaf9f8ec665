"""Reading data TFDS prepared: a damaged file is one UserError naming where it is, not a traceback.

Both pipelines open their builder with `builder` and read records with `as_numpy`. TFRecord files
carry a CRC per record, so a flipped bit or a cut file is found when read (tf.errors.DataLossError);
a damaged dataset_info.json when the builder is made. The fix is the same: prepare again.
"""

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

