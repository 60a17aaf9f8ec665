"""ILSVRC-2012 through the TFDS `imagenet2012` builder, with the paper's preprocessing (§2, §4.1).

The user places ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in `config.manual_dir`; TFDS
prepares them once into `config.data_dir`. Records are read as JPEG bytes and decoded in the
tf.data pipeline (only the crop window, where that helps).

Training data order: each process reads its own `tfds.split_for_jax_process` slice. Epoch e's
order comes from file and buffer shuffles seeded by (seed, e, process); the tail that does not fill
a batch is dropped, so every epoch has the same number of steps. Each example's augmentation is
seeded by (seed, e, process, position in the epoch). `train_batches(position)` therefore starts at
epoch `position.epoch` and skips the records already consumed in it before decoding them; the
batches never depend on the batch sizes that led to the position. Every process reads
num_train // process_count records of each epoch (`Dataset.train_epoch_size`).

A JPEG that fails to decode never stops training or evaluation: in a training batch its row is
replaced by a copy of another row of the same batch (so step k still holds records
[k*B, (k+1)*B) of the epoch and resuming stays exact); in evaluation its mask is False. Both are
counted: `Dataset.corrupt_image_counts()`.
"""

import os
import pathlib
import tempfile
import threading
from collections.abc import Callable, Iterator

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from alexnet_jax.data import Batch, Dataset, Position, convention, ilsvrc_tars, prepared, preprocessing
from alexnet_jax.errors import UserError

BUILDER_NAME = 'imagenet2012'
TARS = ('ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar')
DOWNLOAD_HELP = (f'download them from {ilsvrc_tars.DOWNLOAD_URL} (free registration; '
                 'the "Training images (Task 1 & 2)" and "Validation images (all tasks)" files of '
                 'ILSVRC2012, 138 GB and 6.3 GB), put both in one directory and pass it as '
                 '--config.manual_dir=DIR; TFDS prepares them once into data_dir')


def _check_writable(directory: pathlib.Path) -> None:
  try:
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=directory):
      pass
  except OSError as e:
    raise UserError(f'the TFDS data_dir {str(directory)!r} is not writable ({e.strerror}); '
                    'set --config.data_dir to a writable directory (preparing ImageNet needs '
                    'about 150 GB there).') from e


def prepare_builder(data_dir: str | None, manual_dir: str | None) -> tfds.core.DatasetBuilder:
  """The prepared `imagenet2012` builder in `data_dir`, preparing it from `manual_dir` if needed."""
  builder = prepared.builder(BUILDER_NAME, data_dir)
  if builder.is_prepared():
    return builder
  where = f'ImageNet ({BUILDER_NAME}) is not prepared in {builder.data_dir_root}'
  if not manual_dir:
    raise UserError(f'{where} and config.manual_dir is not set. It needs {" and ".join(TARS)}: '
                    f'{DOWNLOAD_HELP}.')
  manual = pathlib.Path(manual_dir).expanduser()
  if not manual.is_dir():
    raise UserError(f'{where} and config.manual_dir={manual_dir!r} is not a directory. It must '
                    f'hold {" and ".join(TARS)}: {DOWNLOAD_HELP}.')
  missing = [tar for tar in TARS if not (manual / tar).is_file()]
  if missing:
    raise UserError(f'{where} and {" and ".join(missing)} '
                    f'{"is" if len(missing) == 1 else "are"} missing from manual_dir {manual}: '
                    f'{DOWNLOAD_HELP}.')
  _check_writable(pathlib.Path(builder.data_dir_root))
  tars = [manual / tar for tar in TARS]
  ilsvrc_tars.check_tars(tars)  # Headers only: seconds, before hours of preparation.
  logging.info('Preparing %s from %s into %s (once; hours for the real data).', BUILDER_NAME,
               manual, builder.data_dir_root)
  try:
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual)))
  except PermissionError as e:
    raise UserError(f'cannot write the prepared data set to {builder.data_dir} ({e.strerror}); '
                    'set --config.data_dir to a writable directory.') from e
  except ilsvrc_tars.TAR_ERRORS as e:  # TFDS writes into a temporary directory: nothing is left.
    raise ilsvrc_tars.locate_damage(tars, e) from e
  return builder


