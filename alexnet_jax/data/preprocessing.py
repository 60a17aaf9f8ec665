"""The paper's image preprocessing (§2, §4.1) as pure TensorFlow functions of images and seeds.

Images are resized as 8-bit images (`resize`), then float32 in [0, pixel_range] (255: the
Caffe/cuda-convnet scale) until the mean is subtracted (alexnet_jax/data/convention.py). Random
choices take an explicit stateless seed (int64 [2]), so a training example's augmentation is a
function of (config seed, epoch, position) and resuming reproduces it exactly.
"""

import numpy as np
import tensorflow as tf
from PIL import Image

# "Fancy PCA" lighting constants for RGB pixels in [0, 1] (fb.resnet.torch's values; see
# docs/paper.md, Augmentation (§4.1)): the eigenvalues of the ImageNet pixel covariance and the
# eigenvector matrix whose *columns* are the eigenvectors.
PCA_EIGENVALUES = (0.2175, 0.0188, 0.0045)
PCA_EIGENVECTORS = ((-0.5675, 0.7192, 0.4009),
                    (-0.5808, -0.0045, -0.8140),
                    (-0.5836, -0.6948, 0.4203))


def central_square_window(height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
  """[y, x, side, side]: the central square of a height x width image (the crop window)."""
  side = tf.minimum(height, width)
  return tf.stack([(height - side) // 2, (width - side) // 2, side, side])


def _pillow_bilinear(pixels: np.ndarray, height: np.ndarray, width: np.ndarray) -> np.ndarray:
  """uint8 [h, w, C] -> float32 [height, width, C]: Pillow's Image.resize with BILINEAR."""
  channels = pixels.shape[-1]
  image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels)
  resized = np.asarray(image.resize((int(width), int(height)), Image.BILINEAR), np.float32)
  return resized.reshape(int(height), int(width), channels)


def resize(image: tf.Tensor, height: tf.Tensor | int, width: tf.Tensor | int,
           antialias: bool = True) -> tf.Tensor:
  """Bilinear resize of an 8-bit image [h, w, C] to float32 [height, width, C] holding integers
  in [0, 255], computed by the 8-bit image library of the reference implementation.

  antialias=True: Pillow's own `Image.resize(..., BILINEAR)` (inside the graph through
  tf.numpy_function; Pillow releases the GIL while it resizes): the filter torchvision's Resize
  and RandomResizedCrop apply to PIL images, a triangle widened by the downscaling factor, in
  fixed-point arithmetic, rounded to 8 bits after each of its two passes. A float resize
  (tf.image.resize's antialiased bilinear) differs from it by one level on 10-20% of the pixels,
  which moves a converted torchvision model's probabilities by ~1e-3.
  antialias=False: OpenCV's INTER_LINEAR (Caffe's convert_imageset, src/caffe/util/io.cpp line
  84): bilinear interpolation between the 2x2 nearest pixels (half-pixel centres), rounded once.
  """
  if not antialias:
    resized = tf.image.resize(tf.cast(image, tf.float32), tf.stack([height, width]))
    return tf.clip_by_value(tf.floor(resized + 0.5), 0.0, 255.0)
  resized = tf.numpy_function(_pillow_bilinear, [tf.cast(image, tf.uint8), height, width],
                              tf.float32, stateful=False)
  static = lambda size: size if isinstance(size, int) else None
  return tf.ensure_shape(resized, (static(height), static(width), image.shape[-1]))


def resize_square(image: tf.Tensor, size: int, antialias: bool = True) -> tf.Tensor:
  """`resize` to size x size (a static shape)."""
  return tf.ensure_shape(resize(image, size, size, antialias), (size, size, None))


def resize_shorter_side_and_center_crop(image: tf.Tensor, size: int) -> tf.Tensor:
  """§2 literally: rescale so the shorter side is `size`, then take the central size x size."""
  shape = tf.shape(image)
  height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
  scale = size / tf.minimum(height, width)
  new_height = tf.maximum(size, tf.cast(tf.round(height * scale), tf.int32))
  new_width = tf.maximum(size, tf.cast(tf.round(width * scale), tf.int32))
  resized = tf.image.resize(tf.cast(image, tf.float32), tf.stack([new_height, new_width]),
                            method='bilinear', antialias=True)
  return crop(resized, (new_height - size) // 2, (new_width - size) // 2, size)


def decode_jpeg_window(jpeg: tf.Tensor, window: tf.Tensor) -> tf.Tensor:
  """uint8 [h, w, 3]: the window [y, x, h, w] of a JPEG, decoding nothing outside it.

  With libjpeg's accurate integer IDCT, as Pillow, OpenCV and viewers decode: TensorFlow's
  default (the fast IDCT) is 0.8 levels darker on average and up to ~15 levels off on edges,
  and alexnet_jax.data.images decodes a user's JPEG bit for bit like this (tests/images_test.py).
  Greyscale JPEGs come out as R = G = B; the accurate IDCT costs no measurable time.
  """
  return tf.image.decode_and_crop_jpeg(jpeg, window, channels=3, dct_method='INTEGER_ACCURATE')


def decode_jpeg(jpeg: tf.Tensor) -> tf.Tensor:
  """uint8 [h, w, 3] of a whole JPEG, with the accurate IDCT (see decode_jpeg_window)."""
  return tf.io.decode_jpeg(jpeg, channels=3, dct_method='INTEGER_ACCURATE')


def decode_center_square(jpeg: tf.Tensor, size: int, antialias: bool = True) -> tf.Tensor:
  """Decodes only the central square of a JPEG and resizes it to size x size.

  The central square of the original is exactly what survives "shorter side to `size`, then the
  central size x size" (§2), so this is the same image up to the rounding of the longer side
  (tested against `resize_shorter_side_and_center_crop`), without decoding the discarded edges.
  """
  shape = tf.image.extract_jpeg_shape(jpeg)
  window = central_square_window(shape[0], shape[1])
  return resize_square(decode_jpeg_window(jpeg, window), size, antialias)


def crop(image: tf.Tensor, y: tf.Tensor, x: tf.Tensor, size: int) -> tf.Tensor:
  return image[y:y + size, x:x + size]


def center_crop(image: tf.Tensor, size: int) -> tf.Tensor:
  shape = tf.shape(image)
  return crop(image, (shape[0] - size) // 2, (shape[1] - size) // 2, size)


def random_crop_offsets(seed: tf.Tensor, height: tf.Tensor | int, width: tf.Tensor | int,
                        size: int) -> tf.Tensor:
  """[y, x], each uniform over all size x size windows inside height x width (ends included)."""
  counts = tf.cast(tf.stack([height - size + 1, width - size + 1]), tf.float32)
  uniform = tf.random.stateless_uniform([2], seed)  # In [0, 1).
  return tf.minimum(tf.cast(uniform * counts, tf.int32), tf.cast(counts, tf.int32) - 1)


def random_crop(image: tf.Tensor, seed: tf.Tensor, size: int) -> tf.Tensor:
  """A random size x size crop of an image of any size (§4.1)."""
  shape = tf.shape(image)
  offsets = random_crop_offsets(seed, shape[0], shape[1], size)
  return tf.ensure_shape(crop(image, offsets[0], offsets[1], size), (size, size, image.shape[-1]))


def random_flip(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """Mirrors left-right with probability 1/2 (§4.1)."""
  flip = tf.random.stateless_uniform([], seed) < 0.5
  return tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)


def subtract_mean(image: tf.Tensor, mean: tf.Tensor) -> tf.Tensor:
  """`mean` is per pixel [H, W, C] (§2) or per channel [C]; it broadcasts either way."""
  return image - mean


def pca_lighting_shift(seed: tf.Tensor, stddev: float, pixel_range: float,
                       eigenvalues=PCA_EIGENVALUES, eigenvectors=PCA_EIGENVECTORS) -> tf.Tensor:
  """The RGB shift [p1 p2 p3][a1 l1, a2 l2, a3 l3]^T with a_i ~ N(0, stddev) (§4.1).

  `eigenvalues` [3] and `eigenvectors` [3, 3] (columns) are those of the RGB covariance of pixels
  in [0, 1]: ImageNet's by default, or another data set's own (CIFAR-10 computes them from its
  training set). On a [0, pixel_range] scale the shift scales by pixel_range. Its covariance is
  P diag(stddev^2 l_i^2) P^T * pixel_range^2.
  """
  alpha = tf.random.stateless_normal([3], seed, stddev=stddev)
  scaled = tf.constant(eigenvalues, tf.float32) * pixel_range
  return tf.linalg.matvec(tf.constant(eigenvectors, tf.float32), alpha * scaled)


def pca_lighting(image: tf.Tensor, seed: tf.Tensor, stddev: float, pixel_range: float,
                 eigenvalues=PCA_EIGENVALUES, eigenvectors=PCA_EIGENVECTORS) -> tf.Tensor:
  """Adds the same random PCA shift to every pixel of an [H, W, 3] image."""
  return image + pca_lighting_shift(seed, stddev, pixel_range, eigenvalues, eigenvectors)


def random_resized_crop(jpeg: tf.Tensor, seed: tf.Tensor, size: int,
                        area_range: tuple[float, float] = (0.08, 1.0),
                        aspect_ratio_range: tuple[float, float] = (3 / 4, 4 / 3),
                        antialias: bool = True) -> tf.Tensor:
  """The Inception-style crop (random area and aspect ratio, resized to size x size).

  Only the crop window is decoded. After 10 failed attempts the whole image is used.
  """
  shape = tf.image.extract_jpeg_shape(jpeg)
  begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]), seed=seed,
      min_object_covered=0.0, aspect_ratio_range=aspect_ratio_range, area_range=area_range,
      max_attempts=10, use_image_if_no_bounding_boxes=True)
  window = tf.stack([begin[0], begin[1], crop_size[0], crop_size[1]])
  return resize_square(decode_jpeg_window(jpeg, window), size, antialias)


def ten_crops(image: tf.Tensor, size: int) -> tf.Tensor:
  """[10, size, size, C]: top-left, top-right, bottom-left, bottom-right, centre, then the same
  five mirrored (the paper's test-time views, §4.1)."""
  height, width = image.shape[0], image.shape[1]
  bottom, right = height - size, width - size
  offsets = ((0, 0), (0, right), (bottom, 0), (bottom, right), (bottom // 2, right // 2))
  crops = tf.stack([crop(image, y, x, size) for y, x in offsets])
  return tf.concat([crops, tf.reverse(crops, axis=[2])], axis=0)
