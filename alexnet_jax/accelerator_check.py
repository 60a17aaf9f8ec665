"""One command that checks the repository on this machine's accelerator and writes one JSON report.

    python -m alexnet_jax.accelerator_check --out=accelerator_check.json

On a GPU or TPU host (about 5 minutes) it runs, each section recorded even when another fails:

  tests      `pytest -m accelerator` (the tests marked as meaningful on any backend: kernels
             against plain lax, the model, the mesh layouts the devices allow, a few training
             steps), in a subprocess, at full float32 matmul precision; pass/fail counts and the
             names of failures.
  benchmark  the paper model's training and inference step (`benchmark.Benchmark`) at batch 128
             and 256 in float32 and bfloat16: images/s, TFLOP/s and model FLOP utilisation (MFU)
             against the chip's dense peak (PEAKS; 'unknown' for a chip not in the table).
  layouts    the trainer's own step on every mesh layout the local devices allow (data
             parallelism over all of them; the paper's towers and the 2014 hybrid on 2, and with
             a data axis on 4 or more): images/s, ratio to one device, bytes communicated per
             device (from the compiled HLO), MFU.
  pipeline   the ImageNet input pipeline (configs/imagenet.py: decode, paper augmentation, PCA
             lighting) on fake ILSVRC tars of photo-sized JPEGs (`data.benchmark`), beside the
             images/s the host's devices would consume at the measured step speed.

On a CPU-only machine the same checks run on N forced CPU devices at small batch sizes, and the
report says so (`note`): the numbers show that every path runs, not what an accelerator does.

This process never starts a JAX backend. It runs one worker process (this module with
--worker_out) that measures, then pytest: a GPU's memory, or a TPU (which one process at a time can
open), is free for each in turn. Both get XLA_FLAGS=--xla_force_host_platform_device_count: that
flag shapes only the CPU backend, so on an accelerator host it changes nothing, while on a CPU-only
one it gives the layouts their devices. The worker hides GPUs from TensorFlow before JAX starts,
as every data pipeline does (TensorFlow only feeds data). Exit status: 0 when every section passed, 1 if not,
2 for a usage error.
"""

import copy
import dataclasses
import datetime
import functools
import json
import os
import pathlib
import platform as host_platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Sequence
from typing import Any

from absl import flags

from alexnet_jax import cli, data
from alexnet_jax.errors import UserError, exit_on_user_error

# JAX, TensorFlow and the model code are imported inside the worker's functions only: the parent
# process stays light and never touches an accelerator.

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTIONS = ('tests', 'benchmark', 'layouts', 'pipeline')
FORCE_DEVICES_FLAG = '--xla_force_host_platform_device_count'
TEST_CPU_DEVICES = 8  # What the tests expect on CPU (tests/conftest.py).


@dataclasses.dataclass(frozen=True)
class Peak:
  """Dense peak TFLOP/s of one JAX device, per compute dtype (None: no figure to trust)."""
  bfloat16: float | None
  # At JAX's default matmul precision, which lets XLA compute float32 products as TF32 on Ampere
  # and newer GPUs, as one bfloat16 pass on TPU, and in IEEE float32 on older GPUs
  # (https://docs.jax.dev/en/latest/201/precision.html).
  float32: float | None
  source: str


