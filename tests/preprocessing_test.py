"""The paper's preprocessing functions against numpy references and hand-checked geometry."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from alexnet_jax.data import preprocessing


def _seeds(count: int) -> tf.Tensor:
  return tf.stack([tf.zeros(count, tf.int64), tf.range(count, dtype=tf.int64)], axis=1)


def _jpeg(pixels: np.ndarray) -> tf.Tensor:
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format='JPEG', quality=100)
  return tf.constant(buffer.getvalue())


@pytest.mark.parametrize('height,width,expected', [
    (375, 500, (0, 62, 375, 375)), (500, 375, (62, 0, 375, 375)), (256, 256, (0, 0, 256, 256)),
    (3, 8, (0, 2, 3, 3))])
def test_central_square_window(height, width, expected):
  assert tuple(preprocessing.central_square_window(height, width).numpy()) == expected


def test_resize_shorter_side_and_center_crop_lands_on_the_central_columns():
  # A horizontal ramp whose value is the column index: after "shorter side to 256, central 256",
  # output column j shows original column (j + 0.5 + offset) * scale - 0.5 (pixel-centre mapping);
  # the antialiasing kernel wobbles by < 0.1 around it, a crop one pixel off would miss by 1.17.
  height, width, size = 300, 400, 256
  ramp = np.broadcast_to(np.arange(width, dtype=np.float32)[None, :, None], (height, width, 3))
  out = preprocessing.resize_shorter_side_and_center_crop(tf.constant(ramp), size).numpy()
  assert out.shape == (size, size, 3)
  new_width = round(width * size / height)  # 341
  offset = (new_width - size) // 2  # 42
  expected = (np.arange(size) + offset + 0.5) * width / new_width - 0.5
  np.testing.assert_allclose(out[size // 2, 2:-2, 0], expected[2:-2], atol=0.15)
  np.testing.assert_allclose(out[:, 100, 0], out[0, 100, 0])  # Rows unchanged by a column ramp.


@pytest.mark.parametrize('height,width', [(300, 400), (400, 300)])
def test_decode_center_square_matches_resize_shorter_side_then_crop(height, width):
  y, x = np.mgrid[0:height, 0:width]
  smooth = np.stack([127 + 100 * np.sin(x / 37.0), 127 + 100 * np.cos(y / 29.0),
                     (x + y) * 255.0 / (height + width)], axis=-1).astype(np.uint8)
  jpeg = _jpeg(smooth)
  decoded = preprocessing.decode_center_square(jpeg, 256).numpy()
  literal = preprocessing.resize_shorter_side_and_center_crop(
      tf.io.decode_jpeg(jpeg, dct_method='INTEGER_ACCURATE'), 256).numpy()
  assert decoded.shape == (256, 256, 3)
  # Same image up to the rounding of the longer side (a fraction of a pixel of shift).
  assert np.abs(decoded - literal)[4:-4, 4:-4].mean() < 1.0


def test_random_crop_is_a_slice_and_covers_every_offset_including_the_ends():
  image = np.random.default_rng(0).uniform(0, 255, (256, 256, 3)).astype(np.float32)
  seen = set()
  for seed in _seeds(600):
    y, x = preprocessing.random_crop_offsets(seed, 256, 256, 227).numpy()
    seen.add((y, x))
    assert 0 <= y <= 29 and 0 <= x <= 29
  ys, xs = {y for y, _ in seen}, {x for _, x in seen}
  assert ys == set(range(30)) and xs == set(range(30))
  seed = tf.constant([3, 4], tf.int64)
  y, x = preprocessing.random_crop_offsets(seed, 256, 256, 227).numpy()
  crop = preprocessing.random_crop(tf.constant(image), seed, 227).numpy()
  np.testing.assert_array_equal(crop, image[y:y + 227, x:x + 227])


def test_random_flip_mirrors_half_the_time():
  image = np.random.default_rng(1).uniform(0, 255, (5, 7, 3)).astype(np.float32)
  flips = 0
  for seed in _seeds(400):
    out = preprocessing.random_flip(tf.constant(image), seed).numpy()
    if np.array_equal(out, image[:, ::-1]):
      flips += 1
    else:
      np.testing.assert_array_equal(out, image)
  assert 160 < flips < 240  # Binomial(400, 1/2): +-4 sigma.


def test_subtract_mean_per_pixel_and_per_channel():
  rng = np.random.default_rng(2)
  image = rng.uniform(0, 255, (6, 5, 3)).astype(np.float32)
  mean_image = rng.uniform(0, 255, (6, 5, 3)).astype(np.float32)
  np.testing.assert_allclose(preprocessing.subtract_mean(image, mean_image), image - mean_image)
  channel_mean = mean_image.mean(axis=(0, 1))
  np.testing.assert_allclose(preprocessing.subtract_mean(image, channel_mean),
                             image - channel_mean[None, None, :], rtol=1e-6)


def test_pca_lighting_adds_one_shift_with_the_paper_covariance():
  stddev, pixel_range, draws = 0.1, 255.0, 20000
  shifts = tf.function(lambda seeds: tf.map_fn(
      lambda s: preprocessing.pca_lighting_shift(s, stddev, pixel_range), seeds,
      fn_output_signature=tf.float32))(_seeds(draws)).numpy().astype(np.float64)
  eigenvectors = np.array(preprocessing.PCA_EIGENVECTORS)  # Columns are the eigenvectors.
  eigenvalues = np.array(preprocessing.PCA_EIGENVALUES) * pixel_range
  # shift = P (alpha * lambda), alpha ~ N(0, stddev^2 I)  =>  Cov = P diag(stddev^2 lambda^2) P^T.
  expected_cov = eigenvectors @ np.diag(stddev**2 * eigenvalues**2) @ eigenvectors.T
  standard_error = np.sqrt(np.diag(expected_cov) / draws)
  assert np.all(np.abs(shifts.mean(axis=0)) < 4 * standard_error)
  np.testing.assert_allclose(np.cov(shifts.T), expected_cov, atol=0.03 * expected_cov[0, 0])
  # In the eigenbasis the coefficients are uncorrelated with std stddev * lambda_i.
  coefficients = shifts @ eigenvectors
  np.testing.assert_allclose(coefficients.std(axis=0), stddev * eigenvalues, rtol=0.03)

  image = np.random.default_rng(3).uniform(0, 255, (4, 6, 3)).astype(np.float32)
  seed = tf.constant([7, 8], tf.int64)
  lit = preprocessing.pca_lighting(tf.constant(image), seed, stddev, pixel_range).numpy()
  np.testing.assert_allclose(
      lit - image, np.broadcast_to(preprocessing.pca_lighting_shift(seed, stddev, pixel_range),
                                   image.shape), atol=1e-4)


@pytest.mark.parametrize('height,width,size', [(256, 256, 227), (8, 11, 5)])
def test_ten_crops_are_the_corners_the_centre_and_their_mirrors(height, width, size):
  image = np.random.default_rng(4).uniform(0, 255, (height, width, 3)).astype(np.float32)
  crops = preprocessing.ten_crops(tf.constant(image), size).numpy()
  bottom, right = height - size, width - size
  corners = [(0, 0), (0, right), (bottom, 0), (bottom, right), (bottom // 2, right // 2)]
  expected = [image[y:y + size, x:x + size] for y, x in corners]
  expected += [view[:, ::-1] for view in expected]
  np.testing.assert_array_equal(crops, np.stack(expected))
  np.testing.assert_array_equal(crops[4], preprocessing.center_crop(tf.constant(image), size))
  if size == 227:
    assert corners == [(0, 0), (0, 29), (29, 0), (29, 29), (14, 14)]


def test_random_resized_crop_is_seeded_and_is_the_whole_image_at_full_area():
  pixels = np.random.default_rng(5).uniform(0, 255, (40, 60, 3)).astype(np.uint8)
  jpeg = _jpeg(pixels)
  seed_a, seed_b = tf.constant([1, 2], tf.int64), tf.constant([1, 3], tf.int64)
  crop_a = preprocessing.random_resized_crop(jpeg, seed_a, 32).numpy()
  assert crop_a.shape == (32, 32, 3)
  np.testing.assert_array_equal(crop_a, preprocessing.random_resized_crop(jpeg, seed_a, 32))
  assert not np.array_equal(crop_a, preprocessing.random_resized_crop(jpeg, seed_b, 32))
  whole = preprocessing.random_resized_crop(jpeg, seed_a, 32, area_range=(1.0, 1.0),
                                            aspect_ratio_range=(1.5, 1.5)).numpy()
  whole_jpeg = tf.io.decode_jpeg(jpeg, dct_method='INTEGER_ACCURATE')
  np.testing.assert_allclose(whole, preprocessing.resize_square(whole_jpeg, 32),
                             atol=1e-3)
