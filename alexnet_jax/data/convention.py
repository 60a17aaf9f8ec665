"""The input convention: how a photograph becomes the network's input, as `config.input` says.

A trained network only works on inputs made the way its training inputs were, and the reference
implementations differ in every step (docs/paper.md, "Data (§2)", "Caffe bvlc_alexnet",
"torchvision"). The same settings drive the ImageNet training and evaluation pipeline
(alexnet_jax/data/imagenet.py, hence `features` and `ensemble`) and the single-image path of
`predict`, and `alexnet_jax.convert` writes the source's settings into a converted workdir.

config.input keys (the defaults are the paper's):
  resize          'center_square': shorter side to resize_size, then the central square (§2;
                  cuda-convnet2's make-data.py CROP_TO_SQUARE) | 'shorter_side': shorter side to
                  resize_size, the aspect ratio kept, the longer side int(resize_size * long /
                  short) (torchvision's Resize) | 'warp': both sides to resize_size (Caffe).
  resize_size     int, 256 in every source.
  resize_antialias  True: Pillow's antialiased bilinear | False: OpenCV's INTER_LINEAR (Caffe).
  image_size      the crop the network sees (227 or 224).
  channel_order   'rgb' | 'bgr' (Caffe reads images with OpenCV: BGR).
  pixel_range     pixel values run over [0, pixel_range] before the mean: 255 or 1 (torchvision).
  mean_subtraction  'per_pixel' (a resize_size^2 mean image, §2) | 'per_channel' | 'none'.
  mean_values     per-channel mean, in channel_order on the pixel_range scale; None: computed from
                  the training set (per_channel only).
  mean_file       .npy of the per-pixel mean [resize_size, resize_size, 3], in channel_order on the
                  pixel_range scale (a converted Caffe model ships one); a relative path is relative
                  to the workdir of a loaded model. None: computed from the training set.
  std             per-channel divisor after the mean, in channel_order (torchvision) | None.
  augmentation    'paper': random image_size crops of the resized image + mirror |
                  'random_resized_crop': Inception-style crops of the original (torchvision).
  eval_crops      'center' | 'ten' (4 corners + centre, each mirrored).

Order of operations, the same everywhere: decode (RGB, 8 bits) -> resize (8 bits) ->
x * pixel_range / 255 - mean -> crop / views (-> mirror -> PCA lighting, training) -> / std ->
channel order. The mean and std are kept in RGB internally; the channel order is applied last.
"""

import dataclasses
import os
from collections.abc import Callable

import ml_collections
import numpy as np
import tensorflow as tf

from alexnet_jax.data import preprocessing
from alexnet_jax.errors import UserError

RESIZES = ('center_square', 'shorter_side', 'warp')
CHANNEL_ORDERS = ('rgb', 'bgr')
MEAN_SUBTRACTIONS = ('per_pixel', 'per_channel', 'none')
AUGMENTATIONS = ('paper', 'random_resized_crop')
EVAL_CROPS = ('center', 'ten')
# The data sets whose config.input is this convention (photographs in three channels).
DATASETS = ('imagenet2012',)


@dataclasses.dataclass(frozen=True)
class Convention:
  """config.input's convention keys, with the paper's values for any a config lacks."""
  image_size: int = 227
  resize_size: int = 256
  resize: str = 'center_square'
  resize_antialias: bool = True
  channel_order: str = 'rgb'
  pixel_range: float = 255.0
  mean_subtraction: str = 'per_pixel'
  mean_values: tuple[float, ...] | None = None
  mean_file: str | None = None
  std: tuple[float, ...] | None = None
  augmentation: str = 'paper'
  eval_crops: str = 'ten'

  @classmethod
  def from_config(cls, inp: ml_collections.ConfigDict) -> 'Convention':
    """Reads and checks config.input; raises UserError naming the key for a bad value."""
    values = {}
    for field in dataclasses.fields(cls):
      value = inp.get(field.name, field.default)
      if field.name in ('mean_values', 'std') and value is not None:
        value = tuple(float(v) for v in value)
      values[field.name] = value
    convention = cls(**values)
    convention.check()
    return convention

  def check(self) -> None:
    for name, allowed in (('resize', RESIZES), ('channel_order', CHANNEL_ORDERS),
                          ('mean_subtraction', MEAN_SUBTRACTIONS),
                          ('augmentation', AUGMENTATIONS), ('eval_crops', EVAL_CROPS)):
      if getattr(self, name) not in allowed:
        raise UserError(f'config.input.{name}={getattr(self, name)!r} is unknown; expected one '
                        f'of {", ".join(allowed)}.')
    if self.resize_size < self.image_size:
      raise UserError(f'config.input.resize_size={self.resize_size} is smaller than '
                      f'config.input.image_size={self.image_size}; crops must fit inside it.')
    for name in ('mean_values', 'std'):
      value = getattr(self, name)
      if value is not None and (len(value) != 3 or (name == 'std' and min(value) <= 0)):
        raise UserError(f'config.input.{name}={value} must be three per-channel values'
                        f'{" > 0" if name == "std" else ""}, in config.input.channel_order.')
    if self.mean_subtraction == 'per_pixel' and self.mean_values is not None:
      raise UserError('config.input.mean_values are per-channel; with mean_subtraction='
                      "'per_pixel' set config.input.mean_file (or mean_subtraction='per_channel').")
    if self.mean_subtraction == 'per_pixel' and self.resize == 'shorter_side':
      raise UserError("config.input.mean_subtraction='per_pixel' needs images of one size: "
                      "config.input.resize 'center_square' or 'warp' (or use 'per_channel').")

  @property
  def needs_training_mean(self) -> bool:
    """True when the mean is computed from the training set (not in the config or a file)."""
    return (self.mean_subtraction != 'none' and self.mean_file is None
            and self.mean_values is None)

  @property
  def center_offset_rounding(self) -> str:
    """How the centre view's offset (dim - crop) / 2 is rounded: torchvision's CenterCrop
    rounds half to even (int(round(x)), torchvision/transforms/functional.py `center_crop`);
    Caffe (data_transformer.cpp lines 91-92) and cuda-convnet2 (jpeg.cpp line 53) divide
    integers (floor)."""
    return 'half_even' if self.resize == 'shorter_side' else 'floor'


