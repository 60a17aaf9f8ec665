"""The offline Fashion-MNIST path: Debian's files, restored, pass TFDS's own checksums."""

import hashlib
import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

from alexnet_jax.data import fashion_mnist
from alexnet_jax.errors import UserError
from tests.conftest import tiny_config


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


def test_train_order_is_a_function_of_the_step(mock_fashion_mnist):
  dataset = fashion_mnist.create_dataset(tiny_config(batch_size=8), 0, 1)
  from_start = dataset.train_batches(0)
  batches = [next(from_start) for _ in range(15)]  # Crosses the epoch boundary (96 / 8 = 12).
  resumed = dataset.train_batches(10)
  for expected in batches[10:]:
    got = next(resumed)
    np.testing.assert_array_equal(got['image'], expected['image'])
    np.testing.assert_array_equal(got['label'], expected['label'])


def test_processes_get_disjoint_shares_of_each_batch(mock_fashion_mnist):
  config = tiny_config(batch_size=8)
  whole = next(fashion_mnist.create_dataset(config, 0, 1).train_batches(0))
  parts = [next(fashion_mnist.create_dataset(config, i, 2).train_batches(0)) for i in range(2)]
  np.testing.assert_array_equal(np.concatenate([p['label'] for p in parts]), whole['label'])
  np.testing.assert_allclose(np.concatenate([p['image'] for p in parts]), whole['image'])


def test_eval_covers_the_split_exactly_once(mock_fashion_mnist):
  dataset = fashion_mnist.create_dataset(tiny_config(eval_batch_size=40), 0, 1)
  batches = list(dataset.eval_batches['']())
  assert sum(int(b['mask'].sum()) for b in batches) == dataset.num_eval_examples
  assert all(b['image'].shape == (40, 67, 67, 1) for b in batches)
