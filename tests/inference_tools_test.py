"""features, figures and ensemble: fc7 features, PNG sizes, nearest neighbours, ensembles."""

import dataclasses
import os

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from alexnet_jax import data, ensemble, features, figures, trained_model
from tests.conftest import tiny_config
from tests.trained_helpers import MOCK_EXAMPLES, shared_tiny_workdir, train_tiny


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  a = shared_tiny_workdir()
  b = train_tiny(str(tmp_path_factory.mktemp('b')), seed=1)
  with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
    dataset = data.create_dataset(tiny_config())
    batches = list(dataset.eval_batches['']())
  return trained_model.load(a), trained_model.load(b), batches


def test_fc7_features_are_what_fc8_classifies(trained):
  model, _, batches = trained
  feats, logits = map(np.asarray, features.make_extractor(model)(batches[0]['image']))
  assert feats.shape == (16, 32) and feats.min() >= 0  # fc7 width 32 of tiny_config, after ReLU.
  kernel, bias = np.asarray(model.params['fc8']['kernel']), np.asarray(model.params['fc8']['bias'])
  towers, width = kernel.shape[0], kernel.shape[1]
  expected = sum(feats[:, t * width:(t + 1) * width] @ kernel[t] for t in range(towers)) + bias
  np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)


def test_features_skip_padding_and_stop_at_max_examples(trained):
  model, _, batches = trained
  feats, labels, images = features.features_of_batches(model, iter(batches))
  assert len(feats) == len(labels) == len(images) == MOCK_EXAMPLES
  feats, labels, _ = features.features_of_batches(model, iter(batches), max_examples=20)
  assert feats.shape == (20, 32)
  np.testing.assert_array_equal(labels, np.concatenate([batches[0]['label'],
                                                        batches[1]['label'][:4]]))


def test_nearest_neighbours_against_brute_force():
  rng = np.random.default_rng(0)
  pool = rng.normal(size=(30, 7))
  got = figures.nearest_neighbours(pool[:4], pool, 5)
  for q in range(4):
    distances = [np.linalg.norm(pool[q] - p) if i != q else np.inf for i, p in enumerate(pool)]
    np.testing.assert_array_equal(got[q], np.argsort(distances)[:5])


def test_figure_files_have_the_right_sizes(trained, tmp_path):
  model, _, batches = trained
  paths = figures.write_figures(model, iter(batches), str(tmp_path), queries=2, neighbours=3,
                                scale=4)
  conv1 = Image.open(paths['conv1_filters'])
  # tiny_config: 8 conv1 kernels of 11x11x1 over 2 towers -> 2 rows of 4, 44-pixel tiles + gaps.
  assert conv1.size == (4 * (44 + 1) + 1, 2 * (44 + 1) + 1) and conv1.mode == 'L'
  neighbours = Image.open(paths['nearest_neighbours'])
  assert neighbours.size == ((1 + 3) * (67 + 1) + 1, 2 * (67 + 1) + 1)
  # The first tile of row 1 is the query image itself (contrast-stretched).
  tile = np.asarray(neighbours)[1:68, 1:68]
  np.testing.assert_array_equal(tile, figures._stretch(batches[0]['image'][0])[..., 0])
  assert sorted(os.listdir(tmp_path)) == ['conv1_filters.png', 'nearest_neighbours.png']


def test_conv1_mosaic_puts_each_tower_on_its_own_row():
  kernel = np.zeros((2, 11, 11, 3, 48), np.float32)
  kernel[1, 5, 5, 0, 47] = 1.0  # One bright red pixel in tower 2's last kernel.
  mosaic = figures.conv1_mosaic({'conv1': {'kernel': kernel}}, scale=1)
  assert mosaic.shape == (2 * 12 + 1, 48 * 12 + 1, 3)  # The paper's 96 kernels: 2 rows of 48.
  ys, xs, cs = np.nonzero(mosaic[:-1, :-1] == 255)
  bright = [(y, x, c) for y, x, c in zip(ys, xs, cs) if (y % 12) and (x % 12)]
  assert bright == [(12 + 1 + 5, 47 * 12 + 1 + 5, 0)]


def test_ensemble_of_identical_members_equals_the_member(trained):
  model, _, batches = trained
  single = ensemble.evaluate_ensemble([model, model], iter(batches))
  assert single[0] == single[1]
  for key in ('top1_error', 'top5_error'):
    assert single[2][key] == single[0][key]
  np.testing.assert_allclose(single[2]['loss'], single[0]['loss'], rtol=1e-6)


def test_ensemble_averages_the_members_softmax(trained):
  a, b, batches = trained
  results = ensemble.evaluate_ensemble([a, b], iter(batches))
  probs = [np.concatenate([np.asarray(jax.nn.softmax(m.model.apply({'params': m.params},
                                                                   batch['image'])))
                           for batch in batches]) for m in (a, b)]
  labels = np.concatenate([batch['label'] for batch in batches])
  mask = np.concatenate([batch['mask'] for batch in batches])
  for member, p in zip(results, probs + [(probs[0] + probs[1]) / 2]):
    top1 = np.argmax(p, axis=1)[mask] != labels[mask]
    top5 = ~np.any(np.argsort(-p, axis=1)[:, :5] == labels[:, None], axis=1)[mask]
    assert member['top1_error'] == pytest.approx(top1.mean())
    assert member['top5_error'] == pytest.approx(top5.mean())
  assert results[0] != results[1]  # Different seeds: different members.
  with pytest.raises(Exception, match='share'):
    other = dataclasses.replace(b, config=tiny_config(**{'input.image_size': 70}))
    ensemble.check_compatible([a, other])
