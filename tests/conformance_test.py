"""Tests of the paper conformance report: the paper config matches every row, each deliberate
deviation shows on its own rows, and the counts agree with the published totals and a
per-layer table by hand."""

import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax import checkpoint, conformance, models, recipes, registry, train
from alexnet_jax.conformance import init_stats
from alexnet_jax.conformance import spec
from alexnet_jax.errors import UserError
from configs import bvlc_alexnet, cuda_convnet2, default, imagenet, torchvision
from tests.conftest import optimized

# Multiply-adds per image (227x227 input), by hand from the layer table in docs/paper.md,
# Architecture (§3.5, Fig. 2):
# output positions x kernels x (kernel area x input channels each kernel sees).
PAPER_MACS = {
    'conv1': 55 * 55 * 96 * (11 * 11 * 3),  # 105,415,200
    'conv2': 27 * 27 * 256 * (5 * 5 * 48),  # groups: each kernel sees its tower's 48 channels
    'conv3': 13 * 13 * 384 * (3 * 3 * 256),  # sees both towers
    'conv4': 13 * 13 * 384 * (3 * 3 * 192),
    'conv5': 13 * 13 * 256 * (3 * 3 * 192),
    'fc6': 6 * 6 * 256 * 4096,
    'fc7': 4096 * 4096,
    'fc8': 4096 * 1000,
}
# Published totals (docs/paper.md, "Counts: parameters and multiply-adds"): the paper's two-tower
# net at 227x227; torchvision's one-tower 64-192-384-256-256 net, conv1 padded by 2, at 224x224.
PAPER_PARAMS = 60_965_224
PAPER_TOTAL_MACS = 724_406_816
TORCHVISION_PARAMS = 61_100_840
TORCHVISION_MACS = 714_188_480


@functools.cache
def _measured(name):
  """One measurement per shipped config, shared by the tests that compare it with a source."""
  module = {'imagenet': imagenet, 'bvlc_alexnet': bvlc_alexnet, 'torchvision': torchvision,
            'cuda_convnet2': cuda_convnet2}[name]
  config = module.get_config()
  with optimized():  # It runs the paper model's layers: 2.5-3.6x slower unoptimised.
    return conformance.measure(config), config


def _report(name, reference='paper'):
  measurement, config = _measured(name)
  return conformance.compare(measurement, config, reference)


def _differs(rows):
  return {(r.layer, r.item) for r in rows if r.status == 'DIFFERS'}


def _row(rows, layer, item):
  (row,) = [r for r in rows if (r.layer, r.item) == (layer, item)]
  return row


def test_paper_spec_arithmetic_agrees_with_hand_counts():
  shapes = conformance.paper_shapes()
  assert {r['name']: r['macs'] for r in shapes} == PAPER_MACS
  assert sum(r['macs'] for r in shapes) == PAPER_TOTAL_MACS
  assert sum(r['params'] for r in shapes) == PAPER_PARAMS
  assert [r['side'] for r in shapes[:5]] == [55, 27, 13, 13, 13]


def test_paper_config_matches_every_row():
  rows = _report('imagenet')
  assert [r for r in rows if r.status != 'match'] == []
  assert conformance.exit_status(rows) == 0
  assert conformance.summary(rows) == f'conformance: all {len(rows)} checked rows match the paper.'
  for layer, macs in PAPER_MACS.items():
    assert _row(rows, layer, 'multiply-adds').measured == f'{macs:,}'
  assert _row(rows, 'total', 'multiply-adds per image').measured == f'{PAPER_TOTAL_MACS:,}'
  assert _row(rows, 'total', 'parameters').measured == f'{PAPER_PARAMS:,}'
  assert _row(rows, 'conv2', 'kernels see').measured == 'own tower: 48 of 96 channels'
  assert _row(rows, 'conv3', 'kernels see').measured == 'all 256 channels'


LRN_WINDOW_ROWS = {('conv1', 'LRN window'), ('conv2', 'LRN window')}


