"""Measures each variant's training and evaluation step times and estimates a sweep's wall time.

    python experiments/step_times.py --sweep=ablations --base_config=configs/default.py

Used to size the sweeps' budgets (experiments/sweeps.py). The variants are timed round-robin in
one process, so load from other programs hits them alike and the ratios stay meaningful; the
absolute estimate is only as quiet as the machine it runs on (the report prints the CPU time too).
"""

import os
import statistics
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from alexnet_jax import cli, optim, parallel, registry, train  # noqa: E402
from experiments import sweep as sweep_runner  # noqa: E402
from experiments import sweeps  # noqa: E402

# --sweep, --base_config (with its overrides) and --seeds are sweep.py's flags.
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Round-robin rounds over the variants.')
_STEPS = flags.DEFINE_integer('steps', 5, 'Timed training steps per variant per round.')
_TRAIN_EXAMPLES = flags.DEFINE_integer('train_examples', 60000, 'Training split size.')
_EVAL_EXAMPLES = flags.DEFINE_integer('eval_examples', 10000, 'Evaluation split size.')


def _timed_steps(config):
  """(train_step_fn, eval_step_fn) on random data of the config's shapes, compiled."""
  size = config.input.image_size
  model = registry.create_model(config.model, 10, parallel.Layout(kernels=config.kernels))
  tx = optim.create_optimizer(config)
  state = train.create_train_state(model, tx, jax.random.key(0), (size, size, 1))
  batch = {'image': jax.random.normal(jax.random.key(1), (config.batch_size, size, size, 1)),
           'label': jnp.arange(config.batch_size) % 10}
  eval_batch = {'image': jax.random.normal(jax.random.key(2),
                                           (config.eval_batch_size, size, size, 1)),
                'label': jnp.arange(config.eval_batch_size) % 10,
                'mask': jnp.ones((config.eval_batch_size,), bool)}
  step = jax.jit(lambda s: train.train_step(s, batch, jnp.float32(config.learning_rate),
                                            jax.random.key(3), model=model, tx=tx)[0])
  evaluate = jax.jit(lambda p: train.eval_step(p, eval_batch, model=model))
  holder = {'state': step(state)}
  jax.block_until_ready(evaluate(holder['state'].params))

  def run_train(n):
    for _ in range(n):
      holder['state'] = step(holder['state'])
    jax.block_until_ready(holder['state'])

  def run_eval():
    jax.block_until_ready(evaluate(holder['state'].params))

  return run_train, run_eval


def main(argv):
  del argv
  sweep = sweeps.SWEEPS[flags.FLAGS.sweep]
  base = sweep_runner.budgeted_base(sweep, flags.FLAGS.base_config, 'base_config', quick=False)
  seeds = flags.FLAGS.seeds or sweep.default_seeds
  variants = sweeps.unique_variants(sweep, base.dataset)
  configs = {name: registry.apply_overrides(base, sweeps.resolve(overrides, base))
             for name, overrides in variants.items()}
  fns = {name: _timed_steps(config) for name, config in configs.items()}
  train_times = {name: [] for name in configs}
  eval_times = {name: [] for name in configs}
  cpu_start, wall_start = time.process_time(), time.perf_counter()
  for _ in range(_ROUNDS.value):
    for name, (run_train, run_eval) in fns.items():
      start = time.perf_counter()
      run_train(_STEPS.value)
      train_times[name].append((time.perf_counter() - start) / _STEPS.value)
      start = time.perf_counter()
      run_eval()
      eval_times[name].append(time.perf_counter() - start)
  cpu_per_wall = (time.process_time() - cpu_start) / (time.perf_counter() - wall_start)

  total = 0.0
  print(f'sweep {sweep.name} on {base.dataset}, {seeds} seeds, {len(configs)} runs per seed; '
        f'median of {_ROUNDS.value} rounds of {_STEPS.value} steps; '
        f'process CPU time / wall time = {cpu_per_wall:.2f}')
  print(f'{"variant":<24}{"s/step":>8}{"x paper":>9}{"steps":>7}{"evals":>7}{"s/eval":>8}'
        f'{"run (min)":>11}')
  reference = statistics.median(next(iter(train_times.values())))
  for name, config in configs.items():
    steps_per_epoch = _TRAIN_EXAMPLES.value // config.batch_size
    steps = (config.num_train_steps if config.num_train_steps > 0
             else int(config.num_epochs * steps_per_epoch))
    evals = steps // config.eval_every_steps + (steps % config.eval_every_steps != 0)
    eval_batches = int(np.ceil(_EVAL_EXAMPLES.value / config.eval_batch_size))
    step_s = statistics.median(train_times[name])
    eval_s = statistics.median(eval_times[name]) * eval_batches
    run_s = steps * step_s + evals * eval_s
    total += run_s * seeds
    print(f'{name:<24}{step_s:>8.3f}{step_s / reference:>9.2f}{steps:>7}{evals:>7}{eval_s:>8.1f}'
          f'{run_s / 60:>11.1f}')
  print(f'estimated sweep wall time (training + evaluation, no start-up): {total / 60:.0f} min')


if __name__ == '__main__':
  cli.run(main, log_level='info')