def _to_rgb(values_in_channel_order: np.ndarray, channel_order: str) -> np.ndarray:
  return values_in_channel_order[..., ::-1] if channel_order == 'bgr' else values_in_channel_order


def load_mean(convention: Convention, compute: Callable[[], np.ndarray] | None = None
              ) -> np.ndarray | float:
  """The mean to subtract, in RGB on the pixel_range scale: [S, S, 3], [3] or 0.0.

  `compute()` returns the per-pixel training mean [resize_size, resize_size, 3] in RGB 0-255; it
  is called only when the convention takes the mean from the training set. Raises UserError for a
  mean file that is missing, unreadable or of the wrong shape.
  """
  scale = convention.pixel_range / 255.0
  if convention.mean_subtraction == 'none':
    return 0.0
  if convention.mean_values is not None:
    return _to_rgb(np.asarray(convention.mean_values, np.float32), convention.channel_order)
  if convention.mean_file is not None:
    mean = read_mean_file(convention.mean_file, convention.resize_size)
    mean = _to_rgb(mean, convention.channel_order)
  else:
    if compute is None:
      raise UserError('the input mean is computed from the training set, which is not given here.')
    mean = np.asarray(compute(), np.float32) * scale
  return mean.mean(axis=(0, 1)) if convention.mean_subtraction == 'per_channel' else mean


def read_mean_file(path: str, size: int) -> np.ndarray:
  """float32 [size, size, 3] from a .npy mean image; raises UserError naming the file."""
  try:
    mean = np.load(path)
  except FileNotFoundError as e:
    raise UserError(f'config.input.mean_file {path} does not exist.') from e
  except (OSError, ValueError, EOFError) as e:
    raise UserError(f'config.input.mean_file {path} is not a readable .npy file ({e}).') from e
  if mean.shape != (size, size, 3):
    raise UserError(f'config.input.mean_file {path} holds an array of shape {mean.shape}; '
                    f'expected ({size}, {size}, 3) (config.input.resize_size={size}).')
  return mean.astype(np.float32)


