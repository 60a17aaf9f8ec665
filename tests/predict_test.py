"""alexnet_jax.predict: output format and order, the evaluation preprocessing, per-file errors."""

import io
import re

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from alexnet_jax import data, predict, trained_model
from tests.conftest import tiny_config
from tests.trained_helpers import MOCK_EXAMPLES, shared_tiny_workdir


@pytest.fixture(scope='module')
def trained():
  workdir = shared_tiny_workdir()
  with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
    dataset = data.create_dataset(tiny_config())
    raw = next(iter(tfds.as_numpy(tfds.load('fashion_mnist', split='test').batch(3))))['image']
    first_eval_batch = next(dataset.eval_batches['']())
  return trained_model.load(workdir), dataset, raw, first_eval_batch['image'][:3]


def _block(text: str) -> list[tuple[int, str, float]]:
  return [(int(m[1]), m[2].strip(), float(m[3]))
          for m in re.finditer(r'^  (\d)\. (.+?) +(\d+\.\d\d)%$', text, re.M)]


def test_prints_top5_per_image_in_order_and_reports_bad_files(trained, tmp_path):
  model, dataset, raw, eval_images = trained
  paths = []
  for i, image in enumerate(raw):
    Image.fromarray(image[..., 0]).save(tmp_path / f'test{i}.png')
    paths.append(str(tmp_path / f'test{i}.png'))
  (tmp_path / 'broken.png').write_bytes(b'not an image')
  rgb = tmp_path / 'large_rgb.jpg'
  Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 31, 3), np.uint8)).save(rgb)
  given = [paths[0], str(tmp_path / 'missing.png'), paths[1], str(tmp_path / 'broken.png'),
           str(rgb), paths[2]]
  out, err = io.StringIO(), io.StringIO()

  failed = predict.predict_files(model, dataset.preprocess_image, given, out=out, err=err)

  assert failed == 2
  assert err.getvalue().splitlines() == [
      f'error: {tmp_path}/missing.png: no such file',
      f'error: {tmp_path}/broken.png: not an image file Pillow can read (an unknown format, or a '
      'damaged header)']
  blocks = re.split(r'^(?=\S)', out.getvalue(), flags=re.M)[1:]
  assert [b.splitlines()[0] for b in blocks] == [paths[0], paths[1], str(rgb), paths[2]]
  # The images of the test split get exactly the probabilities of the evaluation path.
  logits = model.model.apply({'params': model.params}, eval_images)
  expected = np.asarray(jax.nn.softmax(logits, axis=-1))
  for block, probs in zip([blocks[0], blocks[1], blocks[3]], expected):
    rows = _block(block)
    assert [rank for rank, _, _ in rows] == [1, 2, 3, 4, 5]
    order = np.argsort(-probs, kind='stable')[:5]
    assert [name for _, name, _ in rows] == [model.class_names[c] for c in order]
    np.testing.assert_allclose([p for _, _, p in rows], 100 * probs[order], atol=0.006)
  assert len(_block(blocks[2])) == 5


def test_class_names_come_from_the_dataset_metadata(trained):
  model = trained[0]
  assert model.class_names[:2] == ('T-shirt/top', 'Trouser') and len(model.class_names) == 10
