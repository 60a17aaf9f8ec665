"""tests/conftest.py's set-up: 8 CPU devices whatever XLA_FLAGS say, most optimisations off,
and the xdist workers' malloc arena limit."""

import os
import subprocess
import sys

import jax
import pytest

from tests.conftest import optimized

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize('xla_flags', ['--xla_cpu_enable_fast_math=false',
                                       '--xla_force_host_platform_device_count=2'])
def test_the_suite_gets_eight_devices_whatever_xla_flags_were_set(xla_flags):
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  if xla_flags is not None:
    env['XLA_FLAGS'] = xla_flags
  code = ('import tests.conftest, os, sys, jax; '
          'print(jax.device_count(), "tensorflow" in sys.modules, os.environ["XLA_FLAGS"])')
  out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env={**env, 'PYTHONPATH': ROOT},
                       capture_output=True, text=True, timeout=300, check=True).stdout.split()
  assert out[0] == '8', out
  # TensorFlow waits for pytest_configure in a process that runs tests: an xdist controller, or
  # a script that only borrows tiny_config, does not pay its 3-4 s.
  assert out[1] == 'False', out
  if xla_flags and 'device_count' not in xla_flags:
    assert xla_flags in out[2:], out  # Other flags are kept.


def test_the_suite_compiles_with_most_optimisations_off_unless_told_otherwise():
  # conftest.py sets the variable where the environment did not; JAX reads it at import, taking
  # these spellings as true (jax._src.config.bool_env).
  wanted = os.environ['JAX_DISABLE_MOST_OPTIMIZATIONS'].lower() in ('y', 'yes', 't', 'true',
                                                                    'on', '1')
  assert jax.config.values['jax_disable_most_optimizations'] is wanted


def test_optimized_turns_them_on_within_and_restores_the_setting_even_on_errors():
  before = jax.config.values['jax_disable_most_optimizations']
  with pytest.raises(ZeroDivisionError):
    with optimized():
      assert jax.config.values['jax_disable_most_optimizations'] is False
      1 / 0  # pylint: disable=pointless-statement
  assert jax.config.values['jax_disable_most_optimizations'] is before


# Run in an xdist worker that this suite's conftest set up (its stdout does not come back).
IN_A_WORKER = """
import os

from alexnet_jax import allocator


def test_the_worker_started_with_one_arena():
  assert allocator.status().startswith('glibc malloc keeps freed memory'), allocator.status()


def test_the_tests_see_the_limit_from_before_the_run():
  assert os.environ.get('MALLOC_ARENA_MAX') == '4'
"""


def test_xdist_workers_start_with_one_arena_and_give_the_tests_the_users_limit(tmp_path):
  # With the variable unset, `make test` itself is the check: its allocator tests run in workers.
  test_file = tmp_path / 'worker_test.py'
  test_file.write_text(IN_A_WORKER)
  done = subprocess.run(
      [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '-p', 'tests.conftest',
       '-n', '1', str(test_file)],
      cwd=ROOT, env={**os.environ, 'MALLOC_ARENA_MAX': '4', 'PYTHONPATH': ROOT},
      capture_output=True, text=True, timeout=300, check=False)
  assert done.returncode == 0 and '2 passed' in done.stdout, (done.stdout[-3000:] +
                                                                done.stderr[-3000:])
