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
# The suite compiles hundreds of small programs and runs most of them a few times: XLA's LLVM
# optimisations cost more than they save there (docs/performance.md, "The test suite"). JAX's own
# switch for that, read by this process and every process it starts; tests that run the paper
# model's layers many times opt back in with @pytest.mark.optimized. Set
# JAX_DISABLE_MOST_OPTIMIZATIONS=false to run the whole suite optimised.
os.environ.setdefault('JAX_DISABLE_MOST_OPTIMIZATIONS', 'true')
# pytest-xdist workers (`make test` runs one per core) start a thread before they import this
# file, and its first allocation opens a second malloc arena, which allocator.py's settings no
# longer cover. So the controller starts them with glibc's arena limit already 1
# (pytest_configure below), and each worker drops it again: the processes the tests start get
# glibc's defaults, as a user's do.
ARENA_LIMIT, SET_FOR_WORKERS = 'MALLOC_ARENA_MAX', 'ALEXNET_JAX_TEST_ARENA_LIMIT'
if os.environ.get('PYTEST_XDIST_WORKER') and os.environ.pop(SET_FOR_WORKERS, None):
  os.environ.pop(ARENA_LIMIT, None)

# Before TensorFlow and JAX start threads, so the malloc settings cover them (allocator.py).
import alexnet_jax  # noqa: E402,F401  pylint: disable=unused-import
import jax  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from alexnet_jax import registry  # noqa: E402
from configs import default  # noqa: E402

tf.config.set_visible_devices([], 'GPU')


def pytest_configure(config):
  """In the controller of an xdist run, before it starts the workers: their arena limit."""
  workers = config.getoption('numprocesses', None) if config.pluginmanager.has_plugin('xdist') \
      else None
  if workers and not os.environ.get('PYTEST_XDIST_WORKER') and ARENA_LIMIT not in os.environ:
    os.environ.update({ARENA_LIMIT: '1', SET_FOR_WORKERS: '1'})


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


@pytest.fixture(autouse=True)
def _compile_optimized_when_marked(request):
  """XLA's full optimisations for a test marked `optimized` (conftest turns most of them off)."""
  if request.node.get_closest_marker('optimized') is None:
    yield
    return
  disabled = jax.config.values['jax_disable_most_optimizations']
  jax.config.update('jax_disable_most_optimizations', False)
  try:
    yield
  finally:
    jax.config.update('jax_disable_most_optimizations', disabled)
