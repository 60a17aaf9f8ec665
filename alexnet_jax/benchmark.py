"""Times the jitted training step and the inference step of the configured model on this machine.

    python -m alexnet_jax.benchmark --config=configs/imagenet.py --batch_size=128 --steps=10 \
        [--json]

Warm-up (compilation and the first steps) is excluded; each reported time is the median of
`--steps` single-step timings, each ended by `block_until_ready`. The training step is the
trainer's own step (`alexnet_jax.train.train_step`: SGD with momentum and weight decay,
cross-entropy, dropout) when the trainer is available, else an equivalent one defined here.
Compare the compute paths with `--config.kernels=xla`, `--config.model.dtype=bfloat16`
and ALEXNET_JAX_ONEDNN=0 (XLA's own convolutions instead of oneDNN's; see alexnet_jax/onednn.py).
"""

import copy
import json
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import flags

from alexnet_jax import cli, data, flops, onednn, parallel, registry

# Stated peak fp32 throughput of this machine's two cores, for the "% of ceiling" column.
CEILING_GFLOPS = 400.0


def _train_fns(config: ml_collections.ConfigDict, model: Any) -> tuple[Callable, Callable, str]:
  """(init_state(key, image_shape), step(state, batch, key)), and where the step comes from."""
  try:
    from alexnet_jax import optim, train  # pylint: disable=import-outside-toplevel
  except ImportError:
    train = None
  if train is not None and hasattr(train, 'train_step'):
    tx = optim.create_optimizer(config)
    init = lambda key, shape: train.create_train_state(model, tx, key, shape)
    lr = jnp.asarray(config.learning_rate, jnp.float32)
    step = lambda state, batch, key: train.train_step(state, batch, lr, key, model=model, tx=tx)
    return init, step, 'alexnet_jax.train.train_step'

  # Equivalent step: §5's SGD (v <- m v - wd lr w - lr g; w <- w + v), softmax cross-entropy.
  tx = optax.chain(optax.add_decayed_weights(config.weight_decay),
                   optax.scale_by_learning_rate(config.learning_rate),
                   optax.trace(decay=config.momentum))

  def init(key, shape):
    params = model.init(key, jnp.zeros((1,) + tuple(shape), jnp.float32))['params']
    return params, tx.init(params), jnp.zeros((), jnp.int32)

  def step(state, batch, key):
    params, opt_state, count = state

    def loss_fn(p):
      logits = model.apply({'params': p}, batch['image'], train=True,
                           rngs={'dropout': jax.random.fold_in(key, count)})
      return optax.softmax_cross_entropy_with_integer_labels(logits, batch['label']).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state, count + 1), {'loss': loss}

  return init, step, 'benchmark-local equivalent step'


def training_flops_per_image(model: Any, image_shape: tuple[int, ...]) -> float:
  """3 x the forward's convolution and matmul FLOPs (forward, input gradient, weight gradient),
  the usual convention (~4.35 GFLOP for the paper's model); counted on XLA's kernels
  (`flops.forward_ops`) whichever kernels `model` runs."""
  images = jax.ShapeDtypeStruct((1,) + tuple(image_shape), jnp.float32)
  params = jax.eval_shape(model.init, jax.random.key(0), images)['params']
  return 3.0 * 2.0 * flops.multiply_adds(flops.forward_ops(model, {'params': params}, images))


def _median_step_seconds(run_once: Callable[[], Any], steps: int) -> float:
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(run_once())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


class Benchmark:
  """A compiled training and inference step for one config and batch size, timed on demand.

  Kept as an object so a caller can interleave `time_train` / `time_infer` calls with other
  contenders (benchmarks/compare.py) and get ratios measured under the same machine load.
  """

  def __init__(self, config: ml_collections.ConfigDict, batch_size: int, warmup: int = 2):
    self.config = config
    self.batch_size = batch_size
    self.model = registry.create_model(config.model,
                                       layout=parallel.Layout(kernels=config.kernels))
    self.image_shape = data.image_shape(config)
    init, step, self.step_source = _train_fns(config, self.model)
    rng = np.random.default_rng(0)
    self.batch = {
        'image': jnp.asarray(rng.standard_normal((batch_size,) + self.image_shape, np.float32)),
        'label': jnp.asarray(rng.integers(0, config.model.num_classes, batch_size, np.int32)),
        'mask': jnp.ones((batch_size,), bool),
    }
    self.key = jax.random.key(config.get('seed', 0))
    self.state = jax.jit(init, static_argnums=1)(self.key, self.image_shape)
    # Donating the state lets XLA update parameters and momentum in place.
    self._train = jax.jit(step, donate_argnums=0)
    self._infer = jax.jit(lambda params, images: self.model.apply({'params': params}, images))

    start = time.perf_counter()
    compiled = self._train.lower(self.state, self.batch, self.key).compile()
    self.compile_seconds = time.perf_counter() - start
    self._train = compiled
    for _ in range(max(warmup, 1)):
      self._run_train()
      jax.block_until_ready(self._run_infer())
    jax.block_until_ready(self.state)
    self.parameter_count = sum(leaf.size for leaf in jax.tree.leaves(self._params()))
    self.flops_per_image = training_flops_per_image(self.model, self.image_shape)

  def _params(self):
    return self.state.params if hasattr(self.state, 'params') else self.state[0]

  def _run_train(self):
    self.state, metrics = self._train(self.state, self.batch, self.key)
    return metrics

  def _run_infer(self):
    return self._infer(self._params(), self.batch['image'])

  def time_train(self, steps: int) -> float:
    """Median seconds per training step."""
    return _median_step_seconds(self._run_train, steps)

  def time_infer(self, steps: int) -> float:
    """Median seconds per inference step."""
    return _median_step_seconds(self._run_infer, steps)


