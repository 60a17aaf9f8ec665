"""Tables and figures of a sweep, computed from each run's metrics.jsonl.

Training error is the trainer's running top-1 error over each logging interval (training mode:
dropout and augmentation on, as the paper's Fig. 1 plots it); test error is the evaluation split's.
Every number is a mean +- sample standard deviation over the seeds that finished; a delta between
two variants comes with its 95% confidence interval (Welch's t over the seeds).
"""

import csv
import dataclasses
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use('Agg')  # Files only; no display on a CI machine.
import matplotlib.pyplot as plt  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import scipy.stats  # noqa: E402

from experiments import sweeps  # noqa: E402

MARKER = 'sweep_run.json'
# Top-5 of 10 classes is half the classes: it says little. The paper's 1000 classes need it.
MIN_CLASSES_FOR_TOP5 = 100


@dataclasses.dataclass
class Run:
  """One variant x seed: its status and curves."""
  variant: str
  seed_index: int
  status: str  # finished | failed | missing
  error: str = ''
  wall_s: float = math.nan
  cpu_s: float = math.nan  # User + system CPU time of the run's process.
  batch_size: int = 0
  train_steps: list[int] = dataclasses.field(default_factory=list)
  train_top1: list[float] = dataclasses.field(default_factory=list)
  train_seconds: list[float] = dataclasses.field(default_factory=list)  # Cumulative, no eval.
  eval_steps: list[int] = dataclasses.field(default_factory=list)
  eval_top1: list[float] = dataclasses.field(default_factory=list)
  eval_top5: list[float] = dataclasses.field(default_factory=list)
  # Top-1 error on the training images in evaluation mode, when the run evaluated them.
  eval_train_steps: list[int] = dataclasses.field(default_factory=list)  # Not every evaluation
  eval_train_top1: list[float] = dataclasses.field(default_factory=list)  # has one (a resume).

  def first_step_below(self, target: float) -> tuple[int, float] | None:
    """(step, training seconds) when the training error first reached `target`."""
    for step, error, seconds in zip(self.train_steps, self.train_top1, self.train_seconds):
      if error <= target:
        return step, seconds
    return None


def load_run(directory: str, variant: str, seed_index: int) -> Run:
  marker_path = os.path.join(directory, MARKER)
  if not os.path.exists(marker_path):
    return Run(variant, seed_index, 'missing')
  try:
    with open(marker_path, encoding='utf-8') as f:
      marker = json.load(f)
    run = Run(variant, seed_index, marker['status'], marker.get('error', ''), marker['wall_s'],
              marker.get('cpu_s', math.nan), marker['config']['batch_size'])
  except (ValueError, OSError, KeyError, TypeError) as e:  # A damaged marker file.
    return Run(variant, seed_index, 'failed', f'{marker_path} is damaged ({type(e).__name__})')
  metrics_path = os.path.join(directory, 'metrics.jsonl')
  rows = []
  if os.path.exists(metrics_path):
    with open(metrics_path, encoding='utf-8', errors='replace') as f:
      for line in f:
        try:
          rows.append(json.loads(line))
        except ValueError:  # A torn last line of a killed run, or a damaged one: skipped.
          continue
  # A resumed run logs again from its checkpoint: the last row of each step wins.
  by_step: dict[tuple[str, int], dict[str, float]] = {}
  for row in rows:
    kind = 'train' if 'train/top1_error' in row else 'eval' if 'eval/top1_error' in row else ''
    if kind:
      by_step[(kind, row['step'])] = row
  seconds, previous = 0.0, 0
  for (kind, step), row in sorted(by_step.items(), key=lambda item: item[0][1]):
    if kind == 'train':
      seconds += (step - previous) * run.batch_size / row['train/images_per_sec']
      previous = step
      run.train_steps.append(step)
      run.train_top1.append(row['train/top1_error'])
      run.train_seconds.append(seconds)
    else:
      run.eval_steps.append(step)
      run.eval_top1.append(row['eval/top1_error'])
      run.eval_top5.append(row['eval/top5_error'])
      if 'eval_train/top1_error' in row:
        run.eval_train_steps.append(step)
        run.eval_train_top1.append(row['eval_train/top1_error'])
  return run


