"""The suite's process set-up (devices, compilation, malloc under xdist) and shared fixtures."""

import contextlib
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
# switch for that, read by this process and every process it starts; code that runs the paper
# model's layers many times takes them back with `optimized()`. Set
# JAX_DISABLE_MOST_OPTIMIZATIONS=false to run the whole suite optimised.
os.environ.setdefault('JAX_DISABLE_MOST_OPTIMIZATIONS', 'true')
# pytest-xdist workers (`make test` runs one per core) start a thread before they import this
# file, and its first allocation opens a second malloc arena, which allocator.py's settings no
# longer cover. So the controller starts them with glibc's arena limit at 1 (pytest_configure
# below), and each worker puts back what the limit was before: the processes the tests start get
# the environment a user's would.
ARENA_LIMIT, BEFORE_WORKERS = 'MALLOC_ARENA_MAX', 'ALEXNET_JAX_TEST_ARENA_LIMIT_BEFORE'
UNSET = '<unset>'


def _restore_arena_limit() -> None:
  """The limit from before the controller set it, where this process holds it."""
  before = os.environ.pop(BEFORE_WORKERS, None)
  if before == UNSET:
    os.environ.pop(ARENA_LIMIT, None)
  elif before is not None:
    os.environ[ARENA_LIMIT] = before


_restore_arena_limit()  # In an xdist worker this suite's controller started.

# Before TensorFlow and JAX start threads, so the malloc settings cover them (allocator.py).
import alexnet_jax  # noqa: E402,F401  pylint: disable=unused-import
import jax  # noqa: E402
import pytest  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from alexnet_jax import data, registry  # noqa: E402
from configs import default  # noqa: E402


def pytest_configure(config):
  """In an xdist controller, before it starts its workers: their arena limit (see above). In a
  process that runs tests, before any test module imports TensorFlow: the GPUs hidden from it
  (the pipelines hide them too, but some tests run TensorFlow directly). The controller, which
  runs no test, does not import TensorFlow (3-4 s), nor does a process that imports this file."""
  if getattr(config.option, 'tx', None) and not hasattr(config, 'workerinput'):
    os.environ[BEFORE_WORKERS] = os.environ.get(ARENA_LIMIT, UNSET)
    os.environ[ARENA_LIMIT] = '1'
  else:
    data.keep_tensorflow_off_accelerators()


def pytest_unconfigure(config):
  """The controller's environment as it was (pytest.main may run inside a longer process)."""
  del config
  _restore_arena_limit()


@contextlib.contextmanager
def optimized():
  """XLA's full optimisations within, for code that runs the paper model's layers (most are off
  in the suite, see above). Programs compiled before and cached in memory are reused as they are:
  JAX's jit cache does not key on this switch (its persistent cache does)."""
  disabled = jax.config.values['jax_disable_most_optimizations']
  jax.config.update('jax_disable_most_optimizations', False)
  try:
    yield
  finally:
    jax.config.update('jax_disable_most_optimizations', disabled)


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
