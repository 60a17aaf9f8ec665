"""Fine-tuning: a new classifier, frozen layers bit-identical, the rest trained from the source."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import tensorflow_datasets as tfds

from alexnet_jax import finetune, optim, train, trained_model
from alexnet_jax.errors import UserError
from tests.conftest import tiny_config
from tests.trained_helpers import MOCK_EXAMPLES, shared_tiny_workdir

CONV = ('conv1', 'conv2', 'conv3', 'conv4', 'conv5')


def _finetune_config(source: str, freeze=CONV, **overrides) -> ml_collections.ConfigDict:
  config = tiny_config(num_train_steps=2, eval_every_steps=2, checkpoint_every_steps=2,
                       **overrides)
  config.input.classes = (5, 6, 7, 8, 9)
  config.finetune = ml_collections.ConfigDict(
      {'init_from': source, 'reinit': ('fc8',), 'freeze': freeze})
  return config


def test_frozen_layers_get_no_update_and_the_rest_follow_the_optimizer():
  params = {'conv1': {'kernel': jnp.ones((2, 3)), 'bias': jnp.ones(3)},
            'fc8': {'kernel': jnp.full((3, 2), 2.0), 'bias': jnp.zeros(2)}}
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
  frozen_config = tiny_config()
  frozen_config.finetune = ml_collections.ConfigDict({'freeze': ('conv1',)})
  frozen_tx = optim.create_optimizer(frozen_config)
  plain_tx = optim.create_optimizer(tiny_config())
  frozen_state, plain_state = frozen_tx.init(params), plain_tx.init(params)
  frozen_params, plain_params = params, params
  for lr in (0.1, 0.01):  # The learning rate is still set through inject_hyperparams.
    frozen_state.hyperparams['learning_rate'] = plain_state.hyperparams['learning_rate'] = lr
    updates, frozen_state = frozen_tx.update(grads, frozen_state, frozen_params)
    frozen_params = optax.apply_updates(frozen_params, updates)
    updates, plain_state = plain_tx.update(grads, plain_state, plain_params)
    plain_params = optax.apply_updates(plain_params, updates)
  jax.tree.map(np.testing.assert_array_equal, frozen_params['conv1'], params['conv1'])
  jax.tree.map(np.testing.assert_array_equal, frozen_params['fc8'], plain_params['fc8'])
  assert not np.array_equal(frozen_params['fc8']['kernel'], params['fc8']['kernel'])


def test_freezing_an_unknown_layer_is_a_user_error():
  config = tiny_config()
  config.finetune = ml_collections.ConfigDict({'freeze': ('conv9',)})
  with pytest.raises(UserError, match='conv9'):
    optim.create_optimizer(config).init({'conv1': {'kernel': jnp.ones(2)}})


@pytest.mark.slow
def test_finetune_changes_only_what_it_should(tmp_path_factory):
  source = shared_tiny_workdir()
  target = str(tmp_path_factory.mktemp('target'))
  with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
    train.train_and_evaluate(_finetune_config(source), target)
  before, after = trained_model.load(source), trained_model.load(target)
  assert after.class_names == ('Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot')
  assert after.params['fc8']['bias'].shape == (5,)
  assert before.params['fc8']['bias'].shape == (10,)
  for layer in CONV:  # Frozen: bit-identical to the source.
    jax.tree.map(np.testing.assert_array_equal, after.params[layer], before.params[layer])
  for layer in ('fc6', 'fc7'):  # Started from the source and trained.
    for name in ('kernel', 'bias'):
      assert not np.array_equal(after.params[layer][name], before.params[layer][name])
      np.testing.assert_allclose(after.params[layer][name], before.params[layer][name], atol=0.05)

  # A layer whose shape changed must be named in reinit.
  config = _finetune_config(source)
  config.finetune.reinit = ()
  with pytest.raises(UserError, match="'fc8'.*reinit"):
    finetune.pretrained_params(config, after.params)
