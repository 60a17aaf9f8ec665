"""The input convention (config.input): resizes against Pillow and a numpy bilinear, the geometry
of each resize policy, the arithmetic (scale, mean, std, channel order), and the ImageNet pipeline
and predict's single-image path computing the same input."""

import numpy as np
import pytest
import skimage.data
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from alexnet_jax.data import convention, create_dataset, preprocessing
from alexnet_jax.errors import UserError
from tests.imagenet_test import _config, _prepare

PHOTOS = ('chelsea', 'coffee', 'astronaut', 'rocket')  # scikit-image's bundled photographs.


@pytest.mark.parametrize('name', PHOTOS)
@pytest.mark.parametrize('short_side', [256, 227, 100, 600])
def test_antialiased_resize_is_pillows_bilinear_bit_for_bit(name, short_side):
  image = getattr(skimage.data, name)()
  height, width = image.shape[:2]
  new_h, new_w = convention.shorter_side_size(height, width, short_side).numpy()
  pillow = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR), np.float32)
  np.testing.assert_array_equal(preprocessing.resize(image, new_h, new_w).numpy(), pillow)
  # The nearest wrong answer, TensorFlow's antialiased resize in float, rounded once, is not.
  one_pass = np.floor(tf.image.resize(image.astype(np.float32), (new_h, new_w),
                                      antialias=True).numpy() + 0.5)
  assert (one_pass != pillow).mean() > 0.01


def test_antialiased_resize_on_random_shapes_and_channels():
  rng = np.random.default_rng(0)
  for channels in (3, 1, 3, 3):
    height, width, new_h, new_w = (int(v) for v in rng.integers(5, 300, 4))
    image = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    pillow = np.asarray(Image.fromarray(image.squeeze(-1) if channels == 1 else image).resize(
        (new_w, new_h), Image.BILINEAR)).reshape(new_h, new_w, channels)
    resized = tf.function(lambda x, h, w: preprocessing.resize(x, h, w))(image, new_h, new_w)
    np.testing.assert_array_equal(resized.numpy(), pillow)  # Also traced: the tf.data path.


def _bilinear_half_pixel(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """OpenCV's INTER_LINEAR in float: source coordinate (i + 0.5) * scale - 0.5, clamped."""
  def axis(out, size):
    x = np.clip((np.arange(out) + 0.5) * size / out - 0.5, 0, size - 1)
    low = np.floor(x).astype(int)
    return low, np.minimum(low + 1, size - 1), x - low
  y0, y1, fy = axis(height, image.shape[0])
  x0, x1, fx = axis(width, image.shape[1])
  image = image.astype(np.float64)
  rows = image[y0] * (1 - fy)[:, None, None] + image[y1] * fy[:, None, None]
  return rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]


@pytest.mark.parametrize('name', PHOTOS)
def test_warp_without_antialiasing_is_half_pixel_bilinear(name):
  image = getattr(skimage.data, name)()
  expected = np.floor(_bilinear_half_pixel(image, 256, 256) + 0.5)
  ours = preprocessing.resize(image, 256, 256, antialias=False).numpy()
  assert np.abs(ours - expected).max() <= 1 and (ours != expected).mean() < 1e-3


@pytest.mark.parametrize('shape,expected', [
    ((300, 451), (256, 384)),  # int(256 * 451 / 300) = int(384.85): truncated, as torchvision.
    ((451, 300), (384, 256)), ((512, 512), (256, 256)), ((256, 999), (256, 999))])
def test_shorter_side_size_is_torchvisions(shape, expected):
  assert tuple(convention.shorter_side_size(*shape, 256).numpy()) == expected


def _convention(**fields):
  return convention.Convention(**{'image_size': 5, 'resize_size': 8, **fields})


@pytest.mark.parametrize('resize,height,width,expected', [
    ('shorter_side', 8, 12, (2, 4)),  # (3 / 2, 7 / 2) round half to even: (2, 4).
    ('shorter_side', 8, 14, (2, 4)),  # 4.5 -> 4.
    ('warp', 8, 12, (1, 3)),  # Integer division, as Caffe.
    ('center_square', 8, 14, (1, 4))])
def test_center_view_offsets(resize, height, width, expected):
  image = tf.reshape(tf.range(height * width * 1, dtype=tf.float32), (height, width, 1))
  view = convention.center_view(image, _convention(resize=resize)).numpy()
  y, x = expected
  np.testing.assert_array_equal(view, image.numpy()[y:y + 5, x:x + 5])


def test_ten_views_are_the_corners_the_centre_and_their_mirrors():
  image = tf.constant(np.random.default_rng(0).uniform(0, 255, (8, 13, 3)), tf.float32)
  views = convention.eval_views(image, _convention(resize='shorter_side'), ten=True).numpy()
  pixels = image.numpy()
  offsets = [(0, 0), (0, 8), (3, 0), (3, 8), (2, 4)]  # Centre: round(1.5), round(4) -> 2, 4.
  expected = [pixels[y:y + 5, x:x + 5] for y, x in offsets]
  np.testing.assert_array_equal(views, np.stack(expected + [v[:, ::-1] for v in expected]))


def test_normalizer_scales_subtracts_divides_then_orders_channels():
  # torchvision-like in BGR: mean and std are given in the model's channel order.
  conv = _convention(channel_order='bgr', pixel_range=1.0, mean_subtraction='per_channel',
                     mean_values=(0.3, 0.2, 0.1), std=(0.5, 0.25, 0.125))
  normalize = convention.Normalizer(conv, convention.load_mean(conv))
  rgb = np.array([[[255.0, 127.5, 51.0]]], np.float32)
  out = normalize.finish(normalize.center(tf.constant(rgb))).numpy()
  b, g, r = 51 / 255, 127.5 / 255, 1.0
  np.testing.assert_allclose(out[0, 0], [(b - 0.3) / 0.5, (g - 0.2) / 0.25, (r - 0.1) / 0.125],
                             rtol=1e-6)


