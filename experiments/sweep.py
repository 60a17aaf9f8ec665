"""Runs a sweep of experiments/sweeps.py and writes its tables and figures.

    python experiments/sweep.py --sweep=ablations --base_config=configs/default.py --workdir=DIR
    python experiments/sweep.py --sweep=fig1 --base_config=configs/default.py --workdir=DIR
    python experiments/sweep.py --sweep=ablations --workdir=/tmp/quick --quick   # six tiny runs

Each variant x seed trains in DIR/<variant>/seed<k> through alexnet_jax.train.train_and_evaluate,
by default in a child process so that a crash or out-of-memory in one variant cannot take down the
sweep. Finished runs are skipped (rerun the same command to resume; an interrupted run resumes from
its checkpoint), a failed run is reported in the table and the sweep goes on. SIGTERM or Ctrl-C
stops the run in progress at a step boundary with a checkpoint (as run.py does) and ends the
sweep. The results are DIR/results.md, results.csv, results.json and one PNG per ablation.
`--base_config.KEY=VALUE` overrides any field of the base config, as `--config.KEY` does for
run.py.
"""

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ml_collections  # noqa: E402
from absl import flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from alexnet_jax import cli, preemption, registry  # noqa: E402
from alexnet_jax.errors import UserError  # noqa: E402
from experiments import report, sweeps  # noqa: E402

FLAGS = flags.FLAGS
_SWEEP = flags.DEFINE_enum('sweep', 'ablations', list(sweeps.SWEEPS), 'Which sweep to run.')
_BASE = cli.define_config_flag('configs/default.py', 'Config every variant starts from.',
                               name='base_config')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for the runs, tables and figures.')
_SEEDS = flags.DEFINE_integer('seeds', None, 'Seeds per variant (default: the sweep\'s).')
_QUICK = flags.DEFINE_bool('quick', False, 'A tiny net for a few steps: exercises the runner.')
_VARIANTS = flags.DEFINE_list('variants', None, 'Run only these variants (default: all).')
_ISOLATION = flags.DEFINE_enum('isolation', 'subprocess', ['subprocess', 'inprocess'],
                               'Train each run in a child process, or in this one.')
_REPORT_ONLY = flags.DEFINE_bool('report_only', False, 'Write tables and figures; train nothing.')
_ONLY_RUN = flags.DEFINE_string('only_run', None, 'Internal: VARIANT:SEED_INDEX, used by the '
                                'parent to start one run in a child process.')
_TUNING = flags.DEFINE_bool('tuning', False, 'Internal: --only_run names a tuning run.')

MARKER = 'sweep_run.json'  # Written by the runner after a run finished or failed.
INTERRUPTED_EXIT = 3  # A child's exit status after a graceful stop (its run is not done).


class Interrupted(Exception):
  """SIGTERM/SIGINT stopped the run in progress at a step boundary; its checkpoint is saved and
  it has no marker, so the next invocation resumes it."""


class ChildStop(preemption.StopRequest):
  """preemption.STOP for the parent of child runs: the first SIGTERM/SIGINT is also passed on to
  the running child as one SIGTERM (the child is in its own session, so a terminal's Ctrl-C
  reaches only the parent; a second signal would kill it before it saves)."""

  def __init__(self):
    super().__init__()
    self.child: subprocess.Popen | None = None

  def _one_process(self) -> bool:
    # Never part of a jax.distributed run. Asking JAX would start its backend in this process:
    # on a GPU, a context and (JAX's default) most of the memory the child needs.
    return True

  def _handle(self, signum: int, frame: Any) -> None:
    super()._handle(signum, frame)
    if self.child is not None and self.child.poll() is None:
      self.child.send_signal(signal.SIGTERM)


CHILD_STOP = ChildStop()  # Entered by main() around a sweep of child processes.


def budgeted_base(sweep: sweeps.Sweep, base: ml_collections.ConfigDict, flag_name: str,
                  quick: bool) -> ml_collections.ConfigDict:
  """The base config with the sweep's budget; command-line overrides of the base still win."""
  budget = sweeps.QUICK_BUDGET if quick else sweep.budgets.get(base.dataset, {})
  if not budget:
    return base
  budgeted = registry.apply_overrides(base, budget)
  command_line = config_flags.get_override_values(FLAGS[flag_name])
  return registry.apply_overrides(budgeted, _flatten(command_line))


