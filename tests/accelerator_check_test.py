"""The accelerator check: its reduced form runs green on forced CPU devices and reports every field;
the chip table and the layouts per device count (no accelerator needed for any of it)."""

import json
import os
import subprocess
import sys

import pytest

from alexnet_jax import accelerator_check
from alexnet_jax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize('kind,bfloat16,float32', [
    ('NVIDIA H100 80GB HBM3', 989.0, 494.5),  # SXM.
    ('NVIDIA H100 PCIe', 756.0, 378.0),
    ('NVIDIA H200', 989.0, 494.5),
    ('NVIDIA A100-SXM4-80GB', 312.0, 156.0),
    ('Tesla V100-SXM2-16GB', None, 15.7),
    ('NVIDIA L4', 121.0, 60.0),
    ('TPU v4', 275.0, 275.0),
    ('TPU v5 lite', 197.0, 197.0),  # v5e.
    ('TPU v5', 459.0, 459.0),  # v5p.
    ('TPU v6 lite', 918.0, 918.0),  # v6e.
])
def test_known_chips_have_their_datasheet_peaks(kind, bfloat16, float32):
  peak = accelerator_check.peak_for(kind)
  assert (peak.bfloat16, peak.float32) == (bfloat16, float32)


@pytest.mark.parametrize('kind', ['NVIDIA L40S', 'NVIDIA H100 NVL', 'NVIDIA GH200 480GB',
                                  'TPU v4 lite', 'cpu', 'Tesla V100S-PCIE-32GB'])
def test_other_chips_are_unknown_not_a_near_name(kind):
  assert accelerator_check.peak_for(kind) is None
  assert accelerator_check.mfu(100.0, None, 'bfloat16') == 'unknown'


def test_mfu_is_per_device_and_per_dtype():
  peak = accelerator_check.peak_for('NVIDIA A100-SXM4-40GB')
  assert accelerator_check.mfu(156.0, peak, 'bfloat16') == pytest.approx(0.5)
  assert accelerator_check.mfu(156.0, peak, 'float32') == pytest.approx(1.0)
  assert accelerator_check.mfu(156.0, peak, 'bfloat16', devices=2) == pytest.approx(0.25)
  assert accelerator_check.mfu(1.0, accelerator_check.peak_for('Tesla V100-SXM2-16GB'),
                               'bfloat16') == 'unknown'


@pytest.mark.parametrize('devices,expected', [
    (1, [(1, 1, 'data')]),
    (2, [(1, 1, 'data'), (2, 1, 'data'), (1, 2, 'towers'), (1, 2, 'hybrid')]),
    (3, [(1, 1, 'data'), (3, 1, 'data'), (1, 2, 'towers'), (1, 2, 'hybrid')]),
    (8, [(1, 1, 'data'), (8, 1, 'data'), (1, 2, 'towers'), (1, 2, 'hybrid'), (4, 2, 'towers'),
         (4, 2, 'hybrid')]),
])
def test_layouts_are_those_the_devices_allow(devices, expected):
  assert accelerator_check.local_layouts(devices, towers=2) == expected
  assert accelerator_check.local_layouts(devices, towers=1) == expected[:2]


@pytest.mark.slow
def test_reduced_check_on_forced_cpu_devices_writes_every_field(tmp_path):
  """LeNet-5 (compiles in seconds; AlexNet's towers are tests/parallel_test.py's), 2 devices."""
  out = tmp_path / 'report.json'
  passing = tmp_path / 'passing_test.py'
  # It passes where the check's pytest compiles with XLA's optimisations, which this suite turns
  # off in the environment the check inherits.
  passing.write_text('import jax\n\ndef test_passes():\n'
                     "  assert jax.config.values['jax_disable_most_optimizations'] is False\n")
  command = [sys.executable, '-m', 'alexnet_jax.accelerator_check', f'--out={out}',
             '--config=configs/lenet5.py', '--cpu_devices=2', '--batch_sizes=4',
             '--dtypes=float32', '--steps=1', '--warmup=1', f'--pytest_args={passing}',
             '--pipeline_images_per_class=16', '--pipeline_batches=1',
             f'--pipeline_workdir={tmp_path / "pipeline"}',
             '--worker_timeout=420', '--tests_timeout=120']  # Below ours: no orphans.
  env = {**os.environ, 'PYTHONPATH': ROOT}
  env.pop('XLA_FLAGS', None)  # The check forces its own CPU devices.
  done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
                        check=False)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  report = json.loads(out.read_text())

  assert report['ok'] and report['platform'] == 'cpu' and report['forced_cpu_devices'] == 2
  assert report['device_count'] == 2 and 'forced CPU devices' in report['note']
  assert report['kernels'] == 'cpu' and report['tensorflow_visible_gpus'] == 0
  assert 'JAX will run on' not in report['allocator']  # On the CPU glibc's settings apply.
  assert report['peak_tflops'] == 'unknown' and report['versions']['jax']
  tests = report['tests']
  assert (tests['ok'], tests['passed'], tests['failed'], tests['selected']) == (True, 1, 0, 1)

  rows = report['benchmark']['rows']
  assert [(r['dtype'], r['batch_size']) for r in rows] == [('float32', 4)]
  for row in rows:
    assert row['train_images_per_sec'] > 0 and row['infer_images_per_sec'] > 0
    assert row['train_mfu'] == 'unknown' and row['train_gflop_per_image'] > 0

  layouts = report['layouts']['rows']
  assert [(r['data'], r['model'], r['strategy']) for r in layouts] == [(1, 1, 'data'),
                                                                      (2, 1, 'data')]
  assert layouts[0]['bytes_per_device'] == 0 and layouts[0]['vs_one_device'] == 1.0
  assert layouts[1]['bytes_per_device'] > 0  # The gradient average.
  for row in layouts:
    assert row['images_per_sec'] > 0 and row['batch_size'] == 4 and row['mfu'] == 'unknown'

  pipeline = report['pipeline']
  assert pipeline['images_per_sec'] > 0 and pipeline['devices_fed'] == 1
  fastest = max(r['train_images_per_sec'] for r in rows)
  assert pipeline['needed_images_per_sec'] == pytest.approx(fastest)
  assert pipeline['pipeline_over_needed'] == pytest.approx(pipeline['images_per_sec'] / fastest)
  assert 'forced CPU devices' in done.stdout and 'all checks passed' in done.stdout


def test_layouts_are_parsed_and_a_typo_is_a_user_error():
  assert accelerator_check.parse_layout('4x2:hybrid') == (4, 2, 'hybrid')
  with pytest.raises(UserError, match='DATAxMODEL:STRATEGY'):
    accelerator_check.parse_layout('4,2 hybrid')


def test_a_failing_test_fails_the_check(tmp_path):
  """Only the tests section, with a selection that fails: exit 1, the failure named."""
  out = tmp_path / 'report.json'
  failing = tmp_path / 'failing_test.py'
  failing.write_text('def test_fails():\n  assert False\n')
  done = subprocess.run(
      [sys.executable, '-m', 'alexnet_jax.accelerator_check', f'--out={out}',
       '--config=configs/lenet5.py', '--sections=tests', f'--pytest_args={failing}'],
      cwd=ROOT, env={**os.environ, 'PYTHONPATH': ROOT}, capture_output=True, text=True,
      timeout=300, check=False)
  assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
  report = json.loads(out.read_text())
  assert not report['ok'] and report['tests']['failed'] == 1 and 'benchmark' not in report
  assert report['tests']['failed_tests'][0].endswith('test_fails')
  assert 'SOME CHECKS FAILED' in done.stdout
