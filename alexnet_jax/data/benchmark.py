"""Benchmark (not a test): training-input images/second vs the paper model's training images/second.

    python -m alexnet_jax.data.benchmark --config=configs/imagenet.py --workdir=/tmp/input_benchmark

Writes a fake ILSVRC manual dir with photo-sized JPEGs (500x375, 375x500, 500x333, 400x400; ~110 KB
each, like ImageNet's), prepares it through the real TFDS `imagenet2012` builder, then times
the training pipeline of --config (default configs/imagenet.py: decode, paper augmentation, PCA
lighting, batches of 128) after one warm-up batch. It then times SGD steps of the paper's
two-tower AlexNet on the same machine and prints the ratio; the input must stay well ahead of the
model (>= 3x).
"""

import pathlib
import statistics
import time

import ml_collections
import numpy as np
from absl import flags

from alexnet_jax import cli
from alexnet_jax.data import create_dataset, fake_ilsvrc

PHOTO_SIZES = ((375, 500), (500, 375), (333, 500), (400, 400))
PHOTO_TEXTURE = 28.0  # ~110 KB per JPEG, ImageNet's average.


def pipeline_images_per_second(config: ml_collections.ConfigDict, workdir: pathlib.Path,
                               train_per_class: int, batches: int,
                               augmentation: str) -> tuple[float, list[float]]:
  """Overall images/s over `batches` batches after a warm-up batch, and the per-batch rates."""
  manual_dir, data_dir = workdir / 'manual', workdir / 'data'
  if not (manual_dir / fake_ilsvrc.VAL_TAR).exists():
    fake_ilsvrc.write_fake_ilsvrc(manual_dir, num_val=16, train_per_class=train_per_class,
                                  sizes=PHOTO_SIZES, texture=PHOTO_TEXTURE)
  config = config.copy_and_resolve_references()
  config.data_dir, config.manual_dir = str(data_dir), str(manual_dir)
  config.input.mean_num_images = 256
  config.input.augmentation = augmentation
  dataset = create_dataset(config)
  iterator = dataset.train_batches()
  next(iterator)  # Warm-up: graph tracing and the first shuffle-buffer fill.
  rates, start = [], time.perf_counter()
  for _ in range(batches):
    batch_start = time.perf_counter()
    batch = next(iterator)
    rates.append(len(batch['label']) / (time.perf_counter() - batch_start))
  return batches * config.batch_size / (time.perf_counter() - start), rates


def model_images_per_second(config: ml_collections.ConfigDict, batch_size: int,
                            steps: int) -> float:
  """Images/s of plain SGD steps of the paper model (float32, 227x227, dropout on)."""
  import jax
  import jax.numpy as jnp
  import optax

  from alexnet_jax import parallel, registry

  model = registry.create_model(config.model, layout=parallel.Layout(kernels=config.kernels))
  images = jnp.zeros((batch_size, 227, 227, 3), jnp.float32)
  labels = jnp.zeros((batch_size,), jnp.int32)
  params = model.init(jax.random.key(0), images[:1])['params']
  optimizer = optax.sgd(0.01, momentum=0.9)
  opt_state = optimizer.init(params)

  @jax.jit
  def step(params, opt_state, key):
    def loss_fn(params):
      logits = model.apply({'params': params}, images, train=True, rngs={'dropout': key})
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    grads = jax.grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  params, opt_state = step(params, opt_state, jax.random.key(1))  # Compile.
  jax.block_until_ready(params)
  start = time.perf_counter()
  for i in range(steps):
    params, opt_state = step(params, opt_state, jax.random.key(i))
  jax.block_until_ready(params)
  return steps * batch_size / (time.perf_counter() - start)


def main(argv) -> None:
  del argv
  args = flags.FLAGS
  config = cli.config_value(example='configs/imagenet.py')
  pipeline, rates = pipeline_images_per_second(config, pathlib.Path(args.workdir),
                                               args.train_per_class, args.batches,
                                               args.augmentation)
  print(f'input pipeline ({args.augmentation}): {pipeline:.1f} images/s over {args.batches} '
        f'batches of {config.batch_size} (per-batch median {statistics.median(rates):.1f}, '
        f'min {np.min(rates):.1f})')
  if args.model_steps:
    model = model_images_per_second(config, args.model_batch, args.model_steps)
    print(f'paper model training: {model:.1f} images/s (batch {args.model_batch}, '
          f'{args.model_steps} SGD steps)')
    print(f'input / model throughput: {pipeline / model:.1f}x')


def define_flags() -> None:
  cli.define_config_flag('configs/imagenet.py', 'The ImageNet config whose input pipeline and '
                         'model are timed.')
  flags.DEFINE_string('workdir', '/tmp/input_benchmark', 'Where the fake tars and the prepared '
                      'data go (reused by later runs).')
  flags.DEFINE_integer('train_per_class', 160, '8 classes of this many training JPEGs.')
  flags.DEFINE_integer('batches', 20, 'Timed batches.')
  flags.DEFINE_enum('augmentation', 'paper', ['paper', 'random_resized_crop'],
                    'config.input.augmentation for the timing.')
  flags.DEFINE_integer('model_batch', 32, 'Batch size of the timed model steps.')
  flags.DEFINE_integer('model_steps', 3, 'Timed SGD steps of the model; 0 skips the model.')


if __name__ == '__main__':
  cli.run(main, define_flags)