def _flatten(tree: dict[str, Any], prefix: str = '') -> dict[str, Any]:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


def run_dir(workdir: str, variant: str, seed_index: int) -> str:
  return os.path.join(workdir, variant, f'seed{seed_index}')


def read_marker(directory: str) -> dict[str, Any] | None:
  """The run's marker; None without one, or with a damaged one (the run is then done again,
  resuming from its checkpoint, and writes a new marker)."""
  path = os.path.join(directory, MARKER)
  if not os.path.exists(path):
    return None
  try:
    with open(path, encoding='utf-8') as f:
      marker = json.load(f)
  except (ValueError, OSError) as e:  # JSONDecodeError, UnicodeDecodeError, unreadable.
    logging.warning('%s is damaged (%s); the run counts as not done.', path, e)
    return None
  return marker if isinstance(marker, dict) and 'status' in marker else None


def _write_marker(directory: str, marker: dict[str, Any]) -> None:
  os.makedirs(directory, exist_ok=True)
  temporary = os.path.join(directory, MARKER + '.tmp')
  with open(temporary, 'w', encoding='utf-8') as f:
    json.dump(marker, f, indent=2)
  os.replace(temporary, os.path.join(directory, MARKER))  # Never a half-written marker.


def _config_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
  return json.loads(config.to_json_best_effort())


def is_finished(directory: str, config: ml_collections.ConfigDict) -> bool:
  """True when this run finished before; raises if it finished with a different config."""
  marker = read_marker(directory)
  if marker is None or marker['status'] != 'finished':
    return False
  if marker['config'] != _config_json(config):
    raise UserError(f'{directory} holds a finished run of a different config (the sweep '
                    'definition, budget or overrides changed); use a new --workdir or delete it.')
  return True


def _cpu_seconds(who: int) -> float:
  """User + system CPU time of this process (RUSAGE_SELF) or its waited-for children."""
  usage = resource.getrusage(who)
  return usage.ru_utime + usage.ru_stime


def train_in_process(config: ml_collections.ConfigDict, directory: str) -> dict[str, Any]:
  """Trains one run here; any exception becomes a 'failed' marker so the sweep can go on.

  Raises Interrupted (and writes no marker) when preemption.STOP, entered by the caller, stopped
  the run early.
  """
  from alexnet_jax import train  # Imported late: the parent of child processes never needs it.
  start, cpu_start = time.perf_counter(), _cpu_seconds(resource.RUSAGE_SELF)
  try:
    train.train_and_evaluate(config, directory)
    if preemption.STOP.received:  # It returned at a step boundary with a checkpoint: not done.
      raise Interrupted(f'{preemption.STOP.signal_name} stopped the run in {directory}')
    marker = {'status': 'finished'}
  except Interrupted:
    raise
  except Exception as e:  # pylint: disable=broad-except
    logging.exception('run in %s failed', directory)
    marker = {'status': 'failed', 'error': f'{type(e).__name__}: {e}'.splitlines()[0][:300]}
  # CPU time beside wall time: on a shared machine the wall time says more about the others.
  marker.update(wall_s=time.perf_counter() - start,
                cpu_s=_cpu_seconds(resource.RUSAGE_SELF) - cpu_start, config=_config_json(config))
  _write_marker(directory, marker)
  return marker