def test_mean_file_is_read_in_channel_order_relative_to_the_workdir(tmp_path):
  mean_bgr = np.zeros((8, 8, 3), np.float32)
  mean_bgr[..., 0] = 100.0  # Blue.
  np.save(tmp_path / 'mean.npy', mean_bgr)
  config = _config(tmp_path)
  config.input.update(resize_size=8, image_size=5, channel_order='bgr', mean_file='mean.npy')
  resolved = convention.resolve_paths(config, str(tmp_path))
  assert resolved.input.mean_file == str(tmp_path / 'mean.npy')
  assert config.input.mean_file == 'mean.npy'  # The stored config is left alone.
  mean_rgb = convention.load_mean(convention.Convention.from_config(resolved.input))
  np.testing.assert_array_equal(mean_rgb[..., 2], 100.0)  # Blue is last in RGB.
  np.testing.assert_array_equal(mean_rgb[..., :2], 0.0)
  per_channel = convention.Convention.from_config(resolved.input)
  per_channel = convention.Convention(**{**per_channel.__dict__,
                                         'mean_subtraction': 'per_channel'})
  np.testing.assert_array_equal(convention.load_mean(per_channel), [0.0, 0.0, 100.0])
  np.save(tmp_path / 'mean.npy', np.zeros((3, 8, 8)))
  with pytest.raises(UserError, match=r'shape \(3, 8, 8\)'):
    convention.load_mean(convention.Convention.from_config(resolved.input))


@pytest.mark.parametrize('fields,message', [
    ({'resize': 'crop'}, 'config.input.resize'), ({'channel_order': 'rbg'}, 'channel_order'),
    ({'std': (1.0, 0.0, 1.0)}, 'std'), ({'mean_values': (1.0, 2.0)}, 'mean_values'),
    ({'mean_values': (1.0, 2.0, 3.0)}, 'mean_file'),  # per_pixel needs an image, not values.
    ({'resize': 'shorter_side'}, 'one size')])  # A per-pixel mean of non-square images.
def test_bad_conventions_are_user_errors(tmp_path, fields, message):
  config = _config(tmp_path)
  config.input.update(fields)
  with pytest.raises(UserError, match=message):
    convention.Convention.from_config(config.input)


@pytest.fixture(scope='module')
def fake(tmp_path_factory):
  root, _ = _prepare(tmp_path_factory.mktemp('convention'))
  create_dataset(_config(root / 'data', root / 'manual'))  # Prepares the fake tars once.
  return root


def _first_validation_jpeg(root) -> bytes:
  builder = tfds.builder('imagenet2012', data_dir=str(root / 'data'))
  records = builder.as_dataset('validation', decoders={'image': tfds.decode.SkipDecoding()},
                               shuffle_files=False)
  return next(iter(tfds.as_numpy(records)))['image']


CONVENTIONS = {
    'paper': {},
    'caffe': {'resize': 'warp', 'resize_antialias': False, 'channel_order': 'bgr',
              'eval_crops': 'center'},
    'torchvision': {'resize': 'shorter_side', 'pixel_range': 1.0,
                    'mean_subtraction': 'per_channel', 'mean_values': (0.485, 0.456, 0.406),
                    'std': (0.229, 0.224, 0.225), 'augmentation': 'random_resized_crop',
                    'pca_lighting': False},
}


@pytest.mark.parametrize('name', CONVENTIONS)
def test_pipeline_evaluation_and_single_image_path_agree(fake, name):
  dataset = create_dataset(_config(fake / 'data', **CONVENTIONS[name]))
  jpeg = _first_validation_jpeg(fake)
  decoded = preprocessing.decode_jpeg(tf.constant(jpeg)).numpy()
  single = dataset.preprocess_image(decoded)
  batch = next(dataset.eval_batches['']())
  np.testing.assert_allclose(single[4 if len(single) == 10 else 0], batch['image'][0],
                             atol=1e-5)
  if 'ten_crop' in dataset.eval_batches:
    np.testing.assert_allclose(single, next(dataset.eval_batches['ten_crop']())['image'][0],
                               atol=1e-5)
  train = next(dataset.train_batches())['image']
  assert train.shape == (8, 19, 19, 3) and np.isfinite(train).all()
  if name == 'torchvision':  # Scaled to [0, 1], centred and divided by about 0.23.
    assert -2.2 < train.min() and train.max() < 2.7


def test_bgr_is_the_rgb_input_with_its_channels_reversed(fake):
  rgb = create_dataset(_config(fake / 'data', resize='warp'))
  bgr = create_dataset(_config(fake / 'data', resize='warp', channel_order='bgr'))
  np.testing.assert_array_equal(next(bgr.train_batches())['image'],
                                next(rgb.train_batches())['image'][..., ::-1])
  np.testing.assert_array_equal(next(bgr.eval_batches['']())['image'],
                                next(rgb.eval_batches['']())['image'][..., ::-1])


def test_offline_preprocessor_needs_no_data_set(tmp_path):
  config = _config(tmp_path / 'nowhere', **CONVENTIONS['torchvision'])
  config.input.update(image_size=19, resize_size=24)
  preprocess = convention.offline_preprocessor(config)
  image = np.full((30, 40, 3), 255, np.uint8)
  np.testing.assert_allclose(preprocess(image)[0, 0, 0], (1 - np.array([0.485, 0.456, 0.406]))
                             / np.array([0.229, 0.224, 0.225]), rtol=1e-5)
  assert convention.offline_preprocessor(_config(tmp_path)) is None  # The paper's training mean.
