"""JAX vs PyTorch on this machine, measured in the same run: one command, side-by-side ratios.

    PYTHONPATH=. python -m benchmarks.compare --batch_sizes=32,128 --rounds=3 --steps=3

For each batch size and each memory allocator (`--allocators`), a JAX worker process (fp32, and
bf16 unless --nobf16) and a PyTorch worker process (eager, channels_last, torch.compile) start
under that allocator, build and warm up their steps; then the driver asks them in turn for
`--steps` timed steps of one contender at a time, `--rounds` times, so load from other processes
on a shared machine falls on all contenders alike. Each contender's number is the median over
rounds of its per-round median step time. Both frameworks get the same allocator choices:

  system    glibc malloc with its defaults (ALEXNET_JAX_MALLOC=system)
  tuned     glibc malloc set to keep freed memory, what `import alexnet_jax` does by default
            (alexnet_jax/allocator.py); the PyTorch worker imports it too
  tcmalloc  gperftools' tcmalloc preloaded (LD_PRELOAD; Debian's libtcmalloc-minimal4), the
            allocator PyTorch's CPU performance guides recommend; skipped where it is missing

One allocator's two workers run at a time (all of them at once would not fit in memory), so
ratios within an allocator are side by side, and the closing "best of each" lines compare each
framework's fastest contender under any allocator. `--config` (configs/imagenet.py) and its
`--config.KEY=VALUE` overrides set the JAX side's model; PyTorch's is always the paper's, and a
closing note says so where the two differ. Needs requirements-torch.txt.
"""

import os
import sys

# Run as a script too (python benchmarks/compare.py): the repository root on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# First, so the allocator settings cover the worker's threads (alexnet_jax/allocator.py).
import alexnet_jax  # noqa: E402,F401  pylint: disable=unused-import,wrong-import-position

import copy  # noqa: E402
import ctypes.util  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
from typing import Any  # noqa: E402

from alexnet_jax import cli  # noqa: E402

from absl import app, flags  # noqa: E402

CEILING_GFLOPS = 400.0  # Stated fp32 peak of this machine's two cores.


def allocator_environment(allocator: str) -> dict[str, str] | None:
  """Environment variables that start a worker under `allocator`; None where it is missing."""
  if allocator == 'system':
    return {'ALEXNET_JAX_MALLOC': 'system', 'LD_PRELOAD': ''}
  if allocator == 'tuned':
    return {'ALEXNET_JAX_MALLOC': 'tuned', 'LD_PRELOAD': ''}
  if allocator == 'tcmalloc':
    library = ctypes.util.find_library('tcmalloc_minimal')  # gperftools' tcmalloc, e.g. .so.4
    return {'LD_PRELOAD': library} if library else None
  raise app.UsageError(f'--allocators: unknown allocator {allocator!r} '
                       '(one of system, tuned, tcmalloc)')


def _jax_contenders(names: list[str], batch_size: int) -> dict[str, Any]:
  from alexnet_jax import benchmark  # pylint: disable=import-outside-toplevel
  from alexnet_jax import onednn  # pylint: disable=import-outside-toplevel
  contenders = {}
  for name in names:
    config = copy.deepcopy(cli.config_value(example='configs/imagenet.py'))
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
  """Builds its contenders, reports compile times and the allocator, then times whichever
  contender it is sent."""
  from alexnet_jax import allocator  # pylint: disable=import-outside-toplevel
  build = _jax_contenders if _WORKER.value == 'jax' else _torch_contenders
  contenders = build(_CONTENDERS.value, _BATCH_SIZE.value)
  print(json.dumps({'compile_seconds': {name: c.compile_seconds for name, c in contenders.items()},
                    'parameters': {name: c.parameter_count for name, c in contenders.items()},
                    'allocator': allocator.status()}), flush=True)
  for line in sys.stdin:
    name, steps = line.split()
    bench = contenders[name]
    result = {'train': bench.time_train(int(steps)), 'infer': bench.time_infer(int(steps))}
    print(json.dumps(result), flush=True)


class _Worker:

  def __init__(self, kind: str, names: list[str], batch_size: int, env: dict[str, str]):
    argv = [sys.executable, '-m', 'benchmarks.compare', f'--worker={kind}',
            f'--batch_size={batch_size}', f'--contenders={",".join(names)}',
            *cli.forwarded_config_args()]
    self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                    env={**os.environ, **env})
    started = self._read()
    self.compile_seconds = started['compile_seconds']
    self.parameters = started['parameters']
    self.allocator_status = started['allocator']

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