def train_in_child(config: ml_collections.ConfigDict, directory: str, variant: str,
                   seed_index: int, child_flags: Sequence[str]) -> dict[str, Any]:
  """Trains one run in a child process that rebuilds the same config from `child_flags` (this
  command's --sweep, --workdir, --quick and --base_config arguments)."""
  if CHILD_STOP.signal_name:  # Asked to stop between two runs: start no other.
    raise Interrupted(f'{CHILD_STOP.signal_name} stopped the sweep before the run in {directory}')
  os.makedirs(directory, exist_ok=True)
  command = [sys.executable, os.path.abspath(__file__), *child_flags,
             f'--only_run={variant}:{seed_index}', '--isolation=inprocess']
  start, cpu_start = time.perf_counter(), _cpu_seconds(resource.RUSAGE_CHILDREN)
  with open(os.path.join(directory, 'log.txt'), 'a', encoding='utf-8') as log:
    child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
    CHILD_STOP.child = child
    try:
      returncode = child.wait()
    finally:
      CHILD_STOP.child = None
  if CHILD_STOP.signal_name or returncode == INTERRUPTED_EXIT:
    raise Interrupted(f'{CHILD_STOP.signal_name or "a signal"} stopped the run in {directory} '
                      f'(child exit status {returncode})')
  marker = read_marker(directory)
  if marker is not None:  # The whole child, start-up included, as its parent saw it.
    marker.update(wall_s=time.perf_counter() - start,
                  cpu_s=_cpu_seconds(resource.RUSAGE_CHILDREN) - cpu_start)
  if marker is None or (returncode != 0 and marker['status'] == 'finished'):
    # The child died before writing its marker (a crash, or killed for memory).
    marker = {'status': 'failed', 'error': f'child process exited with status {returncode}; '
                                           f'see {os.path.join(directory, "log.txt")}',
              'wall_s': time.perf_counter() - start,
              'cpu_s': _cpu_seconds(resource.RUSAGE_CHILDREN) - cpu_start,
              'config': _config_json(config)}
  _write_marker(directory, marker)
  return marker


def child_run(sweep: sweeps.Sweep, base: ml_collections.ConfigDict, workdir: str, only_run: str,
              tuning: bool) -> tuple[ml_collections.ConfigDict, str]:
  """(config, run directory) of the run a child process is started for (`train_in_child`'s
  --only_run=VARIANT:SEED_INDEX and --tuning), planned as the parent planned it."""
  variant, seed_index = only_run.rsplit(':', 1)
  root, run_base = workdir, base
  if tuning:
    root, run_base = os.path.join(workdir, TUNING_DIR), tuning_config(sweep, base)
  [(_, _, config)] = [r for r in plan(sweep, run_base, int(seed_index) + 1, [variant])
                      if r[1] == int(seed_index)]
  return config, run_dir(root, variant, int(seed_index))


def plan(sweep: sweeps.Sweep, base: ml_collections.ConfigDict, seeds: int,
         only: Sequence[str] | None = None) -> list[tuple[str, int, ml_collections.ConfigDict]]:
  """(variant, seed index, config) for every run of the sweep on the base config's data set."""
  variants = sweeps.unique_variants(sweep, base.dataset)
  if only:
    unknown = sorted(set(only) - set(variants))
    if unknown:
      raise UserError(f'--variants: {unknown} not in sweep {sweep.name!r} on {base.dataset}; '
                      f'choose from {sorted(variants)}.')
    variants = {name: overrides for name, overrides in variants.items() if name in only}
  configs = {name: registry.apply_overrides(base, sweeps.resolve(overrides, base))
             for name, overrides in variants.items()}
  # Seed by seed: a sweep stopped part-way has every variant at the same number of seeds.
  return [(name, seed_index, registry.apply_overrides(config, {'seed': base.seed + seed_index}))
          for seed_index in range(seeds) for name, config in configs.items()]


