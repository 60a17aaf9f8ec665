"""Where the whole JAX training step's time goes: a `jax.profiler` trace, summed by kind and layer.

    PYTHONPATH=. python -m benchmarks.profile_step --batch_size=32 [--steps=4] [--rows=30]

Compiles the trainer's step for the config (default: the paper model, configs/imagenet.py) as
`alexnet_jax.benchmark` does, traces `--steps` steps after warm-up, and sums the duration of every
executed HLO instruction per step, grouped by what it is (a oneDNN convolution call, a matrix
product, anything else XLA runs) and where it comes from (forward, backward, the rest of the step:
the SGD update, the non-finite guard), read from the instruction's `op_name` metadata.
XLA:CPU runs independent instructions concurrently, so the sums can exceed the step's wall time;
on a loaded machine every duration stretches, so read the shares, not the milliseconds.
Unlike benchmarks/profile_layers.py, nothing is timed out of the step's context.
"""

import collections
import glob
import gzip
import json
import re
import tempfile

import jax
from absl import flags

from alexnet_jax import benchmark, cli

cli.define_config_flag('configs/imagenet.py', 'Model config.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 32, 'Images per step.')
_STEPS = flags.DEFINE_integer('steps', 4, 'Traced steps (after two warm-up steps).')
_ROWS = flags.DEFINE_integer('rows', 30, 'Rows of the (kind, pass, layer) table.')

_LAYER = re.compile(r'(conv\d|fc\d|lrn|max_pool|dropout)')


def instruction_names(hlo_text: str) -> dict[str, str]:
  """HLO instruction name -> its op_name metadata (the JAX operation it came from), followed by
  '/' and the custom-call target for a call into a library (its kind: convolution, max-pool or
  LRN; oneDNN's max-pools carry no layer name of their own)."""
  found = re.finditer(r'^\s+%(\S+) = (?:.*?custom_call_target="([^"]*)")?.*?op_name="([^"]*)"',
                      hlo_text, re.M)
  return {m.group(1): m.group(3) + (f'/{m.group(2)}' if m.group(2) else '') for m in found}


def category(instruction: str, op_name: str) -> tuple[str, str, str]:
  """(kind, pass, layer) of one executed instruction."""
  if instruction.startswith('ffi_call') or 'custom_call' in instruction:
    target = op_name.rsplit('/', 1)[-1]
    kind = ('oneDNN max-pool' if 'max_pool' in target else 'oneDNN LRN' if '_lrn_' in target
            else 'oneDNN conv')
  elif instruction.startswith(('dot', 'ynn')):
    kind = 'matmul'
  else:
    kind = 'other'
  step_pass = 'backward' if 'transpose(' in op_name else 'forward' if 'jvp(' in op_name else 'step'
  layer = _LAYER.search(op_name)
  return kind, step_pass, layer.group(1) if layer else op_name.rsplit('/', 1)[-1][:32]


def trace_totals(events: list[dict], names: dict[str, str], steps: int) -> collections.Counter:
  """Milliseconds per step of each (kind, pass, layer), from Chrome-trace events."""
  totals = collections.Counter()
  for event in events:
    name = event.get('name', '')
    if event.get('ph') == 'X' and (name in names or name.startswith('ffi_call')):
      totals[category(name, names.get(name, ''))] += event['dur'] / 1e3 / steps
  return totals


def main(argv):
  del argv
  bench = benchmark.Benchmark(cli.config_value(), _BATCH_SIZE.value, warmup=2)
  names = instruction_names(bench._train.as_text())  # pylint: disable=protected-access
  with tempfile.TemporaryDirectory() as directory:
    with jax.profiler.trace(directory, create_perfetto_trace=True):
      for _ in range(_STEPS.value):
        jax.block_until_ready(bench._run_train())  # pylint: disable=protected-access
    (path,) = glob.glob(f'{directory}/**/*perfetto_trace.json.gz', recursive=True)
    with gzip.open(path) as f:
      events = json.load(f)
  events = events['traceEvents'] if isinstance(events, dict) else events
  totals = trace_totals(events, names, _STEPS.value)
  everything = sum(totals.values())
  print(f'batch {_BATCH_SIZE.value}: instructions sum to {everything:.0f} ms per step\n')
  print('| kind | pass | ms per step | share |\n|---|---|---|---|')
  by_kind = collections.Counter()
  for (kind, step_pass, _), ms in totals.items():
    by_kind[(kind, step_pass)] += ms
  for (kind, step_pass), ms in by_kind.most_common():
    print(f'| {kind} | {step_pass} | {ms:.0f} | {ms / everything:.0%} |')
  print('\n| kind | pass | layer or op | ms per step | share |\n|---|---|---|---|---|')
  for (kind, step_pass, layer), ms in totals.most_common(_ROWS.value):
    print(f'| {kind} | {step_pass} | {layer} | {ms:.0f} | {ms / everything:.0%} |')


if __name__ == '__main__':
  cli.run(main, log_level='info')
