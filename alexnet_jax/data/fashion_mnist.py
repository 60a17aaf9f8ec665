"""Fashion-MNIST through the TFDS `fashion_mnist` builder: the embedded default data set.

With internet, TFDS downloads the files as usual. Offline, the files of the Debian package
`dataset-fashion-mnist` are used: that package stores the upstream deflate streams unchanged but
strips each gzip header's file name and time stamp. Restoring those fields gives back the upstream
files byte for byte, so TFDS's own sha256 check passes and nothing about the builder is bypassed.

The whole split fits in memory (60,000 28x28 images), so batches are gathered with numpy from a
per-epoch permutation seeded by (seed, epoch): the data order is a pure function of the position
(epoch, offset), whatever batch sizes led there. Flips are drawn per step from (seed, step).
"""

import pathlib
import struct
import tempfile
from collections.abc import Iterator

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from alexnet_jax.data import (Batch, Dataset, Position, padded_eval_batches, prepared,
                              shuffled_epochs)
from alexnet_jax.errors import UserError

DEBIAN_DIR = pathlib.Path('/usr/share/datasets/fashion-mnist')
# Upstream gzip header time stamps (recovered by matching TFDS's registered sha256 sums).
UPSTREAM_GZIP_MTIME = {
    'train-images-idx3-ubyte': 1504176606,
    'train-labels-idx1-ubyte': 1504176606,
    't10k-images-idx3-ubyte': 1504176627,
    't10k-labels-idx1-ubyte': 1504176627,
}
GZIP_FLAG_FNAME = 0x08


def restore_upstream_gzip(debian_file: pathlib.Path, destination: pathlib.Path) -> None:
  """Writes `debian_file` with the upstream gzip header (file name + time stamp) restored."""
  name = debian_file.name.removesuffix('.gz')
  data = debian_file.read_bytes()
  if data[:3] != b'\x1f\x8b\x08' or data[3] != 0:
    raise UserError(f'{debian_file} is not the gzip file the Debian package ships; reinstall it: '
                    'apt-get install --reinstall dataset-fashion-mnist')
  header = (data[:3] + bytes([GZIP_FLAG_FNAME]) + struct.pack('<I', UPSTREAM_GZIP_MTIME[name])
            + data[8:10] + name.encode() + b'\0')
  destination.write_bytes(header + data[10:])


def _debian_files_present() -> bool:
  return all((DEBIAN_DIR / f'{name}.gz').exists() for name in UPSTREAM_GZIP_MTIME)