def test_each_deviation_differs_on_its_rows():
  # Deviations that touch disjoint rows, measured in one report to keep the test fast: tanh,
  # Caffe's LRN (k=1, alpha/n, window across both towers), 2/2 pooling, torchvision's dropout.
  config = imagenet.get_config()
  config.model.update(activation='tanh', lrn_k=1.0, lrn_alpha_divided_by_n=True,
                      lrn_scope='across_towers', pooling='non_overlapping',
                      dropout_placement='before')
  rows = conformance.report(config, measure_init=False)
  activation_rows = {(f'conv{i}', 'activation') for i in range(1, 6)} | {('fc6', 'activation'),
                                                                          ('fc7', 'activation')}
  lrn_rows = {('conv1', 'LRN'), ('conv2', 'LRN')}
  pool_rows = {(f'conv{i}', 'max-pool') for i in (1, 2, 5)}
  dropout_rows = {('fc6', 'dropout on input'), ('fc8', 'dropout on input')}
  assert _differs(rows) == activation_rows | lrn_rows | LRN_WINDOW_ROWS | pool_rows | dropout_rows
  assert {_row(rows, *key).measured for key in activation_rows} == {'tanh'}
  for layer, channels in (('conv1', 96), ('conv2', 256)):
    lrn = _row(rows, layer, 'LRN')
    assert lrn.measured == 'k=1 n=5 alpha=2e-05 beta=0.75'
    assert 'divided by n' in lrn.note
    assert _row(rows, layer, 'LRN window').measured == f'across all {channels} channels'
  assert _row(rows, 'conv1', 'max-pool').measured == '2x2 s2 -> 27x27x96'
  assert _row(rows, 'conv5', 'max-pool').measured == '2x2 s2 -> 6x6x256'
  assert _row(rows, 'fc6', 'dropout on input').measured == 'dropout 0.50'
  assert _row(rows, 'fc7', 'dropout on input').measured == 'dropout 0.50'
  assert _row(rows, 'fc8', 'dropout on input').measured == 'none'


def test_one_tower_differs_in_towers_and_counts():
  config = imagenet.get_config()
  config.model.towers = 1
  rows = conformance.report(config, measure_init=False)
  assert _differs(rows) == (
      {(f'conv{i}', 'kernels') for i in range(1, 6)} | {('fc6', 'units'), ('fc7', 'units')}
      | LRN_WINDOW_ROWS | {(f'conv{i}', 'kernels see') for i in (2, 4, 5)}
      | {(f'conv{i}', 'multiply-adds') for i in (2, 4, 5)}
      | {('total', 'parameters'), ('total', 'multiply-adds per image')})
  assert _row(rows, 'conv2', 'kernels see').measured == 'all 96 channels'
  # docs/paper.md, Counts: the same channels without groups.
  assert _row(rows, 'total', 'parameters').measured == f'{62_378_344:,}'
  assert _row(rows, 'total', 'multiply-adds per image').measured == f'{1_135_256_096:,}'


def test_torchvision_variant():
  rows = _report('torchvision')
  assert _row(rows, 'total', 'parameters').measured == f'{TORCHVISION_PARAMS:,}'
  assert _row(rows, 'total', 'multiply-adds per image').measured == f'{TORCHVISION_MACS:,}'
  assert _row(rows, 'conv1', 'kernel, stride, pad').measured == '11x11 s4 p2'
  assert _row(rows, 'conv1', 'output').measured == '55x55x64'
  assert _row(rows, 'conv2', 'kernels see').measured == 'all 64 channels'
  assert _row(rows, 'fc6', 'dropout on input').measured == 'dropout 0.50'
  assert _row(rows, 'fc8', 'dropout on input').measured == 'none'
  assert _row(rows, 'conv5', 'max-pool').measured == '3x3 s2 -> 6x6x256'
  assert _row(rows, 'conv1', 'LRN').measured == 'none'
  assert _row(rows, 'conv2', 'LRN').status == 'DIFFERS'
  assert ('conv3', 'kernel, stride, pad') not in _differs(rows)