def _mean_std(values: Sequence[float]) -> tuple[float, float, int]:
  values = [v for v in values if v is not None and not math.isnan(v)]
  if not values:
    return math.nan, math.nan, 0
  # A sample std needs two values; one seed has none (tables show the mean alone).
  std = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
  return float(np.mean(values)), std, len(values)


def steps_per_epoch(config: ml_collections.ConfigDict) -> int | None:
  """From config.input.train_examples (a training subset) or the prepared TFDS builder's split
  size; None when unknown (plots fall back to steps)."""
  subset = config.input.get('train_examples') or 0
  if subset:
    return subset // config.batch_size
  try:
    import tensorflow_datasets as tfds
    builder = tfds.builder(config.dataset, data_dir=config.get('data_dir'))
    return builder.info.splits['train'].num_examples // config.batch_size
  except Exception:  # pylint: disable=broad-except
    return None


def summarize(runs: Sequence[Run], targets: Sequence[float],
              epoch_steps: int | None) -> dict[str, Any]:
  """A variant's numbers over its seeds."""
  done = [r for r in runs if r.status == 'finished']
  row: dict[str, Any] = {
      'finished': len(done), 'seeds': len(runs),
      'errors': sorted({r.error for r in runs if r.status == 'failed'}),
      'missing': sum(r.status == 'missing' for r in runs),
  }
  metrics = {
      'final_train_top1': [r.train_top1[-1] if r.train_top1 else math.nan for r in done],
      'final_test_top1': [r.eval_top1[-1] if r.eval_top1 else math.nan for r in done],
      'final_test_top5': [r.eval_top5[-1] if r.eval_top5 else math.nan for r in done],
      'best_test_top1': [min(r.eval_top1) if r.eval_top1 else math.nan for r in done],
      'wall_min': [r.wall_s / 60 for r in done],
      'cpu_min': [r.cpu_s / 60 for r in done],
  }
  if any(r.eval_train_top1 for r in done):  # The train/test gap, both in evaluation mode.
    metrics['final_train_eval_top1'] = [r.eval_train_top1[-1] if r.eval_train_top1 else math.nan
                                        for r in done]
    metrics['final_gap'] = [r.eval_top1[-1] - r.eval_train_top1[-1]
                            if r.eval_train_top1 and r.eval_top1 else math.nan for r in done]
  for target in targets:
    crossings = [r.first_step_below(target) for r in done]
    key = f'{target:g}'
    metrics[f'steps_to_{key}'] = [c[0] if c else math.nan for c in crossings]
    metrics[f'train_min_to_{key}'] = [c[1] / 60 if c else math.nan for c in crossings]
    if epoch_steps:
      metrics[f'epochs_to_{key}'] = [c[0] / epoch_steps if c else math.nan for c in crossings]
  for name, values in metrics.items():
    row[name] = dict(zip(('mean', 'std', 'n'), _mean_std(values)))
  return row


@dataclasses.dataclass
class Results:
  sweep: sweeps.Sweep
  dataset: str
  num_classes: int
  seeds: int
  targets: tuple[float, ...]
  epoch_steps: dict[str, int | None]  # variant -> steps per epoch (None: unknown)
  runs: dict[str, list[Run]]  # variant -> one Run per seed
  summaries: dict[str, dict[str, Any]]  # variant -> summarize()

  @property
  def in_epochs(self) -> bool:
    return all(self.epoch_steps.get(v) for v in self.runs)


def collect(sweep: sweeps.Sweep, base: ml_collections.ConfigDict, workdir: str, seeds: int,
            planned: Sequence[tuple[str, int, ml_collections.ConfigDict]]) -> Results:
  """The runs of `planned` (variant, seed index, config) as they are in `workdir` now."""
  targets = tuple(sweep.target_train_errors.get(base.dataset, (0.25,)))
  runs: dict[str, list[Run]] = {}
  epoch_steps: dict[str, int | None] = {}
  for variant, seed_index, config in planned:
    directory = os.path.join(workdir, variant, f'seed{seed_index}')
    runs.setdefault(variant, []).append(load_run(directory, variant, seed_index))
    if variant not in epoch_steps:
      epoch_steps[variant] = steps_per_epoch(config)
  summaries = {variant: summarize(rs, targets, epoch_steps[variant])
               for variant, rs in runs.items()}
  return Results(sweep, base.dataset, base.model.num_classes, seeds, targets, epoch_steps, runs,
                 summaries)


