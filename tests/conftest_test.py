"""tests/conftest.py forces 8 CPU devices whatever XLA_FLAGS the suite is started with."""

import os
import subprocess
import sys

import jax
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize('xla_flags', ['--xla_cpu_enable_fast_math=false',
                                       '--xla_force_host_platform_device_count=2'])
def test_the_suite_gets_eight_devices_whatever_xla_flags_were_set(xla_flags):
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  if xla_flags is not None:
    env['XLA_FLAGS'] = xla_flags
  code = ('import tests.conftest, os, jax; '
          'print(jax.device_count(), os.environ["XLA_FLAGS"])')
  out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env={**env, 'PYTHONPATH': ROOT},
                       capture_output=True, text=True, timeout=300, check=True).stdout.split()
  assert out[0] == '8', out
  if xla_flags and 'device_count' not in xla_flags:
    assert xla_flags in out[1:], out  # Other flags are kept.


def test_the_suite_compiles_with_most_optimisations_off_unless_told_otherwise():
  # conftest.py sets the variable where the environment did not: JAX reads it at import.
  wanted = os.environ['JAX_DISABLE_MOST_OPTIMIZATIONS'].lower() in ('true', '1', 'yes', 'on')
  assert jax.config.values['jax_disable_most_optimizations'] is wanted


@pytest.mark.optimized
def test_a_test_marked_optimized_compiles_with_them():
  assert jax.config.values['jax_disable_most_optimizations'] is False