def _check_config(config: ml_collections.ConfigDict, process_count: int) -> convention.Convention:
  inp = convention.Convention.from_config(config.input)
  if config.eval_batch_size % process_count:
    raise UserError(f'eval_batch_size={config.eval_batch_size} is not divisible by the number of '
                    f'processes ({process_count}); set --config.eval_batch_size to a multiple.')
  return inp


def _records(builder: tfds.core.DatasetBuilder, split: str, deterministic: bool,
             shuffle_seed: int | None = None) -> tf.data.Dataset:
  """{'image': JPEG bytes, 'label': int32} in file order, or with the files shuffled by seed."""
  options = tf.data.Options()
  options.deterministic = deterministic
  read_config = tfds.ReadConfig(shuffle_seed=shuffle_seed, options=options)
  ds = builder.as_dataset(split=split, shuffle_files=shuffle_seed is not None,
                          read_config=read_config,
                          decoders={'image': tfds.decode.SkipDecoding()})
  return ds.map(lambda example: {'image': example['image'],
                                 'label': tf.cast(example['label'], tf.int32)})


def _map_tolerating_corrupt(ds: tf.data.Dataset, fn: Callable[..., dict[str, tf.Tensor]],
                            fallback: Callable[..., dict[str, tf.Tensor]],
                            deterministic: bool) -> tf.data.Dataset:
  """ds.map(fn) plus 'valid': True, except that an element where fn fails (a corrupt JPEG) becomes
  fallback(element) with 'valid': False instead of an error: one output per input, in order."""

  def one(*element):
    good = tf.data.Dataset.from_tensors(element).map(
        lambda *e: {**fn(*e), 'valid': tf.constant(True)}).ignore_errors(log_warning=True)
    bad = tf.data.Dataset.from_tensors({**fallback(*element), 'valid': tf.constant(False)})
    return good.concatenate(bad).take(1)

  # Parallel decoding: each element is its own one-element dataset, interleaved in order.
  return ds.interleave(one, cycle_length=tf.data.AUTOTUNE, block_length=1,
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)


