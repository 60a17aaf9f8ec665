"""JAX vs PyTorch on this machine, measured in the same run: one command, side-by-side ratios.

    PYTHONPATH=. python -m benchmarks.compare --batch_sizes=32,128 --rounds=3 --steps=3

For each batch size, a JAX worker process (fp32, and bf16 unless --nobf16) and a PyTorch worker
process (eager, channels_last, torch.compile) build and warm up their steps; then the driver asks
them in turn for `--steps` timed steps of one contender at a time, `--rounds` times, so load from
other processes on a shared machine falls on all contenders alike. Each contender's number is the
median over rounds of its per-round median step time. Needs requirements-torch.txt.
"""

import itertools
import json
import runpy
import statistics
import subprocess
import sys
from typing import Any

from absl import flags

from alexnet_jax import cli

_BATCH_SIZES = flags.DEFINE_list('batch_sizes', ['32', '128'], 'Batch sizes to compare.')
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Interleaved rounds over all contenders.')
_STEPS = flags.DEFINE_integer('steps', 3, 'Timed steps per contender and round.')
_CONFIG = flags.DEFINE_string('config', 'configs/imagenet.py', 'JAX model config.')
_BF16 = flags.DEFINE_bool('bf16', True, 'Also time the JAX step with bfloat16 compute.')
_XLA_CONVS = flags.DEFINE_bool('xla_convs', True, 'Also time the JAX fp32 step on XLA\'s own '
                                'convolutions (the step without the oneDNN kernels).')
_TORCH_MODES = flags.DEFINE_list('torch_modes', ['eager', 'channels_last', 'compile'],
                                 'PyTorch modes to time.')
_JSON_OUT = flags.DEFINE_string('json_out', None, 'Also write all results to this JSON file.')
_WORKER = flags.DEFINE_enum('worker', None, ['jax', 'torch'], 'Internal: run as a worker.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', None, 'Internal: the worker\'s batch size.')
_CONTENDERS = flags.DEFINE_list('contenders', [], 'Internal: the worker\'s contenders.')

CEILING_GFLOPS = 400.0  # Stated fp32 peak of this machine's two cores.


def _jax_contenders(names: list[str], batch_size: int) -> dict[str, Any]:
  from alexnet_jax import benchmark  # pylint: disable=import-outside-toplevel
  from alexnet_jax import onednn  # pylint: disable=import-outside-toplevel
  contenders = {}
  for name in names:
    config = runpy.run_path(_CONFIG.value)['get_config']()
    config.model.dtype = 'bfloat16' if name == 'jax_bf16' else 'float32'
    # jax_fp32_xla_convs: the same step with XLA's own convolution kernels, for the oneDNN gain.
    with onednn.enabled(name != 'jax_fp32_xla_convs'):
      contenders[name] = benchmark.Benchmark(config, batch_size)
  return contenders


def _torch_contenders(names: list[str], batch_size: int) -> dict[str, Any]:
  from benchmarks import torch_alexnet  # pylint: disable=import-outside-toplevel
  return {name: torch_alexnet.TorchBenchmark(name.removeprefix('torch_'), batch_size)
          for name in names}


def _worker() -> None:
  """Builds its contenders, reports compile times, then times whichever contender it is sent."""
  build = _jax_contenders if _WORKER.value == 'jax' else _torch_contenders
  contenders = build(_CONTENDERS.value, _BATCH_SIZE.value)
  print(json.dumps({name: c.compile_seconds for name, c in contenders.items()}), flush=True)
  for line in sys.stdin:
    name, steps = line.split()
    bench = contenders[name]
    result = {'train': bench.time_train(int(steps)), 'infer': bench.time_infer(int(steps))}
    print(json.dumps(result), flush=True)


