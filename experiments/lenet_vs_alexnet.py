"""The LeNet-5 vs AlexNet table of docs/using_a_trained_model.md, from two trained workdirs.

    python experiments/lenet_vs_alexnet.py workdirs/cmp_lenet5 workdirs/cmp_alexnet67

Parameters and forward FLOPs (XLA's cost analysis) come from each workdir's config; the test
errors from its metrics.jsonl; the time per epoch from training steps of both models run
interleaved in this process, so both see the same machine load (batch 128, median of 15).
"""

import math
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from alexnet_jax import cli, data, metrics, optim, registry, train, trained_model  # noqa: E402
from alexnet_jax.errors import UserError  # noqa: E402

BATCH, REPEATS, TRAIN_EXAMPLES = 128, 15, 60_000


def main(argv: list[str]) -> None:
  workdirs = argv[1:]
  if not workdirs:
    raise UserError('pass the trained workdirs to compare: python experiments/lenet_vs_alexnet.py '
                    'WORKDIR...')
  rows, steps = [], []
  for workdir in workdirs:
    config = trained_model.load_config(workdir)
    shape = data.image_shape(config)
    model = registry.create_model(config.model, len(trained_model.class_names(config)))
    images = jnp.zeros((1,) + shape)
    params = model.init(jax.random.key(0), images)['params']
    count = sum(math.prod(p.shape) for p in jax.tree.leaves(params))
    flops = jax.jit(lambda p, x, m=model: m.apply({'params': p}, x)).lower(
        params, images).compile().cost_analysis()['flops']
    evals = [r for r in metrics.read_jsonl(f'{workdir}/metrics.jsonl') if 'eval/top1_error' in r]
    if not evals:
      raise UserError(f'{workdir}/metrics.jsonl has no evaluation yet; train it first.')
    final = evals[-1]
    tx = optim.create_optimizer(config)
    state = train.TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))
    batch = {'image': jnp.asarray(np.random.default_rng(0).normal(size=(BATCH,) + shape),
                                  jnp.float32), 'label': jnp.arange(BATCH) % 10}
    step = jax.jit(lambda s, b, m=model, t=tx: train.train_step(
        s, b, jnp.float32(0.01), jax.random.key(1), model=m, tx=t))
    state = jax.block_until_ready(step(state, batch)[0])  # Compile outside the timing.
    steps.append([step, state, batch, []])
    rows.append((workdir, config.model.get('name', 'alexnet'), shape[0], count, flops, final))
  for _ in range(REPEATS):
    for entry in steps:
      step, state, batch, times = entry
      start = time.perf_counter()
      entry[1] = jax.block_until_ready(step(state, batch)[0])
      times.append(time.perf_counter() - start)
  print('| workdir | model | input | parameters | forward FLOPs / image | test top-1 err '
        '| test top-5 err | steps trained | s / epoch (60k images) |')
  print('|---|---|---|---|---|---|---|---|---|')
  for (workdir, name, size, count, flops, final), (_, _, _, times) in zip(rows, steps):
    epoch = statistics.median(times) * TRAIN_EXAMPLES / BATCH
    print(f'| {workdir} | {name} | {size}x{size} | {count:,} | {flops / 1e6:.2f} M '
          f'| {final["eval/top1_error"]:.4f} | {final["eval/top5_error"]:.4f} | {final["step"]} '
          f'| {epoch:.0f} |')


if __name__ == '__main__':
  cli.run(main, arguments=True)
