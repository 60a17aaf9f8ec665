"""Measures the parallel layouts for docs/parallelism.md; prints two markdown tables.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 PYTHONPATH=. \
        python tools/parallel_report.py [--steps=9] [--only_times]

1. Bytes communicated per train step and device, read from the compiled HLO of the paper's
   ImageNet model (configs/imagenet.py, batch 128, 227x227), next to what the paper's two-GPU
   scheme needs at its four communication points (computed here from the layer shapes).
2. Train-step time of the default (Fashion-MNIST) config on each mesh, as a ratio to one device,
   on oneDNN's and on XLA's convolutions, all in this one process. The forced CPU devices share the machine's cores: this shows the
   overhead of a layout, not a speed-up.
"""

import os
import statistics
import sys
import time

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from alexnet_jax import benchmark, cli, communication, models, onednn, parallel, registry  # noqa: E402
from configs import default, imagenet  # noqa: E402

_STEPS = flags.DEFINE_integer('steps', 9, 'Timed rounds (after one warm-up round).')
_SKIP_BYTES = flags.DEFINE_bool('only_times', False, 'Only the step-time table.')

# (data, model, strategy)
LAYOUTS = [(1, 1, 'data'), (2, 1, 'data'), (1, 2, 'towers'), (1, 2, 'hybrid'), (8, 1, 'data'),
           (4, 2, 'towers'), (4, 2, 'hybrid')]
MB = 1e6


def _paper_bytes(config) -> tuple[float, float]:
  """(forward, backward) operand bytes per GPU at the paper's points, from the layer shapes."""
  model = registry.create_model(config.model)
  size = config.input.image_size
  _, variables = jax.eval_shape(lambda: model.init_with_output(
      jax.random.key(0), jnp.zeros((config.batch_size, size, size, 3)),
      capture_intermediates=True))
  out = {k: v['__call__'][0] for k, v in variables['intermediates'].items() if k != '__call__'}
  batch, window, stride = config.batch_size, *models.POOLINGS[config.model.pooling]
  pooled = lambda n: (n - window) // stride + 1
  conv2, conv5, fc6 = out['conv2'][0].shape, out['conv5'][0].shape, out['fc6'][0].shape
  # Per tower: pool2 output (conv3's input), pool5 output (fc6's), fc6 output (fc7's).
  halves = [batch * pooled(conv2[1]) * pooled(conv2[2]) * conv2[3],
            batch * pooled(conv5[1]) * pooled(conv5[2]) * conv5[3],
            batch * fc6[1]]
  logits = batch * config.model.num_classes
  # Forward: send my half of each (all-gather) and my partial logits (all-reduce). Backward: the
  # gradient of the whole gathered input goes back (reduce-scatter), nothing for the logits.
  forward = 4 * (sum(halves) + logits)
  backward = 4 * 2 * sum(halves)
  return forward, backward


def bytes_table() -> str:
  config = imagenet.get_config()
  rows = ['| mesh (data x model) | strategy | activations, forward | activations, backward | '
          'gradients and metrics | total per device |', '|---|---|---|---|---|---|']
  for layout in LAYOUTS:
    compiled, mesh, _, _ = benchmark.compile_layout_step(config, *layout)
    found = communication.collectives(compiled.as_text(), mesh.size)
    fwd = sum(c.operand_bytes for c in found if c.exchanges_activations and c.forward)
    bwd = sum(c.operand_bytes for c in found if c.exchanges_activations and not c.forward)
    rest = communication.total_operand_bytes(found) - fwd - bwd
    data, model_axis, strategy = layout
    rows.append(f'| {data} x {model_axis} | {strategy} | {fwd / MB:.2f} MB | {bwd / MB:.2f} MB | '
                f'{rest / MB:.1f} MB | {(fwd + bwd + rest) / MB:.1f} MB |')
  fwd, bwd = _paper_bytes(config)
  rows.append(f'| paper, 2 GPUs (computed) | towers | {fwd / MB:.2f} MB | {bwd / MB:.2f} MB | '
              f'0 | {(fwd + bwd) / MB:.1f} MB |')
  return '\n'.join(rows)


def time_table(steps: int) -> str:
  """Layouts timed round-robin, one step each per round, so they share the machine's load.

  Where oneDNN's convolutions are built, each layout runs twice, on them and on XLA's own
  convolutions (`onednn.enabled(False)`), and the table gives the ratio of the two.
  """
  config = default.get_config()
  rng = np.random.default_rng(0)
  size = config.input.image_size
  batch = {'image': rng.normal(size=(config.batch_size, size, size, 1)).astype(np.float32),
           'label': (np.arange(config.batch_size) % 10).astype(np.int32)}
  kernels = ['onednn', 'xla'] if onednn.available() else ['xla']
  runs = []
  for layout in LAYOUTS:
    for kernel in kernels:
      with onednn.enabled(kernel == 'onednn'):
        compiled, mesh, init, shardings = benchmark.compile_layout_step(config, *layout)
      state = jax.jit(init, out_shardings=shardings)(jax.random.key(0))
      runs.append({'step': compiled, 'state': state, 'times': [], 'layout': layout,
                   'kernel': kernel, 'batch': jax.device_put(batch, parallel.batch_sharding(mesh))})
  for round_index in range(steps + 1):  # Round 0 warms up.
    for run in runs:
      start = time.perf_counter()
      run['state'], sums = run['step'](run['state'], run['batch'], np.float32(0.01),
                                       jax.random.key(1))
      jax.block_until_ready(sums)
      if round_index:
        run['times'].append(time.perf_counter() - start)
  medians = {(tuple(run['layout']), run['kernel']): statistics.median(run['times'])
             for run in runs}
  header = '| mesh (data x model) | strategy | devices |'
  for kernel in kernels:
    header += f' {kernel} convs: median step | vs 1 device |'
  rows = [header + (' oneDNN / XLA |' if len(kernels) == 2 else ''),
          '|---|---|---|' + '---|---|' * len(kernels) + ('---|' if len(kernels) == 2 else '')]
  for layout in LAYOUTS:
    data, model_axis, strategy = layout
    row = f'| {data} x {model_axis} | {strategy} | {data * model_axis} |'
    for kernel in kernels:
      median = medians[(layout, kernel)]
      row += f' {median:.3f} s | {median / medians[(LAYOUTS[0], kernel)]:.2f} |'
    if len(kernels) == 2:
      row += f' {medians[(layout, "onednn")] / medians[(layout, "xla")]:.2f} |'
    rows.append(row)
  return '\n'.join(rows)


def main(argv):
  del argv
  print(f'jax {jax.__version__}, {jax.device_count()} devices, {os.cpu_count()} CPU cores\n')
  if _SKIP_BYTES.value:
    return print(time_table(_STEPS.value))
  print('Bytes per train step and device (sum of collective operand sizes, compiled HLO, '
        'configs/imagenet.py, batch 128):\n')
  print(bytes_table())
  print(f'\nTrain-step time, configs/default.py (batch 128, 99x99), median of {_STEPS.value} '
        'round-robin rounds:\n')
  print(time_table(_STEPS.value))


if __name__ == '__main__':
  cli.run(main, log_level='info')