def test_reports_a_checkpoints_params(tmp_path):
  config = default.get_config()
  model = registry.create_model(config.model)
  abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 99, 99, 1)))['params']
  rng = np.random.default_rng(3)  # Stand-in trained weights; no init compile needed.
  params = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(s.dtype), abstract)
  state = train.TrainState(step=jnp.int32(7), params=params, opt_state=())
  saver = checkpoint.Checkpointer(str(tmp_path))
  saver.save(7, state, {'step': 7}, {})
  saver.wait_until_finished()
  saver.close()
  loaded = checkpoint.read_params(str(tmp_path))
  assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), loaded, state.params))
  rows = conformance.report(config, loaded)
  assert {r.status for r in rows if r.item == 'init'} == {'n/a'}
  count = sum(leaf.size for leaf in jax.tree.leaves(state.params))
  assert _row(rows, 'total', 'parameters').measured == f'{count:,}'
  assert _row(rows, 'conv2', 'kernels see').measured == 'own tower: 24 of 48 channels'

  config.model.fc_features = (512, 512)
  with pytest.raises(UserError, match='parameter fc6/'):
    conformance.report(config, loaded)


@pytest.mark.slow
def test_command_line_on_the_embedded_default():
  env = dict(os.environ, PYTHONPATH=os.getcwd())
  command = [sys.executable, '-m', 'alexnet_jax.conformance', '--config=configs/default.py',
             '--config.model.lrn_k=1']
  result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
  assert result.returncode == 1, result.stderr
  rows = {tuple(cell.strip() for cell in line.split('|')[1:3]): line.split('|')[3:6]
          for line in result.stdout.splitlines() if line.startswith('| ')}
  assert rows['input', 'image'][1].strip() == '99x99x1'
  assert rows['conv1', 'LRN'][1].strip().startswith('k=1 n=5')  # The override took effect.
  # He init: conv1's 11*11*1 fan-in gives std sqrt(2 / 121) = 0.1286 (5808 weights: +-0.0012).
  init = rows['conv1', 'init'][1].split()
  assert abs(float(init[1]) - 0.1286) < 0.005 and rows['conv1', 'init'][2].strip() == 'DIFFERS'
  assert rows['fc8', 'units'][1].strip() == '10'
  assert result.stdout.strip().splitlines()[-1].startswith('conformance: ')

  missing = subprocess.run(command[:4] + ['--checkpoint=/nonexistent'], capture_output=True,
                           text=True, env=env, timeout=600)
  assert missing.returncode == 2 and 'error:' in missing.stderr


@pytest.mark.slow
def test_command_line_against_another_source():
  env = dict(os.environ, PYTHONPATH=os.getcwd())
  command = [sys.executable, '-m', 'alexnet_jax.conformance', '--config=configs/default.py',
             '--reference=caffe', '--config.batch_size=256']
  result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
  assert result.returncode == 1, result.stderr
  lines = result.stdout.splitlines()
  assert lines[0].startswith("AlexNet conformance with Caffe's models/bvlc_alexnet:")
  assert lines[2].split('|')[3].strip() == 'caffe'  # The column of the source's values.
  rows = {tuple(cell.strip() for cell in line.split('|')[1:3]): line.split('|')[3:6]
          for line in lines if line.startswith('| ')}
  assert rows['config', 'batch_size'][2].strip() == 'match'  # The override took effect.
  # The Fashion-MNIST config has no channel order: it cannot claim Caffe's BGR.
  assert [cell.strip() for cell in rows['config', 'input.channel_order']] == [
      'bgr', 'not in the config', 'DIFFERS']
  assert any(line.startswith('- config batch_size: Caffe models/bvlc_alexnet/train_val.prototxt')
             for line in lines)
  assert lines[-1].startswith('conformance: ') and 'differ from caffe' in lines[-1]


# ----------------------------------------------------------------------------------------------
# Against each source (alexnet_jax/recipes.py): a row matches only where that source agrees.

CONFIGS = {'paper': 'imagenet', 'cuda_convnet2': 'cuda_convnet2', 'caffe': 'bvlc_alexnet',
           'torchvision': 'torchvision'}