def _percent(cell: dict[str, float]) -> str:
  if cell['n'] == 0:
    return '-'
  if cell['n'] == 1:
    return f'{100 * cell["mean"]:.2f}'
  return f'{100 * cell["mean"]:.2f} ± {100 * cell["std"]:.2f}'


def _number(cell: dict[str, float], digits: int = 0) -> str:
  if cell['n'] == 0:
    return 'not reached'
  if cell['n'] == 1:
    return f'{cell["mean"]:.{digits}f}'
  return f'{cell["mean"]:.{digits}f} ± {cell["std"]:.{digits}f}'


def _columns(results: Results, variants: Sequence[str]) -> list[tuple[str, str, Any]]:
  """(header, summary key, formatter) of the table columns for `variants`."""
  columns = [('final train top-1 err %', 'final_train_top1', _percent),
             ('final test top-1 err %', 'final_test_top1', _percent)]
  if results.num_classes >= MIN_CLASSES_FOR_TOP5:
    columns.append(('final test top-5 err %', 'final_test_top5', _percent))
  columns.append(('best test top-1 err %', 'best_test_top1', _percent))
  if any('final_gap' in results.summaries[v] for v in variants):
    columns += [('final train top-1 err % (eval mode)', 'final_train_eval_top1', _percent),
                ('test − train gap (points)', 'final_gap', _percent)]
  for target in results.targets:
    key = f'{target:g}'
    unit, name = (('epochs', f'epochs_to_{key}') if results.in_epochs
                  else ('steps', f'steps_to_{key}'))
    columns.append((f'{unit} to {100 * target:g}% train err', name,
                    lambda c, d=(2 if unit == 'epochs' else 0): _number(c, d)))
    columns.append((f'train min to {100 * target:g}%', f'train_min_to_{key}',
                    lambda c: _number(c, 1)))
  columns.append(('wall min', 'wall_min', lambda c: _number(c, 1)))
  columns.append(('CPU min', 'cpu_min', lambda c: _number(c, 1)))
  return columns


def _status(summary: dict[str, Any]) -> str:
  text = f'{summary["finished"]}/{summary["seeds"]}'
  if summary['errors']:
    text += ' failed: ' + '; '.join(e.replace('|', '/') for e in summary['errors'])
  if summary['missing']:
    text += f' ({summary["missing"]} not run)'
  return text


def fig1_choice(results: Results, ablation: sweeps.Ablation) -> dict[str, str]:
  """Fig. 1: per activation, the learning rate that first reaches the first target, or failing
  that the lowest final training error (the paper chose each net's learning rate to make
  training as fast as possible)."""
  target = f'{results.targets[0]:g}'
  best: dict[str, tuple[tuple[float, float], str]] = {}
  for variant, overrides in ablation.variants.items():
    if variant not in results.summaries:
      continue
    summary = results.summaries[variant]
    steps = summary[f'steps_to_{target}']['mean']
    key = (steps if summary[f'steps_to_{target}']['n'] else math.inf,
           summary['final_train_top1']['mean'] if summary['finished'] else math.inf)
    activation = overrides['model.activation']
    if activation not in best or key < best[activation][0]:
      best[activation] = (key, variant)
  return {activation: variant for activation, (_, variant) in best.items()}


def welch_interval(a: dict[str, float], b: dict[str, float],
                   confidence: float = 0.95) -> float | None:
  """Half-width of the `confidence` interval of mean(a) - mean(b) from each arm's mean, sample
  std and count (Welch's t); None with fewer than two values in an arm."""
  if a['n'] < 2 or b['n'] < 2:
    return None
  va, vb = a['std'] ** 2 / a['n'], b['std'] ** 2 / b['n']
  if va + vb == 0:
    return 0.0
  dof = (va + vb) ** 2 / (va ** 2 / (a['n'] - 1) + vb ** 2 / (b['n'] - 1))
  return float(scipy.stats.t.ppf(0.5 + confidence / 2, dof) * math.sqrt(va + vb))


