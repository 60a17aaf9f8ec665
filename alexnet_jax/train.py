"""Training and evaluation: train state, optimizer, jitted steps and the loop.

`train_and_evaluate(config, workdir)` trains, evaluates, writes metrics and checkpoints, and resumes
from the latest checkpoint in `workdir`. Everything is deterministic given `config.seed`: dropout
keys are folded from the step, and the data order is a function of the step.
"""

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from alexnet_jax import (checkpoint, config_checks, data, finetune, metrics, parallel, param_rules,
                         preemption, registry)
from alexnet_jax.errors import UserError


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


def create_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """SGD with momentum and weight decay; the learning rate is set on every step.

  'paper_sgd' is §5's update, v <- m v - wd lr w - lr g; w <- w + v: the learning rate enters the
  momentum trace. 'optax_sgd' is optax's (and PyTorch's) v <- m v + g + wd w; w <- w - lr v. They
  agree while the learning rate is constant. config.param_rules scales both per parameter.
  """
  make = param_rules.sgd(config)  # learning_rate -> the SGD of config.optimizer.
  if config.grad_clip_norm > 0:  # Off by default: the paper does not clip.
    unclipped = make
    make = lambda learning_rate: optax.chain(
        optax.clip_by_global_norm(config.grad_clip_norm), unclipped(learning_rate))
  if finetune.frozen_layers(config):
    make = finetune.with_frozen_layers(make, finetune.frozen_layers(config))
  return optax.inject_hyperparams(make)(learning_rate=config.learning_rate)


def base_learning_rate_fn(config: ml_collections.ConfigDict, steps_per_epoch: int,
                          total_steps: int) -> Callable[[int], float]:
  """The schedule before any plateau reductions (which the loop applies on top)."""
  if config.lr_schedule in ('constant', 'plateau'):
    return optax.constant_schedule(config.learning_rate)
  if config.lr_schedule == 'step':  # x lr_step_factor at each boundary (default 0.1).
    every = config.get('lr_step_every_steps', 0)  # Caffe's `stepsize`, in steps.
    boundaries = (range(every, total_steps, every) if every
                  else [int(epoch * steps_per_epoch) for epoch in config.lr_step_epochs])
    return optax.piecewise_constant_schedule(
        config.learning_rate, {step: config.get('lr_step_factor', 0.1) for step in boundaries})
  if config.lr_schedule == 'cosine':
    return optax.cosine_decay_schedule(config.learning_rate, total_steps)
  raise UserError(f'config.lr_schedule={config.lr_schedule!r} is unknown.')


@dataclasses.dataclass
class Plateau:
  """§5: divide the learning rate by 10 when the validation error stops improving."""
  patience: int
  min_delta: float
  max_reductions: int
  best_error: float = math.inf
  evals_without_improvement: int = 0
  reductions: int = 0

  @property
  def factor(self) -> float:
    return 0.1 ** self.reductions

  def update(self, eval_error: float) -> bool:
    """Records an evaluation; True when it reduced the learning rate."""
    if eval_error < self.best_error - self.min_delta:
      self.best_error, self.evals_without_improvement = eval_error, 0
      return False
    self.evals_without_improvement += 1
    if self.evals_without_improvement >= self.patience and self.reductions < self.max_reductions:
      self.reductions += 1
      self.evals_without_improvement = 0
      return True
    return False

  def to_json(self) -> dict[str, Any]:
    return {'best_error': None if math.isinf(self.best_error) else self.best_error,
            'evals_without_improvement': self.evals_without_improvement,
            'reductions': self.reductions}

  def load_json(self, state: dict[str, Any]) -> None:
    best = state.get('best_error')
    self.best_error = math.inf if best is None else best
    self.evals_without_improvement = state['evals_without_improvement']
    self.reductions = state['reductions']


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, key: jax.Array,
                       image_shape: tuple[int, int, int]) -> TrainState:
  params = model.init(key, jnp.zeros((1,) + tuple(image_shape), jnp.float32))['params']
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def train_step(state: TrainState, batch: dict[str, jax.Array], learning_rate: jax.Array,
               dropout_key: jax.Array, *, model: nn.Module,
               tx: optax.GradientTransformation) -> tuple[TrainState, dict[str, jax.Array]]:
  """One SGD step; returns the new state and the batch's metric sums.

  A step whose loss, gradients or updated parameters are not finite leaves params and optimizer
  state unchanged and is reported in the sums ('nonfinite_steps', 'first_nonfinite_step'); the loop then stops or
  skips it (config.nan_policy).
  """
  step_key = jax.random.fold_in(dropout_key, state.step)

  def loss_fn(params):
    logits = model.apply({'params': params}, batch['image'], train=True,
                         rngs={'dropout': step_key})
    sums = metrics.classification_sums(logits, batch['label'])
    return sums['loss'] / sums['count'], sums

  grads, sums = jax.grad(loss_fn, has_aux=True)(state.params)
  opt_state = state.opt_state
  opt_state.hyperparams['learning_rate'] = learning_rate
  updates, new_opt_state = tx.update(grads, opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  finite = jnp.isfinite(sums['loss']) & jnp.all(jnp.array(
      [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves((grads, params))]))
  params, opt_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old),
                                   (params, new_opt_state), (state.params, opt_state))
  sums = {name: jnp.where(finite, value, 0.0) for name, value in sums.items()}
  sums['nonfinite_steps'] = 1 - finite.astype(jnp.int32)
  sums['first_nonfinite_step'] = jnp.where(finite, NO_NONFINITE_STEP, state.step + 1)
  return TrainState(step=state.step + 1, params=params, opt_state=opt_state), sums