def compare(batch_size: int, rounds: int, steps: int, allocator: str,
            env: dict[str, str]) -> list[dict[str, Any]]:
  """One allocator's rows: every contender timed side by side, in alternation."""
  from alexnet_jax import benchmark, data, registry  # pylint: disable=import-outside-toplevel
  from configs import imagenet  # pylint: disable=import-outside-toplevel
  flops_per_image = {
      # Each framework's model: the config's for JAX, always the paper's for PyTorch.
      framework: benchmark.training_flops_per_image(registry.create_model(config.model),
                                                    data.image_shape(config))
      for framework, config in (('jax', cli.config_value(example='configs/imagenet.py')),
                                ('torch', imagenet.get_config()))}
  jax_names = (['jax_fp32'] + (['jax_fp32_xla_convs'] if _XLA_CONVS.value else []) +
               (['jax_bf16'] if _BF16.value else []))
  torch_names = [f'torch_{mode}' for mode in _TORCH_MODES.value]
  # One worker at a time compiles, so compile times are not inflated by the other's.
  workers = {}
  for kind, names in (('jax', jax_names), ('torch', torch_names)):
    if names:
      worker = _Worker(kind, names, batch_size, env)
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
    gflops = flops_per_image[name.split('_')[0]] * batch_size / train / 1e9
    rows.append({'name': name, 'allocator': allocator, 'batch_size': batch_size,
                 'allocator_status': workers[name].allocator_status,
                 'compile_seconds': workers[name].compile_seconds[name],
                 'parameters': workers[name].parameters[name],
                 'train_images_per_sec': batch_size / train,
                 'infer_images_per_sec': batch_size / infer,
                 'gflops_per_sec': gflops, 'percent_of_ceiling': 100 * gflops / CEILING_GFLOPS})
  return rows


def add_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Each row's speed over the fastest PyTorch row of its batch size and allocator.

  Sets `train_vs_best_torch` and `infer_vs_best_torch` (None where no PyTorch mode ran). Every
  ratio divides by the fastest PyTorch row, whichever it is, so the PyTorch rows' own ratios are
  1 for the fastest and below 1 for the others.
  """
  for row in rows:
    torch_rows = [r for r in rows if r['name'].startswith('torch_') and
                  (r['batch_size'], r['allocator']) == (row['batch_size'], row['allocator'])]
    for phase in ('train', 'infer'):
      best = max((r[f'{phase}_images_per_sec'] for r in torch_rows), default=None)
      row[f'{phase}_vs_best_torch'] = row[f'{phase}_images_per_sec'] / best if best else None
  return rows


def best_of_each(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Per batch size and phase: the fastest JAX and the fastest PyTorch row under any allocator,
  and the fastest of each under the system allocator."""
  summary = []
  for batch_size in dict.fromkeys(r['batch_size'] for r in rows):
    for phase in ('train', 'infer'):
      key = f'{phase}_images_per_sec'
      for allocators in ('any', 'system'):
        best = {}
        for framework in ('jax', 'torch'):
          candidates = [r for r in rows if r['batch_size'] == batch_size and
                        r['name'].startswith(framework + '_') and
                        allocators in ('any', r['allocator'])]
          best[framework] = max(candidates, key=lambda r: r[key], default=None)
        if best['jax'] and best['torch']:
          summary.append({
              'batch_size': batch_size, 'phase': phase, 'allocators': allocators,
              'jax': f'{best["jax"]["name"]}@{best["jax"]["allocator"]}',
              'jax_images_per_sec': best['jax'][key],
              'torch': f'{best["torch"]["name"]}@{best["torch"]["allocator"]}',
              'torch_images_per_sec': best['torch'][key],
              'jax_over_torch': best['jax'][key] / best['torch'][key]})
  return summary


def different_models_note(rows: list[dict[str, Any]]) -> str | None:
  """A line saying so where the JAX rows time a model of another size than PyTorch's (the
  paper's, whatever --config says); None where they agree."""
  counts = {framework: sorted({r['parameters'] for r in rows
                               if r['name'].startswith(framework + '_')})
            for framework in ('jax', 'torch')}
  if not counts['jax'] or not counts['torch'] or counts['jax'] == counts['torch']:
    return None
  described = {framework: ', '.join(f'{n:,}' for n in numbers)
               for framework, numbers in counts.items()}
  return (f'note: the JAX model has {described["jax"]} parameters, PyTorch\'s {described["torch"]}: '
          'the ratios compare different models (PyTorch runs the paper\'s; '
          '--config=configs/imagenet.py compares like with like).')


