"""The sweep runner, its tables and figures, and the sweep definitions."""

import csv
import json
import os
import shutil
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest
import tensorflow_datasets as tfds

from alexnet_jax import config_checks, registry, train
from alexnet_jax.errors import UserError
from configs import default, imagenet
from experiments import report, sweep, sweeps
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
  monkeypatch.setattr(sweep.subprocess, 'call', lambda *args, **kwargs: -9)  # Killed, no marker.
  marker = sweep.train_in_child(tiny_config(), str(tmp_path), 'paper', 0, child_flags=[])
  assert marker['status'] == 'failed' and 'status -9' in marker['error']
  assert sweep.read_marker(str(tmp_path))['status'] == 'failed'


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


def test_fig1_picks_each_activations_fastest_learning_rate(tmp_path):
  ablation = sweeps.FIG1.ablations[0]
  crossing = {'relu_lr0.003': 30, 'relu_lr0.01': 10, 'relu_lr0.03': None,
              'tanh_lr0.003': None, 'tanh_lr0.01': 50, 'tanh_lr0.03': 40}
  runs = {}
  for variant, step in crossing.items():
    directory = str(tmp_path / variant)
    errors = [0.2 if step is not None and s >= step else 0.5 for s in range(10, 60, 10)]
    _write_run(directory, 10, [(s, e, 100) for s, e in zip(range(10, 60, 10), errors)], [])
    runs[variant] = [report.load_run(directory, variant, 0)]
  results = report.Results(sweeps.FIG1, 'fashion_mnist', 10, 1, (0.25,), 5, runs,
                           {v: report.summarize(r, (0.25,), 5) for v, r in runs.items()})
  assert report.fig1_choice(results, ablation) == {'relu': 'relu_lr0.01', 'tanh': 'tanh_lr0.03'}
  assert 'tanh / relu = 4.00x' in report.markdown(results)  # Epoch 8 over epoch 2.
  report.plot(results, ablation, str(tmp_path / 'fig1.png'))
  assert matplotlib.image.imread(str(tmp_path / 'fig1.png')).shape[:2] == (420, 1100)


def test_one_tower_halves_conv1_to_4_and_keeps_conv5():
  config = imagenet.get_config()
  overrides = sweeps.resolve(sweeps.ABLATIONS.ablations[4].variants['one_tower'], config)
  assert overrides == {'model.towers': 1, 'model.conv_features': (48, 128, 192, 192, 256)}
  changed = registry.apply_overrides(config, overrides)
  assert config.model.towers == 2 and changed.model.towers == 1  # The base is not modified.


@pytest.mark.parametrize('base', [default, imagenet], ids=['fashion_mnist', 'imagenet'])
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
    assert ('no_pca_lighting' in variants) == (config.dataset == 'imagenet2012')


@pytest.mark.slow
def test_quick_sweep_from_the_command_line(tmp_path):
  """The CI run of the real sweep's runner: every Fashion-MNIST variant, real data, a tiny net."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  workdir = str(tmp_path / 'quick')
  env = {**os.environ, 'PYTHONPATH': root, 'XLA_FLAGS': ''}
  result = subprocess.run([sys.executable, 'experiments/sweep.py', '--sweep=ablations', '--quick',
                           '--seeds=1', f'--workdir={workdir}'], cwd=root, env=env,
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