def compile_layout_step(config: ml_collections.ConfigDict, data_axis: int, model_axis: int,
                        strategy: str, batch_size: int | None = None
                        ) -> tuple[Any, jax.sharding.Mesh, Callable, Any]:
  """The trainer's train step compiled for one mesh layout of the first data x model devices.

  Returns (compiled step(state, batch, learning_rate, key), mesh, init(key) -> state, state
  shardings); `batch_size` is the global batch (default config.batch_size). Raises UserError when
  the layout does not fit the devices or the batch does not split over them.
  """
  from alexnet_jax import optim, train  # pylint: disable=import-outside-toplevel

  config = copy.deepcopy(config)
  config.mesh.data, config.mesh.model, config.mesh.strategy = data_axis, model_axis, strategy
  batch_size = batch_size or config.batch_size
  mesh = parallel.create_mesh(config.mesh, config.model.get('towers', 1),
                              jax.devices()[:data_axis * model_axis])
  parallel.check_batch_size(batch_size, mesh, strategy=strategy)
  model = registry.create_model(config.model, layout=parallel.Layout(kernels=config.kernels))
  tx = optim.create_optimizer(config)
  shape = data.image_shape(config)
  init = lambda key: train.create_train_state(model, tx, key, shape)
  abstract = jax.eval_shape(init, jax.random.key(0))
  shardings = parallel.state_shardings(mesh, abstract, model, strategy)
  step, _ = train.create_step_fns(model, tx, mesh, strategy, shardings)
  batch = {'image': jax.ShapeDtypeStruct((batch_size,) + shape, jnp.float32),
           'label': jax.ShapeDtypeStruct((batch_size,), jnp.int32)}
  compiled = step.lower(abstract, batch, np.float32(0.01), jax.random.key(1)).compile()
  return compiled, mesh, init, shardings


def device_description() -> str:
  device = jax.devices()[0]
  return f'{device.platform}:{device.device_kind} ({platform.processor() or platform.machine()})'


def run(config: ml_collections.ConfigDict, batch_size: int, steps: int,
        warmup: int = 2) -> dict[str, Any]:
  bench = Benchmark(config, batch_size, warmup)
  train_seconds = bench.time_train(steps)
  infer_seconds = bench.time_infer(steps)
  train_gflops = bench.flops_per_image * batch_size / train_seconds / 1e9
  return {
      'batch_size': batch_size,
      'device': device_description(),
      'dtype': str(config.model.get('dtype', 'float32')),
      'kernels': parallel.platform_kernels(config.kernels),
      'convolutions': onednn.status(),
      'train_step': bench.step_source,
      'compile_seconds': bench.compile_seconds,
      'train_seconds_per_step': train_seconds,
      'infer_seconds_per_step': infer_seconds,
      'train_images_per_sec': batch_size / train_seconds,
      'infer_images_per_sec': batch_size / infer_seconds,
      'train_gflop_per_image': bench.flops_per_image / 1e9,
      'gflops_per_sec': train_gflops,
      'percent_of_ceiling': 100.0 * train_gflops / CEILING_GFLOPS,
      'steps': steps,
  }


def format_table(result: dict[str, Any]) -> str:
  rows = [(key, f'{value:.3f}' if isinstance(value, float) else str(value))
          for key, value in result.items()]
  width = max(len(key) for key, _ in rows)
  return '\n'.join(f'{key:<{width}}  {value}' for key, value in rows)


def main(argv):
  del argv
  flag = flags.FLAGS
  result = run(cli.config_value(example='configs/imagenet.py'), flag.batch_size, flag.steps,
               flag.warmup)
  print(json.dumps(result) if flag.json else format_table(result))


def define_flags() -> None:
  # Flags only when run as a program, so other tools can import this module with their own.
  cli.define_config_flag('configs/imagenet.py', 'Model config.')
  flags.DEFINE_integer('batch_size', 128, 'Images per step.')
  flags.DEFINE_integer('steps', 10, 'Timed steps (the median is reported).')
  flags.DEFINE_integer('warmup', 2, 'Untimed steps after compilation.')
  flags.DEFINE_bool('json', False, 'Print one JSON object instead of a table.')


if __name__ == '__main__':
  cli.run(main, define_flags)