def _ratio(value: float | None) -> str:
  return f'{value:.2f}' if value is not None else '-'


def format_rows(rows: list[dict[str, Any]]) -> str:
  header = (f'{"contender":<20}{"malloc":>9}{"batch":>6}{"train img/s":>12}{"x best torch":>13}'
            f'{"GFLOP/s":>9}{"% ceil":>8}{"infer img/s":>12}{"x best torch":>13}{"compile s":>10}')
  lines = [header]
  for r in rows:
    lines.append(f'{r["name"]:<20}{r["allocator"]:>9}{r["batch_size"]:>6}'
                 f'{r["train_images_per_sec"]:>12.1f}{_ratio(r["train_vs_best_torch"]):>13}'
                 f'{r["gflops_per_sec"]:>9.1f}{r["percent_of_ceiling"]:>8.1f}'
                 f'{r["infer_images_per_sec"]:>12.1f}{_ratio(r["infer_vs_best_torch"]):>13}'
                 f'{r["compile_seconds"]:>10.1f}')
  return '\n'.join(lines)


def format_summary(summary: list[dict[str, Any]]) -> str:
  lines = []
  for s in summary:
    lines.append(f'best of each, batch {s["batch_size"]} {s["phase"]:<5} ({s["allocators"]} '
                 f'allocator): {s["jax"]} {s["jax_images_per_sec"]:.1f} img/s vs {s["torch"]} '
                 f'{s["torch_images_per_sec"]:.1f} img/s = {s["jax_over_torch"]:.2f}x')
  return '\n'.join(lines)


def main(argv):
  del argv
  if _WORKER.value:
    _worker()
    return
  environments = {name: allocator_environment(name) for name in _ALLOCATORS.value}
  for name in [name for name, env in environments.items() if env is None]:
    print(f'note: allocator {name} skipped: libtcmalloc_minimal is not installed '
          '(Debian: apt-get install libtcmalloc-minimal4)', flush=True)
    del environments[name]
  rows = []
  for batch_size in _BATCH_SIZES.value:
    for allocator, env in environments.items():
      allocator_rows = add_ratios(compare(int(batch_size), _ROUNDS.value, _STEPS.value,
                                          allocator, env))
      print(format_rows(allocator_rows), flush=True)
      rows += allocator_rows
  summary = best_of_each(rows)
  note = different_models_note(rows)
  print(format_summary(summary) + (f'\n{note}' if note else ''), flush=True)
  if _JSON_OUT.value:
    with open(_JSON_OUT.value, 'w') as f:
      json.dump({'rows': rows, 'best_of_each': summary, 'note': note}, f, indent=1)


if __name__ == '__main__':
  # Flags only when run as a program, so tests can import the functions above.
  _BATCH_SIZES = flags.DEFINE_list('batch_sizes', ['32', '128'], 'Batch sizes to compare.')
  _ROUNDS = flags.DEFINE_integer('rounds', 3, 'Interleaved rounds over all contenders.')
  _STEPS = flags.DEFINE_integer('steps', 3, 'Timed steps per contender and round.')
  cli.define_config_flag('configs/imagenet.py', 'The JAX side\'s config; --config.KEY=VALUE '
                         'overrides a field. The PyTorch side is always the paper\'s model: '
                         'ratios compare like with like for configs/imagenet.py only.')
  _BF16 = flags.DEFINE_bool('bf16', True, 'Also time the JAX step with bfloat16 compute.')
  _XLA_CONVS = flags.DEFINE_bool('xla_convs', True, 'Also time the JAX fp32 step on XLA\'s own '
                                  'convolutions (the step without the oneDNN kernels).')
  _TORCH_MODES = flags.DEFINE_list('torch_modes', ['eager', 'channels_last', 'compile'],
                                   'PyTorch modes to time.')
  _ALLOCATORS = flags.DEFINE_list('allocators', ['tuned', 'tcmalloc', 'system'],
                                  'Memory allocators to run both frameworks under (see above).')
  _JSON_OUT = flags.DEFINE_string('json_out', None, 'Also write all results to this JSON file.')
  _WORKER = flags.DEFINE_enum('worker', None, ['jax', 'torch'], 'Internal: run as a worker.')
  _BATCH_SIZE = flags.DEFINE_integer('batch_size', None, 'Internal: the worker\'s batch size.')
  _CONTENDERS = flags.DEFINE_list('contenders', [], 'Internal: the worker\'s contenders.')
  cli.run(main, log_level='info')
