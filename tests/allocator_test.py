"""The malloc settings of alexnet_jax/allocator.py: a step's large buffers are reused, not faulted
in again; and where the settings cannot apply, the process says so and keeps its defaults.

Counts minor page faults (getrusage), never time: a page fault count does not depend on load.
"""

import ctypes.util
import os
import platform
import resource
import statistics
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from alexnet_jax import allocator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIDE = 4096  # A 4096 x 4096 float32 result: 64 MiB, above every glibc mmap threshold.
PAGES = SIDE * SIDE * 4 // resource.getpagesize()


def median_faults_per_call() -> float:
  """Median minor faults of a jitted step whose 64 MiB result is freed before the next call.

  The median: the heap grows now and then until it holds what the calls keep alive at once
  (results are freed asynchronously), and a call that grows it faults its new pages in once.
  """
  x = jnp.ones((SIDE, SIDE), jnp.float32)
  step = jax.jit(lambda x: x * 2 + (x @ x[:64].T).sum())  # The product runs on XLA's threads.
  faults = []
  for _ in range(20):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step(x).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
  return statistics.median(faults[5:])


# The same in a fresh process, after `prelude`.
FAULTS_IN_A_NEW_PROCESS = '''
{prelude}
import alexnet_jax
from alexnet_jax import allocator
from tests import allocator_test
print(allocator_test.median_faults_per_call())
print(allocator.status())
'''

glibc_only = pytest.mark.skipif(
    platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc',
    reason='the settings are glibc malloc settings')


def _faults_per_call_in_a_new_process(prelude: str = 'pass', **env: str) -> tuple[float, str]:
  result = subprocess.run(
      [sys.executable, '-c', FAULTS_IN_A_NEW_PROCESS.format(prelude=prelude)], cwd=ROOT,
      env={**os.environ, 'PYTHONPATH': ROOT, 'XLA_FLAGS': '', **env}, capture_output=True,
      text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  faults, status = result.stdout.strip().splitlines()[-2:]
  return float(faults), status


def _huge_pages_always() -> bool:
  """With transparent huge pages always on, even returned memory faults back in 2 MiB at a time."""
  try:
    with open('/sys/kernel/mm/transparent_hugepage/enabled') as f:
      return '[always]' in f.read()
  except OSError:
    return False


@glibc_only
def test_the_test_process_has_the_settings_and_reuses_a_steps_buffers():
  # conftest.py imports alexnet_jax before TensorFlow and JAX start their threads.
  assert allocator.status().startswith('glibc malloc keeps freed memory'), allocator.status()
  assert median_faults_per_call() < 0.05 * PAGES


@glibc_only
@pytest.mark.skipif(_huge_pages_always(), reason='huge pages hide the faults of the control')
def test_glibc_defaults_fault_every_page_of_the_buffer_in_again():
  # The control: the same step without the settings pays a fault per page, every call.
  faults_per_call, status = _faults_per_call_in_a_new_process(ALEXNET_JAX_MALLOC='system')
  assert status == 'glibc defaults kept (ALEXNET_JAX_MALLOC=system)'
  assert faults_per_call > 0.9 * PAGES, (faults_per_call, PAGES)


@glibc_only
def test_importing_after_jax_started_its_threads_is_reported():
  # XLA's threads already have arenas of their own: the settings cannot cover them.
  faults_per_call, status = _faults_per_call_in_a_new_process(prelude='import jax; jax.devices()')
  assert 'arenas were already in use' in status, status
  if not _huge_pages_always():
    assert faults_per_call > 0.9 * PAGES, (faults_per_call, PAGES)


def test_where_the_settings_cannot_apply_the_defaults_are_kept(monkeypatch):
  # pylint: disable=protected-access
  monkeypatch.setenv('ALEXNET_JAX_MALLOC', 'system')
  assert allocator._apply() == 'glibc defaults kept (ALEXNET_JAX_MALLOC=system)'
  monkeypatch.delenv('ALEXNET_JAX_MALLOC')
  monkeypatch.setattr(allocator, '_glibc', lambda: None)  # macOS, musl: no glibc.
  assert allocator._apply() == 'not glibc; allocator defaults kept'


@glibc_only
def test_a_preloaded_allocator_is_left_alone():
  tcmalloc = ctypes.util.find_library('tcmalloc_minimal')
  if not tcmalloc:
    pytest.skip('libtcmalloc-minimal4 is not installed')
  result = subprocess.run(
      [sys.executable, '-c', 'import alexnet_jax.allocator as a; print(a.status())'], cwd=ROOT,
      env={**os.environ, 'PYTHONPATH': ROOT, 'LD_PRELOAD': tcmalloc}, capture_output=True,
      text=True, timeout=60, check=True)
  assert result.stdout.strip() == "malloc is not glibc's (preloaded allocator?); its defaults kept"


@pytest.mark.parametrize('jax_platforms,installed,expected', [
    ('', (), 'cpu'),
    ('', ('libtpu',), 'tpu'),
    ('', ('jax_plugins/xla_cuda12',), 'gpu'),
    ('', ('jax_plugins/xla_rocm',), 'gpu'),
    ('', ('jax_plugins/xla_other_backend',), 'cpu'),  # Only GPU plugins mean a GPU.
    ('cpu', ('libtpu',), 'cpu'),  # The environment outranks what is installed.
    ('cuda,cpu', (), 'cuda'),
])
def test_the_platform_is_judged_before_jax_starts(monkeypatch, tmp_path, jax_platforms, installed,
                                                  expected):
  for package in installed:  # Fake installs: a package directory on sys.path.
    (tmp_path / package).mkdir(parents=True)
    (tmp_path / package / '__init__.py').write_text('')
  monkeypatch.syspath_prepend(str(tmp_path))
  monkeypatch.setenv('JAX_PLATFORMS', jax_platforms)
  assert allocator.expected_platform() == expected


@glibc_only
def test_on_an_accelerator_glibcs_defaults_are_kept_unless_tuned_is_asked_for(monkeypatch):
  # pylint: disable=protected-access
  monkeypatch.delenv('ALEXNET_JAX_MALLOC', raising=False)
  monkeypatch.setenv('JAX_PLATFORMS', 'tpu')
  assert allocator._apply() == ('glibc defaults kept: JAX will run on tpu, and the settings were '
                                'measured on the CPU only (ALEXNET_JAX_MALLOC=tuned applies them)')
  monkeypatch.setenv('ALEXNET_JAX_MALLOC', 'tuned')
  assert 'defaults kept' not in allocator._apply()  # Applied (again, in this process).
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  monkeypatch.delenv('ALEXNET_JAX_MALLOC')
  assert 'defaults kept' not in allocator._apply()