# Rows that compare structure only (window and stride; all channels or each tower its own; where
# the LRN window stops): their text also shows sizes, which other rows compare.
STRUCTURE_ONLY = {'max-pool', 'kernels see', 'LRN window'}


@pytest.mark.slow
def test_each_recipe_matches_its_own_source_and_differs_exactly_where_sources_disagree():
  for own, config_name in CONFIGS.items():
    rows = _report(config_name, own)
    assert [(r.layer, r.item, r.measured) for r in rows if r.status != 'match'] == [], own
    expected = {(r.layer, r.item): r.reference for r in rows}
    for other in recipes.RECIPES:
      for r in _report(config_name, other):
        if (r.layer, r.item) not in expected:  # A row only the other source has.
          continue
        agree = r.reference == expected[r.layer, r.item]
        if agree or r.item not in STRUCTURE_ONLY:
          assert (r.status == 'match') == agree, (config_name, other, r)


def test_the_paper_config_against_the_other_sources():
  caffe = _differs(_report('imagenet', 'caffe'))
  # Caffe's init: biases 0.1 where the paper has 1, fc6/fc7 weights std 0.005; its LRN: k=1,
  # alpha/n, across both towers; biases: twice the rate, no decay.
  assert {(layer, 'init') for layer in ('conv2', 'conv4', 'conv5', 'fc6', 'fc7')} <= caffe
  assert ('conv1', 'init') not in caffe and ('conv3', 'init') not in caffe
  assert {('conv1', 'LRN'), ('conv2', 'LRN')} | LRN_WINDOW_ROWS <= caffe
  assert {('biases', 'learning rate'), ('biases', 'weight decay')} <= caffe
  assert ('weights', 'learning rate') not in caffe
  rows = _report('imagenet', 'caffe')
  assert _row(rows, 'fc6', 'init').reference == 'N(0, 0.005), bias 0.1'
  assert _row(rows, 'conv1', 'LRN').reference == 'k=1 n=5 alpha=2e-05 (0.0001 / n) beta=0.75'
  assert 'caffe divides it' in _row(rows, 'conv1', 'LRN').note
  assert _row(rows, 'config', 'input.channel_order').reference == 'bgr'

  cuda = _report('imagenet', 'cuda_convnet2')
  assert {('conv1', 'LRN input'), ('conv2', 'same-map norm')} <= _differs(cuda)
  assert _row(cuda, 'conv2', 'same-map norm').reference == '5x5 scale=0.001 pow=0.75 minDiv=1'
  assert _row(cuda, 'conv1', 'LRN input').measured == 'ReLU outputs'

  tv = _report('imagenet', 'torchvision')
  init_rows = {(r.layer, r.item) for r in tv if r.item == 'init'}
  assert len(init_rows) == 8 and init_rows <= _differs(tv)  # N(0, 0.01) is not U(+-1/sqrt(fan_in))
  assert _row(tv, 'conv1', 'init').reference == 'U(±0.0525), bias U(±0.0525)'  # 1/sqrt(363)
  assert _row(tv, 'optimizer', 'update form').status == 'DIFFERS'
  assert _row(tv, 'total', 'parameters').reference == f'{TORCHVISION_PARAMS:,}'
  assert _row(tv, 'total', 'multiply-adds per image').reference == f'{TORCHVISION_MACS:,}'


def test_the_variants_measured():
  cuda = _report('cuda_convnet2', 'cuda_convnet2')
  assert _row(cuda, 'conv1', 'LRN input').measured == 'signed responses'
  assert _row(cuda, 'conv2', 'same-map norm').measured == '5x5 scale=0.001 pow=0.75 minDiv=1'
  assert _row(cuda, 'conv1', 'LRN').measured == 'k=2 n=5 alpha=2e-05 beta=0.75'
  assert _row(cuda, 'biases', 'learning rate').measured == '0.04'
  tv = _report('torchvision', 'torchvision')
  assert _row(tv, 'conv1', 'init').measured.startswith('U(±0.0525)')
  assert _row(tv, 'optimizer', 'update form').measured.startswith('PyTorch')
  caffe = _report('bvlc_alexnet', 'caffe')
  assert _row(caffe, 'fc6', 'init').measured.startswith('std 0.0050')
  assert _row(caffe, 'biases', 'weight decay').measured == '0'