def prepare_builder(data_dir: str | None) -> tfds.core.DatasetBuilder:
  """The prepared `fashion_mnist` builder in `data_dir`, preparing it first if needed."""
  builder = prepared.builder('fashion_mnist', data_dir)
  if builder.is_prepared():
    return builder
  try:
    if _debian_files_present():
      with tempfile.TemporaryDirectory() as manual_dir:
        for name in UPSTREAM_GZIP_MTIME:
          restore_upstream_gzip(DEBIAN_DIR / f'{name}.gz', pathlib.Path(manual_dir) / f'{name}.gz')
        try:
          builder.download_and_prepare(
              download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
        except tfds.download.download_manager.NonMatchingChecksumError as e:
          named = [f'{DEBIAN_DIR / n}.gz' for n in UPSTREAM_GZIP_MTIME if f'{n}.gz' in str(e)]
          raise UserError(f'{named[0] if named else f"a file in {DEBIAN_DIR}"} is damaged (its '
                          'content does not match the upstream SHA-256 that TFDS checks); '
                          'reinstall it: apt-get install --reinstall dataset-fashion-mnist') from e
    else:
      builder.download_and_prepare()
  except PermissionError as e:
    raise UserError(f'cannot write the prepared data set to {builder.data_dir} ({e}); '
                    'set --config.data_dir to a writable directory.') from e
  except (OSError, tfds.download.DownloadError) as e:
    raise UserError(
        f'Fashion-MNIST is not prepared in {builder.data_dir} and could not be downloaded '
        f'({type(e).__name__}). Without internet, install the Debian package: '
        f'`apt-get install dataset-fashion-mnist` (files in {DEBIAN_DIR}).') from e
  return builder


def create_dataset(config: ml_collections.ConfigDict, process_index: int,
                   process_count: int) -> Dataset:
  """Fashion-MNIST from TFDS (the Debian files offline): this process's share of each batch.

  Images float32 [local batch, S, S, 1] (S = config.input.image_size, bilinear from 28), scaled
  to [0, 1] and standardised by the training set's mean and std; labels int32. Training batches
  reshuffle every epoch from config.seed and start at any Position; evaluation covers the test
  split once, padded with a mask.

  Raises UserError where the data cannot be found or prepared.

  Longer than 60 lines on purpose: the batch iterators are closures over the arrays loaded here.
  """
  builder = prepare_builder(config.get('data_dir'))
  train_images, train_labels = prepared.load_split(builder, 'train')
  test_images, test_labels = prepared.load_split(builder, 'test')
  names = tuple(builder.info.features['label'].names)
  classes = config.input.get('classes')
  if classes:  # A subset of the classes, relabelled 0..len(classes)-1 (e.g. for fine-tuning).
    train_images, train_labels = _select_classes(train_images, train_labels, classes)
    test_images, test_labels = _select_classes(test_images, test_labels, classes)
    names = tuple(names[c] for c in classes)
  mean, std = pixel_mean_std(train_images)  # The paper subtracts the training set's mean.
  size = config.input.image_size
  channels = train_images.shape[-1]
  global_batch = config.batch_size
  local_batch = global_batch // process_count
  seed = config.seed

  def preprocess(images_uint8: tf.Tensor) -> tf.Tensor:
    images = (tf.cast(images_uint8, tf.float32) / 255.0 - mean) / std
    return tf.image.resize(images, (size, size), method='bilinear')

  def train_batches(start: Position = Position()) -> Iterator[Batch]:
    local = slice(process_index * local_batch, (process_index + 1) * local_batch)

    def indices():
      for batch, step in shuffled_epochs(len(train_images), global_batch, seed, start):
        yield train_images[batch[local]], train_labels[batch[local]], step

    def augment(images, labels, step):
      images = preprocess(images)
      if config.input.random_flip:
        # Drawn for the global batch, so a process's flips do not depend on the process count.
        flip = tf.random.stateless_uniform([global_batch], seed=[seed, step]) < 0.5
        flip = flip[process_index * local_batch:(process_index + 1) * local_batch]
        images = tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)
      return {'image': images, 'label': labels}

    ds = tf.data.Dataset.from_generator(indices, output_signature=(
        tf.TensorSpec((local_batch, 28, 28, channels), tf.uint8),
        tf.TensorSpec((local_batch,), tf.int32),
        tf.TensorSpec((), tf.int64)))
    ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return iter(tfds.as_numpy(ds.prefetch(4)))

  def eval_batches() -> Iterator[Batch]:
    return padded_eval_batches(test_images, test_labels, config.eval_batch_size, process_index,
                               process_count, lambda images: preprocess(images).numpy())

  def preprocess_image(image_uint8: np.ndarray) -> np.ndarray:
    # To the data set's native 28x28 first, so a user's image goes through the same resize.
    native = tf.image.resize(image_uint8[None], (28, 28), method='area', antialias=True)
    return preprocess(tf.round(native)).numpy()

  return Dataset(
      num_classes=len(names),
      image_shape=(size, size, channels),
      num_train_examples=len(train_images),
      num_eval_examples=len(test_images),
      class_names=names,
      train_batches=train_batches,
      eval_batches={'': eval_batches},
      preprocess_image=preprocess_image,
  )


def pixel_mean_std(images_uint8: np.ndarray, chunk: int = 1 << 20) -> tuple[float, float]:
  """Mean and standard deviation of every value of uint8 `images_uint8` (any shape, non-empty),
  in [0, 1] units: `images.mean() / 255` and `images.std() / 255` (population std), in float64
  from the 256-bin histogram, counted `chunk` values at a time. On the training split's 47M
  values, in a fresh process: 0.08 s; numpy's float64 mean and std took 0.86-0.91 s, as did one
  `np.bincount` of the whole array (both fault in a 376 MB temporary). Raises ValueError for an
  empty array or another dtype than uint8."""
  if images_uint8.dtype != np.uint8 or images_uint8.size == 0:
    raise ValueError(f'expected a non-empty uint8 array, got {images_uint8.dtype} of shape '
                     f'{images_uint8.shape}.')
  flat = images_uint8.reshape(-1)
  counts = sum(np.bincount(flat[start:start + chunk], minlength=256)
               for start in range(0, flat.size, chunk))
  values = np.arange(256, dtype=np.float64)
  mean = counts @ values / counts.sum()
  variance = counts @ (values - mean) ** 2 / counts.sum()
  return float(mean / 255.0), float(np.sqrt(variance) / 255.0)


def _select_classes(images: np.ndarray, labels: np.ndarray,
                    classes) -> tuple[np.ndarray, np.ndarray]:
  if not all(0 <= c < 10 for c in classes) or len(set(classes)) != len(classes):
    raise UserError(f'config.input.classes={tuple(classes)} must be distinct labels in 0..9.')
  keep = np.isin(labels, classes)
  relabel = np.zeros(10, np.int32)
  relabel[list(classes)] = np.arange(len(classes))
  return images[keep], relabel[labels[keep]]