NO_NONFINITE_STEP = np.iinfo(np.int32).max


def accumulate(total: dict[str, jax.Array] | None,
               step_sums: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """Adds one step's metric sums to the running ones; keeps the first non-finite step."""
  if total is None:
    return step_sums
  return {name: (jnp.minimum if name == 'first_nonfinite_step' else jnp.add)(total[name], value)
          for name, value in step_sums.items()}


def eval_step(params: Any, batch: dict[str, jax.Array], *, model: nn.Module) -> dict[str, jax.Array]:
  """Metric sums of one evaluation batch; images may carry a crop axis [B, crops, H, W, C]."""
  images = batch['image']
  if images.ndim == 5:
    b, crops = images.shape[:2]
    logits = model.apply({'params': params}, images.reshape((b * crops,) + images.shape[2:]))
    logits = logits.reshape(b, crops, -1)
  else:
    logits = model.apply({'params': params}, images)
  return metrics.classification_sums(logits, batch['label'], batch['mask'])


def evaluate(eval_fn: Callable, params: Any, batches: Iterator[dict[str, np.ndarray]],
             mesh: jax.sharding.Mesh, max_steps: int = -1) -> dict[str, float]:
  totals = None
  for i, batch in enumerate(batches):
    if i == max_steps:
      break
    sums = eval_fn(params, parallel.global_batch(batch, mesh))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  if totals is None:
    raise UserError('the evaluation split produced no batches; check config.eval_batch_size.')
  return jax.device_get(totals)


def create_step_fns(model: nn.Module, tx: optax.GradientTransformation, mesh: jax.sharding.Mesh,
                    strategy: str, shardings: TrainState) -> tuple[Callable, Callable]:
  """The jitted train and eval steps for the state laid out as `shardings` on `mesh`."""
  distributed = parallel.DistributedModel(model, mesh, strategy)
  p_train_step = jax.jit(
      lambda s, b, lr, k: train_step(s, b, lr, k, model=distributed, tx=tx),
      in_shardings=(shardings, parallel.batch_sharding(mesh), None, None),
      out_shardings=(shardings, None), donate_argnums=0)
  p_eval_step = jax.jit(lambda p, b: eval_step(p, b, model=distributed),
                        in_shardings=(shardings.params, parallel.batch_sharding(mesh)))
  return p_train_step, p_eval_step


def _check_workdir(workdir: str) -> None:
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.write_test.{os.getpid()}')  # One per process: no races.
    with open(probe, 'w', encoding='utf-8') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise UserError(f'workdir {workdir!r} is not writable ({e.strerror}); '
                    'pass a writable --workdir.') from e


def _format_duration(seconds: float) -> str:
  seconds = int(seconds)
  return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m' if seconds >= 3600 else \
      f'{seconds // 60}m{seconds % 60:02d}s'


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains `config` in `workdir`, resuming from its latest checkpoint; returns the final state."""
  config_checks.validate(config)
  is_main = jax.process_index() == 0
  _check_workdir(workdir)
  mesh = parallel.create_mesh(config.mesh, config.model.get('towers', 1))
  strategy = parallel.strategy_of(config.mesh)
  parallel.check_batch_size(config.batch_size, mesh, 'batch_size', strategy)
  parallel.check_batch_size(config.eval_batch_size, mesh, 'eval_batch_size', strategy)

  # Each process feeds its own part of the batch (the same part where processes share one).
  dataset = data.create_dataset(config, *parallel.process_batch_shard(mesh))
  if dataset.num_train_examples < config.batch_size:
    raise UserError(f'the training split has {dataset.num_train_examples} examples, fewer than '
                    f'config.batch_size={config.batch_size}; lower the batch size.')
  steps_per_epoch = dataset.num_train_examples // config.batch_size
  total_steps = (config.num_train_steps if config.num_train_steps > 0
                 else int(config.num_epochs * steps_per_epoch))
  model = registry.create_model(config.model, dataset.num_classes,
                                parallel.Layout(kernels=config.kernels))
  tx = create_optimizer(config)
  base_lr = base_learning_rate_fn(config, steps_per_epoch, total_steps)
  plateau = Plateau(config.plateau_patience, config.plateau_min_delta,
                    config.plateau_max_reductions)

  root_key = jax.random.key(config.seed)
  init_key, dropout_key = jax.random.split(root_key)
  init = lambda key: create_train_state(model, tx, key, dataset.image_shape)
  abstract_state = jax.eval_shape(init, init_key)
  shardings = parallel.state_shardings(mesh, abstract_state, model, strategy)
  ckpt = checkpoint.Checkpointer(workdir, config.max_checkpoints_to_keep)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract_state, shardings)
  restored = ckpt.restore_latest(abstract)
  pending_eval = False  # The evaluation at start_step was interrupted by a signal: redo it first.
  if restored is None:
    state = jax.jit(init, out_shardings=shardings)(init_key)
    if config.get('finetune') and config.finetune.get('init_from'):
      params = finetune.pretrained_params(config, state.params)
      state = jax.device_put(TrainState(state.step, params, tx.init(params)), shardings)
      logging.info('Initialised from %s (fresh: %s; frozen: %s).', config.finetune.init_from,
                   tuple(config.finetune.get('reinit') or ()), finetune.frozen_layers(config))
    start_step = 0
  else:
    start_step, state, input_position, trainer_state = restored
    plateau.load_json(trainer_state['plateau'])
    pending_eval = trainer_state.get('pending_eval', False)
    if input_position['step'] != start_step:
      raise UserError(f'checkpoint {start_step} in {ckpt.directory} is inconsistent (input '
                      f'position {input_position["step"]}); delete that step directory.')
    logging.info('Resumed from checkpoint step %d in %s', start_step, ckpt.directory)

  writer = metrics.create_writer(workdir, is_main)
  if is_main:
    with open(os.path.join(workdir, 'config.json'), 'w', encoding='utf-8') as f:
      f.write(config.to_json_best_effort(indent=2))
    if start_step == 0:
      writer.write_hparams({k: v for k, v in config.items() if isinstance(v, (int, float, str))})

  p_train_step, p_eval_step = create_step_fns(model, tx, mesh, strategy, shardings)

  def run_evaluation(step: int, stop: preemption.StopRequest) -> dict[str, float] | None:
    """Evaluates and records the results; None (nothing recorded) when a signal interrupted it."""
    results = {}
    for name, batches in dataset.eval_batches.items():
      prefix = f'eval_{name}' if name else 'eval'
      # A signal abandons the evaluation: on ImageNet it outlasts a preemption's grace period.
      sums = evaluate(p_eval_step, state.params, _until_signal(batches(), stop), mesh,
                      config.num_eval_steps)
      if stop.received:
        return None
      results.update(metrics.means(sums, prefix))
    writer.write_scalars(step, results)
    if plateau.update(results['eval/top1_error']) and config.lr_schedule == 'plateau':
      logging.info('Validation error stopped improving: learning rate divided by 10 (x%g).',
                   plateau.factor)
    logging.info('eval step %d: %s', step, ', '.join(f'{k}={v:.4f}' for k, v in results.items()))
    return results

  def save(step: int, pending_eval: bool = False) -> None:
    writer.flush()  # The metrics rows up to a checkpoint are on disk with it.
    ckpt.save(step, state, {'step': step},
              {'plateau': plateau.to_json(), 'pending_eval': pending_eval})

  def count_nonfinite_steps(sums: dict[str, Any]) -> int:
    """Non-finite steps in `sums`; with config.nan_policy 'stop' any such step ends training."""
    count = int(sums['nonfinite_steps'])
    if count and config.nan_policy == 'stop':
      ckpt.wait_until_finished()  # A save in flight holds a finite state: let it complete.
      newest = ckpt.latest_step()
      raise UserError(
          f'non-finite loss, gradients or parameters at step {int(sums["first_nonfinite_step"])}; '
          'training stopped without applying it (the newest checkpoint, '
          f'{"none" if newest is None else f"step {newest}"} in {ckpt.directory}, is intact). '
          "Lower config.learning_rate, set config.grad_clip_norm, or set config.nan_policy='skip' "
          'to skip such steps.')
    return count

  logging.info('Training %s for %d steps (%d per epoch), batch %d, from step %d.',
               config.dataset, total_steps, steps_per_epoch, config.batch_size, start_step)
  train_batches = dataset.train_batches(start_step)
  sums, interval_start, interval_step = None, time.perf_counter(), start_step
  done = start_step
  stop = preemption.STOP  # Set by SIGTERM/SIGINT while run.py (or a caller) has it entered.
  if pending_eval and run_evaluation(start_step, stop) is None:
    total_steps = start_step  # Interrupted again: the checkpoint still asks for this evaluation.
  for step in range(start_step, total_steps):
    factor = plateau.factor if config.lr_schedule == 'plateau' else 1.0
    learning_rate = np.float32(base_lr(step) * factor)
    batch = parallel.global_batch(next(train_batches), mesh)
    state, step_sums = p_train_step(state, batch, learning_rate, dropout_key)
    sums = accumulate(sums, step_sums)
    done = step + 1
    if done % config.log_every_steps == 0 or done == total_steps:
      host_sums = jax.device_get(sums)
      skipped = count_nonfinite_steps(host_sums)
      scalars = metrics.means({k: v for k, v in host_sums.items() if k not in NONFINITE_KEYS},
                              'train') if host_sums['count'] else {}
      if config.nan_policy == 'skip':
        scalars['train/skipped_steps'] = skipped
        if skipped:
          logging.warning('Skipped %d step(s) with non-finite loss, gradients or parameters in '
                          'steps %d-%d (the first: step %d).', skipped, interval_step + 1, done,
                          host_sums['first_nonfinite_step'])
      elapsed = time.perf_counter() - interval_start
      images_per_sec = (done - interval_step) * config.batch_size / elapsed
      scalars.update({'train/learning_rate': float(learning_rate),
                      'train/images_per_sec': images_per_sec})
      # Undecodable images so far (this process): replaced in training, masked in evaluation.
      scalars.update({f'input/corrupt_images_{name}': count
                      for name, count in dataset.corrupt_image_counts().items()})
      writer.write_scalars(done, scalars)
      eta = (total_steps - done) * elapsed / (done - interval_step)
      logging.info('step %d/%d | loss %.4f | top1_err %.4f | lr %.5g | %.0f img/s | ETA %s',
                   done, total_steps, scalars.get('train/loss', math.nan),
                   scalars.get('train/top1_error', math.nan), learning_rate, images_per_sec,
                   _format_duration(eta))
      sums, interval_start, interval_step = None, time.perf_counter(), done
    eval_interrupted = False
    if done % config.eval_every_steps == 0 or done == total_steps:
      eval_start = time.perf_counter()
      eval_interrupted = run_evaluation(done, stop) is None
      interval_start += time.perf_counter() - eval_start  # Not training throughput.
    stopping = stop.reached(done)
    if done % config.checkpoint_every_steps == 0 or done == total_steps or stopping:
      if sums is not None:
        count_nonfinite_steps(jax.device_get(sums))  # Never save past a step 'stop' rejects.
      save(done, pending_eval=eval_interrupted)
    if stopping:
      break
  writer.flush()
  ckpt.wait_until_finished()
  if stop.received:
    logging.info('Stopped by %s after step %d; the checkpoint is in %s. Run the same command to '
                 'resume.', stop.signal_name, done, os.path.join(ckpt.directory, str(done)))
  ckpt.close()
  return state


NONFINITE_KEYS = ('nonfinite_steps', 'first_nonfinite_step')


def _until_signal(batches: Iterator[Any], stop: preemption.StopRequest) -> Iterator[Any]:
  for batch in batches:
    yield batch
    if stop.received:
      return