def test_each_sources_network_has_its_published_counts():
  counts = {name: spec.shapes(spec.reference_spec(name)) for name in recipes.RECIPES}
  for name in ('paper', 'cuda_convnet2', 'caffe'):  # The same two-tower network.
    assert {r['name']: r['macs'] for r in counts[name]} == PAPER_MACS
    assert sum(r['params'] for r in counts[name]) == PAPER_PARAMS
  assert sum(r['params'] for r in counts['torchvision']) == TORCHVISION_PARAMS
  assert sum(r['macs'] for r in counts['torchvision']) == TORCHVISION_MACS
  # Every fact the model rows need is one the recipe states (the class count is ILSVRC's; the
  # LRN constants only where there is an LRN).
  for name, recipe in recipes.RECIPES.items():
    stated = {f.key for f in recipe.checked}
    optional = {'model.num_classes'} | ({key for key in spec.MODEL_FACTS if 'lrn_' in key}
                                        if not recipe.fact('model.lrn').value else set())
    assert set(spec.MODEL_FACTS) - stated <= optional, name


def _stats(weights, biases):
  """What init_stats.layer_stats measures, from samples (float64 numpy)."""
  centred = weights - weights.mean()
  squares = centred * centred  # Not centred ** 4: numpy's general power is 4x slower.
  return dict(std=weights.std(), mean=weights.mean(), max_abs=np.abs(weights).max(),
              kurtosis=np.mean(squares * squares) / np.mean(squares) ** 2 - 3,
              bias_min=biases.min(), bias_max=biases.max())


def test_layer_stats_in_float32_agree_with_float64_numpy_on_fc7s_size():
  # fc7's 4096 x 4096 weights, uniform around a mean far from zero beside their spread: a
  # one-pass variance (E[x^2] - E[x]^2) in float32 loses it; the centred one keeps 1e-5.
  rng = np.random.default_rng(0)
  kernel = (0.3 + rng.uniform(-0.01, 0.01, (4096, 4096))).astype(np.float32)
  biases = rng.uniform(-1, 1, 4096).astype(np.float32)
  measured = jax.jit(init_stats.layer_stats)({'kernel': kernel, 'bias': biases})
  expected = _stats(kernel.astype(np.float64), biases)
  for name, value in expected.items():
    np.testing.assert_allclose(float(measured[name]), value, rtol=1e-5, atol=1e-9, err_msg=name)
  assert abs(expected['kurtosis'] + 1.2) < 1e-3  # The uniform's, so the check above has teeth.


def test_init_rows_compare_the_distribution_not_only_its_std():
  rng = np.random.default_rng(0)
  fan_in = 363  # conv1: 11 x 11 x 3.
  bound = fan_in ** -0.5
  normal = _stats(rng.normal(0, bound / 3 ** 0.5, 20_000), np.zeros(64))
  uniform = _stats(rng.uniform(-bound, bound, 20_000), rng.uniform(-bound, bound, 64))
  paper_like = ((bound / 3 ** 0.5), 0.0)  # N(0, std) with the uniform's std.
  pytorch = (models.FAN_IN_UNIFORM, models.FAN_IN_UNIFORM)
  status = lambda expected, stats: init_stats.init_row(
      conformance.rows.make_row, 'conv1', expected, fan_in, stats).status
  assert status(pytorch, uniform) == 'match'
  assert status(paper_like, normal) == 'match'
  assert status(paper_like, uniform) == 'DIFFERS'  # Same std, other kind: the old report matched.
  assert status(pytorch, normal) == 'DIFFERS'
  assert status(pytorch, _stats(rng.uniform(-bound, bound, 20_000), np.zeros(64))) == 'DIFFERS'
  assert status((0.01, 1.0), None) == 'n/a'