def _delta_lines(results: Results, ablation: sweeps.Ablation) -> list[str]:
  names = list(ablation.variants)
  reference = results.summaries[names[0]]
  keys = [('final_test_top1', 'test top-1 error')]
  if results.num_classes >= MIN_CLASSES_FOR_TOP5:
    keys.append(('final_test_top5', 'test top-5 error'))
  keys += [('final_train_eval_top1', 'train top-1 error (eval mode)'),
           ('final_gap', 'test − train gap')]
  lines = []
  for name in names[1:]:
    summary = results.summaries[name]
    for key, label in keys:
      if key in summary and key in reference and summary[key]['n'] and reference[key]['n']:
        delta = 100 * (summary[key]['mean'] - reference[key]['mean'])
        half = welch_interval(summary[key], reference[key])
        interval = '' if half is None else (
            f' ± {100 * half:.2f} (95% CI {delta - 100 * half:+.2f} .. {delta + 100 * half:+.2f})')
        lines.append(f'- {name} − {names[0]}: {label} {delta:+.2f}{interval} points')
  return lines


def fig1_ratios(results: Results, choice: dict[str, str], target: float) -> dict[str, Any]:
  """tanh / ReLU epochs (or steps) to `target`: the ratio of the means and the per-seed ratios,
  seed k of tanh over seed k of ReLU (same data order). A seed that never reached the target
  within the run gives only a lower bound, its last logged step."""
  runs = {a: {r.seed_index: r for r in results.runs[choice[a]] if r.status == 'finished'}
          for a in ('relu', 'tanh')}
  per_seed, lower_bound = [], False
  for seed_index in sorted(runs['relu'].keys() & runs['tanh'].keys()):  # Pairs of one seed.
    relu, tanh = runs['relu'][seed_index], runs['tanh'][seed_index]
    relu_at, tanh_at = relu.first_step_below(target), tanh.first_step_below(target)
    if relu_at is None:
      continue
    if tanh_at is None:
      lower_bound = True
      tanh_at = (tanh.train_steps[-1],) if tanh.train_steps else None
    if tanh_at is not None:
      per_seed.append(tanh_at[0] / relu_at[0])
  return {'per_seed': per_seed, 'lower_bound': lower_bound}


def _fig1_lines(results: Results, ablation: sweeps.Ablation) -> list[str]:
  choice = fig1_choice(results, ablation)
  lines = ['- fastest learning rate per activation: '
           + ', '.join(f'{a}: {v}' for a, v in choice.items())]
  unit = 'epochs' if results.in_epochs else 'steps'
  for target in results.targets:
    key = f'{target:g}'
    reached = {a: results.summaries[v][f'{unit}_to_{key}'] for a, v in choice.items()}
    minutes = {a: results.summaries[v][f'train_min_to_{key}'] for a, v in choice.items()}
    text = ', '.join(f'{a} {_number(c, 2)} ({_number(minutes[a], 1)} train min)'
                     for a, c in reached.items())
    if {'relu', 'tanh'} <= set(reached) and all(reached[a]['n'] for a in ('relu', 'tanh')):
      ratio = reached['tanh']['mean'] / reached['relu']['mean']
      text += f'; tanh / relu = {ratio:.2f}x'
      seeds = fig1_ratios(results, choice, target)
      if len(seeds['per_seed']) > 1:
        values = seeds['per_seed']
        text += (f' (per seed: {", ".join(f"{v:.2f}" for v in values)}; mean '
                 f'{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}')
        text += '; a lower bound: a tanh seed never got there)' if seeds['lower_bound'] else ')'
      text += ' (paper: ~6x at 25% on CIFAR-10)'
    elif 'tanh' in reached and not reached['tanh']['n']:
      text += '; tanh never reached it within the budget'
      bounds = fig1_ratios(results, choice, target)['per_seed']
      if bounds:  # Each tanh seed's last step over its ReLU seed's crossing.
        text += (f': tanh / relu > {min(bounds):.2f}x (per seed, at least '
                 f'{", ".join(f"{v:.2f}" for v in bounds)})')
    lines.append(f'- {unit} to {100 * target:g}% training error: {text}')
  return lines


