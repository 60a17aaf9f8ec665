"""Shared test fixtures: a tiny config and mocked Fashion-MNIST data."""

import os

# 8 CPU devices for the sharding tests; must be set before JAX initialises its backend. Other
# XLA flags already set are kept; a device count already set is replaced (the tests expect 8).
FORCE_DEVICES = '--xla_force_host_platform_device_count'
os.environ['XLA_FLAGS'] = ' '.join(
    [flag for flag in os.environ.get('XLA_FLAGS', '').split()
     if not flag.startswith(FORCE_DEVICES + '=')] + [f'{FORCE_DEVICES}=8'])
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# One persistent compilation cache for the session and every process it starts (they inherit the
# environment): the tests compile the same tiny models many times, each subprocess from scratch.
# Git-ignored; a fresh clone starts empty. JAX_ENABLE_COMPILATION_CACHE=false turns it off.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                      os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                   '.jax_cache'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.2')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')

# Before TensorFlow and JAX start threads, so the malloc settings cover them (allocator.py).
import alexnet_jax  # noqa: E402,F401  pylint: disable=unused-import
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from alexnet_jax import registry  # noqa: E402
from configs import default  # noqa: E402

tf.config.set_visible_devices([], 'GPU')


def tiny_config(**overrides):
  """The default config shrunk to seconds: small widths, 67x67 inputs, a few steps."""
  config = default.get_config()
  config.model.conv_features = (8, 16, 24, 24, 16)
  config.model.fc_features = (32, 32)
  config.input.image_size = 67
  config.batch_size = 16
  config.eval_batch_size = 16
  config.num_train_steps = 6
  config.log_every_steps = 1
  config.eval_every_steps = 3
  config.checkpoint_every_steps = 3
  config.num_eval_steps = 2
  config.lr_schedule = 'constant'
  config.mesh.data = -1  # All (8 forced CPU) devices: the batch is split over them.
  return registry.apply_overrides(config, overrides)


@pytest.fixture
def mock_fashion_mnist():
  """Random Fashion-MNIST-shaped data through the real builder API (tfds.testing.mock_data)."""
  with tfds.testing.mock_data(num_examples=96):
    yield
