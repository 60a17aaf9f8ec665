"""The offline Fashion-MNIST path: Debian's files, restored, pass TFDS's own checksums."""

import hashlib
import logging
import pathlib

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from alexnet_jax import data
from alexnet_jax.data import Position, fashion_mnist, prepared
from alexnet_jax.errors import UserError
from tests.conftest import tiny_config

NO_FLIPS = {'input.random_flip': False}  # Flips are drawn per step: compare the examples only.


def _registered_sha256() -> dict[str, str]:
  """TFDS's registered checksums for fashion_mnist: file name -> sha256."""
  path = pathlib.Path(tfds.__file__).parent / 'url_checksums' / 'fashion_mnist.txt'
  rows = [line.split('\t') for line in path.read_text().splitlines() if line.strip()]
  return {row[3]: row[2] for row in rows}


def test_restored_debian_files_match_upstream_sha256(tmp_path):
  assert fashion_mnist.DEBIAN_DIR.is_dir(), (
      'this test needs the Debian package: apt-get install dataset-fashion-mnist (make test does)')
  registered = _registered_sha256()
  for name in fashion_mnist.UPSTREAM_GZIP_MTIME:
    restored = tmp_path / f'{name}.gz'
    fashion_mnist.restore_upstream_gzip(fashion_mnist.DEBIAN_DIR / f'{name}.gz', restored)
    assert hashlib.sha256(restored.read_bytes()).hexdigest() == registered[f'{name}.gz']


def test_missing_data_says_how_to_fix(tmp_path, monkeypatch):
  monkeypatch.setattr(fashion_mnist, 'DEBIAN_DIR', tmp_path / 'absent')

  def no_network(self, *args, **kwargs):
    raise tfds.download.DownloadError('no route to host')

  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', no_network)
  with pytest.raises(UserError, match='apt-get install dataset-fashion-mnist'):
    fashion_mnist.prepare_builder(str(tmp_path / 'tfds'))


def test_train_order_is_a_function_of_the_position(mock_fashion_mnist):
  dataset = fashion_mnist.create_dataset(tiny_config(batch_size=8), 0, 1)
  from_start = dataset.train_batches()
  batches = [next(from_start) for _ in range(15)]  # Crosses the epoch boundary (96 / 8 = 12).
  resumed = dataset.train_batches(Position.at_step(10, 8, dataset.epoch_size))
  for expected in batches[10:]:
    got = next(resumed)
    np.testing.assert_array_equal(got['image'], expected['image'])
    np.testing.assert_array_equal(got['label'], expected['label'])


def test_a_new_batch_size_continues_with_the_examples_not_yet_seen(mock_fashion_mnist):
  """Batch 16 for 4 steps (64 of 96 examples), then batch 32: the last 32, then a new epoch."""
  small = fashion_mnist.create_dataset(tiny_config(batch_size=16, **NO_FLIPS), 0, 1)
  large = fashion_mnist.create_dataset(tiny_config(batch_size=32, **NO_FLIPS), 0, 1)
  epoch0 = [next(batches) for batches in [small.train_batches()] for _ in range(6)]
  epoch1 = [next(batches) for batches in [large.train_batches(Position(6, 96, 0, 96))]
            for _ in range(3)]
  position = Position.at_step(4, 16, small.epoch_size)
  assert position == Position(step=4, examples=64, epoch=0, offset=64)
  resumed = large.train_batches(position)
  got = [next(resumed) for _ in range(4)]
  np.testing.assert_array_equal(got[0]['label'], np.concatenate(
      [b['label'] for b in epoch0[4:6]]))  # Examples 64-95 of epoch 0, at the new batch size.
  for got_batch, expected in zip(got[1:], epoch1):  # Then epoch 1 from its start.
    np.testing.assert_array_equal(got_batch['image'], expected['image'])


def test_processes_get_disjoint_shares_of_each_batch(mock_fashion_mnist):
  config = tiny_config(batch_size=8)
  whole = next(fashion_mnist.create_dataset(config, 0, 1).train_batches())
  parts = [next(fashion_mnist.create_dataset(config, i, 2).train_batches()) for i in range(2)]
  np.testing.assert_array_equal(np.concatenate([p['label'] for p in parts]), whole['label'])
  np.testing.assert_allclose(np.concatenate([p['image'] for p in parts]), whole['image'])