def run_sweep(sweep: sweeps.Sweep, base: ml_collections.ConfigDict, workdir: str, seeds: int, *,
              isolation: str = 'inprocess', child_flags: Sequence[str] = (),
              only: Sequence[str] | None = None, train_runs: bool = True,
              command: str = '') -> report.Results:
  """Trains every unfinished run, then writes the tables and figures; returns the results."""
  for ablation in sweep.ablations:
    if not ablation.applies_to(base.dataset):
      logging.warning('ablation %s does not apply to %s: %s', ablation.name, base.dataset,
                      ablation.not_applicable)
  runs = plan(sweep, base, seeds, only)

  def train_all(selected, root):
    for i, (variant, seed_index, config) in enumerate(selected):
      directory = run_dir(root, variant, seed_index)
      label = f'[{i + 1}/{len(selected)}] {variant} seed {seed_index}'
      if is_finished(directory, config):
        logging.info('%s: finished before, skipped', label)
        continue
      if not train_runs:
        continue
      logging.info('%s: training in %s', label, directory)
      if isolation == 'subprocess':
        marker = train_in_child(config, directory, variant, seed_index,
                                [*child_flags, f'--tuning={root != workdir}'])
      else:
        marker = train_in_process(config, directory)
      logging.info('%s: %s in %.0f s%s', label, marker['status'], marker['wall_s'],
                   f' ({marker["error"]})' if marker['status'] == 'failed' else '')

  with _data_decoded_once(train_runs and isolation == 'inprocess'):
    if base.dataset in sweep.tuning:  # Fig. 1: a short run per learning rate, then the chosen.
      tuning_dir = os.path.join(workdir, TUNING_DIR)
      tuning_base = tuning_config(sweep, base)
      tuning_runs = plan(sweep, tuning_base, 1, only)
      train_all(tuning_runs, tuning_dir)
      tuned = report.collect(sweep, tuning_base, tuning_dir, 1, tuning_runs)
      report.write_all(tuned, tuning_dir, command, note=(
          'Tuning runs: every learning rate, the first seed, '
          f'{_overrides_text(sweep.tuning[base.dataset])}; '
          'the one with the first crossing (else the lowest final training error) per activation '
          'trains every seed in [the sweep](../results.md).'))
      chosen = {variant for ablation in sweep.ablations if ablation.applies_to(base.dataset)
                for variant in report.fig1_choice(tuned, ablation).values()}
      logging.info('Chosen in %s: %s', tuning_dir, ', '.join(sorted(chosen)))
      runs = [run for run in runs if run[0] in chosen]
    train_all(runs, workdir)
  results = report.collect(sweep, base, workdir, seeds, runs)
  note = ('Learning rates chosen on short runs of the whole grid: [tuning/results.md]'
          '(tuning/results.md).' if base.dataset in sweep.tuning else '')
  report.write_all(results, workdir, command, note)
  return results


def _data_decoded_once(active: bool) -> contextlib.AbstractContextManager:
  """Runs trained in this process share each data split, decoded once (~3 s per Fashion-MNIST
  run otherwise). The parent of child processes gets a no-op: it never imports TensorFlow."""
  if not active:
    return contextlib.nullcontext()
  from alexnet_jax.data import prepared  # pylint: disable=import-outside-toplevel
  return prepared.splits_kept_in_memory()


def _overrides_text(overrides: sweeps.Overrides) -> str:
  return ', '.join(f'{key}={value}' for key, value in overrides.items())


TUNING_DIR = 'tuning'  # Fig. 1's short runs per learning rate, under the sweep's --workdir.


def tuning_config(sweep: sweeps.Sweep,
                  base: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The base config of the sweep's tuning runs on the base's data set."""
  return registry.apply_overrides(base, sweep.tuning[base.dataset])


def main(argv):
  del argv
  if not _WORKDIR.value:
    raise UserError('--workdir is required: the directory for the runs, tables and figures.')
  sweep = sweeps.SWEEPS[_SWEEP.value]
  base = budgeted_base(sweep, _BASE.value, 'base_config', _QUICK.value)
  seeds = _SEEDS.value or (1 if _QUICK.value else sweep.default_seeds)
  if _ONLY_RUN.value:
    config, directory = child_run(sweep, base, _WORKDIR.value, _ONLY_RUN.value, _TUNING.value)
    try:
      with preemption.STOP:
        marker = train_in_process(config, directory)
    except Interrupted:
      sys.exit(INTERRUPTED_EXIT)
    sys.exit(0 if marker['status'] == 'finished' else 1)
  # The command that trains the runs the tables describe (a --report_only rerun writes the same).
  arguments = [a for a in sys.argv[1:] if a not in ('--report_only', '--report_only=true')]
  command = ' '.join(['python', 'experiments/sweep.py', *arguments])
  child_flags = [f'--sweep={_SWEEP.value}', f'--workdir={_WORKDIR.value}',
                 f'--quick={_QUICK.value}', *cli.forwarded_config_args('base_config')]
  stop = CHILD_STOP if _ISOLATION.value == 'subprocess' else preemption.STOP
  try:
    with stop:
      results = run_sweep(sweep, base, _WORKDIR.value, seeds, isolation=_ISOLATION.value,
                          child_flags=child_flags, only=_VARIANTS.value,
                          train_runs=not _REPORT_ONLY.value, command=command)
  except Interrupted as e:
    logging.warning('Sweep stopped: %s. Run the same command to resume (from the run\'s last '
                    'checkpoint).', e)
    return
  print(report.console_summary(results, _WORKDIR.value))


if __name__ == '__main__':
  cli.run(main, log_level='info')