def _replace_corrupt_rows(batch: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  """Rows whose image failed to decode take a valid row of the same batch, cycling through them."""
  valid = batch['valid']
  rows = tf.range(tf.shape(valid)[0])
  valid_rows = tf.boolean_mask(rows, valid)
  num_valid = tf.maximum(tf.size(valid_rows), 1)
  source = tf.where(valid, rows, tf.gather(tf.concat([valid_rows, [0]], 0), rows % num_valid))
  return {'image': tf.gather(batch['image'], source), 'label': tf.gather(batch['label'], source),
          'valid': valid}


class _CorruptCounter:
  """Counts of images that failed to decode, per pipeline; read from the trainer's thread."""

  def __init__(self):
    self._lock = threading.Lock()
    self._counts: dict[str, int] = {}

  def add(self, name: str, count: int) -> None:
    with self._lock:
      self._counts[name] = self._counts.get(name, 0) + count

  def counts(self) -> dict[str, int]:
    with self._lock:
      return dict(self._counts)


def load_or_compute_mean(builder: tfds.core.DatasetBuilder, config: ml_collections.ConfigDict,
                         decode: Callable[[tf.Tensor], tf.Tensor]) -> np.ndarray:
  """The per-pixel training mean [S, S, 3] (RGB, 0-255) of the first `mean_num_images` training
  images, each resized by `decode` (the convention's resize policy: its name is in the cache's).

  The records are in the order TFDS wrote them, which TFDS shuffles, so they are a fair sample;
  every process computes the same array. It is cached next to the prepared data (named for the
  JPEG decoder, libjpeg's accurate IDCT "islow": a mean of other decodes is not reused); a cache
  file that cannot be read is recomputed.
  """
  size = config.input.resize_size
  count = min(config.input.mean_num_images, builder.info.splits['train'].num_examples)
  warp = '_warp' if config.input.get('resize') == 'warp' else ''  # Else central squares.
  cache = (pathlib.Path(builder.data_dir) /
           f'alexnet_jax_mean_{size}px{warp}_{count}images_islow.npy')
  if cache.exists():
    try:
      mean = np.load(cache)
    except (OSError, ValueError, EOFError) as e:  # Truncated or overwritten: compute it again.
      logging.warning('The cached training mean %s is unreadable (%s); recomputing it.', cache,
                      e)
      mean = None
    if mean is not None and mean.shape == (size, size, 3):
      return mean
  logging.info('Computing the per-pixel training mean from %d images into %s.', count, cache)
  records = _records(builder, f'train[:{count}]', deterministic=True)
  images = _map_tolerating_corrupt(
      records, lambda example: {'image': decode(example['image'])},
      lambda example: {'image': tf.zeros((size, size, 3))}, deterministic=True)
  total, used = np.zeros((size, size, 3), np.float64), 0
  for batch in prepared.as_numpy(images.batch(256).prefetch(1), builder.data_dir):
    total += batch['image'][batch['valid']].sum(axis=0, dtype=np.float64)
    used += int(batch['valid'].sum())
  if not used:
    raise UserError(f'none of the first {count} training images of {builder.data_dir} could be '
                    'decoded: the prepared data is damaged; delete that directory to re-prepare.')
  mean = (total / used).astype(np.float32)
  try:  # Atomic, so processes sharing a file system never read half a file.
    with tempfile.NamedTemporaryFile(dir=cache.parent, suffix='.npy', delete=False) as f:
      np.save(f, mean)
    os.replace(f.name, cache)
  except OSError as e:
    logging.warning('Could not cache the training mean in %s (%s); it is recomputed next run.',
                    cache, e)
  return mean


def _seed_words(*words: int) -> list[int]:
  """Two well-mixed 32-bit words for a tuple of non-negative ints."""
  return [int(w) for w in np.random.SeedSequence(list(words)).generate_state(2)]


def create_dataset(config: ml_collections.ConfigDict, process_index: int,
                   process_count: int) -> Dataset:
  """ILSVRC-2012 through TFDS's `imagenet2012` builder: this process's share of each batch.

  Training images: decoded, resized (config.input.resize), centred by the training mean, then the
  paper's random 227 crops, mirrors and PCA lighting (docs/paper.md, §4.1), or random-resized
  crops; undecodable images are replaced by zeros and counted. Evaluation: the centre crop and,
  with eval_crops='ten', the ten views (§4.1), padded to whole batches with a mask. Batches:
  images float32 [local batch, S, S, 3], labels int32.

  Raises UserError for a config the pipeline cannot serve, missing or damaged tars, an unwritable
  data_dir, or a batch larger than the training split.

  Longer than 60 lines on purpose: the training and evaluation closures share the builder, the
  normaliser, the seeds and the corrupt-image counter set up here; split apart they would pass
  all of it around.
  """
  inp = _check_config(config, process_count)
  builder = prepare_builder(config.get('data_dir'), config.get('manual_dir'))
  size = inp.image_size
  deterministic = config.input.deterministic
  decode = lambda jpeg: convention.decode_resized(jpeg, inp)  # RGB, 8-bit values.
  # A training mean is averaged over images of one size: a shorter-side resize (per-channel mean
  # only) averages central squares instead.
  square = (decode if inp.resize != 'shorter_side' else
            lambda jpeg: preprocessing.decode_center_square(jpeg, inp.resize_size))
  mean = convention.load_mean(inp, lambda: load_or_compute_mean(builder, config, square))
  if inp.augmentation == 'random_resized_crop' and np.ndim(mean) == 3:
    mean = mean.mean(axis=(0, 1))  # Random-resized crops have no fixed pixels: per channel.
  normalize = convention.Normalizer(inp, mean)
  counter = _CorruptCounter()
  num_train = builder.info.splits['train'].num_examples
  num_eval = builder.info.splits['validation'].num_examples
  local_batch = config.batch_size // process_count
  local_epoch_size = num_train // process_count  # The same on every process.
  epoch_size = local_epoch_size * process_count
  if local_epoch_size < local_batch:
    raise UserError(f'batch_size={config.batch_size} is larger than the training split '
                    f'({num_train} images); lower --config.batch_size.')
  train_split = tfds.split_for_jax_process('train', process_index=process_index,
                                           process_count=process_count)
  eval_split = tfds.split_for_jax_process('validation', process_index=process_index,
                                          process_count=process_count)

  def train_example(epoch_seed: tf.Tensor, position: tf.Tensor,
                    example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    seed = tf.random.experimental.stateless_fold_in(epoch_seed, position)
    crop_seed, flip_seed, lighting_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 3))
    if inp.augmentation == 'paper':
      image = preprocessing.random_crop(normalize.center(decode(example['image'])), crop_seed,
                                        size)
    else:
      image = normalize.center(preprocessing.random_resized_crop(
          example['image'], crop_seed, size, antialias=inp.resize_antialias))
    image = preprocessing.random_flip(image, flip_seed)
    if config.input.pca_lighting:  # In RGB, on the pixel_range scale: before std and order.
      image = preprocessing.pca_lighting(image, lighting_seed, config.input.pca_lighting_stddev,
                                         inp.pixel_range)
    return {'image': normalize.finish(image), 'label': example['label']}

  def epoch_batches(epoch: int, offset: int) -> tf.data.Dataset:
    """Epoch `epoch`'s batches from global example `offset` on (a multiple of process_count)."""
    file_seed, buffer_seed = _seed_words(config.seed, epoch, process_index)
    epoch_seed = tf.constant(_seed_words(config.seed, epoch, process_index, 1), tf.int64)
    ds = _records(builder, train_split, deterministic, shuffle_seed=file_seed)
    ds = ds.shuffle(config.input.shuffle_buffer, seed=buffer_seed)
    skip = offset // process_count
    batches = (local_epoch_size - skip) // local_batch  # The tail is dropped before decoding.
    ds = ds.take(skip + batches * local_batch).enumerate().skip(skip)
    ds = _map_tolerating_corrupt(
        ds, lambda position, example: train_example(epoch_seed, position, example),
        lambda position, example: {'image': tf.zeros((size, size, 3)),
                                   'label': example['label']}, deterministic)
    ds = ds.batch(local_batch, drop_remainder=True).map(_replace_corrupt_rows)
    return ds.prefetch(2)

  def train_batches(start: Position = Position()) -> Iterator[Batch]:
    epoch, offset = start.batch_start(config.batch_size, epoch_size)
    while True:
      for batch in prepared.as_numpy(epoch_batches(epoch, offset), builder.data_dir):
        corrupt = int((~batch.pop('valid')).sum())
        if corrupt:
          counter.add('train', corrupt)
          if corrupt == local_batch:
            raise UserError(f'no image of a training batch in epoch {epoch} could be decoded: '
                            f'the prepared data in {builder.data_dir} is damaged; delete it to '
                            're-prepare from the tars.')
        yield batch
      epoch, offset = epoch + 1, 0

  local_eval = config.eval_batch_size // process_count
  eval_steps = -(-(-(-num_eval // process_count)) // local_eval)  # ceil(ceil(N / P) / B).

  def eval_image(jpeg: tf.Tensor, ten: bool) -> tf.Tensor:
    """[size, size, 3], or the ten views [10, size, size, 3]."""
    views = convention.eval_views(normalize.center(decode(jpeg)), inp, ten)
    views = tf.ensure_shape(normalize.finish(views), (10 if ten else 1, size, size, 3))
    return views if ten else views[0]

  def eval_batches(name: str, ten: bool, view_shape: tuple[int, ...]) -> Iterator[Batch]:
    ds = _map_tolerating_corrupt(
        _records(builder, eval_split, deterministic=True),
        lambda example: {'image': eval_image(example['image'], ten), 'label': example['label']},
        lambda example: {'image': tf.zeros(view_shape), 'label': example['label']},
        deterministic=True)
    ds = ds.map(lambda example: {**example, 'real': True})
    padding = {'image': tf.zeros(view_shape), 'label': tf.constant(0), 'valid': False,
               'real': False}
    ds = ds.concatenate(tf.data.Dataset.from_tensors(padding).repeat())
    ds = ds.take(eval_steps * local_eval).batch(local_eval).prefetch(2)
    for batch in prepared.as_numpy(ds, builder.data_dir):
      valid, real = batch.pop('valid'), batch.pop('real')
      corrupt = int((real & ~valid).sum())
      if corrupt:
        counter.add(name, corrupt)
      batch['mask'] = valid & real
      yield batch

  evaluations = {'': lambda: eval_batches('eval', False, (size, size, 3))}
  if inp.eval_crops == 'ten':
    evaluations['ten_crop'] = lambda: eval_batches('eval_ten_crop', True, (10, size, size, 3))

  return Dataset(
      num_classes=builder.info.features['label'].num_classes,
      image_shape=(size, size, 3),
      num_train_examples=num_train,
      num_eval_examples=num_eval,
      class_names=tuple(builder.info.features['label'].names),
      train_batches=train_batches,
      eval_batches=evaluations,
      corrupt_image_counts=counter.counts,
      train_epoch_size=epoch_size,
      preprocess_image=convention.preprocessor(inp, mean),
  )