def test_eval_covers_the_split_exactly_once(mock_fashion_mnist):
  dataset = fashion_mnist.create_dataset(tiny_config(eval_batch_size=40), 0, 1)
  batches = list(dataset.eval_batches['']())
  assert sum(int(b['mask'].sum()) for b in batches) == dataset.num_eval_examples
  assert all(b['image'].shape == (40, 67, 67, 1) for b in batches)


def test_splits_kept_in_memory_decode_each_split_once(mock_fashion_mnist, monkeypatch):
  """An in-process sweep's runs share the decoded splits; outside the context every data set
  decodes again, and the arrays are read-only either way (no run can change another's data)."""
  decoded = []
  as_dataset = tfds.core.DatasetBuilder.as_dataset

  def counted(self, *args, split=None, **kwargs):
    decoded.append(split)
    return as_dataset(self, *args, split=split, **kwargs)

  monkeypatch.setattr(tfds.core.DatasetBuilder, 'as_dataset', counted)
  config = tiny_config()
  fashion_mnist.create_dataset(config, 0, 1)
  fashion_mnist.create_dataset(config, 0, 1)
  assert decoded == ['train', 'test'] * 2
  decoded.clear()
  builder = fashion_mnist.prepare_builder(None)
  with prepared.splits_kept_in_memory():
    first = fashion_mnist.create_dataset(config, 0, 1)
    second = fashion_mnist.create_dataset(tiny_config(batch_size=8, seed=3), 0, 1)
    images, labels = prepared.load_split(builder, 'train')
    assert prepared.load_split(builder, 'train')[0] is images
  assert decoded == ['train', 'test']
  assert not images.flags.writeable and not labels.flags.writeable
  with pytest.raises(ValueError, match='read-only'):
    images[0] = 0
  batches = [next(d.train_batches()) for d in (first, second)]  # Both still train.
  assert batches[0]['image'].shape[0] == config.batch_size and batches[1]['image'].shape[0] == 8
  prepared.load_split(builder, 'train')
  assert decoded == ['train', 'test', 'train']  # Forgotten after the context.


def test_every_data_set_keeps_tensorflow_off_the_gpus_first(mock_fashion_mnist, monkeypatch):
  """predict, features, figures, ensemble and the pipeline benchmark read data without run.py's
  start-up: create_dataset hides the GPUs from TensorFlow itself, before the pipeline starts."""
  calls = []
  monkeypatch.setattr(data, 'keep_tensorflow_off_accelerators', lambda: calls.append('hidden'))
  monkeypatch.setitem(data.DATASETS, 'fashion_mnist', data.DatasetEntry(
      'fashion_mnist', 1, lambda *args: calls.append('created')))
  data.create_dataset(tiny_config())
  assert calls == ['hidden', 'created']


def test_tensorflow_on_a_gpu_before_it_could_be_hidden_is_a_warning(monkeypatch, caplog):
  def too_late(devices, device_type):
    raise RuntimeError('Visible devices cannot be modified after being initialized')

  monkeypatch.setattr(tf.config, 'set_visible_devices', too_late)
  with caplog.at_level(logging.WARNING):
    data.keep_tensorflow_off_accelerators()
  assert 'TensorFlow started on the GPU before it could be hidden' in caplog.text


def test_pixel_mean_std_is_numpys_over_every_value():
  assert fashion_mnist.pixel_mean_std(np.array([0, 255], np.uint8)) == (0.5, 0.5)  # Not ddof=1.
  rng = np.random.default_rng(0)
  images = (rng.beta(0.5, 2.0, (300, 28, 28, 1)) * 255).astype(np.uint8)  # Skewed, like clothes.
  expected = [images.mean(dtype=np.float64) / 255, images.std(dtype=np.float64) / 255]
  for chunk in (1 << 20, 1000, 7):  # One chunk; a partial last one (235,200 values); many.
    np.testing.assert_allclose(fashion_mnist.pixel_mean_std(images, chunk), expected, rtol=1e-12)
  for wrong in (np.zeros((0, 28, 28, 1), np.uint8), images.astype(np.float32)):
    with pytest.raises(ValueError, match='expected a non-empty uint8 array'):
      fashion_mnist.pixel_mean_std(wrong)