class _Worker:

  def __init__(self, kind: str, names: list[str], batch_size: int):
    argv = [sys.executable, '-m', 'benchmarks.compare', f'--worker={kind}',
            f'--batch_size={batch_size}', f'--contenders={",".join(names)}',
            f'--config={_CONFIG.value}']
    self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    self.compile_seconds = self._read()

  def _read(self) -> dict[str, float]:
    line = self.process.stdout.readline()
    if not line:
      raise RuntimeError(f'benchmark worker {self.process.args} exited early')
    return json.loads(line)

  def time(self, name: str, steps: int) -> dict[str, float]:
    self.process.stdin.write(f'{name} {steps}\n')
    self.process.stdin.flush()
    return self._read()

  def close(self) -> None:
    self.process.stdin.close()
    self.process.wait()


def compare(batch_size: int, rounds: int, steps: int) -> list[dict[str, Any]]:
  from alexnet_jax import benchmark, models  # pylint: disable=import-outside-toplevel
  config = runpy.run_path(_CONFIG.value)['get_config']()
  size = config.input.image_size
  flops_per_image = benchmark.training_flops_per_image(models.create_model(config.model),
                                                       (size, size, 3))
  jax_names = (['jax_fp32'] + (['jax_fp32_xla_convs'] if _XLA_CONVS.value else []) +
               (['jax_bf16'] if _BF16.value else []))
  torch_names = [f'torch_{mode}' for mode in _TORCH_MODES.value]
  # One worker at a time compiles, so compile times are not inflated by the other's.
  workers = {}
  for kind, names in (('jax', jax_names), ('torch', torch_names)):
    worker = _Worker(kind, names, batch_size)
    workers.update({name: worker for name in names})
  # Alternate frameworks within each round: jax_fp32, torch_eager, jax_bf16, torch_...
  order = [n for pair in itertools.zip_longest(jax_names, torch_names) for n in pair if n]
  times = {name: {'train': [], 'infer': []} for name in order}
  for _ in range(rounds):
    for name in order:
      for phase, seconds in workers[name].time(name, steps).items():
        times[name][phase].append(seconds)
  for worker in set(workers.values()):
    worker.close()
  rows = []
  for name in order:
    train = statistics.median(times[name]['train'])
    infer = statistics.median(times[name]['infer'])
    gflops = flops_per_image * batch_size / train / 1e9
    rows.append({'name': name, 'batch_size': batch_size,
                 'compile_seconds': workers[name].compile_seconds[name],
                 'train_images_per_sec': batch_size / train,
                 'infer_images_per_sec': batch_size / infer,
                 'gflops_per_sec': gflops, 'percent_of_ceiling': 100 * gflops / CEILING_GFLOPS})
  best_train = max(r['train_images_per_sec'] for r in rows if r['name'].startswith('torch'))
  best_infer = max(r['infer_images_per_sec'] for r in rows if r['name'].startswith('torch'))
  for row in rows:
    row['train_vs_best_torch'] = row['train_images_per_sec'] / best_train
    row['infer_vs_best_torch'] = row['infer_images_per_sec'] / best_infer
  return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
  header = (f'{"contender":<20}{"batch":>6}{"train img/s":>12}{"x best torch":>13}'
            f'{"GFLOP/s":>9}{"% ceil":>8}{"infer img/s":>12}{"x best torch":>13}{"compile s":>10}')
  lines = [header]
  for r in rows:
    lines.append(f'{r["name"]:<20}{r["batch_size"]:>6}{r["train_images_per_sec"]:>12.1f}'
                 f'{r["train_vs_best_torch"]:>13.2f}{r["gflops_per_sec"]:>9.1f}'
                 f'{r["percent_of_ceiling"]:>8.1f}{r["infer_images_per_sec"]:>12.1f}'
                 f'{r["infer_vs_best_torch"]:>13.2f}{r["compile_seconds"]:>10.1f}')
  return '\n'.join(lines)


def main(argv):
  del argv
  if _WORKER.value:
    _worker()
    return
  rows = []
  for batch_size in _BATCH_SIZES.value:
    batch_rows = compare(int(batch_size), _ROUNDS.value, _STEPS.value)
    print(format_rows(batch_rows), flush=True)
    rows += batch_rows
  if _JSON_OUT.value:
    with open(_JSON_OUT.value, 'w') as f:
      json.dump(rows, f, indent=1)


if __name__ == '__main__':
  cli.run(main, log_level='info')