def markdown(results: Results, command: str = '', note: str = '') -> str:
  sweep = results.sweep
  lines = [f'# Sweep `{sweep.name}` on {results.dataset}', '']
  if command:
    lines += ['```', command, '```', '']
  lines += [f'{results.seeds} seed(s) per variant; cells are mean ± sample std over the seeds '
            'that finished. Training error: running top-1 over each logging interval, in '
            'training mode. "train min": training time without evaluation. Deltas: 95% '
            'confidence intervals by Welch\'s t over the seeds.', '']
  if note:
    lines += [note, '']
  for ablation in sweep.ablations:
    if not ablation.applies_to(results.dataset):
      if not any(a.name == ablation.name and a.applies_to(results.dataset)
                 for a in sweep.ablations):
        lines += [f'## {ablation.title}', '', f'Not run on {results.dataset}: '
                  f'{ablation.not_applicable}', '']
      continue
    lines += [f'## {ablation.title}', '']
    lines += [f'Paper: {ablation.paper_result}.', '']
    variants = [v for v in ablation.variants if v in results.summaries]
    columns = _columns(results, variants)
    lines.append('| variant | runs | ' + ' | '.join(h for h, _, _ in columns) + ' |')
    lines.append('|---' * (len(columns) + 2) + '|')
    for variant in variants:
      summary = results.summaries[variant]
      cells = [fmt(summary[key]) if key in summary else '-' for _, key, fmt in columns]
      lines.append(f'| {variant} | {_status(summary)} | ' + ' | '.join(cells) + ' |')
    lines.append('')
    # Deltas need every variant; Fig. 1 compares whichever learning rates have run.
    if sweep.report == 'fig1' or all(v in results.summaries for v in ablation.variants):
      extra = (_fig1_lines(results, ablation) if sweep.report == 'fig1'
               else _delta_lines(results, ablation))
      lines += extra + ([''] if extra else [])
    lines += [f'![{ablation.name}]({ablation.name}.png)', '']
  return '\n'.join(lines)


def _csv_number(value: float) -> float | str:
  return '' if math.isnan(value) else value  # Undefined (not reached, one seed): an empty cell.


