"""The recipe rows of the conformance report (alexnet_jax/conformance/training.py): the optimizer
measured against update formulas written out by hand, and config items read with their sources'
conventions. Tiny trees; no model is run."""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import optax
import pytest

from alexnet_jax import optim, recipes
from alexnet_jax.conformance import rows, spec, training
from configs import imagenet

PARAMS = {'conv1': {'kernel': jax.ShapeDtypeStruct((2, 11, 11, 3, 48), jnp.float32),
                    'bias': jax.ShapeDtypeStruct((2, 48), jnp.float32)},
          'fc8': {'kernel': jax.ShapeDtypeStruct((2, 2048, 1000), jnp.float32),
                  'bias': jax.ShapeDtypeStruct((1000,), jnp.float32)}}


def _paper_form(learning_rate, weight_decay, momentum):
  """v <- m v - lr (g + wd w); w <- w + v (§5, Caffe's sgd_solver.cpp)."""
  return optax.chain(optax.add_decayed_weights(weight_decay),
                     optax.scale_by_learning_rate(learning_rate), optax.trace(decay=momentum))


def _caffe(learning_rate):
  """Caffe's per-parameter rule: biases lr_mult 2, decay_mult 0 (train_val.prototxt 45-52)."""
  label = lambda params: {layer: {'kernel': 'weights', 'bias': 'biases'} for layer in params}
  return optax.multi_transform({'weights': _paper_form(learning_rate, 5e-4, 0.9),
                                'biases': _paper_form(2 * learning_rate, 0.0, 0.9)}, label)


def test_per_parameter_rates_are_measured_from_the_updates():
  rates = training.measure_optimizer(optax.inject_hyperparams(_caffe)(learning_rate=0.01), PARAMS)
  for layer in ('conv1', 'fc8'):
    kernel, bias = rates[f'{layer}/kernel'], rates[f'{layer}/bias']
    assert kernel.learning_rate == pytest.approx(0.01, rel=1e-5)
    assert kernel.weight_decay == pytest.approx(5e-4, rel=1e-4)
    # Only the biases' rule differs: twice the rate, no decay (nearest wrong: 0.01 and 5e-4).
    assert bias.learning_rate == pytest.approx(0.02, rel=1e-5)
    assert bias.weight_decay == pytest.approx(0.0, abs=1e-9)
    assert kernel.momentum == pytest.approx(0.9, rel=1e-4) and kernel.form == 'paper_sgd'


def test_the_update_form_shows_when_the_learning_rate_drops():
  pytorch = lambda learning_rate: optax.chain(optax.add_decayed_weights(1e-4),
                                              optax.sgd(learning_rate, momentum=0.9))
  rates = training.measure_optimizer(optax.inject_hyperparams(pytorch)(learning_rate=0.01), PARAMS)
  assert {leaf.form for leaf in rates.values()} == {'optax_sgd'}
  assert rates['conv1/bias'].weight_decay == pytest.approx(1e-4, rel=1e-4)
  plain = lambda learning_rate: optax.sgd(learning_rate)  # No momentum: the forms coincide.
  rates = training.measure_optimizer(optax.inject_hyperparams(plain)(learning_rate=0.1), PARAMS)
  assert {leaf.form for leaf in rates.values()} == {'either (no momentum)'}
  with pytest.raises(ValueError, match='no injected learning rate'):
    training.measure_optimizer(optax.sgd(0.1), PARAMS)


@pytest.mark.parametrize('optimizer', ['paper_sgd', 'optax_sgd'])
def test_the_trainers_optimizer_rows(optimizer):
  config = imagenet.get_config()
  config.optimizer = optimizer
  paper = spec.reference_spec('paper')
  got = {(r.layer, r.item): r for r in training.optimizer_rows(config, PARAMS, paper,
                                                               rows.make_row)}
  assert got['weights', 'learning rate'].measured == '0.01'
  assert got['biases', 'weight decay'].measured == '0.0005'
  assert got['optimizer', 'momentum'].measured == '0.9'
  assert got['optimizer', 'update form'].status == ('match' if optimizer == 'paper_sgd'
                                                    else 'DIFFERS')
  caffe = spec.reference_spec('caffe')
  got = {(r.layer, r.item): r.status for r in training.optimizer_rows(config, PARAMS, caffe,
                                                                      rows.make_row)}
  assert got['biases', 'learning rate'] == got['biases', 'weight decay'] == 'DIFFERS'
  assert got['weights', 'learning rate'] == got['weights', 'weight decay'] == 'match'


def test_config_items_are_compared_with_the_sources_values():
  config = ml_collections.ConfigDict({'batch_size': 256, 'eval_batch_size': 50,
                                      'input': {'eval_crops': 'center', 'channel_order': 'rgb'}})
  got = {r.item: r for r in training.config_rows(config, spec.reference_spec('caffe'),
                                                 rows.make_row)}
  assert {got[key].status for key in ('batch_size', 'eval_batch_size', 'input.eval_crops')} == {
      'match'}
  assert got['input.channel_order'].reference == 'bgr'
  assert got['input.channel_order'].status == 'DIFFERS'
  assert got['input.channel_order'].source.startswith('Caffe src/caffe/util/io.cpp')
  assert got['lr_schedule'].measured == 'not in the config'
  assert got['lr_schedule'].status == 'DIFFERS'
  assert not {key for key in got if key.startswith('model.')}  # Those are measured.


def test_expected_rates_follow_the_first_whole_path_match():
  caffe = spec.reference_spec('caffe')
  rules = recipes.Fact('param_rules', (('.*/bias', 2.0, 0.0), ('fc8/.*', 10.0, 1.0)), 'test')
  facts = {**caffe.facts, 'param_rules': rules}
  rates = training.expected_rates(dataclasses.replace(caffe, facts=facts),
                                  ['fc8/bias', 'fc8/kernel', 'conv1/kernel', 'conv1/biases'])
  want = {'fc8/bias': (0.02, 0.0), 'fc8/kernel': (0.1, 5e-4), 'conv1/kernel': (0.01, 5e-4),
          'conv1/biases': (0.01, 5e-4)}  # 'conv1/biases' is no whole-path match of '.*/bias'.
  assert {path: pytest.approx(rate) for path, rate in rates.items()} == want


def test_train_module_builds_what_is_measured():
  # The report measures optim.create_optimizer's transform; it must keep the injected rate.
  tx = optim.create_optimizer(imagenet.get_config())
  assert 'learning_rate' in tx.init({'w': jnp.zeros(2)}).hyperparams
