"""The four recipe configs against alexnet_jax/recipes.py, the table of what each source sets
(every value traced to its file and line there): a test fails when a config value drifts."""

import functools
import importlib
import math

import jax
import numpy as np
import pytest

from alexnet_jax import optim, parallel, recipes, registry, train, trained_model

RECIPES = list(recipes.RECIPES)
# What every recipe must say, so that none can silently leave a setting at another's value.
REQUIRED = ('model.towers', 'model.conv_features', 'model.lrn', 'model.conv1_relu_after_pool',
            'model.conv2_rnorm', 'model.conv1_padding', 'model.dropout_placement',
            'model.weight_init', 'optimizer', 'learning_rate', 'momentum', 'weight_decay',
            'param_rules', 'batch_size', 'lr_schedule', 'input.image_size', 'input.resize',
            'input.resize_size', 'input.channel_order', 'input.pixel_range',
            'input.mean_subtraction', 'input.std', 'input.augmentation', 'input.pca_lighting',
            'input.eval_crops')


def _config(recipe):
  module = recipes.RECIPES[recipe].config.removesuffix('.py').replace('/', '.')
  return importlib.import_module(module).get_config()


@pytest.mark.parametrize('recipe', RECIPES)
def test_config_follows_its_source_value_by_value(recipe):
  rows = recipes.compare(recipes.RECIPES[recipe], _config(recipe))
  assert [(f.key, value, f.value) for f, value, same in rows if not same] == []
  assert {f.key for f, _, _ in rows} >= set(REQUIRED)


@pytest.mark.parametrize('recipe', RECIPES)
def test_every_fact_names_its_source(recipe):
  for fact in recipes.RECIPES[recipe].facts:
    assert fact.source and (fact.reproduced or fact.note), fact
    assert fact.reproduced == (fact.key is not None), fact


def test_a_drifted_value_is_caught():
  config = _config('caffe')
  config.input.channel_order = 'rgb'
  config.param_rules = (('.*/bias', 2.0, 1.0),)
  rows = recipes.compare(recipes.RECIPES['caffe'], config)
  assert sorted(f.key for f, _, same in rows if not same) == ['input.channel_order',
                                                              'param_rules']


def test_recipes_differ_from_the_paper_where_their_sources_do():
  paper = _config('paper')
  differs = lambda recipe: {f.key for f, _, same in recipes.compare(recipes.RECIPES[recipe], paper)
                            if not same}
  assert {'model.lrn_alpha_divided_by_n', 'model.conv1_relu_after_pool', 'model.conv2_rnorm',
          'model.weight_init', 'param_rules', 'learning_rate', 'input.pca_lighting'} <= differs(
              'cuda_convnet2')
  assert {'model.lrn_k', 'model.lrn_scope', 'input.channel_order', 'input.resize',
          'input.resize_antialias', 'batch_size', 'param_rules'} <= differs('caffe')
  assert {'model.towers', 'input.pixel_range', 'input.std', 'optimizer', 'weight_decay'} <= (
      differs('torchvision'))


@pytest.mark.parametrize('recipe,parameters', [
    ('paper', 60_965_224), ('cuda_convnet2', 60_965_224), ('caffe', 60_965_224),
    ('torchvision', 61_100_840)])  # docs/paper.md, "Counts: parameters and multiply-adds".
def test_parameter_counts(recipe, parameters):
  config = _config(recipe)
  model = registry.create_model(config.model)
  size = config.input.image_size
  shapes = trained_model.abstract_params(model, (size, size, 3))
  assert sum(math.prod(p.shape) for p in jax.tree.leaves(shapes)) == parameters


IMAGENET_STEPS_PER_EPOCH = 1_281_167 // 128


@pytest.mark.parametrize('recipe,steps_per_epoch,points', [
    # Caffe: base_lr 0.01 x0.1 at iterations 100k, 200k, ... (solver lines 4-7).
    ('caffe', 1_281_167 // 256, {0: 0.01, 99_999: 0.01, 100_000: 1e-3, 200_000: 1e-4,
                                 449_999: 1e-6}),
    # cuda-convnet2: 0.02, 0.00317, 0.000504, 0.00008 in the quarters (docs/paper.md).
    ('cuda_convnet2', IMAGENET_STEPS_PER_EPOCH, {
        0: 0.02, 22 * IMAGENET_STEPS_PER_EPOCH: 0.02, 23 * IMAGENET_STEPS_PER_EPOCH: 0.00317,
        46 * IMAGENET_STEPS_PER_EPOCH: 0.000504, 68 * IMAGENET_STEPS_PER_EPOCH: 0.00008}),
    # torchvision: 0.01 x0.1 every 30 epochs (StepLR).
    ('torchvision', 1_281_167 // 256, {0: 0.01, 30 * 5004 - 1: 0.01, 30 * 5004: 1e-3,
                                       60 * 5004: 1e-4, 90 * 5004 - 1: 1e-4}),
])
def test_learning_rate_schedules(recipe, steps_per_epoch, points):
  config = _config(recipe)
  total = (config.num_train_steps if config.num_train_steps > 0
           else config.num_epochs * steps_per_epoch)
  schedule = optim.base_learning_rate_fn(config, steps_per_epoch, total)
  for step, expected in points.items():
    np.testing.assert_allclose(float(schedule(step)), expected, rtol=3e-3, err_msg=str(step))


def test_the_paper_treats_biases_like_weights():
  assert _config('paper').param_rules == ()  # Biases decayed, the weights' learning rate.


@pytest.mark.parametrize('override,message', [
    ({'lr_step_factor': 10.0}, 'lr_step_factor'), ({'lr_step_every_steps': -1}, 'every_steps')])
def test_bad_step_schedules_are_user_errors(override, message):
  from alexnet_jax import config_checks
  from alexnet_jax.errors import UserError
  config = _config('caffe')
  config.update(override)
  with pytest.raises(UserError, match=message):
    config_checks.validate(config)


@pytest.mark.parametrize('recipe', RECIPES)
def test_every_recipe_trains_a_step_under_jit(recipe):
  """Each recipe's layer switches and optimizer (its param_rules included) through the
  trainer's jitted step, at narrow widths and the smallest input: cuda-convnet2's same-map
  rnorm once could not be differentiated under jit."""
  config = _config(recipe)
  config.model.conv_features = (16, 32, 32, 32, 32)
  config.model.fc_features = (32, 32)
  model = registry.create_model(config.model, 5, parallel.Layout(kernels=config.kernels))
  tx = optim.create_optimizer(config)
  size = model.min_input_size()
  rate = np.float32(config.learning_rate)
  state = jax.jit(lambda key: train.create_train_state(model, tx, key, (size, size, 3), rate))(
      jax.random.key(0))
  batch = {'image': np.random.default_rng(0).normal(0, 50, (2, size, size, 3)).astype(np.float32),
           'label': np.array([1, 3], np.int32)}
  step = jax.jit(functools.partial(train.train_step, model=model, tx=tx))
  new_state, sums = step(state, batch, rate, jax.random.key(1))
  assert int(sums['nonfinite_steps']) == 0 and np.isfinite(float(sums['loss']))
  assert int(new_state.step) == 1
  assert np.any(np.asarray(new_state.params['fc8']['kernel']) !=
                np.asarray(state.params['fc8']['kernel']))  # The update ran.