# device_kind pattern -> Peak; the first match wins, so the more specific names come first, and
# None marks a name with no figure here. NVIDIA's datasheets quote tensor-core rates "with
# sparsity": the dense rate is half. A JAX device is one chip on TPU v4 and later.
PEAKS: tuple[tuple[str, Peak | None], ...] = (
    (r'\bH100 PCIe', Peak(756.0, 378.0, 'nvidia.com/en-us/data-center/h100 (PCIe): BF16 1,513 '
                                        'and TF32 756 TFLOP/s with sparsity; FP32 51')),
    (r'\bH100 NVL', None),
    (r'\bH100\b', Peak(989.0, 494.5, 'nvidia.com/en-us/data-center/h100 (SXM): BF16 1,979 and '
                                     'TF32 989 TFLOP/s with sparsity; FP32 67')),
    (r'\bH200 NVL', None),
    (r'\bH200\b', Peak(989.0, 494.5, 'nvidia.com/en-us/data-center/h200 (SXM): BF16 1,979 and '
                                     'TF32 989 TFLOP/s with sparsity; FP32 67')),
    (r'\bA100\b', Peak(312.0, 156.0, 'nvidia.com/en-us/data-center/a100: BF16 312, TF32 156 '
                                     'TFLOP/s dense; FP32 19.5')),
    (r'\bV100-SXM', Peak(None, 15.7, 'nvidia.com/en-us/data-center/v100 (SXM2): FP32 15.7 '
                                     'TFLOP/s; no bfloat16 tensor cores, no TF32')),
    (r'\bV100-PCIE', Peak(None, 14.0, 'nvidia.com/en-us/data-center/v100 (PCIe): FP32 14 '
                                      'TFLOP/s; no bfloat16 tensor cores, no TF32')),
    (r'\bL4\b', Peak(121.0, 60.0, 'nvidia.com/en-us/data-center/l4: BF16 242 and TF32 120 '
                                  'TFLOP/s with sparsity; FP32 30.3')),
    (r'^TPU v4$', Peak(275.0, 275.0, 'cloud.google.com/tpu/docs/v4: 275 TFLOP/s bf16 per chip')),
    (r'^TPU v5 lite', Peak(197.0, 197.0, 'cloud.google.com/tpu/docs/v5e: 197 TFLOP/s bf16 per '
                                         'chip')),
    (r'^TPU v5p?$', Peak(459.0, 459.0, 'cloud.google.com/tpu/docs/v5p: 459 TFLOP/s bf16 per '
                                       'chip')),
    (r'^TPU v6(e| lite)', Peak(918.0, 918.0, 'cloud.google.com/tpu/docs/v6e: 918 TFLOP/s bf16 '
                                             'per chip')),
)


def peak_for(device_kind: str) -> Peak | None:
  """The PEAKS entry of a `jax.Device.device_kind`, or None when the chip is not in the table."""
  for pattern, peak in PEAKS:
    if re.search(pattern, device_kind):
      return peak
  return None


def mfu(tflops: float, peak: Peak | None, dtype: str, devices: int = 1) -> float | str:
  """Achieved / peak FLOP rate of `devices` chips as a fraction, or 'unknown'."""
  rate = getattr(peak, dtype, None) if peak else None
  return tflops / (rate * devices) if rate else 'unknown'