def resolve_paths(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  """`config` with a relative config.input.mean_file made absolute against `workdir`."""
  mean_file = config.get('input', {}).get('mean_file')
  if not mean_file or os.path.isabs(mean_file):
    return config
  config = config.copy_and_resolve_references()
  config.input.mean_file = os.path.join(os.path.abspath(workdir), mean_file)
  return config


class Normalizer:
  """The arithmetic of the convention: `center` before the crop (a per-pixel mean has to be
  taken at the crop's pixels), `finish` after it (per-channel, so it commutes with crops)."""

  def __init__(self, convention: Convention, mean_rgb: np.ndarray | float):
    self.scale = convention.pixel_range / 255.0
    self.mean = tf.constant(mean_rgb, tf.float32)
    std = convention.std
    self.std_rgb = None if std is None else tf.constant(
        _to_rgb(np.asarray(std, np.float32), convention.channel_order))
    self.bgr = convention.channel_order == 'bgr'

  def center(self, image_0_255: tf.Tensor) -> tf.Tensor:
    """RGB pixels in [0, 255] -> x * pixel_range / 255 - mean."""
    return image_0_255 * self.scale - self.mean

  def finish(self, image: tf.Tensor) -> tf.Tensor:
    """Divides by the std and puts the channels in the model's order (last axis)."""
    if self.std_rgb is not None:
      image = image / self.std_rgb
    return image[..., ::-1] if self.bgr else image


def shorter_side_size(height: tf.Tensor, width: tf.Tensor, size: int) -> tf.Tensor:
  """[new_height, new_width]: the shorter side `size`, the longer int(size * long / short), as
  torchvision's `_compute_resized_output_size` (torchvision/transforms/functional.py)."""
  height, width = tf.cast(height, tf.float64), tf.cast(width, tf.float64)
  short, long = tf.minimum(height, width), tf.maximum(height, width)
  new_long = tf.cast(tf.floor(size * long / short), tf.int32)
  return tf.where(height <= width, tf.stack([size, new_long]), tf.stack([new_long, size]))


def resized(image_uint8: tf.Tensor, convention: Convention) -> tf.Tensor:
  """A decoded RGB image [h, w, 3] resized by the convention's policy: float32, 8-bit values."""
  size, antialias = convention.resize_size, convention.resize_antialias
  shape = tf.shape(image_uint8)
  if convention.resize == 'center_square':
    window = preprocessing.central_square_window(shape[0], shape[1])
    square = image_uint8[window[0]:window[0] + window[2], window[1]:window[1] + window[3]]
    return preprocessing.resize_square(square, size, antialias)
  if convention.resize == 'warp':
    return preprocessing.resize_square(image_uint8, size, antialias)
  new_size = shorter_side_size(shape[0], shape[1], size)
  return preprocessing.resize(image_uint8, new_size[0], new_size[1], antialias)


def decode_resized(jpeg: tf.Tensor, convention: Convention) -> tf.Tensor:
  """`resized` of a JPEG; for 'center_square' only the central square is decoded."""
  if convention.resize == 'center_square':
    return preprocessing.decode_center_square(jpeg, convention.resize_size,
                                              convention.resize_antialias)
  return resized(preprocessing.decode_jpeg(jpeg), convention)


def center_offsets(image: tf.Tensor, size: int, rounding: str) -> tuple[tf.Tensor, tf.Tensor]:
  """(y, x) of the centre size x size view of `image`."""
  shape = tf.shape(image)
  if rounding == 'half_even':  # tf.round rounds half to even, as Python's round().
    half = lambda d: tf.cast(tf.round(tf.cast(d - size, tf.float64) / 2), tf.int32)
  else:
    half = lambda d: (d - size) // 2
  return half(shape[0]), half(shape[1])


def center_view(image: tf.Tensor, convention: Convention) -> tf.Tensor:
  """[size, size, C]: the centre view."""
  size = convention.image_size
  y, x = center_offsets(image, size, convention.center_offset_rounding)
  return preprocessing.crop(image, y, x, size)


def eval_views(image: tf.Tensor, convention: Convention, ten: bool) -> tf.Tensor:
  """[views, size, size, C]: the centre view, or the ten views (torchvision's TenCrop order:
  corners tl, tr, bl, br, centre, then the same mirrored; cuda-convnet2 and Caffe's
  classifier.py use the same ten)."""
  if not ten:
    return center_view(image, convention)[None]
  size = convention.image_size
  shape = tf.shape(image)
  bottom, right = shape[0] - size, shape[1] - size
  center = center_offsets(image, size, convention.center_offset_rounding)
  offsets = ((0, 0), (0, right), (bottom, 0), (bottom, right), center)
  views = tf.stack([preprocessing.crop(image, y, x, size) for y, x in offsets])
  return tf.concat([views, tf.reverse(views, axis=[2])], axis=0)


def preprocessor(convention: Convention, mean_rgb: np.ndarray | float
                 ) -> Callable[[np.ndarray], np.ndarray]:
  """One decoded RGB uint8 image [H, W, 3] -> the evaluation input [views, size, size, 3]: the
  ten views when eval_crops is 'ten', else the centre one. The ImageNet pipeline's evaluation
  computes the same (tests/convention_test.py)."""
  normalize = Normalizer(convention, mean_rgb)
  ten = convention.eval_crops == 'ten'

  def preprocess(image_uint8: np.ndarray) -> np.ndarray:
    image = normalize.center(resized(tf.constant(image_uint8, tf.uint8), convention))
    return normalize.finish(eval_views(image, convention, ten)).numpy()
  return preprocess


def offline_preprocessor(config: ml_collections.ConfigDict
                         ) -> Callable[[np.ndarray], np.ndarray] | None:
  """`preprocessor` of a config that needs no data set (its mean is in the config or a file);
  None for other data sets and for a mean computed from the training set."""
  if config.dataset not in DATASETS:
    return None
  convention = Convention.from_config(config.input)
  if convention.needs_training_mean:
    return None
  return preprocessor(convention, load_mean(convention))