def _without_nan(value: Any) -> Any:
  """`value` with every NaN replaced by None, so results.json is strict JSON (NaN is not)."""
  if isinstance(value, float) and math.isnan(value):
    return None
  if isinstance(value, dict):
    return {k: _without_nan(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_without_nan(v) for v in value]
  return value


def write_csv(results: Results, path: str) -> None:
  keys = []  # Every metric any variant has, in first-seen order (only some have the gap).
  for summary in results.summaries.values():
    keys += [k for k in summary if k not in keys + ['finished', 'seeds', 'errors', 'missing']]
  with open(path, 'w', newline='', encoding='utf-8') as f:
    writer = csv.writer(f)
    writer.writerow(['ablation', 'variant', 'finished', 'seeds', 'errors']
                    + [f'{k}_{s}' for k in keys for s in ('mean', 'std')])
    for ablation in results.sweep.ablations:
      if not ablation.applies_to(results.dataset):
        continue
      for variant in ablation.variants:
        if variant not in results.summaries:
          continue
        summary = results.summaries[variant]
        missing = {'mean': math.nan, 'std': math.nan}
        writer.writerow([ablation.name, variant, summary['finished'], summary['seeds'],
                         '; '.join(summary['errors'])]
                        + [_csv_number(summary.get(k, missing)[s])
                           for k in keys for s in ('mean', 'std')])


def _mean_curve(runs: Sequence[Run], steps_attr: str, values_attr: str):
  """Steps logged by every finished seed, their mean and min/max over seeds."""
  curves = [(getattr(r, steps_attr), getattr(r, values_attr)) for r in runs
            if r.status == 'finished' and getattr(r, values_attr)]  # Not every run has each.
  if not curves:
    return None
  common = sorted(set.intersection(*(set(steps) for steps, _ in curves)))
  table = np.array([[dict(zip(steps, values))[s] for s in common] for steps, values in curves])
  return np.array(common), table.mean(0), table.min(0), table.max(0)


def plot_fig1(results: Results, ablation: sweeps.Ablation, path: str) -> None:
  """As the paper's Fig. 1: training error against epochs, ReLU solid, tanh dashed, the target
  line; every seed of each activation's chosen learning rate, the other rates faint."""
  chosen = fig1_choice(results, ablation)
  fig, axis = plt.subplots(figsize=(6.5, 4.5))
  styles = {'relu': '-', 'tanh': '--'}
  for variant, overrides in ablation.variants.items():
    if variant not in results.runs:
      continue
    activation = overrides['model.activation']
    scale = results.epoch_steps.get(variant) or 1
    strong = chosen.get(activation) == variant
    for i, run in enumerate(r for r in results.runs[variant] if r.status == 'finished'):
      label = (f'{activation} ({variant})' if i == 0 and strong
               else (variant if i == 0 else None))
      axis.plot(np.array(run.train_steps) / scale, 100 * np.array(run.train_top1),
                styles.get(activation, ':'), color='black' if strong else 'grey',
                linewidth=1.4 if strong else 0.6, alpha=0.9 if strong else 0.35, label=label)
  axis.axhline(100 * results.targets[0], color='tab:red', linewidth=0.8)
  axis.set_xlabel('epochs' if results.in_epochs else 'steps')
  axis.set_ylabel('training error (%)')
  axis.set_ylim(0, 100)
  axis.grid(alpha=0.3)
  if axis.get_legend_handles_labels()[0]:  # No finished run, no curve: an empty legend warns.
    axis.legend(fontsize=7)
  fig.suptitle(f'{ablation.title} — {results.dataset}', fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot(results: Results, ablation: sweeps.Ablation, path: str) -> None:
  if results.sweep.report == 'fig1':
    plot_fig1(results, ablation, path)
    return
  variants = [v for v in ablation.variants if v in results.runs]
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
  panels = (((('train_steps', 'train_top1'),), 'training top-1 error'),
            ((('eval_steps', 'eval_top1'), ('eval_train_steps', 'eval_train_top1')),
             'test top-1 error'))
  for panel, (axis, (curves, title)) in enumerate(zip(axes, panels)):
    for i, variant in enumerate(variants):
      scale = results.epoch_steps.get(variant) or 1
      for steps_attr, values_attr in curves:
        curve = _mean_curve(results.runs[variant], steps_attr, values_attr)
        if curve is None:
          continue
        steps, mean, low, high = curve
        x = steps / scale
        train_eval = values_attr == 'eval_train_top1'
        line, = axis.plot(x, 100 * mean, ':' if train_eval else '-', color=f'C{i}',
                          label=f'{variant}, training images' if train_eval else variant,
                          linewidth=2, marker='o' if len(x) < 15 else None, markersize=3)
        if results.seeds > 1:
          axis.fill_between(x, 100 * low, 100 * high, color=line.get_color(), alpha=0.15)
    if panel == 0:
      for target in results.targets:
        axis.axhline(100 * target, color='grey', linestyle='--', linewidth=0.8)
    elif any(r.eval_train_top1 for v in variants for r in results.runs[v]):
      title = 'test (solid) and training-image (dotted) top-1 error, eval mode'
    axis.set_xlabel('epochs' if results.in_epochs else 'steps')
    axis.set_ylabel('error (%)')
    axis.set_title(title, fontsize=10)
    axis.grid(alpha=0.3)
    if axis.get_legend_handles_labels()[0]:
      axis.legend(fontsize=8)
  suffix = f' ({results.seeds} seeds: mean, band = min..max)' if results.seeds > 1 else ''
  fig.suptitle(f'{ablation.title} — {results.dataset}{suffix}')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def to_json(results: Results) -> dict[str, Any]:
  return {
      'sweep': results.sweep.name, 'dataset': results.dataset, 'seeds': results.seeds,
      'targets': list(results.targets), 'steps_per_epoch': results.epoch_steps,
      'not_applicable': {a.name: a.not_applicable for a in results.sweep.ablations
                         if not a.applies_to(results.dataset)},
      'variants': results.summaries,
      'runs': {variant: [dataclasses.asdict(r) for r in runs]
               for variant, runs in results.runs.items()},
  }


def write_all(results: Results, workdir: str, command: str = '', note: str = '') -> None:
  """results.md (with `note` under its header), results.csv, results.json and <ablation>.png in
  `workdir`."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'results.md'), 'w', encoding='utf-8') as f:
    f.write(markdown(results, command, note))
  write_csv(results, os.path.join(workdir, 'results.csv'))
  with open(os.path.join(workdir, 'results.json'), 'w', encoding='utf-8') as f:
    json.dump(_without_nan(to_json(results)), f, indent=1, allow_nan=False)
  for ablation in results.sweep.ablations:
    if ablation.applies_to(results.dataset):
      plot(results, ablation, os.path.join(workdir, f'{ablation.name}.png'))


def console_summary(results: Results, workdir: str) -> str:
  finished = sum(s['finished'] for s in results.summaries.values())
  total = sum(s['seeds'] for s in results.summaries.values())
  return (f'{finished}/{total} runs finished; tables and figures in {workdir} '
          f'(results.md, results.csv, results.json, *.png)')