def local_layouts(devices: int, towers: int) -> list[tuple[int, int, str]]:
  """(data, model, strategy) of every mesh layout worth timing on `devices` local devices."""
  layouts = [(1, 1, 'data')]
  if devices >= 2:
    layouts.append((devices, 1, 'data'))
  if towers == 2 and devices >= 2:
    layouts += [(1, 2, 'towers'), (1, 2, 'hybrid')]
    if devices >= 4 and devices % 2 == 0:
      layouts += [(devices // 2, 2, 'towers'), (devices // 2, 2, 'hybrid')]
  return layouts


def _error(e: BaseException) -> str:
  """One exception as text: its type, message and the last frames of its traceback."""
  frames = ''.join(traceback.format_exception(e)[-3:])
  return f'{type(e).__name__}: {e}'[:2000] + '\n' + frames[-2000:]


# --- The worker: every measurement, in a process of its own. ---------------------------------


def _platform_info(config) -> dict[str, Any]:
  # pylint: disable=import-outside-toplevel
  import flax
  import jax
  import jaxlib
  import tensorflow as tf

  from alexnet_jax import allocator, onednn, parallel

  platform = jax.default_backend()
  kind = jax.devices()[0].device_kind
  peak = peak_for(kind)
  info = {
      'platform': platform,
      'device_kind': kind,
      'device_count': jax.device_count(),
      'local_device_count': jax.local_device_count(),
      'process_count': jax.process_count(),
      'host_cpu_cores': os.cpu_count(),
      'host': f'{host_platform.system()} {host_platform.machine()}',
      'forced_cpu_devices': jax.device_count() if platform == 'cpu' else None,
      'peak_tflops': dataclasses.asdict(peak) if peak else 'unknown',
      'kernels': parallel.platform_kernels(config.kernels),  # What config.kernels resolves to.
      'convolutions': onednn.status(),
      'allocator': allocator.status(),  # glibc's settings apply on the CPU only.
      'matmul_precision': str(jax.config.jax_default_matmul_precision or 'default'),
      'tensorflow_visible_gpus': len(tf.config.get_visible_devices('GPU')),
      'versions': {'python': host_platform.python_version(), 'jax': jax.__version__,
                   'jaxlib': jaxlib.__version__, 'flax': flax.__version__,
                   'tensorflow': tf.__version__},
  }
  if platform == 'cpu':
    info['note'] = (f'No GPU or TPU here: every number comes from {jax.device_count()} forced CPU '
                    f'devices sharing {os.cpu_count()} cores at small batch sizes. It shows that '
                    'each path runs, not how fast an accelerator is.')
  return info


def _benchmark_rows(config, batch_sizes: Sequence[int], dtypes: Sequence[str], steps: int,
                    warmup: int, peak: Peak | None, log: Callable[[str], None]) -> list[dict]:
  from alexnet_jax import benchmark  # pylint: disable=import-outside-toplevel

  rows = []
  for dtype in dtypes:
    for batch_size in batch_sizes:
      row: dict[str, Any] = {'dtype': dtype, 'batch_size': batch_size}
      try:
        dtype_config = copy.deepcopy(config)
        dtype_config.model.dtype = dtype
        bench = benchmark.Benchmark(dtype_config, batch_size, warmup)
        train_seconds, infer_seconds = bench.time_train(steps), bench.time_infer(steps)
        train_tflops = bench.flops_per_image * batch_size / train_seconds / 1e12
        infer_tflops = bench.flops_per_image / 3 * batch_size / infer_seconds / 1e12
        row.update({
            'train_images_per_sec': batch_size / train_seconds,
            'infer_images_per_sec': batch_size / infer_seconds,
            'train_seconds_per_step': train_seconds,
            'infer_seconds_per_step': infer_seconds,
            'compile_seconds': bench.compile_seconds,
            'train_gflop_per_image': bench.flops_per_image / 1e9,
            'train_tflops_per_sec': train_tflops,
            'train_mfu': mfu(train_tflops, peak, dtype),
            'infer_mfu': mfu(infer_tflops, peak, dtype),
            'steps': steps,
        })
        del bench
      except Exception as e:  # pylint: disable=broad-except  # E.g. out of memory: keep going.
        row['error'] = _error(e)
      log(f'benchmark {dtype} batch {batch_size}: ' + (
          f'train {row["train_images_per_sec"]:.1f} img/s, infer '
          f'{row["infer_images_per_sec"]:.1f} img/s' if 'error' not in row else 'FAILED'))
      rows.append(row)
  return rows


def parse_layout(text: str) -> tuple[int, int, str]:
  """'4x2:towers' -> (4, 2, 'towers')."""
  match = re.fullmatch(r'(\d+)x(\d+):(\w+)', text.strip())
  if not match:
    raise UserError(f'--layouts entry {text!r} is not DATAxMODEL:STRATEGY, e.g. 1x2:towers')
  return int(match.group(1)), int(match.group(2)), match.group(3)


def _layout_rows(config, layouts: Sequence[tuple[int, int, str]] | None, batch_size: int,
                 steps: int, peak: Peak | None, log: Callable[[str], None]) -> list[dict]:
  """Each layout compiled, warmed up and timed in turn (median of `steps` single steps)."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  # pylint: disable-next=import-outside-toplevel
  from alexnet_jax import benchmark, communication, parallel, registry

  devices = jax.device_count()
  batch_size = -(-batch_size // devices) * devices  # Splits over every layout's batch axes.
  rng = np.random.default_rng(0)
  shape = data.image_shape(config)
  images = rng.standard_normal((batch_size,) + shape, np.float32)
  labels = rng.integers(0, config.model.num_classes, batch_size, np.int32)
  flops_per_image = None
  rows = []
  towers = config.model.get('towers', 1)
  for data_axis, model_axis, strategy in layouts or local_layouts(devices, towers):
    row: dict[str, Any] = {'data': data_axis, 'model': model_axis, 'strategy': strategy,
                           'devices': data_axis * model_axis, 'batch_size': batch_size}
    try:
      start = time.perf_counter()
      compiled, mesh, init, shardings = benchmark.compile_layout_step(
          config, data_axis, model_axis, strategy, batch_size)
      row['compile_seconds'] = time.perf_counter() - start
      found = communication.collectives(compiled.as_text(), mesh.size)
      row['bytes_per_device'] = communication.total_operand_bytes(found)
      state = jax.jit(init, out_shardings=shardings)(jax.random.key(0))
      batch = jax.device_put({'image': images, 'label': labels}, parallel.batch_sharding(mesh))
      args = (np.float32(0.01), jax.random.key(1))
      state, sums = compiled(state, batch, *args)  # Warm-up.
      jax.block_until_ready(sums)
      times = []
      for _ in range(steps):
        start = time.perf_counter()
        state, sums = compiled(state, batch, *args)
        jax.block_until_ready(sums)
        times.append(time.perf_counter() - start)
      del state
      if flops_per_image is None:
        model = registry.create_model(config.model)
        flops_per_image = benchmark.training_flops_per_image(model, shape)
      median = statistics.median(times)
      tflops = flops_per_image * batch_size / median / 1e12
      row.update({'median_step_seconds': median, 'images_per_sec': batch_size / median,
                  'train_tflops_per_sec': tflops,
                  'mfu': mfu(tflops, peak, config.model.dtype, data_axis * model_axis),
                  'steps': steps})
    except Exception as e:  # pylint: disable=broad-except
      row['error'] = _error(e)
    log(f'layout {data_axis}x{model_axis} {strategy}: ' + (
        f'{row["images_per_sec"]:.1f} img/s' if 'error' not in row else 'FAILED'))
    rows.append(row)
  one_device = next((r['images_per_sec'] for r in rows if r['devices'] == 1 and
                     'images_per_sec' in r), None)
  for row in rows:
    if one_device and 'images_per_sec' in row:
      row['vs_one_device'] = row['images_per_sec'] / one_device
  return rows


def _pipeline_row(config, workdir: str, images_per_class: int, batches: int,
                  step_images_per_sec: float | None, devices_fed: int) -> dict[str, Any]:
  from alexnet_jax.data import benchmark as data_benchmark  # pylint: disable=import-outside-toplevel

  start = time.perf_counter()
  rate, rates = data_benchmark.pipeline_images_per_second(
      config, pathlib.Path(workdir), images_per_class, batches, 'paper')
  row = {'images_per_sec': rate, 'per_batch_median_images_per_sec': statistics.median(rates),
         'batches': batches, 'batch_size': config.batch_size, 'augmentation': 'paper',
         'train_images_per_class': images_per_class, 'workdir': workdir,
         'seconds': time.perf_counter() - start, 'host_cpu_cores': os.cpu_count(),
         'step_images_per_sec': step_images_per_sec, 'devices_fed': devices_fed}
  if step_images_per_sec:
    row['needed_images_per_sec'] = step_images_per_sec * devices_fed
    row['pipeline_over_needed'] = rate / row['needed_images_per_sec']
  return row


def run_worker(config, options: dict[str, Any], log: Callable[[str], None],
               save: Callable[[dict[str, Any]], None]) -> None:
  """Every section but the tests: the report's platform fields and section results, saved after
  each section (so a section that hangs past the time limit keeps the ones before it)."""
  data.keep_tensorflow_off_accelerators()  # Before TensorFlow or JAX touches a device.

  report = _platform_info(config)
  on_cpu = report['platform'] == 'cpu'
  peak = peak_for(report['device_kind'])
  batch_sizes = options['batch_sizes'] or ((8, 16) if on_cpu else (128, 256))
  steps = options['steps'] or (3 if on_cpu else 10)
  sections = options['sections']
  report['settings'] = {'batch_sizes': list(batch_sizes), 'dtypes': list(options['dtypes']),
                        'steps': steps, 'warmup': options['warmup'],
                        'config_batch_size': config.batch_size}
  log(f'{report["platform"]}: {report["device_count"]} x {report["device_kind"]}, kernels '
      f'{report["kernels"]}')
  save(report)
  if 'benchmark' in sections:
    rows = _benchmark_rows(config, batch_sizes, options['dtypes'], steps, options['warmup'],
                           peak, log)
    report['benchmark'] = {'ok': all('error' not in r for r in rows), 'rows': rows}
    save(report)
  if 'layouts' in sections:
    layout_batch = options['layout_batch'] or (max(batch_sizes) if on_cpu else config.batch_size)
    rows = _layout_rows(config, options['layouts'], layout_batch, steps, peak, log)
    report['layouts'] = {'ok': all('error' not in r for r in rows), 'rows': rows}
    save(report)
  if 'pipeline' in sections:
    trained = [r['train_images_per_sec'] for r in report.get('benchmark', {}).get('rows', ())
               if 'train_images_per_sec' in r]
    try:
      # Forced CPU devices share one host's cores: the step's rate is one device's.
      row = _pipeline_row(options['pipeline_config'], options['pipeline_workdir'], options['pipeline_images_per_class'],
                          options['pipeline_batches'], max(trained) if trained else None,
                          1 if on_cpu else report['local_device_count'])
      report['pipeline'] = {'ok': True, **row}
      log(f'input pipeline: {row["images_per_sec"]:.1f} img/s')
    except Exception as e:  # pylint: disable=broad-except
      report['pipeline'] = {'ok': False, 'error': _error(e)}
    save(report)


# --- The parent: the tests, the worker, the report. ------------------------------------------


def _environment(cpu_devices: int) -> dict[str, str]:
  env = dict(os.environ)
  xla_flags = env.get('XLA_FLAGS', '')
  if FORCE_DEVICES_FLAG not in xla_flags:
    env['XLA_FLAGS'] = f'{xla_flags} {FORCE_DEVICES_FLAG}={cpu_devices}'.strip()
  env['PYTHONPATH'] = os.pathsep.join(p for p in (ROOT, env.get('PYTHONPATH')) if p)
  env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  return env


def parse_junit(path: str) -> dict[str, Any]:
  """Counts and failed test ids from pytest's --junitxml file."""
  root = ElementTree.parse(path).getroot()
  suites = [root] if root.tag == 'testsuite' else list(root.iter('testsuite'))
  count = lambda key: sum(int(s.get(key, 0)) for s in suites)
  failed = [f'{case.get("classname")}::{case.get("name")}' for case in root.iter('testcase')
            if case.find('failure') is not None or case.find('error') is not None]
  selected, skipped = count('tests'), count('skipped')
  return {'selected': selected, 'failed': count('failures'), 'errors': count('errors'),
          'skipped': skipped, 'passed': selected - count('failures') - count('errors') - skipped,
          'failed_tests': failed}


def run_tests(pytest_args: str, timeout: float) -> dict[str, Any]:
  """The test subset in a pytest subprocess, at full float32 matmul precision (the tests compare
  numbers; on a GPU the default would be TF32, on a TPU one bfloat16 pass)."""
  env = _environment(TEST_CPU_DEVICES)
  env['JAX_DEFAULT_MATMUL_PRECISION'] = 'highest'
  # tests/conftest.py turns most of XLA's optimisations off unless told otherwise (it saves
  # compile time on the CPU); here the tests check the kernels users run.
  env['JAX_DISABLE_MOST_OPTIMIZATIONS'] = 'false'
  with tempfile.TemporaryDirectory() as tmp:
    junit = os.path.join(tmp, 'junit.xml')
    command = [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
               f'--junitxml={junit}', *shlex.split(pytest_args)]
    shown = shlex.join(['pytest', *shlex.split(pytest_args)])
    start = time.perf_counter()
    try:
      done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
      return {'ok': False, 'command': shown,
              'error': f'pytest ran over --tests_timeout={timeout:g} s'}
    result = {'command': shown,
              'returncode': done.returncode, 'seconds': time.perf_counter() - start,
              'summary': (done.stdout.strip().splitlines() or [''])[-1]}
    if os.path.exists(junit):
      result.update(parse_junit(junit))
    else:
      result['output_tail'] = (done.stdout + done.stderr)[-3000:]
  # pytest exits 5 when the selection holds no test: nothing was checked, so not a pass.
  result['ok'] = done.returncode == 0
  return result


def _write_json(path: str, value: Any) -> None:
  """Written whole, then renamed: a reader never sees half a file."""
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    json.dump(value, f, indent=1)
    f.write('\n')
  os.replace(path + '.tmp', path)


def _percent(value: Any) -> str:
  return f'{100 * value:.1f}%' if isinstance(value, float) else str(value)


def format_table(report: dict[str, Any]) -> str:
  """The report as a short text table."""
  lines = [f'accelerator check: {report.get("platform", "?")}, {report.get("device_count", "?")} '
           f'x {report.get("device_kind", "?")}, kernels {report.get("kernels", "?")}, '
           f'{report.get("seconds", 0):.0f} s']
  if report.get('note'):
    lines.append(f'NOTE: {report["note"]}')
  peak = report.get('peak_tflops')
  if isinstance(peak, dict):
    lines.append(f'peak TFLOP/s per device: bfloat16 {peak["bfloat16"]}, float32 {peak["float32"]}'
                 ' (at JAX\'s default precision)')
  tests = report.get('tests')
  if tests:
    counts = (f'{tests.get("passed", "?")} passed, {tests.get("failed", "?")} failed, '
              f'{tests.get("errors", "?")} errors, {tests.get("skipped", "?")} skipped'
              if 'selected' in tests else tests.get('error', tests.get('summary', '')))
    lines.append(f'tests ({tests.get("command", "")}): {counts}: '
                 f'{"ok" if tests["ok"] else "FAILED"}')
    lines += [f'  failed: {name}' for name in tests.get('failed_tests', [])]
  if report.get('benchmark'):
    lines.append('\nstep          batch  train img/s  infer img/s  train TFLOP/s  train MFU')
    for row in report['benchmark']['rows']:
      if 'error' in row:
        lines.append(f'{row["dtype"]:<12}  {row["batch_size"]:>5}  FAILED: '
                     f'{row["error"].splitlines()[0][:80]}')
        continue
      lines.append(f'{row["dtype"]:<12}  {row["batch_size"]:>5}  '
                   f'{row["train_images_per_sec"]:>11.1f}  {row["infer_images_per_sec"]:>11.1f}  '
                   f'{row["train_tflops_per_sec"]:>13.3f}  {_percent(row["train_mfu"]):>9}')
  if report.get('layouts'):
    lines.append('\nlayout (data x model)  devices  batch  img/s  vs 1 device  MB/device  MFU')
    for row in report['layouts']['rows']:
      name = f'{row["data"]} x {row["model"]} {row["strategy"]}'
      if 'error' in row:
        lines.append(f'{name:<22}  FAILED: {row["error"].splitlines()[0][:80]}')
        continue
      lines.append(f'{name:<22}  {row["devices"]:>7}  {row["batch_size"]:>5}  '
                   f'{row["images_per_sec"]:>5.1f}  {row.get("vs_one_device", 0):>11.2f}  '
                   f'{row["bytes_per_device"] / 1e6:>9.1f}  {_percent(row["mfu"])}')
  pipeline = report.get('pipeline')
  if pipeline:
    if 'error' in pipeline:
      lines.append(f'\ninput pipeline: FAILED: {pipeline["error"].splitlines()[0][:80]}')
    else:
      line = (f'\ninput pipeline: {pipeline["images_per_sec"]:.1f} img/s on '
              f'{pipeline["host_cpu_cores"]} cores (paper augmentation, batches of 128)')
      if pipeline.get('needed_images_per_sec'):
        line += (f'; the fastest step needs {pipeline["needed_images_per_sec"]:.1f} img/s for '
                 f'{pipeline["devices_fed"]} device(s): {pipeline["pipeline_over_needed"]:.2f}x')
      lines.append(line)
  for section in ('worker',):
    if report.get(section, {}).get('error'):
      lines.append(f'{section}: FAILED: {report[section]["error"][-500:]}')
  lines.append(f'\n{"all checks passed" if report.get("ok") else "SOME CHECKS FAILED"}; report: '
               f'{report.get("out", "")}')
  return '\n'.join(lines)


def _worker_command(args: Sequence[str], worker_out: str) -> list[str]:
  return [sys.executable, '-m', 'alexnet_jax.accelerator_check', *args,
          f'--worker_out={worker_out}']


def run_check(args: Sequence[str], options: dict[str, Any]) -> dict[str, Any]:
  """The worker, then the tests; returns the whole report (also written to options['out'])."""
  start = time.perf_counter()
  report: dict[str, Any] = {
      'command': shlex.join(['python', '-m', 'alexnet_jax.accelerator_check', *args]),
      'started': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'sections': list(options['sections']),
  }
  with tempfile.TemporaryDirectory() as tmp:
    worker_out = os.path.join(tmp, 'worker.json')
    try:
      done = subprocess.run(_worker_command(args, worker_out), env=_environment(
          options['cpu_devices']), timeout=options['worker_timeout'], check=False)
      if done.returncode != 0:
        report['worker'] = {'ok': False, 'error': f'the measuring process exited '
                                                  f'{done.returncode} (its output is above)'}
    except subprocess.TimeoutExpired:
      report['worker'] = {'ok': False, 'error': 'the measuring process ran over '
                                                f'--worker_timeout={options["worker_timeout"]:g} s'}
    if os.path.exists(worker_out):
      with open(worker_out, encoding='utf-8') as f:
        report.update(json.load(f))
  if 'tests' in options['sections']:
    report['tests'] = run_tests(options['pytest_args'], options['tests_timeout'])
  report['seconds'] = time.perf_counter() - start
  report['ok'] = all(report[s].get('ok', False) for s in (*SECTIONS, 'worker') if s in report) \
      and all(s in report for s in options['sections'])
  report['out'] = os.path.abspath(options['out'])
  _write_json(options['out'], report)
  return report


def main(argv: Sequence[str]) -> None:
  del argv  # cli.run refuses arguments.
  with exit_on_user_error():
    sections = tuple(_SECTIONS.value)
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
      raise UserError(f'--sections has {", ".join(unknown)}; choose from {", ".join(SECTIONS)}.')
    options = {
        'out': _OUT.value, 'sections': sections, 'dtypes': tuple(_DTYPES.value),
        'batch_sizes': tuple(int(b) for b in _BATCH_SIZES.value or ()), 'steps': _STEPS.value,
        'warmup': _WARMUP.value, 'layout_batch': _LAYOUT_BATCH.value,
        'layouts': [parse_layout(text) for text in _LAYOUTS.value or ()],
        'cpu_devices': _CPU_DEVICES.value, 'pytest_args': _PYTEST_ARGS.value,
        'tests_timeout': _TESTS_TIMEOUT.value, 'worker_timeout': _WORKER_TIMEOUT.value,
        'pipeline_workdir': _PIPELINE_WORKDIR.value or os.path.join(
            tempfile.gettempdir(), f'alexnet_jax_input_benchmark_{_PIPELINE_PER_CLASS.value}'),
        'pipeline_images_per_class': _PIPELINE_PER_CLASS.value,
        'pipeline_batches': _PIPELINE_BATCHES.value, 'pipeline_config': _PIPELINE_CONFIG.value,
    }
    bad_dtypes = sorted(set(options['dtypes']) - {'float32', 'bfloat16'})
    if bad_dtypes:
      raise UserError(f'--dtypes has {", ".join(bad_dtypes)}; choose float32 and/or bfloat16.')
    if _WORKER_OUT.value:
      started = time.perf_counter()
      log = lambda line: print(f'[accelerator_check {time.perf_counter() - started:6.1f} s] {line}',
                               file=sys.stderr, flush=True)
      run_worker(_CONFIG.value, options, log, functools.partial(_write_json, _WORKER_OUT.value))
      return
    report = run_check(sys.argv[1:], options)  # The worker gets the same flags.
    print(format_table(report))
    sys.exit(0 if report['ok'] else 1)


if __name__ == '__main__':
  # Flags only when run as a program, so tests can import this module.
  _CONFIG = cli.define_config_flag(os.path.join(ROOT, 'configs', 'imagenet.py'),
                                   'Model config (the paper by default).')
  _OUT = flags.DEFINE_string('out', 'accelerator_check.json', 'Where the JSON report goes.')
  _SECTIONS = flags.DEFINE_list('sections', list(SECTIONS), 'Which checks to run.')
  _BATCH_SIZES = flags.DEFINE_list('batch_sizes', None,
                                   'Benchmark batch sizes (default 128,256; on CPU 8,16).')
  _DTYPES = flags.DEFINE_list('dtypes', ['float32', 'bfloat16'], 'Compute dtypes to benchmark.')
  _STEPS = flags.DEFINE_integer('steps', None, 'Timed steps per benchmark and layout (median; '
                                'default 10, on CPU 3).')
  _WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed benchmark steps after compilation.')
  _LAYOUT_BATCH = flags.DEFINE_integer('layout_batch', None, 'Global batch of the layouts '
                                       '(default config.batch_size; on CPU the largest benchmark '
                                       'batch), rounded up to a multiple of the devices.')
  _LAYOUTS = flags.DEFINE_list('layouts', None, 'Mesh layouts to time, as DATAxMODEL:STRATEGY '
                               '(default: every one the local devices allow).')
  _CPU_DEVICES = flags.DEFINE_integer('cpu_devices', 8, 'Forced CPU devices where there is no '
                                      'accelerator.')
  _PYTEST_ARGS = flags.DEFINE_string('pytest_args', '-m accelerator', 'The test selection.')
  _TESTS_TIMEOUT = flags.DEFINE_float('tests_timeout', 600, 'Seconds before pytest is stopped.')
  _WORKER_TIMEOUT = flags.DEFINE_float('worker_timeout', 1200, 'Seconds before the measuring '
                                       'process is stopped.')
  # The input pipeline is always ImageNet's, whatever model --config measures.
  _PIPELINE_CONFIG = cli.define_config_flag(
      os.path.join(ROOT, 'configs', 'imagenet.py'), 'Config of the timed input pipeline (an '
      'ImageNet one: decode, augmentation, PCA lighting, its batch size).', name='pipeline_config')
  _PIPELINE_WORKDIR = flags.DEFINE_string('pipeline_workdir', None, 'Where the fake ILSVRC tars '
                                          'and their prepared TFDS copy go (kept for reruns).')
  _PIPELINE_PER_CLASS = flags.DEFINE_integer('pipeline_images_per_class', 160, 'Fake training '
                                             'JPEGs per class (8 classes).')
  _PIPELINE_BATCHES = flags.DEFINE_integer('pipeline_batches', 20, 'Timed input batches.')
  _WORKER_OUT = flags.DEFINE_string('worker_out', None, 'Internal: the measuring process writes '
                                    'its results here.')
  cli.run(main, log_level='info')
